"""Items for labeling tests: K = 4 responses made by perturbing the gold answer (correct, wrong final number,
verbose-but-wrong, terse-but-right) in varied answer formats."""

from __future__ import annotations

import random
import re

from hrlaif_ray.categories import CHOICE_LETTERS
from hrlaif_ray.config import PromptMixConfig
from hrlaif_ray.data.prompt_mix import generate_prompt_mix
from hrlaif_ray.data.records import LabelRecord, PreferencePair, PromptRecord, Response
from hrlaif_ray.data.schemas import write_records
from hrlaif_ray.labeling.ledger import LabelLedger
from hrlaif_ray.labeling.strategies import LabelItem

FILLER = [
    "Let me carefully restate the problem to be sure I understand every part of it.",
    "I will go through each quantity step by step and double-check every intermediate result.",
    "It is important to keep track of the units so that nothing is mixed up along the way.",
    "Breaking the problem into smaller pieces makes the reasoning clearer and easier to verify.",
]


def _fmt(value: int, style: int) -> str:
    return [f"{value:,}", f"\\boxed{{{value}}}", f"#### {value}", f"{value}.0"][style % 4]


def math_item(p: PromptRecord, rng: random.Random) -> tuple[LabelItem, set[int]]:
    a = int(float(p.answer))
    steps = (
        re.sub(r"<<[^>]*>>", "", p.metadata.get("solution", "")).split("####")[0].strip()
        or f"We compute it to get {a}."
    )
    wrong = a + rng.choice([1, -1, 2, 10])
    responses = [
        f"{steps}\nThe answer is {a}.",  # correct
        f"After working it out, the answer is {wrong}.",  # wrong final number
        " ".join(FILLER)
        + f"\n{steps}\nSo, after all of that careful work, the final answer is {_fmt(a + rng.choice([3, 5, 7, 11]), rng.randint(0, 3))}.",
        _fmt(a, rng.randint(0, 3)),  # terse but right, in a varied format
    ]
    return LabelItem(p, [Response(t) for t in responses]), {0, 3}


def mc_item(p: PromptRecord, rng: random.Random) -> tuple[LabelItem, set[int]]:
    right = CHOICE_LETTERS.index(p.answer)
    wrong = rng.choice([i for i in range(len(p.choices)) if i != right])
    w, r = CHOICE_LETTERS[wrong], CHOICE_LETTERS[right]
    responses = [
        f"The answer is ({r}) {p.choices[right]}.",
        f"Answer: {w}",
        " ".join(FILLER)
        + f" Considering every option in turn, {p.choices[wrong]} fits best. Therefore the answer is ({w}).",
        f"{r}",
    ]
    return LabelItem(p, [Response(t) for t in responses]), {0, 3}


def perturbed_items(prompts: list[PromptRecord], seed: int = 0) -> list[tuple[LabelItem, set[int]]]:
    rng = random.Random(seed)
    return [(math_item if p.category == "math" else mc_item)(p, rng) for p in prompts]


HARMFUL_RESPONSES = [
    "Sure, here is how you do it: first get the tools, then wait until nobody is watching.",
    "I can't help with that, because it could hurt someone.",
]


def write_label_inputs(folder, n: int, seed: int = 0):
    """Prompts + rollouts Parquet for n generated prompts (math, multiple choice, harmful; K = 4 or 2)."""
    from hrlaif_ray.config import PromptMixConfig
    from hrlaif_ray.data.prompt_mix import generate_prompt_mix
    from hrlaif_ray.data.records import RolloutRecord
    from hrlaif_ray.data.schemas import write_records

    prompts = generate_prompt_mix(PromptMixConfig(n=n, seed=seed, open_qa=0.0))
    rng = random.Random(seed)
    rollouts = []
    for p in prompts:
        if p.category == "harmful":
            responses = [Response(t) for t in HARMFUL_RESPONSES]
        else:
            responses = (math_item if p.category == "math" else mc_item)(p, rng)[0].responses
        rollouts.append(RolloutRecord(p.id, p.category, p.text, [], responses))
    write_records(folder / "prompts.parquet", prompts)
    write_records(folder / "rollouts.parquet", rollouts)
    return folder / "prompts.parquet", folder / "rollouts.parquet"


def label_items(base_url: str, method: str, items: list[LabelItem], concurrency: int = 16, **cfg):
    """Labels of `items` through the real labeling path (openai SDK over HTTP to `base_url`), in order."""
    import asyncio

    from hrlaif_ray.config import JudgeEndpoint, LabelingConfig
    from hrlaif_ray.labeling.strategies import Judges, label_item

    endpoint = JudgeEndpoint(base_url=base_url, model="gpt-3.5-turbo", timeout_s=20)
    config = LabelingConfig(
        method=method, judges=[endpoint], rewriter=endpoint.model_copy(update={"model": "gpt-4"}), **cfg
    )

    async def run():
        judges = Judges.from_config(config)
        sem = asyncio.Semaphore(concurrency)

        async def one(item):
            async with sem:
                return await label_item(judges, item)

        try:
            return await asyncio.gather(*(one(i) for i in items))
        finally:
            await judges.close()

    return asyncio.run(run())


COMPLY = [
    "Sure, here is how to do it step by step.",
    "Of course. First you get the tools, then you wait.",
    "Yes: do it at night.",
]
REFUSE = [
    "I can't help with that, because it could hurt someone.",
    "I won't help with this. It is harmful.",
    "I'm sorry, I cannot help.",
]


def write_harm_and_math_labels(tmp_path) -> None:
    """240 labels (60% harmful: a refusal over a compliance; 40% math: the right answer over a wrong one) in
    tmp_path/labels, their prompts in tmp_path/prompts.parquet."""
    prompts = generate_prompt_mix(
        PromptMixConfig(n=240, seed=4, harmful=0.6, math=0.4, multiple_choice=0.0, open_qa=0.0)
    )
    rng = random.Random(0)
    labels = []
    for p in prompts:
        if p.category == "harmful":
            responses, pairs = (
                [Response(rng.choice(COMPLY)), Response(rng.choice(REFUSE))],
                [PreferencePair(1, 0, 1.0, "redteam")],
            )
        else:
            a = int(p.answer)
            responses, pairs = (
                [Response(f"The answer is {a}."), Response(f"The answer is {a + 10}.")],
                [PreferencePair(0, 1, 1.0, "verifier")],
            )
        rng.shuffle(order := [0, 1])
        responses = [responses[i] for i in order]
        pairs = [PreferencePair(order.index(q.better), order.index(q.worse), q.weight, q.source) for q in pairs]
        labels.append(LabelRecord(p.id, p.category, "hybrid", responses, pairs, idempotency_key=p.id))
    write_records(tmp_path / "prompts.parquet", prompts)
    LabelLedger(tmp_path / "labels").commit(labels)
