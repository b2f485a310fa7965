"""Online hybrid reward: a group's partial order (its label) becomes one reward per sample.

In the RL loop each prompt's n samples are labeled together by the labeler pool, with the same strategies as
`hrlaif label` (verify, then the judge within the correct and the wrong set; red teaming for harmful prompts;
basic AI preference for open questions). The rule that turns the label into rewards is a weighted Borda count
within the group:

    reward_i = (sum of the weights of the pairs i wins - sum of the weights of the pairs i loses) / (N - 1)

over every pair of the label (N responses: the n samples and any red-team rewrites, which take part in the order
but earn no reward), so rewards lie in [-1, 1] and only their order within the group carries signal, as
RLOO/GRPO baselines use it. Correct is always above wrong: hybrid labels prefer every correct sample to every wrong
one with weight 1, so a correct sample has at least |W| - w(|C| - 1) and a wrong one at most w(|W| - 1) - |C|,
apart by at least |C| + |W| - w(|C| + |W| - 2) > 0 for a within-set weight w <= 1. A failed label gives the group
no signal (every reward 0) rather than a wrong one.
"""

from __future__ import annotations

from hrlaif_ray.data.records import LabelRecord


def group_rewards(label: LabelRecord | None, n: int) -> list[float]:
    """One reward per sample (the label's first n responses); zeros when the label failed or is missing."""
    if label is None or label.status != "ok":
        return [0.0] * n
    if len(label.responses) < n:
        raise ValueError(f"label of prompt {label.prompt_id} has {len(label.responses)} responses, expected >= {n}")
    score = [0.0] * len(label.responses)
    for pair in label.pairs:
        score[pair.better] += pair.weight
        score[pair.worse] -= pair.weight
    scale = max(1, len(label.responses) - 1)
    return [s / scale for s in score[:n]]


def has_signal(rewards: list[float], tol: float = 1e-9) -> bool:
    """Whether a group's rewards differ at all (dynamic sampling drops groups without)."""
    return max(rewards) - min(rewards) > tol
