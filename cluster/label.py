"""The labeling job: prompts + K responses in (Parquet), labels out (committed shards), exactly once.

Run it as `hrlaif label --config job.yaml [key=value ...]`, or on a cluster with
`ray job submit --address http://127.0.0.1:8265 --working-dir . -- python -m cluster.label --config job.yaml`.
It joins the cluster named by RAY_ADDRESS, else starts a local one. The pool's size can be changed while it
runs by writing a number to `<output_dir>/labelers.target` (or set by `pool.autoscale`).

Beside the shards it writes `summary.json` (what this run did: labeled, failed, cost, pool sizes, whether the
budget stopped it) and `quality.json`/`quality.md` (the label-quality report of every label in the folder, see
`hrlaif_ray.labeling.quality`). The judge cache (`labeling.cache_dir`, by default `<output_dir>/judge-cache`)
answers every question asked before, so a resumed run, or a rerun with a higher `budget_usd`, pays nothing twice.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hrlaif_ray.config import LabelJob, dump_config
from hrlaif_ray.data.binding import bound_rollouts
from hrlaif_ray.entry import job_parser, parse_job
from hrlaif_ray.errors import DataError
from hrlaif_ray.labeling.budget import SpendCap
from hrlaif_ray.labeling.constitution import file_template_version
from hrlaif_ray.labeling.ledger import LabelLedger
from hrlaif_ray.labeling.quality import write_quality
from hrlaif_ray.labeling.strategies import LabelItem, idempotency_key


def load_items(job: LabelJob) -> list[LabelItem]:
    rollouts, prompts = bound_rollouts(job.rollouts, job.prompts)
    items = []
    for i, rollout in enumerate(rollouts):
        if len(rollout.responses) < 2:
            raise DataError(
                job.rollouts, None, "responses", f"needs at least 2 responses, got {len(rollout.responses)}", record=i
            )
        items.append(LabelItem(prompts[rollout.prompt_id], rollout.responses))
    return items[: job.limit] if job.limit else items


def _control(path: Path):
    def read() -> int | None:
        try:
            return int(path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    return read


def run_label_job(job: LabelJob, progress: bool = True) -> dict:
    import ray

    from actors.labeler import LabelerPool
    from cluster.connect import connect_ray

    items = load_items(job)
    out = Path(job.output_dir)
    # the run's own cache unless one is named: a rerun asks nothing twice
    job = job.model_copy(update={"labeling": job.labeling.with_own_cache(out)})
    ledger = LabelLedger(job.output_dir)
    pending, seen = [], set()
    template = file_template_version(job.labeling.constitution)  # the constitution read once (a bad file stops here)
    for item in items:
        key = idempotency_key(item, job.labeling, template)
        if not ledger.is_done(key, job.retry_failed) and key not in seen:
            pending.append(item)
            seen.add(key)
    (out / "job.yaml").write_text(dump_config(job))
    cap = SpendCap(job.budget_usd, job.budget_tokens) if (job.budget_usd or job.budget_tokens) else None
    started_ray = connect_ray(log_to_driver=False, configure_logging=False)
    pool = LabelerPool(job.labeling, job.pool)
    try:
        stats = pool.run(pending, ledger, progress=progress, control=_control(out / "labelers.target"), cap=cap)
    finally:
        pool.shutdown()
        if started_ray:
            ray.shutdown()
    summary = {
        "items": len(items),
        "already_committed": len(items) - len(pending),
        "labeled": stats.labeled,
        "failed": stats.failed,
        "requeued": stats.requeued,
        "shards_written": stats.shards,
        "tokens_in": stats.tokens_in,
        "tokens_out": stats.tokens_out,
        "cost_usd": round(stats.cost_usd, 6),
        "seconds": round(stats.seconds, 2),
        "labels_per_s": round(stats.labels_per_s, 2),
        "max_actors": stats.actors_max,
        "pool_sizes": stats.size_log,
        "stopped_by_budget": stats.stopped_by_budget,
        "remaining": stats.remaining,
        "budget_usd": job.budget_usd,
        "budget_tokens": job.budget_tokens,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    run = {k: summary[k] for k in ("labeled", "requeued", "seconds", "labels_per_s", "max_actors", "stopped_by_budget")}
    write_quality(out, ledger.labels(), run)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = job_parser("hrlaif label", LabelJob, "pool.concurrency=16 labeling.method=basic")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--labelers",
        type=int,
        help="labeler actors (pool.labelers=); change it while running via <output_dir>/labelers.target",
    )
    job, args = parse_job(parser, LabelJob, argv, {"labelers": "pool.labelers"})
    print(json.dumps(run_label_job(job, progress=not args.no_progress)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
