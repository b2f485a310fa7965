"""The memory planner: sizes from a model's config alone, model states as DeepSpeed's own estimators count them,
the paper's 13B plan on 8 x A100-40G passing, and a plan that cannot fit refused before anything starts, in one
line with the settings that would fit."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from hrlaif_ray.config import LearnerConfig, LoRAConfig, PPOJob, load_config
from hrlaif_ray.planner import GPU_USABLE, GiB, ModelShape, Plan, model_states, plan_ppo

ROOT = Path(__file__).resolve().parents[1]
SHAPE = str(ROOT / "cluster/configs/shapes/llama2-13b")
PLAN_13B = [f"policy={SHAPE}", f"critic_init={SHAPE}", f"reward.rm={SHAPE}"]


def test_a_models_size_comes_from_its_config_alone():
    """Llama-2-13B's published parameter count, and the largest layer ZeRO-3 gathers (its embedding), from the
    config file only (meta device: no weights)."""
    lm = ModelShape.of_folder(SHAPE, "policy")
    assert lm.params == 13_015_864_320 and lm.largest_layer == 32_000 * 5_120 and lm.vocab == 32_000
    rm = ModelShape.of_folder(SHAPE, "reward.rm", scalar_head=True)  # the backbone and a scalar head
    assert rm.params == lm.params - 32_000 * 5_120 + 5_120 + 1 and rm.vocab == 0
    with pytest.raises(ValueError, match=r"policy: '/nope' is not a model folder"):
        ModelShape.of_folder("/nope", "policy")


@pytest.mark.parametrize("ranks", [1, 4, 8])
@pytest.mark.parametrize("stage, offload", [(2, "none"), (2, "cpu"), (3, "none"), (3, "cpu"), (3, "params")])
def test_bf16_model_states_as_deepspeeds_estimators_count_them(stage, offload, ranks):
    """Within 10% of DeepSpeed's estimate (its buffer factor 1: it multiplies host memory by 1.5 as a margin) on
    the accelerator and on the host, for ZeRO-2 and -3, with and without offload."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    shape = ModelShape.of_folder(SHAPE, "policy")
    P, L = shape.params, shape.largest_layer
    learner = LearnerConfig(
        precision="bf16",
        zero_stage=stage,
        offload={
            "optimizer": "cpu" if offload != "none" else "none",
            "params": "cpu" if offload == "params" else "none",
        },
    )
    mem = model_states(shape, learner, ranks, stage)
    ours_device = mem.weights + mem.gradients + mem.optimizer + (4 * L if stage == 3 else 0)
    if stage == 2:
        host, device = estimate_zero2_model_states_mem_needs(
            P, num_gpus_per_node=ranks, cpu_offload=offload != "none", additional_buffer_factor=1
        )
    else:
        host, device, _ = estimate_zero3_model_states_mem_needs(
            P,
            L,
            num_gpus_per_node=ranks,
            cpu_offload=offload != "none",
            cpu_offload_params=offload == "params",
            zero_init=True,
            additional_buffer_factor=1,
        )
    assert ours_device == pytest.approx(device, rel=0.10)
    # DeepSpeed's host figure is the larger of the offloaded states and every rank's cold load in fp32 (ZeRO-2: 4
    # bytes a parameter on each rank); the planner counts the load in the dtype the model loads in (2 bytes here),
    # so the two agree where the states are the larger, and the planner's load is half DeepSpeed's otherwise.
    ours_peak = max(mem.host, mem.loading) * ranks
    if offload != "none" and not (stage == 2 and 4 * ranks > 16):
        assert ours_peak == pytest.approx(host, rel=0.10)
    elif offload != "none":
        assert ours_peak == pytest.approx(host / 2, rel=0.10)


def test_fp32_model_states_by_hand():
    """fp32 without ZeRO: 4 + 4 + 8 bytes a parameter; ZeRO-2 over 4 ranks: the weights whole, a quarter of the
    gradients, of ZeRO's fp32 partition and of Adam's moments."""
    shape = ModelShape(
        params=1_000_000, largest_layer=1, hidden=1, layers=1, heads=1, kv_width=1, intermediate=1, vocab=1
    )
    zero0 = model_states(shape, LearnerConfig(zero_stage=0, precision="fp32"), 1, 0)
    assert (zero0.weights, zero0.gradients, zero0.optimizer, zero0.buffers) == (4_000_000, 4_000_000, 8_000_000, 0)
    zero2 = model_states(shape, LearnerConfig(zero_stage=2, precision="fp32"), 4, 2)
    assert (zero2.weights, zero2.gradients, zero2.optimizer) == (4_000_000, 1_000_000, 3_000_000)


