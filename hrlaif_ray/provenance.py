"""Where a measured result came from: the machine (with its measured fp32 matmul rate), the date and the commit;
and the one way results are kept, as records appended to a JSON list, so that a later run never overwrites an
earlier one's figures or provenance."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure_machine(size: int = 1024, repeats: int = 5) -> dict:
    """The machine every result names: CPUs, memory, and the measured fp32 matmul rate (best of `repeats`)."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": round(mem, 1),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "matmul_gflops": round(2 * size**3 / best / 1e9, 1),
        "date": time.strftime("%Y-%m-%d"),
    }


def commit(root: Path = ROOT) -> str | None:
    """The checkout's commit (short), with `+dirty` when it has uncommitted changes; None outside a git checkout."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
        if head.returncode:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "")


def stamp() -> dict:
    """The date (UTC, to the minute) and the commit of a result made now."""
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": commit()}


def append_record(path: str | Path, record: dict) -> list[dict]:
    """Append `record` to the JSON list of records at `path` (a file holding one record, the older layout,
    becomes the list's first); written atomically. Returns every record."""
    path = Path(path)
    records = json.loads(path.read_text()) if path.is_file() else []
    if isinstance(records, dict):
        records = [records]
    records.append(record)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(records, indent=1, default=str) + "\n")
    os.replace(tmp, path)
    return records
