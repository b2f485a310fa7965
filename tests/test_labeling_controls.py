"""Labeling beyond the paper: the quality report, the cross-run judge cache, budget caps, tiered judging and the
autoscaling pool; the rules on their own, then each through the real pool and loopback HTTP (simulated judge)."""

from __future__ import annotations

import json
import sqlite3

import httpx
import pytest
from labeling_fixtures import write_label_inputs

from cluster.label import run_label_job
from hrlaif_ray.config import AutoscaleConfig, LabelJob
from hrlaif_ray.data.records import LabelRecord, PreferencePair, Response
from hrlaif_ray.judges.launch import sim_judge_server
from hrlaif_ray.labeling.autoscale import Autoscaler
from hrlaif_ray.labeling.budget import SpendCap
from hrlaif_ray.labeling.cache import CacheError, JudgeCache
from hrlaif_ray.labeling.ledger import LabelLedger
from hrlaif_ray.labeling.quality import quality_report


def _label(category="math", cost=0.01, tokens=100, **stats) -> LabelRecord:
    return LabelRecord(
        "p",
        category,
        "basic",
        [Response("a"), Response("b")],
        [PreferencePair(0, 1)],
        tokens_in=tokens,
        cost_usd=cost,
        stats=stats,
    )


# ------------------------------------------------------------------------------------------ the rules alone


def test_quality_figures_from_label_stats():
    labels = [
        _label(swap_pairs=6, swap_consistent=3, first_shown_wins=5, second_shown_wins=1, latency_s=1.0),
        _label(swap_pairs=2, swap_consistent=2, judge_tasks=4, escalations=1, attempts_http_429=2, latency_s=3.0),
        _label("harmful", verified=0, reasks=1, cache_hits=2, cache_saved_usd=0.5, latency_s=2.0),
    ]
    labels[2].status = "failed"
    report = quality_report(labels)
    math, everything = report["categories"]["math"], report["all"]
    assert math["position_consistency"] == pytest.approx(5 / 8, abs=1e-4)
    assert math["first_shown_share"] == pytest.approx(5 / 6, abs=1e-4)
    assert math["escalation_rate"] == 0.25 and math["http_retries"] == {"429": 2}
    assert everything["failed"] == 1 and everything["reasks"] == 1 and everything["cache_hits"] == 2
    assert everything["cost_per_label_usd"] == pytest.approx(0.01) and everything["latency_p50_s"] == 2.0
    assert report["categories"]["harmful"]["position_consistency"] is None  # nothing swapped: no figure, not 0


def test_spend_cap_admits_labels_at_the_dearest_so_far():
    cap = SpendCap(usd=1.0, headroom=1.25)
    assert cap.room(0) == 1 and cap.room(1) == 0  # the first label's cost is unknown: one at a time
    cap.record(_label(cost=0.1))
    assert cap.room(0) == 7  # (1.0 - 0.1) / 0.125
    assert cap.room(3) == 4
    cap.record(_label(cost=0.2))
    assert cap.room(0) == 2  # (1.0 - 0.3) / 0.25
    assert SpendCap().room(5) is None
    tokens = SpendCap(tokens=1000)
    tokens.record(_label(tokens=100, cost=0.0))
    assert tokens.room(0) == 7


def test_autoscaler_sizes_by_littles_law_and_backs_off_on_429():
    scaler = Autoscaler(AutoscaleConfig(min=1, max=20, interval_s=1.0), concurrency=8, rpm=6000)  # 100 requests/s
    assert scaler.decide(0.0, 1000, 2) is None  # the first call starts the clock
    assert scaler.decide(1.0, 1000, 2) is None  # nothing answered yet: no latency to size by
    for _ in range(40):
        scaler.observe(_label(attempts_ok=1, judge_s=0.2, judge_answers=1))
    assert scaler.decide(2.0, 1000, 2) == 3  # 100/s x 0.2 s x 1.1 = 22 in flight, 8 an actor
    for _ in range(10):
        scaler.observe(_label(attempts_ok=1, judge_s=1.0, judge_answers=1))
    assert scaler.decide(3.0, 1000, 3) == 14  # the last interval at 1 s (above the 0.6 s average): 110 in flight
    assert scaler.decide(3.5, 1000, 14) is None  # not an interval yet
    for _ in range(10):
        scaler.observe(_label(attempts_ok=1, attempts_http_429=1, judge_s=1.0, judge_answers=1))
    assert scaler.decide(4.0, 1000, 14) == 13  # half the attempts were 429: one fewer
    assert scaler.decide(5.0, 10, 13) == 2  # the backlog fills only 2 actors of 8
    assert [size for _, size, _ in scaler.log] == [3, 14, 13, 2]
    free = Autoscaler(AutoscaleConfig(min=2, max=6, interval_s=1.0), concurrency=4)
    free.decide(0.0, 100, 2)
    assert free.decide(1.0, 100, 2) == 6 and free.decide(2.0, 0, 6) == 2  # no limit: the backlog sets it


