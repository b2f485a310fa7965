"""The project's generated data: the prompt mix (hrlaif_ray/data/prompt_mix.py) and its SFT responses
(hrlaif_ray/data/sft_mix.py). Each job that generates a mix of its own has its variant here, its defaults beside
the others'."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from hrlaif_ray.config.base import Section, variant


class PromptMixConfig(Section):
    """The project's own generated prompt mix (the demo needs no downloaded data)."""

    n: int = Field(1000, gt=0, description="Number of prompts.")
    seed: int = Field(0, description="Generator seed.")
    math: float = Field(0.45, ge=0, description="Share of arithmetic word problems with a free answer.")
    multiple_choice: float = Field(0.25, ge=0, description="Share of the same problems as multiple choice.")
    harmful: float = Field(0.2, ge=0, description="Share of harmful requests.")
    open_qa: float = Field(0.1, ge=0, description="Share of open questions.")
    a_min: int = Field(10, description="Smallest first operand.")
    a_max: int = Field(29, description="Largest first operand.")
    b_min: int = Field(1, description="Smallest second operand.")
    b_max: int = Field(9, description="Largest second operand.")
    holdout: float = Field(
        0.3,
        ge=0,
        lt=1,
        description="Share of the (a, b, op) problems and of the harmful variants "
        "reserved from training (a fixed hash of each, the same for every seed and stage; 0: none): "
        "a third for development, two thirds for the reported evaluation.",
    )
    split: Literal["train", "dev", "eval"] = Field(
        "train",
        description="'train': never draw a reserved problem (every "
        "training stage); 'dev' / 'eval': draw unseen_share of the prompts "
        "from the development / the evaluation part of the reserve.",
    )
    unseen_share: float = Field(
        0.5,
        ge=0,
        le=1,
        description="With split 'dev' or 'eval': share of verifiable and harmful "
        "prompts drawn from the reserve (metadata 'unseen': true); the rest are seen problems.",
    )


SFTPromptMix = variant(
    PromptMixConfig,
    "SFTPromptMix",
    "The SFT stage's generated prompts: enough that each is seen about once or twice in the step budget (a small mix "
    "seen many times overfits); no open questions.",
    n=40_000,
    open_qa=0.0,
)
PPOPromptMix = variant(
    PromptMixConfig,
    "PPOPromptMix",
    "PPO's generated prompts: verifiable ones only (the default reward is the verifier's).",
    n=2000,
    harmful=0.0,
    open_qa=0.0,
)
EvalPromptMix = variant(
    PromptMixConfig,
    "EvalPromptMix",
    "The evaluation's generated prompts: split 'eval', so a share of them is from the reserve no training stage "
    "sees; a seed apart from the training mixes'.",
    n=256,
    seed=20_001,
    math=0.4,
    multiple_choice=0.3,
    harmful=0.3,
    open_qa=0.0,
    split="eval",
)
RunPromptMix = variant(
    PromptMixConfig,
    "RunPromptMix",
    "The pipeline's RL prompts: sampled and labeled for the reward model, then PPO's; harmful ones for red teaming.",
    n=1200,
    seed=1,
    harmful=0.3,
    open_qa=0.0,
)


class SFTMixConfig(Section):
    """How the SFT responses of the generated mix are drawn."""

    seed: int = Field(0, description="Response generator seed.")
    p_correct: list[float] = Field(
        [0.75, 0.7, 0.55, 0.4, 0.3],
        min_length=1,
        description="Chance the final answer is right after 0, 1, 2... reasoning sentences.",
    )
    control: bool = Field(
        False, description="Correctness independent of length (the mean of p_correct for every length)."
    )
    wrong_offsets: list[int] = Field(
        [-10, -2, -1, 1, 2, 10], min_length=1, description="Near misses of a wrong answer."
    )
    p_refuse: float = Field(0.5, ge=0, le=1, description="Share of refusals among the harmful prompts' responses.")
