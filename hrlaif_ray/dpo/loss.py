"""The DPO loss over a label's partial order: every preference pair is a DPO term against a frozen reference.

A response's implicit reward is beta x (log pi(y|x) - log pi_ref(y|x)), the sequence log-probability ratio to the
reference (Rafailov et al. 2023). Each pair (better, worse, weight) of a label contributes

    sigmoid (DPO):  -log sigmoid(r_better - r_worse - margin)
    ipo (IPO):      (h - (1 / (2 beta) + margin))^2,  h = the log-ratio gap, unscaled (Azar et al. 2023)

where margin = margin_per_tier x the pair's tier gap (a wider tier gap asks for a wider gap; 0 without tiers).
As the reward model's partial-order loss, the pairs of a prompt are averaged (weighted) first, then the prompts,
so a prompt with K-choose-2 pairs does not outweigh one with one; and each response is one row, one forward,
however many pairs it is in. Optionally an SFT term: the token-mean negative log-likelihood of each prompt's best
responses (those better than some response and worse than none), averaged the same way, times `sft_weight`.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from hrlaif_ray.reward.loss import prompt_mean

LossType = Literal["sigmoid", "ipo"]


def dpo_loss(
    logps: torch.Tensor,
    ref_logps: torch.Tensor,
    better: torch.Tensor,
    worse: torch.Tensor,
    weight: torch.Tensor,
    group: torch.Tensor,
    beta: float,
    loss_type: LossType = "sigmoid",
    margin: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """logps, ref_logps [N] the sequence log-probabilities of every response of the batch under the policy and the
    reference; better, worse [M] indices into them; weight [M] >= 0; group [M] each pair's prompt; margin [M] or
    None. Returns the scalar loss and detached statistics (pair-weighted the same way as the loss)."""
    ratio = logps - ref_logps
    gap = ratio[better] - ratio[worse]
    margin = torch.zeros_like(gap) if margin is None else margin.to(gap.dtype)
    if loss_type == "sigmoid":
        per_pair = -F.logsigmoid(beta * gap - margin)
    elif loss_type == "ipo":
        per_pair = (gap - (1.0 / (2.0 * beta) + margin)) ** 2
    else:
        raise ValueError(f"loss_type must be sigmoid or ipo, got {loss_type!r}")
    loss = prompt_mean(per_pair, weight, group, logps)
    with torch.no_grad():
        rewards = beta * ratio.detach()
        stats = {
            "accuracy": prompt_mean((gap.detach() > 0).to(logps.dtype), weight, group, rewards),
            "margin": prompt_mean(beta * gap.detach(), weight, group, rewards),
            "chosen_reward": prompt_mean(rewards[better], weight, group, rewards),
            "rejected_reward": prompt_mean(rewards[worse], weight, group, rewards),
            "chosen_logp": prompt_mean(logps.detach()[better], weight, group, rewards),
            "rejected_logp": prompt_mean(logps.detach()[worse], weight, group, rewards),
        }
    return loss, stats


def best_responses(n: int, better: torch.Tensor, worse: torch.Tensor) -> torch.Tensor:
    """[n] bool: the responses better than some response and worse than none (a label's top)."""
    top = torch.zeros(n, dtype=torch.bool)
    top[better] = True
    top[worse] = False
    return top


def sft_loss(
    logps: torch.Tensor, lengths: torch.Tensor, best: torch.Tensor, owner: torch.Tensor, anchor: torch.Tensor
) -> torch.Tensor:
    """The token-mean NLL of the best responses: logps [N] sequence log-probs, lengths [N] their tokens, best [N]
    bool, owner [N] each response's prompt; averaged over a prompt's best responses, then over prompts."""
    nll = -logps / lengths.clamp(min=1).to(logps.dtype)
    return prompt_mean(nll[best], torch.ones_like(nll[best]), owner[best], anchor)
