"""The runtime environment of every process this system starts, in one place.

- `process_defaults()`: what the `hrlaif` command sets for itself before anything imports DeepSpeed or Ray:
  DeepSpeed's accelerator (cpu where there is no CUDA), a local Ray cluster on 127.0.0.1 without prestarted default
  workers, zero-copy tensors through the object store. Values already in the environment win.
- `actor_env(...)`: a Ray actor's `runtime_env` (learners, reward replicas, rollout engines): its thread count,
  zero-copy tensors, DeepSpeed's accelerator, and for vLLM engines in-process mode and compile caches (where
  VLLM_CACHE_ROOT / TORCHINDUCTOR_CACHE_DIR say, else in the run folder).
- `stage_env(threads, extra)`: the environment of one pipeline stage's child process.
- `set_threads(threads)`: what a started actor or job sets first: torch's thread count (its OMP_NUM_THREADS sized
  the OpenMP pool when torch loaded; torch keeps a count of its own).
"""

from __future__ import annotations

import os


def _accelerator(num_gpus: float = 0) -> str:
    if "DS_ACCELERATOR" in os.environ:
        return os.environ["DS_ACCELERATOR"]
    if num_gpus:
        return "cuda"
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


def actor_env(threads: int, num_gpus: float = 0, vllm: bool = False, cache_dir: str | None = None) -> dict:
    """The `runtime_env` of one of our Ray actors."""
    env = {
        "RAY_ENABLE_ZERO_COPY_TORCH_TENSORS": "1",
        "OMP_NUM_THREADS": str(threads),  # Ray sets 1 in workers; ours use what their plan gives them
        "DS_ACCELERATOR": _accelerator(num_gpus),
    }
    if vllm:
        env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # the engine in the actor's own process
        env["VLLM_CPU_OMP_THREADS_BIND"] = "auto" if _accelerator(num_gpus) == "cuda" else "nobind"
        # compile caches where the environment says (one cache shared by many runs compiles vLLM's CPU kernels once,
        # not at every engine start), else in the run folder
        for key, sub in (("VLLM_CACHE_ROOT", "vllm"), ("TORCHINDUCTOR_CACHE_DIR", "inductor")):
            value = os.environ.get(key) or (f"{cache_dir}/{sub}" if cache_dir else None)
            if value:
                env[key] = value
    return {"env_vars": env}


def set_threads(threads: int) -> None:
    """This process's torch intra-op threads (the share of the node its plan gives it)."""
    import torch

    torch.set_num_threads(threads)


def stage_env(threads: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a pipeline stage's child process: ours, its thread count, and the run's (RAY_ADDRESS)."""
    process_defaults()
    return {**os.environ, "OMP_NUM_THREADS": str(threads), **(extra or {})}
