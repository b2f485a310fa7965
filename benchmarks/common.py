"""What every benchmark writes beside its rows: the machine, the date and the commit, as a record appended to its
results file."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

from hrlaif_ray.provenance import append_record, stamp

# Where results are appended: benchmarks/results/ (committed), unless HRLAIF_BENCH_RESULTS names another folder
# (`make bench` writes to runs/bench/, so that a run is committed on purpose, not by running the target).
RESULTS = Path(os.environ.get("HRLAIF_BENCH_RESULTS") or Path(__file__).resolve().parent / "results")


def machine() -> dict:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(mem, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }


def write_results(name: str, rows: list[dict], **meta) -> Path:
    """This run's rows, with its date, commit and machine, appended to results/<name>.json (the earlier runs'
    records stay as they were)."""
    path = RESULTS / f"{name}.json"
    append_record(path, {**stamp(), "machine": machine(), **meta, "rows": rows})
    return path


def print_table(rows: list[dict], columns: list[str]) -> None:
    widths = [max([len(c), *(len(_fmt(r[c])) for r in rows)]) for c in columns]
    print(" | ".join(c.rjust(w) for c, w in zip(columns, widths)))
    print("-|-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(_fmt(r[c]).rjust(w) for c, w in zip(columns, widths)))


def _fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) and abs(v) < 10 else f"{v:.1f}" if isinstance(v, float) else str(v)


async def timed_post(http, url: str, n: int, latencies: list[float], **request) -> bool:
    """POST `request` (json=, headers=) with an httpx AsyncClient: whether it answered 200 with `n` rewards; its
    latency is appended to `latencies` when it did."""
    import httpx

    t = time.perf_counter()
    try:
        r = await http.post(url, **request)
        ok = r.status_code == 200 and len(r.json()["rewards"]) == n
    except httpx.HTTPError:
        ok = False
    if ok:
        latencies.append(time.perf_counter() - t)
    return ok
