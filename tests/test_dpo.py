"""DPO on partial orders: the loss against values worked by hand (pairs, weights, tier margins, IPO, the SFT
term), and the preference batch's split by prompts."""

import math

import pytest
import torch

from hrlaif_ray.dpo.batch import preference_batch
from hrlaif_ray.dpo.loss import best_responses, dpo_loss, sft_loss
from hrlaif_ray.ppo.experience import sequence_logps
from hrlaif_ray.reward.data import RMExample

# Two prompts: rows 0-2 are prompt 0's responses, rows 3-4 prompt 1's.
LOGPS = torch.tensor([-1.0, -2.0, -3.0, -1.5, -2.5])
REF = torch.tensor([-1.2, -1.8, -3.1, -1.5, -2.0])  # log-ratios: 0.2, -0.2, 0.1, 0.0, -0.5
BETTER = torch.tensor([0, 0, 2, 3])
WORSE = torch.tensor([1, 2, 1, 4])
WEIGHT = torch.tensor([1.0, 1.0, 2.0, 1.0])
GROUP = torch.tensor([0, 0, 0, 1])


def _softplus_neg(x: float) -> float:  # -log sigmoid(x)
    return math.log(1 + math.exp(-x))


def test_sigmoid_loss_by_hand():
    beta = 0.5
    # prompt 0: gaps 0.4, 0.1, 0.3 with weights 1, 1, 2; prompt 1: gap 0.5
    p0 = (_softplus_neg(0.5 * 0.4) + _softplus_neg(0.5 * 0.1) + 2 * _softplus_neg(0.5 * 0.3)) / 4
    p1 = _softplus_neg(0.5 * 0.5)
    loss, stats = dpo_loss(LOGPS, REF, BETTER, WORSE, WEIGHT, GROUP, beta)
    assert loss.item() == pytest.approx((p0 + p1) / 2, abs=1e-6)
    assert stats["accuracy"].item() == pytest.approx(1.0)
    assert stats["margin"].item() == pytest.approx(((0.2 + 0.05 + 2 * 0.15) / 4 + 0.25) / 2, abs=1e-6)
    # chosen rewards: prompt 0 beta x (0.2, 0.2, 0.1) weighted 1, 1, 2; prompt 1 beta x 0.0
    assert stats["chosen_reward"].item() == pytest.approx(((0.1 + 0.1 + 2 * 0.05) / 4 + 0.0) / 2, abs=1e-6)


def test_a_wrong_order_costs_more_and_counts_as_wrong():
    swapped, stats = dpo_loss(LOGPS, REF, WORSE, BETTER, WEIGHT, GROUP, 0.5)
    right, _ = dpo_loss(LOGPS, REF, BETTER, WORSE, WEIGHT, GROUP, 0.5)
    assert swapped > right
    assert stats["accuracy"].item() == pytest.approx(0.0)


def test_tier_margin_by_hand():
    beta, m = 1.0, 0.3
    gaps = torch.tensor([1.0, 2.0, 1.0, 1.0])  # pair 1 (0 over 2) spans two tiers
    loss, _ = dpo_loss(LOGPS, REF, BETTER, WORSE, WEIGHT, GROUP, beta, margin=m * gaps)
    p0 = (_softplus_neg(0.4 - 0.3) + _softplus_neg(0.1 - 0.6) + 2 * _softplus_neg(0.3 - 0.3)) / 4
    p1 = _softplus_neg(0.5 - 0.3)
    assert loss.item() == pytest.approx((p0 + p1) / 2, abs=1e-6)


def test_ipo_by_hand():
    beta = 2.0  # target gap 1 / (2 beta) = 0.25
    loss, _ = dpo_loss(LOGPS, REF, BETTER, WORSE, WEIGHT, GROUP, beta, loss_type="ipo")
    p0 = ((0.4 - 0.25) ** 2 + (0.1 - 0.25) ** 2 + 2 * (0.3 - 0.25) ** 2) / 4
    p1 = (0.5 - 0.25) ** 2
    assert loss.item() == pytest.approx((p0 + p1) / 2, abs=1e-6)
    margin = torch.full((4,), 0.1)
    with_margin, _ = dpo_loss(LOGPS, REF, BETTER, WORSE, WEIGHT, GROUP, beta, loss_type="ipo", margin=margin)
    q0 = ((0.4 - 0.35) ** 2 + (0.1 - 0.35) ** 2 + 2 * (0.3 - 0.35) ** 2) / 4
    assert with_margin.item() == pytest.approx((q0 + (0.5 - 0.35) ** 2) / 2, abs=1e-6)
    with pytest.raises(ValueError, match="loss_type"):
        dpo_loss(LOGPS, REF, BETTER, WORSE, WEIGHT, GROUP, beta, loss_type="hinge")


