"""Labeling strategies: hybrid helpfulness (HRLAIF), basic AI preference (RLAIF), and AI red teaming.

`label_item` routes one prompt with its K responses by category and returns its LabelRecord. It never raises
for a judge failure or a bad record: the label is returned with status "failed" and the error (naming the
prompt and the field), so nothing is silently dropped and the tokens already spent are still accounted.

Hybrid helpfulness reads as the paper's three stages in `hybrid_helpfulness`: (1) verify every response
against the standard answer (the judge answers where the verifier finds no final answer), (2) sort into the
correct and the wrong set, every correct response preferred to every wrong one, (3) the judge ranks the
reasoning inside each set. Basic RLAIF (`basic_preferences`) asks the judge to order all K responses, in both
presentation orders, keeping only what both orders agree on (position-bias control); an ensemble of judges
keeps a pair only when at least `min_agreement` of them state it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from itertools import combinations
from typing import Any, TypeVar

from hrlaif_ray.categories import Category
from hrlaif_ray.config import LabelingConfig
from hrlaif_ray.data.binding import prompt_digest
from hrlaif_ray.data.records import Dispute, LabelRecord, PreferencePair, PromptRecord, Response, Verdict
from hrlaif_ray.labeling import verifiers
from hrlaif_ray.labeling.cache import JudgeCache
from hrlaif_ray.labeling.constitution import Constitution, file_template_version, load_constitution, template_version
from hrlaif_ray.labeling.injection import addresses_judge
from hrlaif_ray.labeling.judge import CallLog, JudgeCallError, JudgeClient

T = TypeVar("T")


@dataclass
class LabelItem:
    """What one label is made from: a prompt and the K responses to it."""

    prompt: PromptRecord
    responses: list[Response]


@dataclass
class Tier:
    """One tier of tiered judging: its judge clients (an ensemble when several) and its confidence threshold."""

    clients: list[JudgeClient]
    min_confidence: float = 0.0


@dataclass
class Judges:
    """The clients one labeler uses: the judge tiers (one unless tiered) and the rewriter, with a call log per
    model and the label's statistics (what the quality report reads)."""

    tiers: list[Tier]
    rewriter: JudgeClient
    cfg: LabelingConfig
    logs: dict[str, CallLog] = field(default_factory=dict)
    stats: Counter = field(default_factory=Counter)
    constitution: Constitution | None = None  # the principles the prompts cite (LabelingConfig.constitution)
    disputes: list[Dispute] = field(default_factory=list)  # the label's unsure pairs, for review (`hrlaif review`)

    @classmethod
    def from_config(cls, cfg: LabelingConfig, limiter=None) -> Judges:
        cache = JudgeCache(cfg.cache_dir) if cfg.cache and cfg.cache_dir else None

        def client(e):
            return JudgeClient.for_endpoint(e, limiter, cache)

        tiers = [Tier([client(e) for e in t.judges], t.min_confidence) for t in cfg.tier_list]
        constitution = load_constitution(cfg.constitution) if cfg.constitution else None
        return cls(tiers, client(cfg.rewriter), cfg, constitution=constitution)

    @property
    def template(self) -> str:
        """The template version of what these judges label: TEMPLATE_VERSION, tagged with the constitution's."""
        return template_version(self.constitution)

    def principles_for(self, category: str | Category) -> dict:
        """The request-data entries citing the constitution's principles for `category` ({} without one): merge
        them into a flag, rank, compare or rewrite payload."""
        if self.constitution is None:
            return {}
        return self.constitution.cite(self.constitution.for_category(category))

    @property
    def judges(self) -> list[JudgeClient]:
        """The first tier's judges: the judge unless tiered."""
        return self.tiers[0].clients

    def for_label(self) -> Judges:
        """The same clients with fresh call logs and statistics: what one label spends and how it was made."""
        return replace(self, logs={}, stats=Counter(), disputes=[])

    async def close(self) -> None:
        clients = [c for t in self.tiers for c in t.clients] + [self.rewriter]
        for c in {id(c): c for c in clients}.values():
            await c.close()
        if clients[0].cache is not None:
            clients[0].cache.close()

    def log(self, client: JudgeClient) -> CallLog:
        return self.logs.setdefault(client.model, CallLog(client.model))

    def dispute(self, i: int, j: int, reason: str, detail: str = "") -> None:
        """Put the pair of responses i, j on the review queue, saying why."""
        self.disputes.append(Dispute(min(i, j), max(i, j), reason, detail))

    def unsure(self, confidence: float) -> bool:
        """A stated confidence below `labeling.review_confidence`: a person should look."""
        return confidence < self.cfg.review_confidence

    def spent(self) -> tuple[int, int, float]:
        """Tokens in, tokens out and USD of every call logged here (models without a price cost nothing)."""
        return (
            sum(log.tokens_in for log in self.logs.values()),
            sum(log.tokens_out for log in self.logs.values()),
            sum(self._cost(m, log.tokens_in, log.tokens_out) for m, log in self.logs.items()),
        )

    def _cost(self, model: str, tokens_in: int, tokens_out: int) -> float:
        price = self.cfg.prices.get(model)
        return price.cost(tokens_in, tokens_out) if price is not None else 0.0

    def call_stats(self) -> dict:
        """The label's statistics with its calls': attempts by status, re-asks, cache hits and the USD they saved."""
        attempts = Counter(a.status for log in self.logs.values() for a in log.attempts)
        timed = [a.seconds for log in self.logs.values() for a in log.attempts if a.seconds is not None]
        return {
            "judge_s": round(sum(timed), 4),  # the judge's own time on its answered attempts (no rate-limit wait)
            "judge_answers": len(timed),
            **self.stats,
            **{f"attempts_{status}": n for status, n in attempts.items()},
            "reasks": attempts["malformed"],
            "cache_hits": sum(log.cache_hits for log in self.logs.values()),
            "cache_saved_usd": sum(self._cost(m, log.saved_in, log.saved_out) for m, log in self.logs.items()),
        }


