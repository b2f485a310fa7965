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

`format: scratchpad` replaces the bare "The answer is N." with the sum worked ones digit first, the carry or
borrow written out ("47 + 8: 7 + 8 = 15, 4 + 1 = 5, so the answer is 55."): a 2-layer model given only the
answer memorises the problems it saw (greedy accuracy 0.79 seen, 0.45 unseen: docs/demo-history.md), while steps of
one digit each are few enough to learn, and an unseen problem is made of seen steps (scratchpads and
least-significant-digit-first order are what let small transformers learn addition from few samples: Lee et
al. 2023, Nye et al. 2021). A wrong answer is a slip inside one step with the rest worked from it, so the stated
answer is a near miss that follows from the slip: the carry or borrow forgotten where there is one (the classic
error, and one slip, so that a policy that pads its answers, as the length-loving judge pays it to, makes it
greedily), else a ones result off by one or two. Multiple choice states the value, then the letter that names it
("... so the answer is 55 (C)."), with the options written value first ("55 (C)", `option_style: value_first`), so
the letter is copied from where the value stands in the prompt rather than recalled.
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


def carries(a: int, b: int, op: str) -> bool:
    """Whether a op b (b a single digit) carries into, or borrows from, the tens."""
    return a % 10 + b >= 10 if op == "+" else a % 10 < b


def worked_sum(a: int, b: int, op: str, slip: int = 0, forgot: bool = False) -> tuple[str, int] | None:
    """The scratchpad of a op b (b a single digit) with `slip` added to one step, or the carry or borrow
    forgotten in the tens step (`forgot`: written as 0), and the value it arrives at (the right one plus `slip`,
    or -10 / +10); None when that slip has no step to happen in (a ones result out of its range, a tens result
    below 0, no carry to forget)."""
    ones, tens = a % 10, a // 10
    if op == "+":
        top, r1 = ones, ones + b
    else:
        top = ones + 10 if ones < b else ones  # the borrow
        r1 = top - b
    if abs(slip) < 10:
        r1 += slip
        if r1 < 0 or r1 > (18 if op == "+" else 9):
            return None
    carry = r1 // 10 if op == "+" else int(top > ones)
    if forgot:
        if not carry:
            return None
        carry = 0
    t = tens + carry if op == "+" else tens - carry
    if abs(slip) >= 10:
        t += slip // 10
        if t < 0:
            return None
    value = t * 10 + r1 % 10
    text = f"{a} {op} {b}: {top} {op} {b} = {r1}, {tens} {op} {carry} = {t}, so the answer is {value}"
    return text, value


SMALL_SLIPS = (-2, -1, 1, 2)  # a ones result off by one or two


def _scratchpad(prompt: PromptRecord, category: Category, correct: bool, rng: random.Random) -> tuple[str, bool]:
    """The last sentence of a scratchpad response, and whether it is right. A wrong one is the slip a solver
    makes: on a problem that carries or borrows, the carry or borrow forgotten (one slip, so where the SFT data
    errs often, after much filler, the likeliest next step is that slip); on the others a ones result off by one
    or two (four slips sharing the errors). Multiple choice slips only to a value among the options."""
    m = prompt.metadata
    a, b, op = m["a"], m["b"], m["op"]
    value = a + b if op == "+" else a - b
    options = None if category is Category.MATH else {int(c) for c in prompt.choices} - {value}
    text, stated = worked_sum(a, b, op)
    if not correct:
        forgot = worked_sum(a, b, op, forgot=True)
        small = [s for s in (worked_sum(a, b, op, d) for d in SMALL_SLIPS) if s is not None]
        slips = [forgot] if forgot is not None else small
        slips = [s for s in slips if options is None or s[1] in options] or [
            s for s in small if options is not None and s[1] in options
        ]
        text, stated = rng.choice(slips) if slips else (text, stated)
    if category is Category.MULTIPLE_CHOICE:
        text += f" ({CHOICE_LETTERS[prompt.choices.index(str(stated))]})"
    return text + ".", stated == value


def sft_response(prompt: PromptRecord, rng: random.Random, cfg: SFTMixConfig) -> SFTExample:
    category = Category(prompt.category)
    if category in (Category.MATH, Category.MULTIPLE_CHOICE) and cfg.format == "scratchpad":
        n = rng.randrange(len(cfg.p_correct))
        p = sum(cfg.p_correct) / len(cfg.p_correct) if cfg.control else cfg.p_correct[n]
        final, correct = _scratchpad(prompt, category, rng.random() < p, rng)
        sentences = _reasoning(prompt.metadata)[:n]
        return SFTExample(prompt.id, prompt.category, prompt.text, " ".join([*sentences, final]), correct)
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
