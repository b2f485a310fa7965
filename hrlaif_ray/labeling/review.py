"""Human review of the labels the AI was unsure of: the review queue, the people's decisions, and the overrides
training takes.

RLAIF in practice puts people on the disagreements: the AI labels everything, experts review where it is unsure,
their decisions go back into training. The labeling knows where it is unsure and records it per pair
(`LabelRecord.disputes`: presentation orders that disagreed, an ensemble split, a low stated confidence, a response
the verifier could not read). This module is the part that needs no server:

- **The queue** (`review_queue`): every disputed pair, then a seeded random audit sample of the pairs the AI stated
  without doubt, so its agreement with people is measured where it was sure as well as where it was not.
- **The decisions** (`HumanLedger`): `<labels_dir>/human/decisions-*.parquet` (kind `human_labels`), each commit one
  shard written atomically (temp file, fsync, rename), so a crash loses at most the decision being written and a
  restarted page resumes where its reviewers were. A reviewer's later decision on an item replaces their earlier one.
  Each decision carries the digest of the prompt and the two responses it was made on: a decision whose label is not
  in the folder (a foreign file) or whose texts changed (a tampered one) is refused, naming the shard.
- **The overrides** (`apply_overrides`): per pair, the majority of the reviewers who decided it (a skip decides
  nothing; an even split leaves the AI's pair). "a" or "b" states the pair as a `human` pair in place of whatever the
  AI stated of it; "tie" drops it. `train-rm`, `dpo` and the online reward apply them (`human_overrides`).
- **Agreement** (`agreement`): AI against the people's majority, on the disputed set and on the audit sample apart,
  and the reviewers with each other.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from itertools import combinations
from pathlib import Path

from hrlaif_ray.data.records import HumanDecision, LabelRecord, PreferencePair
from hrlaif_ray.data.schemas import read_records, write_records
from hrlaif_ray.errors import DataError

HUMAN_DIR = "human"
SHARD_GLOB = "decisions-*.parquet"
OVERRIDE_COUNTS = ("decided", "agreed", "reversed", "added", "tied")


def item_id(label: LabelRecord, a: int, b: int) -> str:
    return f"{label.idempotency_key}:{a}-{b}"


def pair_digest(label: LabelRecord, a: int, b: int) -> str:
    """Of what a reviewer is shown of a pair: the label's prompt (by its digest), responses a and b."""
    basis = [label.prompt_id, label.prompt_digest, label.responses[a].text, label.responses[b].text]
    return hashlib.sha256(json.dumps(basis).encode()).hexdigest()[:16]


def ai_says(label: LabelRecord, a: int, b: int) -> tuple[str, PreferencePair | None]:
    """What the AI labels state of responses a, b: ("a" | "b" | "none", the pair that says it)."""
    for pair in label.pairs:
        if (pair.better, pair.worse) == (a, b):
            return "a", pair
        if (pair.better, pair.worse) == (b, a):
            return "b", pair
    return "none", None


@dataclass
class ReviewItem:
    """One pair on the review queue, with what the page shows of it."""

    item: str
    queue: str  # "disputed" or "audit"
    label: LabelRecord
    a: int
    b: int
    reasons: list[tuple[str, str]] = field(default_factory=list)  # (dispute reason, what the judge said)

    @property
    def ai(self) -> str:
        return ai_says(self.label, self.a, self.b)[0]

    @property
    def digest(self) -> str:
        return pair_digest(self.label, self.a, self.b)

    def decided(self, decision: str, reviewer: str, at: float) -> HumanDecision:
        """A reviewer's decision on this item, bound to the texts shown and to what the AI states of the pair."""
        return HumanDecision(
            self.item, self.label.idempotency_key, self.label.prompt_id, self.a, self.b, decision, reviewer.strip(),
            self.queue, self.ai, self.digest, at,
        )  # fmt: skip

    def view(self, prompt_text: str) -> dict:
        """The item as the page renders it (JSON)."""
        label, (ai, pair) = self.label, ai_says(self.label, self.a, self.b)

        def verdicts(i: int) -> list[dict]:
            return [
                {"stage": v.stage, "verdict": v.verdict, "reason": v.reason, "tier": v.tier, "principles": v.principles}
                for v in label.verdicts
                if v.response == i
            ]

        return {
            "item": self.item,
            "digest": self.digest,
            "queue": self.queue,
            "prompt_id": label.prompt_id,
            "category": label.category,
            "method": label.method,
            "prompt": prompt_text,
            "responses": [label.responses[self.a].text, label.responses[self.b].text],
            "verdicts": [verdicts(self.a), verdicts(self.b)],
            "ai": ai,
            "ai_source": pair.source if pair else None,
            "ai_tier": pair.tier if pair else None,
            "judge_model": label.judge_model,
            "reasons": [{"reason": r, "detail": d} for r, d in self.reasons],
        }