def test_a_corrupt_or_foreign_cache_file_is_an_error_naming_it(tmp_path):
    cache = JudgeCache(tmp_path / "ok")
    cache.put("k", "rank", "m", {"ranking": [1, 2]}, 10, 2)
    assert cache.get("k").answer == {"ranking": [1, 2]} and cache.get("other") is None
    cache.close()
    (tmp_path / "torn").mkdir()
    (tmp_path / "torn" / "judge-cache.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(CacheError, match="torn/judge-cache.sqlite"):
        JudgeCache(tmp_path / "torn")
    (tmp_path / "foreign").mkdir()
    db = sqlite3.connect(tmp_path / "foreign" / "judge-cache.sqlite")
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    db.execute("INSERT INTO meta VALUES ('format', 'somebody-else/3')")
    db.commit()
    db.close()
    with pytest.raises(CacheError, match="foreign/judge-cache.sqlite.*somebody-else/3"):
        JudgeCache(tmp_path / "foreign")


# ------------------------------------------------------------------------- through the pool and loopback HTTP


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return write_label_inputs(tmp_path_factory.mktemp("inputs"), 40, seed=3)


def _job(inputs, out, base_url, labeling=None, **extra) -> LabelJob:
    judge = {"base_url": base_url, "model": "gpt-3.5-turbo", "timeout_s": 5.0, "max_retries": 8}
    return LabelJob.model_validate(
        {
            "prompts": str(inputs[0]),
            "rollouts": str(inputs[1]),
            "output_dir": str(out),
            "labeling": {"judges": [judge], "rewriter": {**judge, "model": "gpt-4"}, **(labeling or {})},
            "pool": {"labelers": 1, "concurrency": 16, "shard_size": 16},  # one actor: the pool tests have several
            **extra,
        }
    )


def _requests(base_url: str) -> int:
    return httpx.get(base_url.replace("/v1", "/billing")).json()["requests"]


def test_quality_report_and_a_cache_shared_across_runs(tmp_path, local_ray, inputs):
    cache = {"cache_dir": str(tmp_path / "shared-cache")}
    faults = ["position_bias=0.3", "p_429=0.1", "p_malformed=0.1", "retry_after_s=0.01"]
    with sim_judge_server(faults) as base:
        first = run_label_job(_job(inputs, tmp_path / "a", base, {"method": "basic", **cache}), progress=False)
        asked = _requests(base)
        quality = json.loads((tmp_path / "a" / "quality.json").read_text())
        again = run_label_job(_job(inputs, tmp_path / "b", base, {"method": "basic", **cache}), progress=False)
        assert _requests(base) == asked  # every question of the second run was answered by the cache
    assert first["labeled"] == again["labeled"] == 40 and first["failed"] == 0
    assert set(quality["categories"]) == {"math", "multiple_choice", "harmful"}
    everything = quality["all"]
    assert 0 < everything["position_consistency"] < 1  # the judge picks A 30% of the time, whatever is shown
    assert everything["first_shown_share"] > 0.5
    assert everything["reasks"] > 0 and everything["http_retries"].get("429", 0) > 0
    assert everything["cost_per_label_usd"] > 0 and everything["latency_p99_s"] >= everything["latency_p50_s"] > 0
    assert "| math |" in (tmp_path / "a" / "quality.md").read_text()
    second = json.loads((tmp_path / "b" / "quality.json").read_text())["all"]
    assert second["cost_usd"] == 0  # what the first run paid, or saved itself (a prompt asked twice in the mix):
    assert second["cache_saved_usd"] == pytest.approx(everything["cost_usd"] + everything["cache_saved_usd"], rel=1e-4)
    labels_a = {(l.prompt_id, tuple(l.pairs)) for l in LabelLedger(tmp_path / "a").labels()}
    labels_b = {(l.prompt_id, tuple(l.pairs)) for l in LabelLedger(tmp_path / "b").labels()}
    assert labels_a == labels_b  # the cache gives the same answers, so the same labels


def test_a_budget_stops_cleanly_and_a_higher_one_continues_without_asking_twice(tmp_path, local_ray, inputs):
    with sim_judge_server() as base:
        full = run_label_job(_job(inputs, tmp_path / "full", base, {"method": "basic", "cache": False}), progress=False)
        full_requests = _requests(base)
    budget = full["cost_usd"] / 3
    with sim_judge_server() as base:
        capped = run_label_job(_job(inputs, tmp_path / "capped", base, {"method": "basic"}, budget_usd=budget), False)
        assert capped["stopped_by_budget"] and 0 < capped["labeled"] < 40 and capped["remaining"] > 0
        assert capped["cost_usd"] <= budget
        assert len(LabelLedger(tmp_path / "capped").labels()) == capped["labeled"]  # every finished label committed
        rest = run_label_job(_job(inputs, tmp_path / "capped", base, {"method": "basic"}, budget_usd=1.0), False)
        assert not rest["stopped_by_budget"] and rest["already_committed"] == capped["labeled"]
        assert rest["labeled"] == 40 - capped["labeled"]
        # Together they asked no more than one uncapped run without a cache (less: the mix repeats a question).
        assert _requests(base) <= full_requests
    assert capped["cost_usd"] + rest["cost_usd"] <= full["cost_usd"] + 1e-9


def test_tiered_judging_escalates_the_unsure_and_records_the_tier(tmp_path, local_ray, inputs):
    prompts = str(inputs[0])
    cheap_cfg = [f"answer_key={prompts}", "p_check=0.2", "calibration=0.9", "confidence_low=0.3"]
    with sim_judge_server(cheap_cfg) as cheap, sim_judge_server([f"answer_key={prompts}", "p_check=1.0"]) as strong:
        cheap_judge = {"base_url": cheap, "model": "gpt-3.5-turbo", "timeout_s": 5.0}
        strong_judge = {"base_url": strong, "model": "gpt-4", "timeout_s": 5.0}
        tiers = [{"judges": [cheap_judge], "min_confidence": 0.5}, {"judges": [strong_judge]}]
        # One presentation order: a swap that disagrees (ties broken by position here) would escalate nearly all.
        common = {"method": "basic", "both_orders": False}
        tiered = run_label_job(_job(inputs, tmp_path / "tiered", cheap, {**common, "tiers": tiers}), False)
        alone = run_label_job(_job(inputs, tmp_path / "strong", strong, {**common, "judges": [strong_judge]}), False)
    quality = json.loads((tmp_path / "tiered" / "quality.json").read_text())["all"]
    assert 0 < quality["escalation_rate"] < 1 and set(quality["decided_by_tier"]) == {"0", "1"}
    labels = LabelLedger(tmp_path / "tiered").labels()
    assert {p.tier for l in labels for p in l.pairs} == {0, 1}
    assert all("gpt-4" in l.judge_model for l in labels if any(p.tier == 1 for p in l.pairs))
    assert tiered["cost_usd"] < 0.8 * alone["cost_usd"]
    strong_pairs = {
        (l.prompt_id, p.better, p.worse) for l in LabelLedger(tmp_path / "strong").labels() for p in l.pairs
    }
    tiered_pairs = {(l.prompt_id, p.better, p.worse) for l in labels for p in l.pairs}
    assert len(strong_pairs & tiered_pairs) / len(strong_pairs) > 0.8


def test_the_autoscaled_pool_grows_to_keep_the_rate_limit_busy(tmp_path, local_ray, inputs):
    with sim_judge_server(["latency_ms=400"]) as base:
        job = _job(inputs, tmp_path / "auto", base, {"method": "basic", "both_orders": False})
        pool = {"labelers": 1, "concurrency": 2, "rpm": 1200, "autoscale": {"min": 1, "max": 6, "interval_s": 0.5}}
        job = job.model_copy(update={"pool": job.pool.model_validate({**job.pool.model_dump(), **pool})})
        summary = run_label_job(job, progress=False)
    sizes = [size for _, size in summary["pool_sizes"]]
    assert summary["labeled"] == 40 and summary["failed"] == 0
    assert sizes[0] == 1 and max(sizes) >= 3  # 1 actor x 2 in flight / 0.4 s = 5 of the 20 requests/s allowed
    assert len({l.idempotency_key for l in LabelLedger(tmp_path / "auto").labels()}) == 40


def test_the_run_report_shows_each_labeling_arms_quality(tmp_path):
    from conftest import ROOT

    from cluster.report import quality_table
    from hrlaif_ray.config import RunJob, load_config

    arms = (
        "arms=[{name: rlaif, method: basic}, {name: hrlaif, method: hybrid}, {name: oracle, method: oracle}, "
        "{name: hrlaif-dpo, method: hybrid, trainer: dpo, rm_from: hrlaif}]"
    )
    job = load_config(RunJob, ROOT / "cluster" / "configs" / "demo.yaml", [arms])  # hrlaif-dpo shares its labels
    for seed in (1, 2):
        for arm in ("rlaif", "hrlaif", "oracle"):
            label = _label(cost=0.02 if arm == "rlaif" else 0.01, cache_hits=seed, cache_saved_usd=0.5, latency_s=1.0)
            label.idempotency_key = f"{arm}-{seed}"
            LabelLedger(tmp_path / f"seed-{seed}" / arm / "labels").commit([label])
    table, figures = quality_table(tmp_path, job, [1, 2])
    assert set(figures) == {"rlaif", "hrlaif", "oracle"}  # hrlaif-dpo labels nothing of its own
    assert figures["rlaif"]["labels"] == 2 and figures["rlaif"]["cost_per_label_usd"] == pytest.approx(0.02)
    assert figures["hrlaif"]["cache_hits"] == 3 and figures["hrlaif"]["cache_saved_usd"] == pytest.approx(1.0)
    assert "| hrlaif | 2 |" in table and "USD saved" in table
