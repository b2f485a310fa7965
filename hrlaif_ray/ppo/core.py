"""PPO's maths as pure tensor functions: log-probabilities, KL estimators and controllers, GAE, the
leave-one-out and group-normalised advantages, the clipped policy and value losses, entropy.

Shapes: B sequences, T response tokens. `mask` [B, T] is 1 on response tokens (right-padded responses), 0 on
padding. Nothing here reads a config: every function takes the scalars it needs. The conventions follow the
InstructGPT/OpenRLHF line: the KL penalty is folded into the per-token reward, the sequence score lands on the
last response token, advantages are whitened over the batch's response tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """x [B, T] -> zero mean (unless shift_mean is False), unit variance over the masked entries; padding -> 0."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """logits [B, T, V] predicting tokens [B, T] -> log p(token) [B, T] under softmax(logits / temperature),
    the distribution the sampler drew from (vLLM's processed logprobs)."""
    logits = logits.float() / temperature
    return logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def entropy_from_logits(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """logits [B, T, V] -> entropy [B, T] of softmax(logits / temperature)."""
    logits = logits.float() / temperature
    logp = F.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from samples of pi [B, T] (Schulman's k1, k2, k3).

    k1 = log pi - log ref (unbiased, can be negative); k2 = (log pi - log ref)^2 / 2; k3 = r - 1 - log r with
    r = ref / pi (unbiased and never negative)."""
    log_ratio = logp.float() - ref_logp.float()
    if kind == "k1":
        return log_ratio
    if kind == "k2":
        return 0.5 * log_ratio**2
    if kind == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"kl estimator must be k1, k2 or k3, got {kind!r}")


@dataclass
class KLController:
    """The KL coefficient: fixed, or adaptive (Ziegler et al.: move towards `target` KL over `horizon` samples)."""

    coef: float
    target: float | None = None
    horizon: int = 10000

    def update(self, kl: float, n_samples: int) -> float:
        if self.target is not None:
            error = max(-0.2, min(0.2, kl / self.target - 1))
            self.coef *= 1 + error * n_samples / self.horizon
        return self.coef


def token_rewards(score: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """score [B] (clipped in the RM's forward), kl [B, T] -> per-token rewards [B, T]: -kl_coef * kl on every
    response token, plus the score on the last one."""
    rewards = -kl_coef * kl * mask
    last = mask.long().cumsum(1).argmax(1)  # index of the last response token
    return rewards.scatter_add(1, last.unsqueeze(1), score.to(rewards.dtype).unsqueeze(1))


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation. rewards, values, mask [B, T] -> (advantages, returns) [B, T].

    delta_t = r_t + gamma V_{t+1} - V_t, A_t = delta_t + gamma lam A_{t+1}, with V and A zero past the response.
    """
    values = values * mask
    rewards = rewards * mask
    T = rewards.size(1)
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(T)):
        next_value = values[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = (delta + gamma * lam * last) * mask[:, t]
        adv[:, t] = last
    return adv, (adv + values) * mask


def rloo_advantages(returns: torch.Tensor, group_size: int) -> torch.Tensor:
    """returns [B] (B = prompts x group_size, a prompt's samples consecutive) -> r_i minus the mean of the
    other samples of its prompt (REINFORCE leave-one-out)."""
    if group_size < 2:
        raise ValueError("RLOO needs at least 2 samples per prompt")
    r = returns.view(-1, group_size)
    baseline = (r.sum(1, keepdim=True) - r) / (group_size - 1)
    return (r - baseline).reshape(-1)


def grpo_advantages(returns: torch.Tensor, group_size: int, eps: float = 1e-6, scale: bool = True) -> torch.Tensor:
    """returns [B] -> (r - group mean) / (group std + eps) (GRPO; scale=False keeps only the mean shift, as
    Dr. GRPO does)."""
    r = returns.view(-1, group_size)
    centred = r - r.mean(1, keepdim=True)
    if scale:
        centred = centred / (r.std(1, keepdim=True) + eps)
    return centred.reshape(-1)


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip: float = 0.2,
    dual_clip: float | None = None,
    is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped surrogate loss, all [B, T] -> (scalar loss, stats). dual_clip c > 1 bounds the loss of a
    negative advantage at -c A (Ye et al.), so a huge ratio cannot blow it up. `is_weights` [B, T] (constants,
    `truncated_is_weights`) weight each token's loss."""
    ratio = torch.exp(logp - old_logp)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip, 1 + clip)
    loss = torch.maximum(unclipped, clipped)
    if dual_clip is not None:
        if dual_clip <= 1:
            raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
        loss = torch.where(advantages < 0, torch.minimum(loss, -dual_clip * advantages), loss)
    if is_weights is not None:
        loss = loss * is_weights
    stats = {
        "clip_frac": masked_mean((clipped > unclipped).float(), mask),
        "approx_kl": masked_mean(0.5 * (logp - old_logp) ** 2, mask),
        "ratio": masked_mean(ratio, mask),
    }
    return masked_mean(loss, mask), stats


def truncated_is_weights(actor_logp: torch.Tensor, sampler_logp: torch.Tensor, cap: float) -> torch.Tensor:
    """Truncated importance sampling [B, T]: min(pi_actor / pi_sampler, cap) per token, a constant (no gradient).
    The tokens were drawn by the engines' kernels; the loss is the actor's, so each token is reweighted to the
    actor's distribution, truncated so that a token the engines over-sampled by chance cannot dominate."""
    return torch.exp(actor_logp - sampler_logp).clamp(max=cap).detach()


def logprob_mismatch(
    actor_logp: torch.Tensor, sampler_logp: torch.Tensor, mask: torch.Tensor, threshold: float
) -> dict[str, torch.Tensor]:
    """How far the engines' log-probs of the sampled tokens are from the actor's (mask [B, T]: response tokens):
    the mean and largest absolute difference, and the share of tokens over `threshold`."""
    diff = (actor_logp - sampler_logp).abs()
    return {
        "logprob_diff_mean": masked_mean(diff, mask),
        "logprob_max_abs_diff": (diff * mask).max(),
        "logprob_diff_over_frac": masked_mean((diff > threshold).float(), mask),
    }


def value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, clip: float | None = 0.2
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss 0.5 max((V - R)^2, (V_clip - R)^2), V_clip = V_old + clamp(V - V_old, -clip, clip)."""
    err = (values - returns) ** 2
    if clip is not None:
        clipped = old_values + (values - old_values).clamp(-clip, clip)
        err_clipped = (clipped - returns) ** 2
        stats = {"clip_frac": masked_mean((err_clipped > err).float(), mask)}
        err = torch.maximum(err, err_clipped)
    else:
        stats = {"clip_frac": torch.zeros(())}
    return 0.5 * masked_mean(err, mask), stats
