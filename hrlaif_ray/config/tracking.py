"""Where a stage's metrics go besides `metrics.jsonl`: TensorBoard, Weights & Biases and MLflow (`hrlaif_ray/
tracking.py`). W&B and MLflow are the `tracking` extra (`pip install 'hrlaif-ray[tracking]'`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from hrlaif_ray.config.base import Section


class WandbConfig(Section):
    """A Weights & Biases run per stage (its key from WANDB_API_KEY or `wandb login`, never the config)."""

    project: str = Field(description="W&B project.")
    entity: str | None = Field(None, description="W&B team or user (None: the key's default).")
    mode: Literal["online", "offline", "disabled"] = Field(
        "online", description="offline: the run is written under dir, for `wandb sync` later (no network needed)."
    )
    dir: str | None = Field(None, description="Where W&B keeps its files (None: the stage's output folder).")


class MlflowConfig(Section):
    """An MLflow run per stage."""

    tracking_uri: str | None = Field(
        None,
        description="MLflow tracking server or store: http://..., or sqlite:///runs/mlflow.db on one machine (a "
        "folder store needs MLFLOW_ALLOW_FILE_STORE=true in MLflow 3 and cannot hold both eval/accuracy and "
        "eval/accuracy/harmful). None: MLFLOW_TRACKING_URI, else MLflow's default.",
    )
    experiment: str = Field("hrlaif", description="MLflow experiment the runs go into (made when missing).")
    artifact_location: str | None = Field(
        None,
        description="Where an experiment this makes keeps its artifacts (a folder or URI; None: the server's "
        "default, ./mlartifacts for a sqlite store).",
    )


class LoggingConfig(Section):
    """Where the step metrics go: always `metrics.jsonl`; TensorBoard, W&B and MLflow as set here. Each tracker gets
    the same metric names, the resolved config and the stage's results file (and the pipeline's report) as an
    artifact; a pipeline's stages are one group (W&B `group`, MLflow tag `hrlaif.group`)."""

    tensorboard: bool = Field(True, description="Also write TensorBoard events (tensorboardX) under tensorboard/.")
    wandb: WandbConfig | None = Field(None, description="A W&B run per stage (None: no W&B).")
    mlflow: MlflowConfig | None = Field(None, description="An MLflow run per stage (None: no MLflow).")
    name: str | None = Field(
        None, description="The run's name in the trackers (None: the stage, `ppo`; a pipeline: `seed-1/hrlaif/ppo`)."
    )
    group: str | None = Field(
        None,
        description="The name that groups a pipeline's stage runs (`hrlaif run` sets it from its output folder "
        "and a time stamp; None for a stage run alone: the run is its own group).",
    )
