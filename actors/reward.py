"""The reward service: replicas (Ray actors) of one reward behind one handle, itself a reward
(`hrlaif_ray.reward.interface`: completions in, scores out).

A replica holds a reward model, the programmatic verifier, or their weighted sum (`RewardPart`s, built into the
core's `ModelReward`, `VerifierReward` and `WeightedSum` inside the replica). `RewardService.score(batch)` sorts the
completions by length and deals contiguous length buckets to the replicas (little padding per forward), each
replica scores its bucket (`micro_batch` rows per forward when set; the RM normalises and clips in its forward)
and returns a tensor through the object store (RAY_ENABLE_ZERO_COPY_TORCH_TENSORS=1 in the replicas, so it is not
copied); the service puts the scores back in input order. A replica that dies (or hangs past `timeout_s`) is
restarted by Ray (`restarts`) and its bucket scored again.

The online hybrid reward (the labeler pool during the step) is `actors/online_reward.py`: a replica's process does
not import the judge SDK.
"""

from __future__ import annotations

from dataclasses import dataclass

import ray
import torch

from actors.calls import Member, Recovery, gather_restarting, node_of_this_process, row_ranges, wait_ready
from actors.group import join, rendezvous
from actors.runtime import actor_device, placed_env, start_process
from hrlaif_ray.config import FrozenConfig, RewardRoleConfig
from hrlaif_ray.reward.interface import Completions, ModelReward, Scores, VerifierReward, WeightedSum
from hrlaif_ray.zero import dtype_of, frozen_config, frozen_engine, frozen_stage, partitioned_loading


@dataclass(frozen=True)
class RewardPart:
    """One part of a replica's reward: the reward model in `folder` (name 'rm') or the verifier (name 'verifier',
    no folder), and its weight in their sum."""

    name: str
    weight: float = 1.0
    folder: str | None = None

    def __post_init__(self):
        if (self.name == "rm") != bool(self.folder) or self.name not in ("rm", "verifier"):
            raise ValueError(f"a reward part is 'rm' with a folder or 'verifier' without, got {self}")


def parts_of(cfg: RewardRoleConfig) -> list[RewardPart]:
    """What the replicas hold for a reward role's kind (none for the online judge alone)."""
    parts = []
    if cfg.uses_rm:
        parts.append(RewardPart("rm", 1.0, cfg.rm))
    if cfg.kind in ("verifier", "rm+verifier"):
        parts.append(RewardPart("verifier", cfg.verifier_weight if cfg.kind == "rm+verifier" else 1.0))
    return parts


@ray.remote
class RewardReplica:
    def __init__(
        self,
        parts: list[RewardPart],
        threads: int = 1,
        micro_batch: int | None = None,
        frozen: FrozenConfig | None = None,
        rank: int = 0,
        world: int = 1,
        master: tuple[str, int] | None = None,
    ):
        """`frozen`: the RM's precision and sharding; under ZeRO-3 the replicas are one process group (`master`:
        rank 0's address), each loading and holding 1/world of the RM."""
        from transformers import AutoTokenizer

        from hrlaif_ray.reward.implicit import load_reward_model

        start_process(threads)
        frozen = frozen or FrozenConfig()
        frozen = frozen.model_copy(update={"zero_stage": frozen_stage(frozen, world)})
        device = actor_device()
        self.engines = []  # ZeRO-3 engines, kept: their hooks gather the weights
        if master is not None:
            join(master, rank, world)
        built = []
        for part in parts:
            if part.folder:
                with partitioned_loading(frozen_config(frozen, world)):
                    rm = load_reward_model(part.folder, dtype=dtype_of(frozen.precision))
                for p in rm.parameters():
                    p.requires_grad_(False)
                if frozen.zero_stage == 3:
                    self.engines.append(frozen_engine(rm, frozen, world))
                    rm = self.engines[-1].module
                else:
                    rm = rm.to(device).eval()
                reward = ModelReward(rm, AutoTokenizer.from_pretrained(part.folder), micro_batch)
            else:
                reward = VerifierReward()
            built.append((part.name, part.weight, reward))
        self.reward = built[0][2] if len(built) == 1 and built[0][1] == 1 else WeightedSum(built)

    def ready(self) -> str:
        """This replica's node, once it has started."""
        return node_of_this_process()

    def score(self, batch: Completions) -> Scores:
        return self.reward.score(batch)


class RewardService:
    """Replicas of one reward (the `parts` summed). Each replica's Ray options come from `options` (the launch
    layer's placement-group bundles), else `num_cpus`/`num_gpus`. With `frozen.zero_stage` 3 the replicas shard the
    RM over themselves (a process group: every replica scores an equal share, the short ones padded, and a replica
    that dies fails the call rather than restarting in place)."""

    def __init__(
        self,
        parts: list[RewardPart],
        replicas: int = 1,
        num_cpus: float = 1,
        num_gpus: float = 0,
        threads: int = 1,
        options: list[dict] | None = None,
        micro_batch: int | None = None,
        timeout_s: float = 1800,
        restarts: int = 3,
        frozen: FrozenConfig | None = None,
    ):
        if not parts:
            raise ValueError("a reward service needs at least one reward part")
        options = options or [{"num_cpus": num_cpus, "num_gpus": num_gpus} for _ in range(replicas)]
        world = len(options)
        self.grouped = frozen is not None and frozen_stage(frozen, world) == 3 and any(p.folder for p in parts)
        self.timeout_s, self.restarts = timeout_s, 0 if self.grouped else restarts
        self.recoveries: list[Recovery] = []
        master = rendezvous("reward", options[0], timeout_s) if self.grouped else None
        self.members = [
            Member(
                "reward",
                i,
                RewardReplica.options(**opt, runtime_env=placed_env(opt, threads), max_restarts=self.restarts).remote(
                    parts, threads, micro_batch, frozen, i, world, master
                ),
            )
            for i, opt in enumerate(options)
        ]
        wait_ready(self.members, timeout_s)

    def score(self, batch: Completions) -> Scores:
        """The reward of every completion, its length buckets scored on the replicas at once (their info added)."""
        if not len(batch):
            return Scores(torch.zeros(0))

        def length(i: int) -> int:
            if batch.sequences is not None:
                return len(batch.sequences[i])
            return len(batch.prompts[i].text) + len(batch.texts[i])

        order = sorted(range(len(batch)), key=length)
        k = len(self.members)
        buckets = [order[a:b] for a, b in row_ranges(len(order), k)]
        sent = buckets
        if self.grouped:  # every rank runs the same forwards (ZeRO-3 gathers are collective): equal shares, padded
            size = -(-len(order) // k)
            buckets += [[] for _ in range(k - len(buckets))]
            sent = [b + [b[-1] if b else order[-1]] * (size - len(b)) for b in buckets]
        results = gather_restarting(
            self.members[: len(sent)],
            lambda m: m.handle.score.remote(batch.rows(sent[m.rank])),
            self.timeout_s,
            self.restarts,
            self.recoveries,
        )
        scores, info = torch.empty(len(batch)), {}
        # (in a grouped call the padded rows' info counts again: the RM and the verifier report none)
        for bucket, got in zip(buckets, results):
            if bucket:
                scores[torch.tensor(bucket)] = got.scores[: len(bucket)].float()
            for key, value in got.info.items():
                info[key] = info.get(key, 0) + value
        return Scores(scores, info)

    def shutdown(self) -> None:
        for m in self.members:
            ray.kill(m.handle)
