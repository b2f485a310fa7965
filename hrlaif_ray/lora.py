"""LoRA on a trained role, through PEFT: adapters added to (or loaded onto) a frozen base, their tensors as PEFT
saves them (what a sync sends and a checkpoint holds), the base's forward with the adapters off (the KL and DPO
reference: no second copy of the weights), and the merged weights (the fallback for engines without adapters, and
a full HF folder on request).

Every adapter operation is PEFT's (`get_peft_model`, `PeftModel.from_pretrained`, `disable_adapter`, the state
dict's naming); what is ours is the glue to DeepSpeed and to the sync: the adapter tensors are walked as live
parameters (so ZeRO-3 gathers them one at a time like any other weight), and the merged weights are computed weight
by weight from the live ones (`merge_groups`: each weight gathered with its two adapter matrices), because PEFT's
own `merge_adapter` / `unmerge_adapter` change the base weights in place and back, which leaves them off by a
rounding error after every sync.

A folder is either a full HF model folder or an adapter folder (PEFT's `adapter_config.json` and
`adapter_model.safetensors`, whose config names its base folder); `model_folders` tells which, and every loader
that takes a model folder (`load_causal_lm`, `load_policy`, the scalar-head models) takes both.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from hrlaif_ray.config import LoRAConfig

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
MERGED = "merged"  # the merged full folder inside an adapter folder (lora.save_merged)
ADAPTER_NAME = "default"  # PEFT's name of a model's one adapter; its saved names leave it out


def is_adapter_folder(folder: str | Path) -> bool:
    return (Path(folder) / ADAPTER_CONFIG).is_file()


def adapter_base(folder: str | Path) -> str:
    """The base model folder an adapter folder was trained on (its config's `base_model_name_or_path`)."""
    path = Path(folder) / ADAPTER_CONFIG
    try:
        base = json.loads(path.read_text()).get("base_model_name_or_path")
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable adapter config ({exc})") from None
    if not base:
        raise ValueError(f"{path}: names no base model (base_model_name_or_path)")
    return str(base)


def model_folders(folder: str | Path) -> tuple[str, str | None]:
    """(base model folder, adapter folder or None) of a model folder or an adapter folder."""
    if is_adapter_folder(folder):
        return adapter_base(folder), str(folder)
    return str(folder), None


def peft_config(lora: LoRAConfig, task: str = "CAUSAL_LM"):
    """PEFT's LoraConfig for our section (`task`: CAUSAL_LM for a policy, FEATURE_EXTRACTION for a backbone)."""
    from peft import LoraConfig

    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        bias="none",
        task_type=task,
    )


def with_adapters(model: torch.nn.Module, lora: LoRAConfig, adapter: str | None = None, task: str = "CAUSAL_LM"):
    """`model` (frozen from here) with trainable adapters: fresh ones from `lora`, or those saved in `adapter` (an
    adapter folder: a resumed run goes on with the same adapter)."""
    from peft import PeftModel, get_peft_model

    if adapter is not None:
        return PeftModel.from_pretrained(model, adapter, is_trainable=True)
    base = getattr(model, "name_or_path", None)
    peft = get_peft_model(model, peft_config(lora, task))
    if base:
        peft.peft_config[ADAPTER_NAME].base_model_name_or_path = base
    return peft


def has_adapters(model: torch.nn.Module) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


def adapters_off(model: torch.nn.Module):
    """A block in which `model` runs as its base (PEFT's `disable_adapter`); a no-op for a model without adapters."""
    return model.disable_adapter() if has_adapters(model) else nullcontext()


def saved_name(name: str) -> str:
    """A live adapter parameter's name as PEFT saves it (the adapter's name left out)."""
    return name.replace(f".{ADAPTER_NAME}", "")