async def escalate(judges: Judges, ask: Callable[[Tier], Awaitable[tuple[T, bool]]]) -> tuple[T, int, bool]:
    """One judge task through the tiers: `ask(tier)` returns (result, unsure); an unsure result, or a call that
    failed for good, goes to the next tier; the last tier's result stands (its failure is the label's).
    Returns (result, the tier that decided, whether that tier was unsure: only the last tier's can be)."""
    judges.stats["judge_tasks"] += 1
    last = len(judges.tiers) - 1
    for t, tier in enumerate(judges.tiers):
        try:
            result, unsure = await ask(tier)
        except JudgeCallError:
            if t == last:
                raise
            judges.stats["escalations"] += 1
            judges.stats["escalations_failed"] += 1
            continue
        if unsure and t < last:
            judges.stats["escalations"] += 1
            continue
        judges.stats[f"decided_tier_{t}"] += 1
        return result, t, unsure
    raise AssertionError("unreachable: the last tier returns or raises")


def idempotency_key(item: LabelItem, cfg: LabelingConfig, template: str | None = None) -> str:
    """Same prompt, responses, judge models, templates and method: same key, so never labeled (or paid) twice.
    `template`: the template version (`Judges.template`, `file_template_version(cfg.constitution)`; None: read
    from cfg, the constitution's file included: a loop over items passes it)."""
    if template is None:
        template = file_template_version(cfg.constitution)
    basis = {
        "prompt": [item.prompt.id, item.prompt.text, item.prompt.answer, item.prompt.choices],
        "responses": [r.text for r in item.responses],
        "judges": [j.model for j in cfg.judges],
        **({"tiers": [[[e.model for e in t.judges], t.min_confidence] for t in cfg.tiers]} if cfg.tiers else {}),
        "rewriter": cfg.rewriter.model,
        "template": template,
        "method": [cfg.method, cfg.ranking, cfg.both_orders, cfg.min_agreement, cfg.within_set_weight],
    }
    return hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()


# ------------------------------------------------------------------------------- ordering with the judge


@dataclass
class Ordering:
    """What one judge stated over a set of responses: the (better, worse) pairs both presentation orders agree on,
    the pairs (i < j) on which the orders contradicted each other, the lowest confidence it stated, and its reasons."""

    stated: set[tuple[int, int]]
    contradicted: set[tuple[int, int]]
    confidence: float
    reasons: list[str]

    @property
    def inconsistent(self) -> bool:
        return bool(self.contradicted)


