"""`hrlaif sft`'s config: supervised fine-tuning of the policy (loss on the response only)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from hrlaif_ray.config.base import Section
from hrlaif_ray.config.data import SFTMixConfig, SFTPromptMix
from hrlaif_ray.config.learner import SFTLearner, moved_into
from hrlaif_ray.config.tracking import LoggingConfig


class SFTSettings(Section):
    """`hrlaif sft`'s settings: everything but the folders it reads and writes (a pipeline's `sft` section)."""

    moved = moved_into("learner")

    data: str | None = Field(None, description='JSONL of {"prompt", "response"} rows; None: the generated mix below.')
    prompts: SFTPromptMix = Field(
        default_factory=SFTPromptMix,
        description="The generated prompt mix (when data is None; split 'train': no reserved problem).",
    )
    responses: SFTMixConfig = Field(
        default_factory=SFTMixConfig, description="How the generated mix's responses are drawn (when data is None)."
    )
    steps: int = Field(
        1100,
        ge=1,
        description="Optimizer steps of batch_size examples: the whole budget (never a time, so the result does "
        "not depend on the machine's speed).",
    )
    batch_size: int = Field(64, ge=1, description="Examples per optimizer step (over all ranks).")
    learner: SFTLearner = Field(
        default_factory=SFTLearner,
        description="The optimiser (learner.lr is the peak rate, after warm-up) and the ZeRO stage.",
    )
    min_lr: float = Field(2e-4, ge=0, description="The cosine schedule decays learner.lr to this.")
    warmup_steps: int = Field(30, ge=0, description="Steps of linear warm-up from 0 to learner.lr.")
    max_prompt_tokens: int = Field(256, gt=0, description="Prompts are cut to this many tokens.")
    max_response_tokens: int = Field(
        128, gt=0, description="Responses are cut to this many tokens (the end token included)."
    )
    eval_prompts: int = Field(128, ge=0, description="Held-out verifiable prompts for greedy accuracy at the end.")
    threads: int | None = Field(None, ge=1, description="torch threads (None: torch's default).")
    seed: int = Field(0, description="Seed of the initialisation order and the batch order.")
    logging: LoggingConfig = Field(
        default_factory=LoggingConfig,
        description="Where the loss curve and the results go besides the JSON files: W&B, MLflow (hrlaif_ray/tracking.py).",
    )


class SFTJob(SFTSettings):
    """`hrlaif sft`: supervised fine-tuning of the policy on prompt/response data (loss on the response only)."""

    model_keys: ClassVar[tuple[str, ...]] = ("init",)

    init: str = Field(description="Model folder to start from (`hrlaif tiny-model`'s output, SmolLM2...).")
    output_dir: str = Field(description="Where the SFT policy (an HF folder) goes.")
