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


def tiny_config(cfg: ModelConfig, vocab_size: int, bos=None, eos=None, pad=None):
    """The HF config of a tiny model of `vocab_size` tokens (what the planner sizes before the model exists)."""
    return _ARCH[cfg.arch](
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=cfg.tie_word_embeddings,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=pad,
        dtype="float32",
    )


def build_tiny_causal_lm(cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    t = tokenizer
    config = tiny_config(cfg, len(t), t.bos_token_id, t.eos_token_id, t.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = AutoModelForCausalLM.from_config(config)
    # a new model's generation config stops at the tokenizer's end of turn (trained copies keep it)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id
    )
    return model.eval()


def save_model_folder(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: str | Path, state_dict: dict | None = None
) -> Path:
    """Save model + tokenizer as an HF folder, with the model's own generation config (a trained model keeps the
    one its starting folder had); `state_dict` overrides the live weights (the full weights ZeRO-3 gathers)."""
    path = Path(path)
    model.save_pretrained(path, state_dict=state_dict)
    tokenizer.save_pretrained(path)
    return path


def tiny_model_folder(job, out: str | Path) -> tuple[Path, int, int]:
    """`hrlaif tiny-model`: a BPE trained on the task's text (or a pretrained tokenizer) and a random-init model,
    saved with the job's config. Returns (folder, parameters, vocabulary size)."""
    from transformers import AutoTokenizer

    from hrlaif_ray.config import dump_config
    from hrlaif_ray.data.prompt_mix import generate_prompt_mix
    from hrlaif_ray.data.sft_mix import tokenizer_corpus
    from hrlaif_ray.errors import HrlaifError
    from hrlaif_ray.models.tokenizer import train_bpe_tokenizer

    if job.tokenizer.kind == "bpe":
        tokenizer = train_bpe_tokenizer(
            tokenizer_corpus(generate_prompt_mix(job.prompts), job.responses), job.tokenizer.vocab_size
        )
    else:
        if not job.tokenizer.path:
            raise HrlaifError("tokenizer.path: required when tokenizer.kind is 'pretrained'")
        tokenizer = AutoTokenizer.from_pretrained(job.tokenizer.path)
    model = build_tiny_causal_lm(job.model, tokenizer)
    folder = save_model_folder(model, tokenizer, out)
    (folder / "hrlaif_config.yaml").write_text(dump_config(job))
    return folder, sum(p.numel() for p in model.parameters()), len(tokenizer)
