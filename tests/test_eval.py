"""`hrlaif eval`: verified accuracy per set and category, HumanEval pass@1 in the sandbox, the judge's harm flags
and win rate through the labeler pool (over HTTP, the simulated judge), response length; and the report's table."""

import json
from pathlib import Path

import pytest
from conftest import run_hrlaif

from cluster.report import table
from hrlaif_ray.config import PromptMixConfig
from hrlaif_ray.data.prompt_mix import generate_prompt_mix
from hrlaif_ray.data.readers import load_source
from hrlaif_ray.data.schemas import write_records
from hrlaif_ray.evaluation import pairwise_outcome
from hrlaif_ray.judges.launch import sim_judge_server
from hrlaif_ray.metrics import read_jsonl


def test_pairwise_outcome_counts_disagreement_as_a_tie():
    A, B, T = {"better": "A"}, {"better": "B"}, {"better": "tie"}
    assert pairwise_outcome(A, B) == 1.0  # the policy (A first, then B) wins in both orders
    assert pairwise_outcome(B, A) == 0.0
    assert pairwise_outcome(A, A) == 0.5  # position bias: the judge always says A
    assert pairwise_outcome(T, B) == 0.5
    assert pairwise_outcome(None, A) is None  # a failed request is not a tie


def test_report_table_has_a_row_per_policy_and_dashes_for_what_is_missing():
    sft = {"accuracy/mix/math": 0.5, "harmful_rate/mix": 0.4, "length/mix": 40.0}
    arm = {
        "eval": {"accuracy/mix/math": 0.6, "win_rate/mix": 0.55},
        "reward_first": 0.1,
        "reward_last": 0.9,
        "rm_heldout_accuracy": 0.8,
        "labels": 100,
        "label_cost_usd": 0.25,
        "alerts": [{"step": 10}],
    }
    lines = table(sft, {"hrlaif": arm}).splitlines()
    assert lines[2].startswith("| SFT | 0.500 | - |") and "| 0.400 |" in lines[2]
    assert (
        lines[3].startswith("| hrlaif | 0.600 |")
        and "0.100 -> 0.900" in lines[3]
        and lines[3].endswith("| 100 | 0.2500 | 1 |")
    )


def _eval(out: Path, base: str, *overrides: str, in_process: bool = False) -> dict:
    """`hrlaif eval` with these overrides: the console script in a child process, or its `main` in this one (on the
    worker's Ray cluster: the same run without a second Python start and Ray cluster)."""
    args = ["eval", f"output_dir={out}", "backend=hf", "max_new_tokens=24", f"judge.judges=[{{base_url: '{base}'}}]"]
    if in_process:
        from cluster.cli import main

        assert main([*args, *overrides]) == 0
    else:
        proc = run_hrlaif(*args, *overrides, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "eval.json").read_text())


def test_eval_on_the_mix_and_public_sets(tmp_path, tiny_model_dir, data_dir, local_ray):
    mix = "mix={n: 24, seed: 5, math: 0.4, multiple_choice: 0.3, harmful: 0.3, open_qa: 0.0}"
    # The judge's answer key: which questions are harmful (the simulated judge flags a non-refusal to those).
    key = [r for name in ("strongreject", "toxigen") for r in load_source(name, data_dir)]
    key += generate_prompt_mix(PromptMixConfig(n=24, seed=5, math=0.4, multiple_choice=0.3, harmful=0.3, open_qa=0.0))
    write_records(tmp_path / "key.parquet", key, "prompts")
    with sim_judge_server(["latency_ms=0", f"answer_key={tmp_path / 'key.parquet'}"]) as base:
        first = _eval(
            tmp_path / "a",
            base,
            f"policy={tiny_model_dir}",
            mix,
            "sampled=2",
            f"data_dir={data_dir}",
            "sources={gsm8k/test: 3, humaneval: 2, strongreject: 4, toxigen: 2}",
        )
        m = first["metrics"]
        assert first["prompts"] == {"mix": 24, "gsm8k/test": 3, "humaneval": 2, "strongreject": 4, "toxigen": 2}
        # A random-init model answers nothing right and refuses nothing: the judge flags every harmful answer.
        assert m["accuracy/gsm8k/test"] == 0.0 and m["accuracy/humaneval/code"] == 0.0 and m["accuracy/mix"] == 0.0
        assert (
            m["harmful_rate/strongreject"] == 1.0 and m["harmful_rate/toxigen"] == 1.0 and m["harmful_rate/mix"] == 1.0
        )
        assert m["sampled_accuracy/mix"] == 0.0 and 0 < m["length/mix"] <= 24
        rows = read_jsonl(tmp_path / "a" / "responses.jsonl")
        assert len(rows) == 35 and {r["set"] for r in rows} == {
            "mix",
            "gsm8k/test",
            "humaneval",
            "strongreject",
            "toxigen",
        }
        harmful_in_mix = sum(r["category"] == "harmful" for r in rows if r["set"] == "mix")
        assert first["judge"]["requests"] == 4 + 2 + harmful_in_mix and first["judge"]["failed"] == 0  # one flag each
        # The same policy against its own responses: every comparison is a tie both ways, a win rate of exactly 1/2.
        second = _eval(
            tmp_path / "b",
            base,
            f"policy={tiny_model_dir}",
            mix,
            "sampled=0",
            f"baseline={tmp_path / 'a'}",
            in_process=True,
        )
    assert second["metrics"]["win_rate/mix"] == pytest.approx(0.5)
    assert second["judge"]["requests"] == 2 * 24 + harmful_in_mix  # both orders of every comparison, and the flags
