"""A pipeline run's pre-check (`hrlaif run`, `hrlaif plan run`): every trained stage planned before its models
exist, the arms side by side against the host they share, and the logical CPUs its local Ray cluster needs so that
no stage waits for another's placement groups."""

from __future__ import annotations

import math
import os
from dataclasses import replace

from hrlaif_ray.planner import ModelShape, Plan, check, gib, plan_dpo, plan_ppo, plan_rm, plan_sft


def run_stages(job) -> dict[str, tuple]:
    """A pipeline's trained stages as (their job, its planner), sized before their models exist: the policy is
    `init`'s, else the tiny model's from its config; the reward model and the critic start from the policy."""
    from hrlaif_ray.models.tiny import tiny_config

    if job.init:

        def shape_of(folder, key, scalar_head):
            return ModelShape.of_folder(job.init, "init", scalar_head)

    else:
        tok = job.model.tokenizer
        if tok.kind == "bpe":
            vocab = tok.vocab_size
        else:
            from transformers import AutoTokenizer

            vocab = len(AutoTokenizer.from_pretrained(tok.path))
        config = tiny_config(job.model.model, vocab)

        def shape_of(folder, key, scalar_head):
            return ModelShape.of(config, scalar_head)

    k = job.sample.rollout.samples_per_prompt  # the responses a label orders
    ppo, ppo_shape_of = {"reward.kind": "rm", "reward.rm": "-"}, shape_of
    if any(a.trainer == "ppo" and job.rm_kind(a) == "implicit" for a in job.arms):
        # PPO is sized for the larger kind: an implicit RM is two causal LMs of the policy's shape (DPO's and its
        # reference), and the critic then starts from the policy (PPOJob.critic_start)
        ppo["critic_init"] = "-"

        def ppo_shape_of(folder, key, scalar_head):
            if key == "reward.rm":
                shape = shape_of(folder, "policy", False)
                return replace(shape, params=2 * shape.params)
            return shape_of(folder, key, scalar_head)

    stages = {
        "sft": (job.stage_job("sft", init="-", output_dir="-"), lambda j: plan_sft(j, shape_of=shape_of)),
        "rm": (
            job.stage_job("rm", init="-", labels_dir="-", prompts="-", output_dir="-"),
            lambda j: plan_rm(j, shape_of=shape_of, responses=k),
        ),
        "ppo": (
            job.stage_job("ppo", policy="-", output_dir="-", prompts="-", **ppo),
            lambda j: plan_ppo(j, ppo_shape_of),
        ),
    }
    if any(a.trainer == "dpo" for a in job.arms):
        stages["dpo"] = (
            job.stage_job("dpo", policy="-", labels_dir="-", prompts="-", output_dir="-"),
            lambda j: plan_dpo(j, shape_of, responses=k),
        )
    return stages


def check_run(job) -> tuple[dict[str, Plan], list[str]]:
    """Every trained stage of a pipeline run checked before the run starts (a PlanError names the stage), and
    warnings: where an explicit `ray_num_cpus` is below what the stages side by side may reserve (`run_slots`), and
    where the arms' RL stages side by side (`parallel_arms`) may not fit the host they share: their peaks added up
    (an upper bound: the arms are seldom all in their peak phase at once)."""
    plans = {name: check(stage, planner, prefix=f"{name}.") for name, (stage, planner) in run_stages(job).items()}
    warnings = []
    slots = run_slots(job, plans)
    if job.ray_num_cpus is not None and job.ray_num_cpus < slots:
        warnings.append(
            f"ray_num_cpus={job.ray_num_cpus}: the stages side by side may reserve {slots} logical CPUs; a stage "
            "whose placement group waits longer than 120 s for them fails (ray_num_cpus: null sizes the cluster)"
        )
    if job.parallel_arms:
        trainers = [a.trainer for a in job.arms]
        together = sum(plans["dpo" if t == "dpo" else "ppo"].host_needed for t in trainers)
        capacity = plans["ppo"].host_capacity
        if capacity is not None and together > capacity:
            warnings.append(
                f"the {len(trainers)} arms side by side may need up to {gib(together)} of host memory, "
                f"{gib(capacity)} there; parallel_arms=false runs them in turn"
            )
    return plans, warnings


def run_slots(job, plans: dict[str, Plan]) -> int:
    """Logical CPUs a pipeline run's local Ray cluster needs so that no stage waits for another's reservations: each
    arm's heaviest stage (its RL stage's placement-group bundles and labeler pool, or its RM's) side by side, and
    the first seed's SFT evaluation and probe samples beside them (an engine, an RM replica: 3), at least the
    machine's cores. Logical CPUs are slots, not cores: the stages share the cores as processes do."""

    def bundles(plan: Plan, res) -> float:
        return sum(res.bundle_of(b.roles[0]).get("CPU", 0.0) for b in plan.bundles)

    # an implicit RM trains on Ray (a DPO run's bundles); a scalar one on torchrun ranks, outside the cluster
    rm = bundles(plans["rm"], job.rm.implicit.resources) if job.rm.kind == "implicit" else 0.0
    total = 3.0
    for arm in job.arms:
        if arm.trainer == "dpo":
            total += bundles(plans["dpo"], job.dpo.resources)
            continue
        ppo = bundles(plans["ppo"], job.ppo.resources)
        if arm.trainer == "online":
            pool = job.ppo.reward.pool
            labelers = pool.autoscale.max if pool.autoscale else pool.labelers
            ppo += labelers * pool.num_cpus_per_labeler
        total += max(ppo, rm)
    return max(math.ceil(total), os.cpu_count() or 1)
