"""Models: tiny random-init causal LMs, the small BPE tokenizer, the SmolLM2 loader, scalar-head models."""

from hrlaif_ray.models.scalar_head import ScalarHeadModel
from hrlaif_ray.models.smollm2 import export_smollm2, load_smollm2, smollm2_gguf_path
from hrlaif_ray.models.tiny import build_tiny_causal_lm, save_model_folder
from hrlaif_ray.models.tokenizer import CHATML_TEMPLATE, train_bpe_tokenizer

__all__ = [
    "CHATML_TEMPLATE",
    "ScalarHeadModel",
    "build_tiny_causal_lm",
    "export_smollm2",
    "load_smollm2",
    "save_model_folder",
    "smollm2_gguf_path",
    "train_bpe_tokenizer",
]