async def _judge_order(
    judge: JudgeClient,
    log: CallLog,
    question: str,
    texts: list[str],
    cfg: LabelingConfig,
    stats: Counter,
    cited: dict | None = None,
) -> Ordering:
    """One judge's ordering of `texts`; with both_orders, only what both orders agree on is stated. Counts into
    `stats` the position consistency (a pair's verdict, a tie included, surviving the swap), which position won
    (first or second shown) and ties."""
    orders = [list(range(len(texts)))]
    if cfg.both_orders:
        orders.append(orders[0][::-1])
    confidences: list[float] = []
    reasons: list[str] = []

    async def one(order: list[int]) -> set[tuple[int, int]]:
        shown = {i: k for k, i in enumerate(order)}
        if cfg.ranking == "listwise":
            payload = {
                "question": question,
                "responses": [{"id": k + 1, "text": texts[i]} for k, i in enumerate(order)],
                **(cited or {}),  # a constitution's principles (Judges.principles_for)
            }
            answer = await judge.ask("rank", payload, log, n_responses=len(texts))
            confidences.append(answer.get("confidence", 1.0))
            reasons.append(str(answer.get("reason", "")))
            ranked = [order[rid - 1] for rid in answer["ranking"]]
            stated = {(a, b) for x, a in enumerate(ranked) for b in ranked[x + 1 :]}
        else:
            stated = set()
            for i, j in combinations(order, 2):
                payload = {"question": question, "response_a": texts[i], "response_b": texts[j], **(cited or {})}
                answer = await judge.ask("compare", payload, log)
                confidences.append(answer.get("confidence", 1.0))
                reasons.append(str(answer.get("reason", "")))
                if answer["better"] == "A":
                    stated.add((i, j))
                elif answer["better"] == "B":
                    stated.add((j, i))
                else:
                    stats["ties"] += 1
        for better, worse in stated:
            stats["first_shown_wins" if shown[better] < shown[worse] else "second_shown_wins"] += 1
        return stated

    results = await asyncio.gather(*(one(o) for o in orders))
    contradicted = set()
    if len(results) == 2:
        for i, j in combinations(range(len(texts)), 2):
            verdicts = [(i, j) in r and 1 or (j, i) in r and -1 or 0 for r in results]
            stats["swap_pairs"] += 1
            stats["swap_consistent"] += verdicts[0] == verdicts[1]
            if verdicts[0] != verdicts[1]:
                contradicted.add((i, j))
    return Ordering(set.intersection(*results), contradicted, min(confidences, default=1.0), reasons)


async def basic_preferences(
    judges: Judges,
    question: str,
    members: list[int],
    texts: list[str],
    weight: float = 1.0,
    category: str | Category | None = None,
) -> list[PreferencePair]:
    """Preference pairs over the responses `members` (indices into `texts`) from the judge ensemble; tiered, the
    ordering escalates when unsure: the two orders disagree, the ensemble falls below min_agreement on a pair,
    or a stated confidence is below the tier's threshold. The deciding tier's unsure pairs go to `judges.disputes`."""
    if len(members) < 2:
        return []
    sub = [texts[i] for i in members]
    cited = judges.principles_for(category) if category is not None else {}  # the prompt's principles, if any

    async def order(tier: Tier) -> tuple[tuple[list, list[Ordering], set], bool]:
        orderings = await asyncio.gather(
            *(_judge_order(j, judges.log(j), question, sub, judges.cfg, judges.stats, cited) for j in tier.clients)
        )
        kept, split = _vote([o.stated for o in orderings], judges.cfg.min_agreement, judges.stats)
        unsure = bool(split) or any(o.inconsistent or o.confidence < tier.min_confidence for o in orderings)
        return (kept, orderings, split), unsure

    (kept, orderings, split), tier, _ = await escalate(judges, order)
    detail = "; ".join(f"{r} (confidence {o.confidence:g})" for o in orderings for r in o.reasons[:1] if r)
    for i, j in combinations(range(len(sub)), 2):
        if any((i, j) in o.contradicted for o in orderings):
            judges.dispute(members[i], members[j], "position", detail)
        elif (i, j) in split:
            judges.dispute(members[i], members[j], "ensemble", detail)
        elif any(judges.unsure(o.confidence) for o in orderings):
            judges.dispute(members[i], members[j], "low_confidence", detail)
    return [PreferencePair(members[b], members[w], weight, "judge", tier) for b, w in kept]


