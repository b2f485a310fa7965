"""The reward model's config: training it on labels (`hrlaif train-rm`) and probing it against the ground truth
(`hrlaif rm-probe`)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from hrlaif_ray.config.base import Section
from hrlaif_ray.config.dpo import DPOJob, DPOSettings
from hrlaif_ray.config.labeling import HumanOverrides
from hrlaif_ray.config.learner import RMLearner, moved_into
from hrlaif_ray.config.tracking import LoggingConfig


class RMTrainSettings(HumanOverrides):
    """`hrlaif train-rm`'s settings: everything but its files and seed (a pipeline's `rm` section)."""

    moved = moved_into("learner")

    kind: Literal["scalar", "implicit"] = Field(
        "scalar",
        description="'scalar': the paper's RM, a head on the policy's backbone trained on the labels' pairs (the "
        "fields below). 'implicit': DPO on the labels (`implicit`), the reward beta x the trained model's "
        "log-probability ratio to the starting policy, normalised and clipped like the scalar RM's "
        "(hrlaif_ray/reward/implicit.py); it scores through the language model's likelihood.",
    )
    implicit: DPOSettings = Field(
        default_factory=DPOSettings,
        description="kind 'implicit': the DPO run that trains it (`hrlaif dpo`'s settings; the reference is the "
        "starting policy).",
    )
    epochs: int = Field(2, ge=1, description="Passes over the training labels.")
    batch_prompts: int = Field(8, ge=1, description="Prompts per step per rank (all their responses, one row each).")
    learner: RMLearner = Field(
        default_factory=RMLearner, description="The optimiser of the backbone and the head, and the ZeRO stage."
    )
    margin: float = Field(
        0.0,
        ge=0,
        description="Bradley-Terry margin per tier of gap, in raw reward units: a pair two tiers apart must be "
        "won by 2 x margin (0: off; labels whose pairs form no tiers get none).",
    )
    clip: float = Field(10.0, gt=0, description="Rewards are clipped to [-clip, clip] inside the RM's forward.")
    normalize: bool = Field(True, description="Save the training-set reward mean/std; forward normalises with them.")
    sequence_classification: bool = Field(
        True,
        description="Also save the RM as `AutoModelForSequenceClassification` (num_labels=1: what TRL's RewardTrainer "
        "and OpenRLHF load) in output_dir/sequence-classification, its normalisation and clip in its config.json "
        "(`hrlaif_reward`).",
    )
    eval_fraction: float = Field(0.1, ge=0, lt=1, description="Share of prompts held out (by a hash of the id).")
    max_prompt_tokens: int = Field(256, gt=0, description="Prompts are cut to this many tokens.")
    max_response_tokens: int = Field(
        128, gt=0, description="Responses are cut to this many tokens (the end token, where the reward is read, kept)."
    )
    logging: LoggingConfig = Field(
        default_factory=LoggingConfig,
        description="Where the loss curve and the results go besides the JSON files: W&B, MLflow (hrlaif_ray/tracking.py).",
    )


class RMTrainJob(RMTrainSettings):
    """`hrlaif train-rm`: a reward model from labels, starting from the policy's weights."""

    model_keys: ClassVar[tuple[str, ...]] = ("init",)

    init: str = Field(description="Policy folder (the SFT checkpoint) whose weights start the RM's backbone.")
    labels_dir: str = Field(description="Folder of committed label shards (`hrlaif label`'s output_dir).")
    prompts: str = Field(description="Prompts Parquet the labels refer to.")
    output_dir: str = Field(description="Where the RM checkpoint (HF folder + head + normalisation) goes.")
    seed: int = Field(0, description="Seed of the head's initialisation and the batch order.")

    def implicit_job(self) -> DPOJob:
        """kind 'implicit': the DPO job that trains the RM (into output_dir/dpo), the starting policy its reference."""
        settings = self.implicit.model_dump(exclude={"reference", "iterative", "human_overrides"})
        return DPOJob(
            **settings,
            human_overrides=self.human_overrides,
            policy=self.init,
            reference=self.init,
            labels_dir=self.labels_dir,
            prompts=self.prompts,
            output_dir=f"{self.output_dir}/dpo",
            seed=self.seed,
        )


class RMProbeSettings(Section):
    """`hrlaif rm-probe`'s settings: everything but its files (a pipeline's `probe` section)."""

    threads: int = Field(1, ge=1, description="torch threads.")


class RMProbeJob(RMProbeSettings):
    """`hrlaif rm-probe`: a reward model against the ground truth on held-out policy samples (the mechanism's link 2)."""

    model_keys: ClassVar[tuple[str, ...]] = ("rm", "reference")

    rm: str = Field(description="RM folder (`hrlaif train-rm`'s output), or a DPO policy (with reference).")
    reference: str | None = Field(
        None,
        description="A DPO policy's reference (the SFT policy): then `rm` is the DPO policy and the score its "
        "implicit reward, log pi(y|x) - log pi_ref(y|x).",
    )
    prompts: str = Field(description="Prompts Parquet of the samples (standard answers; metadata 'unseen').")
    rollouts: str = Field(description="Rollouts Parquet: K policy samples per prompt, none of them trained on.")
    output: str = Field(description="JSON to write: correct-above-wrong per category, unseen and seen apart.")