SMALL = ModelShape(
    params=1_000_000, largest_layer=10_000, hidden=64, layers=4, heads=4, kv_width=32, intermediate=256, vocab=1000
)


def test_activations_by_hand():
    """2 rows of 10 tokens, logits at 5 positions: per token and layer 8h + 3kv + 4i = 1632 elements; the logits
    in the compute dtype, fp32 and (training) the softmax's gradient; checkpointing keeps every layer's input and
    one layer's whole; a frozen role one layer; on a CPU one layer's attention scores; bf16 counted at 1.5x."""
    from hrlaif_ray.planner import BF16_ACTIVATIONS, activations

    layer, logits = 20 * 1632 * 4, 2 * 5 * 1000 * (4 + 4 + 4)
    assert activations(SMALL, "fp32", 2, 10, 5, True, False, False) == 4 * layer + logits == 642_240
    assert activations(SMALL, "fp32", 2, 10, 5, True, True, False) == 20 * 64 * 4 * 4 + layer + logits
    assert activations(SMALL, "fp32", 2, 10, 5, False, False, False) == layer + 2 * 5 * 1000 * (4 + 4)
    scores = 4 * 10 * 2 * 10 * 4  # heads x seq x rows x seq, fp32
    assert activations(SMALL, "fp32", 2, 10, 5, True, False, True) == 4 * (layer + scores) + logits
    bf16 = 4 * 20 * 1632 * 2 + 2 * 5 * 1000 * (2 + 4 + 4)
    assert activations(SMALL, "bf16", 2, 10, 5, True, False, False) == int(bf16 * BF16_ACTIVATIONS)
    assert activations(SMALL, "fp32", 2, 10, 0, True, False, False) == 4 * layer  # a scalar head: no logits


def test_a_vllm_share_must_hold_its_weights_and_one_sequences_kv_cache():
    """On a GPU the engine reserves its share of the GPU, which must hold its bf16 weights and the KV cache of one
    whole sequence (keys and values, every layer): exactly enough fits, one parameter more does not."""
    from hrlaif_ray.config import RolloutConfig
    from hrlaif_ray.planner import engine_role

    rollout = RolloutConfig(max_model_len=4096, gpu_memory_utilization=0.5)
    gpu = 10 * GiB
    kv_one = 4096 * 2 * 4 * 32 * 2  # tokens x (k, v) x layers x kv width x bf16
    params = (int(0.5 * gpu) - kv_one) // 2
    fits = engine_role(replace(SMALL, params=params), rollout, 1, True, gpu)
    assert fits.problem is None and fits.memory.device == int(0.5 * gpu)
    over = engine_role(replace(SMALL, params=params + 1), rollout, 1, True, gpu)
    assert over.problem and "raise rollout.gpu_memory_utilization" in over.problem
    cpu = engine_role(SMALL, rollout, 1, False, None)  # fp32 weights and the configured KV cache
    assert cpu.memory.device == 4_000_000 + int(rollout.kv_cache_gib * GiB)


def test_colocated_roles_add_up_in_their_bundle():
    """The 13B plan's bundles: the actor and the reference share actor[i], the critic and the reward model share
    critic[i], each bundle's need the sum of its roles' per-rank memory."""
    plan = plan_ppo(_job())
    device = {r.role: r.memory.device for r in plan.roles}
    needed = {b.name: (b.roles, b.needed) for b in plan.bundles}
    assert needed["actor[0]"] == (["actor", "reference"], device["actor"] + device["reference"])
    assert needed["critic[1]"] == (["critic", "reward"], device["critic"] + device["reward"])
    assert needed["rollout[0]"] == (["rollout"], device["rollout"])


def _job(*overrides: str) -> PPOJob:
    return load_config(PPOJob, ROOT / "cluster/configs/13b-8xa100.yaml", [*PLAN_13B, *overrides])


def test_the_papers_13b_plan_fits_eight_a100_40g():
    plan: Plan = plan_ppo(_job())
    assert not plan.problems(), plan.table()
    usable = int(39.5 * GiB * GPU_USABLE)  # an A100-40G, as the config says, less the allocator's share
    assert len(plan.bundles) == 8 and all(b.capacity == usable for b in plan.bundles)
    tightest = max(b.needed for b in plan.bundles) / GiB
    assert 20 < tightest < 40  # a plan that uses its GPUs, not one that passes by counting nothing
    assert plan.host_needed < plan.host_capacity  # the offloaded optimizer states, in the node's 1 TB


