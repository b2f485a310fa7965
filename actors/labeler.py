"""The labeler pool: Ray actors that label with bounded async concurrency under one shared rate limit.

Each `LabelerActor` holds its own judge clients (openai SDK on httpx) and labels up to `concurrency` items at
a time; every HTTP attempt of every actor first reserves its share of the pool's requests- and tokens-per-
minute budget at one `RateLimiterActor`. `LabelerPool` is the driver side: it keeps each actor's queue full,
commits finished labels to the ledger in atomic shards, can be resized while it runs, and re-queues the items
of an actor that died (they were not committed, so nothing is lost and nothing committed is paid for twice).

Why not Ray Data's `map_batches(..., compute=ActorPoolStrategy(...))`: its task retries would re-call the
judge for labels already paid for, and its Parquet writes are not atomic, so it cannot keep exactly-once.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import ray

from actors.calls import Member, gather
from hrlaif_ray.config import LabelingConfig, PoolConfig
from hrlaif_ray.data.records import LabelRecord
from hrlaif_ray.labeling.autoscale import Autoscaler
from hrlaif_ray.labeling.budget import SpendCap
from hrlaif_ray.labeling.ledger import LabelLedger
from hrlaif_ray.labeling.rate_limit import RateBudget
from hrlaif_ray.labeling.strategies import JudgeAnswer, JudgeRequest, Judges, LabelItem, judge_task, label_item


@ray.remote(num_cpus=0)
class RateLimiterActor:
    """One RPM/TPM budget for the whole pool; `reserve` books a slot and says how long to wait for it."""

    def __init__(self, rpm: float | None, tpm: float | None):
        self.budget = RateBudget(rpm, tpm)

    def reserve(self, tokens: int) -> float:
        return self.budget.reserve(time.monotonic(), tokens)


class _SharedLimiter:
    def __init__(self, handle):
        self.handle = handle

    async def acquire(self, tokens: int = 0) -> None:
        delay = await self.handle.reserve.remote(tokens)
        if delay > 0:
            await asyncio.sleep(delay)


@ray.remote
class LabelerActor:
    def __init__(self, labeling_json: str, concurrency: int, limiter=None):
        cfg = LabelingConfig.model_validate_json(labeling_json)
        self.judges = Judges.from_config(cfg, _SharedLimiter(limiter) if limiter is not None else None)
        self.slots = asyncio.Semaphore(concurrency)

    async def label(self, item: LabelItem) -> LabelRecord:
        async with self.slots:  # at most `concurrency` labels talk to the judge; queued ones wait here
            return await label_item(self.judges, item)

    async def label_batch(self, items: list[LabelItem]) -> list[LabelRecord]:
        """Up to `concurrency` items in one Ray call (each still waits for its own slot): Ray's per-call CPU cost is
        paid once per batch, not once per item."""
        return list(await asyncio.gather(*(self.label(item) for item in items)))

    async def ask_batch(self, requests: list[JudgeRequest]) -> list[JudgeAnswer]:
        """Judge tasks outside labeling (evaluation), under the same concurrency and rate limit as labels."""

        async def one(request: JudgeRequest) -> JudgeAnswer:
            async with self.slots:
                return await judge_task(self.judges, request)

        return list(await asyncio.gather(*(one(r) for r in requests)))

    def set_concurrency(self, concurrency: int) -> None:
        self.slots = asyncio.Semaphore(concurrency)


@dataclass
class PoolStats:
    labeled: int = 0
    failed: int = 0
    requeued: int = 0
    shards: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    seconds: float = 0.0
    actors_max: int = 0
    attempts: Counter = field(default_factory=Counter)
    stopped_by_budget: bool = False  # the spend cap stopped it; `remaining` items were not started
    remaining: int = 0
    size_log: list = field(default_factory=list)  # (seconds since start, actors) at the start and each change
    scale_reasons: list = field(default_factory=list)  # the autoscaler's changes: (clock, actors, why)
    finished_at: list = field(default_factory=list)  # seconds since start at which each label came back
    labels: list = field(default_factory=list)  # the labels themselves, when `run(keep=True)`

    @property
    def labels_per_s(self) -> float:
        return self.labeled / self.seconds if self.seconds else 0.0


class ItemFeed:
    """Items that arrive while the pool runs (a PPO step's groups as the engines finish them): `put` them, `close`
    after the last; `LabelerPool.run` takes them as they come."""

    def __init__(self):
        self._items: deque[LabelItem] = deque()
        self._closed = False
        self._ready = threading.Condition()

    def put(self, item: LabelItem) -> None:
        with self._ready:
            self._items.append(item)
            self._ready.notify()

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify()

    def take(self, wait_s: float) -> list[LabelItem]:
        """What has arrived, waiting up to `wait_s` for something when nothing has."""
        with self._ready:
            if not self._items and not self._closed and wait_s > 0:
                self._ready.wait(wait_s)
            out = list(self._items)
            self._items.clear()
            return out

    @property
    def drained(self) -> bool:
        """Closed, and everything put in was taken."""
        with self._ready:
            return self._closed and not self._items


class LabelerPool:
    def __init__(self, labeling: LabelingConfig, pool: PoolConfig):
        self.labeling, self.pool = labeling, pool
        self.limiter = RateLimiterActor.remote(pool.rpm, pool.tpm) if (pool.rpm or pool.tpm) else None
        self.active: list = []
        self.draining: list = []
        self.idle: list = []  # started actors without work: the autoscaler's standby
        self.resize(pool.labelers)
        if pool.autoscale is not None:  # warm standby: started now, so growing later does not wait for processes
            room = max(0, pool.autoscale.max - len(self.active))
            self.idle = [self._new_actor() for _ in range(min(pool.autoscale.standby, room))]

    def _new_actor(self):
        return LabelerActor.options(
            num_cpus=self.pool.num_cpus_per_labeler,
            max_concurrency=4 * self.pool.concurrency + 8,
            scheduling_strategy="SPREAD" if self.pool.spread else "DEFAULT",
        ).remote(self.labeling.model_dump_json(), self.pool.concurrency, self.limiter)

    def set_concurrency(self, concurrency: int) -> None:
        """Change labels in flight per actor (the actors' own limit and the driver's queue depth)."""
        self.pool = self.pool.model_copy(update={"concurrency": concurrency})
        self._all(self.active, lambda _, a: a.set_concurrency.remote(concurrency))

    def resize(self, n: int) -> None:
        """Grow or shrink to n actors; removed actors finish what they hold, then are stopped (or kept idle as the
        autoscaler's standby). Growing takes a draining actor first, then an idle one, then starts one."""
        if n < 1:
            raise ValueError(f"a labeler pool needs at least 1 actor, got {n}")
        while len(self.active) < n:
            reuse = self.draining or self.idle
            self.active.append(reuse.pop() if reuse else self._new_actor())
        while len(self.active) > n:
            self.draining.append(self.active.pop())

    def ready(self) -> None:
        """Wait until every started actor (active and standby) has finished starting."""
        self._all([*self.active, *self.idle], lambda _, a: a.set_concurrency.remote(self.pool.concurrency))

    def _all(self, actors: list, call) -> list:
        """call(i, actor) on each, bounded by `pool.call_timeout_s`; a failure names the labeler (its index)."""
        members = [Member("labeler", i, a) for i, a in enumerate(actors)]
        return gather(members, [call(i, a) for i, a in enumerate(actors)], self.pool.call_timeout_s)

    @property
    def size(self) -> int:
        return len(self.active)

    def run(
        self,
        items: list[LabelItem] | ItemFeed,
        ledger: LabelLedger,
        progress: bool = False,
        control: Callable[[], int | None] | None = None,
        cap: SpendCap | None = None,
        keep: bool = False,
    ) -> PoolStats:
        """Label `items`, committing to `ledger` every shard_size labels or commit_interval_s seconds.
        `control`, polled each round, may return a new pool size; otherwise `pool.autoscale` sizes the pool. With
        `cap`, no label starts that could take the spend past it (see `SpendCap`); the rest stay queued. With `keep`,
        the stats hold the labels too. `items` may be an `ItemFeed`: items are taken as they are put in, until it is
        closed."""
        feed = items if isinstance(items, ItemFeed) else None
        stats, queue = PoolStats(), deque(() if feed is not None else items)
        scaler = Autoscaler(self.pool.autoscale, self.pool.concurrency, self.pool.rpm) if self.pool.autoscale else None
        if scaler is not None:
            self.resize(max(scaler.cfg.min, min(scaler.cfg.max, self.size)))
        inflight: dict = {}  # ref -> (actor, items of that call)
        load: Counter = Counter()
        buffer: list[LabelRecord] = []
        last_commit = start = time.monotonic()
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=None if feed is not None else len(items), unit="label", dynamic_ncols=True)

        def commit() -> None:
            nonlocal last_commit
            if buffer and ledger.commit(buffer) is not None:
                stats.shards += 1
            buffer.clear()
            last_commit = time.monotonic()

        try:
            stats.size_log.append((0.0, self.size))
            while queue or inflight or (feed is not None and not feed.drained):
                if feed is not None:
                    queue.extend(feed.take(wait_s=0.0 if queue or inflight else 0.05))
                wanted = control() if control else None
                if not wanted and scaler is not None:
                    wanted = scaler.decide(time.monotonic(), len(queue) + sum(load.values()), self.size)
                if wanted and wanted != self.size:
                    self.resize(wanted)
                    stats.size_log.append((round(time.monotonic() - start, 3), self.size))
                stats.actors_max = max(stats.actors_max, self.size)
                room = cap.room(sum(load.values())) if cap is not None else None
                if room == 0 and not inflight and queue:  # the cap: nothing may start and nothing is in flight
                    stats.stopped_by_budget, stats.remaining = True, len(queue)
                    break
                # Keep every active actor busy: `concurrency` labels at the judge plus as many queued in the
                # actor, so the driver's round trip is off the critical path (the actor's semaphore bounds
                # what reaches the judge).
                depth, batch = 2 * self.pool.concurrency, self.pool.concurrency
                for actor in self.active:
                    while queue and load[actor] < depth and room != 0:
                        take = min(batch, len(queue), depth - load[actor], room if room is not None else len(queue))
                        chunk = [queue.popleft() for _ in range(take)]
                        inflight[actor.label_batch.remote(chunk)] = (actor, chunk)
                        load[actor] += len(chunk)
                        room = None if room is None else room - take
                standby = self.pool.autoscale.standby if self.pool.autoscale else 0
                for actor in [a for a in self.draining if load[a] == 0]:
                    self.draining.remove(actor)
                    if len(self.idle) < standby:
                        self.idle.append(actor)
                    else:
                        ray.kill(actor)
                if not inflight:
                    continue
                # Collect what finishes within 50 ms in one batch: the actors hold a backlog, so waiting a
                # little costs no throughput, and one wait per batch (not per label) keeps the driver cheap.
                ready, _ = ray.wait(list(inflight), num_returns=len(inflight), timeout=0.05)
                for ref in ready:
                    actor, chunk = inflight.pop(ref)
                    load[actor] -= len(chunk)
                    try:
                        labels = ray.get(ref)
                    except ray.exceptions.RayActorError:  # the actor died: its items were not committed
                        queue.extendleft(reversed(chunk))
                        stats.requeued += len(chunk)
                        if actor in self.active:
                            self.active[self.active.index(actor)] = self._new_actor()
                        continue
                    buffer.extend(labels)
                    if keep:
                        stats.labels.extend(labels)
                    stats.finished_at += [round(time.monotonic() - start, 4)] * len(labels)
                    for label in labels:
                        if cap is not None:
                            cap.record(label)
                        if scaler is not None:
                            scaler.observe(label)
                        stats.labeled += 1
                        stats.failed += label.status != "ok"
                        stats.tokens_in += label.tokens_in
                        stats.tokens_out += label.tokens_out
                        stats.cost_usd += label.cost_usd
                    if bar is not None:
                        bar.update(len(labels))
                        bar.set_postfix(
                            failed=stats.failed, cost=f"${stats.cost_usd:.4f}", actors=self.size, refresh=False
                        )
                if len(buffer) >= self.pool.shard_size or time.monotonic() - last_commit > self.pool.commit_interval_s:
                    commit()
        finally:
            commit()  # also on an exception or Ctrl-C: what is labeled is kept (only SIGKILL loses the buffer)
            if scaler is not None:
                stats.scale_reasons = scaler.log
            if bar is not None:
                bar.close()
            stats.seconds = time.monotonic() - start
        return stats

    def ask(self, requests: list[JudgeRequest]) -> list[JudgeAnswer]:
        """Answers of judge tasks, in order, dealt to the actors in contiguous chunks (see `judge_task`)."""
        if not requests:
            return []
        size = -(-len(requests) // len(self.active))
        chunks = self._all(
            self.active[: -(-len(requests) // size)],
            lambda i, a: a.ask_batch.remote(requests[i * size : (i + 1) * size]),
        )
        return [answer for chunk in chunks for answer in chunk]

    def shutdown(self) -> None:
        for actor in [*self.active, *self.draining, *self.idle]:
            ray.kill(actor)
        if self.limiter is not None:
            ray.kill(self.limiter)
        self.active, self.draining, self.idle = [], [], []
