"""Requests-per-minute and tokens-per-minute budget as a reservation schedule (GCRA, the generic cell rate
algorithm). `reserve(now, tokens)` returns how long the caller must wait before it may send; it never blocks,
so one instance can be shared by a whole pool behind a single Ray actor (`actors.labeler.RateLimiterActor`)
or used in-process (`LocalRateLimiter`)."""

from __future__ import annotations

import asyncio
import time


class RateBudget:
    def __init__(self, rpm: float | None, tpm: float | None, burst_s: float = 0.25):
        if (rpm is not None and rpm <= 0) or (tpm is not None and tpm <= 0):
            raise ValueError("rpm and tpm must be positive (or None for no limit)")
        self.rpm, self.tpm, self.burst_s = rpm, tpm, burst_s
        self._next_request = 0.0
        self._next_token = 0.0

    def reserve(self, now: float, tokens: int = 0) -> float:
        """Seconds to wait until a request of `tokens` tokens may start; books its share of the budget."""
        start = now
        if self.rpm:
            slot = max(self._next_request, now - self.burst_s)
            start = max(start, slot)
            self._next_request = slot + 60.0 / self.rpm
        if self.tpm and tokens:
            slot = max(self._next_token, now - self.burst_s)
            start = max(start, slot)
            self._next_token = slot + tokens * 60.0 / self.tpm
        return max(0.0, start - now)


class LocalRateLimiter:
    """An in-process limiter over a RateBudget, for one event loop."""

    def __init__(self, rpm: float | None = None, tpm: float | None = None):
        self.budget = RateBudget(rpm, tpm)

    async def acquire(self, tokens: int = 0) -> None:
        delay = self.budget.reserve(time.monotonic(), tokens)
        if delay > 0:
            await asyncio.sleep(delay)
