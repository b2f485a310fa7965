"""The PPO algorithm in one place: `ppo_loop`, one call per phase, one PPO step per iteration.

    experience -> reward | reference | actor log-probs | critic values -> advantages -> actor | critic
    updates -> weight sync to the engines -> metrics, the reward-hacking monitor, a checkpoint

Phases joined by | need only what came before, so they run at once (`overlap: true`, the default), as OpenRLHF
runs them: in a cluster the roles sit on different devices; on a few cores, roles of one thread each share them
better than phases of all threads one after another. Where the experience comes from (this step's samples, or
samples made one step ahead while the last step trained) is the experience source's business
(`cluster/ppo/experience.py`); fault injection wraps the source (`cluster/ppo/faults.py`). Tensors cross actors
as object-store references (`roles.put` once, read zero-copy by every rank).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tqdm import tqdm

from actors.calls import RoleFailure
from actors.weight_sync import SyncResult
from cluster.ppo.experience import ExperienceSource, reward_of
from cluster.ppo.faults import FaultLog
from cluster.ppo.roles import Roles
from hrlaif_ray.config import PPOJob
from hrlaif_ray.data.chat import prompt_token_ids
from hrlaif_ray.data.records import PromptRecord
from hrlaif_ray.evaluation import correctness, verified_accuracy
from hrlaif_ray.labeling.injection import addresses_judge
from hrlaif_ray.metrics import MetricsLog, PhaseTimer
from hrlaif_ray.ppo import core
from hrlaif_ray.ppo.experience import Advantages, Forwards, Rollouts, compute_advantages, pad_rows
from hrlaif_ray.ppo.monitor import RewardHackingMonitor


def ppo_loop(
    job: PPOJob,
    roles: Roles,
    source: ExperienceSource,
    start_step: int,
    kl_ctl: core.KLController,
    log: MetricsLog,
    save,
    watch: Watch,
    faults: FaultLog | None = None,
) -> str | None:
    """Steps start_step .. job.steps; `save(step, kl_coef, buffer=)` writes a checkpoint (with the source's buffered
    batch), `save(step, kl_coef, best=accuracy)` the actor of a new best held-out check (monitor.keep_best).
    Returns the monitor's alert if it stopped the run. A role's failure (`RoleFailure`) leaves with the step
    it happened in; the in-place restarts of a step are in its metrics (`faults/restarts`) and in `faults`."""
    step, failed = start_step, False
    try:
        for step in tqdm(range(start_step, job.steps), desc="ppo", initial=start_step, total=job.steps):
            timer = PhaseTimer()
            with timer("step"):
                with timer("generate"):  # one step ahead: only the wait for what the background has not finished
                    rollouts = source.next(step)
                batch = rollouts.batch
                forwards = score(job, roles, rollouts, roles.put(batch), timer)
                adv = compute_advantages(
                    job.algo, forwards, batch.response_mask, kl_ctl.coef, job.rollout.samples_per_prompt
                )
                train = batch.with_training(
                    forwards.old_logprobs, adv.advantages, adv.returns, forwards.values, tis_weights(job, forwards)
                )
                stats = update(job, roles, roles.put(train), len(batch), timer)
                source.before_sync(timer)
                with timer("sync"):
                    synced = roles.sync.sync()
            metrics = {
                **step_metrics(step, rollouts, forwards, adv, stats, kl_ctl.coef, timer),
                **mismatch_metrics(job, forwards, train.is_weights, batch.response_mask),
                **sync_metrics(synced, timer),
                **memory_metrics(roles),
                "faults/restarts": log_recoveries(roles, faults, step + 1),
            }
            kl_ctl.update(float(adv.kl.mean()), len(batch))
            alert = watch(step + 1, roles, float(forwards.scores.mean()), metrics, timer)
            if watch.improved and job.monitor.keep_best:
                save(step + 1, kl_ctl.coef, best=watch.monitor.best.accuracy)
            log.write(step + 1, metrics)
            stopping = alert is not None and job.monitor.stop
            if checkpoint_due(job, step + 1, last=step + 1 == job.steps or stopping):
                save(step + 1, kl_ctl.coef, buffer=source.buffered())
            if stopping:
                return alert
    except RoleFailure as exc:
        failed, exc.step = True, step + 1 if exc.step is None else exc.step
        log_recoveries(roles, faults, exc.step)  # what was mended in place before the step failed
        raise
    finally:
        source.close(failed)
    return None


def behaviour_logprobs(job: PPOJob) -> bool:
    """Whether the PPO ratio takes the engines' log-probs: by choice, and always when the samples are a step stale
    (unless truncated importance sampling has the actor recompute them: then the engines' only weight the loss)."""
    return (job.algo.use_rollout_logprobs or job.async_.max_staleness > 0) and job.algo.tis_cap is None


def tis_weights(job: PPOJob, forwards: Forwards) -> torch.Tensor | None:
    """Truncated importance sampling's per-token weights (algo.tis_cap), or None when it is off."""
    if job.algo.tis_cap is None:
        return None
    return core.truncated_is_weights(forwards.actor_logprobs, forwards.rollout_logprobs, job.algo.tis_cap)


def run_phases(timer: PhaseTimer, overlap: bool, phases: dict) -> dict:
    """Independent phases at once (overlap) or one after another; each timed under its own name."""
    if overlap:
        return timer.together(**phases)
    out = {}
    for name, fn in phases.items():
        with timer(name):
            out[name] = fn()
    return out


def score(job: PPOJob, roles: Roles, rollouts: Rollouts, batch_ref, timer: PhaseTimer) -> Forwards:
    """The forwards that depend on the samples alone, one phase each, at once (job.overlap): the reward (unless it
    came with the samples), the reference log-probs, the critic's values, and the actor's log-probs unless the
    sampler's are used."""
    B, from_rollout = len(rollouts.batch), behaviour_logprobs(job)
    phases = {"reference": lambda: roles.reference.logprobs(batch_ref, B)}
    if rollouts.scores is None:  # else it came with the samples (dynamic sampling, one step ahead)
        phases["reward"] = lambda: reward_of(job, roles, rollouts)
    if not from_rollout:
        phases["actor_logprobs"] = lambda: roles.actor.logprobs(batch_ref, B)
    if roles.critic is not None:
        phases["critic"] = lambda: roles.critic.values(batch_ref, B)
    out = run_phases(timer, job.overlap, phases)
    rollout_logp = pad_rows([s.logprobs for s in rollouts.samples], rollouts.batch.response_width)
    old_logp = rollout_logp if from_rollout else out["actor_logprobs"]
    scores = rollouts.scores if rollouts.scores is not None else out["reward"]
    actor = out.get("actor_logprobs")
    return Forwards(scores, out["reference"], old_logp, rollout_logp, out.get("critic"), from_rollout, actor)


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


def sync_metrics(synced: SyncResult, timer: PhaseTimer) -> dict:
    """What the weight sync moved (the bytes that left the actor's rank 0, once whatever the number of engines), at
    what rate (bytes / time/sync: the gathers, the transfer and the engines' loading), the engines' loading time
    (vLLM's loader, and on CPU its repacking; a broadcast overlaps it with the transfer) and how many tensors each
    engine's check compared, and the most the actor's rank 0 held above its start meanwhile."""
    seconds = timer.times.get("time/sync", 0.0)
    return {
        "sync/bytes": synced.bytes,
        "sync/gb_per_s": synced.bytes / seconds / 1e9 if seconds > 0 else 0.0,
        "sync/checked": synced.checked,
        "sync/rank0_peak_mb": (synced.peak_bytes or 0) / 2**20,
        "time/sync_reload": synced.reload_s,
    }


def memory_metrics(roles: Roles) -> dict:
    """The most host memory each learner role's processes have held so far (the largest of its ranks): on CPU,
    all that a role holds; on GPUs, its host side (offloaded states, loading, the process)."""
    out = {}
    for name, group in (("actor", roles.actor), ("reference", roles.reference), ("critic", roles.critic)):
        if hasattr(group, "memory"):  # an actor that is its own reference has no ranks of its own
            out[f"memory/{name}_peak_rss_mb"] = max(m["peak_rss_bytes"] for m in group.memory()) / 2**20
    return out


def step_metrics(
    step: int,
    rollouts: Rollouts,
    forwards: Forwards,
    adv: Advantages,
    stats: tuple[dict, dict],
    kl_coef: float,
    timer: PhaseTimer,
) -> dict:
    """Step `step`'s metrics row (reward, KL, losses, lengths, batch accuracy, phase times, the batch's staleness)."""
    batch, B = rollouts.batch, len(rollouts.batch)
    mask = batch.response_mask
    verdicts = [c for c in (correctness(p, t) for p, t in zip(rollouts.prompts, rollouts.texts)) if c is not None]
    metrics = {
        "reward/score_mean": forwards.scores.mean(),
        "reward/score_std": forwards.scores.std() if B > 1 else 0.0,
        "reward/total_mean": adv.total_reward.mean(),
        "reward/kl_coef": kl_coef,
        "actor/kl": adv.kl.mean(),
        **{f"actor/{k}": v for k, v in stats[0].items()},
        **{f"critic/{k}": v for k, v in stats[1].items()},
        "response/length_mean": mask.sum(1).mean(),
        "response/stop_frac": sum(s.finish_reason == "stop" for s in rollouts.samples) / B,
        "monitor/injection_rate": sum(bool(addresses_judge(t)) for t in rollouts.texts) / B,
        **timer.times,
        "async/staleness": step - rollouts.version,  # updates since the weights that sampled the batch
        "data/batch_step": rollouts.step,  # the prompt batch's step (a resumed buffered batch keeps its own)
    }
    metrics.update(rollouts.info)
    if verdicts:
        metrics["eval/batch_accuracy"] = sum(verdicts) / len(verdicts)
    return metrics


def mismatch_metrics(job: PPOJob, forwards: Forwards, weights: torch.Tensor | None, mask: torch.Tensor) -> dict:
    """The engines' log-probs of the sampled tokens against the actor's, whenever the actor recomputed them (mean
    and largest difference, the share over algo.mismatch_threshold), and truncated importance sampling's weights
    (their mean, the share truncated at algo.tis_cap)."""
    metrics = {}
    if forwards.actor_logprobs is not None:
        found = core.logprob_mismatch(
            forwards.actor_logprobs, forwards.rollout_logprobs, mask, job.algo.mismatch_threshold
        )
        metrics.update({f"rollout/{k}": v for k, v in found.items()})
    if weights is not None:
        metrics["rollout/tis_weight_mean"] = core.masked_mean(weights, mask)
        metrics["rollout/tis_truncated_frac"] = core.masked_mean((weights >= job.algo.tis_cap).float(), mask)
    return metrics


def checkpoint_due(job: PPOJob, step: int, last: bool) -> bool:
    """Whether to checkpoint after `step`: every `checkpoint_every` steps, and after the run's last step."""
    return last or bool(job.checkpoint_every) and step % job.checkpoint_every == 0


def log_recoveries(roles: Roles, faults: FaultLog | None, step: int) -> int:
    """The step's in-place restarts into faults.jsonl; how many there were."""
    found = roles.recoveries()
    for r in found if faults is not None else ():
        faults.write("restarted", step=step, role=r.role, rank=r.rank, node=r.node, what=r.what)
    return len(found)


def held_out_accuracy(roles: Roles, tokenizer, prompts: list[PromptRecord], max_tokens: int, max_prompt: int) -> float:
    """Greedy accuracy of the current policy (the engines hold its weights) on held-out verifiable prompts."""
    ids = [prompt_token_ids(tokenizer, p.text, max_prompt) for p in prompts]
    samples = roles.rollout.generate(ids, 1, max_tokens, 0.0, 1.0, 0)
    texts = tokenizer.batch_decode([s.token_ids for s in samples], skip_special_tokens=True)
    return verified_accuracy(prompts, texts).get("all", 0.0)


class Watch:
    """The reward-hacking monitor in the loop: every step, the share of samples that address the judge (the
    injection detector); every `monitor.every` steps, held-out greedy accuracy against the mean reward since the last
    check. An alert is logged, written to alerts.jsonl and returned."""

    def __init__(self, job: PPOJob, tokenizer, held_out: list[PromptRecord], monitor: RewardHackingMonitor):
        self.job, self.tokenizer, self.held_out, self.monitor, self.rewards = job, tokenizer, held_out, monitor, []
        self.improved = False  # whether the last call's check was the best held-out accuracy so far

    def __call__(self, step: int, roles: Roles, reward: float, metrics: dict, timer: PhaseTimer) -> str | None:
        self.rewards.append(reward)
        self.improved = False
        every, r, cap = self.job.monitor.every, self.job.rollout, self.job.monitor.injection_rate
        injected = metrics.get("monitor/injection_rate", 0.0)
        alert = None
        if cap and injected > cap:
            alert = (
                f"the policy writes to its judge at step {step}: {injected:.0%} of the samples address it (more "
                f"than {cap:.0%}; hrlaif_ray/labeling/injection.py)"
            )
        if every and step % every == 0:
            with timer("monitor"):
                accuracy = held_out_accuracy(
                    roles, self.tokenizer, self.held_out, r.max_new_tokens, r.max_model_len - r.max_new_tokens
                )
            alert = self.monitor.update(step, sum(self.rewards) / len(self.rewards), accuracy) or alert
            self.improved = self.monitor.best is not None and self.monitor.best.step == step
            self.rewards = []
            metrics.update({"eval/heldout_accuracy": accuracy, "time/monitor": timer.times["time/monitor"]})
        elif alert is None:
            return None
        return self.alert(step, alert, metrics)

    def alert(self, step: int, alert: str | None, metrics: dict) -> str | None:
        """Log, write to alerts.jsonl and return an alert (None: nothing to say)."""
        metrics["monitor/alert"] = float(alert is not None)
        if alert:
            tqdm.write(f"ALERT: {alert}")
            with open(Path(self.job.output_dir) / "alerts.jsonl", "a") as fh:
                fh.write(json.dumps({"step": step, "alert": alert}) + "\n")
        return alert
