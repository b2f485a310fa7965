"""`hrlaif dpo`'s config: DPO (or IPO) on the labels' partial orders, and iterative DPO's rounds."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from hrlaif_ray.config.base import Section, set_by
from hrlaif_ray.config.labeling import HumanOverrides, LabelJob, LabelSettings
from hrlaif_ray.config.learner import DPOLearner, FrozenConfig, moved_into
from hrlaif_ray.config.ppo import SampleJob, SampleSettings
from hrlaif_ray.config.resources import DPOResourcePlan
from hrlaif_ray.config.tracking import LoggingConfig


class IterativeDPOConfig(Section):
    """Iterative (online) DPO: after training on the given labels, rounds of sample -> label -> DPO, each round on
    fresh samples of the last round's policy."""

    rounds: int = Field(1, ge=1, description="Rounds after the first (the first trains on labels_dir).")
    prompts_per_round: int = Field(
        256, ge=1, description="Prompts of the prompts file sampled for each round (a different draw each round)."
    )
    reference: Literal["last", "initial"] = Field(
        "last",
        description="A round's frozen reference: 'last' the policy it starts from (the previous round's, as "
        "iterative DPO and self-rewarding LMs do), 'initial' the job's reference throughout.",
    )
    sample: SampleSettings = Field(
        default_factory=SampleSettings,
        description="How each round samples (`hrlaif sample`'s settings; the files and seed are the round's).",
    )
    label: LabelSettings = Field(
        default_factory=LabelSettings,
        description="How each round labels (`hrlaif label`'s settings: labeling, pool...; the files the round's).",
    )


IterativeDPOConfig.moved = set_by(
    "the round (its files and seed)", {"sample": (SampleJob, SampleSettings), "label": (LabelJob, LabelSettings)}
)


class DPOSettings(HumanOverrides):
    """`hrlaif dpo`'s settings: everything but its files and seed (a pipeline's `dpo` section)."""

    moved = {**moved_into("learner"), "tensorboard": ("logging.tensorboard",)}

    reference: str | None = Field(None, description="The frozen reference's folder (None: the policy).")
    beta: float = Field(
        0.1, gt=0, description="DPO's beta: the implicit reward's scale (larger stays closer to the reference)."
    )
    loss_type: Literal["sigmoid", "ipo"] = Field(
        "sigmoid", description="'sigmoid': DPO's -log sigmoid; 'ipo': IPO's squared distance to 1 / (2 beta)."
    )
    margin: float = Field(
        0.0,
        ge=0,
        description="Margin per tier of gap, in implicit-reward units (log-ratio units for IPO): a pair two "
        "tiers apart must be won by 2 x margin (0: off; labels whose pairs form no tiers get none).",
    )
    sft_weight: float = Field(
        0.0, ge=0, description="Weight of the SFT term (NLL of each prompt's best responses) added to the loss."
    )
    epochs: int = Field(2, ge=1, description="Passes over the training labels (the budget, in steps of batch_prompts).")
    batch_prompts: int = Field(
        16, ge=1, description="Prompts per optimizer step over all ranks (each with all its responses)."
    )
    micro_batch_prompts: int = Field(
        4, ge=1, description="Prompts per forward on one rank; micro-batches accumulate to a rank's share."
    )
    forward_rows: int = Field(
        8,
        ge=1,
        description="Responses per forward inside a micro-batch, sorted by length and trimmed of padding (a "
        "prompt's responses differ in length); the micro-batch's one backward takes them all.",
    )
    learner: DPOLearner = Field(
        default_factory=DPOLearner, description="The policy's optimiser and ZeRO stage (its ranks: resources.actor)."
    )
    frozen: FrozenConfig = Field(
        default_factory=FrozenConfig,
        description="How the frozen reference runs (its ranks: resources.reference): precision, ZeRO-3 sharding.",
    )
    eval_fraction: float = Field(
        0.1, ge=0, lt=1, description="Share of prompts held out (by a hash of the id, as the RM's) for the metrics."
    )
    max_prompt_tokens: int = Field(256, gt=0, description="Prompts are cut to this many tokens.")
    max_response_tokens: int = Field(
        128, gt=0, description="Responses are cut to this many tokens (the end-of-turn token kept)."
    )
    resources: DPOResourcePlan = Field(
        default_factory=DPOResourcePlan,
        description="The policy's ranks (actor) and the reference's replicas (only they are placed).",
    )
    ray_address: str | None = Field(None, description="Ray cluster to join (None: RAY_ADDRESS, else a local one).")
    logging: LoggingConfig = Field(
        default_factory=LoggingConfig,
        description="Where the metrics go besides metrics.jsonl: TensorBoard, W&B, MLflow (hrlaif_ray/tracking.py).",
    )
    iterative: IterativeDPOConfig | None = Field(
        None,
        description="Iterative DPO: rounds of sample (vLLM) -> label (the pool) -> DPO after the first, each in "
        "output_dir/round-N, resumable (None: one round on labels_dir).",
    )

    @model_validator(mode="after")
    def _splits(self) -> DPOSettings:
        ranks = self.resources.actor.replicas
        if self.batch_prompts % (ranks * self.micro_batch_prompts):
            raise ValueError(
                f"batch_prompts ({self.batch_prompts}) must split into micro_batch_prompts "
                f"({self.micro_batch_prompts}) on each of resources.actor.replicas ({ranks}) ranks"
            )
        return self


class DPOJob(DPOSettings):
    """`hrlaif dpo`: the policy learns from a label ledger directly, DPO against the frozen SFT reference."""

    model_keys: ClassVar[tuple[str, ...]] = ("policy", "reference")

    policy: str = Field(description="The SFT policy folder: where training starts (and the reference, by default).")
    labels_dir: str = Field(description="Folder of committed label shards (`hrlaif label`'s output_dir).")
    prompts: str = Field(description="Prompts Parquet the labels refer to.")
    output_dir: str = Field(description="policy/ (the trained HF folder), metrics.jsonl, TensorBoard, final.json.")
    seed: int = Field(0, description="Seed of the batch order and the learners.")
