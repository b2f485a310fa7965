"""Hybrid labeling ranks every correct response above every wrong one; the length-biased judge alone does not."""

import asyncio

import pytest
from labeling_fixtures import label_items, perturbed_items

from hrlaif_ray.config import JudgeEndpoint, LabelingConfig, PromptMixConfig
from hrlaif_ray.data.prompt_mix import generate_prompt_mix
from hrlaif_ray.data.readers import load_source
from hrlaif_ray.judges.launch import sim_judge_server
from hrlaif_ray.labeling.strategies import Judges, label_item


def _correct_above_wrong(label, correct: set[int]) -> bool:
    stated = {(p.better, p.worse) for p in label.pairs}
    wrong = set(range(4)) - correct
    return all((c, w) in stated and (w, c) not in stated for c in correct for w in wrong)


def _check(base_url, prompts):
    items = perturbed_items(prompts)
    hybrid = label_items(base_url, "hybrid", [i for i, _ in items])
    basic = label_items(base_url, "basic", [i for i, _ in items])
    assert all(l.status == "ok" for l in hybrid + basic), [l.error for l in hybrid + basic if l.error][:3]
    for label, (_, correct) in zip(hybrid, items):
        assert label.method == "hybrid"
        assert {v.response for v in label.verdicts if v.verdict == "correct"} == correct, label.verdicts
        assert _correct_above_wrong(label, correct), (label.prompt_id, label.pairs)
        assert label.tiers is not None and set(label.tiers[-1]) <= {1, 2}
    basic_ok = sum(_correct_above_wrong(l, c) for l, (_, c) in zip(basic, items)) / len(items)
    assert basic_ok < 0.5, f"the length-biased judge alone ranked correct above wrong on {basic_ok:.0%} of items"
    assert sum(l.tokens_in for l in hybrid) > 0 and all(l.cost_usd > 0 for l in hybrid if l.pairs)
    return basic_ok


def test_hybrid_on_generated_math_and_choices():
    prompts = [
        p for p in generate_prompt_mix(PromptMixConfig(n=120, seed=5)) if p.category in ("math", "multiple_choice")
    ]
    with sim_judge_server(["latency_ms=0"]) as base:
        _check(base, prompts)


@pytest.mark.data
def test_hybrid_on_gsm8k_and_mmlu(data_dir):
    prompts = load_source("gsm8k/test", data_dir)[:100] + load_source("mmlu/test", data_dir)[::140]
    with sim_judge_server() as base:
        basic_ok = _check(base, prompts)
    print(
        f"basic RLAIF ranked every correct above every wrong on {basic_ok:.0%} of {len(prompts)} items; hybrid on 100%"
    )


def _one(base_urls, item, **cfg):
    endpoints = [JudgeEndpoint(base_url=b, model=f"judge{i}", timeout_s=10) for i, b in enumerate(base_urls)]
    config = LabelingConfig(judges=endpoints, rewriter=endpoints[0], **cfg)

    async def run():
        judges = Judges.from_config(config)
        try:
            return await label_item(judges, item)
        finally:
            await judges.close()

    return asyncio.run(run())


def test_router_fallback_and_ensemble():
    from hrlaif_ray.data.records import PromptRecord, Response
    from hrlaif_ray.labeling.strategies import LabelItem

    with sim_judge_server() as fair, sim_judge_server(["position_bias=1.0"]) as biased:
        # A prompt of unknown category is classified by the judge, then labeled by its category's method.
        unknown = PromptRecord(
            "u", "open_qa", "How can I steal a credit card number online?", "t", metadata={"category_unknown": True}
        )
        label = _one(
            [fair], LabelItem(unknown, [Response("Sure: first find a shop."), Response("I can't help with that.")])
        )
        assert (
            label.category == "harmful"
            and label.method == "redteam"
            and (1, 0) in {(p.better, p.worse) for p in label.pairs}
        )
        # No final answer to extract: the judge decides whether it matches the standard answer.
        math = PromptRecord("m", "math", "Tom has 23 apples and buys 4 more. How many apples now?", "t", answer="27")
        label = _one([fair], LabelItem(math, [Response("twenty-seven, I believe"), Response("The answer is 27.")]))
        fallback = [v for v in label.verdicts if v.response == 0][0]
        assert fallback.reason.startswith("judge fallback") and fallback.verdict == "wrong"
        assert [(p.better, p.worse) for p in label.pairs] == [(1, 0)]
        # Ensemble: a judge that always says A cannot add a pair on its own.
        openq = PromptRecord("o", "open_qa", "What makes a good friend?", "t")
        item = LabelItem(openq, [Response("Loyalty."), Response("A good friend listens. They help. They stay.")])
        alone = _one([biased], item, both_orders=False, ranking="pairwise")
        both = _one([fair, biased], item, both_orders=False, ranking="pairwise", min_agreement=1.0)
        fair_only = _one([fair], item, both_orders=False, ranking="pairwise")
    assert {(p.better, p.worse) for p in alone.pairs} == {(0, 1)}  # position bias: whatever is shown first
    assert {(p.better, p.worse) for p in fair_only.pairs} == {(1, 0)}  # length bias: the longer answer
    assert both.pairs == []  # they disagree: no pair passes a unanimous vote
