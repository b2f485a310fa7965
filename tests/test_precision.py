"""bf16 and ZeRO-3 for every role: weights and compute in bf16 with fp32 optimizer states, ZeRO-3 ranks that hold
1/world of the model from the moment they load it (the frozen reference too), and checkpoints gathered one
parameter at a time. bf16 on this CPU is slow but correct: these check correctness and memory, not speed."""

from __future__ import annotations

import json

import pytest
import ray
import torch
from conftest import ROOT, script_env

from hrlaif_ray.config import FrozenConfig, LearnerConfig, ResourcePlan, RoleResources


@pytest.fixture(scope="module")
def wide_model_dir(tmp_path_factory, tiny_tokenizer):
    """The tiny model with 256 x 1024 MLP matrices, over DeepSpeed's ZeRO-3 persistence threshold."""
    from hrlaif_ray.config import ModelConfig
    from hrlaif_ray.models import build_tiny_causal_lm, save_model_folder

    model = build_tiny_causal_lm(ModelConfig(hidden_size=256, intermediate_size=1024), tiny_tokenizer)
    return save_model_folder(model, tiny_tokenizer, tmp_path_factory.mktemp("wide") / "model")


def _batch(tok):
    from hrlaif_ray.data.chat import pad_token_id, prompt_token_ids
    from hrlaif_ray.ppo.experience import layout

    prompts = [prompt_token_ids(tok, f"Tom has {n} apples. How many?", 64) for n in (11, 23, 35, 47)]
    responses = [tok(f"The answer is {n}.", add_special_tokens=False)["input_ids"] for n in (11, 24, 35, 46)]
    return layout(prompts, responses, pad_token_id(tok))


