"""Every Ray call the controller waits on, bounded and named.

`gather(members, refs, timeout_s)` waits for the results of one call on several actors (a role's ranks or
replicas) at most `timeout_s` seconds and returns them in order. It fails as soon as one of them fails (a rank
that died while its peers wait in a collective is reported at once, not after gloo's half-hour timeout) and the
error, a `RoleFailure`, names the role, the rank and the node; the controller adds the step. An actor that Ray
killed for memory gets a hint at the setting to lower.

`Member` is one actor of a role with the node it runs on (read when it starts and after every restart).

`gather_restarting(members, call, ...)` is `gather` for the roles whose actors Ray restarts in place (rollout
engines, reward replicas, reference ranks: `max_restarts`): a member that died, or hung past the timeout (it is
killed, so Ray restarts it), is waited for, restored (the rollout engines reload the current weights) and its
share of the call is redone; each such recovery is appended to `recoveries` for the controller to log.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError, GetTimeoutError, OutOfMemoryError, RayActorError, RayTaskError

from hrlaif_ray.errors import RunFailure

# What to lower when a role runs out of memory (the step's batch is split over the ranks by these settings).
MEMORY_SETTINGS = {
    "rollout": "rollout.kv_cache_gib (CPU) or rollout.gpu_memory_utilization, or rollout.max_model_len",
    "reward": "algo.micro_batch_size (the RM scores that many rows a forward)",
    "reference": "algo.micro_batch_size",
    "actor": "algo.micro_batch_size",
    "critic": "algo.micro_batch_size",
    "labeler": "pool.concurrency",
}


# How Ray's memory monitor, torch on CPU and CUDA say it. Not a bare "OOM": Ray's text for any dead worker lists
# "killed by the OOM killer" among the possible causes.
OOM = re.compile(r"out of memory|OutOfMemory|running low on memory|can't allocate memory|memory monitor", re.IGNORECASE)


class StaleState(RuntimeError):
    """Raised by an actor that Ray restarted and that got a call before it was restored (a rollout engine holding
    the weights it started from, not the last synced ones): the caller restores it and redoes the call."""


class RoleFailure(RunFailure):
    """A role's actor failed, died or did not answer in time. `step` is set by the controller (None outside a step).
    `restartable`: the actor died (a restart may mend it) rather than raised an error of its own. `hung`: it did not
    answer in time (alive as far as Ray knows: it must be killed to restart)."""

    def __init__(
        self,
        role: str,
        rank: int,
        node: str,
        what: str,
        restartable: bool = True,
        step: int | None = None,
        hung: bool = False,
    ):
        self.role, self.rank, self.node, self.what = role, rank, node, what
        self.restartable, self.step, self.hung = restartable, step, hung
        super().__init__(role, rank, node, what)

    def __str__(self) -> str:
        at = f" at step {self.step}" if self.step is not None else ""
        return f"{self.role} rank {self.rank} on node {self.node}{at}: {self.what}"


@dataclass
class Member:
    """One actor of a role: its handle, its rank in the role and the node it runs on ('?' until it answered)."""

    role: str
    rank: int
    handle: Any
    node: str = "?"


def row_ranges(n: int, k: int, exact: bool = False) -> list[tuple[int, int]]:
    """n rows dealt to k actors as contiguous (start, end) ranges whose sizes differ by at most one (the first ones
    the longer); fewer ranges when there are fewer rows than actors. `exact`: equal ranges, and n must divide by k
    (a learner group's ranks step their optimizers together on equal shares)."""
    if k < 1:
        raise ValueError(f"rows must be dealt to at least one actor, got {k}")
    if exact and n % k:
        raise ValueError(f"a batch of {n} rows does not split evenly over {k} ranks")
    size, extra = divmod(n, k)
    bounds = [0]
    for i in range(k):
        bounds.append(bounds[-1] + size + (i < extra))
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a or exact]


def node_of_this_process() -> str:
    """This process's node as `ip (node id prefix)`: what an actor's `ready()` returns."""
    ctx = ray.get_runtime_context()
    return f"{ray.util.get_node_ip_address()} ({ctx.get_node_id()[:8]})"