def test_gradient_pushes_better_up_and_worse_down():
    logps = LOGPS.clone().requires_grad_(True)
    loss, _ = dpo_loss(logps, REF, BETTER, WORSE, WEIGHT, GROUP, 0.5)
    loss.backward()
    assert logps.grad[0] < 0 and logps.grad[1] > 0 and logps.grad[3] < 0 and logps.grad[4] > 0


def test_best_responses_and_sft_term_by_hand():
    best = best_responses(5, BETTER, WORSE)
    assert best.tolist() == [True, False, False, True, False]  # 2 beats 1 but loses to 0
    lengths = torch.tensor([4, 2, 3, 5, 1])
    owner = torch.tensor([0, 0, 0, 1, 1])
    got = sft_loss(LOGPS, lengths, best, owner, LOGPS)
    assert got.item() == pytest.approx((1.0 / 4 + 1.5 / 5) / 2)


def _example(pid, cat, prompt, responses, pairs, gaps=None):
    return RMExample(pid, cat, prompt, responses, pairs, gaps)


def test_batch_rows_pairs_and_select():
    ex = [
        _example("a", "math", [5, 6, 7], [[1, 2], [3], [4, 4, 4]], [(0, 1, 1.0), (0, 2, 1.0), (2, 1, 0.5)], [1, 2, 1]),
        _example("b", "harmful", [8], [[9, 9], [10]], [(1, 0, 1.0)]),
        _example("c", "multiple_choice", [5, 5], [[2], [3], [4]], [(2, 0, 1.0)]),
    ]
    batch = preference_batch(ex, pad_id=0)
    assert len(batch) == 3 and batch.rows == 8
    assert batch.starts.tolist() == [0, 3, 5, 8]
    assert batch.better.tolist() == [0, 0, 2, 4, 7] and batch.worse.tolist() == [1, 2, 1, 3, 5]
    assert batch.group.tolist() == [0, 0, 0, 1, 2] and batch.tier_gap.tolist() == [1, 2, 1, 0, 0]
    assert batch.owner.tolist() == [0, 0, 0, 1, 1, 2, 2, 2]
    assert batch.lengths.tolist() == [2, 1, 3, 2, 1, 1, 1, 1]
    batch = batch.with_reference(torch.arange(8, dtype=torch.float32))
    sub = batch.select([2, 1])
    assert sub.categories == ["multiple_choice", "harmful"] and sub.prompt_ids == ["c", "b"]
    assert sub.starts.tolist() == [0, 3, 5]
    assert sub.better.tolist() == [4, 2] and sub.worse.tolist() == [3, 0]  # pairs keep their order: b's, then c's
    assert sub.group.tolist() == [1, 0]
    assert sub.ref_logps.tolist() == [5, 6, 7, 3, 4]
    # the same responses, trimmed of columns that are padding in all of the sub-batch's rows
    P = sub.sequences.prompt_width
    assert P == 2 and sub.sequences.response_width == 2
    assert sub.sequences.input_ids[3, P:].tolist() == [9, 9]
    assert sub.sequences.input_ids[0, :P].tolist() == [5, 5]
    with pytest.raises(ValueError, match="rows"):
        batch.with_reference(torch.zeros(3))
    with pytest.raises(ValueError, match="no labels"):
        preference_batch([], pad_id=0)


def test_sequence_logps_sum_the_response_only():
    tok = torch.tensor([[-1.0, -2.0, -5.0], [-0.5, -7.0, -7.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert sequence_logps(tok, mask).tolist() == [-3.0, -0.5]
