"""`make bench` runs every benchmark: each module of benchmarks/ that runs as a program is in run_all's list, or
set apart with its reason."""

from __future__ import annotations

from conftest import ROOT


def test_make_bench_runs_every_benchmark():
    from benchmarks.run_all import APART, BENCHMARKS

    programs = {
        f"benchmarks.{p.stem}"
        for p in (ROOT / "benchmarks").glob("*.py")
        if 'if __name__ == "__main__"' in p.read_text() and p.stem != "run_all"
    }
    assert programs == set(BENCHMARKS) | set(APART), programs ^ (set(BENCHMARKS) | set(APART))
    assert len(BENCHMARKS) == len(set(BENCHMARKS)) and not set(BENCHMARKS) & set(APART)
    assert all(reason for reason in APART.values())
