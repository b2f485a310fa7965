"""Tiny random-init causal LMs (Qwen2 or Llama architecture) for tests, benchmarks and the demo.

Any tokenizer goes: the model's vocabulary is sized to it. The same config and seed give the same weights
(initialised under a forked RNG, so the caller's random state is untouched). The saved folder is a regular HF
folder (config, safetensors, tokenizer, generation config) that transformers, vLLM and DeepSpeed all load.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    GenerationConfig,
    LlamaConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Qwen2Config,
)

from hrlaif_ray.config import ModelConfig

_ARCH = {"qwen2": Qwen2Config, "llama": LlamaConfig}


def build_tiny_causal_lm(cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    config = _ARCH[cfg.arch](
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=cfg.tie_word_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="float32",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = AutoModelForCausalLM.from_config(config)
    return model.eval()


def save_model_folder(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: str | Path,
                      state_dict: dict | None = None) -> Path:
    """Save model + tokenizer + generation config (stopping at the tokenizer's EOS) as an HF folder;
    `state_dict` overrides the live weights (the full weights ZeRO-3 gathers from its shards)."""
    path = Path(path)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id
    )
    model.save_pretrained(path, state_dict=state_dict)
    tokenizer.save_pretrained(path)
    return path
