"""How the labeler pool sizes itself while it runs (`pool.autoscale`).

Every `interval_s` the pool asks for the number of actors that keeps the judge as busy as it may be:

- never more actors than the backlog (queued + in flight labels) fills at `target_inflight_per_actor` each, so
  the pool shrinks as the queue drains (to `min` when it is empty);
- with a rate limit, it grows while the limit has headroom: when the judge was called at under 90% of the limit
  in the last interval, the pool grows in proportion (limit / measured rate, at most doubling per decision);
  at the limit it holds. Without one, the backlog alone sets the size;
- when more than `max_429_share` of the interval's HTTP attempts were answered 429 (the provider is overrun),
  one actor fewer, whatever the rules above say;
- after a change it waits an interval before the next (new actors take a while to show in the measured rate).

The measured rate is the HTTP attempts of the labels that finished in the interval. The pool resizes through its
`resize` path, which lets a removed actor finish what it holds: no label in flight is dropped. Each change is
logged (time, size, reason).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from hrlaif_ray.config import AutoscaleConfig
from hrlaif_ray.data.records import LabelRecord


@dataclass
class Autoscaler:
    cfg: AutoscaleConfig
    concurrency: int  # labels at the judge per actor (the pool's setting)
    rpm: float | None = None  # the pool's rate limit, requests per minute
    attempts: int = 0
    rate_limited: int = 0
    last: float | None = None
    cooling: bool = False
    log: list[tuple[float, int, str]] = field(default_factory=list)

    def observe(self, label: LabelRecord) -> None:
        """A finished label: the HTTP attempts it made (429s among them)."""
        self.attempts += sum(v for k, v in label.stats.items() if k.startswith("attempts_"))
        self.rate_limited += label.stats.get("attempts_http_429", 0)

    def decide(self, now: float, backlog: int, size: int) -> int | None:
        """The pool size wanted now (None: not time for a decision yet)."""
        if self.last is None:
            self.last = now
            return None
        elapsed = now - self.last
        if elapsed < self.cfg.interval_s:
            return None
        rate, attempts, limited = self.attempts / elapsed, self.attempts, self.rate_limited
        self.last, self.attempts, self.rate_limited = now, 0, 0
        if self.cooling:
            self.cooling = False
            return None
        target = self.cfg.target_inflight_per_actor or self.concurrency
        fills = math.ceil(backlog / target)
        if attempts and limited / attempts > self.cfg.max_429_share:
            wanted, reason = size - 1, f"429 on {limited} of {attempts} attempts"
        elif self.rpm:
            limit = self.rpm / 60
            grow = rate < 0.9 * limit and attempts > 0
            wanted = math.ceil(size * min(2.0, limit / max(rate, 1e-9))) if grow else size
            wanted = min(wanted, fills)
            reason = f"{rate:.1f} of {limit:.1f} requests/s, backlog {backlog}"
        else:
            wanted, reason = fills, f"backlog {backlog}"
        wanted = max(self.cfg.min, min(self.cfg.max, wanted))
        if wanted != size:
            self.log.append((round(now, 3), wanted, reason))
            self.cooling = True
        return wanted
