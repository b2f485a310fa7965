"""The online hybrid reward: a group's label becomes rewards by the documented rule (hand-made labels), and
`OnlineReward` labels groups through the real labeler pool and loopback HTTP (simulated judge)."""

from __future__ import annotations

import httpx
import pytest
from labeling_fixtures import perturbed_items

from actors.online_reward import OnlineReward
from hrlaif_ray.config import LabelingConfig, PoolConfig, PromptMixConfig
from hrlaif_ray.data.prompt_mix import generate_prompt_mix
from hrlaif_ray.data.records import LabelRecord, PreferencePair, Response
from hrlaif_ray.judges.launch import sim_judge_server
from hrlaif_ray.reward.group import group_rewards, has_signal


def _label(n, pairs, status="ok") -> LabelRecord:
    return LabelRecord("p", "math", "hybrid", [Response(str(i)) for i in range(n)], pairs, status=status)


def test_a_hybrid_group_puts_every_correct_sample_above_every_wrong_one():
    verifier = [PreferencePair(c, w, 1.0, "verifier") for c in (0, 2) for w in (1, 3)]
    within = [PreferencePair(2, 0, 0.5, "judge"), PreferencePair(1, 3, 0.5, "judge")]
    rewards = group_rewards(_label(4, verifier + within), 4)
    assert rewards == pytest.approx([1.5 / 3, -1.5 / 3, 2.5 / 3, -2.5 / 3])
    assert min(rewards[0], rewards[2]) > max(rewards[1], rewards[3])


def test_rewrites_take_part_in_the_order_but_earn_nothing_and_a_failed_label_gives_no_signal():
    redteam = _label(3, [PreferencePair(1, 0, 1.0, "redteam"), PreferencePair(2, 0, 1.0, "redteam")])
    assert group_rewards(redteam, 2) == [-1.0, 0.5]  # sample 0 lost to the safe sample and to the rewrite (2)
    assert group_rewards(_label(2, [], status="failed"), 2) == [0.0, 0.0] == group_rewards(None, 2)
    assert not has_signal([0.0, 0.0]) and has_signal([0.0, 0.5])
    with pytest.raises(ValueError, match="prompt p"):
        group_rewards(_label(2, []), 3)


def test_online_reward_labels_groups_through_the_pool_once(tmp_path, local_ray):
    prompts = generate_prompt_mix(
        PromptMixConfig(n=12, seed=5, math=1.0, multiple_choice=0.0, harmful=0.0, open_qa=0.0)
    )
    items = perturbed_items(prompts, seed=5)  # responses 0 and 3 right, 1 and 2 wrong
    with sim_judge_server() as base:
        judge = {"base_url": base, "model": "gpt-3.5-turbo", "timeout_s": 10}
        labeling = LabelingConfig(judges=[judge], rewriter={**judge, "model": "gpt-4"})
        online = OnlineReward(labeling, PoolConfig(labelers=1, concurrency=8), tmp_path / "labels")
        groups = [(item.prompt, [r.text for r in item.responses]) for item, _ in items]
        try:
            rewards, info = online.rewards(groups)
            asked = httpx.get(base.replace("/v1", "/billing")).json()["requests"]
            again, info2 = online.rewards(groups)
            assert httpx.get(base.replace("/v1", "/billing")).json()["requests"] == asked  # the ledger answers
        finally:
            online.shutdown()
    assert again == rewards and info["online/labels"] == 12 and info2["online/labels"] == 0
    assert info["online/judge_cost_usd"] > 0 and info["online/labels_failed"] == 0
    for (item, right), r in zip(items, rewards):
        assert min(r[i] for i in right) > max(r[i] for i in range(4) if i not in right), (item.prompt.id, r)
