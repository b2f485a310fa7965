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
from dataclasses import dataclass, field
from itertools import combinations

from hrlaif_ray.categories import Category
from hrlaif_ray.config import LabelingConfig
from hrlaif_ray.data.records import LabelRecord, PreferencePair, PromptRecord, Response, Verdict
from hrlaif_ray.labeling import verifiers
from hrlaif_ray.labeling.judge import CallLog, JudgeCallError, JudgeClient
from hrlaif_ray.labeling.judge_prompts import TEMPLATE_VERSION


@dataclass
class LabelItem:
    """What one label is made from: a prompt and the K responses to it."""

    prompt: PromptRecord
    responses: list[Response]


@dataclass
class Judges:
    """The clients one labeler uses: the judge(s) and the rewriter, with a call log per model."""

    judges: list[JudgeClient]
    rewriter: JudgeClient
    cfg: LabelingConfig
    logs: dict[str, CallLog] = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: LabelingConfig, limiter=None) -> Judges:
        def client(e):
            return JudgeClient(
                e.base_url,
                e.model,
                e.api_key_env,
                e.timeout_s,
                e.max_retries,
                e.max_reasks,
                e.max_tokens,
                e.json_mode,
                limiter,
                e.max_connections,
                e.http_backend,
            )

        return cls([client(e) for e in cfg.judges], client(cfg.rewriter), cfg)

    def for_label(self) -> Judges:
        """The same clients with fresh call logs: what one label spends."""
        return Judges(self.judges, self.rewriter, self.cfg)

    async def close(self) -> None:
        for c in {id(c): c for c in [*self.judges, self.rewriter]}.values():
            await c.close()

    def log(self, client: JudgeClient) -> CallLog:
        return self.logs.setdefault(client.model, CallLog(client.model))

    def spent(self) -> tuple[int, int, float]:
        """Tokens in, tokens out and USD of every call logged here (models without a price cost nothing)."""
        prices = self.cfg.prices
        return (
            sum(log.tokens_in for log in self.logs.values()),
            sum(log.tokens_out for log in self.logs.values()),
            sum(prices[m].cost(log.tokens_in, log.tokens_out) for m, log in self.logs.items() if m in prices),
        )


def idempotency_key(item: LabelItem, cfg: LabelingConfig) -> str:
    """Same prompt, responses, judge models, templates and method: same key, so never labeled (or paid) twice."""
    basis = {
        "prompt": [item.prompt.id, item.prompt.text, item.prompt.answer, item.prompt.choices],
        "responses": [r.text for r in item.responses],
        "judges": [j.model for j in cfg.judges],
        "rewriter": cfg.rewriter.model,
        "template": TEMPLATE_VERSION,
        "method": [cfg.method, cfg.ranking, cfg.both_orders, cfg.min_agreement, cfg.within_set_weight],
    }
    return hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()


# ------------------------------------------------------------------------------- ordering with the judge


async def _judge_order(
    judge: JudgeClient, log: CallLog, question: str, texts: list[str], cfg: LabelingConfig
) -> set[tuple[int, int]]:
    """(better, worse) index pairs one judge states over `texts`; with both_orders, only those both orders agree on."""
    orders = [list(range(len(texts)))]
    if cfg.both_orders:
        orders.append(orders[0][::-1])

    async def one(order: list[int]) -> set[tuple[int, int]]:
        if cfg.ranking == "listwise":
            payload = {
                "question": question,
                "responses": [{"id": k + 1, "text": texts[i]} for k, i in enumerate(order)],
            }
            answer = await judge.ask("rank", payload, log, n_responses=len(texts))
            ranked = [order[rid - 1] for rid in answer["ranking"]]
            return {(a, b) for x, a in enumerate(ranked) for b in ranked[x + 1 :]}
        stated = set()
        for i, j in combinations(order, 2):
            answer = await judge.ask(
                "compare", {"question": question, "response_a": texts[i], "response_b": texts[j]}, log
            )
            if answer["better"] == "A":
                stated.add((i, j))
            elif answer["better"] == "B":
                stated.add((j, i))
        return stated

    results = await asyncio.gather(*(one(o) for o in orders))
    return set.intersection(*results)


async def basic_preferences(
    judges: Judges, question: str, members: list[int], texts: list[str], weight: float = 1.0
) -> list[PreferencePair]:
    """Preference pairs over the responses `members` (indices into `texts`) from the judge ensemble."""
    if len(members) < 2:
        return []
    sub = [texts[i] for i in members]
    stated = await asyncio.gather(*(_judge_order(j, judges.log(j), question, sub, judges.cfg) for j in judges.judges))
    need = judges.cfg.min_agreement * len(judges.judges)
    pairs = []
    for a, b in combinations(range(len(members)), 2):
        for better, worse in ((a, b), (b, a)):
            votes = sum((better, worse) in s for s in stated)
            against = sum((worse, better) in s for s in stated)
            if votes >= need and votes > against:
                pairs.append(PreferencePair(members[better], members[worse], weight, "judge"))
    return pairs


# ----------------------------------------------------------------------------------------- the strategies