def _vote(stated: list[set[tuple[int, int]]], min_agreement: float, stats: Counter) -> tuple[list, set]:
    """The (better, worse) pairs at least `min_agreement` of the judges state (and more state than contradict),
    and the pairs (a < b) some judge stated that fell short (the ensemble split). Counts ensemble agreement: the
    pairs some judge stated, and those every judge stated alike."""
    need = min_agreement * len(stated)
    kept, contested = [], set()
    for a, b in sorted({tuple(sorted(p)) for s in stated for p in s}):
        votes = {(a, b): sum((a, b) in s for s in stated), (b, a): sum((b, a) in s for s in stated)}
        for pair, against in (((a, b), votes[(b, a)]), ((b, a), votes[(a, b)])):
            if votes[pair] >= need and votes[pair] > against:
                kept.append(pair)
        if not any(votes[p] >= need and votes[p] > votes[p[::-1]] for p in votes):
            contested.add((a, b))
        if len(stated) > 1:
            stats["ensemble_pairs"] += 1
            stats["ensemble_agreed"] += max(votes.values()) == len(stated)
    return kept, contested


async def _verify(judges: Judges, prompt: PromptRecord, text: str) -> tuple[verifiers.Check, int, str]:
    """Stage 1 for one response: the verifier, or the judge when no final answer can be extracted (escalating on a
    failed call or a low confidence). Returns the check, the tier that decided (0 for the verifier) and, where the
    verifier abstained, what the judge said ("" otherwise)."""
    # The one dispatch from category to verifier (evaluation and the verifier reward use it too); code runs in a
    # sandboxed subprocess, so off the event loop.
    check = await asyncio.to_thread(verifiers.verify_prompt, prompt, text, judges.cfg.code_timeout_s)
    judges.stats["verified"] += 1
    if check is not None and check.verdict != verifiers.UNPARSED:
        return check, 0, ""
    judges.stats["judge_fallbacks"] += 1
    payload = {"question": prompt.text, "standard_answer": prompt.answer, "response": text}
    answer, tier, _ = await escalate(judges, lambda t: _ask_one(judges, t, "match", payload))
    verdict = verifiers.CORRECT if answer["matches"] else verifiers.WRONG
    said = f"judge fallback: {answer['reason']} (confidence {answer.get('confidence', 1.0):g})"
    return verifiers.Check(verdict, answer["final_answer"], said), tier, said


async def _ask_one(judges: Judges, tier: Tier, task: str, payload: dict) -> tuple[dict, bool]:
    """A single-answer task (match, flag, classify) asked of the tier's first judge: (answer, unsure)."""
    judge = tier.clients[0]
    answer = await judge.ask(task, payload, judges.log(judge))
    return answer, answer.get("confidence", 1.0) < tier.min_confidence


# ----------------------------------------------------------------------------------------- the strategies


async def hybrid_helpfulness(judges: Judges, item: LabelItem) -> tuple[list[PreferencePair], list[Verdict]]:
    prompt, texts = item.prompt, [r.text for r in item.responses]
    # Stage 1: verify each response against the standard answer.
    decided = await asyncio.gather(*(_verify(judges, prompt, t) for t in texts))
    checks = [c for c, _, _ in decided]
    verdicts = [Verdict(i, c.verdict, c.reason, "verify", tier) for i, (c, tier, _) in enumerate(decided)]
    # Stage 2: sort into the correct and the wrong set; every correct response beats every wrong one.
    correct = [i for i, c in enumerate(checks) if c.verdict == verifiers.CORRECT]
    wrong = [i for i, c in enumerate(checks) if c.verdict != verifiers.CORRECT]
    pairs = [PreferencePair(c, w, 1.0, "verifier") for c in correct for w in wrong]
    for c in correct:  # a cross-set pair the judge decided for the verifier, which found no final answer
        for w in wrong:
            said = " | ".join(decided[i][2] for i in (c, w) if decided[i][2])
            if said:
                judges.dispute(c, w, "verifier_abstained", said)
    # Stage 3: the judge ranks the reasoning inside each set.
    weight = judges.cfg.within_set_weight
    for group in await asyncio.gather(
        *(basic_preferences(judges, prompt.text, s, texts, weight, prompt.category) for s in (correct, wrong))
    ):
        pairs += group
    return pairs, verdicts


