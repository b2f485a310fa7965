"""Reward-model examples from labels: one prompt, its responses as token ids, and the label's pairs.

The prompt is rendered with the tokenizer's chat template (a user turn and the assistant's generation prompt),
as the policy sees it; each response ends with the end-of-turn token, where the reward is read. Failed labels
and labels without pairs teach nothing and are skipped. `collate` keeps one row per response (never one per
pair) and flattens the pairs with their prompt index (and tier gap, for the optional margin) for
`partial_order_loss`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hrlaif_ray.data.chat import left_pad, prompt_token_ids, response_token_ids
from hrlaif_ray.data.records import LabelRecord, PromptRecord


@dataclass
class RMExample:
    prompt_id: str
    category: str
    prompt_ids: list[int]
    response_ids: list[list[int]]
    pairs: list[tuple[int, int, float]]  # (better, worse, weight)
    tier_gaps: list[int] | None = None  # per pair, worse's tier minus better's where the pairs form tiers


def examples_from_labels(
    labels: list[LabelRecord],
    prompts: dict[str, PromptRecord],
    tokenizer,
    max_prompt_tokens: int = 256,
    max_response_tokens: int = 128,
) -> list[RMExample]:
    out = []
    for label in labels:
        if label.status != "ok" or not label.pairs:
            continue
        prompt = prompts.get(label.prompt_id)
        if prompt is None:
            raise KeyError(f"label of prompt {label.prompt_id!r} has no prompt record")
        responses = [response_token_ids(tokenizer, r.text, max_response_tokens) for r in label.responses]
        tiers = label.tiers
        tier_of = {i: t for t, members in enumerate(tiers or []) for i in members}
        gaps = [tier_of[p.worse] - tier_of[p.better] for p in label.pairs] if tiers else None
        out.append(
            RMExample(
                label.prompt_id,
                label.category,
                prompt_token_ids(tokenizer, prompt.text, max_prompt_tokens),
                responses,
                [(p.better, p.worse, p.weight) for p in label.pairs],
                gaps,
            )
        )
    return out


def collate(examples: list[RMExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Prompts left-padded [B, P]; responses right-padded [N, R] with their prompt index `owner` [N]; pairs as
    flat indices into the N responses with their prompt `group`."""
    prompt_ids, prompt_mask = left_pad([e.prompt_ids for e in examples], pad_id)
    responses = [(b, r) for b, e in enumerate(examples) for r in e.response_ids]
    R = max(len(r) for _, r in responses)
    response_ids = torch.full((len(responses), R), pad_id, dtype=torch.long)
    response_mask = torch.zeros(len(responses), R, dtype=torch.long)
    for i, (_, r) in enumerate(responses):
        response_ids[i, : len(r)] = torch.tensor(r)
        response_mask[i, : len(r)] = 1
    return {
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "response_ids": response_ids,
        "response_mask": response_mask,
        "owner": torch.tensor([b for b, _ in responses], dtype=torch.long),
        **flat_pairs(examples),
    }


def flat_pairs(examples: list[RMExample]) -> dict[str, torch.Tensor]:
    """Every example's pairs as flat indices into all the examples' responses (in order), with their weight, their
    prompt (`group`) and their tier gap (0 where the label's pairs form no tiers)."""
    better, worse, weight, group, gap, offset = [], [], [], [], [], 0
    for b, e in enumerate(examples):
        for j, (bi, wi, w) in enumerate(e.pairs):
            better.append(offset + bi)
            worse.append(offset + wi)
            weight.append(w)
            group.append(b)
            gap.append(e.tier_gaps[j] if e.tier_gaps else 0)
        offset += len(e.response_ids)
    return {
        "better": torch.tensor(better, dtype=torch.long),
        "worse": torch.tensor(worse, dtype=torch.long),
        "weight": torch.tensor(weight, dtype=torch.float32),
        "group": torch.tensor(group, dtype=torch.long),
        "tier_gap": torch.tensor(gap, dtype=torch.float32),
    }
