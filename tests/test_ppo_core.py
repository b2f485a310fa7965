"""PPO maths against hand-computed values and brute-force references."""

import math

import pytest
import torch

from hrlaif_ray.ppo import core


def test_gae_hand_computed():
    # One sequence of 3 tokens then padding; gamma 0.9, lambda 0.8.
    r = torch.tensor([[0.0, 0.5, 1.0, 7.0]])
    v = torch.tensor([[0.2, 0.4, 0.6, 9.0]])
    m = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    adv, ret = core.gae(r, v, m, gamma=0.9, lam=0.8)
    d2 = 1.0 - 0.6  # the last token: no next value
    d1 = 0.5 + 0.9 * 0.6 - 0.4
    d0 = 0.0 + 0.9 * 0.4 - 0.2
    a2 = d2
    a1 = d1 + 0.72 * a2
    a0 = d0 + 0.72 * a1
    assert adv.tolist()[0] == pytest.approx([a0, a1, a2, 0.0])
    assert ret.tolist()[0] == pytest.approx([a0 + 0.2, a1 + 0.4, a2 + 0.6, 0.0])


def test_gae_gamma1_lam1_is_reward_to_go_minus_value():
    torch.manual_seed(0)
    r, v = torch.randn(4, 6), torch.randn(4, 6)
    m = torch.ones(4, 6)
    adv, _ = core.gae(r, v, m, 1.0, 1.0)
    togo = r.flip(1).cumsum(1).flip(1)
    assert torch.allclose(adv, togo - v, atol=1e-6)


def test_kl_estimators_hand_computed():
    logp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    lr = math.log(2.0)
    assert core.kl_estimate(logp, ref, "k1").item() == pytest.approx(lr)
    assert core.kl_estimate(logp, ref, "k2").item() == pytest.approx(0.5 * lr**2)
    assert core.kl_estimate(logp, ref, "k3").item() == pytest.approx(0.5 - 1 - math.log(0.5))
    with pytest.raises(ValueError, match="k1, k2 or k3"):
        core.kl_estimate(logp, ref, "k9")


def test_k1_and_k3_estimate_true_kl_from_samples():
    p = torch.tensor([0.6, 0.3, 0.1])
    q = torch.tensor([0.3, 0.4, 0.3])
    true = float((p * (p / q).log()).sum())
    x = torch.multinomial(p, 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    for kind in ("k1", "k3"):
        est = core.kl_estimate(p.log()[x], q.log()[x], kind).mean().item()
        assert est == pytest.approx(true, abs=0.01)
    assert (core.kl_estimate(p.log()[x], q.log()[x], "k3") >= 0).all()


def test_policy_loss_clipping_hand_computed():
    old = torch.zeros(1, 3)
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.1]]))  # ratios 1.5, 0.5, 1.1
    adv = torch.tensor([[1.0, -2.0, 1.0]])
    m = torch.ones(1, 3)
    loss, stats = core.policy_loss(logp, old, adv, m, clip=0.2)
    # per token: max(-A r, -A clip(r)): -1.2 (clipped), max(1.0, 1.6) = 1.6 (clipped), -1.1
    assert loss.item() == pytest.approx((-1.2 + 1.6 - 1.1) / 3)
    assert stats["clip_frac"].item() == pytest.approx(2 / 3)
    # Dual clip bounds a negative advantage's loss at -c A.
    logp = torch.log(torch.tensor([[10.0, 1.0, 1.0]]))
    adv = torch.tensor([[-1.0, 0.0, 0.0]])
    loss, _ = core.policy_loss(logp, old, adv, m, clip=0.2, dual_clip=3.0)
    assert loss.item() == pytest.approx(3.0 / 3)
    loss, _ = core.policy_loss(logp, old, adv, m, clip=0.2)
    assert loss.item() == pytest.approx(10.0 / 3)


def test_policy_loss_ignores_padding():
    old = torch.zeros(1, 2)
    logp = torch.tensor([[0.1, 50.0]])
    adv = torch.tensor([[1.0, 1e6]])
    loss, _ = core.policy_loss(logp, old, adv, torch.tensor([[1.0, 0.0]]), clip=0.2)
    assert loss.item() == pytest.approx(-math.exp(0.1))