async def _verify(judges: Judges, prompt: PromptRecord, text: str) -> verifiers.Check:
    """Stage 1 for one response: the verifier, or the judge when no final answer can be extracted."""
    # The one dispatch from category to verifier (evaluation and the verifier reward use it too); code runs in a
    # sandboxed subprocess, so off the event loop.
    check = await asyncio.to_thread(verifiers.verify_prompt, prompt, text, judges.cfg.code_timeout_s)
    if check is not None and check.verdict != verifiers.UNPARSED:
        return check
    judge = judges.judges[0]
    answer = await judge.ask(
        "match", {"question": prompt.text, "standard_answer": prompt.answer, "response": text}, judges.log(judge)
    )
    verdict = verifiers.CORRECT if answer["matches"] else verifiers.WRONG
    return verifiers.Check(verdict, answer["final_answer"], f"judge fallback: {answer['reason']}")


async def hybrid_helpfulness(judges: Judges, item: LabelItem) -> tuple[list[PreferencePair], list[Verdict]]:
    prompt, texts = item.prompt, [r.text for r in item.responses]
    # Stage 1: verify each response against the standard answer.
    checks = await asyncio.gather(*(_verify(judges, prompt, t) for t in texts))
    verdicts = [Verdict(i, c.verdict, c.reason, "verify") for i, c in enumerate(checks)]
    # Stage 2: sort into the correct and the wrong set; every correct response beats every wrong one.
    correct = [i for i, c in enumerate(checks) if c.verdict == verifiers.CORRECT]
    wrong = [i for i, c in enumerate(checks) if c.verdict != verifiers.CORRECT]
    pairs = [PreferencePair(c, w, 1.0, "verifier") for c in correct for w in wrong]
    # Stage 3: the judge ranks the reasoning inside each set.
    weight = judges.cfg.within_set_weight
    for group in await asyncio.gather(
        *(basic_preferences(judges, prompt.text, s, texts, weight) for s in (correct, wrong))
    ):
        pairs += group
    return pairs, verdicts


async def red_team(judges: Judges, item: LabelItem) -> tuple[list[Response], list[PreferencePair], list[Verdict]]:
    """Flag each response; rewrite the harmful ones; rewrites and harmless responses beat harmful ones."""
    judge, rewriter, prompt = judges.judges[0], judges.rewriter, item.prompt
    flags = await asyncio.gather(
        *(judge.ask("flag", {"question": prompt.text, "response": r.text}, judges.log(judge)) for r in item.responses)
    )
    verdicts = [Verdict(i, "harmful" if f["harmful"] else "harmless", f["reason"], "flag") for i, f in enumerate(flags)]
    harmful = [i for i, f in enumerate(flags) if f["harmful"]]
    rewrites = await asyncio.gather(
        *(
            rewriter.ask("rewrite", {"question": prompt.text, "response": item.responses[i].text}, judges.log(rewriter))
            for i in harmful
        )
    )
    responses = list(item.responses)
    for i, rewrite in zip(harmful, rewrites):
        verdicts.append(Verdict(len(responses), "rewrite", f"rewrite of response {i}", "rewrite"))
        responses.append(Response(rewrite["rewrite"], origin="rewrite"))
    safe = [i for i in range(len(responses)) if i not in harmful]
    pairs = [PreferencePair(s, h, 1.0, "redteam") for s in safe for h in harmful]
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
        judge = judges.judges[0]
        answer = await judge.ask("classify", {"question": prompt.text}, judges.log(judge))
        return Category(answer["category"])
    return Category(prompt.category)


async def label_item(judges: Judges, item: LabelItem) -> LabelRecord:
    """The label of one item; failures are returned as a failed record, never raised or dropped."""
    judges = judges.for_label()
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
                judges, prompt.text, list(range(len(responses))), [r.text for r in responses]
            )
    except JudgeCallError as exc:
        error = f"prompt {prompt.id}: {exc}"
    except (ValueError, TypeError) as exc:  # a bad record: name it, keep going
        error = f"prompt {prompt.id}: bad record: {exc}"
    if error is not None:  # a failed label keeps its input responses and states no preference
        method, responses, pairs, verdicts = cfg.method, list(item.responses), [], []
    tokens_in, tokens_out, cost = judges.spent()
    return LabelRecord(
        prompt_id=prompt.id,
        category=category.value,
        method=method,
        responses=responses,
        pairs=pairs,
        verdicts=verdicts,
        judge_model="+".join(sorted(judges.logs)) or cfg.judges[0].model,
        template_version=TEMPLATE_VERSION,
        idempotency_key=idempotency_key(item, cfg),
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        cost_usd=cost,
        status="ok" if error is None else "failed",
        error=error,
    )


async def judge_task(judges: Judges, task: str, payload: dict) -> dict:
    """One judge task outside labeling (evaluation's `flag` and `compare`): the answer, or the error, with what it
    cost; never raises, so one failed request does not lose the others."""
    judges = judges.for_label()
    judge = judges.judges[0]
    answer, error = None, None
    try:
        answer = await judge.ask(task, payload, judges.log(judge))
    except JudgeCallError as exc:
        error = str(exc)
    tokens_in, tokens_out, cost = judges.spent()
    return {"answer": answer, "error": error, "tokens_in": tokens_in, "tokens_out": tokens_out, "cost_usd": cost}
