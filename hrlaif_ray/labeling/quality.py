"""The label-quality report of a labeling run, per category: how far the judge's labels can be trusted, and what
they cost.

Read from the labels themselves (each carries its `stats`, see `strategies.label_item`), so the report of a folder
covers every label committed there, resumed runs included:

- position consistency: the share of response pairs whose verdict (a tie included) survives swapping the
  presentation order; first-shown share: of the preferences stated, the share won by the response shown first
  (0.5 is balanced: a judge at 0.7 favours position A); ties: "tie" answers of pairwise comparisons;
- ensemble agreement: of the pairs some judge of an ensemble stated, the share every judge stated alike;
- escalations: judge tasks sent to the next tier (tiered judging), and which tier decided;
- the verifier's unparsed rate: responses whose final answer the verifier could not find (the judge decided);
- re-asks (malformed answers), failed labels, HTTP attempts by status (429, 5xx, lost, refused);
- injection flags: responses that address the judge (`injection.addresses_judge`; their pairs go to review);
- tokens and cost per label, cache hits and the USD they saved, label latency percentiles.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from hrlaif_ray.data.records import LabelRecord

RETRY_STATUSES = ("http_429", "http_500", "http_502", "http_503", "http_504", "lost", "refused")


def _share(num: float, den: float) -> float | None:
    return round(num / den, 4) if den else None


def summarize(labels: list[LabelRecord]) -> dict:
    """The quality figures of `labels` (one category, or all)."""
    stats: Counter = Counter()
    for label in labels:
        stats.update({k: v for k, v in label.stats.items() if isinstance(v, (int, float)) and k != "latency_s"})
    n = len(labels)
    failed = sum(label.status != "ok" for label in labels)
    latencies = [label.stats["latency_s"] for label in labels if "latency_s" in label.stats]
    cost = sum(label.cost_usd for label in labels)
    tokens = sum(label.tokens_in + label.tokens_out for label in labels)
    retries = {s.removeprefix("http_"): int(stats[f"attempts_{s}"]) for s in RETRY_STATUSES if stats[f"attempts_{s}"]}
    tiers = {k.removeprefix("decided_tier_"): int(v) for k, v in sorted(stats.items()) if k.startswith("decided_tier_")}
    return {
        "labels": n,
        "failed": failed,
        "failed_share": _share(failed, n),
        "pairs_per_label": _share(sum(len(label.pairs) for label in labels), n),
        "position_consistency": _share(stats["swap_consistent"], stats["swap_pairs"]),
        "first_shown_share": _share(stats["first_shown_wins"], stats["first_shown_wins"] + stats["second_shown_wins"]),
        "ties": int(stats["ties"]),
        "ensemble_agreement": _share(stats["ensemble_agreed"], stats["ensemble_pairs"]),
        "judge_tasks": int(stats["judge_tasks"]),
        "escalations": int(stats["escalations"]),
        "escalation_rate": _share(stats["escalations"], stats["judge_tasks"]),
        "decided_by_tier": tiers,
        "verifier_unparsed_rate": _share(stats["judge_fallbacks"], stats["verified"]),
        "reasks": int(stats["reasks"]),
        "injection_flags": int(stats["injection_flags"]),
        "http_retries": retries,
        "tokens_per_label": _share(tokens, n),
        "cost_usd": round(cost, 6),
        "cost_per_label_usd": round(cost / n, 8) if n else None,
        "cache_hits": int(stats["cache_hits"]),
        "cache_saved_usd": round(float(stats["cache_saved_usd"]), 6),
        "latency_p50_s": round(float(np.percentile(latencies, 50)), 4) if latencies else None,
        "latency_p90_s": round(float(np.percentile(latencies, 90)), 4) if latencies else None,
        "latency_p99_s": round(float(np.percentile(latencies, 99)), 4) if latencies else None,
    }


def quality_report(labels: list[LabelRecord]) -> dict:
    """{"all": figures, "categories": {category: figures}} over `labels`."""
    by_category: dict[str, list[LabelRecord]] = defaultdict(list)
    for label in labels:
        by_category[label.category].append(label)
    return {"all": summarize(labels), "categories": {c: summarize(v) for c, v in sorted(by_category.items())}}


COLUMNS = [
    ("labels", "labels"),
    ("failed", "failed"),
    ("position_consistency", "pos. consistency"),
    ("first_shown_share", "first shown wins"),
    ("ties", "ties"),
    ("ensemble_agreement", "ensemble agree"),
    ("escalation_rate", "escalated"),
    ("verifier_unparsed_rate", "unparsed"),
    ("reasks", "re-asks"),
    ("injection_flags", "injections"),
    ("tokens_per_label", "tokens/label"),
    ("cost_per_label_usd", "USD/label"),
    ("cache_hits", "cache hits"),
    ("cache_saved_usd", "USD saved"),
    ("latency_p50_s", "p50 s"),
    ("latency_p99_s", "p99 s"),
]


def cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown(report: dict, title: str = "Label quality") -> str:
    """The report as a Markdown table, a row per category and one for all, then retries and tiers."""
    lines = [f"# {title}", "", "| category | " + " | ".join(h for _, h in COLUMNS) + " |"]
    lines.append("|---" * (len(COLUMNS) + 1) + "|")
    rows = [*report["categories"].items(), ("all", report["all"])]
    for name, row in rows:
        lines.append(f"| {name} | " + " | ".join(cell(row[k]) for k, _ in COLUMNS) + " |")
    everything = report["all"]
    lines += ["", f"HTTP retries by status: {everything['http_retries'] or 'none'}."]
    if everything["decided_by_tier"]:
        lines.append(f"Judge tasks decided by tier: {everything['decided_by_tier']}.")
    for key, value in report.get("run", {}).items():
        lines.append(f"{key}: {value}")
    if human := report.get("human"):  # `hrlaif review`'s decisions on this folder
        queues = ", ".join(
            f"{q} {v['decided']} of {v['items']} decided, AI agrees on {cell(v['ai_agreement'])} of {v['ai_stated']}"
            for q, v in human["queues"].items()
        )
        lines += [
            "",
            f"Human review: {human['decisions']} decisions by {len(human['reviewers'])} reviewers; {queues}; "
            f"reviewers agree on {cell(human['inter_reviewer']['agreement'])} of {human['inter_reviewer']['pairs']} pairs.",
        ]
    return "\n".join(lines) + "\n"


def write_quality(folder: str | Path, labels: list[LabelRecord], run: dict | None = None) -> dict:
    """quality.json and quality.md beside the labels; `run` adds what the run itself measured (budget, pool)."""
    folder = Path(folder)
    report = quality_report(labels)
    if run:
        report["run"] = run
    return save_report(folder, report)


def save_report(folder: str | Path, report: dict) -> dict:
    """A report as quality.json and quality.md in `folder`."""
    (Path(folder) / "quality.json").write_text(json.dumps(report, indent=1))
    (Path(folder) / "quality.md").write_text(markdown(report))
    return report
