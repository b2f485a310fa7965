"""The learner section: how one trained role optimises and what its memory holds (precision, ZeRO stage,
offload, gradient checkpointing), the same section for every trained role (the SFT policy, the reward model, PPO's
actor and critic, the DPO policy), each role's defaults its variant here, side by side; and the frozen roles'
section (the reference and reward models: precision and sharding)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from hrlaif_ray.config.base import Section, variant

Precision = Literal["fp32", "bf16"]


class OffloadConfig(Section):
    """What a role keeps in host memory instead of on its accelerator (DeepSpeed ZeRO offload)."""

    optimizer: Literal["none", "cpu"] = Field(
        "none",
        description="'cpu': the optimizer states, fp32 master weights and fp32 gradients in host memory, the step "
        "on the CPU (ZeRO stage 1-3; DeepSpeed's CPU Adam where CUDA is, torch's AdamW elsewhere).",
    )
    params: Literal["none", "cpu"] = Field(
        "none", description="'cpu': the partitioned weights in host memory, fetched layer by layer (ZeRO-3 only)."
    )


class LoRAConfig(Section):
    """Low-rank adapters on the role's linear layers (PEFT's LoRA): only the adapters (and a scalar head, where the
    role has one) are trained and hold optimizer states; the base weights stay frozen and byte-identical. `r: 0` is
    off: the whole model is trained."""

    r: int = Field(0, ge=0, description="The adapters' rank; 0 trains the whole model (no adapters).")
    alpha: float = Field(16.0, gt=0, description="LoRA's scale numerator: the update is (alpha / r) * B A.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the adapters' input (training only).")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear",
        description="The modules that get adapters: 'all-linear' (every linear layer of the decoder, not the output "
        "layer: PEFT's choice and the usual one for RL) or a list of module names (e.g. [q_proj, v_proj]).",
    )
    save_merged: bool = Field(
        False,
        description="Beside the adapter folder (PEFT's format, what every save writes), also write the merged "
        "model as a full HF folder in `merged/` inside it (what a tool without PEFT loads).",
    )

    @property
    def enabled(self) -> bool:
        return self.r > 0


class LearnerConfig(Section):
    """One trained role's optimiser (AdamW), precision, ZeRO stage and offload: the one section every trained role
    has (its micro-batch is its job's: algo.micro_batch_size, batch_size, batch_prompts, micro_batch_prompts)."""

    lr: float = Field(1e-5, gt=0, description="Learning rate (AdamW; SFT's peak, after warm-up).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    grad_clip: float = Field(1.0, gt=0, description="Gradient-norm clip.")
    zero_stage: int = Field(
        2,
        ge=0,
        le=3,
        description="DeepSpeed ZeRO stage 0-3: 1 partitions the optimizer states over the ranks, 2 the gradients "
        "too, 3 the weights too (loaded partitioned: no rank holds the whole model). A Ray learner group of one "
        "rank (PPO, DPO) runs stage 0 (nothing to partition) unless something is offloaded.",
    )
    precision: Precision = Field(
        "fp32",
        description="'fp32': everything in fp32; 'bf16': weights and compute in bf16 with fp32 master weights, "
        "gradients and Adam states in the optimizer (DeepSpeed's bf16 mode; the model loads in bf16). bf16 is the "
        "choice on GPUs; on a CPU without bf16 units it is slow.",
    )
    offload: OffloadConfig = Field(
        default_factory=OffloadConfig, description="What lives in host memory instead (ZeRO offload)."
    )
    gradient_checkpointing: bool = Field(
        False,
        description="Recompute each layer's activations in the backward pass instead of keeping them (about a "
        "third more compute, a layer's activations instead of every layer's).",
    )
    lora: LoRAConfig = Field(
        default_factory=LoRAConfig,
        description="Train low-rank adapters instead of the whole model (r > 0). PPO's actor with adapters is "
        "also its own KL reference (the adapters disabled: no second copy of the weights), syncs only the "
        "adapters to the engines, and checkpoints adapter folders; DPO's reference likewise.",
    )

    @model_validator(mode="after")
    def _offload_needs_zero(self) -> LearnerConfig:
        if self.offload.params != "none" and self.zero_stage != 3:
            raise ValueError(f"offload.params: needs zero_stage 3 (got {self.zero_stage})")
        if self.offload.optimizer != "none" and self.zero_stage == 0:
            raise ValueError("offload.optimizer: needs zero_stage 1-3 (got 0)")
        return self


class FrozenConfig(Section):
    """How a job's frozen roles run (PPO's reference and reward model, DPO's reference): no optimizer, forwards
    only, so their memory is their weights and one forward's activations."""

    precision: Precision = Field(
        "fp32", description="'fp32' or 'bf16' (weights and compute; bf16 halves the weights' memory)."
    )
    zero_stage: Literal[0, 3] = Field(
        0,
        description="0: each rank holds the whole model; 3: a ZeRO-3 inference engine over the role's ranks, each "
        "holding 1/ranks of the weights (loaded partitioned) and gathering a layer at a time, as OpenRLHF runs its "
        "reference and reward models. Its ranks form a process group, so a rank that dies restarts the run from "
        "its checkpoint rather than in place. A role of one rank has nothing to shard and runs 0.",
    )
    offload_params: bool = Field(
        False, description="ZeRO-3: keep the partitioned weights in host memory, fetched layer by layer."
    )

    @model_validator(mode="after")
    def _offload_needs_zero(self) -> FrozenConfig:
        if self.offload_params and self.zero_stage != 3:
            raise ValueError("offload_params: needs zero_stage 3")
        return self


SFTLearner = variant(LearnerConfig, "SFTLearner", "The SFT policy's optimiser.", lr=2e-3, zero_stage=0)
RMLearner = variant(LearnerConfig, "RMLearner", "The reward model's optimiser (backbone and head).", lr=1e-4)
DPOLearner = variant(LearnerConfig, "DPOLearner", "The DPO policy's optimiser (constant learning rate).", lr=1e-5)
ActorLearner = variant(LearnerConfig, "ActorLearner", "PPO's actor (the policy).", lr=1e-6)
CriticLearner = variant(LearnerConfig, "CriticLearner", "PPO's critic (GAE only).", lr=5e-6)


def moved_into(section: str) -> dict[str, tuple[str, ...]]:
    """A job's `moved` entries for the learner keys that sat at its top level and now live in `section`."""
    return {key: (f"{section}.{key}",) for key in ("lr", "weight_decay", "grad_clip", "zero_stage")}
