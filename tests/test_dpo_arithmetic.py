"""DPO on hybrid labels of the arithmetic mix (slow): it learns the held-out label pairs and holds the tiny
policy's verified accuracy on a fixed held-out set (not below its SFT start beyond noise).

What the measure supports: two runs of this protocol, on two SFT policies, gave SFT 0.488 -> DPO 0.500 (the demo's
800-step policy) and SFT 0.535 -> DPO 0.516 (this fixture's 1000-step one; the same numbers, to the bit, before
and after the learners' restructuring): a difference of 3 and -5 prompts of 256, inside the noise of 256 prompts
(a 95% interval of about +-0.06 on each accuracy). DPO does not add arithmetic the policy lacks (docs/dpo.md, and
the demo's fourth arm: not above SFT on greedy accuracy), so the test asserts what holds: the label pairs learned,
and the accuracy within 10 prompts of 256 of the start. It asked for DPO above SFT until the second run.

The protocol, fixed before the run: the SFT fixture's policy samples K = 4 responses (vLLM, temperature 1, what
the pipeline labels) to 1,200 training prompts of the arithmetic mix (math 65%, multiple choice 35%, split
'train'); the real hybrid path labels them (verifier first, then the simulated length-biased judge inside each
set, within-set pairs at weight 0.2); `hrlaif dpo` trains with the settings chosen on the development split
(docs/dpo.md: beta 0.5, lr 1e-4, 2 epochs, SFT term weight 1). The measure: greedy verified accuracy on a fixed
set of 256 prompts of the evaluation split (seed 20002: half reserved problems no stage trained on, half new
prompts on seen problems), SFT policy against DPO policy, both with transformers' generate.
"""

import json

import pytest
import torch
from conftest import run_hrlaif

from hrlaif_ray.config import PromptMixConfig
from hrlaif_ray.data.prompt_mix import generate_prompt_mix
from hrlaif_ray.data.schemas import write_records

K = 4
DPO = {
    "beta": 0.5,
    "learner": {"lr": 1e-4},
    "epochs": 2,
    "batch_prompts": 16,
    "micro_batch_prompts": 8,
    "sft_weight": 1.0,
}
EVAL = PromptMixConfig(
    n=256, seed=20_002, math=0.6, multiple_choice=0.4, harmful=0.0, open_qa=0.0, split="eval", unseen_share=0.5
)


def _greedy_accuracy(folder) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hrlaif_ray.evaluation import hf_generate, verified_accuracy

    torch.set_num_threads(2)
    prompts = generate_prompt_mix(EVAL)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    texts = hf_generate(model, AutoTokenizer.from_pretrained(folder), [p.text for p in prompts], max_new_tokens=64)
    return verified_accuracy(prompts, texts)["all"]


@pytest.mark.slow
def test_dpo_on_hybrid_arithmetic_labels_learns_the_pairs_and_holds_its_sft_start(tmp_path, sft_policy_dir):
    prompts = generate_prompt_mix(
        PromptMixConfig(n=1200, seed=11, math=0.65, multiple_choice=0.35, harmful=0.0, open_qa=0.0)
    )
    write_records(tmp_path / "prompts.parquet", prompts)
    rollout = {"samples_per_prompt": K, "max_new_tokens": 64, "max_model_len": 256, "kv_cache_gib": 0.5}
    (tmp_path / "sample.json").write_text(
        json.dumps(
            {
                "policy": str(sft_policy_dir),
                "prompts": str(tmp_path / "prompts.parquet"),
                "output": str(tmp_path / "rollouts.parquet"),
                "rollout": rollout,
            }
        )
    )
    proc = run_hrlaif("sample", "--config", str(tmp_path / "sample.json"), timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    from hrlaif_ray.judges.launch import sim_judge_server

    with sim_judge_server(["latency_ms=0", f"answer_key={tmp_path / 'prompts.parquet'}"]) as base:
        judge = {"base_url": base, "model": "gpt-3.5-turbo"}
        (tmp_path / "label.json").write_text(
            json.dumps(
                {
                    "prompts": str(tmp_path / "prompts.parquet"),
                    "rollouts": str(tmp_path / "rollouts.parquet"),
                    "output_dir": str(tmp_path / "labels"),
                    "labeling": {"method": "hybrid", "judges": [judge], "within_set_weight": 0.2},
                    "pool": {"labelers": 1, "concurrency": 32},
                }
            )
        )
        proc = run_hrlaif("label", "--config", str(tmp_path / "label.json"), "--no-progress", timeout=1200)
        assert proc.returncode == 0, proc.stderr[-4000:]
    (tmp_path / "dpo.json").write_text(
        json.dumps(
            {
                "policy": str(sft_policy_dir),
                "labels_dir": str(tmp_path / "labels"),
                "prompts": str(tmp_path / "prompts.parquet"),
                "output_dir": str(tmp_path / "dpo"),
                **DPO,
            }
        )
    )
    proc = run_hrlaif("dpo", "--config", str(tmp_path / "dpo.json"), timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    sft, dpo = _greedy_accuracy(sft_policy_dir), _greedy_accuracy(tmp_path / "dpo" / "policy")
    history = json.loads((tmp_path / "dpo" / "final.json").read_text())["history"]
    print(
        f"greedy verified accuracy on the fixed set: SFT {sft:.3f}, DPO {dpo:.3f}; held-out label pairs {history[-1]}"
    )
    assert history[-1]["eval/accuracy"] > 0.7 and history[-1]["eval/accuracy/math"] > 0.8  # measured 0.79 / 0.87
    assert dpo >= sft - 10 / 256, (sft, dpo)
