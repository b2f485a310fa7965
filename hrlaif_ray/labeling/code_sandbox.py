"""Run HumanEval-style unit tests on a candidate in a subprocess sandbox.

Limits: wall-clock timeout, CPU seconds, address space and file size (setrlimit in the child), a fresh
temporary directory as cwd and HOME, isolated interpreter (`python -I`), and no network: a new network
namespace (`unshare -rn`, no interfaces but a down loopback) where the OS allows it, else socket creation is
disabled inside the child before the candidate runs. `Sandbox.isolation` says which one was used.
"""

from __future__ import annotations

import functools
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass

_SOCKET_GUARD = """
import socket as _s
def _no_network(*a, **k):
    raise OSError("network disabled in the hrlaif sandbox")
_s.socket = _s.create_connection = _s.socketpair = _no_network
del _s, _no_network
"""


@dataclass(frozen=True)
class SandboxResult:
    status: str  # "passed", "failed", "timeout"
    output: str
    isolation: str

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@functools.lru_cache(maxsize=1)
def network_isolation() -> str:
    """'unshare-net' when a new network namespace can be made here, else 'socket-guard'."""
    if shutil.which("unshare"):
        try:
            if subprocess.run(["unshare", "-rn", "true"], capture_output=True, timeout=10).returncode == 0:
                return "unshare-net"
        except (OSError, subprocess.TimeoutExpired):
            pass
    return "socket-guard"


def extract_code(response: str) -> str:
    """The first fenced code block of a response, else the whole response."""
    match = re.search(r"```(?:python|py)?\s*\n(.*?)```", response, re.DOTALL)
    return match.group(1) if match else response


def humaneval_program(prompt: str, completion: str, tests: str, entry_point: str) -> str:
    """prompt + completion + tests + check(entry_point). A completion that defines the whole function (as chat
    models answer) follows the prompt and redefines it; the prompt's imports and helpers stay in scope."""
    code = extract_code(completion)
    body = (
        f"{prompt}\n    pass\n\n{code}"
        if re.search(rf"^\s*def {re.escape(entry_point)}\(", code, re.M)
        else prompt + code
    )
    return f"{body}\n\n{tests}\n\ncheck({entry_point})\n"


def _limits(cpu_s: int, memory_mb: int) -> None:
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s))
    resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
    resource.setrlimit(resource.RLIMIT_FSIZE, (16 << 20, 16 << 20))
    os.setsid()


def run_program(program: str, timeout_s: float = 10.0, memory_mb: int = 1024) -> SandboxResult:
    isolation = network_isolation()
    if isolation == "socket-guard":
        program = _SOCKET_GUARD + program
    with tempfile.TemporaryDirectory(prefix="hrlaif-sandbox-") as tmp:
        path = os.path.join(tmp, "candidate.py")
        with open(path, "w") as fh:
            fh.write(program)
        cmd = [sys.executable, "-I", "-B", path]
        if isolation == "unshare-net":
            cmd = ["unshare", "-rn", *cmd]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tmp, "TMPDIR": tmp, "LANG": "C.UTF-8"}
        try:
            proc = subprocess.run(
                cmd,
                cwd=tmp,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                preexec_fn=functools.partial(_limits, int(timeout_s) + 1, memory_mb),
            )
        except subprocess.TimeoutExpired:
            return SandboxResult("timeout", f"timed out after {timeout_s:g} s", isolation)
    output = (proc.stdout + proc.stderr)[-2000:]
    return SandboxResult("passed" if proc.returncode == 0 else "failed", output, isolation)


def run_humaneval(
    prompt: str, completion: str, tests: str, entry_point: str, timeout_s: float = 10.0, memory_mb: int = 1024
) -> SandboxResult:
    return run_program(humaneval_program(prompt, completion, tests, entry_point), timeout_s, memory_mb)
