"""PPO's roles: the rollout engines, the actor, reference and critic learners and the reward, started in their
placement groups (`cluster/topology.py`) and held behind typed handles; each call the loop makes on them is a
greppable method.

The reward is one object whatever its kind (`hrlaif_ray.reward.interface`): the reward service's replicas (the RM,
the verifier, or their sum), the online hybrid reward (the labeler pool), or the weighted sum of the two.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from tqdm import tqdm

from actors.calls import Member
from actors.learner import LearnerGroup
from actors.online_reward import OnlineReward
from actors.reward import RewardService, parts_of
from actors.rollout import RolloutGroup, start_engines
from actors.weight_sync import BroadcastSync, ObjectStoreSync, weight_sync
from cluster.topology import Topology
from hrlaif_ray.config import PPOJob
from hrlaif_ray.reward.interface import Reward, WeightedSum


@dataclass
class Roles:
    """The handles the controller talks to."""

    rollout: RolloutGroup
    actor: LearnerGroup
    reference: LearnerGroup | BaseOf
    critic: LearnerGroup | None
    reward: Reward
    rm_reads_policy_tokens: bool = False  # the RM's tokenizer is the policy's: it scores the sampled token ids
    put: Callable[[Any], Any] = ray.put  # shares a batch with every learner rank (the object store)
    reward_service: RewardService | None = None  # the reward's Ray replicas, where it has them
    online: OnlineReward | None = None  # the labeler pool labeling each group during the step (online kinds)
    sync: BroadcastSync | ObjectStoreSync | None = None  # the actor's weights into the engines (job.sync.method)

    def __post_init__(self):
        if self.sync is None:  # the fallback needs nothing but the two handles
            self.sync = ObjectStoreSync(self.actor, self.rollout)

    def members(self) -> dict[str, list[Member]]:
        """Each Ray role's actors (what fault injection picks from); roles without actors are left out."""
        groups = dict(
            rollout=self.rollout,
            actor=self.actor,
            reference=self.reference,
            critic=self.critic,
            reward=self.reward_service,
        )
        return {name: g.members for name, g in groups.items() if g is not None and getattr(g, "members", None)}

    def recoveries(self) -> list:
        """The in-place restarts since the last call (each role's list is emptied)."""
        out = []
        for group in (self.rollout, self.reference, self.reward_service):
            found = getattr(group, "recoveries", None)
            while found:  # pop: a background thread may be appending
                out.append(found.pop(0))
        return out

    def shutdown(self) -> None:
        """What lives outside the placement groups (the online labelers); the groups' actors go with them."""
        if self.online is not None:
            self.online.shutdown()


class BaseOf:
    """The KL reference of an actor with adapters: the actor's own ranks with the adapters off (its base model is
    the reference: no second copy of the weights, nothing placed)."""

    def __init__(self, actor: LearnerGroup):
        self.actor = actor
        self.members: list[Member] = []  # no actors of its own (fault injection picks from the actor's)

    def logprobs(self, batch_ref, n: int):
        return self.actor.logprobs(batch_ref, n, base=True)


def shares_reference(job: PPOJob) -> bool:
    """Whether the actor is its own reference: it trains adapters on the reference model (the policy folder)."""
    return job.actor.lora.enabled


def placed_roles(job: PPOJob, critic: bool) -> tuple[str, ...]:
    """The roles whose actors the job places (a LoRA actor is its own reference)."""
    return (
        ("actor", "rollout")
        + (() if shares_reference(job) else ("reference",))
        + (("reward",) if parts_of(job.reward) else ())
        + (("critic",) if critic else ())
    )


def build_roles(job: PPOJob, topo: Topology, policy: str, critic_folder: str | None) -> Roles:
    algo, plan, faults = job.algo, job.resources, job.faults
    batch = job.prompts_per_step * job.rollout.samples_per_prompt
    bounded = {"timeout_s": faults.call_timeout_s, "restarts": faults.actor_restarts}

    def learner(role: str, folder: str) -> LearnerGroup:
        res = topo.role(role)
        rows = batch // (res.replicas * algo.mini_batches)  # one rank's mini-batch
        micro = algo.micro_batch_size or rows
        return LearnerGroup(
            role,
            folder,
            topo.learner_options(role),
            learner={"actor": job.actor, "critic": job.critic}.get(role),
            frozen=job.frozen if role == "reference" else None,
            micro_batch=micro,
            grad_accum=max(1, rows // micro),
            threads=res.threads,
            temperature=job.rollout.temperature,
            seed=job.seed,
            **bounded,
        )

    engines = start_engines(
        policy,
        job.rollout,
        topo.options("rollout"),
        plan.rollout.threads,
        job.seed,
        str(Path(job.output_dir) / "cache"),
        faults.actor_restarts,
        job.actor.lora if job.rollout.lora_weights == "adapter" else None,  # else plain engines: merged weights
    )
    parts = parts_of(job.reward)
    service = None
    if parts:
        service = RewardService(
            parts,
            threads=plan.reward.threads,
            options=topo.options("reward"),
            micro_batch=algo.micro_batch_size,
            frozen=job.frozen,
            **bounded,
        )
    actor = learner("actor", policy)
    roles = Roles(
        rollout=RolloutGroup(engines, **bounded),
        actor=actor,
        reference=BaseOf(actor) if shares_reference(job) else learner("reference", job.policy),
        critic=learner("critic", critic_folder) if critic_folder else None,
        reward=service,
        rm_reads_policy_tokens=job.reward.uses_rm and same_tokenizer(job.policy, job.reward.rm),
        reward_service=service,
    )
    if job.actor.lora.enabled:
        adapter_sync(roles)
    roles.sync = weight_sync(job.sync, roles.actor, roles.rollout, faults.call_timeout_s, faults.actor_restarts)
    if job.reward.online:  # last: its labelers live outside the placement groups, so nothing may fail after them
        folder = job.reward.labels_dir or str(Path(job.output_dir) / "online-labels")
        roles.online = OnlineReward(job.reward.labeling, job.reward.pool, folder)
        roles.reward = (
            roles.online
            if service is None
            else WeightedSum([("rm", 1.0, service), ("online", job.reward.online_weight, roles.online)])
        )
    return roles


def adapter_sync(roles: Roles) -> None:
    """With adapters on the actor, each sync sends only them, unless an engine cannot serve adapters: then every
    engine takes the merged weights (one sync for all), and the reason is logged."""
    fallbacks = [why or "rollout.lora_weights: merged" for mode, why in roles.rollout.takes() if mode != "adapter"]
    if fallbacks:
        tqdm.write(f"LoRA: the engines take merged weights at each sync ({fallbacks[0]})")
        roles.actor.sync_mode("merged")


def same_tokenizer(a: str, b: str) -> bool:
    """Do two model folders encode alike (vocabulary, end-of-turn token, chat template)?"""
    from transformers import AutoTokenizer

    ta, tb = AutoTokenizer.from_pretrained(a), AutoTokenizer.from_pretrained(b)
    return (
        ta.get_vocab() == tb.get_vocab()
        and ta.eos_token_id == tb.eos_token_id
        and getattr(ta, "chat_template", None) == getattr(tb, "chat_template", None)
    )
