"""LoRA through PEFT: our merge equals PEFT's, the adapters off are the base, adapter folders (and their merged
folders) load back as the same model, scalar-head models with adapters save and load; on Ray, an actor with
adapters trains only them (its base byte-identical), is its own reference, and a sync moves only the adapters into
a vLLM engine that serves them (its log-probs then match the learner's), or merged weights into one that does
not."""

import json

import pytest
import torch

from hrlaif_ray.config import LearnerConfig, LoRAConfig

LORA = LoRAConfig(r=4, alpha=8)


def _noisy(model) -> None:
    """Adapters that change the model (PEFT starts B at zero: the adapted model equals its base)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_merge_adapters_off_and_adapter_folders_agree_with_peft(tmp_path, tiny_model_dir, tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    from hrlaif_ray.config.base import model_folder_problem
    from hrlaif_ray.lora import (
        MERGED,
        adapter_parameters,
        adapters_off,
        gathered_merged_state,
        load_causal_lm,
        model_folders,
        save_adapter_folder,
        trained_state,
        with_adapters,
    )

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    ids = torch.tensor([tiny_tokenizer("Tom has 23 apples and buys 4 more.")["input_ids"]])
    plain = _logits(base, ids)
    peft = with_adapters(base, LORA).eval()
    trained = [n for n, p in peft.named_parameters() if p.requires_grad]
    assert trained and all("lora_" in n for n in trained)  # the base is frozen
    _noisy(peft)
    adapted = _logits(peft, ids)
    assert (adapted - plain).abs().max() > 1e-2
    with adapters_off(peft):
        assert torch.equal(_logits(peft, ids), plain)  # the reference: the base, exactly
    ours = gathered_merged_state(peft, rank=0, zero3=False)
    state = trained_state(peft, rank=0, zero3=False)
    assert set(state) == {n for n, _ in peft.named_parameters() if "lora_" in n}
    assert {n for n, _ in adapter_parameters(peft)} == {n.replace(".default", "") for n in state}

    folder = save_adapter_folder(peft, tmp_path / "adapter", tiny_tokenizer, state, ours)
    assert model_folders(folder) == (str(tiny_model_dir), str(folder))
    assert model_folder_problem(str(folder)) is None and model_folder_problem(str(folder / MERGED)) is None
    assert torch.allclose(_logits(load_causal_lm(folder), ids), adapted, atol=1e-5)
    assert torch.allclose(_logits(AutoModelForCausalLM.from_pretrained(folder / MERGED), ids), adapted, atol=1e-5)
    theirs = peft.merge_and_unload().state_dict()  # PEFT's own merge (in place: last)
    assert set(ours) == set(theirs)
    assert max((ours[k] - theirs[k]).abs().max().item() for k in ours) < 1e-6

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tmp_path / "nowhere")}))
    assert "not a model folder" in model_folder_problem(str(broken))


def test_a_reward_model_with_adapters_trains_its_head_and_adapters_and_loads_back(tmp_path, tiny_model_dir):
    from hrlaif_ray.lora import MERGED, gathered_merged_state, is_adapter_folder, trained_state
    from hrlaif_ray.reward.model import RewardModel

    rm = RewardModel.from_pretrained(tiny_model_dir, lora=LORA).eval()
    trained = {n for n, p in rm.named_parameters() if p.requires_grad}
    assert trained == {n for n, _ in rm.named_parameters() if "lora_" in n or n.startswith("head.")}
    _noisy(rm)
    rm.mean, rm.std = 0.5, 2.0
    ids = torch.tensor([[5, 6, 7, 8, 9], [5, 9, 9, 8, 7]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        scores = rm(ids, mask)
    state = trained_state(rm, rank=0, zero3=False)
    merged = gathered_merged_state(rm.backbone, rank=0, zero3=False)
    folder = rm.save_pretrained(tmp_path / "rm", state_dict=state, merged=merged)
    assert is_adapter_folder(folder)
    for saved in (folder, folder / MERGED):
        again = RewardModel.from_pretrained(saved).eval()
        assert (again.mean, again.std) == (0.5, 2.0)
        with torch.no_grad():
            assert torch.allclose(again(ids, mask), scores, atol=1e-5)


@pytest.mark.parametrize("rank,served", [(4, 8), (8, 8), (64, 64), (600, None)])
def test_the_engine_serves_the_smallest_vllm_rank_that_holds_the_adapter(rank, served):
    from actors.rollout import vllm_lora_rank

    assert vllm_lora_rank(rank) == served


def test_an_actor_with_adapters_syncs_only_them_keeps_its_base_and_is_its_own_reference(local_ray, tiny_model_dir):
    import ray
    from transformers import AutoTokenizer

    from actors.learner import LearnerGroup
    from actors.rollout import RolloutActor, RolloutGroup
    from actors.runtime import actor_env
    from actors.weight_sync import BroadcastSync, ObjectStoreSync
    from cluster.topology import Topology
    from hrlaif_ray.config import ResourcePlan, RoleResources, SyncConfig
    from hrlaif_ray.data.chat import pad_token_id, prompt_token_ids
    from hrlaif_ray.ppo.experience import layout, pad_rows

    folder = str(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(folder)
    lora = LoRAConfig(r=8, alpha=16)
    plan = ResourcePlan(actor=RoleResources(replicas=2, share=0.5), rollout=RoleResources(replicas=2, threads=1))
    topo = Topology(plan, ("actor", "rollout"))
    try:
        actor = LearnerGroup(
            "actor",
            folder,
            [{**o, "runtime_env": actor_env(1, 0)} for o in topo.options("actor")],
            learner=LearnerConfig(lr=3e-2, zero_stage=3, lora=lora),
            micro_batch=4,
            grad_accum=1,
            threads=1,
            temperature=1.0,
        )
        options = topo.options("rollout")
        env = actor_env(1, vllm=True, cache_dir=str(local_ray))
        serving = RolloutActor.options(**options[0], runtime_env=env).remote(folder, "vllm", 0, 1, 128, 0.25, 0.4, lora)
        plain = RolloutActor.options(**options[1], runtime_env=env).remote(folder, "vllm", 0, 1, 128, 0.25, 0.4)
        rollout, merged_rollout = RolloutGroup([serving], timeout_s=180), RolloutGroup([plain], timeout_s=180)
        assert rollout.takes() == [("adapter", None)]
        sync = BroadcastSync(SyncConfig(), actor, rollout, timeout_s=180, restarts=0)
        prompts = [prompt_token_ids(tok, t, 48) for t in ["Tom has 23 apples and buys 4 more.", "Hi there"]]
        pad = pad_token_id(tok)

        def batch_of(group, seed):
            samples = group.generate(prompts, n=2, max_tokens=8, temperature=1.0, top_p=1.0, seed=seed)
            return samples, layout([prompts[s.prompt_index] for s in samples], [s.token_ids for s in samples], pad)

        def mismatch(group) -> float:
            samples, batch = batch_of(group, 0)
            learner = actor.logprobs(ray.put(batch), len(samples))
            return (learner - pad_rows([s.logprobs for s in samples], learner.size(1))).abs().max().item()

        def weights() -> dict:
            states = ray.get([r.full_state_dict.remote() for r in actor.ranks])  # ZeRO-3: every rank gathers
            return states[0]

        before = weights()
        _, batch = batch_of(rollout, 1)
        ref = ray.put(batch)
        reference = actor.logprobs(ref, len(batch), base=True)
        old = actor.logprobs(ref, len(batch))
        assert torch.equal(reference, old)  # fresh adapters (B = 0) change nothing yet
        train = batch.with_training(old, torch.randn(len(batch), old.size(1)) * batch.response_mask, old * 0, None)
        for _ in range(2):
            actor.train_actor(
                ray.put(train), len(batch), epochs=1, mini_batches=1, clip=0.2, dual_clip=None, entropy_coef=0.0
            )
        after = weights()
        base = [k for k in before if "lora_" not in k]
        lora_keys = [k for k in before if "lora_" in k]
        assert base and lora_keys
        assert all(torch.equal(before[k], after[k]) for k in base)  # the base: byte-identical
        assert all(not torch.equal(before[k], after[k]) for k in lora_keys if "lora_B" in k)  # the adapters moved
        assert torch.allclose(actor.logprobs(ref, len(batch), base=True), reference, atol=1e-6)  # still the base
        stale = mismatch(rollout)
        assert stale > 1e-2, f"the update did not move the policy enough to test the sync ({stale})"

        result = sync.sync()
        adapter_bytes = sum(v.numel() * v.element_size() for k, v in after.items() if "lora_" in k)
        unique = {id(v): v for k, v in after.items() if "lora_" not in k}.values()  # a tied weight once
        whole = sum(v.numel() * v.element_size() for v in unique)
        synced = mismatch(rollout)
        print(
            f"LoRA sync: {result.bytes} bytes ({result.bytes / whole:.1%} of the base's {whole}); "
            f"stale {stale:.2e}, after {synced:.2e}; checked {result.checked}"
        )
        assert result.bytes == adapter_bytes and result.checked == len(lora_keys) and synced < 1e-3
        stored = ObjectStoreSync(actor, rollout).sync()  # the same adapters through the object store
        assert stored.bytes == adapter_bytes and mismatch(rollout) < 1e-3

        # An engine without adapters takes the merged weights.
        actor.sync_mode("merged")
        merged = ObjectStoreSync(actor, merged_rollout).sync()
        assert merged.bytes == whole and mismatch(merged_rollout) < 1e-3
    finally:
        topo.shutdown()


@pytest.mark.slow
def test_sft_with_adapters_trains_them_and_saves_an_adapter_folder_and_its_merged_model(tmp_path, tiny_model_dir):
    import subprocess

    from conftest import ROOT, script_env
    from transformers import AutoModelForCausalLM

    from hrlaif_ray.lora import MERGED, is_adapter_folder, load_causal_lm

    out = tmp_path / "sft"
    proc = subprocess.run(
        [str(ROOT / ".venv/bin/hrlaif"), "sft", "--init", str(tiny_model_dir), "--out", str(out)]
        + ["steps=12", "batch_size=16", "warmup_steps=2", "eval_prompts=4", "prompts.n=300", "learner.lr=1e-2"]
        + ["learner.zero_stage=3", "learner.lora.r=8", "learner.lora.save_merged=true"],
        env=script_env(tmp_path, OMP_NUM_THREADS="2"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "sft_metrics.json").read_text())
    assert metrics["final_loss"] < metrics["first_loss"] and "greedy_accuracy" in metrics
    assert is_adapter_folder(out) and not (out / "model.safetensors").exists()
    init = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    peft = load_causal_lm(out, merge=False)
    base = {k.removeprefix("base_model.model.").replace(".base_layer", ""): v for k, v in peft.state_dict().items()}
    assert all(torch.equal(init[k], base[k]) for k in init)  # the base as it was
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    adapted = _logits(load_causal_lm(out), ids)
    assert (adapted - _logits(AutoModelForCausalLM.from_pretrained(tiny_model_dir), ids)).abs().max() > 1e-3
    assert torch.allclose(_logits(AutoModelForCausalLM.from_pretrained(out / MERGED), ids), adapted, atol=1e-5)


def test_train_rm_with_adapters_ranks_held_out_pairs_and_exports_the_merged_model(tmp_path, tiny_model_dir):
    import subprocess

    from conftest import ROOT, script_env
    from labeling_fixtures import write_harm_and_math_labels
    from test_reward_train import _config, _loads_as_sequence_classification, _prefers_refusal

    from hrlaif_ray.lora import is_adapter_folder
    from hrlaif_ray.reward import RewardModel

    write_harm_and_math_labels(tmp_path)
    config = _config(tmp_path, tiny_model_dir, epochs=2, learner={"lr": 1e-2, "lora": {"r": 8}})
    proc = subprocess.run(
        [str(ROOT / ".venv/bin/hrlaif"), "train-rm", "--config", str(config)],
        env=script_env(tmp_path, OMP_NUM_THREADS="2"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    history = json.loads((tmp_path / "rm" / "metrics.json").read_text())["history"]
    print(json.dumps(history))
    assert history[-1]["loss"] < history[0]["loss"] and history[-1]["eval_accuracy"]["harmful"] >= 0.9
    assert is_adapter_folder(tmp_path / "rm") and _prefers_refusal(tmp_path / "rm")
    rm = RewardModel.from_pretrained(tmp_path / "rm").eval()
    _loads_as_sequence_classification(tmp_path / "rm" / "sequence-classification", rm)


def test_dpo_with_adapters_learns_the_labels_with_its_base_as_the_reference(local_ray, tmp_path, tiny_model_dir):
    from labeling_fixtures import write_harm_and_math_labels

    from cluster.dpo import run_dpo
    from hrlaif_ray.config import DPOJob
    from hrlaif_ray.lora import is_adapter_folder

    write_harm_and_math_labels(tmp_path)
    final = run_dpo(
        DPOJob.model_validate(
            {
                "policy": str(tiny_model_dir),
                "labels_dir": str(tmp_path / "labels"),
                "prompts": str(tmp_path / "prompts.parquet"),
                "output_dir": str(tmp_path / "dpo"),
                "epochs": 2,
                "batch_prompts": 16,
                "micro_batch_prompts": 8,
                "beta": 0.5,
                "learner": {"lr": 1e-2, "lora": {"r": 8}},
                "eval_fraction": 0.25,
                "resources": {"actor": {"replicas": 2}},
                "logging": {"tensorboard": False},
            }
        )
    )
    history = final["history"]
    print(json.dumps(history[-1], indent=1))
    assert history[-1]["eval/accuracy/harmful"] >= 0.9 and history[-1]["eval/loss"] < 0.6931
    assert is_adapter_folder(final["policy"])


@pytest.mark.slow
def test_eval_and_serve_rm_take_an_adapter_folder_as_its_merged_model(
    tmp_path, short_tmp, tiny_model_dir, tiny_tokenizer, local_ray
):
    """`hrlaif eval` (vLLM) answers the same from an adapter folder as from its merged folder, and `hrlaif serve-rm`
    serves an RM saved as adapters with the scores of its merged folder."""
    import httpx
    from conftest import served_rm
    from test_eval import _eval
    from transformers import AutoModelForCausalLM

    from hrlaif_ray.judges.launch import sim_judge_server
    from hrlaif_ray.lora import MERGED, gathered_merged_state, save_adapter_folder, trained_state, with_adapters
    from hrlaif_ray.metrics import read_jsonl
    from hrlaif_ray.reward.model import RewardModel

    peft = with_adapters(AutoModelForCausalLM.from_pretrained(tiny_model_dir), LORA)
    _noisy(peft)
    policy = save_adapter_folder(
        peft, tmp_path / "policy", tiny_tokenizer, trained_state(peft, 0, False), gathered_merged_state(peft, 0, False)
    )
    mix = "mix={n: 6, seed: 3, math: 1.0, multiple_choice: 0.0, harmful: 0.0, open_qa: 0.0}"
    texts = {}
    with sim_judge_server(["latency_ms=0"]) as base:
        for name, folder in (("adapter", policy), ("merged", policy / MERGED)):
            _eval(tmp_path / name, base, f"policy={folder}", mix, "sampled=0", "backend=vllm", in_process=True)
            texts[name] = [r["response"] for r in read_jsonl(tmp_path / name / "responses.jsonl")]
    assert len(texts["adapter"]) == 6 and texts["adapter"] == texts["merged"]

    rm = RewardModel.from_pretrained(tiny_model_dir, lora=LORA)
    _noisy(rm)
    rm_folder = rm.save_pretrained(
        tmp_path / "rm",
        tokenizer=tiny_tokenizer,
        state_dict=trained_state(rm, 0, False),
        merged=gathered_merged_state(rm.backbone, 0, False),
    )
    with served_rm(rm_folder, short_tmp) as (url, auth):
        seqs = [[5, 6, 7, 8], [9, 10, 11]]
        got = httpx.post(f"{url}/score", json={"sequences": seqs}, headers=auth, timeout=60).json()
        merged = RewardModel.from_pretrained(rm_folder / MERGED).eval()
        with torch.no_grad():
            want = [merged(torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long))[0].item() for s in seqs]
        assert got["rewards"] == pytest.approx(want, abs=1e-4)
