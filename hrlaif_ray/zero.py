"""DeepSpeed ZeRO set-up shared by every trained role (the SFT policy, the reward model, PPO's actor and critic,
the DPO policy): `initialize` builds a role's engine from its learner section (`hrlaif_ray/config/learner.py`).

A learner process looks like a torchrun rank: MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK in its
environment, whether torchrun or a Ray actor put them there. The backend follows the device: nccl with CUDA,
gloo on CPU (with DS_ACCELERATOR=cpu; oneCCL is not on PyPI). The optimizer is torch's AdamW passed in
(`zero_allow_untested_optimizer`), since naming a DeepSpeed optimizer compiles fused_adam for minutes on CPU.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from hrlaif_ray.config import LearnerConfig


def zero_config(
    stage: int,
    micro_batch_size: int,
    world_size: int,
    grad_accum: int = 1,
    grad_clip: float = 1.0,
    bf16: bool = False,
    offload_optimizer: bool = False,
    bucket_elements: int = 50_000_000,
) -> dict[str, Any]:
    """A DeepSpeed config dict for ZeRO `stage` (0-3).

    `bucket_elements` caps the gradient-reduce and all-gather buckets (and ZeRO-3's prefetch bucket). DeepSpeed's
    defaults (5e8 elements, 2 GB each in fp32) are allocated on every rank whatever the model's size, which can get small CPU ranks killed for
    memory at start-up (docs/training.md)."""
    if stage not in (0, 1, 2, 3):
        raise ValueError(f"zero stage must be 0-3, got {stage}")
    zero: dict[str, Any] = {
        "stage": stage,
        "overlap_comm": False,
        "contiguous_gradients": True,
        "reduce_bucket_size": bucket_elements,
        "allgather_bucket_size": bucket_elements,
    }
    if stage == 3:  # lets rank 0 consolidate the full weights for an HF checkpoint
        zero.update(stage3_gather_16bit_weights_on_model_save=True, stage3_prefetch_bucket_size=bucket_elements)
    if offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    return {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": grad_accum,
        "train_batch_size": micro_batch_size * grad_accum * world_size,
        "gradient_clipping": grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": bf16},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def initialize(
    model: torch.nn.Module,
    learner: LearnerConfig,
    micro_batch_size: int,
    world_size: int,
    grad_accum: int = 1,
    stage: int | None = None,
    lr_lambda: Callable[[int], float] | None = None,
):
    """The DeepSpeed engine of a trained role: AdamW at `learner.lr` (times `lr_lambda(step)` when given: a
    schedule), the learner's weight decay and gradient clip, ZeRO at `stage` (default `learner.zero_stage`)."""
    import deepspeed

    optim = torch.optim.AdamW(model.parameters(), lr=learner.lr, weight_decay=learner.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lr_lambda) if lr_lambda is not None else None
    config = zero_config(
        learner.zero_stage if stage is None else stage,
        micro_batch_size,
        world_size,
        grad_accum,
        grad_clip=learner.grad_clip,
    )
    engine, *_ = deepspeed.initialize(model=model, optimizer=optim, lr_scheduler=sched, config=config)
    return engine


def stage_for_world(stage: int, world_size: int, offload_optimizer: bool = False) -> int:
    """The ZeRO stage a group of `world_size` ranks should run. ZeRO partitions optimizer states, gradients and
    parameters across ranks; one rank has nothing to partition, and stages 1-3 then only add work (gradient
    bucket copies and the fp32 partition's step; docs/training.md measures it). So one rank runs stage 0, unless
    the optimizer is offloaded (that needs stage >= 1)."""
    return 0 if world_size == 1 and not offload_optimizer else stage


def backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` now ("" for every interface, as a rank other nodes must reach needs)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def single_process_env() -> None:
    """Rank 0 of a world of 1 when no launcher (torchrun, a Ray learner group) set the distributed environment."""
    if "RANK" not in os.environ:
        os.environ.update(
            MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0"
        )


def init_distributed() -> tuple[int, int]:
    """Join the process group named by the torchrun-style environment; returns (rank, world_size)."""
    import deepspeed

    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE") if k not in os.environ]
    if missing:
        raise RuntimeError(f"distributed environment incomplete: {', '.join(missing)} not set")
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    deepspeed.init_distributed(dist_backend=backend())
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
