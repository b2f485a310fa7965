"""The tiny model's config (`hrlaif tiny-model`): its architecture, its tokenizer and the text the BPE learns."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from hrlaif_ray.config.base import Section
from hrlaif_ray.config.data import PromptMixConfig, SFTMixConfig


class ModelConfig(Section):
    """A tiny random-init causal LM (tests, benchmarks, the demo's policy)."""

    arch: Literal["qwen2", "llama"] = Field("qwen2", description="HF architecture of the tiny model.")
    hidden_size: int = Field(128, gt=0, description="Width of the residual stream.")
    num_layers: int = Field(2, gt=0, description="Number of decoder layers.")
    num_heads: int = Field(4, gt=0, description="Attention heads; must divide hidden_size.")
    num_kv_heads: int = Field(4, gt=0, description="Key/value heads (grouped-query attention); divides num_heads.")
    intermediate_size: int = Field(512, gt=0, description="MLP width.")
    max_position_embeddings: int = Field(512, gt=0, description="Longest sequence the model accepts.")
    tie_word_embeddings: bool = Field(True, description="Share input embedding and output projection.")
    seed: int = Field(0, description="Initialisation seed: the same seed gives the same weights.")

    @model_validator(mode="after")
    def _heads_divide(self) -> ModelConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must divide hidden_size ({self.hidden_size})")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_kv_heads ({self.num_kv_heads}) must divide num_heads ({self.num_heads})")
        return self


class TokenizerConfig(Section):
    """Where the tokenizer comes from."""

    kind: Literal["bpe", "pretrained"] = Field(
        "bpe", description="'bpe': a byte-level BPE trained on the task's text; 'pretrained': load `path`."
    )
    vocab_size: int = Field(384, ge=280, description="BPE vocabulary (256 bytes + specials + merges).")
    path: str | None = Field(None, description="Tokenizer folder when kind is 'pretrained'.")


class TinyModelJob(Section):
    """`hrlaif tiny-model`: train a tokenizer on the prompt mix and save a random-init model folder."""

    model: ModelConfig = Field(default_factory=ModelConfig, description="The model's architecture and size.")
    tokenizer: TokenizerConfig = Field(
        default_factory=TokenizerConfig, description="The BPE trained on the prompt mix (or a pretrained tokenizer)."
    )
    prompts: PromptMixConfig = Field(
        default_factory=PromptMixConfig,
        description="The prompt mix the tokenizer is trained on (with its SFT responses).",
    )
    responses: SFTMixConfig = Field(
        default_factory=SFTMixConfig,
        description="How those SFT responses are drawn (the run sets its SFT stage's, so the tokenizer sees its text).",
    )
