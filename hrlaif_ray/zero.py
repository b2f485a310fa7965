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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from hrlaif_ray.config import FrozenConfig, LearnerConfig

BUCKET_ELEMENTS = 50_000_000  # DeepSpeed's reduce / all-gather / prefetch buckets (its default is 5e8)


def zero_config(
    stage: int,
    micro_batch_size: int,
    world_size: int,
    grad_accum: int = 1,
    grad_clip: float = 1.0,
    bf16: bool = False,
    offload_optimizer: bool = False,
    offload_params: bool = False,
    bucket_elements: int = BUCKET_ELEMENTS,
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
        zero.update(
            stage3_gather_16bit_weights_on_model_save=True,
            stage3_prefetch_bucket_size=bucket_elements,
            # gathered parameters kept alive for reuse: DeepSpeed's default (1e9 elements) keeps a small model
            # whole on every rank and a large one's first billion parameters (2-4 GB a rank)
            stage3_max_live_parameters=bucket_elements,
            stage3_max_reuse_distance=bucket_elements,
        )
    if offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    if offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
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


def dtype_of(precision: str) -> torch.dtype:
    """The compute (and load) dtype of a precision setting."""
    return {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]


def learner_config(
    learner: LearnerConfig, micro_batch_size: int, world_size: int, grad_accum: int = 1, stage: int | None = None
) -> dict[str, Any]:
    """The DeepSpeed config of a trained role: its ZeRO `stage` (default `learner.zero_stage`), precision and
    offload."""
    return zero_config(
        learner.zero_stage if stage is None else stage,
        micro_batch_size,
        world_size,
        grad_accum,
        grad_clip=learner.grad_clip,
        bf16=learner.precision == "bf16",
        offload_optimizer=learner.offload.optimizer == "cpu",
        offload_params=learner.offload.params == "cpu",
    )


def frozen_config(frozen: FrozenConfig, world_size: int, micro_batch_size: int = 1) -> dict[str, Any]:
    """The DeepSpeed config of a frozen role's inference engine (no optimizer)."""
    return zero_config(
        frozen.zero_stage,
        micro_batch_size,
        world_size,
        bf16=frozen.precision == "bf16",
        offload_params=frozen.offload_params,
    )


@contextmanager
def partitioned_loading(config: dict[str, Any] | None):
    """Models loaded with `from_pretrained` inside the block are partitioned while they load when `config` is a
    ZeRO-3 config (transformers' HfDeepSpeedConfig, alive only inside the block), so no rank ever holds the whole
    model; elsewhere a no-op. Every rank of the group must load inside it."""
    if config is None or config["zero_optimization"]["stage"] != 3:
        yield
        return
    from transformers.integrations import HfDeepSpeedConfig
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    live = HfDeepSpeedConfig(config)
    try:
        yield
    finally:
        unset_hf_deepspeed_config()
        del live


def loaded_share(model: torch.nn.Module) -> float:
    """The share of the model's parameters this rank holds (1/world under ZeRO-3, 1 otherwise)."""
    held = total = 0
    for p in model.parameters():
        n = getattr(p, "ds_numel", p.numel())
        total += n
        held += p.ds_tensor.numel() if hasattr(p, "ds_tensor") else n
    return held / max(total, 1)


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """Recompute each decoder layer in the backward pass (an HF model, or the backbone of a scalar-head model)."""
    hf = model if hasattr(model, "gradient_checkpointing_enable") else model.backbone
    hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    hf.config.use_cache = False


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
    schedule), the learner's weight decay, gradient clip, precision, offload and checkpointing, ZeRO at `stage`
    (default `learner.zero_stage`). With the optimizer offloaded, DeepSpeed's CPU Adam where CUDA is (the step runs
    on the host); on a machine without CUDA everything is host memory already and torch's AdamW runs the step."""
    import deepspeed

    config = learner_config(learner, micro_batch_size, world_size, grad_accum, stage)
    if learner.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    params = [p for p in model.parameters() if p.requires_grad]
    if learner.offload.optimizer == "cpu" and torch.cuda.is_available():
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        optim = DeepSpeedCPUAdam(params, lr=learner.lr, weight_decay=learner.weight_decay, adamw_mode=True)
    else:
        optim = torch.optim.AdamW(params, lr=learner.lr, weight_decay=learner.weight_decay)
        config["zero_force_ds_cpu_optimizer"] = False
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lr_lambda) if lr_lambda is not None else None
    engine, *_ = deepspeed.initialize(model=model, optimizer=optim, lr_scheduler=sched, config=config)
    return engine


def frozen_engine(model: torch.nn.Module, frozen: FrozenConfig, world_size: int):
    """A frozen model as a ZeRO-3 inference engine over the group's ranks (each holds its partition; a forward
    gathers a layer at a time, so every rank must run the same number of forwards). Keep the engine: its module,
    `engine.module`, is what runs."""
    import deepspeed

    engine, *_ = deepspeed.initialize(model=model, config=frozen_config(frozen, world_size))
    engine.module.eval()
    return engine


