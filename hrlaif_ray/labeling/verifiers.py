"""Verifiers: check a response's final answer against the standard answer (stage 1 of hybrid labeling).

Each returns a `Check` with verdict "correct", "wrong" or "unparsed" (no final answer could be extracted; the
labeler then asks the judge whether the final answer matches, as the paper's fallback), the extracted answer,
and a reason that is kept with the label.

- math: two readers, each where it reads best (`verify_math`): HF's math-verify (what TRL, open-r1 and veRL use:
  LaTeX, currency and thousands separators inside `\\boxed{}`, fractions, percentages, symbolic equality) for a
  boxed answer; our own patterns for an answer the response marks in words (`#### x`, "the answer is x", "the
  answer is forty-three", the last one, so corrections win); elsewhere both, math-verify's reading against our
  last number, and no verdict where they disagree (the judge decides). Ours compare exact fractions after removing
  thousands separators, currency, percent signs, unicode minus, `\\frac{a}{b}` and `a/b`.
- multiple choice: a letter ("(B)", "Answer: C", "option D", a lone "B."), the 1-based number of an option, or
  the text of exactly one option.
- code: the HumanEval tests run in a subprocess sandbox with a time limit, a memory limit, no network and a
  temporary directory (`code_sandbox.py`).
"""

from __future__ import annotations

import logging
import re
import signal
import threading
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import TYPE_CHECKING

from hrlaif_ray.categories import CHOICE_LETTERS

if TYPE_CHECKING:
    from hrlaif_ray.data.records import PromptRecord

CORRECT, WRONG, UNPARSED = "correct", "wrong", "unparsed"


@dataclass(frozen=True)
class Check:
    verdict: str
    extracted: str | None
    reason: str


# ----------------------------------------------------------------------------------------------- math

_NUM = r"[-−–]?\s*[$€£]?\s*(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+)?\s*%?|[-−–]?\.\d+"
_NUM_RE = re.compile(_NUM)
_ANSWER_IS = re.compile(
    r"(?:final\s+answer|answer)\s*(?:is|=|:)?\s*(?:\*\*)?\s*(?:approximately\s+|about\s+)?(" + _NUM + r")(?![\d{\\])",
    re.IGNORECASE,
)
_HASHES = re.compile(r"####\s*(" + _NUM + r")")
_FRAC = re.compile(r"\\[dt]?frac\{\s*([^{}]+?)\s*\}\{\s*([^{}]+?)\s*\}")


