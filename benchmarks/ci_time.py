"""What CI pays: install plus `make test` on a fresh clone, optionally on a slowed-down machine.

    python -m benchmarks.ci_time                  # unthrottled
    python -m benchmarks.ci_time --cpu-quota 0.9  # (root, cgroup v1) at most 0.9 CPU-seconds a second, all cores

The target is install plus tests within 20 minutes on a 2-core machine of about 60 GFLOP/s fp32 matmul.
`--cpu-quota` emulates it on a faster machine: this process and everything it
starts run in a cgroup whose CFS quota caps the CPU time per 10 ms period (0.9: 9 ms of every 10, over both cores).
Choose the quota by the matmul rate measured inside the cgroup (`matmul_gflops_*`, before and after the run): a
machine's own rate can vary from hour to hour (docs/timings.md), so one quota is not one speed. The emulation is harsher than a slow machine on latency: the cgroup runs at full speed until its quota is
spent, then stops until the period ends, so a process waiting for a little CPU (an RPC's answer) may wait up to the
rest of the period.

It clones the checkout's HEAD next to it (`../ci-time-clone`, replaced), empties the tests' compile cache (a fresh
machine has none), times `make setup` and `make test` there, and appends one record (date, machine, commit, quota,
the matmul rates, seconds, pass/fail line) to benchmarks/results/ci_time.json. Nothing else may run meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import RESULTS as COMMON_RESULTS
from hrlaif_ray.provenance import append_record

ROOT = Path(__file__).resolve().parents[1]
RESULTS = COMMON_RESULTS / "ci_time.json"
CGROUP = Path("/sys/fs/cgroup/cpu/hrlaif-ci-time")
PERIOD_US = 10_000

MATMUL = """
import time, torch
from hrlaif_ray.provenance import measure_machine
m = measure_machine()
a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
t, n = time.perf_counter(), 0
while time.perf_counter() - t < 4:
    a @ b
    n += 1
m["matmul_gflops_sustained"] = round(n * 2 * 1024**3 / (time.perf_counter() - t) / 1e9, 1)
print(__import__("json").dumps(m))
"""


def enter_cgroup(quota: float) -> None:
    """Put this process (and so its children) in a cgroup capped at `quota` CPU-seconds a second."""
    if not Path("/sys/fs/cgroup/cpu").is_dir():
        sys.exit("--cpu-quota needs cgroup v1's cpu controller at /sys/fs/cgroup/cpu (and root)")
    CGROUP.mkdir(exist_ok=True)
    (CGROUP / "cpu.cfs_period_us").write_text(str(PERIOD_US))
    (CGROUP / "cpu.cfs_quota_us").write_text(str(int(quota * PERIOD_US)))
    (CGROUP / "cgroup.procs").write_text(str(os.getpid()))


def matmul(python: Path, cwd: Path) -> dict:
    out = subprocess.run([str(python), "-c", MATMUL], cwd=cwd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def timed(cmd: list[str], cwd: Path, log: Path, env: dict | None = None) -> tuple[int, float]:
    t = time.monotonic()
    with log.open("w") as f:
        rc = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    return rc, round(time.monotonic() - t, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-quota", type=float, help="CPU-seconds a second for everything this runs (cgroup v1)")
    parser.add_argument("--clone", type=Path, default=ROOT.parent / "ci-time-clone", help="where to clone")
    args = parser.parse_args(argv)
    if args.cpu_quota:
        enter_cgroup(args.cpu_quota)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    shutil.rmtree(args.clone, ignore_errors=True)
    subprocess.run(["git", "clone", "-q", str(ROOT), str(args.clone)], check=True)
    shutil.rmtree(Path(tempfile.gettempdir()) / f"hrlaif-test-compile-cache-{os.getuid()}", ignore_errors=True)
    before = matmul(ROOT / ".venv" / "bin" / "python", ROOT)
    logs = Path(tempfile.mkdtemp(prefix="ci-time-"))
    setup_rc, setup_s = timed(["make", "setup"], args.clone, logs / "setup.log")
    test_rc, test_s = timed(
        ["make", "test"], args.clone, logs / "test.log", env={**os.environ, "PYTEST_ADDOPTS": "--durations=30"}
    )
    after = matmul(args.clone / ".venv" / "bin" / "python", args.clone)
    summary = [line for line in (logs / "test.log").read_text().splitlines() if " passed" in line or " failed" in line]
    record = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": commit.stdout.strip(),
        "cpu_quota": args.cpu_quota,
        "machine": {k: before[k] for k in ("cpus", "memory_gib", "processor", "platform")},
        "matmul_gflops_best_of_5": [before["matmul_gflops"], after["matmul_gflops"]],
        "matmul_gflops_sustained": [before["matmul_gflops_sustained"], after["matmul_gflops_sustained"]],
        "setup": {"rc": setup_rc, "seconds": setup_s},
        "test": {"rc": test_rc, "seconds": test_s, "summary": summary[-1] if summary else None},
        "total_minutes": round((setup_s + test_s) / 60, 2),
        "logs": str(logs),
    }
    append_record(RESULTS, record)
    print(json.dumps(record, indent=1))
    return 0 if setup_rc == test_rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