def review_queue(labels: list[LabelRecord], audit_fraction: float = 0.05, seed: int = 0) -> list[ReviewItem]:
    """The disputed pairs of the ok labels (by prompt id, then pair), then a seeded sample of `audit_fraction` of
    the other pairs the AI stated, in a seeded random order."""
    labels = sorted((l for l in labels if l.status == "ok"), key=lambda l: (l.prompt_id, l.idempotency_key))
    disputed, rest = [], []
    for label in labels:
        reasons: dict[tuple[int, int], list[tuple[str, str]]] = defaultdict(list)
        for d in label.disputes:
            reasons[(d.a, d.b)].append((d.reason, d.detail))
        for (a, b), why in sorted(reasons.items()):
            disputed.append(ReviewItem(item_id(label, a, b), "disputed", label, a, b, why))
        stated = sorted({tuple(sorted((p.better, p.worse))) for p in label.pairs} - set(reasons))
        rest += [ReviewItem(item_id(label, a, b), "audit", label, a, b) for a, b in stated]
    rng = random.Random(seed)
    audit = rng.sample(rest, round(audit_fraction * len(rest))) if rest else []
    rng.shuffle(audit)
    return disputed + audit


def latest(decisions: list[HumanDecision]) -> dict[tuple[str, str], HumanDecision]:
    """(item, reviewer) -> that reviewer's last decision on the item."""
    last: dict[tuple[str, str], HumanDecision] = {}
    for d in sorted(decisions, key=lambda d: d.decided_at):
        last[(d.item, d.reviewer)] = d
    return last


class HumanLedger:
    """The decisions committed to a label folder's `human/` folder, read back whole on open, each with its shard."""

    def __init__(self, labels_dir: str | Path):
        self.folder = Path(labels_dir) / HUMAN_DIR
        self.shards: list[tuple[Path, HumanDecision]] = [
            (shard, d) for shard in sorted(self.folder.glob(SHARD_GLOB)) for d in read_records(shard, "human_labels")
        ]

    @property
    def decisions(self) -> list[HumanDecision]:
        return [d for _, d in self.shards]

    def commit(self, decision: HumanDecision) -> Path:
        name = f"decisions-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        path = write_records(self.folder / name, [decision], "human_labels")
        self.shards.append((path, decision))
        return path

    def check(self, labels: list[LabelRecord]) -> None:
        """Every decision names a label of this folder and the texts it was made on; raises DataError naming the
        shard of the first that does not."""
        by_key = {l.idempotency_key: l for l in labels}
        for shard, d in self.shards:
            label = by_key.get(d.label_key)
            if label is None:
                raise DataError(
                    shard, None, "label_key", f"decision on {d.item} names no label of {self.folder.parent}"
                )
            if d.b >= len(label.responses) or d.item != item_id(label, d.a, d.b):
                raise DataError(shard, None, "item", f"decision on {d.item} names no pair of its label")
            if d.pair_digest != pair_digest(label, d.a, d.b):
                raise DataError(
                    shard,
                    None,
                    "pair_digest",
                    f"decision on {d.item} was made on other texts than the label now holds (changed since)",
                )


def majority(decisions: list[HumanDecision]) -> dict[str, str]:
    """item -> the decision ("a", "b", "tie") most of its reviewers made, their latest, skips left out; items whose
    reviewers split evenly have none."""
    votes: dict[str, Counter] = defaultdict(Counter)
    for d in latest(decisions).values():
        if d.decision != "skip":
            votes[d.item][d.decision] += 1
    out = {}
    for item, count in votes.items():
        (top, n), *others = count.most_common()
        if not others or others[0][1] < n:
            out[item] = top
    return out