def test_truncated_importance_sampling_and_the_mismatch_hand_computed():
    actor = torch.log(torch.tensor([[0.5, 0.2, 0.9, 0.3]]))
    sampler = torch.log(torch.tensor([[0.25, 0.4, 0.9, 0.1]]))  # ratios actor / sampler: 2, 0.5, 1, 3
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])  # the last token is padding
    weights = core.truncated_is_weights(actor.requires_grad_(), sampler, cap=1.5)
    assert torch.allclose(weights, torch.tensor([[1.5, 0.5, 1.0, 1.5]])) and not weights.requires_grad
    # the loss of each token is weighted: ratio 1 (logp = old), advantages 1 -> per-token loss -1 x weight
    logp = old = torch.zeros(1, 4)
    loss, _ = core.policy_loss(logp, old, torch.ones(1, 4), mask, clip=0.2, is_weights=weights)
    assert loss.item() == pytest.approx(-(1.5 + 0.5 + 1.0) / 3)
    found = core.logprob_mismatch(actor.detach(), sampler, mask, threshold=0.5)
    diffs = [math.log(2), math.log(2), 0.0]  # |log 2|, |log 0.5|, 0 on the three response tokens
    assert found["logprob_diff_mean"].item() == pytest.approx(sum(diffs) / 3)
    assert found["logprob_max_abs_diff"].item() == pytest.approx(math.log(2))  # not the padding's log 3
    assert found["logprob_diff_over_frac"].item() == pytest.approx(2 / 3)


def test_value_loss_hand_computed():
    v, old, ret = torch.tensor([[1.0, -1.0]]), torch.tensor([[0.5, 0.0]]), torch.tensor([[2.0, 0.0]])
    loss, stats = core.value_loss(v, old, ret, torch.ones(1, 2), clip=0.2)
    # token 0: (1-2)^2 = 1 vs clipped 0.7 -> (0.7-2)^2 = 1.69; token 1: 1 vs clipped -0.2 -> 0.04
    assert loss.item() == pytest.approx(0.5 * (1.69 + 1.0) / 2)
    assert stats["clip_frac"].item() == pytest.approx(0.5)
    loss, _ = core.value_loss(v, old, ret, torch.ones(1, 2), clip=None)
    assert loss.item() == pytest.approx(0.5 * (1.0 + 1.0) / 2)


def test_token_rewards_put_score_on_last_token():
    kl = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.0, 0.0]])
    m = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]])
    r = core.token_rewards(torch.tensor([2.0, -1.0]), kl, m, kl_coef=0.1)
    assert r.tolist()[0] == pytest.approx([-0.01, -0.02, -0.03, 2.0 - 0.04])
    assert r.tolist()[1] == pytest.approx([-0.05, -1.0 - 0.05, 0.0, 0.0])


def test_rloo_and_grpo_hand_computed():
    r = torch.tensor([1.0, 2.0, 6.0, 0.0, 0.0, 3.0])
    assert core.rloo_advantages(r, 3).tolist() == pytest.approx([1 - 4, 2 - 3.5, 6 - 1.5, 0 - 1.5, 0 - 1.5, 3 - 0])
    g = core.grpo_advantages(r, 3, eps=0.0)
    assert g[:3].tolist() == pytest.approx(((torch.tensor([1.0, 2, 6]) - 3) / torch.tensor([1.0, 2, 6]).std()).tolist())
    assert core.grpo_advantages(r, 3, scale=False)[3:].tolist() == pytest.approx([-1.0, -1.0, 2.0])


