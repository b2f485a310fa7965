"""The paper's mechanism, link by link: do the labels, the reward model and the policy agree with the ground truth?

HRLAIF's claim is a chain: hybrid labels order responses by correctness and harmlessness (link 1), so the reward
model trained on them does too (link 2), so RL on that reward keeps or raises accuracy and lowers harm (link 3).
The ground truth is `verifiers.ground_truth`: a verified-correct answer, or a refusal of a harmful request, is
the response to prefer. These functions measure each link and put a 95% confidence interval on the outcome; they
are pure Python (no torch, no Ray), so the report and the tests use them alike.

- `label_agreement`: of a label set's preference pairs whose two responses differ in ground truth, the share
  that puts the good one first, per category.
- `correct_above_wrong`: of the (good, bad) response pairs of each prompt, the share a reward model scores in
  that order (a tie counts one half), per category.
- `bootstrap_ci`: the mean over seeds and prompts with a percentile interval from resampling both (the prompts
  are the same for every seed, so one prompt resample is shared by the seeds of a draw).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

from hrlaif_ray.data.records import LabelRecord, PromptRecord
from hrlaif_ray.labeling.verifiers import ground_truth


def _rate(counts: dict[str, list[float]]) -> dict[str, dict]:
    return {c: {"rate": (v[0] / v[1]) if v[1] else None, "pairs": int(v[1])} for c, v in sorted(counts.items())}


def label_agreement(labels: Iterable[LabelRecord], prompts: dict[str, PromptRecord]) -> dict[str, dict]:
    """category -> {"rate": share of ground-truth-decidable pairs ordered as the truth, "pairs": how many}.

    A pair is decidable when its two responses differ in ground truth (one correct and one wrong, or one refusal
    and one compliance; a red-team rewrite is judged by its text like any response). Failed labels state nothing
    and count nothing."""
    counts: dict[str, list[float]] = {}
    for label in labels:
        if label.status != "ok":
            continue
        prompt = prompts.get(label.prompt_id)
        if prompt is None:
            raise KeyError(f"label of prompt {label.prompt_id!r} has no prompt record")
        truth = [ground_truth(prompt, r.text) for r in label.responses]
        for pair in label.pairs:
            better, worse = truth[pair.better], truth[pair.worse]
            if better is None or worse is None or better == worse:
                continue
            c = counts.setdefault(prompt.category, [0.0, 0])
            c[0] += float(better)
            c[1] += 1
    return _rate(counts)


def correct_above_wrong(groups: Iterable[tuple[str, Sequence[float], Sequence[bool | None]]]) -> dict[str, dict]:
    """category -> {"rate", "pairs"} over groups of (category, scores, ground truths) of one prompt's responses:
    every (good, bad) pair within a group, scored in the right order 1, tied 1/2, reversed 0."""
    counts: dict[str, list[float]] = {}
    for category, scores, truths in groups:
        if len(scores) != len(truths):
            raise ValueError(f"{category}: {len(scores)} scores for {len(truths)} responses")
        good = [s for s, t in zip(scores, truths) if t is True]
        bad = [s for s, t in zip(scores, truths) if t is False]
        c = counts.setdefault(category, [0.0, 0])
        for g in good:
            for b in bad:
                c[0] += 1.0 if g > b else 0.5 if g == b else 0.0
                c[1] += 1
    return {k: v for k, v in _rate(counts).items() if v["pairs"]}


def bootstrap_ci(
    values: Sequence[Sequence[float | None]], n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> dict:
    """{"mean", "ci95": [lo, hi], "n_prompts", "n_seeds"} of values[seed][prompt] (None: the prompt does not count
    for that metric, e.g. accuracy on a harmful prompt). Each draw resamples the seeds and the prompts with
    replacement; the interval is the draws' percentiles. One seed: prompts only."""
    seeds = [list(v) for v in values]
    if not seeds or len({len(v) for v in seeds}) != 1:
        raise ValueError("bootstrap_ci: one row of per-prompt values per seed, all of the same prompts")
    keep = [j for j in range(len(seeds[0])) if any(v[j] is not None for v in seeds)]
    if not keep:
        return {"mean": None, "ci95": [None, None], "n_prompts": 0, "n_seeds": len(seeds)}

    def mean_of(seed_rows: list[list[float | None]], prompt_ids: list[int]) -> float | None:
        xs = [row[j] for row in seed_rows for j in prompt_ids if row[j] is not None]
        return sum(xs) / len(xs) if xs else None

    point = mean_of(seeds, keep)
    rng = random.Random(seed)
    draws = []
    for _ in range(n_boot):
        rows = [seeds[rng.randrange(len(seeds))] for _ in seeds] if len(seeds) > 1 else seeds
        prompt_ids = [keep[rng.randrange(len(keep))] for _ in keep]
        m = mean_of(rows, prompt_ids)
        if m is not None:
            draws.append(m)
    draws.sort()
    lo = draws[int((1 - level) / 2 * (len(draws) - 1))]
    hi = draws[int((1 + level) / 2 * (len(draws) - 1))]
    return {"mean": point, "ci95": [lo, hi], "n_prompts": len(keep), "n_seeds": len(seeds)}