def apply_overrides(labels: list[LabelRecord], decisions: list[HumanDecision]) -> tuple[list[LabelRecord], dict]:
    """The labels with the people's majority decision in place of the AI's pair wherever one exists, and the counts:
    pairs decided, agreed with the AI, reversed it, stated where the AI stated none, tied (dropped)."""
    pair_of = {d.item: (d.label_key, d.a, d.b) for d in decisions}
    by_label: dict[str, dict[tuple[int, int], str]] = defaultdict(dict)
    for item, verdict in majority(decisions).items():
        key, a, b = pair_of[item]
        by_label[key][(a, b)] = verdict
    counts = Counter()
    out = []
    for label in labels:
        mine = by_label.get(label.idempotency_key)
        if not mine:
            out.append(label)
            continue
        pairs = [p for p in label.pairs if tuple(sorted((p.better, p.worse))) not in mine]
        for (a, b), verdict in sorted(mine.items()):
            counts["decided"] += 1
            counts[_outcome(verdict, ai_says(label, a, b)[0])] += 1
            if verdict != "tie":
                better, worse = (a, b) if verdict == "a" else (b, a)
                pairs.append(PreferencePair(better, worse, 1.0, "human", 0))
        out.append(replace(label, pairs=pairs))
    return out, {k: counts[k] for k in OVERRIDE_COUNTS}


def _outcome(verdict: str, ai: str) -> str:
    """What a people's decision did to the AI's pair: agreed, tied (dropped it), added (the AI stated none), or
    reversed it."""
    if verdict == ai:
        return "agreed"
    if verdict == "tie":
        return "tied"
    return "added" if ai == "none" else "reversed"


def agreement(decisions: list[HumanDecision]) -> dict:
    """AI vs the people's majority per queue (on the items where the AI stated a preference, and where a majority
    exists), and the reviewers with each other (items two or more decided: the share of reviewer pairs alike)."""
    decided = majority(decisions)
    first: dict[str, HumanDecision] = {}
    for d in decisions:
        first.setdefault(d.item, d)
    report: dict = {"queues": {}, "reviewers": {}}
    for queue in ("disputed", "audit"):
        items = [i for i, d in first.items() if d.queue == queue]
        judged = [i for i in items if i in decided and first[i].ai != "none"]
        agree = sum(decided[i] == first[i].ai for i in judged)
        report["queues"][queue] = {
            "items": len(items),
            "decided": sum(i in decided for i in items),
            "ai_stated": len(judged),
            "ai_agreement": round(agree / len(judged), 4) if judged else None,
        }
    per_item: dict[str, dict[str, str]] = defaultdict(dict)
    for (item, reviewer), d in latest(decisions).items():
        report["reviewers"][reviewer] = report["reviewers"].get(reviewer, 0) + 1
        if d.decision != "skip":
            per_item[item][reviewer] = d.decision
    alike = total = 0
    for votes in per_item.values():
        for x, y in combinations(sorted(votes), 2):
            total += 1
            alike += votes[x] == votes[y]
    report["inter_reviewer"] = {"pairs": total, "agreement": round(alike / total, 4) if total else None}
    return report


def reviewed(
    labels_dir: str | Path, labels: list[LabelRecord], human_overrides: bool
) -> tuple[list[LabelRecord], dict]:
    """A label folder's labels with its people's decisions in place (`human_overrides`), checked to belong to it
    first, and the override counts (all 0 without decisions or with overrides off)."""
    ledger = HumanLedger(labels_dir)
    if not (human_overrides and ledger.decisions):
        return labels, dict.fromkeys(OVERRIDE_COUNTS, 0)
    ledger.check(labels)
    return apply_overrides(labels, ledger.decisions)


def note_overrides(out: str | Path, counts: dict, log=print) -> None:
    """A training job's line and `human_overrides.json` on the decisions it took in place of the AI's pairs."""
    if counts["decided"]:
        log(
            f"human overrides: {counts['decided']} pairs decided by reviewers ({counts['agreed']} as the AI, "
            f"{counts['reversed']} reversed, {counts['added']} where the AI stated none, {counts['tied']} tied: dropped)"
        )
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "human_overrides.json").write_text(json.dumps(counts, indent=1))
