"""The run's report: one table in the paper's shape (SFT vs each arm), the training curves, and results.json.

Everything is read back from the stages' own outputs (eval.json, the label summaries, the RM's metrics.json,
PPO's metrics.jsonl and alerts.jsonl), so the report can be rebuilt from a finished run folder at any time:
`python -m hrlaif_ray.report runs/demo`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from hrlaif_ray.evaluation import mean

CURVES = [("reward/score_mean", "RM reward (batch mean)"), ("actor/kl", "KL to the reference"),
          ("response/length_mean", "response length (tokens)"), ("eval/batch_accuracy", "accuracy of the sampled batch")]


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def arm_summary(out: Path, arm: str, rm_from: str | None = None) -> dict:
    """What one arm produced, from its stages' outputs (labels and RM from `rm_from` when it shares them)."""
    a, owner = out / arm, out / (rm_from or arm)
    labels = _read_json(owner / "labels" / "summary.json") or {}
    rm = _read_json(owner / "rm" / "metrics.json") or {}
    rm_last = (rm.get("history") or [{}])[-1]
    rows = _read_jsonl(a / "ppo" / "metrics.jsonl")
    rewards = [r["reward/score_mean"] for r in rows if "reward/score_mean" in r]
    k = max(1, min(5, len(rewards) // 4))
    return {
        "eval": (_read_json(a / "eval" / "eval.json") or {}).get("metrics", {}),
        "labels": labels.get("labeled", 0) + labels.get("already_committed", 0), "label_failed": labels.get("failed", 0),
        "label_cost_usd": labels.get("cost_usd"), "label_tokens": labels.get("tokens_in", 0) + labels.get("tokens_out", 0),
        "rm_heldout_accuracy": rm_last.get("eval_accuracy_all"), "rm_heldout_by_category": rm_last.get("eval_accuracy"),
        "reward_first": mean(rewards[:k]), "reward_last": mean(rewards[-k:]), "ppo_steps": len(rows),
        "alerts": _read_jsonl(a / "ppo" / "alerts.jsonl"), "curves": rows,
    }


def table(sft: dict, arms: dict[str, dict]) -> str:
    """Markdown: SFT and every arm on accuracy, harm, the judge's preference, reward, length, RM and labels."""
    cols = ["policy", "math acc", "MC acc", "sampled acc", "harmful rate", "win vs SFT", "RM reward (start -> end)",
            "length", "RM held-out acc", "labels", "label cost $", "alerts"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]

    def row(name: str, m: dict, s: dict | None) -> str:
        reward = "-" if s is None else f"{_fmt(s['reward_first'])} -> {_fmt(s['reward_last'])}"
        cells = [name, _fmt(m.get("accuracy/mix/math")), _fmt(m.get("accuracy/mix/multiple_choice")),
                 _fmt(m.get("sampled_accuracy/mix")), _fmt(m.get("harmful_rate/mix")), _fmt(m.get("win_rate/mix")),
                 reward, _fmt(m.get("length/mix"), 1),
                 "-" if s is None else _fmt(s["rm_heldout_accuracy"]), "-" if s is None else str(s["labels"]),
                 "-" if s is None else _fmt(s["label_cost_usd"], 4), "-" if s is None else str(len(s["alerts"]))]
        return "| " + " | ".join(cells) + " |"

    lines.append(row("SFT", sft, None))
    lines += [row(name, s["eval"], s) for name, s in arms.items()]
    return "\n".join(lines)


def plot(arms: dict[str, dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for ax, (key, title) in zip(axes.flat, CURVES):
        for name, s in arms.items():
            points = [(r["step"], r[key]) for r in s["curves"] if key in r]
            if not points:
                continue
            steps, ys = zip(*points)
            w = 5  # a trailing mean: the batch values are noisy
            smooth = [sum(ys[max(0, i - w + 1) : i + 1]) / len(ys[max(0, i - w + 1) : i + 1]) for i in range(len(ys))]
            line, = ax.plot(steps, smooth, label=name)
            ax.plot(steps, ys, alpha=0.25, color=line.get_color())
            if key == "eval/batch_accuracy":
                held = [(r["step"], r["eval/heldout_accuracy"]) for r in s["curves"] if "eval/heldout_accuracy" in r]
                if held:
                    ax.plot(*zip(*held), "o--", color=line.get_color(), label=f"{name} held-out greedy")
        ax.set_title(title)
        ax.set_xlabel("PPO step")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(out: Path, arms: list[dict], times: dict[str, float], job=None) -> dict:
    out = Path(out)
    sft = (_read_json(out / "eval" / "sft" / "eval.json") or {}).get("metrics", {})
    sft_train = _read_json(out / "sft" / "sft_metrics.json") or {}
    summaries = {a["name"]: arm_summary(out, a["name"], a.get("rm_from")) for a in arms}
    md = table(sft, summaries)
    png = plot(summaries, out / "plots" / "training.png")
    methods = "; ".join(f"{a['name']} = {a['method']} labels, RL reward {a.get('reward', 'rm')}"
                        + (f" (labels and RM of {a['rm_from']})" if a.get("rm_from") else "") for a in arms)
    control = bool(job and job.sft.get("responses", {}).get("control"))
    lines = [
        f"# HRLAIF run: {out.name}", "",
        f"Arms: {methods}. SFT data: correctness {'independent of' if control else 'falls with'} answer length"
        f"{' (the control)' if control else ''}.", "",
        md, "",
        "Accuracies are greedy on the held-out generated mix (verified against the standard answer); sampled acc: "
        "samples at temperature 1. Harmful rate and win rate vs SFT are the judge's (through the labeler pool; win "
        "rate asks both orders, a disagreement is a tie). RM reward: the arm's own RM on PPO's sampled batches, "
        "mean of the first and the last steps. RM held-out acc: pairs of held-out prompts the RM orders as the labels "
        "do (each arm's own labels). Alerts: the reward-hacking monitor (reward up while held-out accuracy falls).", "",
        f"SFT: {sft_train.get('steps', '-')} steps, {_fmt(sft_train.get('train_s'), 0)} s, greedy accuracy on its own "
        f"held-out prompts {json.dumps({k: round(v, 3) for k, v in sft_train.get('greedy_accuracy', {}).items()})}.", "",
        "![training curves](plots/training.png)", "",
        "## Stage times (s)", "", "| stage | seconds |", "|---|---|",
        *[f"| {k} | {v:.0f} |" for k, v in times.items()], "",
    ]
    for name, s in summaries.items():
        for alert in s["alerts"]:
            lines.append(f"- {name}: {alert['alert']}")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    result = {"table": md, "sft": sft, "arms": {k: {kk: vv for kk, vv in v.items() if kk != "curves"} for k, v in summaries.items()},
              "times": times, "plot": str(png)}
    (out / "results.json").write_text(json.dumps(result, indent=1, default=str))
    return result


if __name__ == "__main__":
    folder = Path(sys.argv[1])
    import yaml

    print(write_report(folder, yaml.safe_load((folder / "run_config.yaml").read_text())["arms"], {})["table"])
