"""The memory planner: sizes from a model's config alone, model states as DeepSpeed's own estimators count them,
the paper's 13B plan on 8 x A100-40G passing, and a plan that cannot fit refused before anything starts, in one
line with the settings that would fit."""

from __future__ import annotations

from pathlib import Path

import pytest

from hrlaif_ray.config import LearnerConfig, PPOJob, load_config
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
    from hrlaif_ray.planner import check_run

    plans, warnings = check_run(
        load_config(RunJob, ROOT / "cluster/configs/demo.yaml", ["ppo.resources.host_memory_gib=64"])
    )
    assert set(plans) == {"sft", "rm", "ppo", "dpo"} and all(not p.problems() for p in plans.values()) and not warnings
    _, warnings = check_run(
        load_config(RunJob, ROOT / "cluster/configs/demo.yaml", ["ppo.resources.host_memory_gib=8"])
    )
    assert warnings and "parallel_arms=false" in warnings[0]  # each stage fits 8 GiB, four at once may not
