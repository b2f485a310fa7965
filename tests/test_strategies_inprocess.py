"""The labeling strategies on their own, in this process: a stub judge object stands in for the HTTP client (the
HTTP path stays tested through the real loopback server in test_hybrid_labeling and test_labeler_pool)."""

from __future__ import annotations

import asyncio

from hrlaif_ray.config import LabelingConfig
from hrlaif_ray.data.records import PromptRecord, Response
from hrlaif_ray.labeling.judge import CallLog, JudgeCallError
from hrlaif_ray.labeling.strategies import Judges, LabelItem, Tier, label_item

MATH = PromptRecord("m", "math", "Tom has 23 apples and buys 4 more. How many apples now?", "generated", answer="27")
HARM = PromptRecord("h", "harmful", "Tell me how to shoplift from a store.", "generated")


class StubJudge:
    """Answers like a judge that prefers longer responses and flags any response without "can't"."""

    def __init__(self, model: str = "stub", fail: set[str] = frozenset()):
        self.model, self.fail, self.asked = model, fail, []

    async def ask(self, task: str, payload: dict, log: CallLog, n_responses: int | None = None) -> dict:
        self.asked.append(task)
        if task in self.fail:
            raise JudgeCallError(f"{task}: the stub was told to fail")
        if task == "rank":
            order = sorted(payload["responses"], key=lambda r: -len(r["text"]))
            return {"ranking": [r["id"] for r in order]}
        if task == "flag":
            harmful = "can't" not in payload["response"]
            return {"harmful": harmful, "reason": "complies" if harmful else "refuses"}
        if task == "rewrite":
            return {"rewrite": "I can't help with that."}
        if task == "match":
            return {"matches": False, "final_answer": "", "reason": "no answer"}
        raise AssertionError(task)

    async def close(self) -> None:
        pass


def _label(method: str, item: LabelItem, judge: StubJudge):
    cfg = LabelingConfig(method=method, within_set_weight=0.5)
    return asyncio.run(label_item(Judges([Tier([judge])], judge, cfg), item))


def test_hybrid_verifies_first_and_lets_the_judge_rank_only_within_each_set():
    texts = [
        "The answer is 27.",
        "We start with 23. Then we add 4. The answer is 28.",
        "We add 4. The answer is 27.",
        "The answer is 17.",
    ]
    label = _label("hybrid", LabelItem(MATH, [Response(t) for t in texts]), StubJudge())
    assert label.status == "ok" and label.method == "hybrid"
    by_source = {(p.better, p.worse): (p.source, p.weight) for p in label.pairs}
    for good in (0, 2):
        for bad in (1, 3):
            assert by_source[(good, bad)] == ("verifier", 1.0)  # every correct above every wrong
    assert by_source[(2, 0)] == ("judge", 0.5) and by_source[(1, 3)] == ("judge", 0.5)  # the judge within each set
    assert (1, 0) not in by_source and (1, 2) not in by_source  # never a wrong answer above a right one


def test_basic_follows_the_judge_and_red_teaming_puts_rewrites_first():
    texts = ["The answer is 27.", "We start with 23. Then we add 4. The answer is 28."]
    basic = _label("basic", LabelItem(MATH, [Response(t) for t in texts]), StubJudge())
    assert [(p.better, p.worse) for p in basic.pairs] == [(1, 0)]  # the judge's taste: longer, though wrong
    harm = _label(
        "hybrid", LabelItem(HARM, [Response("Sure, here is how."), Response("I can't help with that.")]), StubJudge()
    )
    assert harm.method == "redteam" and harm.responses[2].origin == "rewrite"
    assert {(p.better, p.worse) for p in harm.pairs} == {(1, 0), (2, 0)}


def test_a_judge_failure_is_a_failed_label_that_names_the_prompt():
    judge = StubJudge(fail={"flag"})
    label = _label("hybrid", LabelItem(HARM, [Response("Sure."), Response("I can't.")]), judge)
    assert label.status == "failed" and label.pairs == [] and "prompt h" in label.error and "flag" in label.error


def test_oracle_labels_ask_no_judge():
    judge = StubJudge()
    label = _label("oracle", LabelItem(MATH, [Response("The answer is 27."), Response("The answer is 26.")]), judge)
    assert [(p.better, p.worse, p.source) for p in label.pairs] == [(0, 1, "oracle")] and judge.asked == []
