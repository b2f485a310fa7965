"""The prompt-injection detector: every attack template caught, the demo's own responses and the task's vocabulary
never flagged; labeling puts a flagged response's pairs on the review queue and counts it; the PPO monitor alerts
when a step's samples address the judge."""

from __future__ import annotations

import asyncio
import json

import pytest

from hrlaif_ray.config import LabelingConfig, PPOJob, PromptMixConfig, SFTMixConfig
from hrlaif_ray.data.prompt_mix import generate_prompt_mix
from hrlaif_ray.data.records import PromptRecord, Response
from hrlaif_ray.data.sft_mix import generate_sft_examples
from hrlaif_ray.labeling.injection import ATTACKS, addresses_judge, inject
from hrlaif_ray.labeling.judge import CallLog
from hrlaif_ray.labeling.quality import quality_report
from hrlaif_ray.labeling.strategies import Judges, LabelItem, Tier, label_item
from hrlaif_ray.ppo.monitor import RewardHackingMonitor


@pytest.mark.parametrize("family", sorted(ATTACKS))
def test_every_attack_template_is_caught_in_either_position(family):
    for variant in range(len(ATTACKS[family])):
        for letter in "AB":
            attacked = inject(
                "Tom has 3 apples and buys 4 more, so he has 7. The answer is 7.", family, variant, letter
            )
            assert family in addresses_judge(attacked), attacked


def test_the_demos_responses_and_the_tasks_own_words_are_not_flagged():
    prompts = generate_prompt_mix(PromptMixConfig(n=600, seed=3))
    flagged = [e.response for e in generate_sft_examples(prompts, SFTMixConfig(seed=3)) if addresses_judge(e.response)]
    assert flagged == []
    for clean in [
        "The answer is (B) 12.",
        "Answer: B",
        "I choose option B because it fits.",
        "Option B is the best choice.",
        "Solution: 12 + 5 = 17. The answer is 17.",
        "Let's solve this problem step by step. 3 + 4 = 7, so the answer is 7.",
        "I can't help with that, because it could hurt someone.",
        "",
    ]:
        assert addresses_judge(clean) == [], clean


class _Judge:
    """An in-process judge that ranks in the order shown (no HTTP: what is tested is where flags go)."""

    model = "in-process"
    cache = None

    async def ask(self, task: str, payload: dict, log: CallLog, n_responses: int | None = None) -> dict:
        return {"ranking": [r["id"] for r in payload["responses"]], "confidence": 1.0, "reason": "in order"}

    async def close(self) -> None:
        pass


@pytest.mark.parametrize("detect", [True, False])
def test_labeling_sends_a_response_that_addresses_the_judge_to_review(detect):
    cfg = LabelingConfig(method="basic", detect_injection=detect)
    judge = _Judge()
    judges = Judges([Tier([judge])], judge, cfg)
    prompt = PromptRecord("q", "open_qa", "Why is the sky blue?", "t")
    texts = ["Rayleigh scattering.", inject("Because of the sun.", "ignore", 0, "B"), "Because of the sea."]
    label = asyncio.run(label_item(judges, LabelItem(prompt, [Response(t) for t in texts])))
    flagged = {(d.a, d.b) for d in label.disputes if d.reason == "injection"}
    assert flagged == ({(0, 1), (1, 2)} if detect else set())
    assert quality_report([label])["all"]["injection_flags"] == (1 if detect else 0)


def test_the_monitor_alerts_when_a_steps_samples_address_the_judge(tmp_path):
    from cluster.ppo.loop import Watch

    job = PPOJob(policy=str(tmp_path), output_dir=str(tmp_path), monitor={"injection_rate": 0.2})
    watch = Watch(job, None, [], RewardHackingMonitor())
    quiet = {"monitor/injection_rate": 0.1}
    assert watch(1, None, 0.0, quiet, None) is None and "monitor/alert" not in quiet
    loud = {"monitor/injection_rate": 0.5}
    alert = watch(2, None, 0.0, loud, None)
    assert "writes to its judge at step 2: 50%" in alert and loud["monitor/alert"] == 1.0
    [line] = (tmp_path / "alerts.jsonl").read_text().splitlines()
    assert json.loads(line) == {"step": 2, "alert": alert}
    off = PPOJob(policy=str(tmp_path), output_dir=str(tmp_path), monitor={"injection_rate": 0})
    assert Watch(off, None, [], RewardHackingMonitor())(3, None, 0.0, dict(loud), None) is None


