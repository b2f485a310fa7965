"""Labeler pool throughput: labels/s for 1, 2, 4, 8 actors x concurrency 1, 2, 4, 8 against the simulated
judge with 200 ms latency (one label = one judge call: basic ranking of 2 responses, one presentation order).

ideal = min(rate limit, actors x concurrency / latency, the pool's ceiling measured at zero latency here);
efficiency = labels_per_s / ideal; target >= 0.9 on every row. One more row runs 8 x 8 under a 6,000 RPM
limit to show the shared limiter binding. Run: `python -m benchmarks.labeler_pool` (or `make bench`).
"""

from __future__ import annotations

import argparse
import os
import tempfile

import ray

from actors.labeler import LabelerPool
from benchmarks.common import print_table, write_results
from hrlaif_ray.config import JudgeEndpoint, LabelingConfig, PoolConfig
from hrlaif_ray.data.records import PromptRecord, Response
from hrlaif_ray.judges.launch import sim_judge_server
from hrlaif_ray.labeling.ledger import LabelLedger
from hrlaif_ray.labeling.strategies import LabelItem


def items(n: int, tag: str) -> list[LabelItem]:
    return [
        LabelItem(
            PromptRecord(f"{tag}/{i}", "open_qa", f"Question {tag} {i}: what makes a good friend?", "bench"),
            [Response("Someone who listens."), Response("A friend is loyal. They help you. They listen.")],
        )
        for i in range(n)
    ]


def measure(pool: LabelerPool, concurrency: int, n: int, tag: str) -> float:
    pool.set_concurrency(concurrency)
    with tempfile.TemporaryDirectory() as out:
        stats = pool.run(items(n, tag), LabelLedger(out))
    assert stats.labeled == n and stats.failed == 0, stats
    return stats.labels_per_s


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency-ms", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=6.0, help="target duration of each row")
    args = parser.parse_args()

    def labeling(base: str) -> LabelingConfig:
        return LabelingConfig(method="basic", both_orders=False, judges=[JudgeEndpoint(base_url=base, timeout_s=30)])

    ray.init(
        address="local",
        num_cpus=os.cpu_count() * 4,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    rows = []
    try:
        with sim_judge_server(["latency_ms=0"]) as base:
            pool = LabelerPool(
                labeling(base), PoolConfig(labelers=8, concurrency=8, shard_size=512, commit_interval_s=30)
            )
            measure(pool, 8, 200, "warm")
            ceiling = max(measure(pool, 8, 1500, f"ceiling{i}") for i in range(2))
            pool.shutdown()
        latency = args.latency_ms / 1000
        with sim_judge_server([f"latency_ms={args.latency_ms}"]) as base:
            for actors in (1, 2, 4, 8):
                pool = LabelerPool(
                    labeling(base), PoolConfig(labelers=actors, concurrency=8, shard_size=512, commit_interval_s=30)
                )
                measure(pool, 1, actors * 2, f"warm{actors}")
                for conc in (1, 2, 4, 8):
                    ideal = min(actors * conc / latency, ceiling)
                    n = int(min(max(ideal * args.seconds, 20), 2000))
                    lps = measure(pool, conc, n, f"a{actors}c{conc}")
                    rows.append(
                        {
                            "actors": actors,
                            "concurrency": conc,
                            "labels": n,
                            "labels_per_s": round(lps, 2),
                            "ideal_per_s": round(ideal, 2),
                            "efficiency": round(lps / ideal, 3),
                            "rate_limit_rpm": None,
                        }
                    )
                    print_table(rows[-1:], list(rows[-1]))
                pool.shutdown()
            rpm = 6000
            pool = LabelerPool(
                labeling(base), PoolConfig(labelers=8, concurrency=8, rpm=rpm, shard_size=512, commit_interval_s=30)
            )
            measure(pool, 1, 16, "warm-limited")  # start the actors outside the timed run
            ideal = min(rpm / 60, 64 / latency, ceiling)
            lps = measure(pool, 8, int(ideal * args.seconds * 3), "limited")
            rows.append(
                {
                    "actors": 8,
                    "concurrency": 8,
                    "labels": int(ideal * args.seconds * 3),
                    "labels_per_s": round(lps, 2),
                    "ideal_per_s": round(ideal, 2),
                    "efficiency": round(lps / ideal, 3),
                    "rate_limit_rpm": rpm,
                }
            )
            pool.shutdown()
    finally:
        ray.shutdown()
    print(
        f"\nlabeler pool, simulated judge latency {args.latency_ms:g} ms, ceiling at zero latency {ceiling:.1f} labels/s"
    )
    print_table(rows, ["actors", "concurrency", "labels_per_s", "ideal_per_s", "efficiency", "rate_limit_rpm"])
    path = write_results(
        "labeler_pool",
        rows,
        latency_ms=args.latency_ms,
        ceiling_labels_per_s=round(ceiling, 2),
        note="one label = one judge call; ideal = min(rate limit, actors*concurrency/latency, ceiling)",
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
