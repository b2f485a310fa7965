"""The math verifier's time per answer: `verify_math` (math-verify and our patterns, each where it reads best:
what labeling, the verifier reward and evaluation run) against our patterns alone (what the verifier was before
math-verify), on the same answers.

The verifier runs inside labeling and the online reward, once a sampled response: its time a response times the
responses of a step is what it adds to that step. Answers: the demo's SFT style ("... The answer is 27."), prose
with the number last, GSM8K's `#### x`, competition-style LaTeX (`\\boxed{}`, fractions, thousands separators) and
number words, each with a different number at every call (math-verify caches its parses: a repeated string would
be timed from its cache); timed after a warm-up call (the first imports math-verify and sympy). Both paths run in
this process's main thread, math-verify with its SIGALRM timeout (labeling verifies in worker threads, without
it: the same parse).

Run: `python -m benchmarks.verifier [--repeats N]`; the rows are appended to benchmarks/results/verifier.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

# (response, standard answer) templates: `{n}` is a different number at every call, so no reader's cache (math-verify
# keeps LRU caches of its parses) answers a repeat
ANSWERS = {
    "sft style": ("Tom has 23 apples and buys 4 more. He counts them again. The answer is {n}.", "{n}"),
    "prose, number last": ("She has 3 apples, then 4 more, so {n} apples in all", "{n}"),
    "gsm8k ####": ("16 - 3 - 4 = 9 eggs, 9 * 2 = 18 dollars. #### {n}", "{n}"),
    "latex boxed": ("So the investment is worth $\\boxed{{\\${n}.17}}$ after 5 years.", "{n}.17"),
    "latex fraction": ("Thus $x = \\boxed{{\\dfrac{{{n}}}{{2}}}}$, since $2x = {n}$.", "{n}/2"),
    "thousands": ("The final answer is $14{{,}}{n}$.", "14{n}"),
    "number words": ("The answer is forty-three, not {n}.", "43"),
}


def verdict_of(verify):
    """A verifier as (response, standard) -> correct, wrong or None (unparsed)."""
    from hrlaif_ray.labeling.verifiers import CORRECT, UNPARSED

    def run(response: str, standard: str) -> bool | None:
        verdict = verify(response, standard).verdict
        return None if verdict == UNPARSED else verdict == CORRECT

    return run


def time_per_answer(fn, response: str, standard: str, repeats: int) -> list[float]:
    """Microseconds a call, each on a number of its own (`{n}`: 100-999), after a warm-up call (imports)."""
    fn(response.format(n=99), standard.format(n=99))
    out = []
    for i in range(repeats):
        r, s = response.format(n=100 + i % 900), standard.format(n=100 + i % 900)
        start = time.perf_counter()
        fn(r, s)
        out.append((time.perf_counter() - start) * 1e6)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args(argv)
    from benchmarks.common import print_table, write_results
    from hrlaif_ray.labeling.verifiers import verify_math, verify_math_by_patterns

    paths = {
        "verify_math (both readers)": verdict_of(verify_math),
        "ours alone": verdict_of(verify_math_by_patterns),
    }
    rows = []
    for name, (response, standard) in ANSWERS.items():
        for path, fn in paths.items():
            times = time_per_answer(fn, response, standard, args.repeats)
            rows.append(
                {
                    "answer": name,
                    "verifier": path,
                    "correct": fn(response.format(n=123), standard.format(n=123)),
                    "median_us": round(statistics.median(times), 1),
                    "p90_us": round(statistics.quantiles(times, n=10)[-1], 1),
                    "repeats": args.repeats,
                }
            )
            print(rows[-1], flush=True)
    print_table(rows, ["answer", "verifier", "correct", "median_us", "p90_us"])
    write_results("verifier", rows, answers={k: list(v) for k, v in ANSWERS.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
