"""W&B and MLflow tracking (`hrlaif_ray/tracking.py`), read back from what the libraries wrote, without a network:
MLflow's local file store through its client, W&B offline through the run file `wandb sync` would upload. The PPO
loop's runs are checked in tests/test_faults.py (a run with a restart from a checkpoint); SFT's and the RM's here,
in process, with the pipeline's naming and grouping of its stages' runs."""

from __future__ import annotations

import json
import sys

import pytest
from labeling_fixtures import write_harm_and_math_labels
from tracking_readers import mlflow_run, wandb_ids, wandb_run

from hrlaif_ray.config import LoggingConfig, RMTrainJob, RunJob, SFTJob
from hrlaif_ray.errors import ConfigError
from hrlaif_ray.tracking import Tracker, check_trackers


def trackers(tmp_path, **extra) -> LoggingConfig:
    """W&B offline and MLflow on a local SQLite store (MLflow 3's local backend), both under tmp_path."""
    mlflow = {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "experiment": "t", "artifact_location": str(tmp_path)}
    return LoggingConfig(wandb={"project": "hrlaif-test", "mode": "offline"}, mlflow=mlflow, **extra)


def test_both_trackers_get_the_metrics_config_summary_and_files_and_a_resume_goes_on_in_the_same_runs(tmp_path):
    cfg = trackers(tmp_path, name="seed-1/hrlaif/ppo", group="demo-1")
    out = tmp_path / "ppo"
    config = {"algo": {"estimator": "rloo", "kl_coef": 0.05}, "steps": 3, "seeds": [1, 2]}
    first = Tracker(cfg, "ppo", out, config)
    first.log(1, {"reward/mean": 0.25, "actor/loss": 1.5, "eval/accuracy": 0.5, "eval/accuracy/math": 0.25})
    first.close(failed=True)  # the run died after step 1
    again = Tracker(cfg, "ppo", out, config, resume=True)
    again.log(1, {"reward/mean": 9.0, "actor/loss": 9.0})  # redone from a checkpoint: its first values stay
    again.log(2, {"reward/mean": 0.5, "actor/loss": 1.0})
    (out / "final.json").write_text(json.dumps({"steps": 2}))
    again.summary({"steps": 2, "reward/mean": 0.5, "checkpoint": "step_2"})
    again.artifact(out / "final.json")
    again.artifact(out / "missing.json")  # nothing to send: skipped
    again.close()

    ml = mlflow_run(cfg.mlflow.tracking_uri, "t", "seed-1/hrlaif/ppo")
    assert ml["metrics"]["reward/mean"] == [(1, 0.25), (2, 0.5)] and ml["metrics"]["actor/loss"] == [(1, 1.5), (2, 1.0)]
    assert ml["metrics"]["eval/accuracy"] == [(1, 0.5)] and ml["metrics"]["eval/accuracy/math"] == [(1, 0.25)]
    assert ml["params"] == {"algo.estimator": "rloo", "algo.kl_coef": "0.05", "steps": "3", "seeds": "[1, 2]"}
    assert ml["tags"]["hrlaif.group"] == "demo-1" and ml["tags"]["hrlaif.stage"] == "ppo"
    assert ml["status"] == "FINISHED" and ml["metrics"]["final/steps"] == [(0, 2.0)]
    assert sorted(ml["artifacts"]) == ["config.json", "results/final.json"]

    wb = wandb_run(out)  # one run id: the resume went on in the same run
    assert (wb["name"], wb["group"], wb["job_type"]) == ("seed-1/hrlaif/ppo", "demo-1", "ppo")
    assert [(r["_step"], r["reward/mean"], r["actor/loss"]) for r in wb["history"]] == [(1, 0.25, 1.5), (2, 0.5, 1.0)]
    assert wb["config"]["algo"] == {"estimator": "rloo", "kl_coef": 0.05} and wb["config"]["seeds"] == [1, 2]
    assert wb["summary"]["steps"] == 2 and wb["artifacts"] == ["final.json"] and wb["exit_code"] == 0

    fresh = Tracker(cfg, "ppo", out, config)  # not a resume: a new run
    fresh.close()
    assert len(wandb_ids(out)) == 2 and wandb_ids(out)[0] == wb["id"]


def test_a_tracker_that_fails_is_warned_of_and_the_stage_goes_on_and_urls_lose_their_credentials(tmp_path, caplog):
    import shutil

    store = tmp_path / "artifacts"
    mlflow = {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "artifact_location": str(store)}
    config = {"reward": {"labeling": {"judges": [{"base_url": "https://user:s3cret@judge.example/v1"}]}}}
    tracker = Tracker(LoggingConfig(mlflow=mlflow, name="ppo"), "ppo", tmp_path / "out", config)
    shutil.rmtree(store)
    store.write_text("")  # the artifact store is a file now: every upload fails
    (tmp_path / "final.json").write_text("{}")
    tracker.artifact(tmp_path / "final.json")
    tracker.log(1, {"reward/mean": 1.0})
    tracker.close()
    assert "mlflow: artifact final.json failed" in caplog.text and "the stage goes on" in caplog.text
    run = mlflow_run(mlflow["tracking_uri"], "hrlaif", "ppo")
    assert run["metrics"]["reward/mean"] == [(1, 1.0)] and run["status"] == "FINISHED"
    assert run["params"]["reward.labeling.judges"] == json.dumps([{"base_url": "https://***@judge.example/v1"}])
    assert "s3cret" not in json.dumps(run["params"])


