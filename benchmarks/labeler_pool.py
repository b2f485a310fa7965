"""Labeler pool benchmark, in three parts, written together to benchmarks/results/labeler_pool.json.

1. Throughput: labels/s for 1, 2, 4, 8 actors x concurrency 1, 2, 4, 8 against the simulated judge with 200 ms
   latency (one label = one judge call: basic ranking of 2 responses, one presentation order). ideal = min(rate
   limit, actors x concurrency / latency, the pool's ceiling measured at zero latency in the same run); efficiency =
   labels_per_s / ideal; target >= 0.9 on every row. One more row runs 8 x 8 under a 6,000 RPM limit to show the
   shared limiter binding.
2. Autoscaling: a judge whose latency steps from 200 ms to 1 s mid-run, under a rate limit that a pool of 2
   actors x 8 in flight just fills at 200 ms; a fixed pool of 2 against `pool.autoscale`. ideal = the rate limit in
   both phases (what the judge allows); efficiency per phase; target >= 0.85 in both for the autoscaled pool. Rows
   carry `"autoscale": true|false`; the autoscaled run's timeline (labels/s and actors per 2 s) is kept.
3. Tiered judging: the same synthetic items (math, multiple choice and harmful prompts with a known answer, K = 4
   or 2) labeled by a cheap simulated judge alone, by the strong one alone, and tiered (cheap, escalating to
   strong when unsure), hybrid and basic. `tiered` carries escalation_rate, cost_vs_strong and
   agreement_vs_strong (the share of response pairs whose relation, a preference either way or none, the tiered
   labels state as the strong labels do) for the hybrid method; `tiered_basic` the same for basic RLAIF. Target
   on the simulated judge: agreement >= 0.95 at <= 40% of the strong judge's cost. The judges' knobs are in the
   JSON: the figures hold for judges that behave so, not for any real model.

Run: `python -m benchmarks.labeler_pool` (or `make bench`).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import ray

from actors.labeler import LabelerPool
from benchmarks.common import print_table, write_results
from cluster.label import run_label_job
from hrlaif_ray.config import AutoscaleConfig, JudgeEndpoint, JudgeTier, LabelingConfig, LabelJob, PoolConfig, Price
from hrlaif_ray.data.records import PromptRecord, Response
from hrlaif_ray.data.schemas import read_records
from hrlaif_ray.judges.launch import sim_judge_server
from hrlaif_ray.labeling import verifiers
from hrlaif_ray.labeling.ledger import LabelLedger
from hrlaif_ray.labeling.strategies import LabelItem
from hrlaif_ray.labeling.synthetic import write_label_inputs


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


def autoscaling(labeling, ceiling: float, seconds: float) -> tuple[list[dict], list[dict]]:
    """Part 2: a fixed pool of 2 x 8 and the autoscaled pool through a latency step of 200 ms -> 1 s."""
    rpm, conc, fixed = 4800, 8, 2  # 2 actors x 8 in flight / 0.2 s = 80 labels/s = the limit
    limit = rpm / 60
    n = int(limit * seconds)  # labels per phase at the ideal rate
    rows, timeline = [], []
    for autoscale, standby in ((False, 0), (True, 0), (True, 12)):
        pool_cfg = PoolConfig(
            labelers=fixed,
            concurrency=conc,
            rpm=rpm,
            shard_size=512,
            commit_interval_s=30,
            autoscale=AutoscaleConfig(min=1, max=16, interval_s=0.5, standby=standby) if autoscale else None,
        )
        warm = 2 * fixed
        with sim_judge_server(["latency_ms=200", f"latency_step_after={warm + n}", "latency_step_ms=1000"]) as base:
            pool = LabelerPool(labeling(base), pool_cfg)
            with tempfile.TemporaryDirectory() as out:
                pool.run(items(warm, "warm"), LabelLedger(out), control=lambda: fixed)
            pool.ready()  # every actor started (the standby too) before the clock runs
            with tempfile.TemporaryDirectory() as out:
                stats = pool.run(items(2 * n, f"step{autoscale}{standby}"), LabelLedger(out))
            pool.shutdown()
        assert stats.labeled == 2 * n and stats.failed == 0, stats
        done = sorted(stats.finished_at)
        step = done[n - 1]
        phases = [(1, 200, n / step, 0.0, step), (2, 1000, n / (done[-1] - step), step, done[-1])]
        for phase, latency_ms, lps, t0, t1 in phases:
            at_start = [size for t, size in stats.size_log if t <= t0][-1:]
            sizes = at_start + [size for t, size in stats.size_log if t0 < t <= t1]
            ideal = min(limit, ceiling)
            rows.append(
                {
                    "part": "autoscale",
                    "autoscale": autoscale,
                    "standby": standby,
                    "phase": phase,
                    "latency_ms": latency_ms,
                    "actors": f"{min(sizes)}-{max(sizes)}" if autoscale else str(fixed),
                    "concurrency": conc,
                    "labels": n,
                    "labels_per_s": round(lps, 2),
                    "ideal_per_s": round(ideal, 2),
                    "efficiency": round(lps / ideal, 3),
                    "rate_limit_rpm": rpm,
                }
            )
            print_table(rows[-1:], list(rows[-1]))
        if autoscale:
            timeline.append({"standby": standby, "points": []})
            for t in range(0, int(done[-1]) + 2, 2):
                size = [s for at, s in stats.size_log if at <= t][-1]
                point = {"t_s": t, "labels_per_s": sum(t <= d < t + 2 for d in done) / 2, "actors": size}
                timeline[-1]["points"].append(point)
    return rows, timeline


def _relations(labels) -> dict:
    """(prompt, i, j) -> +1 (i preferred), -1 (j preferred), 0 (nothing stated) for every response pair i < j."""
    out = {}
    for label in labels:
        stated = {(p.better, p.worse) for p in label.pairs}
        for i in range(len(label.responses)):
            for j in range(i + 1, len(label.responses)):
                out[label.prompt_id, i, j] = 1 if (i, j) in stated else -1 if (j, i) in stated else 0
    return out


def _accuracy(labels, prompts: dict) -> float:
    """Of the response pairs the ground truth orders (a verified answer or a refusal above the rest), the share the
    labels state the right way round."""
    right = total = 0
    for label in labels:
        truth = [verifiers.ground_truth(prompts[label.prompt_id], r.text) for r in label.responses]
        stated = {(p.better, p.worse) for p in label.pairs}
        for g in [i for i, t in enumerate(truth) if t]:
            for b in [i for i, t in enumerate(truth) if t is False]:
                total += 1
                right += (g, b) in stated
    return right / total if total else float("nan")


TIER_PRICES = {
    "gpt-3.5-turbo": Price(input_per_m=0.5, output_per_m=1.5),
    "gpt-4": Price(input_per_m=30, output_per_m=60),
}
CHEAP = ["p_check=0.2", "position_bias=0.05", "calibration=0.8", "p_false_alarm=0.05", "confidence_low=0.3"]
STRONG = ["p_check=0.95"]


def tiered(n_prompts: int, min_confidence: float) -> dict:
    """Part 3: cheap alone, strong alone and tiered, for the hybrid and the basic method, on synthetic items."""
    out: dict = {"judges": {"cheap": CHEAP, "strong": STRONG}, "min_confidence": min_confidence}
    with tempfile.TemporaryDirectory() as tmp:
        prompts_path, rollouts_path = write_label_inputs(tmp, n_prompts, seed=11)
        prompts = {p.id: p for p in read_records(prompts_path, "prompts")}
        key = f"answer_key={prompts_path}"
        with sim_judge_server([key, *CHEAP]) as cheap_url, sim_judge_server([key, *STRONG]) as strong_url:
            cheap = JudgeEndpoint(base_url=cheap_url, model="gpt-3.5-turbo", timeout_s=30)
            strong = JudgeEndpoint(base_url=strong_url, model="gpt-4", timeout_s=30)
            setups = {
                "cheap": {"judges": [cheap]},
                "strong": {"judges": [strong]},
                "tiered": {
                    "tiers": [JudgeTier(judges=[cheap], min_confidence=min_confidence), JudgeTier(judges=[strong])]
                },
            }
            for method in ("hybrid", "basic"):
                found = {}
                for name, judges in setups.items():
                    job = LabelJob(
                        prompts=str(prompts_path),
                        rollouts=str(rollouts_path),
                        output_dir=f"{tmp}/{method}-{name}",
                        labeling=LabelingConfig(method=method, rewriter=strong, prices=TIER_PRICES, **judges),
                        pool=PoolConfig(labelers=2, concurrency=16, shard_size=256),
                    )
                    summary = run_label_job(job, progress=False)
                    labels = LabelLedger(job.output_dir).labels()
                    quality = json.loads((Path(job.output_dir) / "quality.json").read_text())["all"]
                    found[name] = {"summary": summary, "labels": labels, "quality": quality}
                strong_rel = _relations(found["strong"]["labels"])
                result = {"method": method, "prompts": n_prompts}
                for name in ("cheap", "tiered"):
                    rel = _relations(found[name]["labels"])
                    result[f"{name}_agreement_vs_strong"] = round(
                        sum(rel.get(k) == v for k, v in strong_rel.items()) / len(strong_rel), 4
                    )
                    result[f"{name}_cost_vs_strong"] = round(
                        found[name]["summary"]["cost_usd"] / found["strong"]["summary"]["cost_usd"], 4
                    )
                for name in setups:
                    result[f"{name}_accuracy"] = round(_accuracy(found[name]["labels"], prompts), 4)
                    result[f"{name}_cost_usd"] = found[name]["summary"]["cost_usd"]
                result["escalation_rate"] = found["tiered"]["quality"]["escalation_rate"]
                result["cost_vs_strong"] = result.pop("tiered_cost_vs_strong")
                result["agreement_vs_strong"] = result.pop("tiered_agreement_vs_strong")
                out[method] = result
                print(json.dumps(result))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency-ms", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=6.0, help="target duration of each row")
    parser.add_argument("--phase-seconds", type=float, default=15.0, help="autoscaling: ideal duration of a phase")
    parser.add_argument("--tiered-prompts", type=int, default=300)
    parser.add_argument("--min-confidence", type=float, default=0.5, help="tiered: the cheap tier's threshold")
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
                            "part": "throughput",
                            "autoscale": False,
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
                    "part": "throughput",
                    "autoscale": False,
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
        scaled, timeline = autoscaling(labeling, ceiling, args.phase_seconds)
        rows += scaled
        tiers = tiered(args.tiered_prompts, args.min_confidence)
    finally:
        ray.shutdown()
    print(
        f"\nlabeler pool, simulated judge latency {args.latency_ms:g} ms, ceiling at zero latency {ceiling:.1f} labels/s"
    )
    print_table(
        rows,
        ["part", "autoscale", "actors", "concurrency", "labels_per_s", "ideal_per_s", "efficiency", "rate_limit_rpm"],
    )
    path = write_results(
        "labeler_pool",
        rows,
        latency_ms=args.latency_ms,
        ceiling_labels_per_s=round(ceiling, 2),
        note="one label = one judge call; ideal = min(rate limit, actors*concurrency/latency, ceiling); autoscale "
        "rows: phase 1 at 200 ms, phase 2 at 1000 ms judge latency, ideal = the rate limit",
        autoscale_timeline=timeline,
        tiered=tiers["hybrid"],
        tiered_basic=tiers["basic"],
        tiered_judges=tiers["judges"],
        tiered_min_confidence=tiers["min_confidence"],
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