async def red_team(judges: Judges, item: LabelItem) -> tuple[list[Response], list[PreferencePair], list[Verdict]]:
    """Flag each response (through the tiers: an unsure flag escalates); rewrite the harmful ones; rewrites and
    harmless responses beat harmful ones. With a constitution, both cite the principles for harmful prompts and a
    flag's verdict keeps those it names."""
    rewriter, prompt = judges.rewriter, item.prompt
    cited = judges.principles_for(Category.HARMFUL)
    flags = await asyncio.gather(
        *(
            escalate(
                judges,
                lambda t, r=r: _ask_one(judges, t, "flag", {"question": prompt.text, "response": r.text, **cited}),
            )
            for r in item.responses
        )
    )
    verdicts = [
        Verdict(
            i, "harmful" if f["harmful"] else "harmless", f["reason"], "flag", tier, principles=f.get("principles", [])
        )
        for i, (f, tier, _) in enumerate(flags)
    ]
    doubtful = {i for i, (f, _, _) in enumerate(flags) if judges.unsure(f.get("confidence", 1.0))}
    flags = [f for f, _, _ in flags]
    harmful = [i for i, f in enumerate(flags) if f["harmful"]]
    rewrites = await asyncio.gather(
        *(
            rewriter.ask(
                "rewrite", {"question": prompt.text, "response": item.responses[i].text, **cited}, judges.log(rewriter)
            )
            for i in harmful
        )
    )
    responses = list(item.responses)
    for i, rewrite in zip(harmful, rewrites):
        verdicts.append(Verdict(len(responses), "rewrite", f"rewrite of response {i}", "rewrite"))
        responses.append(Response(rewrite["rewrite"], origin="rewrite"))
    safe = [i for i in range(len(responses)) if i not in harmful]
    tier = {i: verdicts[i].tier for i in range(len(item.responses))}
    pairs = [PreferencePair(s, h, 1.0, "redteam", max(tier.get(s, 0), tier[h])) for s in safe for h in harmful]
    for s, h in ((s, h) for s in safe for h in harmful if {s, h} & doubtful):  # a flag stated with low confidence
        said = " | ".join(
            f"response {i}: {flags[i]['reason']} (confidence {flags[i].get('confidence', 1.0):g})"
            for i in sorted({s, h} & doubtful)
        )
        judges.dispute(s, h, "low_confidence", said)
    return responses, pairs, verdicts


def oracle_preferences(item: LabelItem) -> tuple[list[PreferencePair], list[Verdict]]:
    """The oracle (labels from the ground truth, no judge): every response the paper wants preferred (verified
    correct; a refusal of a harmful request) above every other, nothing stated within either set. Not a method for
    users: it is the demo's ceiling and its control without the judge's bias."""
    truth = [verifiers.ground_truth(item.prompt, r.text) for r in item.responses]
    good = [i for i, t in enumerate(truth) if t]
    bad = [i for i, t in enumerate(truth) if t is False]
    verdicts = [
        Verdict(i, "unknown" if t is None else "good" if t else "bad", "ground truth", "oracle")
        for i, t in enumerate(truth)
    ]
    return [PreferencePair(g, b, 1.0, "oracle") for g in good for b in bad], verdicts


async def route(judges: Judges, prompt: PromptRecord) -> Category:
    """The prompt's category: from the data when known, else the judge's (validated against the allowed set)."""
    if prompt.metadata.get("category_unknown") and judges.cfg.classify_unknown:
        answer, _, _ = await escalate(judges, lambda t: _ask_one(judges, t, "classify", {"question": prompt.text}))
        return Category(answer["category"])
    return Category(prompt.category)


