"""The real stack loads our model folders: vLLM CPU generates, DeepSpeed ZeRO-2 steps on 2 gloo ranks."""

import json
import subprocess

import pytest
import torch
from conftest import PYTHON, SCRIPTS, script_env, torchrun
from transformers import AutoModelForCausalLM


def _run(cmd, env, timeout):
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd[:3]} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


@pytest.mark.slow  # make test keeps its kind: tests/test_ppo_ray.py's weight sync matches vLLM's log-probs to ours
def test_vllm_cpu_generates_from_our_folder_matching_hf(tmp_path, tiny_model_dir, tiny_tokenizer):
    out = tmp_path / "vllm.json"
    prompts = ["Tom has 23 apples and buys 4 more. How many apples now?", "Hi"]
    env = script_env(tmp_path, VLLM_ENABLE_V1_MULTIPROCESSING="0", VLLM_CPU_KVCACHE_SPACE="1", OMP_NUM_THREADS="2")
    _run([PYTHON, str(SCRIPTS / "vllm_generate.py"), str(tiny_model_dir), str(out), "6", *prompts], env, 600)
    rows = json.loads(out.read_text())
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    for prompt, row in zip(prompts, rows):
        assert row["prompt_token_ids"] == tiny_tokenizer(prompt)["input_ids"]
        assert len(row["token_ids"]) == 6
        # Teacher-force vLLM's tokens through HF: same log-probabilities, and each was HF's argmax (greedy).
        ids = torch.tensor([row["prompt_token_ids"] + row["token_ids"]])
        with torch.no_grad():
            logp = model(ids).logits[0, len(row["prompt_token_ids"]) - 1 : -1].log_softmax(-1)
        hf = logp.gather(1, torch.tensor(row["token_ids"]).unsqueeze(1)).squeeze(1)
        assert torch.allclose(hf, torch.tensor(row["logprobs"]), atol=1e-4), (hf, row["logprobs"])
        assert torch.all(logp.max(-1).values - hf < 1e-4)


# ZeRO-2 on 2 ranks also runs in make test's `ray job submit` test, ZeRO-3 on 2 gloo ranks in test_precision.py's
# actor and reference (Ray actors); both stages here are for make test-all. Under torchrun, stage 3 aborted a rank
# ("terminate called without an active exception", SIGABRT, no Python traceback) in 2 of 5 fresh-clone runs of
# make test, while the other module's Ray actors loaded both cores, and in none of 25 runs alone or beside one module.
@pytest.mark.parametrize("stage", [pytest.param(2, marks=pytest.mark.slow), pytest.param(3, marks=pytest.mark.slow)])
def test_deepspeed_zero_step_on_two_gloo_ranks(tmp_path, tiny_model_dir, stage):
    out = tmp_path / "zero.json"
    cmd = torchrun(
        str(SCRIPTS / "zero_step.py"),
        str(tiny_model_dir),
        str(out),
        str(stage),
        "4",
    )
    _run(cmd, script_env(tmp_path, OMP_NUM_THREADS="1"), 600)
    result = json.loads(out.read_text())
    assert result["world"] == 2 and result["backend"] == "gloo"
    assert result["checksums"][0] == result["checksums"][1]  # ranks agree after the update
    assert result["moved"] == result["n_params"]  # every parameter was updated
    assert result["losses"][-1] < result["losses"][0]  # 4 steps on a fixed batch lower its loss
