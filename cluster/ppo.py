"""PPO on Ray: the single controller. `hrlaif ppo --config job.yaml`, or under a Ray cluster:
`ray job submit --address http://127.0.0.1:8265 --working-dir . -- python -m cluster.ppo --config job.yaml`.

`run_ppo` builds the roles (rollout engines, actor / critic / reference learners, the reward service) in their
placement groups, then `ppo_loop` is the algorithm in one place, one call per phase:

    generate -> reward | reference | actor log-probs | critic values -> advantages -> actor | critic
    updates -> weight sync to the engines -> log

Phases joined by | need only what came before, so they run at once (`overlap: true`, the default), as OpenRLHF
runs them: in a cluster the roles sit on different devices; on a few cores, roles of one thread each share them
better than phases of all threads one after another.
Faults (`faults`): rollout engines, reward replicas and reference ranks are restarted by Ray in place and redo
their share of the step; a trained rank that dies, or a role out of restarts, fails the step and `run_ppo`
restarts every role from the last checkpoint (`faults.max_failures` times); every call is bounded
(`faults.call_timeout_s`) and a failure names the role, rank, node and step. faults.jsonl lists each event.
Tensors cross actors as object-store references (`ray.put` once, read zero-copy by every rank). Where it departs
from the paper: PPO is the paper's; critic-free RLOO/GRPO are options (`algo.estimator`), and the reward role
may add the verifier's verdict to the RM (`reward.kind: rm+verifier`), a hybrid reward beyond the paper.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import torch
from tqdm import tqdm

from actors.calls import Member, RoleFailure
from actors.learner import LearnerGroup
from actors.online_reward import OnlineReward
from actors.reward import RewardService
from actors.rollout import RolloutActor, RolloutGroup
from actors.runtime import actor_env
from cluster.connect import connect_ray
from cluster.faults import Chaos, FaultLog
from cluster.topology import Topology
from hrlaif_ray.config import PPOJob, dump_config
from hrlaif_ray.data.chat import pad_token_id, prompt_token_ids
from hrlaif_ray.data.prompt_mix import generate_prompt_mix
from hrlaif_ray.data.records import PromptRecord
from hrlaif_ray.data.schemas import read_records
from hrlaif_ray.entry import job_parser, parse_job
from hrlaif_ray.evaluation import correctness, verified_accuracy
from hrlaif_ray.metrics import MetricsLog, PhaseTimer, truncate_jsonl
from hrlaif_ray.ppo import core
from hrlaif_ray.ppo.experience import Advantages, Group, Rollouts, compute_advantages, layout, pad_rows
from hrlaif_ray.ppo.monitor import RewardHackingMonitor
from hrlaif_ray.reward.group import has_signal


@dataclass
class Roles:
    """The handles the controller talks to; each call on them is a greppable method, not a string."""

    rollout: RolloutGroup
    actor: LearnerGroup
    reference: LearnerGroup
    critic: LearnerGroup | None
    reward: RewardService | None  # None: the reward is the online judge's alone
    rm_reads_policy_tokens: bool = False  # the RM's tokenizer is the policy's: it scores the sampled token ids
    put: Callable[[Any], Any] = ray.put  # shares a batch with every learner rank (the object store)
    online: OnlineReward | None = None  # the labeler pool labeling each group during the step (online kinds)

    def members(self) -> dict[str, list[Member]]:
        """Each Ray role's actors (what fault injection picks from); roles without actors are left out."""
        groups = dict(
            rollout=self.rollout, actor=self.actor, reference=self.reference, critic=self.critic, reward=self.reward
        )
        return {name: g.members for name, g in groups.items() if g is not None and hasattr(g, "members")}

    def recoveries(self) -> list:
        """The in-place restarts since the last call (each role's list is emptied)."""
        out = []
        for group in (self.rollout, self.reference, self.reward):
            found = getattr(group, "recoveries", None)
            while found:  # pop: a background thread may be appending
                out.append(found.pop(0))
        return out