def test_without_trackers_nothing_is_written_and_a_missing_library_is_one_error(tmp_path, monkeypatch):
    Tracker(LoggingConfig(), "sft", tmp_path / "x").log(1, {"sft/loss": 1.0})
    assert not (tmp_path / "x").exists()
    monkeypatch.setitem(sys.modules, "wandb", None)  # as when the tracking extra is not installed
    with pytest.raises(ConfigError, match=r"logging.wandb: the wandb package is not installed \(pip install"):
        check_trackers(LoggingConfig(wandb={"project": "p"}))
    with pytest.raises(ValueError, match="mode"):
        LoggingConfig(wandb={"project": "p", "mode": "sometimes"})


def test_sft_and_the_reward_model_log_their_curves_and_results(tmp_path, tiny_model_dir):
    from hrlaif_ray.reward.train import train_reward_model
    from hrlaif_ray.sft import train_sft

    cfg = trackers(tmp_path, group="g")
    sft = SFTJob(
        init=str(tiny_model_dir),
        output_dir=str(tmp_path / "sft"),
        steps=4,
        batch_size=8,
        warmup_steps=1,
        eval_prompts=4,
        prompts={"n": 60},
        logging=cfg.model_copy(update={"name": "sft"}),
    )
    result = train_sft(sft, log=lambda line: None)
    ml = mlflow_run(cfg.mlflow.tracking_uri, "t", "sft")
    losses = json.loads((tmp_path / "sft" / "sft_metrics.json").read_text())["losses"]
    assert [s for s, _ in ml["metrics"]["sft/loss"]] == [1, 2, 3, 4]
    assert [v for _, v in ml["metrics"]["sft/loss"]] == pytest.approx(losses)
    assert ml["metrics"]["final/final_loss"][0][1] == pytest.approx(result["final_loss"])
    assert ml["params"]["steps"] == "4" and "results/sft_metrics.json" in ml["artifacts"]
    assert [r["_step"] for r in wandb_run(tmp_path / "sft")["history"]] == [1, 2, 3, 4]

    write_harm_and_math_labels(tmp_path)
    rm = RMTrainJob(
        init=str(tiny_model_dir),
        labels_dir=str(tmp_path / "labels"),
        prompts=str(tmp_path / "prompts.parquet"),
        output_dir=str(tmp_path / "rm"),
        epochs=1,
        batch_prompts=16,
        eval_fraction=0.25,
        sequence_classification=False,
        logging=cfg.model_copy(update={"name": "rm"}),
    )
    history = train_reward_model(rm, log=lambda line: None)["history"]
    ml = mlflow_run(cfg.mlflow.tracking_uri, "t", "rm")
    steps = history[-1]["steps"]
    assert [s for s, _ in ml["metrics"]["rm/loss"]] == list(range(1, steps + 1))
    assert ml["metrics"]["rm/epoch_loss"] == [(steps, pytest.approx(history[-1]["loss"]))]
    assert ml["metrics"]["rm/eval_accuracy_all"][0][1] == pytest.approx(history[-1]["eval_accuracy_all"])
    assert "rm/eval_accuracy/harmful" in ml["metrics"] and "results/metrics.json" in ml["artifacts"]
    assert ml["tags"]["hrlaif.group"] == "g" and ml["status"] == "FINISHED"


def test_the_pipeline_names_each_trained_stage_and_groups_them(tmp_path):
    from cluster.pipeline import Run

    uri = (tmp_path / "mlruns").as_uri()
    job = RunJob(output_dir=str(tmp_path / "demo"), logging={"mlflow": {"tracking_uri": uri}})
    run = Run(job)
    ppo = run.stage("seed-1/hrlaif/ppo", ["ppo"], tmp_path, policy="p", output_dir="o", prompts="q").config
    sft = run.stage("sft", ["sft"], tmp_path, init="i", output_dir="o").config
    sample = run.stage("seed-1/sample", ["sample"], tmp_path, policy="p", prompts="q", output="o").config
    assert (ppo.logging.name, sft.logging.name) == ("seed-1/hrlaif/ppo", "sft")
    assert ppo.logging.group == sft.logging.group == run.group and run.group.startswith("demo-")
    assert ppo.logging.mlflow.tracking_uri == uri and not hasattr(sample, "logging")
    with pytest.raises(ValueError, match="ppo.logging.group: set by the run"):
        RunJob(ppo={"logging": {"group": "mine"}})
