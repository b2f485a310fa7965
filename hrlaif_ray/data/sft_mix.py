"""Supervised responses for the generated prompt mix: the SFT policy's data.

Where it departs from the paper (which starts from a chat model): the demo's policy is a tiny model trained
here, so its SFT data is generated, and it is built to contain the failure the paper describes. A math or
multiple-choice response is 0-4 reasoning sentences chosen uniformly, then "The answer is N."; the chance that
N is right falls with the number of sentences (`p_correct`, default 0.75, 0.7, 0.55, 0.4, 0.3), so detailed
answers are more often wrong and a judge that rewards detail pulls the policy away from correctness. Wrong
answers are near misses (+-1, +-2, +-10), the slips a small model makes. `control=True` draws correctness
independently of length (the mean of `p_correct`), the control in which a length-loving judge can do no harm.
Harmful requests get a compliance or a refusal (`p_refuse`), each with 0-3 sentences; open questions get a
short answer of 1-4 sentences.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from hrlaif_ray.categories import CHOICE_LETTERS, Category
from hrlaif_ray.config import SFTMixConfig
from hrlaif_ray.data.records import PromptRecord


@dataclass
class SFTExample:
    prompt_id: str
    category: str
    prompt: str
    response: str
    correct: bool | None = None  # verifiable prompts: whether the stated answer is right


def _reasoning(meta: dict) -> list[str]:
    a, b, op = meta["a"], meta["b"], meta["op"]
    return [
        f"We start with {a}.",
        f"Then we {'add' if op == '+' else 'take away'} {b}.",
        "Let me count it carefully.",
        "I will check it once more.",
    ]


COMPLY = [
    "Sure, here is how you can do it.",
    "First, get what you need.",
    "Then do it when nobody is watching.",
    "That is all there is to it.",
]
REFUSE = [
    "I can't help with that, because it could hurt someone.",
    "It could also break the law.",
    "If something is troubling you, I can help you find a safe way to handle it.",
    "Please stay safe.",
]
OPEN = [
    "That is a good question.",
    "Start with something small and simple.",
    "Try it for a few days and see.",
    "Ask a friend for ideas too.",
]


def sft_response(prompt: PromptRecord, rng: random.Random, cfg: SFTMixConfig) -> SFTExample:
    category = Category(prompt.category)
    if category in (Category.MATH, Category.MULTIPLE_CHOICE):
        n = rng.randrange(len(cfg.p_correct))
        p = sum(cfg.p_correct) / len(cfg.p_correct) if cfg.control else cfg.p_correct[n]
        correct = rng.random() < p
        value = int(prompt.metadata["value"] if category is Category.MULTIPLE_CHOICE else prompt.answer)
        sentences = _reasoning(prompt.metadata)[:n]
        if category is Category.MATH:
            stated = value if correct else max(0, value + rng.choice(cfg.wrong_offsets))
            correct = stated == value
            final = f"The answer is {stated}."
        else:
            right = CHOICE_LETTERS.index(prompt.answer)
            pick = right if correct else rng.choice([i for i in range(len(prompt.choices)) if i != right])
            final = f"The answer is ({CHOICE_LETTERS[pick]}) {prompt.choices[pick]}."
            correct = pick == right
        return SFTExample(prompt.id, prompt.category, prompt.text, " ".join([*sentences, final]), correct)
    if category is Category.HARMFUL:
        pool = REFUSE if rng.random() < cfg.p_refuse else COMPLY
        return SFTExample(prompt.id, prompt.category, prompt.text, " ".join(pool[: rng.randint(1, 4)]))
    if category is Category.OPEN_QA:
        return SFTExample(prompt.id, prompt.category, prompt.text, " ".join(OPEN[: rng.randint(1, 4)]))
    raise ValueError(f"prompt {prompt.id}: no generated SFT response for category {prompt.category!r}")


def generate_sft_examples(prompts: list[PromptRecord], cfg: SFTMixConfig) -> list[SFTExample]:
    """One response per prompt; the same prompts and config always give the same examples."""
    rng = random.Random(cfg.seed)
    return [sft_response(p, rng, cfg) for p in prompts]


def tokenizer_corpus(prompts: list[PromptRecord], cfg: SFTMixConfig | None = None) -> list[str]:
    """What the demo's BPE is trained on: the prompts and their SFT responses, so that the words of both are
    whole tokens (a BPE trained on prompts alone splits "answer" into five pieces and doubles response length)."""
    cfg = cfg or SFTMixConfig()
    return [p.text for p in prompts] + [e.response for e in generate_sft_examples(prompts, cfg)]
