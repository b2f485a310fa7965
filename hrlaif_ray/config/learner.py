"""The learner section: how one trained role optimises, the same section for every trained role (the SFT
policy, the reward model, PPO's actor and critic, the DPO policy). Each role's defaults are its variant here,
side by side."""

from __future__ import annotations

from pydantic import Field

from hrlaif_ray.config.base import Section, variant


class LearnerConfig(Section):
    """One trained role's optimiser (AdamW) and its DeepSpeed ZeRO stage."""

    lr: float = Field(1e-5, gt=0, description="Learning rate (AdamW; SFT's peak, after warm-up).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    grad_clip: float = Field(1.0, gt=0, description="Gradient-norm clip.")
    zero_stage: int = Field(
        2,
        ge=0,
        le=3,
        description="DeepSpeed ZeRO stage 0-3 (3 partitions the weights too); a group of one rank runs stage 0 "
        "(nothing to partition, and stages 1-3 only add copies).",
    )


SFTLearner = variant(LearnerConfig, "SFTLearner", "The SFT policy's optimiser.", lr=2e-3, zero_stage=0)
RMLearner = variant(LearnerConfig, "RMLearner", "The reward model's optimiser (backbone and head).", lr=1e-4)
DPOLearner = variant(LearnerConfig, "DPOLearner", "The DPO policy's optimiser (constant learning rate).", lr=1e-5)
ActorLearner = variant(LearnerConfig, "ActorLearner", "PPO's actor (the policy).", lr=1e-6)
CriticLearner = variant(LearnerConfig, "CriticLearner", "PPO's critic (GAE only).", lr=5e-6)


def moved_into(section: str) -> dict[str, tuple[str, ...]]:
    """A job's `moved` entries for the learner keys that sat at its top level and now live in `section`."""
    return {key: (f"{section}.{key}",) for key in LearnerConfig.model_fields}