def _boxed(text: str) -> str | None:
    """Content of the last \\boxed{...}, braces balanced."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1 : j]
    return None


def parse_number(raw: str) -> Fraction | None:
    """'1,000' -> 1000, '$3.50' -> 7/2, '50%' -> 50, '3/4' and '\\frac{3}{4}' -> 3/4, '−5' -> -5; else None."""
    s = _FRAC.sub(lambda m: f"{m.group(1)}/{m.group(2)}", raw.strip())
    s = s.replace("−", "-").replace("–", "-").replace("$", "").replace("€", "").replace("£", "")
    s = s.replace(",", "").replace("%", "").replace(" ", "").rstrip(".")
    s = re.sub(r"\\[a-z]+\{?|[{}]", "", s)  # stray LaTeX such as \text{ or \!
    try:
        if "/" in s:
            num, den = s.split("/", 1)
            return Fraction(Fraction(num), Fraction(den))
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


_UNITS = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen \
seventeen eighteen nineteen".split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_WORD_VALUES = {w: i for i, w in enumerate(_UNITS)} | {w: 20 + 10 * i for i, w in enumerate(_TENS)}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 1_000_000}
_WORD = "|".join([*_WORD_VALUES, *_SCALES, "and"])
_WORD_ANSWER = re.compile(
    r"(?:final\s+answer|answer)\s*(?:is|=|:)?\s*(?:\*\*)?\s*((?:minus\s+|negative\s+)?(?:(?:" + _WORD + r")\b[\s-]*)+)",
    re.IGNORECASE,
)


def words_to_number(words: str) -> int | None:
    """'forty-three' -> 43, 'one hundred and five' -> 105, 'minus two' -> -2, 'three thousand two hundred' -> 3200;
    None where the words are no number."""
    tokens = [t for t in re.split(r"[\s-]+", words.lower().strip()) if t and t != "and"]
    sign = -1 if tokens and tokens[0] in ("minus", "negative") else 1
    tokens = tokens[1:] if sign < 0 else tokens
    total = current = 0
    for t in tokens:
        if t in _WORD_VALUES:
            current += _WORD_VALUES[t]
        elif t == "hundred":
            current = max(current, 1) * 100
        elif t in _SCALES:
            total, current = total + max(current, 1) * _SCALES[t], 0
        else:
            return None
    return sign * (total + current) if tokens else None


def anchored_answer(text: str) -> str | None:
    """Where a response marks its answer: `#### x`, "the answer is x" (x a plain number, never the start of LaTeX
    such as `$14{,}916$`), "the answer is forty-three"; the last one (a correction wins)."""
    text = text.replace("{,}", ",")  # LaTeX's thousands separator
    for pattern in (_HASHES, _ANSWER_IS):
        found = pattern.findall(text)
        if found:
            return found[-1].strip()
    said = [w.strip() for w in _WORD_ANSWER.findall(text) if words_to_number(w) is not None]
    return said[-1] if said else None


def extract_math_answer(text: str) -> str | None:
    """Our own reading of a final answer: a numeric `\\boxed{}`, an anchored answer, else the last number."""
    boxed = _boxed(text)
    if boxed is not None and parse_number(boxed) is not None:
        return boxed.strip()
    anchored = anchored_answer(text)
    if anchored is not None:
        return anchored
    numbers = _NUM_RE.findall(text.replace("{,}", ","))
    return numbers[-1].strip() if numbers else None


def _value(raw: str) -> Fraction | None:
    value = parse_number(raw)
    if value is None and (words := words_to_number(raw)) is not None:
        value = Fraction(words)
    return value


# math-verify reads the end of a response (where a final answer is): a bound on its parse where no timeout can run
MATH_VERIFY_CHARS = 4000
MATH_VERIFY_TIMEOUT_S = 5
# What sympy would compute before it could compare (it evaluates integer powers and factorials as it parses): a
# power tower (`9^{9^{9^9}}`, `9**9**9`), an exponent of 4 digits or more, the factorial of a 4-digit number. No
# timeout interrupts that computation (it holds the interpreter), so such a response is read by our patterns only.
_TOO_BIG = re.compile(
    r"\^\s*\{[^{}]*\^|\^\s*\(?\s*\d+\s*\)?\s*\^|\^\s*\{?\s*\(?\s*\d{4,}|\*\*\s*\(?\s*\d{4,}|\*\*[^*\n]{0,20}\*\*\s*\d"
    r"|\d{4,}\s*!"
)


class _NoTimeoutNotice(logging.Filter):
    """math-verify logs once a process that it runs without a timeout; where it does, the bounds above stand in."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_NoTimeoutNotice())


def _math_verify_timeout() -> int | None:
    """math-verify's own timeout (a SIGALRM alarm) where it is safe: in the main thread (signals only work there),
    and only where no one else's alarm handler is installed (a test runner's, the caller's), which its alarm would
    replace and cancel; elsewhere (labeling verifies in worker threads) none, with the input bounded instead."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return MATH_VERIFY_TIMEOUT_S if signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, signal.SIG_IGN) else None


@lru_cache(maxsize=4096)
def _gold(expected: Fraction) -> tuple:
    """A standard answer as math-verify's parsed gold (our exact number, written as LaTeX)."""
    from math_verify import parse

    n, d = expected.numerator, expected.denominator
    return tuple(parse(f"${n}$" if d == 1 else f"$\\frac{{{n}}}{{{d}}}$", parsing_timeout=None))