def adapter_parameters(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """The adapters' live parameters in order, named as PEFT saves them (`adapter_model.safetensors`'s keys)."""
    return [(saved_name(n), p) for n, p in model.named_parameters() if "lora_" in n]


def write_adapter(folder: str | Path, config: dict, tensors: dict[str, torch.Tensor]) -> Path:
    """An adapter folder in PEFT's format from its config and its tensors (saved names)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {**config, "target_modules": _jsonable(config.get("target_modules"))}
    (folder / ADAPTER_CONFIG).write_text(json.dumps(config, indent=1, default=str))
    save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, folder / ADAPTER_WEIGHTS)
    return folder


def _jsonable(value):
    return sorted(value) if isinstance(value, set) else value


def read_adapter(folder: str | Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(Path(folder) / ADAPTER_WEIGHTS)


def base_name(name: str) -> str | None:
    """A PEFT model's state-dict key as the base model names it (None: an adapter's own tensor)."""
    if "lora_" in name:
        return None
    return name.removeprefix("base_model.model.").replace(".base_layer.", ".")


def merge_groups(model: torch.nn.Module) -> list[tuple[tuple[str, ...], tuple[torch.Tensor, ...]]]:
    """A PEFT model's base weights as the base model names them, each tensor once with every name it has (a tied
    weight), in state-dict order, with what merging it takes: (weight,) or (weight, lora_A, lora_B). Live tensors,
    so that ZeRO-3 gathers each group when it is merged (`hrlaif_ray.zero.gathered_groups`)."""
    state = model.state_dict(keep_vars=True)
    names: dict[int, list[str]] = {}
    groups: dict[int, tuple[torch.Tensor, ...]] = {}
    for key, tensor in state.items():
        name = base_name(key)
        if name is None:
            continue
        stem = key.removesuffix(".base_layer.weight")
        a, b = state.get(f"{stem}.lora_A.{ADAPTER_NAME}.weight"), state.get(f"{stem}.lora_B.{ADAPTER_NAME}.weight")
        names.setdefault(id(tensor), []).append(name)
        groups[id(tensor)] = (tensor, a, b) if stem != key and a is not None and b is not None else (tensor,)
    return [(tuple(names[k]), group) for k, group in groups.items()]


def merge(group: tuple[torch.Tensor, ...], scale: float) -> torch.Tensor:
    """One merged weight: W + scale * B @ A in fp32, stored in W's dtype (W alone when it has no adapter). W is not
    changed."""
    if len(group) == 1:
        return group[0].detach()
    w, a, b = group
    return (w.float() + scale * (b.float() @ a.float())).to(w.dtype)


def scaling(model: torch.nn.Module) -> float:
    """alpha / r of the model's adapter."""
    config = model.peft_config[ADAPTER_NAME]
    return config.lora_alpha / config.r


def trained_state(model: torch.nn.Module, rank: int, zero3: bool) -> dict[str, torch.Tensor] | None:
    """Host copies of a model's trained tensors beside a frozen base (its adapters, and a scalar head), live names,
    on rank 0 (None elsewhere); gathered one at a time under ZeRO-3 (every rank must call it)."""
    from hrlaif_ray.zero import gathered_tensors

    trained = [(n, p) for n, p in model.named_parameters() if "lora_" in n or n.startswith("head.")]
    tensors = gathered_tensors(model, rank, zero3, [p for _, p in trained])
    state = {n: t.to("cpu", copy=True) for (n, _), t in zip(trained, tensors) if t is not None}
    return state if rank == 0 else None


def gathered_merged_state(model: torch.nn.Module, rank: int, zero3: bool) -> dict[str, torch.Tensor] | None:
    """`merged_state` of a PEFT model that may be sharded: on rank 0 (None elsewhere), each weight gathered with
    its adapters under ZeRO-3 and merged on its way to the host (every rank must call it)."""
    from hrlaif_ray.zero import gathered_groups

    named, scale = merge_groups(model), scaling(model)
    out: dict[str, torch.Tensor] = {}
    for (names, _), group in zip(named, gathered_groups([g for _, g in named], rank, zero3)):
        if group is not None:
            tensor = merge(group, scale).to("cpu", copy=True)
            out.update((n, tensor) for n in names)
    return out if rank == 0 else None


def save_adapter_folder(model, path: str | Path, tokenizer, state: dict, merged: dict | None = None) -> Path:
    """A causal LM with adapters saved as an adapter folder (PEFT's format, from `state`: `trained_state`) with its
    tokenizer, and with `merged` (`gathered_merged_state`) the merged model as a full HF folder in `merged/`."""
    path = Path(path)
    model.save_pretrained(path, state_dict=state)
    tokenizer.save_pretrained(path)
    if merged is not None:
        # a copy: transformers drops a tied weight's second name from the dict it is given
        model.get_base_model().save_pretrained(path / MERGED, state_dict=dict(merged))
        tokenizer.save_pretrained(path / MERGED)
    return path


def load_causal_lm(folder: str | Path, dtype: torch.dtype = torch.float32, merge: bool = True):
    """A causal LM from a model folder or an adapter folder (its base with the adapter, merged into plain weights
    unless `merge` is False: then the PEFT model, frozen)."""
    from transformers import AutoModelForCausalLM

    base, adapter = model_folders(folder)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    if adapter is None:
        return model
    from peft import PeftModel

    peft = PeftModel.from_pretrained(model, adapter)
    return peft.merge_and_unload() if merge else peft


def load_policy(folder: str | Path, dtype: torch.dtype, lora: LoRAConfig):
    """A causal LM from a model folder or an adapter folder: with `lora` on, the base with trainable adapters
    (fresh on a model folder, or an adapter folder's own: a resumed run); otherwise the whole model (an adapter
    folder merged into its base)."""
    if not lora.enabled:
        return load_causal_lm(folder, dtype)
    from transformers import AutoModelForCausalLM

    base, adapter = model_folders(folder)
    return with_adapters(AutoModelForCausalLM.from_pretrained(base, dtype=dtype), lora, adapter)
