"""The reward model: an HF causal-LM backbone plus a scalar head read at the last non-pad token, whose forward
returns rewards already normalised and clipped to [-r, r].

Where it departs from the paper: the paper moved reward clipping into the RM's forward pass (r = 10); here the
normalisation (a mean and std measured on the training set after training, saved with the checkpoint) is in
the same place, so every consumer (PPO, the reward service, evaluation) gets the same bounded score. Training
uses `raw=True`: the Bradley-Terry loss on clipped scores would have no gradient for pairs beyond the bound.

Beyond the paper, `score_shared_prefix` runs each prompt once and reuses its key/value cache for all K
responses, so a prompt costs O(1) forwards instead of O(K); it equals the full-sequence score (a test, 1e-5).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn
from transformers import PreTrainedModel

from hrlaif_ray.models.scalar_head import ScalarHeadModel, last_token_index, position_ids_from_mask

if TYPE_CHECKING:
    from hrlaif_ray.config import LoRAConfig


class RewardModel(ScalarHeadModel):
    def __init__(
        self,
        backbone: PreTrainedModel,
        head: nn.Linear | None = None,
        clip: float = 10.0,
        mean: float = 0.0,
        std: float = 1.0,
    ):
        super().__init__(backbone, "reward", head)
        if clip <= 0 or std <= 0:
            raise ValueError(f"reward clip and std must be positive, got clip={clip}, std={std}")
        self.clip, self.mean, self.std = float(clip), float(mean), float(std)

    def finish(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw head outputs -> normalised rewards clipped to [-clip, clip]. Overflow saturates at the bound; a NaN
        (inf - inf inside an overflowing head) becomes 0, the neutral reward, since one NaN would poison PPO."""
        scores = torch.nan_to_num((raw - self.mean) / self.std, nan=0.0, posinf=self.clip, neginf=-self.clip)
        return scores.clamp(-self.clip, self.clip)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, raw: bool = False) -> torch.Tensor:
        """input_ids, attention_mask: [B, T] -> rewards [B] in [-clip, clip] (raw head outputs with raw=True)."""
        scores = super().forward(input_ids, attention_mask)
        return scores if raw else self.finish(scores)

    @torch.inference_mode()
    def score_sequences(self, sequences: list[list[int]], pad: int, micro_batch: int | None = None) -> torch.Tensor:
        """Rewards [len(sequences)] of whole token sequences (prompt + response, ending where the reward is read),
        in their order; scored `micro_batch` at a time (all at once when None) in length order, left-padded, so
        each forward carries little padding."""
        from hrlaif_ray.data.chat import left_pad

        device = next(self.parameters()).device
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))  # stable: sorted input keeps its order
        size = micro_batch or max(1, len(sequences))
        out = torch.zeros(len(sequences))
        for start in range(0, len(order), size):
            idx = order[start : start + size]
            ids, mask = left_pad([sequences[i] for i in idx], pad)
            out[idx] = self(ids.to(device), mask.to(device)).float().cpu()
        return out

    def score_shared_prefix(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        response_ids: torch.Tensor,
        response_mask: torch.Tensor,
        owner: torch.Tensor | None = None,
        raw: bool = False,
    ) -> torch.Tensor:
        """Score every response with one forward of each prompt.

        prompt_ids, prompt_mask: [B, P], left-padded. response_ids, response_mask: [N, R], right-padded, each at
        least one token; owner [N] is the prompt (0..B-1) of each response (default: N/B consecutive rows per
        prompt). Returns rewards [N].
        """
        B, N = prompt_ids.size(0), response_ids.size(0)
        if owner is None:
            if N % B:
                raise ValueError(f"{N} responses do not split evenly over {B} prompts: pass owner")
            owner = torch.arange(B, device=prompt_ids.device).repeat_interleave(N // B)
        prefix = self.backbone(
            input_ids=prompt_ids,
            attention_mask=prompt_mask,
            position_ids=position_ids_from_mask(prompt_mask),
            use_cache=True,
        )
        cache = prefix.past_key_values
        cache.batch_select_indices(owner)  # each response gets its prompt's keys and values (rows may repeat)
        mask = torch.cat([prompt_mask[owner], response_mask], dim=1)
        start = prompt_mask.long().sum(1)[owner].unsqueeze(1)
        positions = start + (response_mask.long().cumsum(1) - 1).clamp(min=0)
        hidden = self.backbone(
            input_ids=response_ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=False
        ).last_hidden_state
        values = self.head(hidden).squeeze(-1)
        scores = values.gather(1, last_token_index(response_mask).unsqueeze(1)).squeeze(1)
        return scores if raw else self.finish(scores)

    def head_meta(self) -> dict:
        return {**super().head_meta(), "clip": self.clip, "mean": self.mean, "std": self.std}

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        clip: float | None = None,
        dtype: torch.dtype = torch.float32,
        lora: LoRAConfig | None = None,
    ) -> RewardModel:
        """A saved RM folder (head, clip and normalisation), or a policy folder with a fresh head; either whole or
        as an adapter folder (`ScalarHeadModel.load_parts`; `lora`: trainable adapters on the backbone)."""
        backbone, head, meta = cls.load_parts(path, dtype, lora)
        return cls(
            backbone,
            head,
            clip if clip is not None else meta.get("clip", 10.0),
            meta.get("mean", 0.0),
            meta.get("std", 1.0),
        )
