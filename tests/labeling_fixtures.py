"""Labeling test helpers: the synthetic items of `hrlaif_ray.labeling.synthetic` under the tests' names, labels
made through the real HTTP path, and hand-made label sets."""

from __future__ import annotations

import random

from hrlaif_ray.config import PromptMixConfig
from hrlaif_ray.data.prompt_mix import generate_prompt_mix
from hrlaif_ray.data.records import LabelRecord, PreferencePair, Response
from hrlaif_ray.data.schemas import write_records
from hrlaif_ray.labeling.ledger import LabelLedger
from hrlaif_ray.labeling.strategies import LabelItem
from hrlaif_ray.labeling.synthetic import (  # noqa: F401  (the tests' names for them)
    HARMFUL_RESPONSES,
    math_item,
    mc_item,
    perturbed_items,
    write_label_inputs,
)


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
