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
    option_style: Literal["letter_first", "value_first"] = Field(
        "letter_first",
        description="How multiple-choice options are written: '(A) 64' or '64 (A)' (value first: a model that "
        "states the value, then the letter, finds the letter right after that value in the prompt).",
    )
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
        [-10, -2, -1, 1, 2, 10],
        min_length=1,
        description="Near misses of a wrong answer (format 'plain'; a scratchpad's slips are its steps').",
    )
    p_refuse: float = Field(0.5, ge=0, le=1, description="Share of refusals among the harmful prompts' responses.")
    format: Literal["plain", "scratchpad"] = Field(
        "plain",
        description="How a verifiable response states its answer. 'plain': 'The answer is N.' (multiple choice: "
        "'The answer is (C) N.'). 'scratchpad': the sum worked ones digit first, the carry or borrow written out "
        "('47 + 8: 7 + 8 = 15, 4 + 1 = 5, so the answer is 55.'; multiple choice: the value, then its letter, "
        "'... so the answer is 55 (C).'), so that a small model learns steps that unseen problems are made of; a "
        "wrong answer is a slip inside a step and follows from it.",
    )


class TaskConfig(Section):
    """The generated task of a run, set once for every mix it draws (the tokenizer's, SFT's, the RL prompts', the
    monitor's and the evaluation's), so that no stage trains or is measured on another range or format."""

    # each default is the mix's own (one place): a task that sets nothing changes nothing
    a_min: int = Field(PromptMixConfig.model_fields["a_min"].default, description="Smallest first operand.")
    a_max: int = Field(PromptMixConfig.model_fields["a_max"].default, description="Largest first operand.")
    b_min: int = Field(PromptMixConfig.model_fields["b_min"].default, description="Smallest second operand.")
    b_max: int = Field(PromptMixConfig.model_fields["b_max"].default, description="Largest second operand.")
    option_style: Literal["letter_first", "value_first"] = Field(
        PromptMixConfig.model_fields["option_style"].default,
        description="How multiple-choice options are written (PromptMixConfig.option_style).",
    )
    format: Literal["plain", "scratchpad"] = Field(
        SFTMixConfig.model_fields["format"].default,
        description="How the SFT responses work a problem (SFTMixConfig.format).",
    )

    def apply(self, section: Section) -> list[str]:
        """Write the task into every prompt mix and SFT response mix inside `section`; returns the dotted keys
        among them that the config had set itself to another value (a conflict for the caller to refuse)."""
        ranges = ("a_min", "a_max", "b_min", "b_max", "option_style")
        clashes: list[str] = []

        def walk(node: Section, at: str) -> None:
            keys = (
                ranges if isinstance(node, PromptMixConfig) else ("format",) if isinstance(node, SFTMixConfig) else ()
            )
            clashes.extend(
                f"{at}{k}" for k in keys if k in node.model_fields_set and getattr(node, k) != getattr(self, k)
            )
            for key in keys:
                setattr(node, key, getattr(self, key))
            for name in type(node).model_fields:
                child = getattr(node, name)
                if isinstance(child, Section):
                    walk(child, f"{at}{name}.")

        walk(section, "")
        return clashes
