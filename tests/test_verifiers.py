import pytest

from hrlaif_ray.labeling.code_sandbox import network_isolation, run_humaneval, run_program
from hrlaif_ray.labeling.verifiers import (
    CORRECT,
    UNPARSED,
    WRONG,
    extract_choice,
    parse_number,
    verify_code,
    verify_math,
    verify_multiple_choice,
)

MATH_CASES = [
    ("The answer is 1,000.", "1000", CORRECT),
    ("So she pays $1,234.50 in total.", "1234.5", CORRECT),
    ("#### 72", "72", CORRECT),
    ("Therefore \\boxed{3/4}.", "0.75", CORRECT),
    ("Therefore \\boxed{\\frac{3}{4}}", "0.75", CORRECT),
    ("The result is \\boxed{\\dfrac{1}{2}} of the cake.", "0.5", CORRECT),
    ("The answer is 50%.", "50", CORRECT),
    ("The temperature drops to −5 degrees.", "-5", CORRECT),
    ("Final answer: 18", "18", CORRECT),
    ("The answer is 5. Wait, I made a mistake: the answer is 6.", "6", CORRECT),  # a correction wins
    ("The answer is 5. Wait, I made a mistake: the answer is 6.", "5", WRONG),
    ("She has 3 apples, then 4 more, so 7 apples in all", "7", CORRECT),  # the trailing number
    ("16 - 3 - 4 = 9 eggs, 9 * 2 = 18", "18", CORRECT),
    ("16 - 3 - 4 = 9 eggs, 9 * 2 = 18. Answer: 19", "18", WRONG),
    ("Tom has 23 apples and buys 4 more, so he has 28 apples. The answer is 28.", "27", WRONG),
    ("The answer is 27.0", "27", CORRECT),
    ("answer = .5", "1/2", CORRECT),
    ("I am not sure how to solve this.", "4", UNPARSED),
    ("The answer is \\boxed{x+1}", "4", WRONG),  # the boxed text is no number: the last number (1) is read
]


@pytest.mark.parametrize("response, standard, verdict", MATH_CASES)
def test_math_formats(response, standard, verdict):
    assert verify_math(response, standard).verdict == verdict


def test_parse_number():
    assert parse_number("1,000,000") == 1_000_000 and parse_number("3 / 4") == parse_number("0.75")
    assert parse_number("abc") is None and parse_number("1/0") is None
    with pytest.raises(ValueError, match="not a number"):
        verify_math("4", "four")


CHOICES = ["Paris", "London", "Berlin", "Madrid"]
MC_CASES = [
    ("The answer is (A).", "A", CORRECT),
    ("(B)", "B", CORRECT),
    ("Answer: C", "C", CORRECT),
    ("answer: c", "C", CORRECT),
    ("I think the correct option is D because of its location.", "D", CORRECT),
    ("B. London is the capital of England.", "B", CORRECT),
    ("B", "A", WRONG),
    ("The capital of France is Paris.", "A", CORRECT),  # option text, exactly one mentioned
    ("Answer: 3", "C", CORRECT),  # 1-4 numbering
    ("The answer is (A). Actually no, the answer is (C).", "C", CORRECT),
    ("It could be Paris or London.", "A", UNPARSED),  # two options mentioned, no pick
    ("I don't know.", "A", UNPARSED),
]


@pytest.mark.parametrize("response, standard, verdict", MC_CASES)
def test_multiple_choice_formats(response, standard, verdict):
    assert verify_multiple_choice(response, standard, CHOICES).verdict == verdict


def test_numeric_options_are_matched_by_text_first():
    choices = ["26", "27", "17", "28"]  # the demo's options are numbers: "the answer is 27" means option B
    assert extract_choice("The answer is 27.", choices) == 1
    assert extract_choice("The answer is (D).", choices) == 3
    assert extract_choice("Answer: 2", ["x", "y", "z", "w"]) == 1
    with pytest.raises(ValueError, match="not a letter"):
        verify_multiple_choice("A", "E", CHOICES)


PROMPT = 'def add(a, b):\n    """Return a + b."""\n'
TESTS = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"


def test_code_sandbox_verdicts():
    assert run_humaneval(PROMPT, "    return a + b\n", TESTS, "add").passed
    full = "Here you go:\n```python\ndef add(a, b):\n    return b + a\n```\nDone."
    assert verify_code(full, PROMPT, TESTS, "add").verdict == CORRECT
    assert verify_code("    return a - b\n", PROMPT, TESTS, "add").verdict == WRONG
    looping = run_humaneval(PROMPT, "    while True:\n        pass\n", TESTS, "add", timeout_s=2)
    assert looping.status == "timeout"
    hog = run_program("x = bytearray(4 << 30)\n", memory_mb=512)
    assert hog.status == "failed" and "MemoryError" in hog.output


def test_code_sandbox_has_no_network_and_its_own_directory():
    probe = (
        "import os, socket\n"
        "print(os.getcwd())\n"
        "try:\n"
        "    socket.create_connection(('127.0.0.1', 9), timeout=2)\n"
        "    print('NETWORK')\n"
        "except OSError as e:\n"
        "    print('blocked', e)\n"
    )
    result = run_program(probe)
    assert result.passed and "blocked" in result.output and "NETWORK" not in result.output
    assert "hrlaif-sandbox-" in result.output
    assert network_isolation() in ("unshare-net", "socket-guard")
