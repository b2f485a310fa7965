"""`hrlaif train-rm --config job.yaml` in one process, or several ranks:
`torchrun --nproc-per-node 2 -m cluster.train_rm --config job.yaml` (DS_ACCELERATOR=cpu on CPU)."""

from __future__ import annotations

import sys

from cluster.entry import load_job
from hrlaif_ray.config import RMTrainJob
from hrlaif_ray.reward.train import train_reward_model


def main(argv: list[str] | None = None) -> int:
    train_reward_model(load_job("hrlaif train-rm", RMTrainJob, argv, "epochs=3 lr=5e-5"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
