"""Where a PPO step's experience comes from: the prompts (`PromptSampler`), the engines' samples grouped by prompt,
their rewards, DAPO's dynamic sampling, and the two experience sources the loop reads through one interface.

- `Synchronous`: step t's samples are made at the start of step t by the weights after t updates. The reward
  comes with them only where dynamic sampling needs it to choose groups; otherwise it is computed beside the
  reference and critic forwards (`loop.score`).
- `OneStepAhead` (`async.max_staleness: 1`): step t+1's samples are made in the background by the weights before
  step t's update while step t scores and trains, and their rewards (the RM's scores, the online judge's labels)
  once the samples are there, so the reward leaves the critical path; the engines finish sampling before they
  reload the new weights (`before_sync`), while labels may go on into step t+1. A checkpoint keeps the batch made
  ahead (`buffered`), so a resume neither loses nor repeats it.

The loop asks for `next(step)`, calls `before_sync` before the weight sync, saves `buffered()` with a checkpoint
and `close`s the source when it ends; it never asks which source it has. OpenRLHF keeps its asynchronous
trainer in a class of its own and veRL keeps one-step-off in a recipe for the same reason.
"""

from __future__ import annotations

import random
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

import torch

from cluster.ppo.roles import Roles
from hrlaif_ray.config import PPOJob
from hrlaif_ray.data.chat import pad_token_id, prompt_token_ids
from hrlaif_ray.data.records import PromptRecord
from hrlaif_ray.metrics import PhaseTimer
from hrlaif_ray.ppo.experience import Group, Rollouts, layout
from hrlaif_ray.reward.group import has_signal
from hrlaif_ray.reward.interface import Completions, GroupStream, Scores, stream_of


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


def sample_groups(
    job: PPOJob, roles: Roles, tokenizer, prompts: list[PromptRecord], seed: int, stream: GroupStream | None = None
) -> list[Group]:
    """n samples of every prompt from the rollout engines, grouped by prompt (in prompt order). With
    `rollout.stream`, each group goes to `stream` (the reward's) as soon as its engine has finished it."""
    r, n = job.rollout, job.rollout.samples_per_prompt
    eos = tokenizer.eos_token_id
    prompt_ids = [prompt_token_ids(tokenizer, p.text, r.max_model_len - r.max_new_tokens) for p in prompts]
    groups = [
        Group(p, ids, [], [], [] if roles.rm_reads_policy_tokens else None) for p, ids in zip(prompts, prompt_ids)
    ]
    args = (prompt_ids, n, r.max_new_tokens, r.temperature, r.top_p, seed)
    if r.stream:
        arrivals = roles.rollout.generate_groups(*args)
    else:
        samples = roles.rollout.generate(*args)
        arrivals = ((i, samples[i * n : (i + 1) * n]) for i in range(len(prompts)))
    for i, group_samples in arrivals:
        group = groups[i]
        group.samples = group_samples
        group.texts = tokenizer.batch_decode([s.token_ids for s in group_samples], skip_special_tokens=True)
        if group.sequences is not None:  # each response ends in the end-of-turn token, where the RM reads
            group.sequences = [
                group.prompt_ids + s.token_ids + ([] if s.token_ids[-1:] == [eos] else [eos]) for s in group_samples
            ]
        if stream is not None:
            stream.add(i, Completions([group.prompt] * n, group.texts, group.sequences, n))
    return groups


def clipped(job: PPOJob, got: Scores, info: dict) -> torch.Tensor:
    """A reward's scores clipped to +-algo.reward_clip; what scoring measured is added to `info`."""
    for key, value in got.info.items():
        info[key] = info.get(key, 0) + value
    return got.scores.clamp(-job.algo.reward_clip, job.algo.reward_clip)


def rewards(job: PPOJob, roles: Roles, batch: Completions, info: dict) -> torch.Tensor:
    """The reward of every completion (prompt-major, n samples a prompt), clipped to +-algo.reward_clip; what
    scoring measured is added to `info`."""
    return clipped(job, roles.reward.score(batch), info)


def reward_of(job: PPOJob, roles: Roles, rollouts: Rollouts) -> torch.Tensor:
    """The batch's rewards: the result of the reward's stream that took its groups as they were sampled, or,
    without one, the reward of the whole batch."""
    if rollouts.pending is not None:
        stream, rollouts.pending = rollouts.pending, None
        return clipped(job, stream.result(), rollouts.info)
    return rewards(job, roles, completions(job, rollouts), rollouts.info)


def reward_groups(job: PPOJob, roles: Roles, groups: list[Group], info: dict, stream: GroupStream | None) -> None:
    """The rewards of the groups' samples (from `stream`, which took them as they were sampled, or now), set on each
    group."""
    if stream is not None:
        flat = clipped(job, stream.result(), info)
    else:
        sequences = [q for g in groups for q in g.sequences] if roles.rm_reads_policy_tokens else None
        batch = Completions(
            [g.prompt for g in groups for _ in g.texts],
            [t for g in groups for t in g.texts],
            sequences,
            job.rollout.samples_per_prompt,
        )
        flat = rewards(job, roles, batch, info)
    k = 0
    for g in groups:
        g.scores, k = flat[k : k + len(g.texts)].tolist(), k + len(g.texts)


