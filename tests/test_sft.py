"""SFT: the generated responses carry the failure the paper describes (detail makes errors likelier), the
control does not; bad JSONL names the line and field; `hrlaif sft` trains and saves a loadable policy."""

import json
import subprocess

import pytest
import torch
from conftest import ROOT, script_env, torchrun

from hrlaif_ray.config import PromptMixConfig, SFTMixConfig
from hrlaif_ray.data.prompt_mix import generate_prompt_mix
from hrlaif_ray.data.sft_mix import generate_sft_examples
from hrlaif_ray.errors import DataError
from hrlaif_ray.evaluation import correctness
from hrlaif_ray.sft import read_sft_jsonl


def _accuracy_by_length(cfg: SFTMixConfig) -> dict[int, float]:
    prompts = generate_prompt_mix(PromptMixConfig(n=6000, seed=1, harmful=0.0, open_qa=0.0))
    by: dict[int, list[float]] = {}
    for p, e in zip(prompts, generate_sft_examples(prompts, cfg)):
        assert correctness(p, e.response) == float(e.correct)  # the verifier agrees with the generator
        by.setdefault(e.response.count(". "), []).append(float(e.correct))
    return {n: sum(v) / len(v) for n, v in sorted(by.items())}


def test_sft_mix_correctness_falls_with_length_and_the_control_is_flat():
    acc = _accuracy_by_length(SFTMixConfig())
    assert acc[0] > acc[2] > acc[4] and acc[0] - acc[4] > 0.35, acc
    control = _accuracy_by_length(SFTMixConfig(control=True))
    assert max(control.values()) - min(control.values()) < 0.08, control


def test_sft_jsonl_errors_name_line_and_field(tmp_path):
    path = tmp_path / "sft.jsonl"
    path.write_text(
        json.dumps({"prompt": "Hi", "response": "Hello."}) + "\n" + json.dumps({"prompt": "Hi", "response": ""}) + "\n"
    )
    with pytest.raises(DataError, match=r"sft.jsonl:2: field 'response': must be a non-empty string"):
        read_sft_jsonl(path)
    path.write_text("{not json\n")
    with pytest.raises(DataError, match=r"sft.jsonl:1: not valid JSON"):
        read_sft_jsonl(path)


def _wide_tiny_model(tmp_path, tokenizer):
    """The tiny model with MLP matrices of 256 x 1024: over DeepSpeed's persistence threshold (1e5 elements), so
    ZeRO-3 partitions them (the default tiny model's are all under it, kept whole on every rank, hiding bugs)."""
    from hrlaif_ray.config import ModelConfig
    from hrlaif_ray.models import build_tiny_causal_lm, save_model_folder

    model = build_tiny_causal_lm(ModelConfig(hidden_size=256, intermediate_size=1024), tokenizer)
    return save_model_folder(model, tokenizer, tmp_path / "init")


def test_hrlaif_sft_trains_and_saves(tmp_path, tiny_tokenizer):
    """At ZeRO-3, where the engine's module holds the weights partitioned: the whole trained weights are evaluated
    and saved (the policy stage's other runs, at stage 0, make the tests' SFT policy)."""
    from transformers import AutoModelForCausalLM

    tiny_model_dir = _wide_tiny_model(tmp_path, tiny_tokenizer)

    proc = subprocess.run(
        [
            str(ROOT / ".venv/bin/hrlaif"),
            "sft",
            "--init",
            str(tiny_model_dir),
            "--out",
            str(tmp_path / "sft"),
            "steps=12",
            "batch_size=16",
            "warmup_steps=2",
            "eval_prompts=8",
            "prompts.n=300",
            "learner.zero_stage=3",
        ],
        env=script_env(tmp_path, OMP_NUM_THREADS="2"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "sft" / "sft_metrics.json").read_text())
    assert metrics["steps"] == 12 and metrics["final_loss"] < metrics["first_loss"]
    assert "greedy_accuracy" in metrics and 0.0 <= metrics["greedy_accuracy"]["all"] <= 1.0
    init, saved = (AutoModelForCausalLM.from_pretrained(f) for f in (tiny_model_dir, tmp_path / "sft"))
    changed = [
        name for (name, a), (_, b) in zip(init.named_parameters(), saved.named_parameters()) if not torch.equal(a, b)
    ]
    assert len(changed) == len(list(init.parameters())), "every trained weight is saved, none left at its init"
    # the folder as the field's trainers load it: transformers alone, its chat template the prompt ours encodes
    from transformers import AutoTokenizer

    from hrlaif_ray.data.chat import prompt_token_ids

    tok = AutoTokenizer.from_pretrained(tmp_path / "sft")
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "Tom has 23 apples."}], add_generation_prompt=True, return_dict=True
    )
    assert tok.chat_template and chat["input_ids"] == prompt_token_ids(tok, "Tom has 23 apples.", 256)
    out = saved.generate(torch.tensor([chat["input_ids"]]), max_new_tokens=4, do_sample=False)
    assert out.shape[1] > len(chat["input_ids"])


@pytest.mark.slow
def test_sft_on_two_torchrun_ranks_zero3_evaluates_and_saves_the_whole_model(tmp_path, tiny_tokenizer):
    """Two ranks at ZeRO-3: each holds a shard, so rank 0 may not run the held-out generation or load the weights
    on the engine's module alone (its parameter gathers are collectives the other rank never joins: a hang)."""
    from transformers import AutoModelForCausalLM

    tiny_model_dir = _wide_tiny_model(tmp_path, tiny_tokenizer)
    overrides = [f"init={tiny_model_dir}", f"output_dir={tmp_path / 'sft'}", "steps=6", "batch_size=8"]
    overrides += ["warmup_steps=1", "eval_prompts=4", "prompts.n=200", "learner.zero_stage=3"]
    proc = subprocess.run(
        torchrun("-m", "cluster.sft", *overrides),
        env=script_env(tmp_path, OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    metrics = json.loads((tmp_path / "sft" / "sft_metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == 6 and "greedy_accuracy" in metrics
    init, saved = (AutoModelForCausalLM.from_pretrained(f) for f in (tiny_model_dir, tmp_path / "sft"))
    assert all(a.shape == b.shape for a, b in zip(init.parameters(), saved.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(init.parameters(), saved.parameters()))