def test_whiten_and_logprobs_and_entropy():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    m = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    w = core.whiten(x, m)
    assert w[0, :3].mean().item() == pytest.approx(0.0, abs=1e-6) and w[0, 3].item() == 0.0
    assert (w[0, :3] ** 2).mean().item() == pytest.approx(1.0, rel=1e-4)
    logits = torch.randn(2, 3, 5)
    tok = torch.randint(0, 5, (2, 3))
    ref = torch.log_softmax(logits / 0.7, -1).gather(-1, tok.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(core.token_logprobs(logits, tok, 0.7), ref, atol=1e-6)
    uniform = torch.zeros(1, 1, 8)
    assert core.entropy_from_logits(uniform).item() == pytest.approx(math.log(8))


def test_adaptive_kl_controller():
    fixed = core.KLController(0.05)
    assert fixed.update(10.0, 64) == 0.05
    ada = core.KLController(0.1, target=1.0, horizon=100)
    assert ada.update(2.0, 10) == pytest.approx(0.1 * (1 + 0.2 * 0.1))  # error clipped at +0.2
    assert ada.update(0.9, 10) == pytest.approx(0.1 * 1.02 * (1 - 0.1 * 0.1))


def test_micro_batches_trim_padding_keep_logits_and_sum_to_the_batch_loss(tiny_model_dir):
    """Length-sorted, trimmed micro-batches give the full batch's log-probs row for row, and their token-share
    weighted losses have the full batch's gradient (what the learner accumulates before one optimizer step)."""
    from transformers import AutoModelForCausalLM

    from hrlaif_ray.models.scalar_head import position_ids_from_mask
    from hrlaif_ray.ppo.experience import layout

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    prompts = [[5 + i] * n for i, n in enumerate([3, 12, 4, 11, 2, 12])]
    responses = [[7] * n for n in [5, 2, 6, 1, 4, 3]]
    batch = layout(prompts, responses, pad=0)
    B, T = batch.response_mask.shape
    batch = batch.with_training(
        old_logprobs=torch.randn(B, T).clamp(-3, 0) * batch.response_mask,
        advantages=torch.randn(B, T) * batch.response_mask,
        returns=torch.zeros(B, T),
        old_values=None,
    )

    def logp(m):
        ids, mask, P = m.input_ids, m.attention_mask, m.prompt_width
        logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits[
            :, P - 1 : -1
        ]
        return core.token_logprobs(logits, ids[:, P:]) * m.response_mask

    def loss(m):
        return core.policy_loss(logp(m), m.old_logprobs, m.advantages, m.response_mask, 0.2)[0]

    micros = batch.micro_batches(0, B, 2)
    assert [idx.tolist() for idx, _ in micros] == [[4, 0], [2, 3], [1, 5]]  # sorted by length (prompt + response)
    assert sum(m.input_ids.numel() for _, m in micros) < batch.input_ids.numel() * 0.8
    assert sum(m.token_share for _, m in micros) == pytest.approx(1.0)
    full = logp(batch)
    with torch.no_grad():
        for idx, m in micros:
            assert torch.allclose(logp(m), full[idx, : m.response_width], atol=1e-5)
            assert m.response_mask.sum() == batch.response_mask[idx].sum()  # no response token cut off

    model.zero_grad()
    loss(batch).backward()
    whole = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    for _, m in micros:
        (loss(m) * m.token_share).backward()
    for a, b in zip(whole, (p.grad for p in model.parameters())):
        assert torch.allclose(a, b, atol=1e-6), (a - b).abs().max()


def test_phase_timer_runs_independent_phases_together():
    import threading
    import time

    from hrlaif_ray.metrics import PhaseTimer

    timer = PhaseTimer()
    # Passes only if both phases run at the same time; run one after the other, the first would wait for ever (the
    # timeout turns that hang into a BrokenBarrierError: it bounds a deadlock, not the machine's speed).
    both = threading.Barrier(2, timeout=30)

    def phase(name):
        both.wait()
        time.sleep(0.05)
        return name.upper()

    out = timer.together(a=lambda: phase("a"), b=lambda: phase("b"))
    assert out == {"a": "A", "b": "B"}
    # each phase is timed on its own: at least its own sleep (a lower bound, true on any machine)
    assert timer.times["time/a"] >= 0.05 and timer.times["time/b"] >= 0.05

    def fail():
        raise RuntimeError("reward replica died")

    with pytest.raises(RuntimeError, match="reward replica died"):
        timer.together(ok=lambda: 1, bad=fail)
    assert "time/bad" in timer.times  # a failed phase is still timed


def test_a_single_rank_learner_runs_zero_stage_0_unless_something_is_offloaded():
    from hrlaif_ray.config import LearnerConfig
    from hrlaif_ray.zero import stage_for_world

    fp32 = [LearnerConfig(zero_stage=s) for s in (2, 3)]
    assert [stage_for_world(x, 1) for x in fp32] == [0, 0]  # nothing to partition
    assert [stage_for_world(x, 2) for x in fp32] == [2, 3]
    assert stage_for_world(LearnerConfig(zero_stage=2, precision="bf16"), 1) == 0  # its stage-0 optimizer keeps fp32
    assert stage_for_world(LearnerConfig(zero_stage=2, offload={"optimizer": "cpu"}), 1) == 2  # offload needs ZeRO
    with pytest.raises(ValueError, match="offload.params: needs zero_stage 3"):
        LearnerConfig(zero_stage=2, offload={"params": "cpu"})
