"""The weight sync from the actor learner to the rollout engines, behind one `sync()` whatever its method.

- `BroadcastSync` (`sync.method: broadcast`): the actor's rank 0 and every engine form a process group of their own
  (`hrlaif_ray.weight_sync`); each sync, every actor rank gathers the weights one tensor at a time and rank 0
  broadcasts them bucket by bucket while each engine loads them. After the load, the checksums of the sent, the
  received and the loaded tensors are compared (`sync.check`).
- `ObjectStoreSync` (`sync.method: object_store`): rank 0 puts the whole state dict in the object store and every
  engine reads it (the fallback).

Faults: every call is bounded by `faults.call_timeout_s` and a failure names the engine. An engine that dies during
a broadcast is restarted by Ray (its `max_restarts`); rank 0 then leaves the group (so the other engines' waits
fail at once), a new generation of the group is formed with every engine and the sync is redone. An engine
restarted at any other time (found by the next generate, which restores it) gets the current weights through a
group of its own with rank 0, and the next sync forms the whole group again. The lock keeps one broadcast at a time, and
the actor group's submit lock keeps a broadcast's calls contiguous on its ranks: a restore from the background
generation of an asynchronous step runs before or after the loop's update on every rank alike, never between.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import ray

from actors.calls import Member, Recovery, RoleFailure, gather, recover
from actors.learner import LearnerGroup
from actors.rollout import RolloutGroup
from hrlaif_ray.config import SyncConfig
from hrlaif_ray.weight_sync import check, plan_buckets


@dataclass
class SyncResult:
    """One sync: its method, the bytes that left rank 0 (once, whatever the number of engines), the slowest engine's
    load time, how many tensors each engine's check compared (0: no check), and rank 0's peak memory."""

    method: str
    bytes: int
    reload_s: float
    checked: int = 0
    peak_bytes: int | None = None  # the most the actor's rank 0 held above its start during the sync
    send_s: float | None = None  # rank 0's own time in a broadcast (its gathers, packing and sending)


class ObjectStoreSync:
    """Rank 0 puts the whole state dict once; every engine reads it zero-copy and reloads."""

    method = "object_store"

    def __init__(self, actor: LearnerGroup, rollout: RolloutGroup):
        self.actor, self.rollout = actor, rollout

    def sync(self) -> SyncResult:
        reload_s = max(self.rollout.update_weights(self.actor.weights_ref()))
        return SyncResult(self.method, self.actor.weights_bytes, reload_s, peak_bytes=self.actor.weights_peak)


class BroadcastSync:
    """Rank 0 of the actor broadcasts to every engine over the sync group (see the module's text)."""

    method = "broadcast"

    def __init__(self, config: SyncConfig, actor: LearnerGroup, rollout: RolloutGroup, timeout_s: float, restarts: int):
        self.config, self.actor, self.rollout = config, actor, rollout
        self.timeout_s, self.restarts = timeout_s, restarts
        self.lock = threading.Lock()
        rank0 = actor.members[0]
        self.specs = gather([rank0], [rank0.handle.weight_specs.remote()], timeout_s)[0]
        self.buckets = plan_buckets(self.specs, int(config.bucket_mb * 2**20))
        world_limit = 1 + len(rollout.members)
        self.address = gather([rank0], [rank0.handle.serve_sync.remote(world_limit, timeout_s)], timeout_s)[0]
        self.generation = 0
        self.formed: list[int] = []  # the engines (ranks in the rollout group) in the current generation
        self.checked: list[str] = []  # the names every engine in it can check
        self._form(rollout.members)
        rollout.restorer = self.restore

    # ------------------------------------------------------------------------------------------------ group

    def _form(self, engines: list[Member]) -> None:
        """A new generation of the group: rank 0 and `engines`, joined at once (bounded)."""
        self.generation += 1
        world, rank0 = 1 + len(engines), self.actor.members[0]
        refs = [rank0.handle.join_sync.remote(world, self.generation, self.timeout_s)] + [
            m.handle.join_sync.remote(self.address, i + 1, world, self.generation, self.specs, self.timeout_s)
            for i, m in enumerate(engines)
        ]
        joined = gather([rank0, *engines], refs, self.timeout_s)
        names = [set(n) for n in joined[1:]]
        self.checked = sorted(set.intersection(*names)) if self.config.check and names else []
        self.formed = [m.rank for m in engines]

    def _current(self, engines: list[Member]) -> bool:
        """Whether the group's current generation is exactly `engines`, each still in it (not restarted since)."""
        if self.formed != [m.rank for m in engines]:
            return False
        generations = gather(engines, [m.handle.sync_generation.remote() for m in engines], self.timeout_s)
        return all(g == self.generation for g in generations)

    # ------------------------------------------------------------------------------------------------ sync

    def sync(self) -> SyncResult:
        """The actor's weights into every engine; the engines then hold the next weights version."""
        with self.lock:
            result = self._broadcast(self.rollout.members, self.rollout.version + 1)
            self.rollout.synced()
            return result

    def restore(self, member: Member):
        """A restarted engine takes the current weights (a group of its own with rank 0); a ref to wait on."""
        with self.lock:
            self._broadcast([member], self.rollout.version)
        return member.handle.ready.remote()

    def _broadcast(self, engines: list[Member], version: int) -> SyncResult:
        redone = 0
        while True:
            learners = self.actor.members
            try:
                if not self._current(engines):
                    self._form(engines)
            except RoleFailure as exc:  # an engine died before the broadcast began: restarted, then a new group
                failures, results = [exc], []
            else:
                with self.actor.submit_lock:  # contiguous among the loop's calls on the actor's ranks
                    refs = [m.handle.broadcast_weights.remote(self.buckets, self.checked) for m in learners]
                refs += [
                    m.handle.receive_weights.remote(self.buckets, self.generation, version, self.checked)
                    for m in engines
                ]
                results, failures = _settle(learners + engines, refs, self.timeout_s)
            died = [f for f in failures if f.role == "rollout" and f.restartable]
            if died and redone < self.restarts and not any(f.role == "actor" for f in failures):
                for f in died:  # Ray restarts it (max_restarts); a new generation takes it in
                    member = next(m for m in engines if m.rank == f.rank)
                    recover(member, self.timeout_s, hung=f.hung)
                    self.rollout.recoveries.append(Recovery(f.role, f.rank, member.node, f.what))
                self.formed = []
                redone += 1
                continue
            if failures:
                raise (died or failures)[0]
            sent = results[0]
            if "error" in sent:
                rank0 = learners[0]
                raise RoleFailure("actor", 0, rank0.node, f"weight sync broadcast: {sent['error']}", restartable=False)
            return self._checked(sent, engines, results[len(learners) :])

    def _checked(self, sent: dict, engines: list[Member], received: list[dict]) -> SyncResult:
        """The sync's result, after each engine's check (a failed check fails the sync, naming the engine)."""
        for m, got in zip(engines, received):
            if not self.checked:
                break
            verdict = check(sent["sums"], got["received"], got["loaded"], got["cast"])
            if not verdict["ok"]:
                raise RoleFailure(
                    "rollout",
                    m.rank,
                    m.node,
                    f"weight sync check failed ({verdict}): the engine does not hold the weights that were sent",
                    restartable=False,
                )
        reload_s = max(got["seconds"] for got in received)
        return SyncResult(self.method, sent["bytes"], reload_s, len(self.checked), sent["peak_bytes"], sent["seconds"])


def _settle(members: list[Member], refs: list, timeout_s: float) -> tuple[list, list[RoleFailure]]:
    """Wait (bounded) until every call has ended, then each one's result or failure: after one member fails, the
    others' calls end too (rank 0 leaves the group), and which one failed first says nothing of the cause."""
    ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
    results, failures = [], []
    for m, ref in zip(members, refs):
        try:
            results.append(gather([m], [ref], 1.0)[0])
        except RoleFailure as exc:
            results.append(None)
            failures.append(exc)
    return results, failures


def weight_sync(
    config: SyncConfig, actor: LearnerGroup, rollout: RolloutGroup, timeout_s: float, restarts: int
) -> BroadcastSync | ObjectStoreSync:
    """The sync the job's `sync.method` names."""
    if config.method == "broadcast":
        return BroadcastSync(config, actor, rollout, timeout_s, restarts)
    return ObjectStoreSync(actor, rollout)