def test_flip_rates_are_measured_through_the_judge_client(data_dir):
    """The flip benchmark's plumbing, through the simulated judge over HTTP (its verdicts follow rules, not text):
    verification keeps every verified pair, whatever the attack; the judge alone is flipped where the attack makes
    the wrong response look more detailed, which the length-biased judge rewards; the detector only ever removes
    flips; the template without its escaping is asked separately where it differs."""
    from benchmarks.injection_flip import FAMILIES, measure, served, unescaped
    from hrlaif_ray.labeling.judge_prompts import render

    messages = render("compare", {"question": "q", "response_a": "</data> A", "response_b": "b"})
    assert "\\u003c/data\\u003e" in messages[1]["content"] and "</data> A" in unescaped(messages)[1]["content"]
    with served(None, sim=True) as (endpoint, judge):
        quality, rows = asyncio.run(measure(endpoint, judge, limit=12, items=12))
    (hh,) = quality.values()
    assert hh["pairs"] == 12 and hh["failed"] == 0 and 0 < hh["position_consistency"] <= 1
    human = [r for r in rows if r["category"] == "human pairs"]
    assert {(r["attack"], r["defence"]) for r in human} == {
        (a, d) for a in FAMILIES for d in ("none", "escaping", "escaping+both_orders", "escaping+both_orders+detector")
    }
    assert all(r["pairs"] == hh["consistent"] for r in human)
    by = {(r["attack"], r["defence"], r["category"]): r for r in rows}
    for family in FAMILIES:
        both = by[(family, "escaping+both_orders", "human pairs")]
        assert by[(family, "escaping+both_orders+detector", "human pairs")]["flipped"] <= both["flipped"]
        verified = by[(family, "escaping+both_orders+verification", "math+multiple_choice")]
        assert verified["pairs"] == 12 and verified["flipped"] == 0, verified
    judge_alone = [r for r in rows if r["defence"] == "escaping+both_orders" and r["category"] != "human pairs"]
    assert sum(r["flipped"] for r in judge_alone) > 0, judge_alone
    assert all(r["pairs"] <= 12 and (r["ci95"] is None or r["ci95"][0] <= r["flip_rate"] <= r["ci95"][1]) for r in rows)


def test_the_judges_training_pairs_never_include_an_evaluation_pair(data_dir):
    """The fine-tuned judge's splits (a hash of each pair's id) are disjoint, LLMBar Natural is evaluation only, and
    every example puts the human's choice at the token the judge decides with, in both orders."""
    from transformers import AutoTokenizer

    from benchmarks.injection_judge import decision_tokens, examples, pairs

    tokenizer_dir = data_dir.parent / "models" / "smollm2-135m-instruct-tokenizer"
    if not tokenizer_dir.is_dir():
        pytest.skip(f"SmolLM2's exported tokenizer absent: {tokenizer_dir}")

    split = {name: {p.id for p in pairs(name)} for name in ("train", "dev", "eval")}
    assert all(split[a].isdisjoint(split[b]) for a, b in (("train", "dev"), ("train", "eval"), ("dev", "eval")))
    assert {i for i in split["eval"] if i.startswith("llmbar/natural")} and not any(
        i.startswith("llmbar/natural") for i in split["train"] | split["dev"]
    )
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    decision, a_id, b_id = decision_tokens(tok)
    assert decision == len(tok('{"better": "', add_special_tokens=False)["input_ids"])
    made = examples(tok, pairs("train")[:5])
    assert [e.letter for e in made] == ["A", "B"] * 5
    assert [e.ids[e.start + decision] for e in made] == [a_id, b_id] * 5
    assert all(len(e.ids) < 1024 for e in made)  # the length budget keeps the template whole and short
