"""`hrlaif run`: every stage writes its output and the report has every metric (a reduced budget); the
reward-hacking monitor fires when the RM rewards length alone; the run's config errors name the stage's key."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, run_hrlaif

from hrlaif_ray.config import RunJob, load_config
from hrlaif_ray.errors import ConfigError
from hrlaif_ray.metrics import read_jsonl

DEMO = ROOT / "cluster" / "configs" / "demo.yaml"
METRICS = [
    "accuracy/mix/math",
    "accuracy/mix/multiple_choice",
    "sampled_accuracy/mix",
    "harmful_rate/mix",
    "length/mix",
]


def _run(out: Path, *overrides: str, timeout: int = 1500) -> subprocess.CompletedProcess:
    return run_hrlaif("run", "--config", str(DEMO), f"output_dir={out}", *overrides, timeout=timeout)


def test_run_config_errors_name_the_stage_and_key():
    with pytest.raises(ConfigError, match=r"ppo\.algo\.actor_lr"):
        load_config(RunJob, DEMO, ["ppo.algo.actor_lr=fast"])
    with pytest.raises(ConfigError, match=r"rm\.output_dir: set by the run"):
        load_config(RunJob, DEMO, ["rm.output_dir=/elsewhere"])
    with pytest.raises(ConfigError, match=r"arms: names must differ"):
        load_config(RunJob, DEMO, ["arms=[{name: a, method: basic}, {name: a, method: hybrid}]"])
    # DPO arms: a PPO arm cannot take its RM from a DPO arm (it has none); iterative rounds' sections are jobs too
    with pytest.raises(ConfigError, match=r"arms\.p\.rm_from: arm 'd' trains dpo, it has no RM"):
        load_config(
            RunJob, DEMO, ["arms=[{name: d, method: hybrid, trainer: dpo}, {name: p, method: hybrid, rm_from: d}]"]
        )
    with pytest.raises(ConfigError, match=r"arms\.b\.rm_from: arm 'onl' trains online"):
        load_config(
            RunJob,
            DEMO,
            ["arms=[{name: onl, method: hybrid, trainer: online}, {name: b, method: hybrid, rm_from: onl}]"],
        )
    online = load_config(RunJob, DEMO, ["arms=[{name: onl, method: hybrid, trainer: online}]"]).stage_job(
        "ppo", policy="p", output_dir="o", prompts="x", **{"reward.kind": "online", "reward.labeling.method": "hybrid"}
    )
    assert online.reward.online and online.reward.labeling.method == "hybrid" and online.async_.max_staleness == 0
    with pytest.raises(ConfigError, match=r"iterative\.sample\.rollout\.samples_per_prompt"):
        load_config(RunJob, DEMO, ["dpo.iterative.sample.rollout.samples_per_prompt=0"])
    with pytest.raises(ConfigError, match=r"iterative\.label\.output_dir: set by the round"):
        load_config(RunJob, DEMO, ["dpo.iterative.label.output_dir=x"])
    job = load_config(RunJob, DEMO)
    ppo = job.stage_job("ppo", policy="p", output_dir="o", prompts="x", **{"reward.kind": "rm", "reward.rm": "r"})
    assert (ppo.reward.kind, ppo.reward.rm, ppo.algo.estimator) == ("rm", "r", "rloo")
    assert "reward" not in job.ppo.model_fields_set  # the run's section is not changed by what a stage is given


def stage_count(job: RunJob) -> int:
    """The stages a run has: SFT, its evaluation and its samples of the evaluation prompts once; each seed's
    samples; and each arm's: online PPO and its evaluation; DPO, its implicit reward's probe and its evaluation,
    after labels of its own; PPO and its evaluation, after labels of its own, and an RM of its own (one of another
    kind than its rm_from's too) with the RM's probe."""

    def arm(a) -> int:
        labels = not a.rm_from and a.trainer != "online"
        own_rm = a.trainer == "ppo" and job.rm_owner(a) == a.name
        return {"online": 2, "dpo": 3 + labels, "ppo": 2 + labels + 2 * own_rm}[a.trainer]

    return 3 + len(job.seeds) * (1 + sum(arm(a) for a in job.arms))


REDUCED = [
    "sft.steps=40",
    "sft.eval_prompts=16",
    "prompts.n=96",
    "rm.epochs=1",
    "rm.implicit.epochs=1",
    "ppo.steps=3",
    "ppo.prompts_per_step=16",
    "ppo.monitor.every=1",
    "ppo.monitor.prompts=16",
    "eval.mix.n=48",
    "eval.sampled=2",
]


@pytest.mark.slow
def test_pipeline_reduced_budget_writes_every_stage_and_the_report(tmp_path):
    out = tmp_path / "run"
    proc = _run(out, *REDUCED)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for path in [
        "model/config.json",
        "sft/sft_metrics.json",
        "prompts.parquet",
        "eval_prompts.parquet",
        "probe_rollouts.parquet",
        "seed-1/rollouts.parquet",
        "eval/sft/eval.json",
        "report.md",
        "plots/training.png",
        "results.json",
    ]:
        assert (out / path).exists(), path
    job = load_config(RunJob, DEMO)
    arms = [a.name for a in job.arms]
    assert arms == ["rlaif", "hrlaif", "hrlaif-scalar", "rlaif-online", "hrlaif-online"]
    for arm in arms:
        own = {
            "rlaif": ["labels/summary.json", "rm/implicit_reward.json", "rm/metrics.json", "rm/probe.json"],
            "hrlaif": ["labels/summary.json", "rm/implicit_reward.json", "rm/metrics.json", "rm/probe.json"],
            "hrlaif-scalar": ["rm/metrics.json", "rm/probe.json"],  # hrlaif's labels, a scalar RM of its own
        }.get(arm, [])
        for path in [*own, "ppo/metrics.jsonl", "ppo/final.json", "eval/eval.json", "eval/responses.jsonl"]:
            assert (out / "seed-1" / arm / path).exists(), (arm, path)
    results = json.loads((out / "results.json").read_text())
    mech = results["mechanism"]
    for name in ("sft", *arms):
        for metric in ("greedy_accuracy", "sampled_accuracy", "harmful_rate", "length", "greedy_accuracy_seen"):
            assert mech[name][metric]["mean"] is not None, (name, metric)
            lo, hi = mech[name][metric]["ci95"]
            assert lo <= mech[name][metric]["mean"] <= hi
    for arm in arms:
        assert mech[arm]["win_rate_vs_sft"]["mean"] is not None
        assert mech[arm]["vs_sft"]["greedy_accuracy"]["mean"] is not None  # paired with SFT, prompt by prompt
        assert set(mech[arm]["rm_correct_above_wrong"]) <= {"math", "multiple_choice", "harmful"}
    assert [mech[a]["rm_kind"] for a in arms] == ["implicit", "implicit", "scalar", None, None]
    assert mech["hrlaif"]["label_agreement"]["math"] == 1.0  # the verifier sorts every decidable pair
    assert (
        "binding_rate" in mech["hrlaif"]
    )  # value then letter, on multiple choice (none where 40 SFT steps state no letter)
    report = (out / "report.md").read_text()
    assert "| SFT |" in report and "| rlaif |" in report and "| hrlaif-online |" in report and "training.png" in report
    assert "GFLOP/s" in report
    # Each labeling arm's quality report (every seed's labels), the judge cache's savings among them.
    assert "## Label quality" in report and set(results["label_quality"]) == {
        "rlaif",
        "hrlaif",
        "rlaif-online",
        "hrlaif-online",
    }
    for arm in ("rlaif", "hrlaif"):
        quality = results["label_quality"][arm]
        assert quality["labels"] > 0 and quality["cost_per_label_usd"] > 0
        assert (quality["cache_hits"] > 0) == (quality["cache_saved_usd"] > 0), quality  # the hits' savings
        assert (out / "seed-1" / arm / "labels" / "quality.md").exists()
    # Resumable: a rerun finds every stage complete and only rewrites the report.
    again = _run(out, *REDUCED, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (
        again.stdout.count("done already") == stage_count(load_config(RunJob, DEMO)) and "started" not in again.stdout
    )


@pytest.mark.slow
def test_monitor_fires_when_the_rm_rewards_length_alone(tmp_path, sft_policy_dir):
    """A deliberately broken RM: trained on the labels of a judge that looks at length alone (it never checks an
    answer), on the SFT mix where long answers are more often wrong. PPO on it lengthens the answers, its reward
    rises, held-out accuracy falls, and the monitor must say so and stop the run."""
    out = tmp_path / "run"
    shutil.copytree(sft_policy_dir, out / "sft")  # the SFT stage is complete: the run starts from this policy
    proc = _run(
        out,
        "judge={length_bias: 1.0, p_check: 0.0}",
        "arms=[{name: broken, method: basic}]",
        "prompts={n: 512, seed: 1, math: 0.7, multiple_choice: 0.3, harmful: 0.0, open_qa: 0.0}",
        "ppo.steps=40",
        "ppo.monitor={every: 4, prompts: 128, accuracy_drop: 0.08, stop: true}",
        "eval.mix.n=32",
        "eval.sampled=0",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = read_jsonl(out / "seed-1" / "broken" / "ppo" / "metrics.jsonl")
    alerts = read_jsonl(out / "seed-1" / "broken" / "ppo" / "alerts.jsonl")
    print(
        json.dumps(
            [
                {
                    k: r[k]
                    for k in ("step", "reward/score_mean", "response/length_mean", "eval/heldout_accuracy")
                    if k in r
                }
                for r in rows
            ]
        )
    )
    assert alerts, "the monitor did not fire"
    assert rows[-1]["step"] == alerts[0]["step"] < 40  # it stopped the run at the alert
    assert rows[-1]["response/length_mean"] > rows[0]["response/length_mean"]  # the RM paid for length


def test_the_reports_claims_are_the_runs_config():
    """The report states each target met, not met, or not measured, from the mechanism's figures; it knows no arm."""
    from cluster.report import targets
    from hrlaif_ray.config import TargetConfig

    mech = {
        "sft": {"greedy_accuracy": {"mean": 0.40}},
        "a": {"greedy_accuracy": {"mean": 0.45}, "rm_correct_above_wrong": {"math": 0.7}},
        "b": {"greedy_accuracy": {"mean": 0.30}, "rm_correct_above_wrong": {}},
    }
    claims = [
        TargetConfig(policy="a", metric="greedy_accuracy", op=">=", than="sft"),
        TargetConfig(policy="b", metric="greedy_accuracy", op=">=", than="sft"),
        TargetConfig(policy="a", metric="rm_correct_above_wrong.math", op=">=", than=0.8),
        TargetConfig(policy="b", metric="rm_correct_above_wrong.math", op=">=", than=0.8),
        TargetConfig(policy="c", metric="greedy_accuracy", op="<", than="sft"),
    ]
    lines = targets(mech, claims)
    assert [line.split("**")[1] for line in lines] == ["met", "not met", "not met", "not measured", "not measured"]
    assert "0.450 against sft's 0.400" in lines[0] and "the run has no c" in lines[4]
    with pytest.raises(ConfigError, match=r"targets\.0\.metric"):
        load_config(RunJob, DEMO, ["targets=[{policy: a, metric: accuracy, op: '>', than: 0.5}]"])