def gathered_tensors(
    model: torch.nn.Module, rank: int, zero3: bool, tensors: list[torch.Tensor] | None = None
) -> Iterator[torch.Tensor | None]:
    """The model's unique state-dict tensors in order (`hrlaif_ray.weight_sync.specs_of`'s order), or `tensors` (some
    of its parameters, e.g. its adapters), whole, on rank 0's device (None on the other ranks). Under ZeRO-3 each is
    gathered when it is asked for and released before the next (every rank must iterate to the end: each step is a
    gather they all take part in)."""
    if tensors is None:
        tensors = list({id(t): t for t in model.state_dict(keep_vars=True).values()}.values())
    for group in gathered_groups([(t,) for t in tensors], rank, zero3):
        yield group[0] if group is not None else None


def gathered_groups(
    groups: list[tuple[torch.Tensor, ...]], rank: int, zero3: bool
) -> Iterator[tuple[torch.Tensor, ...] | None]:
    """Each group of tensors whole at once (a weight with its adapters), on rank 0 (None elsewhere), gathered under
    ZeRO-3 when it is asked for and released before the next; every rank must iterate to the end."""
    for group in groups:
        partitioned = [t for t in group if zero3 and hasattr(t, "ds_id")]
        if not partitioned:
            yield tuple(t.detach() for t in group) if rank == 0 else None
            continue
        import deepspeed

        with deepspeed.zero.GatheredParameters(partitioned):
            yield tuple(t.detach() for t in group) if rank == 0 else None


def gathered_state_dict(model: torch.nn.Module, rank: int, zero3: bool) -> dict[str, torch.Tensor] | None:
    """The whole model's weights as host tensors on rank 0 (None on the others), gathered one parameter at a time
    under ZeRO-3 (every rank must call it), so no rank holds more than its partition plus one parameter on its
    device; the copy on rank 0's host is what a checkpoint writes. Tied weights appear under each of their keys."""
    names: dict[int, list[str]] = {}
    for key, tensor in model.state_dict(keep_vars=True).items():
        names.setdefault(id(tensor), []).append(key)
    out: dict[str, torch.Tensor] = {}
    for keys, tensor in zip(names.values(), gathered_tensors(model, rank, zero3)):
        if tensor is not None:
            host = tensor.to("cpu", copy=True).contiguous()
            out.update((k, host) for k in keys)
    return out if rank == 0 else None


def optimizer_state_dtypes(engine) -> list[str]:
    """The dtypes of a DeepSpeed engine's optimizer states (Adam's moments; fp32 in both precisions)."""
    states = [v for st in engine.optimizer.state.values() for v in st.values() if torch.is_tensor(v)]
    return sorted({str(v.dtype) for v in states if v.dim() > 0})


def stage_for_world(learner: LearnerConfig, world_size: int) -> int:
    """The ZeRO stage a Ray learner group of `world_size` ranks runs. ZeRO partitions optimizer states, gradients
    and parameters across ranks; one rank has nothing to partition, and stages 1-3 then only add work (gradient
    bucket copies and the fp32 partition's step; docs/training.md measures it). So one rank runs stage 0 (in bf16
    DeepSpeed's stage-0 optimizer keeps the fp32 master weights too), unless something is offloaded, which needs
    ZeRO."""
    offloaded = learner.offload.optimizer != "none" or learner.offload.params != "none"
    return learner.zero_stage if world_size > 1 or offloaded else 0


def frozen_stage(frozen: FrozenConfig, world_size: int) -> int:
    """A frozen role's ZeRO stage: 3 shards it over its ranks; a role of one rank has nothing to shard."""
    return frozen.zero_stage if world_size > 1 else 0


def backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` now ("" for every interface, as a rank other nodes must reach needs)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


WORLD_KEYS = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK")


@contextmanager
def distributed_world():
    """(rank, world_size) of the process group the environment names, for the block.

    A group joined for the block is left at its end. Without a launcher (torchrun, a Ray learner group: no RANK)
    and without a group already joined, it is rank 0 of a world of 1, made for the block and undone at its end: the
    environment as it was (a caller's own MASTER_ADDR kept). A caller in a longer-lived process (a test, a
    notebook) would otherwise keep a bound MASTER_PORT in its environment, and every child it starts would inherit
    a port that is taken."""
    import torch.distributed as dist

    joined = not dist.is_initialized()
    made = "RANK" not in os.environ and joined
    before = {k: os.environ.get(k) for k in WORLD_KEYS}
    if made:
        os.environ.update(
            MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0"
        )
    try:
        yield init_distributed()
    finally:
        # a group joined here is left here: gloo's threads still running at interpreter exit abort the process
        # ("terminate called without an active exception") now and then
        if joined and dist.is_initialized():
            import deepspeed.comm as ds_comm

            if ds_comm.is_initialized():  # DeepSpeed's way also drops its clone of the world group, which a later
                ds_comm.destroy_process_group()  # world in this process (SFT, then the RM) would find dead
            else:
                dist.destroy_process_group()
        if made:
            for k, v in before.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


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
