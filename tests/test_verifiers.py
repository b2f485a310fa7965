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


# Realistic final answers (competition-style LaTeX, GSM8K's "####", chatty prose), each with the standard answer, the
# verdict and who reads it: math-verify (a boxed answer, or prose both readers agree on), our patterns (an answer
# marked in words; prose math-verify cannot parse), or no one (the two disagree: the judge decides).
MV, OURS, NOONE = "math-verify", "ours", "no one"
ANSWER_FORMATS = [
    ("So the investment is worth $\\boxed{\\$16386.17}$ after 5 years.", "16386.17", CORRECT, MV),  # ours read 5
    ("Thus $x = \\boxed{\\dfrac{7}{2}}$, since $2x = 7$.", "3.5", CORRECT, MV),
    ("The area is $\\boxed{12\\text{ cm}^2}$.", "12", CORRECT, MV),
    ("We get $\\frac{6}{8} = \\frac{3}{4}$, so the answer is $\\boxed{0.75}$", "3/4", CORRECT, MV),
    ("The answer is $\\boxed{-3}$.", "3", WRONG, MV),
    ("The final answer is $14{,}916$.", "14916", CORRECT, OURS),  # ours read 14 before LaTeX's separator
    ("The total is 1,234 + 66 = 1,300 people.", "1300", CORRECT, MV),
    ("He gives away 3, so 43 items are left.", "43", CORRECT, MV),
    ("She saves 20% of $50, which is $10. #### 10", "10", CORRECT, OURS),
    ("The answer is 27. Check: 27 - 4 = 23.", "27", CORRECT, OURS),  # math-verify reads the 23 after the "="
    ("The answer for 3 weeks is 84.", "84", UNPARSED, NOONE),  # math-verify reads 3, our last number 84
    ("To answer this, we add 23 and 4 to get 27.", "27", UNPARSED, NOONE),
    ("The answer is forty-three.", "43", CORRECT, OURS),
    ("Tom has 23 apples and buys 4 more. The answer is twenty-seven.", "27", CORRECT, OURS),
    ("The final answer is one hundred and five.", "105", CORRECT, OURS),
    ("The answer is twenty one.", "22", WRONG, OURS),
    ("The temperature drops to −5 degrees.", "-5", CORRECT, MV),
    ("The answer is −5, since 3 − 8 = −5.", "-5", CORRECT, OURS),
    ("At 8 am it was −5.", "-5", CORRECT, MV),
]


@pytest.mark.parametrize("response, standard, verdict, by", ANSWER_FORMATS)
def test_answer_formats_and_who_reads_them(response, standard, verdict, by):
    checked = verify_math(response, standard)
    reader = (
        MV if checked.reason.endswith("(math-verify)") else NOONE if checked.reason.endswith("no verdict") else OURS
    )
    assert (checked.verdict, reader) == (verdict, by), checked


def test_what_sympy_would_compute_forever_is_read_by_our_patterns():
    """A power tower or a huge exponent would have sympy evaluate it before comparing (and no timeout interrupts
    that): such a response is never given to math-verify."""
    import time

    start = time.perf_counter()
    for response in ("The answer is $\\boxed{9^{9^{9^9}}}$.", "So x = 9**9**9**9, i.e. 7", "It is 2^{100000}."):
        checked = verify_math(response, "7")
        assert not checked.reason.endswith("(math-verify)"), checked
    assert time.perf_counter() - start < 5


def test_math_verify_runs_off_the_main_thread_and_beside_a_callers_alarm():
    """Its timeout is a SIGALRM alarm, which only the main thread may set and which would replace a caller's own
    handler (and cancel its alarm): off the main thread, or with another handler installed, it runs without one,
    on the end of the response only; the caller's handler and alarm are left as they were."""
    import signal
    import threading

    out = []
    worker = threading.Thread(target=lambda: out.append(verify_math("The answer is $\\boxed{27}$.", "27")))
    worker.start()
    worker.join()
    assert out[0].verdict == CORRECT and out[0].reason.endswith("(math-verify)")

    def mine(signum, frame):  # pragma: no cover - the alarm below is cancelled before it rings
        raise AssertionError("the caller's alarm")

    previous = signal.signal(signal.SIGALRM, mine)
    try:
        signal.alarm(100)
        assert verify_math("x" * 100_000 + " The answer is 12.", "12").verdict == CORRECT
        assert signal.getsignal(signal.SIGALRM) is mine and 0 < signal.alarm(0) <= 100
    finally:
        signal.signal(signal.SIGALRM, previous)


def test_number_words():
    from hrlaif_ray.labeling.verifiers import words_to_number

    cases = {"forty-three": 43, "one hundred and five": 105, "minus two": -2, "three thousand two hundred": 3200,
             "zero": 0, "twelve": 12, "two million": 2_000_000, "banana": None, "": None}  # fmt: skip
    assert {w: words_to_number(w) for w in cases} == cases


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
