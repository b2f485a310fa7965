"""SFT: the generated responses carry the failure the paper describes (detail makes errors likelier), the
control does not; bad JSONL names the line and field; `hrlaif sft` trains and saves a loadable policy."""

import json
import subprocess

import pytest
from conftest import ROOT, script_env

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


def test_hrlaif_sft_trains_and_saves(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM

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
    AutoModelForCausalLM.from_pretrained(tmp_path / "sft")
