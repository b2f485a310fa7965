"""`hrlaif train-rm --config job.yaml` in one process, or several ranks:
`torchrun --nproc-per-node 2 -m cluster.train_rm --config job.yaml` (DS_ACCELERATOR=cpu on CPU)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hrlaif_ray.config import RMTrainJob, load_config
from hrlaif_ray.reward.train import train_reward_model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hrlaif train-rm")
    parser.add_argument("--config", type=Path)
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. epochs=3 lr=5e-5")
    args = parser.parse_args(argv)
    train_reward_model(load_config(RMTrainJob, args.config, args.overrides))
    return 0


if __name__ == "__main__":
    sys.exit(main())