class PromptSampler:
    """A seeded shuffle of the prompts, `size` per step; step k always gets the same prompts (resume-safe)."""

    def __init__(self, prompts: list[PromptRecord], size: int, seed: int):
        if len(prompts) < size:
            raise ValueError(f"prompts_per_step ({size}) exceeds the {len(prompts)} prompts")
        self.prompts, self.size, self.seed = prompts, size, seed

    def batch(self, step: int) -> list[PromptRecord]:
        per_epoch = len(self.prompts) // self.size
        epoch, k = divmod(step, per_epoch)
        order = list(range(len(self.prompts)))
        random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return [self.prompts[i] for i in order[k * self.size : (k + 1) * self.size]]

    def extra(self, step: int, round: int) -> list[PromptRecord]:
        """More prompts for step `step`'s generation round `round` >= 1 (dynamic sampling): a shuffle of their own."""
        order = list(range(len(self.prompts)))
        random.Random((self.seed * 1_000_003 + step) * 1_009 + round).shuffle(order)
        return [self.prompts[i] for i in order[: self.size]]


def build_roles(job: PPOJob, topo: Topology, policy: str, critic_folder: str | None) -> Roles:
    algo, plan, faults = job.algo, job.resources, job.faults
    batch = job.prompts_per_step * job.rollout.samples_per_prompt
    bounded = {"timeout_s": faults.call_timeout_s, "restarts": faults.actor_restarts}

    def learner(role: str, folder: str, lr: float = 0.0) -> LearnerGroup:
        res = topo.role(role)
        rows = batch // (res.replicas * algo.mini_batches)  # one rank's mini-batch
        micro = algo.micro_batch_size or rows
        return LearnerGroup(
            role,
            folder,
            topo.learner_options(role),
            zero_stage=job.zero_stage,
            lr=lr,
            weight_decay=algo.weight_decay,
            grad_clip=algo.grad_clip,
            micro_batch=micro,
            grad_accum=max(1, rows // micro),
            threads=res.threads,
            temperature=job.rollout.temperature,
            seed=job.seed,
            **bounded,
        )

    r = job.rollout
    engines = [
        RolloutActor.options(
            **o,
            runtime_env=actor_env(plan.rollout.threads, vllm=True, cache_dir=str(Path(job.output_dir) / "cache")),
            max_restarts=faults.actor_restarts,
        ).remote(
            policy,
            r.backend,
            job.seed + i,
            plan.rollout.threads,
            r.max_model_len,
            r.kv_cache_gib,
            r.gpu_memory_utilization,
        )
        for i, o in enumerate(topo.options("rollout"))
    ]
    reward = None
    if job.reward.kind != "online":
        reward = RewardService(
            job.reward.rm,
            kind="rm" if job.reward.kind == "online+rm" else job.reward.kind,
            verifier_weight=job.reward.verifier_weight,
            threads=plan.reward.threads,
            options=topo.options("reward"),
            micro_batch=algo.micro_batch_size,
            **bounded,
        )
    roles = Roles(
        rollout=RolloutGroup(engines, **bounded),
        actor=learner("actor", policy, algo.actor_lr),
        reference=learner("reference", job.policy),
        critic=learner("critic", critic_folder, algo.critic_lr) if critic_folder else None,
        reward=reward,
        rm_reads_policy_tokens=job.reward.uses_rm and same_tokenizer(job.policy, job.reward.rm),
    )
    if job.reward.online:  # last: its labelers live outside the placement groups, so nothing may fail after them
        folder = job.reward.labels_dir or str(Path(job.output_dir) / "online-labels")
        roles.online = OnlineReward(job.reward.labeling, job.reward.pool, folder)
    return roles


def same_tokenizer(a: str, b: str) -> bool:
    """Do two model folders encode alike (vocabulary, end-of-turn token, chat template)?"""
    from transformers import AutoTokenizer

    ta, tb = AutoTokenizer.from_pretrained(a), AutoTokenizer.from_pretrained(b)
    return (
        ta.get_vocab() == tb.get_vocab()
        and ta.eos_token_id == tb.eos_token_id
        and getattr(ta, "chat_template", None) == getattr(tb, "chat_template", None)
    )


def held_out_accuracy(roles: Roles, tokenizer, prompts: list[PromptRecord], max_tokens: int, max_prompt: int) -> float:
    """Greedy accuracy of the current policy (the engines hold its weights) on held-out verifiable prompts."""
    ids = [prompt_token_ids(tokenizer, p.text, max_prompt) for p in prompts]
    samples = roles.rollout.generate(ids, 1, max_tokens, 0.0, 1.0, 0)
    texts = tokenizer.batch_decode([s.token_ids for s in samples], skip_special_tokens=True)
    return verified_accuracy(prompts, texts).get("all", 0.0)


def run_phases(timer: PhaseTimer, overlap: bool, phases: dict) -> dict:
    """Independent phases at once (overlap) or one after another; each timed under its own name."""
    if overlap:
        return timer.together(**phases)
    out = {}
    for name, fn in phases.items():
        with timer(name):
            out[name] = fn()
    return out


@dataclass
class Scored:
    """What the forwards returned for a batch: reward scores [B], log-probs of the reference and of the policy that
    sampled [B, T], the critic's values [B, T] (GAE only)."""

    scores: torch.Tensor
    ref_logprobs: torch.Tensor
    old_logprobs: torch.Tensor
    rollout_logprobs: torch.Tensor
    values: torch.Tensor | None
    from_rollout: bool  # old_logprobs are the engines' (`behaviour_logprobs`), not the actor's recomputation


def behaviour_logprobs(job: PPOJob) -> bool:
    """Whether the PPO ratio takes the engines' log-probs: by choice, and always when the samples are a step stale."""
    return job.algo.use_rollout_logprobs or job.async_.max_staleness > 0


def sample_groups(job: PPOJob, roles: Roles, tokenizer, prompts: list[PromptRecord], seed: int) -> list[Group]:
    """n samples of every prompt from the rollout engines, grouped by prompt (in prompt order)."""
    r = job.rollout
    eos = tokenizer.eos_token_id
    prompt_ids = [prompt_token_ids(tokenizer, p.text, r.max_model_len - r.max_new_tokens) for p in prompts]
    samples = roles.rollout.generate(prompt_ids, r.samples_per_prompt, r.max_new_tokens, r.temperature, r.top_p, seed)
    texts = tokenizer.batch_decode([s.token_ids for s in samples], skip_special_tokens=True)
    groups = [
        Group(p, ids, [], [], [] if roles.rm_reads_policy_tokens else None) for p, ids in zip(prompts, prompt_ids)
    ]
    for sample, text in zip(samples, texts):
        group = groups[sample.prompt_index]
        group.samples.append(sample)
        group.texts.append(text)
        if group.sequences is not None:  # each response ends in the end-of-turn token, where the RM reads
            group.sequences.append(
                group.prompt_ids + sample.token_ids + ([] if sample.token_ids[-1:] == [eos] else [eos])
            )
    return groups


def rewards(
    job: PPOJob, roles: Roles, prompts: list[PromptRecord], texts: list[str], sequences, info: dict
) -> torch.Tensor:
    """The reward of every row (prompt-major, n samples a prompt): the reward service's scores and/or the online
    judge's group rewards (each prompt's n samples labeled together through the pool), clipped; what labeling
    measured is added to `info`."""
    total = roles.reward.score(prompts, texts, sequences) if roles.reward is not None else None
    if roles.online is not None:
        n = job.rollout.samples_per_prompt
        groups, measured = roles.online.rewards([(prompts[i], texts[i : i + n]) for i in range(0, len(texts), n)])
        for key, value in measured.items():
            info[key] = info.get(key, 0) + value
        online = torch.tensor([r for group in groups for r in group])
        total = online if total is None else total + job.reward.online_weight * online
    return total.clamp(-job.algo.reward_clip, job.algo.reward_clip)


def reward_groups(job: PPOJob, roles: Roles, groups: list[Group], info: dict) -> None:
    """`rewards` of the groups, set on each group."""
    sequences = [q for g in groups for q in g.sequences] if roles.rm_reads_policy_tokens else None
    flat = rewards(
        job, roles, [g.prompt for g in groups for _ in g.texts], [t for g in groups for t in g.texts], sequences, info
    )
    k = 0
    for g in groups:
        g.scores, k = flat[k : k + len(g.texts)].tolist(), k + len(g.texts)


def rewarded_with_samples(job: PPOJob) -> bool:
    """Whether the reward is computed with the samples, by `make_experience` (dynamic sampling needs it to choose),
    rather than beside the reference forward (synchronous) or in the background once the samples are there
    (asynchronous online labels)."""
    return job.algo.dynamic_sampling


def make_experience(job: PPOJob, roles: Roles, tokenizer, sampler: PromptSampler, step: int, version: int) -> Rollouts:
    """Step `step`'s experience from the engines (holding the weights after `version` updates): its prompts' n
    samples, with their rewards when those come with the samples (`rewarded_with_samples`; dynamic sampling keeps
    the groups whose rewards differ and samples more prompts, up to max_generation_rounds, until the step is full)."""
    algo, size = job.algo, job.prompts_per_step
    info: dict = {}
    kept, dropped, rounds = [], [], 0
    while True:
        prompts = sampler.batch(step) if rounds == 0 else sampler.extra(step, rounds)
        groups = sample_groups(job, roles, tokenizer, prompts, job.seed * 100_003 + step + 7_919 * rounds)
        if rewarded_with_samples(job):
            reward_groups(job, roles, groups, info)
        rounds += 1
        if not algo.dynamic_sampling:
            kept = groups
            break
        for g in groups:
            (kept if has_signal(g.scores) else dropped).append(g)
        if len(kept) >= size or rounds >= algo.max_generation_rounds:
            break
    if algo.dynamic_sampling:
        info.update(
            {
                "dynamic/kept_fraction": len(kept) / (len(kept) + len(dropped)),
                "dynamic/rounds": rounds,
                "dynamic/filled": max(0, size - len(kept)),  # groups without signal that fill a short batch
            }
        )
        kept = (kept + dropped)[:size]
    return assemble(kept, pad_token_id(tokenizer), info, step, version)


def assemble(groups: list[Group], pad: int, info: dict, step: int, version: int) -> Rollouts:
    """The groups as one prompt-major batch (the layout every learner reads)."""
    rows = [(g, s, t) for g in groups for s, t in zip(g.samples, g.texts)]
    batch = layout([g.prompt_ids for g, _, _ in rows], [s.token_ids for _, s, _ in rows], pad)
    sequences = [q for g in groups for q in g.sequences] if groups and groups[0].sequences is not None else None
    scores = torch.tensor([x for g in groups for x in g.scores]) if all(g.scores is not None for g in groups) else None
    return Rollouts(
        [g.prompt for g, _, _ in rows],
        [s for _, s, _ in rows],
        [t for _, _, t in rows],
        batch,
        sequences,
        scores,
        info,
        step,
        version,
    )


def score(job: PPOJob, roles: Roles, rollouts: Rollouts, batch_ref, timer: PhaseTimer) -> Scored:
    """The forwards that depend on the samples alone, one phase each, at once (job.overlap): the reward (unless it
    came with the samples), the reference log-probs, the critic's values, and the actor's log-probs unless the
    sampler's are used."""
    B, from_rollout = len(rollouts.batch), behaviour_logprobs(job)
    phases = {"reference": lambda: roles.reference.logprobs(batch_ref, B)}
    if rollouts.scores is None:  # the judge's labels (online) and the RM's scores, beside the forwards
        phases["reward"] = lambda: rewards(
            job, roles, rollouts.prompts, rollouts.texts, rollouts.sequences, rollouts.info
        )
    if not from_rollout:
        phases["actor_logprobs"] = lambda: roles.actor.logprobs(batch_ref, B)
    if roles.critic is not None:
        phases["critic"] = lambda: roles.critic.values(batch_ref, B)
    out = run_phases(timer, job.overlap, phases)
    rollout_logp = pad_rows([s.logprobs for s in rollouts.samples], rollouts.batch.response_width)
    old_logp = rollout_logp if from_rollout else out["actor_logprobs"]
    scores = rollouts.scores if rollouts.scores is not None else out["reward"]
    return Scored(scores, out["reference"], old_logp, rollout_logp, out.get("critic"), from_rollout)


def advantages(job: PPOJob, scored: Scored, mask: torch.Tensor, kl_coef: float) -> Advantages:
    """The rewards with their KL penalty into advantages and returns, by the job's estimator (GAE, RLOO, GRPO)."""
    algo = job.algo
    return compute_advantages(
        algo.estimator,
        scored.scores,
        scored.old_logprobs,
        scored.ref_logprobs,
        mask,
        kl_coef,
        algo.kl_estimator,
        job.rollout.samples_per_prompt,
        scored.values,
        algo.gamma,
        algo.lam,
        algo.whiten_advantages,
    )


def update(job: PPOJob, roles: Roles, train_ref, n: int, timer: PhaseTimer) -> tuple[dict, dict]:
    """The actor's and the critic's updates on the batch with its advantages, at once (job.overlap)."""
    algo = job.algo
    phases = {
        "actor_train": lambda: roles.actor.train_actor(
            train_ref,
            n,
            epochs=algo.epochs,
            mini_batches=algo.mini_batches,
            clip=algo.clip,
            dual_clip=algo.dual_clip,
            entropy_coef=algo.entropy_coef,
        )
    }
    if roles.critic is not None:
        phases["critic_train"] = lambda: roles.critic.train_critic(
            train_ref, n, epochs=algo.epochs, mini_batches=algo.mini_batches, value_clip=algo.value_clip
        )
    out = run_phases(timer, job.overlap, phases)
    return out["actor_train"], out.get("critic_train", {})


def sync_weights(roles: Roles) -> float:
    """The actor's new weights into every rollout engine (through the object store, across nodes where the engines
    run on others); the engines' reload time."""
    return max(roles.rollout.update_weights(roles.actor.weights_ref()))


def sync_metrics(roles: Roles, timer: PhaseTimer) -> dict:
    """What the weight sync moved (the state dict's bytes, put once, read by every engine wherever it runs) and
    at what rate (bytes / time/sync, the put, the transfer to the engines' nodes and their reload)."""
    size, seconds = getattr(roles.actor, "weights_bytes", 0), timer.times.get("time/sync", 0.0)
    return {"sync/bytes": size, "sync/gb_per_s": size / seconds / 1e9 if seconds > 0 else 0.0}


def step_metrics(
    step: int,
    rollouts: Rollouts,
    scored: Scored,
    adv,
    stats: tuple[dict, dict],
    kl_coef: float,
    timer: PhaseTimer,
    reload_s: float,
) -> dict:
    """Step `step`'s metrics row (reward, KL, losses, lengths, batch accuracy, phase times, the batch's staleness)."""
    batch, B = rollouts.batch, len(rollouts.batch)
    mask = batch.response_mask
    verdicts = [c for c in (correctness(p, t) for p, t in zip(rollouts.prompts, rollouts.texts)) if c is not None]
    metrics = {
        "reward/score_mean": scored.scores.mean(),
        "reward/score_std": scored.scores.std() if B > 1 else 0.0,
        "reward/total_mean": adv.total_reward.mean(),
        "reward/kl_coef": kl_coef,
        "actor/kl": adv.kl.mean(),
        **{f"actor/{k}": v for k, v in stats[0].items()},
        **{f"critic/{k}": v for k, v in stats[1].items()},
        "response/length_mean": mask.sum(1).mean(),
        "response/stop_frac": sum(s.finish_reason == "stop" for s in rollouts.samples) / B,
        **timer.times,
        "time/sync_reload": reload_s,  # of time/sync: the engines' reload (vLLM's loader and CPU repacking)
        "async/staleness": step - rollouts.version,  # updates since the weights that sampled the batch
        "data/batch_step": rollouts.step,  # the prompt batch's step (a resumed buffered batch keeps its own)
    }
    metrics.update(rollouts.info)
    if not scored.from_rollout:
        metrics["rollout/logprob_max_abs_diff"] = ((scored.rollout_logprobs - scored.old_logprobs).abs() * mask).max()
    if verdicts:
        metrics["eval/batch_accuracy"] = sum(verdicts) / len(verdicts)
    return metrics


class Watch:
    """The reward-hacking monitor in the loop: every `monitor.every` steps, held-out greedy accuracy against the
    mean reward since the last check; an alert is logged, written to alerts.jsonl and returned."""

    def __init__(self, job: PPOJob, monitor: RewardHackingMonitor, held_out: list[PromptRecord]):
        self.job, self.monitor, self.held_out, self.rewards = job, monitor, held_out, []

    def __call__(
        self, step: int, roles: Roles, tokenizer, reward: float, metrics: dict, timer: PhaseTimer
    ) -> str | None:
        self.rewards.append(reward)
        every, r = self.job.monitor.every, self.job.rollout
        if not every or step % every:
            return None
        with timer("monitor"):
            accuracy = held_out_accuracy(
                roles, tokenizer, self.held_out, r.max_new_tokens, r.max_model_len - r.max_new_tokens
            )
        alert = self.monitor.update(step, sum(self.rewards) / len(self.rewards), accuracy)
        self.rewards = []
        metrics.update(
            {
                "eval/heldout_accuracy": accuracy,
                "monitor/alert": float(alert is not None),
                "time/monitor": timer.times["time/monitor"],
            }
        )
        if alert:
            tqdm.write(f"ALERT: {alert}")
            with open(Path(self.job.output_dir) / "alerts.jsonl", "a") as fh:
                fh.write(json.dumps({"step": step, "alert": alert}) + "\n")
        return alert


def ppo_loop(
    job: PPOJob,
    roles: Roles,
    sampler: PromptSampler,
    tokenizer,
    start_step: int,
    kl_ctl: core.KLController,
    log: MetricsLog,
    save,
    monitor: RewardHackingMonitor,
    held_out: list[PromptRecord],
    buffered: Rollouts | None = None,
    faults: FaultLog | None = None,
    chaos: Chaos | None = None,
) -> str | None:
    """The algorithm: one PPO step per iteration, one call per phase. Returns the monitor's alert if it stopped the run.

    Asynchronous (`async.max_staleness: 1`): step t+1's experience is made in the background (by the weights before
    step t's update) while step t scores and trains; the engines finish sampling it before they reload the new
    weights, and its online labels may go on into step t+1. A checkpoint holds that buffered batch
    (`save(..., buffer=)`), and `buffered` resumes from it.

    A role's failure (`RoleFailure`) leaves with the step it happened in; in-place restarts of the step are in its
    metrics (`faults/restarts`) and in `faults` (faults.jsonl); `chaos` injects faults at the steps' starts."""
    watch = Watch(job, monitor, held_out)
    ahead = job.async_.max_staleness > 0
    background = ThreadPoolExecutor(max_workers=2, thread_name_prefix="experience")

    def experience(step: int, version: int) -> tuple[Future, Future]:
        """(the samples, the experience with its rewards): an online reward is labeled once the samples are
        there, so the labels may still be coming while the engines reload and the next step starts."""
        sampled = background.submit(make_experience, job, roles, tokenizer, sampler, step, version)
        if roles.online is None or rewarded_with_samples(job):
            return sampled, sampled
        return sampled, background.submit(_labeled, job, roles, sampled)

    sampled = pending = None
    if ahead:
        sampled, pending = experience(start_step, start_step) if buffered is None else (_done(buffered),) * 2
    step, failed = start_step, False
    try:
        for step in tqdm(range(start_step, job.steps), desc="ppo", initial=start_step, total=job.steps):
            if chaos is not None:
                chaos.step(step + 1, roles.members())
            timer = PhaseTimer()
            more = step + 1 < job.steps
            with timer("step"):
                with timer("generate"):  # asynchronous: only the wait for what the background has not finished
                    rollouts = (
                        pending.result() if ahead else make_experience(job, roles, tokenizer, sampler, step, step)
                    )
                if ahead and more:  # the engines still hold the weights that sampled this step's batch
                    sampled, pending = experience(step + 1, step)
                batch = rollouts.batch
                scored = score(job, roles, rollouts, roles.put(batch), timer)
                adv = advantages(job, scored, batch.response_mask, kl_ctl.coef)
                train = batch.with_training(scored.old_logprobs, adv.advantages, adv.returns, scored.values)
                stats = update(job, roles, roles.put(train), len(batch), timer)
                if ahead and more:
                    with timer("generate_wait"):  # the next batch sampled before the engines reload
                        sampled.result()
                with timer("sync"):
                    reload_s = sync_weights(roles)
            metrics = {
                **step_metrics(step, rollouts, scored, adv, stats, kl_ctl.coef, timer, reload_s),
                **sync_metrics(roles, timer),
                "faults/restarts": _log_recoveries(roles, faults, step + 1),
            }
            kl_ctl.update(float(adv.kl.mean()), len(batch))
            alert = watch(step + 1, roles, tokenizer, float(scored.scores.mean()), metrics, timer)
            log.write(step + 1, metrics)
            stopping = alert is not None and job.monitor.stop
            if checkpoint_due(job, step + 1, last=not more or stopping):
                save(step + 1, kl_ctl.coef, buffer=pending.result() if ahead and more else None)
            if stopping:
                return alert
    except RoleFailure as exc:
        failed, exc.step = True, step + 1 if exc.step is None else exc.step
        _log_recoveries(roles, faults, exc.step)  # what was mended in place before the step failed
        raise
    finally:
        if chaos is not None:
            chaos.stop()
        background.shutdown(wait=not failed, cancel_futures=failed)  # a failed run does not wait for its samples
    return None


def checkpoint_due(job: PPOJob, step: int, last: bool) -> bool:
    """Whether to checkpoint after `step`: every `checkpoint_every` steps, and after the run's last step."""
    return last or bool(job.checkpoint_every) and step % job.checkpoint_every == 0


def _log_recoveries(roles: Roles, faults: FaultLog | None, step: int) -> int:
    """The step's in-place restarts into faults.jsonl; how many there were."""
    found = roles.recoveries()
    for r in found if faults is not None else ():
        faults.write("restarted", step=step, role=r.role, rank=r.rank, node=r.node, what=r.what)
    return len(found)


def _labeled(job: PPOJob, roles: Roles, sampled: Future) -> Rollouts:
    """The sampled experience with its rewards (the online judge's labels, and the RM's scores)."""
    rollouts = sampled.result()
    rollouts.scores = rewards(job, roles, rollouts.prompts, rollouts.texts, rollouts.sequences, rollouts.info)
    return rollouts


def _done(value) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


BUFFER = "buffer.pt"  # in an asynchronous run's checkpoint: the next step's batch, already made


def last_checkpoint(out: Path) -> Path | None:
    found = sorted(
        (p for p in (out / "checkpoints").glob("step_*") if (p / "state.json").is_file()),
        key=lambda p: int(p.name.split("_")[1]),
    )
    return found[-1] if found else None


def run_ppo(job: PPOJob) -> dict:
    """The run: its roles started, `ppo_loop`, the roles given back; after a role's failure that the roles could not
    mend in place (a trained rank died, a role ran out of restarts or did not answer) every role is restarted from
    the last checkpoint, at most `faults.max_failures` times. final.json and the returned summary count them."""
    out = Path(job.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ppo_config.yaml").write_text(dump_config(job))
    # Logical CPUs: the plan's bundles are slots, not cores (on 2 cores the roles take turns).
    connect_ray(job.ray_address, num_cpus=max(8, os.cpu_count() or 1))
    faults = FaultLog(out)
    if not job.resume:
        faults.clear()
    chaos = Chaos(job.faults.chaos, faults) if job.faults.chaos else None
    # Where an attempt starts: the last checkpoint when resuming, then the last one this run saved (never one an
    # earlier run left in the folder).
    resume_from = last_checkpoint(out) if job.resume else None
    saved: list[Path] = []
    failures = 0
    try:
        while True:
            try:
                alert = run_attempt(job, faults, chaos, resume_from, saved)
                break
            except RoleFailure as exc:
                if not exc.restartable or failures >= job.faults.max_failures:
                    raise
                failures += 1
                resume_from = saved[-1] if saved else resume_from
                from_step = json.loads((resume_from / "state.json").read_text())["step"] if resume_from else 0
                tqdm.write(
                    f"FAULT: {exc}; restarting every role from step {from_step} ({failures}/{job.faults.max_failures})"
                )
                faults.write(
                    "resumed",
                    failed_step=exc.step,
                    from_step=from_step,
                    role=exc.role,
                    rank=exc.rank,
                    node=exc.node,
                    what=exc.what,
                )
    finally:
        if chaos is not None:
            chaos.stop()
    rows = MetricsLog(out, tensorboard=False).rows()
    events = faults.rows()
    result = {
        "steps": len(rows),
        "last": rows[-1] if rows else None,
        "checkpoint": str(saved[-1] if saved else resume_from),
        "stopped_by_monitor": alert,
        "faults": {
            "injected": sum(e["event"] == "injected" for e in events),
            "restarted_in_place": sum(e["event"] == "restarted" for e in events),
            "resumed_from_checkpoint": sum(e["event"] == "resumed" for e in events),
            # the steps run again after a restart from a checkpoint, the failed one included
            "steps_redone": sum(
                (e["failed_step"] or e["from_step"]) - e["from_step"] for e in events if e["event"] == "resumed"
            ),
        },
    }
    # The run is over (all steps, or stopped by the monitor): what the pipeline and a user look for.
    (out / "final.json").write_text(json.dumps(result, indent=1, default=float))
    return result


def run_attempt(
    job: PPOJob, faults: FaultLog, chaos: Chaos | None, resume_from: Path | None, saved: list[Path]
) -> str | None:
    """One start of every role (from checkpoint `resume_from`, else from the start: a fresh metrics log) and the
    loop to the end; each checkpoint it writes is appended to `saved`. The monitor's alert if it stopped the run.
    Every exit gives back the placement groups and their actors."""
    from transformers import AutoTokenizer

    out = Path(job.output_dir)
    critic_init = None
    if job.algo.estimator == "gae":
        critic_init = job.critic_init or job.reward.rm or job.policy
    policy, start_step, kl_coef, buffered = job.policy, 0, job.algo.kl_coef, None
    if resume_from is not None:
        state = json.loads((resume_from / "state.json").read_text())
        policy, start_step, kl_coef = str(resume_from / "actor"), state["step"], state["kl_coef"]
        critic_init = str(resume_from / "critic") if critic_init else None
        if job.async_.max_staleness and (resume_from / BUFFER).is_file():  # the batch it had made for this step
            buffered = torch.load(resume_from / BUFFER, weights_only=False)
            buffered = buffered if buffered.step == start_step else None
    else:  # a fresh run owns its metrics, alerts and final state
        for name in ("metrics.jsonl", "alerts.jsonl", "final.json"):
            (out / name).unlink(missing_ok=True)
    roles_used = ("actor", "reference", "rollout") + (("reward",) if job.reward.kind != "online" else ())
    topo = Topology(job.resources, roles_used + (("critic",) if critic_init else ()))
    roles = None
    try:  # every exit path, a role that fails to start included, gives back the placement groups (and their actors)
        tokenizer = AutoTokenizer.from_pretrained(job.policy)
        prompts = read_records(job.prompts, "prompts") if job.prompts else generate_prompt_mix(job.prompt_mix)
        sampler = PromptSampler(prompts, job.prompts_per_step, job.seed)
        mix = job.prompt_mix.model_copy(update={"seed": job.monitor.seed, "n": job.monitor.prompts * 4})
        held_out = [p for p in generate_prompt_mix(mix) if p.answer is not None][: job.monitor.prompts]
        roles = build_roles(job, topo, policy, critic_init)
        kl_ctl = core.KLController(kl_coef, job.algo.kl_target, job.algo.kl_horizon)
        monitor = RewardHackingMonitor(job.monitor.accuracy_drop, job.monitor.reward_rise)

        def save(step: int, coef: float, buffer: Rollouts | None = None) -> None:
            folder = out / "checkpoints" / f"step_{step}"
            tmp = folder.with_name(folder.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            roles.actor.save(str(tmp / "actor"), job.policy)
            if roles.critic is not None:
                roles.critic.save(str(tmp / "critic"), job.policy)
            if buffer is not None:  # asynchronous: the next step's batch, made by the weights before this update
                torch.save(buffer, tmp / BUFFER)
            (tmp / "state.json").write_text(json.dumps({"step": step, "kl_coef": coef}))
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(tmp, folder)  # a checkpoint exists whole or not at all
            saved.append(folder)

        log = MetricsLog(out, job.tensorboard)
        log.truncate(start_step)  # steps logged after the checkpoint are redone from it: each step once
        truncate_jsonl(out / "alerts.jsonl", start_step)  # and so are their monitor checks
        try:
            return ppo_loop(
                job,
                roles,
                sampler,
                tokenizer,
                start_step,
                kl_ctl,
                log,
                save,
                monitor,
                held_out,
                buffered,
                faults,
                chaos,
            )
        finally:
            log.close()
    finally:
        if roles is not None and roles.online is not None:
            roles.online.shutdown()
        topo.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = job_parser("hrlaif ppo", PPOJob, "steps=30 algo.estimator=rloo")
    parser.add_argument(
        "--resume", action="store_const", const=True, help="continue from the last checkpoint in output_dir (resume=)"
    )
    job, _ = parse_job(parser, PPOJob, argv, {"resume": "resume"})
    result = run_ppo(job)
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
