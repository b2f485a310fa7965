"""Budget caps of a labeling run: stop before the judge spend (USD or tokens) would pass the cap.

The driver admits a label only while what is spent, plus every label in flight and the new one counted at the
dearest label so far (times `headroom`), stays within the cap; until a first paid label has finished, one label is
in flight at a time (its cost is not known yet). Labels in flight always finish and are committed, so the cap can be
passed only by a label dearer than `headroom` x the dearest before it; the summary reports the spend either way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hrlaif_ray.data.records import LabelRecord


@dataclass
class SpendCap:
    usd: float | None = None
    tokens: int | None = None
    headroom: float = 1.25
    spent_usd: float = 0.0
    spent_tokens: int = 0
    dearest_usd: float = 0.0
    dearest_tokens: int = 0

    def record(self, label: LabelRecord) -> None:
        tokens = label.tokens_in + label.tokens_out
        self.spent_usd += label.cost_usd
        self.spent_tokens += tokens
        self.dearest_usd = max(self.dearest_usd, label.cost_usd)
        self.dearest_tokens = max(self.dearest_tokens, tokens)

    def room(self, inflight: int) -> int | None:
        """How many more labels may start now, `inflight` being in flight (None: no cap)."""
        if self.usd is None and self.tokens is None:
            return None
        if not (self.dearest_usd or self.dearest_tokens):  # no paid label yet (cache hits cost nothing): one at a time
            return 1 if inflight == 0 else 0
        limits = []
        for cap, spent, dearest in (
            (self.usd, self.spent_usd, self.dearest_usd),
            (self.tokens, self.spent_tokens, self.dearest_tokens),
        ):
            if cap is None:
                continue
            per_label = dearest * self.headroom
            limits.append(math.inf if per_label <= 0 else math.floor((cap - spent) / per_label + 1e-9) - inflight)
        room = min(limits)
        return max(0, room if math.isfinite(room) else 1 << 30)
