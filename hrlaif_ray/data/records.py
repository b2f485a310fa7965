"""Record types of the pipeline's Parquet files: prompts, rollouts, labels and human preference pairs.

A label's preference `pairs` are the source of truth (better, worse, weight, source); `tiers` are derived from
them only where the pairs form a weak order (every member of a higher tier beats every member of a lower one,
and nothing else is said). Hybrid labeling produces such tiers (correct set ranked above the wrong set); a
plain judge with position-bias ties may not, and then `tiers` is None.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from hrlaif_ray.categories import Category


@dataclass
class PromptRecord:
    """One prompt with its category and, where it has one, the standard answer."""

    KIND: ClassVar[str] = "prompts"

    id: str
    category: str
    text: str
    source: str
    messages: list[dict[str, str]] | None = None  # chat form, [{"role", "content"}]; None when `text` is the prompt
    answer: str | None = None  # math: the number; multiple choice: the letter; code: the reference solution
    choices: list[str] | None = None  # multiple choice: the option texts, lettered A, B, C... in order
    tests: str | None = None  # code: the unit tests (HumanEval's `check(candidate)`)
    entry_point: str | None = None  # code: the function under test
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.category = Category.parse(self.category).value

    def to_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["metadata"] = json.dumps(self.metadata, sort_keys=True)
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> PromptRecord:
        return cls(**{**row, "metadata": json.loads(row["metadata"] or "{}")})


@dataclass
class HumanPair:
    """A human preference pair from an audit set (HH-RLHF, LLMBar, MT-Bench)."""

    KIND: ClassVar[str] = "human_pairs"

    id: str
    prompt: str
    chosen: str
    rejected: str
    source: str
    category: str  # what the human judged: "harmful" (harmlessness) or "open_qa" (helpfulness)

    def __post_init__(self) -> None:
        self.category = Category.parse(self.category).value

    def to_row(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> HumanPair:
        return cls(**row)


@dataclass
class Response:
    """One response of a rollout or a label. `origin` is "policy" (a sample) or "rewrite" (red-team rewrite)."""

    text: str
    token_ids: list[int] | None = None
    logprobs: list[float] | None = None
    finish_reason: str | None = None
    origin: str = "policy"

    def __post_init__(self) -> None:
        if self.origin not in ("policy", "rewrite", "reference"):
            raise ValueError(f"response origin must be policy, rewrite or reference, got {self.origin!r}")


@dataclass
class RolloutRecord:
    """K responses to one prompt, as sampled by the policy of `policy_version`."""

    KIND: ClassVar[str] = "rollouts"

    prompt_id: str
    category: str
    prompt_text: str
    prompt_token_ids: list[int]
    responses: list[Response]
    policy_version: int = 0

    def __post_init__(self) -> None:
        self.category = Category.parse(self.category).value

    def to_row(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> RolloutRecord:
        return cls(**{**row, "responses": [Response(**r) for r in row["responses"]]})


@dataclass(frozen=True)
class PreferencePair:
    """Response `better` is preferred to response `worse` (indices into the label's responses)."""

    better: int
    worse: int
    weight: float = 1.0
    source: str = "judge"  # "verifier", "judge", "redteam", "human"...
    tier: int = 0  # which judge tier decided it (tiered judging: 0 the first, cheapest; verifier pairs 0)

    def __post_init__(self) -> None:
        if self.better == self.worse:
            raise ValueError(f"a preference pair needs two different responses, got {self.better} twice")
        if self.weight < 0:
            raise ValueError(f"pair weight must be >= 0, got {self.weight}")


@dataclass
class Verdict:
    """What a verifier or judge said of one response: e.g. correct/wrong, harmful/harmless, with a reason."""

    response: int
    verdict: str
    reason: str = ""
    stage: str = ""  # "verify", "rank", "flag", "rewrite"...
    tier: int = 0  # which judge tier said it (0: the first, or the verifier)
    principles: list[str] = field(default_factory=list)  # flag: ids of the constitution's principles it breaks


# Why a pair of a label is unsure, so a person should look at it (`hrlaif review`): the two presentation orders
# disagreed, the ensemble split, the deciding judge stated a confidence below `labeling.review_confidence`, the
# verifier found no final answer in one of the two responses (the judge decided it), or one of them addresses the
# judge (`hrlaif_ray.labeling.injection`).
DISPUTE_REASONS = ("position", "ensemble", "low_confidence", "verifier_abstained", "injection")


@dataclass(frozen=True)
class Dispute:
    """Responses `a` < `b` of a label are a pair the labeling was unsure of, and why (`DISPUTE_REASONS`)."""

    a: int
    b: int
    reason: str
    detail: str = ""  # what the judge said: its stated reasons and confidence

    def __post_init__(self) -> None:
        if not 0 <= self.a < self.b:
            raise ValueError(f"a dispute names two responses a < b, got {self.a} and {self.b}")
        if self.reason not in DISPUTE_REASONS:
            raise ValueError(f"dispute reason must be one of {', '.join(DISPUTE_REASONS)}, got {self.reason!r}")


HUMAN_DECISIONS = ("a", "b", "tie", "skip")


@dataclass
class HumanDecision:
    """A person's decision on one pair of a label (`hrlaif review`): response `a` or `b` is better, a tie, or skip.

    `item` names the pair (`<label key>:<a>-<b>`); `pair_digest` is of the prompt and the two responses as shown, so
    a decision never lands on another text than the one decided; `ai` is what the AI labels stated of the pair then
    ("a", "b" or "none"); `queue`: "disputed" (the labeling was unsure) or "audit" (a seeded sample of the rest)."""

    KIND: ClassVar[str] = "human_labels"

    item: str
    label_key: str
    prompt_id: str
    a: int
    b: int
    decision: str
    reviewer: str
    queue: str
    ai: str
    pair_digest: str
    decided_at: float

    def __post_init__(self) -> None:
        if self.decision not in HUMAN_DECISIONS:
            raise ValueError(f"decision must be one of {', '.join(HUMAN_DECISIONS)}, got {self.decision!r}")
        if self.queue not in ("disputed", "audit"):
            raise ValueError(f"queue must be disputed or audit, got {self.queue!r}")
        if self.ai not in ("a", "b", "none"):
            raise ValueError(f"ai must be a, b or none, got {self.ai!r}")
        if not self.reviewer.strip():
            raise ValueError("a decision needs a reviewer name")
        if not 0 <= self.a < self.b:
            raise ValueError(f"a decision names two responses a < b, got {self.a} and {self.b}")

    def to_row(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> HumanDecision:
        return cls(**row)


@dataclass
class LabelRecord:
    """The label of one prompt: its responses, the preference pairs (truth), tiers (derived) and verdicts."""

    KIND: ClassVar[str] = "labels"

    prompt_id: str
    category: str
    method: str  # "hybrid", "basic", "redteam"
    responses: list[Response]
    pairs: list[PreferencePair]
    verdicts: list[Verdict] = field(default_factory=list)
    judge_model: str = ""
    template_version: str = ""
    idempotency_key: str = ""
    prompt_digest: str = ""  # of the prompt labeled (`hrlaif_ray.data.binding`); "" in files of schema 2 and older
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    status: str = "ok"  # "ok" or "failed"; a failed label is recorded, never dropped
    error: str | None = None
    # How the label was made, for the quality report (`hrlaif_ray.labeling.quality`): position consistency, A/B
    # wins, ties, ensemble votes, escalations, judge fallbacks, re-asks, attempts by status, cache hits, latency.
    stats: dict[str, Any] = field(default_factory=dict)
    disputes: list[Dispute] = field(default_factory=list)  # the pairs a person should review; [] before schema 4

    def __post_init__(self) -> None:
        self.category = Category.parse(self.category).value
        n = len(self.responses)
        for pair in self.pairs:
            if not (0 <= pair.better < n and 0 <= pair.worse < n):
                raise ValueError(f"pair {pair} names a response outside 0..{n - 1}")
        for dispute in self.disputes:
            if dispute.b >= n:
                raise ValueError(f"dispute {dispute} names a response outside 0..{n - 1}")

    @property
    def tiers(self) -> list[list[int]] | None:
        return tiers_from_pairs(len(self.responses), self.pairs)

    def to_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["tiers"] = self.tiers
        row["stats"] = json.dumps(self.stats, sort_keys=True)
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> LabelRecord:
        row = {k: v for k, v in row.items() if k != "tiers"}
        return cls(
            **{
                **row,
                "stats": json.loads(row.get("stats") or "{}"),  # schema 1 files have none
                "responses": [Response(**r) for r in row["responses"]],
                "pairs": [PreferencePair(**p) for p in row["pairs"]],
                "verdicts": [Verdict(**v) for v in row["verdicts"]],
                "disputes": [Dispute(**d) for d in row.get("disputes") or []],
            }
        )


def tiers_from_pairs(n: int, pairs: list[PreferencePair]) -> list[list[int]] | None:
    """Tiers (best first) when `pairs` are exactly a weak order over the n responses, else None.

    A weak order: responses fall into tiers, every response of a higher tier is preferred to every response
    of a lower one, and no other preference is stated. Weights are ignored; duplicate pairs are allowed, a pair
    and its reverse (a contradiction) are not.
    """
    stated = {(p.better, p.worse) for p in pairs}
    if any((w, b) in stated for b, w in stated):
        return None
    beaten_by = {i: {b for b, w in stated if w == i} for i in range(n)}
    # In a weak order, a response's tier is fixed by how many responses beat it.
    by_rank: dict[int, list[int]] = {}
    for i in range(n):
        by_rank.setdefault(len(beaten_by[i]), []).append(i)
    tiers = [by_rank[k] for k in sorted(by_rank)]
    implied = {(b, w) for hi, upper in enumerate(tiers) for lower in tiers[hi + 1 :] for b in upper for w in lower}
    if implied != stated:
        return None
    return tiers
