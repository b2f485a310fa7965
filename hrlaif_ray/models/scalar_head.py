"""A causal-LM backbone with a scalar head: the reward model and the critic.

`kind="reward"` reads the head at the last non-pad token of each sequence (one score per sequence);
`kind="critic"` reads it at every token (one value per position). The backbone is the HF base model
(`AutoModel`), so a policy folder (e.g. the SFT checkpoint) initialises it directly, as is standard practice.
The folder it saves is the backbone's HF folder plus `scalar_head.safetensors`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModel, PreTrainedModel

if TYPE_CHECKING:
    from hrlaif_ray.config import LoRAConfig

HEAD_FILE = "scalar_head.safetensors"
HEAD_META = "scalar_head.json"


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, T] mask -> [B] index of the last 1 in each row (works with left or right padding)."""
    T = attention_mask.size(1)
    return T - 1 - attention_mask.long().fliplr().argmax(dim=1)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that count only real tokens, so left padding does not shift them."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class ScalarHeadModel(nn.Module):
    def __init__(
        self, backbone: PreTrainedModel, kind: Literal["reward", "critic"] = "reward", head: nn.Linear | None = None
    ):
        super().__init__()
        if kind not in ("reward", "critic"):
            raise ValueError(f"kind must be 'reward' or 'critic', got {kind!r}")
        self.kind = kind
        self.backbone = backbone
        hidden = backbone.config.hidden_size
        if head is None:
            head = nn.Linear(hidden, 1, dtype=backbone.dtype)
            nn.init.normal_(head.weight, std=1.0 / (hidden + 1) ** 0.5)
            nn.init.zeros_(head.bias)
        self.head = head

    @property
    def config(self):
        return self.backbone.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask: [B, T] -> rewards [B] (reward) or values [B, T] (critic)."""
        hidden = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids_from_mask(attention_mask)
        ).last_hidden_state
        values = self.head(hidden).squeeze(-1)
        if self.kind == "critic":
            return values
        return values.gather(1, last_token_index(attention_mask).unsqueeze(1)).squeeze(1)

    def head_meta(self) -> dict:
        """What the head file's JSON records beside the weights (subclasses add their own fields)."""
        return {"kind": self.kind, "hidden_size": self.config.hidden_size}

    def save_pretrained(
        self, path: str | Path, tokenizer=None, state_dict: dict | None = None, merged: dict | None = None
    ) -> Path:
        """Save as an HF folder (a backbone with adapters: as an adapter folder, PEFT's format); `state_dict` (this
        module's keys) overrides the live weights, e.g. the full weights DeepSpeed ZeRO-3 consolidates from its
        shards. `merged` (a backbone with adapters: its merged weights, `lora.gathered_merged_state`) also writes
        the merged model, head included, as a full folder in `merged/`."""
        path = Path(path)
        state = state_dict if state_dict is not None else self.state_dict()
        self.backbone.save_pretrained(
            path, state_dict={k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
        )
        self._save_head(path, state, tokenizer)
        if merged is not None:
            from hrlaif_ray.lora import MERGED

            self.backbone.get_base_model().save_pretrained(path / MERGED, state_dict=merged)
            self._save_head(path / MERGED, state, tokenizer)
        return path

    def _save_head(self, path: Path, state: dict, tokenizer) -> None:
        """The head's weights and meta (and the tokenizer) beside a saved backbone."""
        save_file(
            {k.removeprefix("head."): v.detach().contiguous() for k, v in state.items() if k.startswith("head.")},
            path / HEAD_FILE,
        )
        (path / HEAD_META).write_text(json.dumps(self.head_meta()))
        if tokenizer is not None:
            tokenizer.save_pretrained(path)

    @staticmethod
    def load_parts(
        path: str | Path, dtype: torch.dtype = torch.float32, lora: LoRAConfig | None = None
    ) -> tuple[PreTrainedModel, nn.Linear | None, dict]:
        """(backbone, head or None, head meta) of a scalar-head folder or of a causal-LM folder, either of them
        whole or as an adapter folder. With `lora` on, the backbone gets trainable adapters (fresh, or the adapter
        folder's own: a resumed run); otherwise an adapter folder's adapters are merged into its base."""
        from hrlaif_ray.lora import model_folders, with_adapters

        path = Path(path)
        base, adapter = model_folders(path)
        backbone = AutoModel.from_pretrained(base, dtype=dtype)
        if lora is not None and lora.enabled:
            backbone = with_adapters(backbone, lora, adapter, task="FEATURE_EXTRACTION")
        elif adapter is not None:
            from peft import PeftModel

            backbone = PeftModel.from_pretrained(backbone, adapter).merge_and_unload()
        if not (path / HEAD_FILE).is_file():
            return backbone, None, {}
        head = nn.Linear(backbone.config.hidden_size, 1, dtype=dtype)
        head.load_state_dict(load_file(path / HEAD_FILE))
        return backbone, head, json.loads((path / HEAD_META).read_text())

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        kind: Literal["reward", "critic"] | None = None,
        dtype: torch.dtype = torch.float32,
        lora: LoRAConfig | None = None,
    ) -> ScalarHeadModel:
        """Load a saved scalar-head folder, or start from a causal-LM folder with a fresh head (`lora`: see
        `load_parts`)."""
        backbone, head, meta = cls.load_parts(path, dtype, lora)
        return cls(backbone, kind or meta.get("kind", "reward"), head)