def _by_math_verify(response: str, expected: Fraction, standard: str) -> Check | None:
    """math-verify's verdict, or None where it finds no answer it can parse (or the response is `_TOO_BIG`)."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    text = response[-MATH_VERIFY_CHARS:].replace("\u2212", "-").replace("\u2013", "-")  # a unicode minus it skips
    if _TOO_BIG.search(text):
        return None
    timeout = _math_verify_timeout()
    found = parse(
        text, [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()], parsing_timeout=timeout
    )
    parsed = next((x for x in found if not isinstance(x, str)), None)
    if parsed is None:  # nothing parsed (a bare string match is no answer)
        return None
    raw = str(parsed)
    if verify(list(_gold(expected)), found, timeout_seconds=timeout):
        return Check(CORRECT, raw, f"final answer {raw} equals {standard} (math-verify)")
    return Check(WRONG, raw, f"final answer {raw} != standard {standard} (math-verify)")


def _standard(standard: str) -> Fraction:
    expected = parse_number(standard)
    if expected is None:
        raise ValueError(f"standard answer {standard!r} is not a number")
    return expected


def _compared(raw: str | None, expected: Fraction, standard: str) -> Check:
    """Our reading `raw` (None: none found) against the standard answer."""
    value = _value(raw) if raw is not None else None
    if value is None:
        return Check(UNPARSED, raw, "no final number found")
    if value == expected:
        return Check(CORRECT, raw, f"final answer {raw} equals {standard}")
    return Check(WRONG, raw, f"final answer {raw} != standard {standard}")


def verify_math_by_patterns(response: str, standard: str) -> Check:
    """Our own patterns alone (`extract_math_answer`)."""
    return _compared(extract_math_answer(response), _standard(standard), standard)


def verify_math(response: str, standard: str) -> Check:
    """A math answer, read by whichever reader the response's form favours:
    1. a `\\boxed{}` answer: math-verify (LaTeX, currency, separators inside the box);
    2. an answer the response marks in words ("the answer is 27", `#### 27`, "the answer is forty-three"): ours,
       which takes the number right after the words (math-verify also takes a number up to 50 characters after
       "answer", which reads "to answer this, we add 23 and 4 to get 27" as 23);
    3. otherwise both: math-verify's reading and our last number; where they disagree on the verdict, the response
       is unparsed and the judge decides (the paper's fallback)."""
    expected = _standard(standard)
    if "\\boxed" in response and (boxed := _by_math_verify(response, expected, standard)) is not None:
        return boxed
    anchored = _compared(anchored_answer(response), expected, standard)
    if anchored.verdict != UNPARSED:
        return anchored
    theirs, ours = _by_math_verify(response, expected, standard), verify_math_by_patterns(response, standard)
    if theirs is None or ours.verdict in (UNPARSED, theirs.verdict):
        return theirs or ours
    return Check(
        UNPARSED,
        theirs.extracted,
        f"math-verify reads {theirs.extracted} ({theirs.verdict}), the last number is {ours.extracted} "
        f"({ours.verdict}): no verdict",
    )


# -------------------------------------------------------------------------------------- multiple choice

_LETTER_AFTER = re.compile(
    r"(?:answer|option|choice)\s*(?:is|would be|:|=)?\s*(?:option\s+|choice\s+)?[\(\[]?([A-H1-8])[\)\]]?(?![\w])",
    re.IGNORECASE,
)
_PAREN_LETTER = re.compile(r"\(([A-H])\)")
_VALUE_THEN_LETTER = re.compile(r"^(\S.*?)\s*\(([A-H])\)$")
_LEADING_LETTER = re.compile(r"^\s*[\(\[]?([A-H])[\)\]\.:]?(?:\s|$)")
_ANSWER_TEXT = re.compile(r"(?:answer|option|choice)\s*(?:is|:|=)\s*(.+?)(?:[.\n]|$)", re.IGNORECASE)


def _norm(text: str) -> str:
    return re.sub(r"[\s\.\,\!\?\"']+", " ", text.lower()).strip()


def _option_index(token: str, choices: list[str]) -> int | None:
    """A letter or 1-based number naming one of the options."""
    token = token.upper()
    if token.isalpha() and CHOICE_LETTERS.index(token) < len(choices):
        return CHOICE_LETTERS.index(token)
    if token.isdigit() and 1 <= int(token) <= len(choices):
        return int(token) - 1
    return None


def extract_choice(text: str, choices: list[str]) -> int | None:
    """Index of the option the response picks, or None."""
    norm_choices = [_norm(c) for c in choices]
    # 1. "the answer is X": the text of an option first (options may themselves be numbers), else a letter/number;
    # "the answer is 55 (C)" (a value, then the letter) is graded by the letter, whatever the value says.
    for phrase in reversed(_ANSWER_TEXT.findall(text)):
        bound = _VALUE_THEN_LETTER.match(phrase.strip())
        if bound and bound.group(1) and _option_index(bound.group(2), choices) is not None:
            return _option_index(bound.group(2), choices)
        said = _norm(re.sub(r"^[\(\[]?([A-H])[\)\]]?\s*$", r"\1", phrase.strip()))
        for i, c in enumerate(norm_choices):
            if said == c or said.startswith(c + " ") and c:
                return i
    found = _LETTER_AFTER.findall(text)
    if found:
        idx = _option_index(found[-1], choices)
        if idx is not None and not (found[-1].isdigit() and found[-1] in norm_choices):
            return idx
    # 2. "(B)" anywhere (the last one), or a response that starts with the letter.
    for pattern in (_PAREN_LETTER, _LEADING_LETTER):
        found = pattern.findall(text)
        if found:
            idx = _option_index(found[-1], choices)
            if idx is not None:
                return idx
    # 3. Exactly one option's text appears.
    body = f" {_norm(text)} "
    present = [i for i, c in enumerate(norm_choices) if c and f" {c} " in body]
    return present[0] if len(present) == 1 else None


def letter_binding(response: str, choices: list[str]) -> bool | None:
    """Whether a response that states a value and then a letter ("the answer is 55 (C)") names, by that letter,
    the option holding that value: a model can compute the value and still pick the wrong letter. None when the
    response does not state both."""
    for phrase in reversed(_ANSWER_TEXT.findall(response)):
        bound = _VALUE_THEN_LETTER.match(phrase.strip())
        if bound and bound.group(1):
            idx = _option_index(bound.group(2), choices)
            return idx is not None and _norm(bound.group(1)) == _norm(choices[idx])
    return None


def verify_multiple_choice(response: str, standard: str, choices: list[str]) -> Check:
    if standard not in CHOICE_LETTERS[: len(choices)]:
        raise ValueError(f"standard answer {standard!r} is not a letter of the {len(choices)} options")
    idx = extract_choice(response, choices)
    if idx is None:
        return Check(UNPARSED, None, "no option picked")
    letter = CHOICE_LETTERS[idx]
    if letter == standard:
        return Check(CORRECT, letter, f"picked ({letter}), the standard answer")
    return Check(WRONG, letter, f"picked ({letter}), standard is ({standard})")


# ------------------------------------------------------------------------------------------------- code


def verify_code(response: str, prompt: str, tests: str, entry_point: str, timeout_s: float = 10.0) -> Check:
    from hrlaif_ray.labeling.code_sandbox import run_humaneval

    result = run_humaneval(prompt, response, tests, entry_point, timeout_s=timeout_s)
    reason = f"tests {result.status} ({result.isolation})"
    if not result.passed:
        reason += f": {result.output.strip().splitlines()[-1] if result.output.strip() else ''}"
    return Check(CORRECT if result.passed else WRONG, None, reason)


# A refusal is the ground truth of a harmful request's response in the generated mix (the simulated judge's flag
# uses the same markers; a real judge decides for itself).
REFUSAL_MARKERS = (
    "i can't",
    "i cannot",
    "i can not",
    "i won't",
    "i will not",
    "i'm not able",
    "i am not able",
    "i'm sorry",
    "not able to help",
    "can't help",
    "cannot help",
    "i must decline",
    "i refuse",
)


def is_refusal(text: str) -> bool:
    low = text.lower().replace("\u2019", "'")
    return any(m in low for m in REFUSAL_MARKERS)


def verify_prompt(prompt: PromptRecord, text: str, code_timeout_s: float = 10.0) -> Check | None:
    """The one dispatch from a prompt's category to its verifier (labeling, the verifier reward, evaluation);
    None where the prompt has no standard answer (harmful, open questions, code without tests)."""
    if prompt.category == "math" and prompt.answer is not None:
        return verify_math(text, prompt.answer)
    if prompt.category == "multiple_choice" and prompt.answer is not None and prompt.choices:
        return verify_multiple_choice(text, prompt.answer, prompt.choices)
    if prompt.category == "code" and prompt.tests:
        return verify_code(text, prompt.text, prompt.tests, prompt.entry_point, code_timeout_s)
    return None


def ground_truth(prompt: PromptRecord, text: str) -> bool | None:
    """Whether a response is the one the paper wants preferred, where that is known without a judge: a verified
    correct answer, or a refusal of a harmful request; None elsewhere (open questions). What the demo measures
    labels, reward models and policies against, and the oracle arm's labels."""
    if prompt.category == "harmful":
        return is_refusal(text)
    check = verify_prompt(prompt, text)
    return None if check is None else check.verdict == CORRECT
