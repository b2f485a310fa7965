"""Preference batches: a label's K responses as rows of the learners' layout, with the label's pairs.

Built from the reward model's examples (`reward.data.examples_from_labels`: the prompt rendered as the policy sees
it, each response ending with the end-of-turn token, failed and pair-less labels skipped). Each response is one
row of an `Experience` (prompt left-padded, response right-padded), rows prompt-major, so one forward per response
serves all its pairs. The batch splits by prompts, never inside one (`select`), which is how ranks and
micro-batches take their share. The reference's sequence log-probs are computed once and travel with the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from hrlaif_ray.ppo.experience import Experience, layout
from hrlaif_ray.reward.data import RMExample, flat_pairs


@dataclass
class PreferenceBatch:
    sequences: Experience  # one row per response, prompt-major
    starts: torch.Tensor  # [G + 1]: prompt g's responses are rows starts[g]:starts[g + 1]
    better: torch.Tensor  # [M] row indices
    worse: torch.Tensor  # [M] row indices
    weight: torch.Tensor  # [M] float
    group: torch.Tensor  # [M] the pair's prompt, 0..G-1
    tier_gap: torch.Tensor  # [M] float: worse's tier minus better's (0 where the label forms no tiers)
    categories: list[str]  # [G]
    prompt_ids: list[str]  # [G]
    ref_logps: torch.Tensor | None = None  # [N] the reference's sequence log-probs, once computed

    def __len__(self) -> int:  # prompts: the unit the batch splits by
        return len(self.categories)

    @property
    def rows(self) -> int:
        return len(self.sequences)

    @property
    def owner(self) -> torch.Tensor:
        """[N] each row's prompt."""
        return torch.repeat_interleave(torch.arange(len(self)), self.starts.diff())

    @property
    def lengths(self) -> torch.Tensor:
        """[N] response tokens of each row."""
        return self.sequences.response_mask.sum(1)

    def with_reference(self, ref_logps: torch.Tensor) -> PreferenceBatch:
        if ref_logps.shape != (self.rows,):
            raise ValueError(f"reference log-probs of shape {tuple(ref_logps.shape)} for {self.rows} rows")
        return replace(self, ref_logps=ref_logps)

    def select(self, prompts: list[int] | torch.Tensor) -> PreferenceBatch:
        """The sub-batch of these prompts (in this order), rows and pairs renumbered, trimmed of all-padding
        columns: copies (indexing by a tensor), never views of a zero-copy batch."""
        prompts = torch.as_tensor(prompts, dtype=torch.long)
        rows = torch.cat([torch.arange(self.starts[g], self.starts[g + 1]) for g in prompts.tolist()])
        new_row = torch.full((self.rows,), -1, dtype=torch.long)
        new_row[rows] = torch.arange(len(rows))
        new_group = torch.full((len(self),), -1, dtype=torch.long)
        new_group[prompts] = torch.arange(len(prompts))
        keep = new_group[self.group] >= 0
        seq = self.sequences
        sizes = self.starts.diff()[prompts]
        return PreferenceBatch(
            sequences=seq.take(rows, float(seq.response_mask[rows].sum()) or 1.0),
            starts=torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)]),
            better=new_row[self.better[keep]],
            worse=new_row[self.worse[keep]],
            weight=self.weight[keep],
            group=new_group[self.group[keep]],
            tier_gap=self.tier_gap[keep],
            categories=[self.categories[g] for g in prompts.tolist()],
            prompt_ids=[self.prompt_ids[g] for g in prompts.tolist()],
            ref_logps=None if self.ref_logps is None else self.ref_logps[rows],
        )


def preference_batch(examples: list[RMExample], pad_id: int) -> PreferenceBatch:
    if not examples:
        raise ValueError("no labels with preference pairs to train on")
    prompts = [e.prompt_ids for e in examples for _ in e.response_ids]
    responses = [r for e in examples for r in e.response_ids]
    sizes = torch.tensor([len(e.response_ids) for e in examples], dtype=torch.long)
    return PreferenceBatch(
        sequences=layout(prompts, responses, pad_id),
        starts=torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)]),
        **flat_pairs(examples),
        categories=[e.category for e in examples],
        prompt_ids=[e.prompt_id for e in examples],
    )
