"""How the labeler pool sizes itself while it runs (`pool.autoscale`).

Every `interval_s` the pool asks for the number of actors that keeps the judge as busy as it may be:

- with a rate limit, by Little's law: the requests in flight that keep up with the limit are the limit (requests/s)
  times the judge's latency per answer (an average over intervals, or the last interval's when higher: up fast,
  down slow), measured on the labels that finished in the interval (the HTTP time of
  each answered attempt, without the wait for the rate limit, so a pool already at the limit does not read its own
  queueing as a slower judge). Each label in flight has at least one request in flight, so that many labels in
  flight (x `headroom`) suffice: actors = ceil(labels / target_inflight_per_actor). A label whose requests run in
  parallel makes this an over-estimate, never an under-estimate;
- without one, the backlog alone sets the size;
- never more actors than the backlog (queued + in flight labels) fills, so the pool shrinks as the queue drains
  (to `min` when it is empty);
- when more than `max_429_share` of the interval's HTTP attempts were answered 429 (the provider is overrun),
  one actor fewer, whatever the rules above say.

The pool resizes through its `resize` path, which lets a removed actor finish what it holds: no label in flight is
dropped. Each change is logged (time, size, reason).
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
    headroom: float = 1.1
    smoothing: float = 0.5  # weight of the last interval in the latency average
    latency_s: float | None = None  # the judge's time per answer, averaged over intervals
    attempts: int = 0
    rate_limited: int = 0
    judge_s: float = 0.0
    answers: int = 0
    last: float | None = None
    log: list[tuple[float, int, str]] = field(default_factory=list)

    def observe(self, label: LabelRecord) -> None:
        """A finished label: its HTTP attempts (429s among them) and the judge's time on its answers."""
        stats = label.stats
        self.attempts += sum(v for k, v in stats.items() if k.startswith("attempts_"))
        self.rate_limited += stats.get("attempts_http_429", 0)
        self.judge_s += stats.get("judge_s", 0.0)
        self.answers += stats.get("judge_answers", 0)

    def decide(self, now: float, backlog: int, size: int) -> int | None:
        """The pool size wanted now (None: not time for a decision yet)."""
        if self.last is None:
            self.last = now
            return None
        if now - self.last < self.cfg.interval_s:
            return None
        attempts, limited = self.attempts, self.rate_limited
        last_latency = self.judge_s / self.answers if self.answers else None
        if last_latency is not None:
            a = self.smoothing
            self.latency_s = last_latency if self.latency_s is None else (1 - a) * self.latency_s + a * last_latency
        self.last, self.attempts, self.rate_limited, self.judge_s, self.answers = now, 0, 0, 0.0, 0
        target = self.cfg.target_inflight_per_actor or self.concurrency
        fills = math.ceil(backlog / target)
        if attempts and limited / attempts > self.cfg.max_429_share:
            wanted, reason = size - 1, f"429 on {limited} of {attempts} attempts"
        elif self.rpm:
            if self.latency_s is None:
                return None  # nothing answered yet: no latency to size by
            # Up fast, down slow: the last interval's latency when it is the higher (a judge that slowed down).
            latency = max(self.latency_s, last_latency or 0.0)
            inflight = self.rpm / 60 * latency * self.headroom
            wanted = min(math.ceil(inflight / target), fills)
            reason = f"{inflight:.1f} in flight for {self.rpm / 60:.1f} requests/s at {latency:.3f} s"
        else:
            wanted, reason = fills, f"backlog {backlog}"
        wanted = max(self.cfg.min, min(self.cfg.max, wanted))
        if wanted != size:
            self.log.append((round(now, 3), wanted, reason))
        return wanted
