"""The reward model in the format the field loads: `AutoModelForSequenceClassification` with `num_labels=1`, what
TRL's `RewardTrainer` (and its PPO trainer's `reward_model`) and OpenRLHF's reward models read.

Our RM is a backbone plus a scalar head with a bias, normalised and clipped in its forward
(`reward.model.RewardModel`). The sequence-classification head (`score`) has no bias, so the bias moves into the
recorded normalisation: raw = w.h + b, and (raw - mean) / std = (w.h - (mean - b)) / std. The folder's
`config.json` keeps it under `hrlaif_reward` (`mean`, `std`, `clip`: reward = clamp((logit - mean) / std, -clip,
clip)); transformers alone gives the logit, the score our RM gives before its normalisation, read at the last token
that is not the pad token, on right-padded batches (transformers counts positions from 0 in each row, ours from a
row's first real token). A tokenizer that pads with its end-of-turn token cannot be exported (`export_problem`).

Written by hand rather than through `from_config` + `save_pretrained` so no second copy of the model is built:
the backbone's tensors are renamed under the class's base-model prefix and saved as they are.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

CONFIG_KEY = "hrlaif_reward"
SEQUENCE_CLASSIFICATION = "sequence-classification"  # the folder `hrlaif train-rm` writes it to, in its output


def export_problem(tokenizer) -> str | None:
    """Why the RM cannot be read as sequence classification with this tokenizer, or None. Our reward is read at
    the end-of-turn token; transformers reads the last token that is not the pad token, so a tokenizer that pads
    with its end token (SmolLM2's does) would have it read the token before."""
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        return (
            "the tokenizer pads with its end-of-turn token, where the reward is read (transformers would read the "
            "token before it); give the tokenizer a pad token of its own to export"
        )
    return None


def save_sequence_classification(rm, tokenizer, path: str | Path, state: dict[str, torch.Tensor] | None = None) -> Path:
    """`rm` (a RewardModel) as an HF sequence-classification folder at `path`; `state`: its whole weights where the
    live module holds a shard (ZeRO-3), keys as `rm.state_dict()`'s."""
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES as NAMES

    if problem := export_problem(tokenizer):
        raise ValueError(problem)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = state if state is not None else rm.state_dict()
    config = copy.deepcopy(rm.backbone.config)
    if config.model_type not in NAMES:
        raise ValueError(f"transformers has no sequence-classification model for {config.model_type!r}")
    seq_cls = getattr(transformers, NAMES[config.model_type])  # the class AutoModelForSequenceClassification loads
    prefix = seq_cls.base_model_prefix
    bias = float(state["head.bias"].float().item()) if "head.bias" in state else 0.0
    config.architectures = [seq_cls.__name__]
    config.num_labels = 1
    config.id2label, config.label2id = {0: "reward"}, {"reward": 0}
    config.pad_token_id = tokenizer.pad_token_id
    setattr(config, CONFIG_KEY, {"mean": rm.mean - bias, "std": rm.std, "clip": rm.clip})
    tensors = {f"{prefix}.{k.removeprefix('backbone.')}": v for k, v in state.items() if k.startswith("backbone.")}
    tensors["score.weight"] = state["head.weight"]
    seen: set[int] = set()
    out = {}
    for key, value in tensors.items():  # tied tensors saved once each (safetensors refuses shared storage)
        value = value.detach().to("cpu").contiguous()
        ptr = value.untyped_storage().data_ptr()
        out[key] = value.clone() if ptr in seen else value
        seen.add(ptr)
    save_file(out, path / "model.safetensors", metadata={"format": "pt"})
    config.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def reward_from_logits(logits: torch.Tensor, folder: str | Path) -> torch.Tensor:
    """A saved folder's logits [B, 1] -> our rewards [B] (its recorded normalisation and clip)."""
    meta = json.loads((Path(folder) / "config.json").read_text())[CONFIG_KEY]
    clip = meta["clip"]
    scores = (logits.squeeze(-1).float() - meta["mean"]) / meta["std"]
    return torch.nan_to_num(scores, nan=0.0, posinf=clip, neginf=-clip).clamp(-clip, clip)  # as RewardModel.finish