def test_the_weight_syncs_memory_is_planned_where_it_is_held():
    """A broadcast holds a bucket on the actor's device and two beside each engine; the object store a whole copy
    on rank 0's host (26 GB for 13B in bf16)."""
    broadcast = {r.role: r for r in plan_ppo(_job("sync.method=broadcast", "sync.bucket_mb=512")).roles}
    stored = {r.role: r for r in plan_ppo(_job("sync.method=object_store")).roles}
    bucket = 512 * 2**20
    assert broadcast["actor"].memory.buffers - stored["actor"].memory.buffers == bucket
    assert broadcast["rollout"].memory.buffers - stored["rollout"].memory.buffers == 2 * bucket
    whole = stored["actor"].rank0_host - broadcast["actor"].rank0_host
    assert 25e9 < whole < 27e9  # 13B parameters in bf16


def test_a_plan_that_cannot_fit_is_refused_in_one_line_naming_what_would(tmp_path, capsys):
    """Without optimizer offload the actor's fp32 states do not fit a 40 GiB GPU: `hrlaif plan` and `hrlaif ppo`
    both refuse with exit status 2, naming the bundle, the bytes and the setting that would fit, and `hrlaif ppo`
    writes nothing and reserves nothing."""
    from cluster.cli import main

    config, out = str(ROOT / "cluster/configs/13b-8xa100.yaml"), tmp_path / "ppo"
    assert main(["plan", "ppo", "--config", config, *PLAN_13B, "actor.offload.optimizer=none"]) == 2
    line = capsys.readouterr().err.strip().splitlines()
    assert len(line) == 1 and "bundle actor[0] (actor, reference) needs" in line[0], line
    assert f"{39.5 * GPU_USABLE:.2f} GiB there" in line[0] and "fits with actor.offload.optimizer=cpu" in line[0]
    assert main(["ppo", "--config", config, *PLAN_13B, f"output_dir={out}", "rollout.gpu_memory_utilization=0.5"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "rollout: vLLM's share (0.5 x 39.50 GiB) holds less than its weights" in line, line
    assert not out.exists()


@pytest.mark.parametrize("key", ["gpu_memory_gib", "host_memory_gib"])
def test_a_gpu_plan_without_the_clusters_memory_is_refused_not_passed_unchecked(key, tmp_path, capsys):
    """The driver cannot see a GPU cluster's memory: a GPU job that leaves it unset is refused at once, in one line
    naming the key, by `hrlaif plan` and by `hrlaif ppo` (which writes nothing), never run unchecked."""
    from cluster.cli import main

    config, out = str(ROOT / "cluster/configs/13b-8xa100.yaml"), tmp_path / "ppo"
    plan = plan_ppo(_job(f"resources.{key}=null"))
    assert plan.unknown and plan.problems()[0].startswith(f"the plan cannot be checked: resources.{key} is not set")
    for command in (["plan", "ppo"], ["ppo"]):
        assert main([*command, "--config", config, *PLAN_13B, f"output_dir={out}", f"resources.{key}=null"]) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert f"resources.{key} is not set" in line and "set it in the job's config" in line, line
    assert not out.exists()


def test_a_cpu_plan_is_checked_against_the_hosts_memory(tiny_model_dir):
    """Without GPUs every role lives in host memory: the tiny model's plan fits this machine, and is refused against
    a 1 GiB host."""
    from hrlaif_ray.planner import PlanError, check

    local = [f"policy={tiny_model_dir}", f"output_dir={tiny_model_dir}/x"]
    job = load_config(PPOJob, ROOT / "cluster/configs/local-tiny.yaml", local)
    assert not plan_ppo(job).gpus and not plan_ppo(job).problems()
    small = load_config(PPOJob, ROOT / "cluster/configs/local-tiny.yaml", [*local, "resources.host_memory_gib=1"])
    with pytest.raises(PlanError, match=r"host memory: the plan needs .* GiB, 1.00 GiB there"):
        check(small, plan_ppo)


def test_every_stage_of_the_demo_is_planned_before_its_models_exist():
    from hrlaif_ray.config import RunJob
    from hrlaif_ray.run_plan import check_run

    plans, warnings = check_run(
        load_config(RunJob, ROOT / "cluster/configs/demo.yaml", ["ppo.resources.host_memory_gib=64"])
    )
    assert set(plans) == {"sft", "rm", "ppo"} and all(not p.problems() for p in plans.values()) and not warnings
    assert {r.role for r in plans["rm"].roles} == {"actor", "reference"}  # the implicit RM: a DPO run
    # PPO's reward role holds that implicit RM: two causal LMs (their weights twice the reference's one), each
    # forward in turn reading logits over the responses as the reference does; with only scalar RMs, one LM with a
    # scalar head and no logits
    role = {r.role: r.memory for r in plans["ppo"].roles}
    assert role["reward"].weights == 2 * role["reference"].weights
    assert role["reward"].activations == role["reference"].activations
    scalar, _ = check_run(
        load_config(RunJob, ROOT / "cluster/configs/demo.yaml", ["ppo.resources.host_memory_gib=64", "rm.kind=scalar"])
    )
    scalar_role = {r.role: r.memory for r in scalar["ppo"].roles}
    assert scalar_role["reward"].weights < role["reference"].weights
    assert scalar_role["reward"].activations < role["reward"].activations
    _, warnings = check_run(
        load_config(RunJob, ROOT / "cluster/configs/demo.yaml", ["ppo.resources.host_memory_gib=8"])
    )
    assert warnings and "parallel_arms=false" in warnings[0]  # each stage fits 8 GiB, five at once may not
    # the local Ray cluster holds every stage side by side: five RL stages of 4 one-CPU bundles, the online arms'
    # labeler pools (0.25 each), the SFT evaluation and probe samples (3); an explicit smaller one is warned of
    from hrlaif_ray.run_plan import run_slots

    assert run_slots(load_config(RunJob, ROOT / "cluster/configs/demo.yaml", []), plans) == 24
    _, warnings = check_run(
        load_config(RunJob, ROOT / "cluster/configs/demo.yaml", ["ppo.resources.host_memory_gib=64", "ray_num_cpus=16"])
    )
    assert len(warnings) == 1 and "may reserve 24 logical CPUs" in warnings[0]


SHAPE_7B = str(ROOT / "cluster/configs/shapes/llama2-7b")


def test_lora_adapters_are_sized_as_peft_builds_them_and_only_they_hold_gradients_and_adam():
    """The adapters' parameters from the config alone equal PEFT's own count on the meta-device model (all-linear
    and a list of modules); a LoRA actor's gradients and optimizer states are theirs, its weights the base's."""
    from accelerate import init_empty_weights
    from peft import get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    from hrlaif_ray.config import LoRAConfig
    from hrlaif_ray.lora import peft_config

    shape = ModelShape.of_folder(SHAPE_7B, "policy")
    for lora in (LoRAConfig(r=16), LoRAConfig(r=8, target_modules=["q_proj", "v_proj"])):
        with init_empty_weights():
            model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(SHAPE_7B))
        peft = get_peft_model(model, peft_config(lora))
        exact = sum(p.numel() for n, p in peft.named_parameters() if "lora_" in n)
        assert shape.adapter_params(lora) == exact
        assert replace(shape, linears=()).adapter_params(lora) == exact  # the widths' estimate, for a Llama
    lora = LoRAConfig(r=16)
    T = shape.adapter_params(lora)
    assert 39e6 < T < 41e6  # rank 16 on every linear layer of a 7B Llama: 40M, 0.6% of it
    mem = model_states(shape, LearnerConfig(precision="bf16", zero_stage=0, lora=lora), 1, 0)
    assert (mem.gradients, mem.optimizer) == (T * 2, T * 16)  # bf16 gradients; fp32 master, gradients and Adam
    assert mem.weights == (shape.params + T) * 2


def test_the_7b_lora_plan_fits_one_a100_80g_and_full_fine_tuning_does_not():
    """The shipped one-GPU LoRA plan: no reference is placed (the actor with its adapters off is the reference),
    the engine holds one adapter, the object-store sync moves the adapters only; the same job training every
    weight needs more than twice the GPU."""
    job = load_config(
        PPOJob, ROOT / "cluster/configs/7b-lora-1xa100.yaml", [f"policy={SHAPE_7B}", f"reward.rm={SHAPE_7B}"]
    )
    plan = plan_ppo(job)
    assert not plan.problems(), plan.table()
    roles = {r.role: r for r in plan.roles}
    assert set(roles) == {"actor", "reward", "rollout"} and len(plan.bundles) == 1
    adapters = ModelShape.of_folder(SHAPE_7B, "policy").adapter_params(job.actor.lora) * 2
    assert roles["actor"].rank0_host == adapters  # the object store's copy: the adapters, 80 MB
    merged = {
        r.role: r
        for r in plan_ppo(
            job.model_copy(update={"rollout": job.rollout.model_copy(update={"lora_weights": "merged"})})
        ).roles
    }
    assert merged["actor"].rank0_host > 100 * adapters and "adapter" not in merged["rollout"].what  # whole weights
    full = plan_ppo(job.model_copy(update={"actor": job.actor.model_copy(update={"lora": LoRAConfig()})}))
    assert "reference" in {r.role for r in full.roles} and full.bundles[0].needed > 2 * plan.bundles[0].needed
