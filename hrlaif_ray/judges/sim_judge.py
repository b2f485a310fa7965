"""The simulated judge's behaviour: what it answers to each of the project's judge tasks, with explicit biases.

It stands in for gpt-3.5/gpt-4 on a machine without them. It is not a mock: it is served over real HTTP by
`server.py` and reached through the openai SDK, and its behaviour is the documented model of the paper's
failure mode, set by `SimJudgeConfig`:

- compare / rank: score = length_bias x detail + (with probability p_check) correctness_weight x (+1 correct,
  -1 wrong), where detail = min(sentences, 4) / 4 and correctness comes from the answer key (the prompts file
  it was started with). With the defaults it prefers long answers and notices a wrong one 20% of the time, the
  style-over-correctness judge that basic RLAIF suffers from. position_bias is the probability it just says A.
- match (the verifier's fallback): the standard answer appears as a word in the response's last sentence.
- flag: harmful when the question is harmful (the answer key's category, else a keyword list) and the response
  does not refuse; p_flag_miss flips the verdict. rewrite: a brief refusal with a safe alternative.
- principles (a constitution cited in the data): a harmful flag names the principles given whose id starts with
  `principle_prefix` (default '': every one; the labeler cites only those of the prompt's category), a harmless
  flag none.
  critique: the same verdict as flag, naming the same principles, with a one-sentence critique; revise: the
  rewrite's refusal.
- confidence (compare, rank, match, flag): `confidence`, or `confidence_low` with probability `calibration` when
  the answer is not what checking correctness would have given, and `p_false_alarm` otherwise.
- classify: keyword rules (options -> multiple_choice, `def`/code words -> code, harmful words -> harmful,
  numbers and a question -> math, else open_qa).

Every random draw is keyed on a hash of the request (model + messages) and a tag, so the same request always
gets the same answer, and a rerun of a whole labeling job is reproducible.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from hrlaif_ray.config import SimJudgeConfig
from hrlaif_ray.data.records import PromptRecord
from hrlaif_ray.labeling.verifiers import CORRECT, WRONG, is_refusal, verify_prompt

HARM_WORDS = (
    "poison",
    "weapon",
    "steal",
    "hack",
    "bully",
    "shoplift",
    "fake",
    "fire",
    "hurt",
    "kill",
    "bomb",
    "cheat",
    "insult",
    "drugs",
    "break into",
    "malware",
    "exploit",
    "harass",
    "bullies",
    "without them knowing",
)
REWRITE = (
    "I can't help with that, because it could hurt someone or break the law. If you are dealing with a "
    "difficult situation, I'm glad to help you find a safe and legal way to handle it."
)


def uniform(*key: Any) -> float:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def count_tokens(text: str) -> int:
    """The simulated provider bills a token per 4 characters (what `judge.estimate_tokens` assumes too)."""
    return max(1, len(text) // 4)


def detail(text: str) -> float:
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]
    return min(len(sentences), 4) / 4


# What the simulated judge can check when it checks: answers to compare with a standard one. It runs no code.
CHECKED_CATEGORIES = ("math", "multiple_choice")


def load_answer_key(path: str | Path | None) -> dict[str, PromptRecord]:
    """The prompts file the judge was started with, by question text."""
    if not path:
        return {}
    from hrlaif_ray.data.schemas import read_records

    return {r.text.strip(): r for r in read_records(path, "prompts")}


class SimJudge:
    def __init__(self, cfg: SimJudgeConfig):
        self.cfg = cfg
        self.key = load_answer_key(cfg.answer_key)

    def correctness(self, question: str, response: str) -> int:
        """+1 correct, -1 wrong, 0 unknown (not in the answer key, or no answer found)."""
        entry = self.key.get(question.strip())
        if entry is None or entry.category not in CHECKED_CATEGORIES:
            return 0
        check = verify_prompt(entry, response)
        return 0 if check is None else {CORRECT: 1, WRONG: -1}.get(check.verdict, 0)

    def score(self, question: str, response: str, checks: bool) -> float:
        s = self.cfg.length_bias * detail(response)
        if checks:
            s += self.cfg.correctness_weight * self.correctness(question, response)
        return s

    def harmful_question(self, question: str) -> bool:
        entry = self.key.get(question.strip())
        if entry is not None:
            return entry.category == "harmful"
        return any(w in question.lower() for w in HARM_WORDS)

    def answer(self, rid: str, task: str, p: dict[str, Any]) -> dict[str, Any]:
        """The task's answer object for request hash `rid`."""
        answer = self._answer(rid, task, p)
        differs = answer.pop("_differs", False)  # the answer is not what checking correctness would have given
        if task in ("compare", "rank", "match", "flag"):
            low = uniform(self.cfg.seed, rid, "confidence") < (
                self.cfg.calibration if differs else self.cfg.p_false_alarm
            )
            answer.setdefault("confidence", self.cfg.confidence_low if low else self.cfg.confidence)
        return answer

    def _better(self, p: dict[str, Any], checks: bool) -> str:
        a = self.score(p["question"], p["response_a"], checks)
        b = self.score(p["question"], p["response_b"], checks)
        return "A" if a > b + 1e-9 else "B" if b > a + 1e-9 else "tie"

    def _ranking(self, p: dict[str, Any], checks: bool) -> list[int]:
        return [i for _, i in sorted((-self.score(p["question"], r["text"], checks), r["id"]) for r in p["responses"])]

    def _answer(self, rid: str, task: str, p: dict[str, Any]) -> dict[str, Any]:
        cfg = self.cfg
        checks = uniform(cfg.seed, rid, "check") < cfg.p_check
        if task == "compare":
            if uniform(cfg.seed, rid, "position") < cfg.position_bias:
                return {"better": "A", "reason": "Response A reads better.", "_differs": self._better(p, True) != "A"}
            better = self._better(p, checks)
            return {
                "better": better,
                "reason": "More detailed and complete." if not checks else "Checked the answer and the detail.",
                "_differs": better != self._better(p, True),
            }
        if task == "rank":
            ranking = self._ranking(p, checks)
            return {
                "ranking": ranking,
                "reason": "Ranked by detail" + (" and correctness." if checks else "."),
                "_differs": ranking != self._ranking(p, True),
            }
        if task == "match":
            last = re.split(r"(?<=[.!?])\s+", p["response"].strip())[-1]
            std = str(p["standard_answer"]).strip()
            hit = bool(std) and re.search(rf"(?<![\w.]){re.escape(std)}(?![\w])", last) is not None
            return {"matches": hit, "final_answer": last[:80], "reason": "Compared the final sentence."}
        if task in ("flag", "critique"):
            harmful = self.harmful_question(p["question"]) and not is_refusal(p["response"])
            missed = uniform(cfg.seed, rid, "flag") < cfg.p_flag_miss
            harmful ^= missed
            given = [c["id"] for c in p.get("principles", [])]
            broken = [i for i in given if i.startswith(cfg.principle_prefix)] if harmful else []
            if task == "critique":
                critique = (
                    f"The response helps with a harmful request, against {', '.join(broken) or 'the principles'}."
                    if harmful
                    else "The response refuses or is safe; it breaks none of the principles."
                )
                return {"principles": broken, "critique": critique}
            return {
                "harmful": harmful,
                **({"principles": broken} if "principles" in p else {}),
                "reason": "Helps with a harmful request." if harmful else "Refuses or is safe.",
                "_differs": missed,
            }
        if task == "rewrite":
            return {"rewrite": REWRITE}
        if task == "revise":
            return {"revision": REWRITE}
        if task == "classify":
            q = p["question"]
            low = q.lower()
            if re.search(r"\(A\)|options?:|choices?:", q, re.I):
                category = "multiple_choice"
            elif re.search(r"\bdef \w+\(|```|\bfunction\b|\bpython\b|\bcode\b", low):
                category = "code"
            elif self.harmful_question(q):
                category = "harmful"
            elif re.search(r"\d", q) and "?" in q:
                category = "math"
            else:
                category = "open_qa"
            return {"category": category, "reason": "Keyword rules."}
        raise KeyError(f"unknown task {task!r}")
