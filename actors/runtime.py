"""The runtime environment of every process this system starts, in one place.

- `process_defaults()`: what the `hrlaif` command sets for itself before anything imports DeepSpeed or Ray:
  DeepSpeed's accelerator (cpu where there is no CUDA), a local Ray cluster on 127.0.0.1 without prestarted default
  workers, zero-copy tensors through the object store. Values already in the environment win.
- `actor_env(...)`: a Ray actor's `runtime_env` (learners, reward replicas, rollout engines): its thread count,
  zero-copy tensors, DeepSpeed's accelerator, and for vLLM engines in-process mode and compile caches (where
  VLLM_CACHE_ROOT / TORCHINDUCTOR_CACHE_DIR say, else in the run folder); `placed_env(options, ...)` the same for
  the actor its Ray options (a placement-group bundle's share) start.
- The device rule: an actor's device is decided by the GPUs it reserved, never by the driver's environment or by
  whether its node has one: `actor_env` sets DeepSpeed's accelerator from the actor's `num_gpus` (a `hrlaif ppo`
  started on a CPU head node still gives GPU learners cuda and nccl), and inside the actor `actor_device()` reads
  the GPUs Ray assigned it.
- `stage_env(threads, extra)`: the environment of one pipeline stage's child process.
- `start_process(threads)`: what a started actor or job does first: torch's thread count (its OMP_NUM_THREADS
  sized the OpenMP pool when torch loaded; torch keeps a count of its own) and the known warnings quiet.

Zero-copy tensors are read-only views of the object store. Ray warns of it at every serialization and torch at every
read; both warnings are silenced (`QUIET`), in every process, because nothing here writes into a tensor that crossed
the Ray boundary: batches are split by index (`Experience.select`, `PreferenceBatch.select`: copies), results are
joined with `torch.cat` (a copy), scores land in a tensor of the receiver's own, and weight reloads copy into the
engine's own parameters. Code that starts writing into a received tensor must copy it first.
"""

from __future__ import annotations

import os
import warnings

# (message prefix) of warnings that every run would print and that say nothing about it: the zero-copy pair (see
# the header), and torch's deprecation of names that vLLM's and DeepSpeed's own code still calls. As PYTHONWARNINGS
# entries, which match a message's start and may hold no comma.
QUIET = (
    "Zero-copy tensor serialization is enabled",
    "The given NumPy array is not writable",
    "`torch.distributed.reduce_op` is deprecated",
    "`torch.distributed.all_gather_into_tensor` is deprecated",
)


def _quiet_env() -> str:
    """PYTHONWARNINGS with `QUIET` added to what the environment already asks."""
    ours = [f"ignore:{m}" for m in QUIET]
    given = [w for w in os.environ.get("PYTHONWARNINGS", "").split(",") if w and w not in ours]
    return ",".join(given + ours)


def quiet_known_warnings() -> None:
    """Silence `QUIET` in this process (a started child gets them from PYTHONWARNINGS too). Ray's serializer adds
    its own filter ("once") when it is imported, ahead of PYTHONWARNINGS': it is imported first, so ours come
    before it."""
    try:
        import ray._private.tensor_serialization_utils  # noqa: F401
    except ImportError:  # pragma: no cover - a Ray without zero-copy tensors
        pass
    for message in QUIET:
        warnings.filterwarnings("ignore", message=message)


def _accelerator() -> str:
    """This process's own accelerator (the environment's, else whether it sees a GPU): for the `hrlaif` command
    itself; an actor's is its reserved GPUs' (`actor_env`)."""
    if "DS_ACCELERATOR" in os.environ:
        return os.environ["DS_ACCELERATOR"]
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover - torch is a dependency
        return "cpu"


def process_defaults() -> None:
    """Set this process's defaults (the caller's environment wins)."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # a local cluster stays on 127.0.0.1
    os.environ.setdefault("RAY_ENABLE_ZERO_COPY_TORCH_TENSORS", "1")  # tensors through the object store, no copy
    os.environ.setdefault("DS_ACCELERATOR", _accelerator())  # gloo on CPU, nccl on GPU
    # A Ray started here prestarts a default worker per CPU for the first driver; our actors carry a runtime_env of
    # their own (`actor_env`), so they never take one, and each costs a Python start with Ray imported.
    os.environ.setdefault("RAY_prestart_worker_first_driver", "0")
    os.environ["PYTHONWARNINGS"] = _quiet_env()  # the children: a local Ray's workers, a pipeline's stages


def actor_env(threads: int, num_gpus: float = 0, vllm: bool = False, cache_dir: str | None = None) -> dict:
    """The `runtime_env` of one of our Ray actors, which reserves `num_gpus` (its accelerator follows from them)."""
    device = "cuda" if num_gpus > 0 else "cpu"
    env = {
        "RAY_ENABLE_ZERO_COPY_TORCH_TENSORS": "1",
        "OMP_NUM_THREADS": str(threads),  # Ray sets 1 in workers; ours use what their plan gives them
        "DS_ACCELERATOR": device,
        "PYTHONWARNINGS": _quiet_env(),
    }
    if vllm:
        env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # the engine in the actor's own process
        # vLLM logs its configuration at INFO (about 40 lines an engine start) and, on CPU, warns of its own set-up
        # (tcmalloc, Triton, thread binding) at every start and call: ERROR there, WARNING on a GPU (where its
        # warnings, KV-cache limits and dtype casts, are worth reading). The caller's wins.
        quiet = "WARNING" if device == "cuda" else "ERROR"
        env["VLLM_LOGGING_LEVEL"] = os.environ.get("VLLM_LOGGING_LEVEL", quiet)
        env["VLLM_CPU_OMP_THREADS_BIND"] = "auto" if device == "cuda" else "nobind"
        # compile caches where the environment says (one cache shared by many runs compiles vLLM's CPU kernels once,
        # not at every engine start), else in the run folder
        for key, sub in (("VLLM_CACHE_ROOT", "vllm"), ("TORCHINDUCTOR_CACHE_DIR", "inductor")):
            value = os.environ.get(key) or (f"{cache_dir}/{sub}" if cache_dir else None)
            if value:
                env[key] = value
    return {"env_vars": env}


def placed_env(options: dict, threads: int, **kwargs) -> dict:
    """`actor_env` for the actor that Ray `options` (num_cpus, num_gpus, a bundle) start: its GPUs are the options'."""
    return actor_env(threads, options.get("num_gpus", 0) or 0, **kwargs)


def actor_device() -> str:
    """The device of the actor this runs in: "cuda" when Ray assigned it GPUs (CUDA_VISIBLE_DEVICES then names
    them, so its first is cuda:0), else "cpu"; outside an actor, the process's own GPUs decide."""
    import ray

    if ray.is_initialized():
        return "cuda" if ray.get_gpu_ids() else "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def start_process(threads: int) -> None:
    """This process's torch intra-op threads (the share of the node its plan gives it), and `QUIET` quiet."""
    import torch

    torch.set_num_threads(threads)
    quiet_known_warnings()


def stage_env(threads: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a pipeline stage's child process: ours, its thread count, and the run's (RAY_ADDRESS)."""
    process_defaults()
    return {**os.environ, "OMP_NUM_THREADS": str(threads), **(extra or {})}
