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
- confidence (compare, rank, match, flag): `confidence`, except `confidence_unchecked` after ranking answers to a
  question with a known answer without checking them, and `confidence_miss` on a flag it got wrong.
- classify: keyword rules (options -> multiple_choice, `def`/code words -> code, harmful words -> harmful,
  numbers and a question -> math, else open_qa).

Every random draw is keyed on a hash of the request (model + messages) and a tag, so the same request always
gets the same answer, and a rerun of a whole labeling job is reproducible.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from hrlaif_ray.config import Section
from hrlaif_ray.labeling.verifiers import CORRECT, WRONG, is_refusal, verify_math, verify_multiple_choice

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


class SimJudgeConfig(Section):
    """Behaviour and faults of the simulated judge (`hrlaif serve-judge`)."""

    seed: int = Field(0, description="Keys every random draw together with the request hash.")
    length_bias: float = Field(1.0, description="Weight of detail (min(sentences, 4) / 4) in the judge's score.")
    p_check: float = Field(0.2, ge=0, le=1, description="Probability the judge checks correctness on a request.")
    correctness_weight: float = Field(1.0, description="Score of a correct (+) or wrong (-) answer when checked.")
    position_bias: float = Field(0.0, ge=0, le=1, description="Probability a comparison answers A regardless.")
    p_flag_miss: float = Field(0.0, ge=0, le=1, description="Probability a harm verdict is flipped.")
    confidence: float = Field(
        0.9, ge=0, le=1, description="Confidence it states on compare, rank, match and flag answers (the default)."
    )
    confidence_unchecked: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Confidence it states when it ranks or compares responses to a question with a known answer "
        "without checking correctness (None: `confidence`). Lower than `confidence` models a judge that knows when "
        "it has not verified (what tiered judging escalates on).",
    )
    confidence_miss: float | None = Field(
        None, ge=0, le=1, description="Confidence of a flag verdict it got wrong (p_flag_miss; None: `confidence`)."
    )
    latency_ms: float = Field(0.0, ge=0, description="Added latency of every answer.")
    answer_key: str | None = Field(None, description="Prompts Parquet whose standard answers the judge may check.")
    # Faults, drawn per (request, attempt): the SDK's retry count and the labeler's re-ask number.
    p_429: float = Field(0.0, ge=0, le=1, description="Rate-limit answers (429 with Retry-After).")
    p_500: float = Field(0.0, ge=0, le=1, description="Server errors.")
    p_timeout: float = Field(0.0, ge=0, le=1, description="Answers held back for timeout_s (the client gives up).")
    p_drop: float = Field(0.0, ge=0, le=1, description="Connections dropped mid-answer.")
    p_malformed: float = Field(0.0, ge=0, le=1, description="Answers that are not JSON.")
    p_truncated: float = Field(0.0, ge=0, le=1, description="JSON answers cut off (finish_reason 'length').")
    retry_after_s: float = Field(0.05, ge=0, description="Retry-After of a 429.")
    timeout_s: float = Field(30.0, ge=0, description="How long a 'timeout' fault holds the answer.")
    max_faulty_attempts: int = Field(3, ge=0, description="Attempts after this many always succeed.")


def uniform(*key: Any) -> float:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def count_tokens(text: str) -> int:
    """The simulated provider bills a token per 4 characters (what `judge.estimate_tokens` assumes too)."""
    return max(1, len(text) // 4)


def detail(text: str) -> float:
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]
    return min(len(sentences), 4) / 4


@dataclass
class KeyEntry:
    category: str
    answer: str | None
    choices: list[str] | None


def load_answer_key(path: str | Path | None) -> dict[str, KeyEntry]:
    if not path:
        return {}
    from hrlaif_ray.data.schemas import read_records

    return {r.text.strip(): KeyEntry(r.category, r.answer, r.choices) for r in read_records(path, "prompts")}


class SimJudge:
    def __init__(self, cfg: SimJudgeConfig):
        self.cfg = cfg
        self.key = load_answer_key(cfg.answer_key)

    def correctness(self, question: str, response: str) -> int:
        """+1 correct, -1 wrong, 0 unknown (not in the answer key, or no answer found)."""
        entry = self.key.get(question.strip())
        if entry is None or entry.answer is None:
            return 0
        if entry.category == "math":
            verdict = verify_math(response, entry.answer).verdict
        elif entry.category == "multiple_choice" and entry.choices:
            verdict = verify_multiple_choice(response, entry.answer, entry.choices).verdict
        else:
            return 0
        return {CORRECT: 1, WRONG: -1}.get(verdict, 0)

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
        if task in ("compare", "rank", "match", "flag"):
            answer.setdefault("confidence", self.cfg.confidence)
        return answer

    def _confidence(self, question: str, checks: bool) -> float:
        """What it states after ranking responses to `question`: lower when it could have checked and did not."""
        cfg, entry = self.cfg, self.key.get(question.strip())
        unverified = not checks and entry is not None and entry.answer is not None
        return cfg.confidence_unchecked if unverified and cfg.confidence_unchecked is not None else cfg.confidence

    def _answer(self, rid: str, task: str, p: dict[str, Any]) -> dict[str, Any]:
        cfg = self.cfg
        checks = uniform(cfg.seed, rid, "check") < cfg.p_check
        if task == "compare":
            if uniform(cfg.seed, rid, "position") < cfg.position_bias:
                return {
                    "better": "A",
                    "reason": "Response A reads better.",
                    "confidence": self._confidence(p["question"], False),
                }
            a = self.score(p["question"], p["response_a"], checks)
            b = self.score(p["question"], p["response_b"], checks)
            better = "A" if a > b + 1e-9 else "B" if b > a + 1e-9 else "tie"
            return {
                "better": better,
                "confidence": self._confidence(p["question"], checks),
                "reason": "More detailed and complete." if not checks else "Checked the answer and the detail.",
            }
        if task == "rank":
            scored = [(-self.score(p["question"], r["text"], checks), r["id"]) for r in p["responses"]]
            return {
                "ranking": [i for _, i in sorted(scored)],
                "confidence": self._confidence(p["question"], checks),
                "reason": "Ranked by detail" + (" and correctness." if checks else "."),
            }
        if task == "match":
            last = re.split(r"(?<=[.!?])\s+", p["response"].strip())[-1]
            std = str(p["standard_answer"]).strip()
            hit = bool(std) and re.search(rf"(?<![\w.]){re.escape(std)}(?![\w])", last) is not None
            return {"matches": hit, "final_answer": last[:80], "reason": "Compared the final sentence."}
        if task == "flag":
            harmful = self.harmful_question(p["question"]) and not is_refusal(p["response"])
            confidence = cfg.confidence
            if uniform(cfg.seed, rid, "flag") < cfg.p_flag_miss:
                harmful = not harmful
                confidence = cfg.confidence if cfg.confidence_miss is None else cfg.confidence_miss
            return {
                "harmful": harmful,
                "confidence": confidence,
                "reason": "Helps with a harmful request." if harmful else "Refuses or is safe.",
            }
        if task == "rewrite":
            return {"rewrite": REWRITE}
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
