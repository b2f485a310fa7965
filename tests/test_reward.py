"""The reward model: clipped in forward for any input, the partial-order loss equals a brute-force reference,
and scoring K responses with the shared prompt's cache equals scoring each full sequence."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hrlaif_ray.config import ModelConfig
from hrlaif_ray.models import build_tiny_causal_lm
from hrlaif_ray.reward import RewardModel, partial_order_loss


@pytest.fixture(scope="module")
def tiny_rm(tiny_tokenizer):
    lm = build_tiny_causal_lm(
        ModelConfig(hidden_size=64, num_heads=4, num_kv_heads=2, intermediate_size=128, seed=3), tiny_tokenizer
    )
    return RewardModel(lm.model, clip=10.0).eval()


@settings(max_examples=60, deadline=None)
@given(
    scale=st.one_of(st.floats(-1e38, 1e38, allow_nan=False), st.sampled_from([math.inf, -math.inf, 1e-30])),
    bias=st.floats(-1e38, 1e38, allow_nan=False),
    seed=st.integers(0, 10_000),
    mean=st.floats(-100, 100),
    std=st.floats(1e-3, 100),
)
def test_rewards_never_leave_the_clip_range(tiny_rm, scale, bias, seed, mean, std):
    rm = RewardModel(tiny_rm.backbone, torch.nn.Linear(64, 1), clip=10.0, mean=mean, std=std).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        rm.head.weight.copy_(torch.randn(1, 64, generator=gen) * scale)
        rm.head.bias.fill_(bias)
        ids = torch.randint(0, 384, (3, 7), generator=gen)
        mask = torch.ones_like(ids)
        mask[0, :2] = 0
        rewards = rm(ids, mask)
    assert rewards.shape == (3,) and torch.isfinite(rewards).all()
    assert (rewards.abs() <= 10.0).all()


def _brute_force(rewards, labels):
    """Per prompt: weighted mean over its pairs of -log sigmoid(r_b - r_w - m); then mean over prompts."""
    per_prompt = []
    for pairs in labels:
        num = sum(w * -math.log(1 / (1 + math.exp(-(rewards[b] - rewards[w_] - m)))) for b, w_, w, m in pairs)
        den = sum(w for _, _, w, _ in pairs)
        if den > 0:
            per_prompt.append(num / den)
    return sum(per_prompt) / len(per_prompt)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.integers(2, 5), st.randoms(use_true_random=False)), min_size=1, max_size=4),
    st.floats(-3, 3),
    st.booleans(),
)
def test_loss_equals_brute_force_on_random_partial_orders(prompts, spread, with_margin):
    rewards, labels, offset = [], [], 0
    for k, rnd in prompts:
        rewards += [rnd.uniform(-3, 3) * spread for _ in range(k)]
        tiers = [rnd.randint(0, 2) for _ in range(k)]  # a random weak order; equal tiers are ties (no pair)
        pairs = [
            (offset + i, offset + j, rnd.choice([0.5, 1.0, 2.0]), (tiers[j] - tiers[i]) * 0.3 if with_margin else 0.0)
            for i in range(k)
            for j in range(k)
            if tiers[i] < tiers[j]
        ]
        labels.append(pairs)
        offset += k
    if not any(labels):
        return
    flat = [(g, *p) for g, pairs in enumerate(labels) for p in pairs]

    def t(i, dtype=torch.long):
        return torch.tensor([f[i] for f in flat], dtype=dtype)

    r = torch.tensor(rewards, dtype=torch.float64, requires_grad=True)
    loss = partial_order_loss(r, t(1), t(2), t(3, torch.float64), t(0), t(4, torch.float64))
    assert loss.item() == pytest.approx(_brute_force(rewards, labels), rel=1e-9, abs=1e-12)
    loss.backward()
    assert torch.isfinite(r.grad).all()


def test_no_pairs_is_a_zero_with_a_graph():
    r = torch.zeros(3, requires_grad=True)
    empty = torch.zeros(0, dtype=torch.long)
    loss = partial_order_loss(r, empty, empty, torch.zeros(0), empty)
    loss.backward()
    assert loss.item() == 0.0


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_shared_prefix_scores_equal_full_sequence_scores(tiny_tokenizer, arch):
    cfg = ModelConfig(arch=arch, hidden_size=64, num_heads=4, num_kv_heads=2, intermediate_size=128, seed=1)
    rm = RewardModel(build_tiny_causal_lm(cfg, tiny_tokenizer).model, clip=10.0).eval()
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(5, 384, (n,), generator=gen) for n in (9, 4)]
    k, lengths = 3, [[5, 2, 7], [1, 6, 3]]
    responses = [torch.randint(5, 384, (n,), generator=gen) for row in lengths for n in row]
    P, R = max(len(p) for p in prompts), max(len(x) for x in responses)
    prompt_ids = torch.zeros(2, P, dtype=torch.long)
    prompt_mask = torch.zeros(2, P, dtype=torch.long)
    for i, p in enumerate(prompts):  # left-padded
        prompt_ids[i, P - len(p) :], prompt_mask[i, P - len(p) :] = p, 1
    response_ids = torch.zeros(len(responses), R, dtype=torch.long)
    response_mask = torch.zeros(len(responses), R, dtype=torch.long)
    for i, x in enumerate(responses):  # right-padded
        response_ids[i, : len(x)], response_mask[i, : len(x)] = x, 1
    with torch.no_grad():
        shared = rm.score_shared_prefix(prompt_ids, prompt_mask, response_ids, response_mask, raw=True)
        full = torch.stack(
            [
                rm(
                    torch.cat([prompts[i // k], x]).unsqueeze(0),
                    torch.ones(1, len(prompts[i // k]) + len(x), dtype=torch.long),
                    raw=True,
                )[0]
                for i, x in enumerate(responses)
            ]
        )
        batched = rm(
            torch.cat([prompt_ids.repeat_interleave(k, 0), response_ids], 1),
            torch.cat([prompt_mask.repeat_interleave(k, 0), response_mask], 1),
            raw=True,
        )
    assert torch.allclose(shared, full, atol=1e-5), (shared - full).abs().max()
    # A different number of responses per prompt (red-team labels add rewrites): 2 for the first, 4 for the second.
    owner = torch.tensor([0, 0, 1, 1, 1, 1])
    with torch.no_grad():
        uneven = rm.score_shared_prefix(prompt_ids, prompt_mask, response_ids, response_mask, owner=owner, raw=True)
        full_uneven = torch.stack(
            [
                rm(
                    torch.cat([prompts[int(o)], x]).unsqueeze(0),
                    torch.ones(1, len(prompts[int(o)]) + len(x), dtype=torch.long),
                    raw=True,
                )[0]
                for o, x in zip(owner, responses)
            ]
        )
    assert torch.allclose(uneven, full_uneven, atol=1e-5)
    assert torch.allclose(batched, full, atol=1e-5)


def test_saved_rm_keeps_head_clip_and_normalisation(tmp_path, tiny_rm, tiny_tokenizer):
    rm = RewardModel(tiny_rm.backbone, tiny_rm.head, clip=3.0, mean=0.5, std=2.0).eval()
    folder = rm.save_pretrained(tmp_path / "rm", tokenizer=tiny_tokenizer)
    again = RewardModel.from_pretrained(folder).eval()
    assert (again.clip, again.mean, again.std) == (3.0, 0.5, 2.0)
    ids = torch.randint(0, 384, (2, 6))
    with torch.no_grad():
        assert torch.allclose(again(ids, torch.ones_like(ids)), rm(ids, torch.ones_like(ids)), atol=1e-6)


def test_examples_carry_tier_gaps_for_the_margin(tiny_tokenizer):
    """Hybrid labels form tiers (correct set ranked, then the wrong set): the margin option reads each pair's gap;
    labels whose pairs form no tiers (a cycle) get none."""
    from hrlaif_ray.data.records import LabelRecord, PreferencePair, PromptRecord, Response
    from hrlaif_ray.reward.data import collate, examples_from_labels

    prompts = {"a": PromptRecord("a", "math", "1+1?", "t", answer="2"), "b": PromptRecord("b", "open_qa", "Hi?", "t")}
    tiered = LabelRecord(
        "a",
        "math",
        "hybrid",
        [Response(t) for t in ["2", "2 because", "3", "4"]],
        [PreferencePair(0, 1), PreferencePair(0, 2), PreferencePair(0, 3), PreferencePair(1, 2), PreferencePair(1, 3)],
    )
    cycle = LabelRecord(
        "b",
        "open_qa",
        "basic",
        [Response(t) for t in ["x", "y", "z"]],
        [PreferencePair(0, 1), PreferencePair(1, 2), PreferencePair(2, 0)],
    )
    examples = examples_from_labels([tiered, cycle], prompts, tiny_tokenizer)
    assert examples[0].tier_gaps == [1, 2, 2, 1, 1] and examples[1].tier_gaps is None
    b = collate(examples, tiny_tokenizer.pad_token_id)
    assert b["tier_gap"].tolist() == [1, 2, 2, 1, 1, 0, 0, 0]