async def label_item(judges: Judges, item: LabelItem) -> LabelRecord:
    """The label of one item; failures are returned as a failed record, never raised or dropped."""
    judges = judges.for_label()
    start = time.monotonic()
    cfg, prompt = judges.cfg, item.prompt
    responses, pairs, verdicts = list(item.responses), [], []
    category = Category(prompt.category)
    method = cfg.method
    error = None
    try:
        category = await route(judges, prompt)
        if cfg.method == "oracle":
            pairs, verdicts = oracle_preferences(item)
        elif cfg.method == "hybrid" and category.verifiable:
            pairs, verdicts = await hybrid_helpfulness(judges, item)
        elif cfg.method == "hybrid" and category is Category.HARMFUL:
            method = "redteam"
            responses, pairs, verdicts = await red_team(judges, item)
        else:  # the RLAIF baseline, and open questions under hybrid labeling
            method = "basic"
            pairs = await basic_preferences(
                judges, prompt.text, list(range(len(responses))), [r.text for r in responses], category=category
            )
    except JudgeCallError as exc:
        error = f"prompt {prompt.id}: {exc}"
    except (ValueError, TypeError) as exc:  # a bad record: name it, keep going
        error = f"prompt {prompt.id}: bad record: {exc}"
    if error is not None:  # a failed label keeps its input responses and states no preference
        method, responses, pairs, verdicts = cfg.method, list(item.responses), [], []
        judges.disputes.clear()
    if cfg.detect_injection:
        flag_injections(judges, responses)
    tokens_in, tokens_out, cost = judges.spent()
    return LabelRecord(
        prompt_id=prompt.id,
        category=category.value,
        method=method,
        responses=responses,
        pairs=pairs,
        verdicts=verdicts,
        judge_model="+".join(sorted(judges.logs)) or cfg.judges[0].model,
        template_version=judges.template,
        idempotency_key=idempotency_key(item, cfg, judges.template),
        prompt_digest=prompt_digest(prompt),
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        cost_usd=cost,
        status="ok" if error is None else "failed",
        error=error,
        stats={**judges.call_stats(), "latency_s": round(time.monotonic() - start, 4)},
        disputes=_merged(judges.disputes),
    )


def flag_injections(judges: Judges, responses: list[Response]) -> None:
    """Every pair with a policy response that addresses the judge goes on the review queue; counted per response."""
    for i, response in enumerate(responses):
        found = addresses_judge(response.text) if response.origin == "policy" else []
        if found:
            judges.stats["injection_flags"] += 1
            for j in range(len(responses)):
                if j != i:
                    judges.dispute(i, j, "injection", f"response {i} addresses the judge: {', '.join(found)}")


def _merged(disputes: list[Dispute]) -> list[Dispute]:
    """One dispute per pair and reason, in pair order."""
    return sorted({(d.a, d.b, d.reason): d for d in disputes}.values(), key=lambda d: (d.a, d.b, d.reason))


@dataclass(frozen=True)
class JudgeRequest:
    """A judge task outside labeling: the task (a judge prompt, `judge_prompts.TASKS`) and its fields."""

    task: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class JudgeAnswer:
    """The judge's answer object (None when the call failed, with `error` saying why) and what it cost."""

    answer: dict[str, Any] | None
    error: str | None
    tokens_in: int
    tokens_out: int
    cost_usd: float


async def judge_task(judges: Judges, request: JudgeRequest) -> JudgeAnswer:
    """One judge task outside labeling (evaluation's `flag` and `compare`, `hrlaif revise`'s `critique` and `revise`):
    the answer, or the error, with what it cost; never raises, so one failed request does not lose the others. The
    rewriting tasks (rewrite, revise) go to the rewriter, the others to the judge."""
    judges = judges.for_label()
    judge = judges.rewriter if request.task in ("rewrite", "revise") else judges.judges[0]
    answer, error = None, None
    try:
        answer = await judge.ask(request.task, request.payload, judges.log(judge))
    except JudgeCallError as exc:
        error = str(exc)
    return JudgeAnswer(answer, error, *judges.spent())
