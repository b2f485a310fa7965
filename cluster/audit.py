"""`hrlaif audit-labels`: AI-vs-human agreement per category and verifier-vs-ground-truth agreement.

Reads the human preference pairs and verifiable prompts from the data folder (../shared/data, or
--data-dir / HRLAIF_DATA_DIR), or the human pairs from any JSONL file in the documented form (--human-pairs,
repeatable): one object a line, {"prompt", "chosen", "rejected", "category": "harmful" | "open_qa"}, optionally
"id" and "source". The judge is any OpenAI-compatible endpoint (--base-url, --model); without one, the
project's simulated judge is started on 127.0.0.1, whose agreement figures prove the plumbing only. With
--constitution, the compare and flag prompts cite the principles of each pair's category.

With --labels DIR (repeatable), the human pairs are the decisions people made on that folder's labels (`hrlaif
review`): the AI labels' agreement with the reviewers' majority on the disputed pairs and on the audit sample, apart,
and the reviewers' agreement with each other; no judge is asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from pathlib import Path

from hrlaif_ray.data.readers import load_source, read_human_pairs_jsonl
from hrlaif_ray.errors import HrlaifError, OneLineParser
from hrlaif_ray.judges.launch import sim_judge_server
from hrlaif_ray.labeling.audit import judge_human_pairs, verifier_audit_gsm8k, verifier_audit_mmlu
from hrlaif_ray.labeling.constitution import Constitution, load_constitution, template_version
from hrlaif_ray.labeling.judge import JudgeClient
from hrlaif_ray.labeling.review import HumanLedger, agreement

HUMAN_SETS = {
    "harmful": ["hh-rlhf/harmless-base-test"],
    "open_qa": [
        "llmbar/natural",
        "llmbar/adversarial-gptinst",
        "llmbar/adversarial-gptout",
        "llmbar/adversarial-manual",
        "llmbar/adversarial-neighbor",
        "mt-bench",
    ],
}


def sample(records: list, n: int, seed: int) -> list:
    return random.Random(seed).sample(records, min(n, len(records)))


def human_pairs(args) -> dict[str, tuple[list[str], list]]:
    """category -> (sources, pairs): the --human-pairs files when given, else the bundled sets of the data folder."""
    if not args.human_pairs:
        return {c: (s, [p for name in s for p in load_source(name, args.data_dir)]) for c, s in HUMAN_SETS.items()}
    found: dict[str, tuple[list[str], list]] = {}
    for path in args.human_pairs:
        for pair in read_human_pairs_jsonl(path):
            sources, pairs = found.setdefault(pair.category, ([], []))
            sources += [] if str(path) in sources else [str(path)]
            pairs.append(pair)
    return {c: found[c] for c in HUMAN_SETS if c in found}


async def _audit(args, base_url: str, human: dict, constitution: Constitution | None) -> dict:
    judge = JudgeClient(
        base_url, args.model, api_key_env=args.api_key_env, timeout_s=args.timeout_s, json_mode=args.json_mode
    )
    report: dict = {
        "judge": {"base_url": base_url, "model": args.model, "template_version": template_version(constitution)},
        "categories": {},
        "verifiers": {},
    }
    try:
        for category, (sources, pool) in human.items():
            pairs = sample(pool, args.pairs, args.seed)
            cited = constitution.cite(constitution.for_category(category)) if constitution else None
            report["categories"][category] = {
                "sources": sources,
                **await judge_human_pairs(judge, pairs, args.concurrency, category == "harmful", cited),
            }
    finally:
        await judge.close()
    if not args.skip_verifiers:
        report["verifiers"]["gsm8k/test"] = verifier_audit_gsm8k(
            sample(load_source("gsm8k/test", args.data_dir), args.items, args.seed)
        )
        report["verifiers"]["mmlu/test"] = verifier_audit_mmlu(
            sample(load_source("mmlu/test", args.data_dir), args.items, args.seed)
        )
    return report


def print_report(report: dict) -> None:
    cols = [
        "pairs",
        "agreement",
        "agreement_when_consistent",
        "consistency",
        "position_bias_rate",
        "reversal_rate",
        "a_share",
    ]
    print("AI vs human (" + report["judge"]["model"] + ")")
    widths = [max(9, len(c)) for c in cols]  # every header whole
    print(f"{'category':10s} " + " ".join(f"{c:>{w}s}" for c, w in zip(cols, widths)))
    for cat, row in report["categories"].items():
        cells = [f"{row[c]:{w}.3f}" if isinstance(row[c], float) else f"{row[c]:{w}d}" for c, w in zip(cols, widths)]
        print(f"{cat:10s} " + " ".join(cells))
        if "redteam_flag_agreement" in row:
            print(
                f"{'':10s} red-team flags agree {row['redteam_flag_agreement']:.3f}, reverse {row['redteam_flag_reversal']:.3f}"
            )
    for name, row in report["verifiers"].items():
        print(
            f"verifier vs ground truth, {name}: {row['agreement']:.3f} over {row['items']} items "
            f"({row['answers']} answers: a right and a wrong one each)"
        )


def review_audit(folders: list[Path]) -> dict:
    """Per labels folder: the AI labels against the people's decisions on them (`hrlaif_ray.labeling.review`)."""
    report = {}
    for folder in folders:
        ledger = HumanLedger(folder)
        if not ledger.decisions:
            raise HrlaifError(f"--labels {folder}: no decisions in {ledger.folder} (`hrlaif review` makes them)")
        report[str(folder)] = {"decisions": len(ledger.decisions), **agreement(ledger.decisions)}
    return report


