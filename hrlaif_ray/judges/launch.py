"""Start a local OpenAI-compatible server in a child process and wait until it answers.

`sim_judge_server(...)` runs the simulated judge; `vllm_server(...)` runs vLLM's OpenAI-compatible server
(the module form: the CPU build's distribution name breaks `vllm serve`). Both bind 127.0.0.1 and stop the
child (SIGTERM, then SIGKILL) on exit. `ready_process(...)` starts any of our servers that print `READY <url>`
(`hrlaif serve-rm`, `serve-reward`) and leaves stopping it to the caller.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from hrlaif_ray.zero import free_port


def _has_gpu() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def ready_process(
    cmd: list[str],
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
    stderr=subprocess.DEVNULL,
    new_session: bool = True,
) -> tuple[subprocess.Popen, str]:
    """Start `cmd` and wait for its `READY <url>` line: (the process, the url). In a session of its own unless
    `new_session` is off (stop it and what it started with `os.killpg(proc.pid, signal.SIGTERM)`). A command that
    ends or says anything else first is killed, and the error quotes what it said (and its stderr, when `stderr` is
    a pipe)."""
    proc = subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=stderr, text=True, start_new_session=new_session
    )
    line = proc.stdout.readline()
    if not line.startswith("READY "):
        proc.kill()
        said = proc.stderr.read()[-2000:] if stderr == subprocess.PIPE else ""
        raise RuntimeError(f"{' '.join(cmd[:4])} did not start: {line!r} {said}")
    return proc, line.split()[1]


@contextlib.contextmanager
def sim_judge_server(overrides: list[str] | tuple[str, ...] = (), config: str | Path | None = None) -> Iterator[str]:
    """Yields the base URL (http://127.0.0.1:PORT/v1) of a simulated judge started with these overrides."""
    cmd = [sys.executable, "-m", "hrlaif_ray.judges.server", *(["--config", str(config)] if config else []), *overrides]
    proc, base = ready_process(cmd, stderr=None, new_session=False)
    try:
        yield base
    finally:
        _stop(proc)


@contextlib.contextmanager
def vllm_server(
    model_dir: str | Path,
    served_name: str,
    max_model_len: int = 2048,
    timeout_s: float = 300,
    log_path: str | Path | None = None,
    env: dict[str, str] | None = None,
    port: int = 0,
    kv_cache_gib: float = 1.0,
) -> Iterator[str]:
    """Yields the base URL of vLLM's OpenAI-compatible server over `model_dir` (`port` 0: a free one). On a machine
    without a GPU the CPU build gets a KV cache of `kv_cache_gib` and no thread binding, unless `env` or the
    environment say otherwise: by default it reserves 92% of the machine's memory and binds threads to cores other
    processes use, and fails to start where memory is shared."""
    port = port or free_port()
    cpu = {} if _has_gpu() else {"VLLM_CPU_KVCACHE_SPACE": f"{kv_cache_gib:g}", "VLLM_CPU_OMP_THREADS_BIND": "nobind"}
    env = {**{k: v for k, v in cpu.items() if k not in os.environ}, **(env or {})}
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        "float32",
        "--enforce-eager",
        "--max-model-len",
        str(max_model_len),
        "--served-model-name",
        served_name,
    ]
    log = open(log_path, "w") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"vLLM server exited with {proc.returncode} (log: {log_path})")
            try:
                if httpx.get(f"{base}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"vLLM server not ready after {timeout_s} s (log: {log_path})")
            time.sleep(1)
        yield base
    finally:
        _stop(proc)
        if log_path:
            log.close()