def test_zero3_bf16_actor_and_reference_hold_their_partition_from_loading(local_ray, wide_model_dir, tmp_path):
    """Two actor ranks (bf16, ZeRO-3) and two reference ranks (a bf16 ZeRO-3 inference engine) beside them: each
    rank holds half the parameters as soon as it has loaded; the actor's optimizer states are fp32; the sharded
    reference's log-probs are those of the whole model in bf16; a step moves the weights; the checkpoint,
    gathered one parameter at a time, is the trained model in bf16."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from actors.learner import LearnerGroup
    from actors.runtime import actor_env
    from cluster.topology import Topology
    from hrlaif_ray.ppo import core
    from hrlaif_ray.ppo.experience import response_logits

    plan = ResourcePlan(
        actor=RoleResources(replicas=2, share=0.5),
        reference=RoleResources(replicas=2, share=0.5, colocate_with="actor"),
    )
    topo = Topology(plan, ("actor", "reference"))
    folder, tok = str(wide_model_dir), AutoTokenizer.from_pretrained(wide_model_dir)
    try:

        def options(role):
            return [{**o, "runtime_env": actor_env(1, 0)} for o in topo.options(role)]

        bf16 = LearnerConfig(lr=1e-2, zero_stage=3, precision="bf16", gradient_checkpointing=True)
        actor = LearnerGroup("actor", folder, options("actor"), learner=bf16, micro_batch=2, grad_accum=1)
        frozen = FrozenConfig(precision="bf16", zero_stage=3)
        reference = LearnerGroup("reference", folder, options("reference"), frozen=frozen, micro_batch=2)
        for memory in actor.memory() + reference.memory():
            assert (
                memory["loaded_share"] == pytest.approx(0.5, abs=0.01) and memory["weights_dtype"] == "torch.bfloat16"
            )
        batch = _batch(tok)
        ref = reference.logprobs(ray.put(batch), len(batch))
        whole = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).eval()
        with torch.no_grad():
            want = core.token_logprobs(response_logits(whole, batch), batch.input_ids[:, batch.prompt_width :])
        assert torch.allclose(ref, want * batch.response_mask, atol=2e-2), (
            (ref - want * batch.response_mask).abs().max()
        )
        before = {k: v.float() for k, v in ray.get(actor.weights_ref()).items()}
        train = batch.with_training(ref, torch.ones_like(ref) * batch.response_mask, torch.zeros_like(ref), None)
        actor.train_actor(
            ray.put(train), len(batch), epochs=1, mini_batches=1, clip=0.2, dual_clip=None, entropy_coef=0
        )
        after = ray.get(actor.weights_ref())
        assert all(m["optimizer_state_dtypes"] == ["torch.float32"] for m in actor.memory())  # Adam's, after a step
        assert set(after) == set(before) and all(v.dtype == torch.bfloat16 for v in after.values())
        moved = [k for k in before if not torch.equal(before[k], after[k].float())]
        assert len(moved) > len(before) // 2, moved
        actor.save(str(tmp_path / "actor"), folder)
        saved = AutoModelForCausalLM.from_pretrained(tmp_path / "actor", dtype=torch.bfloat16).state_dict()
        assert all(torch.equal(saved[k], after[k]) for k in saved)
    finally:
        topo.shutdown()


def test_a_bf16_critic_trains_with_fp32_optimizer_states(local_ray, tiny_model_dir):
    """The critic (a scalar-head model on the policy's body) in bf16 with its optimizer offloaded (ZeRO-2, the 13B
    plan's critic): bf16 weights and values, fp32 Adam states, and a value step that moves the weights."""
    from transformers import AutoTokenizer

    from actors.learner import LearnerGroup
    from actors.runtime import actor_env
    from cluster.topology import Topology

    topo = Topology(ResourcePlan(critic=RoleResources(replicas=1)), ("critic",))
    folder, tok = str(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)
    try:
        options = [{**o, "runtime_env": actor_env(1, 0)} for o in topo.options("critic")]
        learner = LearnerConfig(lr=1e-2, zero_stage=2, precision="bf16", offload={"optimizer": "cpu"})
        critic = LearnerGroup("critic", folder, options, learner=learner, micro_batch=2, grad_accum=2)
        (memory,) = critic.memory()
        assert memory["weights_dtype"] == "torch.bfloat16"
        batch = _batch(tok)
        values = critic.values(ray.put(batch), len(batch))
        assert values.shape == batch.response_mask.shape and torch.isfinite(values).all()
        before = {k: v.float() for k, v in ray.get(critic.weights_ref()).items()}
        returns = torch.ones_like(values) * batch.response_mask
        train = batch.with_training(torch.zeros_like(values), torch.zeros_like(values), returns, values)
        stats = critic.train_critic(ray.put(train), len(batch), epochs=1, mini_batches=1, value_clip=None)
        assert torch.isfinite(torch.tensor(list(stats.values()))).all(), stats
        after = ray.get(critic.weights_ref())
        assert all(v.dtype == torch.bfloat16 for v in after.values())
        assert sum(not torch.equal(before[k], after[k].float()) for k in before) > len(before) // 2
        assert critic.memory()[0]["optimizer_state_dtypes"] == ["torch.float32"]
    finally:
        topo.shutdown()


def test_sft_and_the_reward_model_train_in_bf16(tmp_path, wide_model_dir):
    """SFT and reward-model training with `learner.precision: bf16` (SFT with the optimizer offloaded and gradient
    checkpointing, the 13B plan's settings): the weights move, the saved models are bf16 and the optimizer states
    fp32; the RM's scores (its loss, its normalisation) stay finite."""
    import subprocess

    from labeling_fixtures import write_harm_and_math_labels
    from safetensors.torch import load_file

    out = tmp_path / "sft"
    sft = [str(ROOT / ".venv/bin/hrlaif"), "sft", f"init={wide_model_dir}", f"output_dir={out}", "steps=3"]
    sft += ["batch_size=8", "warmup_steps=1", "eval_prompts=0", "prompts.n=100", "learner.precision=bf16"]
    sft += ["learner.zero_stage=2", "learner.offload.optimizer=cpu", "learner.gradient_checkpointing=true"]
    proc = subprocess.run(
        sft, env=script_env(tmp_path, OMP_NUM_THREADS="2"), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    weights = load_file(out / "model.safetensors")
    start = load_file(wide_model_dir / "model.safetensors")
    assert all(v.dtype == torch.bfloat16 for v in weights.values())
    assert (
        sum(not torch.equal(weights[k].float(), start[k].to(torch.bfloat16).float()) for k in weights)
        > len(weights) // 2
    )
    sft_metrics = json.loads((out / "sft_metrics.json").read_text())
    assert sft_metrics["weights_dtype"] == "torch.bfloat16"
    assert sft_metrics["optimizer_state_dtypes"] == ["torch.float32"]  # Adam's moments, on the host
    write_harm_and_math_labels(tmp_path)
    rm = {
        "init": str(out),
        "labels_dir": str(tmp_path / "labels"),
        "prompts": str(tmp_path / "prompts.parquet"),
        "output_dir": str(tmp_path / "rm"),
        "epochs": 1,
        "batch_prompts": 16,
        "learner": {"lr": 1e-3, "precision": "bf16", "zero_stage": 0},
    }
    (tmp_path / "rm.json").write_text(json.dumps(rm))
    cmd = [str(ROOT / ".venv/bin/hrlaif"), "train-rm", "--config", str(tmp_path / "rm.json")]
    proc = subprocess.run(
        cmd, env=script_env(tmp_path, OMP_NUM_THREADS="2"), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "rm" / "metrics.json").read_text())
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in metrics["history"]) and metrics["std"] > 0
    head = load_file(tmp_path / "rm" / "scalar_head.safetensors")
    assert all(v.dtype == torch.bfloat16 for v in head.values())
    assert metrics["weights_dtype"] == "torch.bfloat16" and metrics["optimizer_state_dtypes"] == ["torch.float32"]
    backbone = load_file(tmp_path / "rm" / "model.safetensors")  # the SFT policy's body, trained on the labels
    shared = [k for k in backbone if f"model.{k}" in weights]
    assert len(shared) > 10 and all(backbone[k].dtype == torch.bfloat16 for k in shared)
    assert sum(not torch.equal(backbone[k], weights[f"model.{k}"]) for k in shared) > len(shared) // 2