def print_review(report: dict) -> None:
    for folder, row in report.items():
        print(f"AI labels vs reviewers, {folder} ({row['decisions']} decisions by {len(row['reviewers'])} reviewers)")
        for queue, q in row["queues"].items():
            share = "-" if q["ai_agreement"] is None else f"{q['ai_agreement']:.3f}"
            print(
                f"  {queue:9s} items {q['items']:5d}  decided {q['decided']:5d}  AI agrees {share} of {q['ai_stated']}"
            )
        inter = row["inter_reviewer"]
        share = "-" if inter["agreement"] is None else f"{inter['agreement']:.3f}"
        print(f"  reviewers agree with each other on {share} of {inter['pairs']} reviewer pairs")


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="hrlaif audit-labels", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--labels",
        action="append",
        type=Path,
        metavar="DIR",
        help="a labels folder whose human decisions (`hrlaif review`) to audit the AI labels against (repeatable); "
        "no judge is asked",
    )
    parser.add_argument("--data-dir")
    parser.add_argument(
        "--human-pairs",
        action="append",
        type=Path,
        metavar="FILE.jsonl",
        help='human preference pairs instead of the bundled sets (repeatable): one JSON object a line, {"prompt", '
        '"chosen", "rejected", "category": "harmful" (harmlessness) or "open_qa" (helpfulness)}, optionally "id" '
        '(unique; default FILE/LINE) and "source"; a bad row is an error naming the file, line and field',
    )
    parser.add_argument(
        "--constitution", type=Path, help="principles YAML the compare and flag prompts cite (labeling.constitution)"
    )
    parser.add_argument(
        "--skip-verifiers", action="store_true", help="skip the verifier audit (GSM8K and MMLU of the data folder)"
    )
    parser.add_argument("--base-url", help="judge endpoint; default: start the simulated judge locally")
    parser.add_argument("--model", default="gpt-3.5-turbo")
    parser.add_argument("--api-key-env", default="OPENAI_API_KEY")
    parser.add_argument("--json-mode", default="object", choices=["object", "schema", "off"])
    parser.add_argument("--timeout-s", type=float, default=60)
    parser.add_argument("--pairs", type=int, default=200, help="human pairs sampled per category")
    parser.add_argument("--items", type=int, default=200, help="GSM8K and MMLU items for the verifier audit")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--sim", nargs="*", default=[], help="overrides for the simulated judge, e.g. position_bias=0.3"
    )
    parser.add_argument("--out", type=Path, help="write the report as JSON here")
    args = parser.parse_args(argv)
    if args.labels:
        report = {"review": review_audit(args.labels)}
        print_review(report["review"])
    else:
        constitution = load_constitution(args.constitution) if args.constitution else None
        human = human_pairs(args)  # bad files fail here, before a judge is started
        with contextlib.nullcontext(args.base_url) if args.base_url else sim_judge_server(args.sim) as base:
            report = asyncio.run(_audit(args, base, human, constitution))
        print_report(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))
    return 0
