"""Label audit: how well the AI judge agrees with human preference labels, and the verifiers with ground truth.

AI vs human: every human pair (prompt, chosen, rejected) is judged in both presentation orders. A pair is
consistent when the two verdicts name the same response (or both say tie); the judge agrees with the human
when it consistently prefers the chosen response, and reverses when it consistently prefers the rejected
one. Position bias is the share of pairs where both orders got the same letter (the judge followed the
position, not the content); A/B balance is the share of 'A' among non-tie verdicts (0.5 is balanced). For
harmlessness pairs the hybrid signal is audited too: the red-team flag of each response (the AI prefers the
one flagged harmless when exactly one is).

Verifier vs ground truth: gold GSM8K solutions with the '####' line removed (the extractor must find the
answer in the prose) and the same with a wrong final number; MMLU answers stated in several formats with the
right and a wrong option.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

from hrlaif_ray.categories import CHOICE_LETTERS
from hrlaif_ray.data.records import HumanPair, PromptRecord
from hrlaif_ray.labeling import verifiers
from hrlaif_ray.labeling.judge import CallLog, JudgeCallError, JudgeClient


def pair_outcome(first: str, second: str) -> str:
    """Verdicts with chosen shown as A, then with chosen shown as B -> agree, reverse, tie, position_a,
    position_b or inconsistent."""
    if (first, second) == ("A", "B"):
        return "agree"
    if (first, second) == ("B", "A"):
        return "reverse"
    if (first, second) == ("tie", "tie"):
        return "tie"
    if first == second:
        return f"position_{first.lower()}"
    return "inconsistent"


def summarize(outcomes: list[str], letters: list[str]) -> dict[str, float]:
    n = len(outcomes)
    c = Counter(outcomes)
    consistent = c["agree"] + c["reverse"] + c["tie"]
    decided = [x for x in letters if x in ("A", "B")]
    return {
        "pairs": n,
        "agreement": c["agree"] / n if n else 0.0,
        "agreement_when_consistent": c["agree"] / (c["agree"] + c["reverse"]) if c["agree"] + c["reverse"] else 0.0,
        "consistency": consistent / n if n else 0.0,
        "position_bias_rate": (c["position_a"] + c["position_b"]) / n if n else 0.0,
        "reversal_rate": c["reverse"] / n if n else 0.0,
        "tie_rate": c["tie"] / n if n else 0.0,
        "a_share": decided.count("A") / len(decided) if decided else 0.0,
        "failed": c["failed"],
    }


async def judge_human_pairs(
    judge: JudgeClient,
    pairs: list[HumanPair],
    concurrency: int = 16,
    with_flags: bool = False,
    cited: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Agreement of the judge with the human pairs; `cited`: request-data entries citing a constitution's principles
    (`Constitution.cite`) added to every compare and flag request."""
    sem = asyncio.Semaphore(concurrency)
    cited = cited or {}
    log = CallLog(judge.model)

    async def one(pair: HumanPair) -> tuple[str, list[str], str | None]:
        async with sem:
            try:
                first = await judge.ask(
                    "compare",
                    {"question": pair.prompt, "response_a": pair.chosen, "response_b": pair.rejected, **cited},
                    log,
                )
                second = await judge.ask(
                    "compare",
                    {"question": pair.prompt, "response_a": pair.rejected, "response_b": pair.chosen, **cited},
                    log,
                )
                flag = None
                if with_flags:
                    hc, hr = [
                        (await judge.ask("flag", {"question": pair.prompt, "response": r, **cited}, log))["harmful"]
                        for r in (pair.chosen, pair.rejected)
                    ]
                    flag = "agree" if (not hc and hr) else "reverse" if (hc and not hr) else "tie"
            except JudgeCallError:
                return "failed", [], None
        return pair_outcome(first["better"], second["better"]), [first["better"], second["better"]], flag

    results = await asyncio.gather(*(one(p) for p in pairs))
    summary = summarize([r[0] for r in results], [x for r in results for x in r[1]])
    if with_flags:
        flags = Counter(r[2] for r in results if r[2])
        summary["redteam_flag_agreement"] = flags["agree"] / len(pairs) if pairs else 0.0
        summary["redteam_flag_reversal"] = flags["reverse"] / len(pairs) if pairs else 0.0
    summary["tokens_in"], summary["tokens_out"] = log.tokens_in, log.tokens_out
    return summary


def verifier_audit_gsm8k(prompts: list[PromptRecord], seed: int = 0) -> dict[str, Any]:
    rng = random.Random(seed)
    hits, n = 0, 0
    for p in prompts:
        prose = p.metadata["solution"].split("####")[0].strip()
        answer = int(float(p.answer)) if float(p.answer).is_integer() else float(p.answer)
        wrong = answer + rng.choice([1, -1, 7])
        cases = [(f"{prose}\nThe answer is {answer}.", True), (f"{prose}\nSo the final answer is {wrong}.", False)]
        for text, truth in cases:
            n += 1
            hits += (verifiers.verify_math(text, p.answer).verdict == verifiers.CORRECT) == truth
    return {"items": len(prompts), "answers": n, "agreement": hits / n if n else 0.0}


def verifier_audit_mmlu(prompts: list[PromptRecord], seed: int = 0) -> dict[str, Any]:
    rng = random.Random(seed)
    hits, n = 0, 0
    formats = ["The answer is ({L}).", "Answer: {L}", "({L}) {T}", "I choose option {L} because it fits.", "{L}"]
    for p in prompts:
        right = CHOICE_LETTERS.index(p.answer)
        wrong = rng.choice([i for i in range(len(p.choices)) if i != right])
        for idx, truth in ((right, True), (wrong, False)):
            text = rng.choice(formats).format(L=CHOICE_LETTERS[idx], T=p.choices[idx])
            n += 1
            hits += (verifiers.verify_multiple_choice(text, p.answer, p.choices).verdict == verifiers.CORRECT) == truth
    return {"items": len(prompts), "answers": n, "agreement": hits / n if n else 0.0}
