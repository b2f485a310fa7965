"""The labeler pool: exactly once under injected faults, resizable while running, resumable after SIGKILL."""

import json
import os
import signal
import subprocess
import time
from collections import Counter

import httpx
from conftest import ROOT, script_env
from labeling_fixtures import write_label_inputs

from cluster.label import run_label_job
from hrlaif_ray.config import LabelJob
from hrlaif_ray.data.schemas import read_records
from hrlaif_ray.judges.launch import sim_judge_server
from hrlaif_ray.labeling.ledger import LabelLedger

FAULTS = [
    "p_429=0.1",
    "p_500=0.08",
    "p_drop=0.04",
    "p_timeout=0.03",
    "p_malformed=0.05",
    "timeout_s=8",
    "retry_after_s=0.05",
]


def _job(tmp_path, base_url, prompts, rollouts, out, **pool):
    judge = {"base_url": base_url, "model": "gpt-3.5-turbo", "timeout_s": 3.0, "max_retries": 8}
    return LabelJob.model_validate(
        {
            "prompts": str(prompts),
            "rollouts": str(rollouts),
            "output_dir": str(out),
            "labeling": {"judges": [judge], "rewriter": {**judge, "model": "gpt-4"}},
            "pool": {"labelers": 2, "concurrency": 16, "shard_size": 50, **pool},
        }
    )


def _shard_rows(out):
    return [label for shard in sorted(out.glob("labels-*.parquet")) for label in read_records(shard, "labels")]


def test_500_items_under_30_percent_faults_exactly_once(tmp_path, local_ray):
    prompts, rollouts = write_label_inputs(tmp_path, 500, seed=1)
    out = tmp_path / "labels"
    with sim_judge_server([*FAULTS, f"answer_key={prompts}"]) as base:
        job = _job(tmp_path, base, prompts, rollouts, out, concurrency=64)  # the answers wait on backoffs, not CPU
        sizes = iter([None] * 5 + [3] * 20 + [1] * 10)  # grow, then shrink, while running
        from actors.labeler import LabelerPool

        pool = LabelerPool(job.labeling, job.pool)
        try:
            from cluster.label import load_items

            stats = pool.run(load_items(job), LabelLedger(out), control=lambda: next(sizes, None))
        finally:
            pool.shutdown()
        billing = httpx.get(base.replace("/v1", "/billing")).json()
    rows = _shard_rows(out)
    keys = Counter(l.idempotency_key for l in rows)
    assert len(rows) == 500 and len(keys) == 500, "lost or duplicated labels"
    assert all(l.status == "ok" for l in rows), [l.error for l in rows if l.status != "ok"][:3]
    faults = sum(billing.get(f"status_{k}", 0) for k in ("429", "500", "drop", "timeout"))
    assert faults / billing["requests"] > 0.2, billing  # the faults really happened
    # Cost counted once: what the labels account equals what the provider billed, attempt for attempt.
    assert sum(l.tokens_in for l in rows) == billing["tokens_in"]
    assert sum(l.tokens_out for l in rows) == billing["tokens_out"]
    assert stats.actors_max == 3 and stats.labeled == 500
    harmful = [l for l in rows if l.category == "harmful"]
    assert harmful and all(l.method == "redteam" and l.responses[-1].origin == "rewrite" for l in harmful)
    prices = job.labeling.prices
    for l in harmful[:5]:
        assert l.cost_usd > prices["gpt-3.5-turbo"].cost(l.tokens_in, l.tokens_out)  # the gpt-4 rewrite costs more


def test_sigkill_then_resume_gives_the_same_labels(tmp_path, short_tmp, local_ray):
    prompts, rollouts = write_label_inputs(tmp_path, 160, seed=2)
    with sim_judge_server(["latency_ms=150", "p_500=0.1"]) as base:
        reference = run_label_job(
            _job(tmp_path, base, prompts, rollouts, tmp_path / "ref", labelers=1, shard_size=16, concurrency=64),
            progress=False,
        )
        assert reference["labeled"] == 160
        out = tmp_path / "killed"
        config = tmp_path / "job.json"  # YAML is a superset of JSON
        config.write_text(_job(tmp_path, base, prompts, rollouts, out, shard_size=16, concurrency=4).model_dump_json())
        env = script_env(short_tmp)
        env.pop("RAY_ADDRESS", None)
        proc = subprocess.Popen(
            [
                str(ROOT / ".venv/bin/hrlaif") if (ROOT / ".venv/bin/hrlaif").exists() else "hrlaif",
                "label",
                "--config",
                str(config),
                "--no-progress",
            ],
            env=env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 120
        while len(list(out.glob("labels-*.parquet"))) < 3:
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no shards committed in time"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray processes it started
        proc.wait()
        before = {l.idempotency_key for l in _shard_rows(out)}
        shards_before = set(out.glob("labels-*.parquet"))
        assert 0 < len(before) < 160
        job = LabelJob.model_validate_json(config.read_text())  # resumed wider: the ledger's keys do not change
        resumed = run_label_job(
            job.model_copy(update={"pool": job.pool.model_copy(update={"concurrency": 32})}), progress=False
        )
    assert resumed["already_committed"] == len(before) and resumed["labeled"] == 160 - len(before)
    new_keys = [
        l.idempotency_key for s in set(out.glob("labels-*.parquet")) - shards_before for l in read_records(s, "labels")
    ]
    assert not set(new_keys) & before, "a committed label was requested again"
    final = {l.idempotency_key: (l.status, [(p.better, p.worse) for p in l.pairs]) for l in LabelLedger(out).labels()}
    expected = {
        l.idempotency_key: (l.status, [(p.better, p.worse) for p in l.pairs])
        for l in LabelLedger(tmp_path / "ref").labels()
    }
    assert final == expected
    assert json.loads((out / "summary.json").read_text())["labeled"] == 160 - len(before)