def _describe(exc: BaseException, role: str) -> tuple[str, bool]:
    """What went wrong in one line, and whether the actor died (restartable) rather than raised."""
    text = str(exc).strip().splitlines()
    first = next((line for line in text if line.strip()), type(exc).__name__)
    oom = isinstance(exc, OutOfMemoryError) or OOM.search(str(exc)) is not None
    if oom:  # restartable only when the process died of it (Ray's memory monitor, the kernel), not a raised error
        died = isinstance(exc, (OutOfMemoryError, RayActorError))
        return f"ran out of memory ({first[:200]}); lower {MEMORY_SETTINGS.get(role, 'its batch')}", died
    if isinstance(exc, RayActorError):
        return f"the actor died ({first[:300]})", True
    if isinstance(exc, RayTaskError) and isinstance(getattr(exc, "cause", None), StaleState):
        return f"restarted and not yet restored ({exc.cause})", True
    if isinstance(exc, RayTaskError):
        cause = exc.cause if getattr(exc, "cause", None) is not None else exc
        return (
            f"{type(cause).__name__}: {str(cause).strip().splitlines()[0][:300] if str(cause).strip() else ''}",
            False,
        )
    return f"{type(exc).__name__}: {first[:300]}", False


def failure(member: Member, exc: BaseException) -> RoleFailure:
    what, restartable = _describe(exc, member.role)
    return RoleFailure(member.role, member.rank, member.node, what, restartable)


def gather(members: list[Member], refs: list, timeout_s: float) -> list:
    """The results of refs[i] (a call on members[i]) in order, within timeout_s; the first failure raises a
    RoleFailure naming its member."""
    deadline = time.monotonic() + timeout_s
    owner = {ref: m for ref, m in zip(refs, members, strict=True)}
    results: dict = {}
    pending = list(refs)
    while pending:
        left = deadline - time.monotonic()
        ready, pending = ray.wait(pending, num_returns=1, timeout=max(0.0, left))
        if not ready:
            m = owner[pending[0]]
            raise RoleFailure(m.role, m.rank, m.node, f"no answer after {timeout_s:.0f} s", hung=True)
        for ref in ready:  # a result that is an error fails the call now, whatever the others are doing
            try:
                results[ref] = ray.get(ref, timeout=max(1.0, deadline - time.monotonic()))
            except GetTimeoutError:  # pragma: no cover - a ready result resolves at once
                m = owner[ref]
                raise RoleFailure(m.role, m.rank, m.node, f"no answer after {timeout_s:.0f} s", hung=True) from None
            except Exception as exc:
                raise failure(owner[ref], exc) from exc
    return [results[ref] for ref in refs]


def wait_ready(members: list[Member], timeout_s: float) -> None:
    """Wait until every member has started (its `ready()` answered with its node) and record the nodes."""
    nodes = gather(members, [m.handle.ready.remote() for m in members], timeout_s)
    for m, node in zip(members, nodes):
        m.node = node


@dataclass
class Recovery:
    """One in-place restart: which member, where it runs now, and what had gone wrong."""

    role: str
    rank: int
    node: str
    what: str


def gather_restarting(
    members: list[Member],
    call: Callable[[Member], Any],
    timeout_s: float,
    restarts: int,
    recoveries: list[Recovery],
    restore: Callable[[Member], Any] | None = None,
    lock: threading.Lock | None = None,
) -> list:
    """`gather` of call(member) for every member; a member that died or hung is recovered in place (at most
    `restarts` times in this call) and its call redone. An error the actor raised itself is not retried. `lock`,
    held while the calls are submitted, keeps them contiguous among other threads' calls on the same actors."""
    with lock or contextlib.nullcontext():
        refs = [call(m) for m in members]
    redone = 0
    while True:
        try:
            return gather(members, refs, timeout_s)
        except RoleFailure as exc:
            if not exc.restartable or redone >= restarts:
                raise
            i = next(i for i, m in enumerate(members) if m.rank == exc.rank)
            recover(members[i], timeout_s, hung=exc.hung)
            if restore is not None:
                gather([members[i]], [restore(members[i])], timeout_s)
            recoveries.append(Recovery(exc.role, exc.rank, members[i].node, exc.what))
            refs[i] = call(members[i])
            redone += 1


def recover(member: Member, timeout_s: float, hung: bool = False) -> None:
    """Wait for Ray to restart a member (a hung one is killed first, so that it restarts); its node is read again.
    A member out of restarts fails here with a RoleFailure."""
    if hung:
        ray.kill(member.handle, no_restart=False)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return wait_ready([member], max(1.0, deadline - time.monotonic()))
        except RoleFailure as exc:  # calls made while it restarts fail at once ("unavailable"): ask again
            if not isinstance(exc.__cause__, ActorUnavailableError) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
