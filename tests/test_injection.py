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
