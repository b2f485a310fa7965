"""`hrlaif sft`: supervised fine-tuning of the policy (`hrlaif_ray.sft.train_sft`; config: SFTJob).

On several ranks: `torchrun --nproc-per-node 2 -m cluster.sft --config job.yaml`."""

from __future__ import annotations

import json
import sys

from actors.runtime import process_defaults
from hrlaif_ray.config import SFTJob
from hrlaif_ray.entry import job_parser, parse_job
from hrlaif_ray.sft import train_sft


def main(argv: list[str] | None = None) -> int:
    process_defaults()  # DeepSpeed's accelerator where torchrun (not `hrlaif`) started this rank
    parser = job_parser("hrlaif sft", SFTJob, "steps=800 responses.control=true")
    parser.add_argument("--init", help="model folder to start from (init=)")
    parser.add_argument("--out", help="output folder (output_dir=)")
    job, _ = parse_job(parser, SFTJob, argv, {"init": "init", "out": "output_dir"})
    print(json.dumps(train_sft(job, log=lambda line: print(line, flush=True))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
