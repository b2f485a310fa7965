"""The partial-order loss: Bradley-Terry over a label's preference pairs, one reward per response.

Each prompt's K responses are scored once (O(K) forwards, never once per pair); the loss then reads the pairs
from those scores. Per prompt, the weighted mean over its pairs of -log sigmoid(r_better - r_worse - margin);
then the mean over prompts that have pairs, so a prompt with many pairs does not outweigh one with few (as
InstructGPT normalises its K-choose-2 comparisons). Ties are simply absent pairs and contribute nothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def partial_order_loss(
    rewards: torch.Tensor,
    better: torch.Tensor,
    worse: torch.Tensor,
    weight: torch.Tensor,
    group: torch.Tensor,
    margin: torch.Tensor | None = None,
) -> torch.Tensor:
    """rewards [N] (every response of the batch); better, worse [M] indices into rewards; weight [M] >= 0;
    group [M] the prompt (0..G-1) each pair belongs to; margin [M] or None. Returns a scalar."""
    diff = rewards[better] - rewards[worse]
    if margin is not None:
        diff = diff - margin
    return prompt_mean(-F.logsigmoid(diff), weight, group, rewards)


def prompt_mean(
    per_pair: torch.Tensor, weight: torch.Tensor, group: torch.Tensor, anchor: torch.Tensor
) -> torch.Tensor:
    """Per prompt, the weighted mean of per_pair [M] over its pairs; then the mean over prompts with pairs (a
    prompt with many pairs does not outweigh one with few). No pairs: a zero joined to `anchor`'s graph."""
    per_pair = per_pair * weight
    groups = int(group.max()) + 1 if group.numel() else 0
    loss_sum = torch.zeros(groups, dtype=per_pair.dtype, device=per_pair.device).index_add(0, group, per_pair)
    weight_sum = torch.zeros(groups, dtype=per_pair.dtype, device=per_pair.device).index_add(
        0, group, weight.to(per_pair.dtype)
    )
    used = weight_sum > 0
    if not used.any():
        return anchor.sum() * 0.0  # no pairs: a zero that keeps the graph
    return (loss_sum[used] / weight_sum[used]).mean()