def make_experience(job: PPOJob, roles: Roles, tokenizer, sampler: PromptSampler, step: int, version: int) -> Rollouts:
    """Step `step`'s experience from the engines (holding the weights after `version` updates): its prompts' n
    samples; under dynamic sampling with their rewards, since it keeps the groups whose rewards differ and samples
    more prompts, up to max_generation_rounds, until the step is full."""
    algo, size = job.algo, job.prompts_per_step
    info: dict = {}
    kept, dropped, rounds = [], [], 0
    stream = None
    while True:
        prompts = sampler.batch(step) if rounds == 0 else sampler.extra(step, rounds)
        stream = stream_of(roles.reward, len(prompts), job.rollout.samples_per_prompt) if job.rollout.stream else None
        groups = sample_groups(job, roles, tokenizer, prompts, job.seed * 100_003 + step + 7_919 * rounds, stream)
        rounds += 1
        if not algo.dynamic_sampling:
            kept = groups
            break
        reward_groups(job, roles, groups, info, stream)
        stream = None  # its result is in the groups
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
    rollouts = assemble(kept, pad_token_id(tokenizer), info, step, version)
    rollouts.pending = stream  # the reward of a batch whose groups were streamed to it (None: not yet asked)
    return rollouts


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


def completions(job: PPOJob, rollouts: Rollouts) -> Completions:
    """A batch's samples as the reward reads them."""
    return Completions(rollouts.prompts, rollouts.texts, rollouts.sequences, job.rollout.samples_per_prompt)


class ExperienceSource(Protocol):
    def next(self, step: int) -> Rollouts:
        """Step `step`'s experience (`scores` None: the reward is the loop's to compute)."""
        ...

    def before_sync(self, timer: PhaseTimer) -> None:
        """Wait for whatever the engines must finish with the weights they hold, before they reload."""
        ...

    def buffered(self) -> Rollouts | None:
        """What a checkpoint after the current step must keep to resume exactly (the batch made ahead)."""
        ...

    def close(self, failed: bool) -> None: ...


class Synchronous:
    """Each step's samples made at its start by the current weights (see the module's text)."""

    def __init__(self, job: PPOJob, roles: Roles, tokenizer, sampler: PromptSampler):
        self.job, self.roles, self.tokenizer, self.sampler = job, roles, tokenizer, sampler

    def next(self, step: int) -> Rollouts:
        return make_experience(self.job, self.roles, self.tokenizer, self.sampler, step, step)

    def before_sync(self, timer: PhaseTimer) -> None:
        pass

    def buffered(self) -> Rollouts | None:
        return None

    def close(self, failed: bool) -> None:
        pass


class OneStepAhead:
    """Step t+1's samples and rewards made in the background while step t trains (see the module's text).
    `buffered`: the batch a checkpoint kept for `start_step` (a resume), else it is made now."""

    def __init__(
        self,
        job: PPOJob,
        roles: Roles,
        tokenizer,
        sampler: PromptSampler,
        start_step: int,
        buffered: Rollouts | None = None,
    ):
        self.job, self.roles, self.tokenizer, self.sampler = job, roles, tokenizer, sampler
        self.background = ThreadPoolExecutor(max_workers=2, thread_name_prefix="experience")
        self.sampled: Future | None = None  # the next step's samples (the engines are busy until they are done)
        self.pending: Future | None = None  # the next step's experience with its rewards
        if buffered is not None:
            self.pending = _done(buffered)
        else:
            self._ahead(start_step, version=start_step)

    def _ahead(self, step: int, version: int) -> None:
        """Start making step `step`'s experience with the weights after `version` updates."""
        self.sampled = self.background.submit(
            make_experience, self.job, self.roles, self.tokenizer, self.sampler, step, version
        )
        self.pending = self.background.submit(self._rewarded, self.sampled)

    def _rewarded(self, sampled: Future) -> Rollouts:
        rollouts = sampled.result()
        if rollouts.scores is None:  # dynamic sampling rewarded them already
            rollouts.scores = reward_of(self.job, self.roles, rollouts)
        return rollouts

    def next(self, step: int) -> Rollouts:
        rollouts = self.pending.result()
        self.sampled = self.pending = None
        if step + 1 < self.job.steps:  # the engines still hold the weights that sampled this step's batch
            self._ahead(step + 1, version=step)
        return rollouts

    def before_sync(self, timer: PhaseTimer) -> None:
        if self.sampled is not None:
            with timer("generate_wait"):  # the next batch sampled before the engines reload
                self.sampled.result()

    def buffered(self) -> Rollouts | None:
        return self.pending.result() if self.pending is not None else None

    def close(self, failed: bool) -> None:
        self.background.shutdown(wait=not failed, cancel_futures=failed)  # a failed run does not wait for its samples


def experience_source(
    job: PPOJob, roles: Roles, tokenizer, sampler: PromptSampler, start_step: int, buffered: Rollouts | None
) -> ExperienceSource:
    """The job's source: one step ahead when `async.max_staleness` is 1, else synchronous."""
    if job.async_.max_staleness > 0:
        return OneStepAhead(job, roles, tokenizer, sampler, start_step, buffered)
    return Synchronous(job, roles, tokenizer, sampler)


def _done(value) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future
