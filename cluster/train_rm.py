"""`hrlaif train-rm --config job.yaml` in one process, or several ranks:
`torchrun --nproc-per-node 2 -m cluster.train_rm --config job.yaml`."""

from __future__ import annotations

import sys

from actors.runtime import process_defaults
from hrlaif_ray.config import RMTrainJob
from hrlaif_ray.entry import load_job
from hrlaif_ray.reward.train import train_reward_model


def main(argv: list[str] | None = None) -> int:
    process_defaults()  # DeepSpeed's accelerator where torchrun (not `hrlaif`) started this rank
    train_reward_model(load_job("hrlaif train-rm", RMTrainJob, argv, "epochs=3 lr=5e-5"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
