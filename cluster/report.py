"""The pipeline's report: the mechanism link by link (labels -> RM -> outcome, 95% intervals over seeds and
prompts), the run's claims (`targets`, stated met or not), label quality, one table in the paper's shape (SFT vs
each arm), the training curves, and results.json.

Everything is read back from the stages' own outputs (eval.json, the label summaries, the RM's metrics.json,
PPO's metrics.jsonl and alerts.jsonl), so the report can be rebuilt from a finished run folder at any time:
`python -m cluster.report runs/demo`. It knows no arm by name: the arms and the claims are the run's config.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from hrlaif_ray.evaluation import mean

CURVES = [
    ("reward/score_mean", "RM reward (batch mean)"),
    ("actor/kl", "KL to the reference"),
    ("response/length_mean", "response length (tokens)"),
    ("eval/batch_accuracy", "accuracy of the sampled batch"),
]


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


def arm_summary(
    out: Path, arm: str, rm_from: str | None = None, trainer: str = "ppo", rm_owner: str | None = None
) -> dict:
    """What one arm produced, from its stages' outputs (labels from `rm_from` when it shares them, the RM from
    `rm_owner`'s folder; a DPO arm's held-out accuracy is its implicit reward's on the held-out label pairs)."""
    a, owner = out / arm, out / (rm_from or arm)
    labels = _read_json(owner / "labels" / "summary.json") or {}
    if trainer == "dpo":
        last = ((_read_json(a / "dpo" / "final.json") or {}).get("history") or [{}])[-1]
        rm_last = {
            "eval_accuracy_all": last.get("eval/accuracy"),
            "eval_accuracy": {k.split("/")[-1]: v for k, v in last.items() if k.startswith("eval/accuracy/")},
        }
    else:
        rm = _read_json(out / (rm_owner or rm_from or arm) / "rm" / "metrics.json") or {}
        rm_last = (rm.get("history") or [{}])[-1]
    rows = _read_jsonl(a / "ppo" / "metrics.jsonl")
    rewards = [r["reward/score_mean"] for r in rows if "reward/score_mean" in r]
    k = max(1, min(5, len(rewards) // 4))
    return {
        "eval": (_read_json(a / "eval" / "eval.json") or {}).get("metrics", {}),
        "labels": labels.get("labeled", 0) + labels.get("already_committed", 0),
        "label_failed": labels.get("failed", 0),
        "label_cost_usd": labels.get("cost_usd"),
        "label_tokens": labels.get("tokens_in", 0) + labels.get("tokens_out", 0),
        "rm_heldout_accuracy": rm_last.get("eval_accuracy_all"),
        "rm_heldout_by_category": rm_last.get("eval_accuracy"),
        "reward_first": mean(rewards[:k]),
        "reward_last": mean(rewards[-k:]),
        "ppo_steps": len(rows),
        "alerts": _read_jsonl(a / "ppo" / "alerts.jsonl"),
        "curves": rows,
    }


def table(sft: dict, arms: dict[str, dict]) -> str:
    """Markdown: SFT and every arm on accuracy, harm, the judge's preference, reward, length, RM and labels."""
    cols = [
        "policy",
        "math acc",
        "MC acc",
        "sampled acc",
        "harmful rate",
        "win vs SFT",
        "RM reward (start -> end)",
        "length",
        "RM (DPO: implicit) held-out acc",
        "labels",
        "label cost $",
        "alerts",
    ]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]

    def row(name: str, m: dict, s: dict | None) -> str:
        reward = "-" if s is None else f"{_fmt(s['reward_first'])} -> {_fmt(s['reward_last'])}"
        cells = [
            name,
            _fmt(m.get("accuracy/mix/math")),
            _fmt(m.get("accuracy/mix/multiple_choice")),
            _fmt(m.get("sampled_accuracy/mix")),
            _fmt(m.get("harmful_rate/mix")),
            _fmt(m.get("win_rate/mix")),
            reward,
            _fmt(m.get("length/mix"), 1),
            "-" if s is None else _fmt(s["rm_heldout_accuracy"]),
            "-" if s is None else str(s["labels"]),
            "-" if s is None else _fmt(s["label_cost_usd"], 4),
            "-" if s is None else str(len(s["alerts"])),
        ]
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
            (line,) = ax.plot(steps, smooth, label=name)
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


# ------------------------------------------------------------------------------------------ the mechanism

OUTCOMES = ["greedy_accuracy", "sampled_accuracy", "harmful_rate", "win_rate_vs_sft", "length", "binding_rate"]
PAIRED = ["greedy_accuracy", "sampled_accuracy", "harmful_rate"]  # each arm's difference to SFT, prompt by prompt
VERIFIABLE = ("math", "multiple_choice")
LINK_CATEGORIES = ("math", "multiple_choice", "harmful")


def _eval_rows(folder: Path) -> dict[str, dict]:
    """prompt id -> the evaluation's row for the generated mix (responses.jsonl)."""
    return {r["prompt_id"]: r for r in _read_jsonl(folder / "responses.jsonl") if r["set"] == "mix"}


def _outcome(row: dict, metric: str, category: str | None = None) -> float | None:
    if category and row["category"] != category:
        return None
    if metric == "greedy_accuracy":
        return row["correct"] if row["category"] in VERIFIABLE else None
    if metric == "sampled_accuracy":
        xs = [x for x in row.get("sampled") or [] if x is not None]
        return sum(xs) / len(xs) if xs and row["category"] in VERIFIABLE else None
    if metric == "harmful_rate":
        return None if row["category"] != "harmful" or row.get("harmful") is None else float(row["harmful"])
    if metric == "win_rate_vs_sft":
        return row.get("win")
    if metric == "length":
        return float(row["tokens"])
    if metric == "binding_rate":  # multiple choice stated as value then letter: the letter names that value
        return None if row.get("bound") is None else float(row["bound"])
    raise KeyError(metric)


def outcomes(per_seed: list[dict[str, dict]], n_boot: int = 2000) -> dict:
    """Each outcome on the unseen prompts (and `_seen`) with its 95% interval over seeds and prompts; greedy
    accuracy also per category."""
    from hrlaif_ray.mechanism import bootstrap_ci

    ids = sorted(per_seed[0])
    for rows in per_seed[1:]:
        if sorted(rows) != ids:
            raise ValueError("the seeds' evaluations cover different prompts")
    result: dict[str, Any] = {}
    for suffix, unseen in (("", True), ("_seen", False)):
        keep = [i for i in ids if bool(per_seed[0][i].get("unseen")) == unseen]
        for metric in OUTCOMES:
            result[metric + suffix] = bootstrap_ci(
                [[_outcome(rows[i], metric) for i in keep] for rows in per_seed], n_boot
            )
        result["greedy_accuracy_by_category" + suffix] = {
            c: bootstrap_ci([[_outcome(rows[i], "greedy_accuracy", c) for i in keep] for rows in per_seed], n_boot)
            for c in VERIFIABLE
        }
    return result


def paired_to(base: dict[str, dict], per_seed: list[dict[str, dict]], n_boot: int = 2000) -> dict:
    """Each PAIRED outcome's difference, arm minus `base` (the SFT policy's rows), prompt by prompt on the same
    prompts, with its 95% interval over seeds and prompts (unseen; `_seen` for the seen ones)."""
    from hrlaif_ray.mechanism import bootstrap_ci

    result = {}
    for suffix, unseen in (("", True), ("_seen", False)):
        keep = [i for i in sorted(base) if bool(base[i].get("unseen")) == unseen]
        for metric in PAIRED:
            diffs = []
            for rows in per_seed:
                pairs = [(_outcome(rows[i], metric), _outcome(base[i], metric)) for i in keep]
                diffs.append([None if a is None or b is None else a - b for a, b in pairs])
            result[metric + suffix] = bootstrap_ci(diffs, n_boot)
    return result


def _pooled(rates: list[dict]) -> dict[str, float | None]:
    """category -> rate pooled over seeds (pairs added up) from per-seed {category: {rate, pairs}}."""
    out = {}
    for c in LINK_CATEGORIES:
        hits = sum((r[c]["rate"] or 0) * r[c]["pairs"] for r in rates if c in r and r[c]["pairs"])
        n = sum(r[c]["pairs"] for r in rates if c in r)
        if n:
            out[c] = hits / n
    return out


def mechanism(out: Path, job, seeds: list[int]) -> dict:
    """Per arm (and the SFT policy): link 1 (labels), link 2 (RM) and link 3 (outcome) over every seed."""
    from hrlaif_ray.data.schemas import read_records
    from hrlaif_ray.labeling.ledger import LabelLedger
    from hrlaif_ray.mechanism import label_agreement

    prompts = {p.id: p for p in read_records(out / "prompts.parquet", "prompts")}
    sft_rows = _eval_rows(out / "eval" / "sft")
    result: dict[str, dict] = {"sft": outcomes([sft_rows])}
    for arm in job.arms:
        owner = arm.rm_from or arm.name
        labels = [label_agreement(LabelLedger(out / f"seed-{s}" / owner / "labels").labels(), prompts) for s in seeds]
        # DPO: the policy's implicit reward; PPO: the RM the arm's reward came from
        probe = Path(arm.name, "dpo") if arm.trainer == "dpo" else Path(job.rm_owner(arm), "rm")
        probes = [_read_json(out / f"seed-{s}" / probe / "probe.json") or {} for s in seeds]
        per_seed = [_eval_rows(out / f"seed-{s}" / arm.name / "eval") for s in seeds]
        result[arm.name] = {
            "label_agreement": _pooled(labels),
            "label_pairs": {c: sum(x.get(c, {}).get("pairs", 0) for x in labels) for c in LINK_CATEGORIES},
            "rm_correct_above_wrong": _pooled([p.get("unseen", {}) for p in probes]),
            "rm_correct_above_wrong_seen": _pooled([p.get("seen", {}) for p in probes]),
            "rm_pairs": {
                c: sum(p.get("unseen", {}).get(c, {}).get("pairs", 0) for p in probes) for c in LINK_CATEGORIES
            },
            "per_seed": {"label_agreement": labels, "rm_correct_above_wrong": [p.get("unseen") for p in probes]},
            **outcomes(per_seed),
            "vs_sft": paired_to(sft_rows, per_seed),
            "policy_evaluated": [evaluated(out / f"seed-{s}" / arm.name) for s in seeds],
            "rm_kind": {"ppo": job.rm_kind(arm), "dpo": "implicit (the DPO policy)", "online": None}[arm.trainer],
        }
    return result


def evaluated(arm_dir: Path) -> dict | None:
    """Which of a PPO arm's policies its evaluation took: the last step's, or the best held-out check's
    (monitor.keep_best); whether the monitor stopped it, at which step. None: not a PPO arm."""
    final = _read_json(arm_dir / "ppo" / "final.json")
    if not final:
        return None
    best = final.get("best") or {}
    is_best = bool(best) and str(final.get("policy", "")).rstrip("/").endswith("best/actor")
    return {
        "checkpoint": "best" if is_best else "last",
        "step": best.get("step") if is_best else final.get("steps"),
        "best_heldout_accuracy": best.get("heldout_accuracy"),
        "stopped_by_monitor": final.get("stopped_by_monitor"),
    }


def _ci(x: dict | None) -> str:
    if not x or x.get("mean") is None:
        return "-"
    return f"{x['mean']:.3f} [{x['ci95'][0]:.3f}, {x['ci95'][1]:.3f}]"


def mechanism_table(mech: dict, arms: list[str], suffix: str = "") -> str:
    """Markdown: the three links per arm; outcomes with their 95% intervals."""
    cols = [
        "policy",
        "labels agree: math / MC / harm",
        "RM correct>wrong: math / MC / harm",
        "greedy acc",
        "sampled acc",
        "harmful rate",
        "win vs SFT",
        "length",
        "MC binding",
    ]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]

    def three(d: dict | None) -> str:
        return " / ".join(_fmt((d or {}).get(c), 2) for c in LINK_CATEGORIES)

    for name in ["sft", *arms]:
        m = mech[name]
        links = (
            ["-", "-"] if name == "sft" else [three(m["label_agreement"]), three(m["rm_correct_above_wrong" + suffix])]
        )
        cells = [name.upper() if name == "sft" else name, *links, *(_ci(m.get(k + suffix)) for k in OUTCOMES)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_table(mech: dict, arms: list[str], suffix: str = "") -> str:
    """Markdown: each arm minus the SFT policy, prompt by prompt, with 95% intervals (an interval above 0 is a
    gain that the spread over seeds and prompts does not explain)."""
    cols = ["policy", *(f"{m.replace('_', ' ')} - SFT" for m in PAIRED)]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for name in arms:
        paired = mech[name].get("vs_sft", {})
        lines.append("| " + " | ".join([name, *(_ci(paired.get(m + suffix)) for m in PAIRED)]) + " |")
    return "\n".join(lines)


def measured(mech: dict, policy: str, metric: str) -> float | None:
    """A policy's value of a target's metric (`greedy_accuracy`, `rm_correct_above_wrong.math`...): an outcome's
    mean over seeds and prompts, or a link's pooled rate."""
    name, _, category = metric.partition(".")
    value = (mech.get(policy) or {}).get(name)
    if name == "vs_sft":  # vs_sft.greedy_accuracy[.ci_low|.ci_high]
        outcome, _, bound = category.partition(".")
        diff = (value or {}).get(outcome) or {}
        low, high = diff.get("ci95") or (None, None)
        return {"": diff.get("mean"), "ci_low": low, "ci_high": high}[bound]
    if category:
        return (value or {}).get(category)
    return (value or {}).get("mean")


COMPARE = {">=": lambda a, b: a >= b, ">": lambda a, b: a > b, "<=": lambda a, b: a <= b, "<": lambda a, b: a < b}


def targets(mech: dict, claims: list) -> list[str]:
    """Each of the run's claims (`TargetConfig`s) in words, met, not met, or not measured, with its values."""
    lines = []
    for t in claims:
        absent = [p for p in (t.policy, t.than) if isinstance(p, str) and p not in mech]
        if absent:
            lines.append(f"- {t.policy} {t.metric} {t.op} {t.than}: **not measured** (the run has no {absent[0]})")
            continue
        value = measured(mech, t.policy, t.metric)
        other = t.than if not isinstance(t.than, str) else measured(mech, t.than, t.metric)
        than = f"{t.than}'s {_fmt(other)}" if isinstance(t.than, str) else _fmt(t.than)
        verdict = "not measured" if None in (value, other) else "met" if COMPARE[t.op](value, other) else "not met"
        lines.append(f"- {t.policy} {t.metric} {t.op} {t.than}: **{verdict}** ({_fmt(value)} against {than})")
    return lines


def quality_table(out: Path, job, seeds: list[int]) -> tuple[str, dict]:
    """Markdown: the label-quality figures of every arm that labels (all its seeds' labels together), and them."""
    from hrlaif_ray.labeling.ledger import LabelLedger
    from hrlaif_ray.labeling.quality import COLUMNS, cell, summarize

    figures = {}
    for arm in job.arms:
        if arm.rm_from:
            continue
        labels = [l for s in seeds for l in LabelLedger(out / f"seed-{s}" / arm.name / "labels").labels()]
        figures[arm.name] = summarize(labels)
    lines = ["| arm | " + " | ".join(h for _, h in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(cell(f[k]) for k, _ in COLUMNS) + " |" for name, f in figures.items()]
    return "\n".join(lines), figures


def stage_records(out: Path) -> dict[str, dict]:
    """Each stage's last finished run (stages.jsonl): its seconds, date, commit and machine speed."""
    return {row["stage"]: row for row in _read_jsonl(out / "stages.jsonl")}


def write_report(out: Path, job, machine: dict | None = None) -> dict:
    """report.md and results.json of a run folder; `machine`: the invocation's (each stage keeps its own)."""
    from hrlaif_ray.provenance import stamp

    out = Path(out)
    stages = stage_records(out)
    seeds = list(job.seeds)
    arms = [a.name for a in job.arms]
    mech = mechanism(out, job, seeds)
    sft_train = _read_json(out / "sft" / "sft_metrics.json") or {}
    first = out / f"seed-{seeds[0]}"
    summaries = {a.name: arm_summary(first, a.name, a.rm_from, a.trainer, job.rm_owner(a)) for a in job.arms}
    png = plot(summaries, out / "plots" / "training.png")
    quality, quality_figures = quality_table(out, job, seeds)
    how = {
        "ppo": lambda a: f"RL reward {a.reward} ({job.rm_kind(a)} RM)",
        "dpo": lambda a: "DPO on them (no RM, no RL)",
        "online": lambda a: "PPO on the judge's labels of each step's samples (no RM)",
    }
    methods = "; ".join(
        f"{a.name} = {a.method} labels, "
        + how[a.trainer](a)
        + (f" (labels{' and RM' if job.rm_owner(a) != a.name else ''} of {a.rm_from})" if a.rm_from else "")
        for a in job.arms
    )
    control = job.sft.responses.control
    mix = job.eval.mix
    machine = machine or {}
    lines = [
        f"# HRLAIF run: {out.name}",
        "",
        f"Arms: {methods}. Seeds {seeds} (labels, RM, PPO and evaluation samples reseeded; one SFT policy). SFT data: "
        f"correctness {'independent of' if control else 'falls with'} answer length{' (the control)' if control else ''}. "
        f"Machine: {machine.get('cpus', '-')} CPUs, fp32 matmul {machine.get('matmul_gflops', '-')} GFLOP/s, {machine.get('date', '-')}.",
        "",
        f"## The mechanism, on the {mix.split if mix else '-'} prompts no stage trained on (unseen problems)",
        "",
        mechanism_table(mech, arms),
        "",
        "Labels agree: of each arm's preference pairs whose two responses differ in ground truth (verified correct vs "
        "wrong; refusal vs compliance), the share that puts the right one first. RM correct>wrong: the arm's RM (a DPO "
        "arm's implicit reward, its log-probability ratio to the SFT policy) on the SFT policy's samples (4 per "
        "prompt) of the evaluation prompts, the share of such pairs it scores in the right order. Outcomes: mean "
        "over seeds and prompts with a 95% bootstrap interval (seeds and prompts resampled); greedy and sampled "
        "(temperature 1) verified accuracy on math and multiple choice; harmful rate and win rate against the SFT "
        "policy are the judge's (both orders, a disagreement is a tie); length in tokens.",
        "",
        *(["The run's claims (`targets` in its config), on the unseen prompts:", ""] if job.targets else []),
        *targets(mech, job.targets),
        "",
        "Each arm minus the SFT policy on the same prompts (paired), with 95% intervals over seeds and prompts:",
        "",
        paired_table(mech, arms),
        "",
        "Policy evaluated per seed (PPO: the last step's, or the best held-out check's with monitor.keep_best): "
        + "; ".join(
            f"{name} "
            + ", ".join(
                f"{e['checkpoint']} step {e['step']}" + (" (stopped by the monitor)" if e["stopped_by_monitor"] else "")
                for e in mech[name]["policy_evaluated"]
                if e
            )
            for name in arms
            if any(mech[name]["policy_evaluated"])
        )
        + ".",
        "",
        "## The same on seen problems (problems the training stages drew, new prompts)",
        "",
        mechanism_table(mech, arms, "_seen"),
        "",
        paired_table(mech, arms, "_seen"),
        "",
        f"SFT: {sft_train.get('steps', '-')} steps, greedy accuracy on its own check prompts "
        f"{json.dumps({k: round(v, 3) for k, v in sft_train.get('greedy_accuracy', {}).items()})}.",
        "",
        f"## Label quality (seeds {seeds}; per category: `seed-N/ARM/labels/quality.md`)",
        "",
        quality,
        "",
        "Position consistency: the share of response pairs whose verdict survives swapping the presentation order; "
        "first shown wins: of the preferences stated, the share won by the response shown first (0.5 is balanced); "
        "unparsed: responses whose final answer the verifier could not find (the judge decided); cache hits: "
        "questions answered by the seed's judge cache (shared by the arms) instead of the judge, and the USD saved.",
        "",
        f"## Training (seed {seeds[0]})",
        "",
        table((_read_json(out / "eval" / "sft" / "eval.json") or {}).get("metrics", {}), summaries),
        "",
        "![training curves](plots/training.png)",
        "",
        "## Stage times (each stage's own run: a resumed run's stages keep their date and commit)",
        "",
        "| stage | seconds | date | commit | fp32 matmul GFLOP/s |",
        "|---|---|---|---|---|",
        *[
            f"| {k} | {r['seconds']:.0f} | {r.get('date', '-')} | {r.get('commit', '-')} | {r.get('matmul_gflops', '-')} |"
            for k, r in stages.items()
        ],
        "",
    ]
    for name, s in summaries.items():
        for alert in s["alerts"]:
            lines.append(f"- {name} (seed {seeds[0]}): {alert['alert']}")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    result = {
        **stamp(),
        "machine": machine,
        "seeds": seeds,
        "mechanism": mech,
        "table": mechanism_table(mech, arms),
        "label_quality": quality_figures,
        "arms_seed_first": {k: {kk: vv for kk, vv in v.items() if kk != "curves"} for k, v in summaries.items()},
        "stages": stages,
        "plot": str(png),
    }
    (out / "results.json").write_text(json.dumps(result, indent=1, default=str))
    return result


def summary_json(result: dict) -> dict:
    """A run's record in the committed summary (`benchmarks/results/demo_seeds.json`): the report's date, commit and
    machine, each stage's own (a resumed run's stages may come from several invocations), the seeds, and per arm
    the links and outcomes (unseen prompts; `_seen` for the seen ones)."""
    keep = [
        "label_agreement",
        "rm_correct_above_wrong",
        "rm_correct_above_wrong_seen",
        "label_pairs",
        "rm_pairs",
        *OUTCOMES,
        *(k + "_seen" for k in OUTCOMES),
        "greedy_accuracy_by_category",
        "greedy_accuracy_by_category_seen",
        "vs_sft",
        "rm_kind",
        "policy_evaluated",
    ]
    arms = {name: {k: m[k] for k in keep if k in m} for name, m in result["mechanism"].items()}
    return {
        "date": result["date"],
        "commit": result["commit"],
        "machine": result["machine"],
        "seeds": result["seeds"],
        "arms": arms,
        "label_quality": result.get("label_quality", {}),
        "stages": result["stages"],
    }


if __name__ == "__main__":
    from hrlaif_ray.config import RunJob, load_config

    folder = Path(sys.argv[1])
    print(write_report(folder, load_config(RunJob, folder / "run_config.yaml"))["table"])
