"""What a PPO run records of its faults, and the fault injection that tests its recovery.

`FaultLog` appends one JSON line per event to `<output_dir>/faults.jsonl`:
- `injected`: the chaos monkey killed an actor (role, rank, node, step);
- `restarted`: Ray restarted an actor in place and its work was redone in the same step (rollout, reward,
  reference);
- `resumed`: the run restarted its roles from the last checkpoint after a failure (`from_step`: the checkpoint's
  step, `failed_step`: the step that failed; steps from_step + 1 .. failed_step are redone, and metrics.jsonl
  keeps each step once).

`Chaos` (config `faults.chaos`) kills one actor of a random role every `every` steps, a random moment into the
step, with `ray.kill(..., no_restart=False)`: an actor Ray may restart is restarted, the others die, as when
their process or node dies. A step is attacked once, also when it is redone after a restart. A kill may land
after its step ended (in the next step, or the checkpoint after it); the ones still pending are cancelled when
the attempt ends, so no kill reaches the roles of a later attempt.

`ChaosSource` wraps it around the roles from outside the loop: each step's request for experience (the step's
first call on the roles) first schedules that step's kill, so the loop itself knows nothing of fault injection.
"""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

import ray

from actors.calls import Member
from cluster.ppo.experience import ExperienceSource
from cluster.ppo.roles import Roles
from hrlaif_ray.config import ChaosConfig
from hrlaif_ray.metrics import PhaseTimer, read_jsonl
from hrlaif_ray.ppo.experience import Rollouts


class FaultLog:
    def __init__(self, folder: str | Path):
        self.path = Path(folder) / "faults.jsonl"
        self._lock = threading.Lock()

    def write(self, event: str, **fields) -> None:
        with self._lock, open(self.path, "a") as fh:
            fh.write(json.dumps({"event": event, "time": round(time.time(), 3), **fields}, default=str) + "\n")

    def rows(self) -> list[dict]:
        return read_jsonl(self.path)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


class Chaos:
    """Kills one actor every `cfg.every` steps (see the module's text)."""

    def __init__(self, cfg: ChaosConfig, log: FaultLog):
        self.cfg, self.log, self.rng = cfg, log, random.Random(cfg.seed)
        self.attacked: set[int] = set()
        self.timers: list[threading.Timer] = []

    def step(self, step: int, groups: dict[str, list[Member]]) -> None:
        """At the start of step `step` (1-based): schedule a kill if this step is due and was not attacked before.
        `groups`: each role's members in this run."""
        if step % self.cfg.every or step in self.attacked:
            return
        names = sorted(r for r in self.cfg.roles if groups.get(r))
        if not names:
            return
        self.attacked.add(step)
        role = self.rng.choice(names)
        member = self.rng.choice(groups[role])
        timer = threading.Timer(self.rng.uniform(0, self.cfg.delay_s), self._kill, (member, step))
        timer.daemon = True
        self.timers.append(timer)
        timer.start()

    def _kill(self, member: Member, step: int) -> None:
        try:
            ray.kill(member.handle, no_restart=False)
        except Exception as exc:  # already gone (the run ended or restarted first): nothing was injected
            self.log.write("injection_missed", step=step, role=member.role, rank=member.rank, what=str(exc)[:200])
            return
        self.log.write("injected", step=step, role=member.role, rank=member.rank, node=member.node)

    def stop(self) -> None:
        for t in self.timers:
            t.cancel()
        self.timers = []


class ChaosSource:
    """An experience source whose steps are attacked by `chaos` (see the module's text)."""

    def __init__(self, source: ExperienceSource, chaos: Chaos, roles: Roles):
        self.source, self.chaos, self.roles = source, chaos, roles

    def next(self, step: int) -> Rollouts:
        self.chaos.step(step + 1, self.roles.members())
        return self.source.next(step)

    def before_sync(self, timer: PhaseTimer) -> None:
        self.source.before_sync(timer)

    def buffered(self) -> Rollouts | None:
        return self.source.buffered()

    def close(self, failed: bool) -> None:
        self.chaos.stop()
        self.source.close(failed)
