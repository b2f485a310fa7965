"""Experiment trackers for one stage's run: Weights & Biases and MLflow, as `logging` configures them (`hrlaif_ray/
config/tracking.py`), beside `metrics.jsonl` and TensorBoard (`hrlaif_ray/metrics.py`).

Each tracker gets what the JSONL gets (the step metrics under the same names: `reward/*`, `actor/*`, `sft/loss`),
the resolved config (W&B's run config; MLflow params, dotted keys, and the config as a file), the stage's results
as a summary, and its result files (final.json, metrics.json, report.md) as artifacts. A pipeline's stage runs share
a group: W&B's `group`, MLflow's tag `hrlaif.group`. The runs' ids and the last step logged are kept in
`<output>/tracking.json`, so a resumed stage (PPO from its checkpoint) goes on logging into the runs it started.
A step that a restart from a checkpoint redoes keeps its first values in the trackers (neither can take a point
back; metrics.jsonl holds the redone ones), so each step is there once.

We call the libraries' own clients (`wandb.init(reinit="create_new")`, `mlflow.MlflowClient`) rather than their
module-level "active run" APIs: two stages in one process (the tests, a notebook) must not share a run.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hrlaif_ray.config.tracking import LoggingConfig, MlflowConfig, WandbConfig
from hrlaif_ray.errors import ConfigError

EXTRA = "pip install 'hrlaif-ray[tracking]'"
IDS = "tracking.json"
log = logging.getLogger("hrlaif.tracking")
_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")  # user:password@ in a URL


def check_trackers(cfg: LoggingConfig, where: str = "logging") -> None:
    """One line naming the key (`where`: the section's path) when a configured tracker's library is missing,
    before anything trains."""
    for key, module in (("wandb", "wandb"), ("mlflow", "mlflow")):
        if getattr(cfg, key) is not None:
            try:
                __import__(module)
            except ImportError:
                raise ConfigError(f"{where}.{key}: the {module} package is not installed ({EXTRA})") from None


def redacted(value: Any) -> Any:
    """The config with the credentials a URL may carry (scheme://user:token@host) left out: it goes to the trackers."""
    if isinstance(value, dict):
        return {k: redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redacted(v) for v in value]
    return _USERINFO.sub("***@", value) if isinstance(value, str) else value


def flatten(config: dict, prefix: str = "") -> dict[str, str]:
    """Dotted keys -> values as text (lists and nulls as JSON), the shape of MLflow params."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value if isinstance(value, str) else json.dumps(value)
    return out


class _Wandb:
    def __init__(self, cfg: WandbConfig, name: str, group: str, stage: str, folder: Path, config: dict, run_id):
        import wandb

        self.wandb = wandb
        directory = Path(cfg.dir or folder)
        directory.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=cfg.project,
            entity=cfg.entity,
            mode=cfg.mode,
            dir=str(directory),
            name=name,
            group=group,
            job_type=stage,
            config=config,
            id=run_id,
            resume="allow" if run_id else None,
            reinit="create_new",
            settings=wandb.Settings(console="off", silent=True),
        )
        self.id = self.run.id

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log(metrics, step=step)

    def summary(self, values: dict[str, float]) -> None:
        self.run.summary.update(values)

    def artifact(self, path: Path, kind: str) -> None:
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{self.run.name}-{path.name}")
        art = self.wandb.Artifact(name, type=kind)
        art.add_file(str(path))
        self.run.log_artifact(art)

    def close(self, failed: bool) -> None:
        self.run.finish(exit_code=1 if failed else 0)


class _Mlflow:
    MAX_PARAMS = 100  # MLflow's limit per log_batch call
    MAX_VALUE = 6000  # and per param value

    def __init__(self, cfg: MlflowConfig, name: str, group: str, stage: str, folder: Path, config: dict, run_id):
        from mlflow import MlflowClient
        from mlflow.entities import Param

        self.client = client = MlflowClient(cfg.tracking_uri)
        if run_id:  # a resumed stage: its run goes on
            client.update_run(run_id, status="RUNNING")
            self.id = run_id
            return
        experiment = self._experiment(cfg)
        tags = {"hrlaif.group": group, "hrlaif.stage": stage, "hrlaif.output": str(folder)}
        self.id = client.create_run(experiment, run_name=name, tags=tags).info.run_id
        params = [Param(k, v[: self.MAX_VALUE]) for k, v in flatten(config).items()]
        for i in range(0, len(params), self.MAX_PARAMS):
            client.log_batch(self.id, params=params[i : i + self.MAX_PARAMS])
        client.log_dict(self.id, config, "config.json")

    def _experiment(self, cfg: MlflowConfig) -> str:
        """The experiment's id, made when missing (a stage started beside this one may make it first)."""
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(cfg.experiment)
        if found is not None:
            return found.experiment_id
        location = cfg.artifact_location
        location = Path(location).resolve().as_uri() if location and "://" not in location else location
        try:
            return self.client.create_experiment(cfg.experiment, artifact_location=location)
        except MlflowException:
            found = self.client.get_experiment_by_name(cfg.experiment)
            if found is None:
                raise
            return found.experiment_id

    def log(self, step: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    def summary(self, values: dict[str, float]) -> None:
        self.log(0, {f"final/{k}": v for k, v in values.items()})

    def artifact(self, path: Path, kind: str) -> None:
        self.client.log_artifact(self.id, str(path), artifact_path=kind)

    def close(self, failed: bool) -> None:
        self.client.set_terminated(self.id, "FAILED" if failed else "FINISHED")


class Tracker:
    """The configured trackers' runs for one stage; without W&B and MLflow every call does nothing. A tracker that
    fails once started (its server down, a full disk) is warned of and skipped for that call: the stage goes on,
    and metrics.jsonl and the results files stay the record."""

    def __init__(
        self, cfg: LoggingConfig, stage: str, folder: str | Path, config: dict | None = None, resume: bool = False
    ):
        """`resume`: go on in the runs named in `<folder>/tracking.json` (a resumed stage); else new runs."""
        self.folder = Path(folder)
        self.runs: list = []
        if cfg.wandb is None and cfg.mlflow is None:
            return
        check_trackers(cfg)
        self.folder.mkdir(parents=True, exist_ok=True)
        ids_path = self.folder / IDS
        ids = json.loads(ids_path.read_text()) if resume and ids_path.is_file() else {}
        # steps up to `floor` are in the trackers already: a resumed stage's, or those before an in-process restart
        self.ids_path, self.floor, self.failures = ids_path, ids.get("last_step", -1), 0
        name = cfg.name or stage
        group = cfg.group or f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        config = redacted(config or {})
        try:
            for key, cls in (("wandb", _Wandb), ("mlflow", _Mlflow)):
                section = getattr(cfg, key)
                if section is not None:
                    run = cls(section, name, group, stage, self.folder, config, ids.get(key))
                    ids[key] = run.id
                    self.runs.append(run)
        except BaseException:  # the runs already started end as failed; the error is the stage's
            self.close(failed=True)
            raise
        self.ids = ids
        ids_path.write_text(json.dumps(ids))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.runs or step <= self.floor:  # a step redone after a restart: logged the first time
            return
        values = {k: float(v) for k, v in metrics.items()}
        for run in self.runs:
            self._guard(run, "log", lambda: run.log(step, values))
        if step > self.ids.get("last_step", -1):  # kept with the ids: a resumed stage starts above it
            self.ids["last_step"] = step
            self.ids_path.write_text(json.dumps(self.ids))

    def restarted(self) -> None:
        """The stage starts again from a checkpoint in this process: the steps logged so far keep their values."""
        if self.runs:
            self.floor = self.ids.get("last_step", -1)

    def summary(self, values: dict[str, Any]) -> None:
        """The stage's results (the numbers among them) as the run's summary."""
        numbers = {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        for run in self.runs:
            self._guard(run, "summary", lambda: run.summary(numbers))

    def artifact(self, path: str | Path, kind: str = "results") -> None:
        if Path(path).is_file():
            for run in self.runs:
                self._guard(run, f"artifact {Path(path).name}", lambda: run.artifact(Path(path), kind))

    def close(self, failed: bool = False) -> None:
        for run in self.runs:
            self._guard(run, "close", lambda: run.close(failed))
        self.runs = []

    def _guard(self, run, what: str, call) -> None:
        try:
            call()
        except Exception as exc:  # a tracker's failure is not the stage's: warned of (the first ten), skipped
            self.failures += 1
            if self.failures <= 10:
                tracker = type(run).__name__.strip("_").lower()
                why = redacted(str(exc))[:300]
                log.warning("%s: %s failed (%s: %s); the stage goes on", tracker, what, type(exc).__name__, why)


@contextmanager
def stage_tracker(cfg: LoggingConfig, stage: str, job, rank: int = 0, resume: bool = False) -> Iterator[Tracker]:
    """The stage's tracker runs for the block (rank 0's; other ranks get one that does nothing), ended as failed
    when the block raises. `job`: the stage's config (its output_dir holds tracking.json)."""
    config = job.model_dump(mode="json", by_alias=True)
    tracker = Tracker(cfg if rank == 0 else LoggingConfig(), stage, job.output_dir, config, resume)
    try:
        yield tracker
    except BaseException:
        tracker.close(failed=True)
        raise
    tracker.close()
