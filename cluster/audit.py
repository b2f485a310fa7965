"""`hrlaif audit-labels`: AI-vs-human agreement per category and verifier-vs-ground-truth agreement.

Reads the human preference pairs and verifiable prompts from the data folder (../shared/data, or
--data-dir / HRLAIF_DATA_DIR). The judge is any OpenAI-compatible endpoint (--base-url, --model); without
one, the project's simulated judge is started on 127.0.0.1, whose agreement figures prove the plumbing only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
from pathlib import Path

from hrlaif_ray.data.readers import load_source
from hrlaif_ray.judges.launch import sim_judge_server
from hrlaif_ray.labeling.audit import judge_human_pairs, verifier_audit_gsm8k, verifier_audit_mmlu
from hrlaif_ray.labeling.judge import JudgeClient

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


async def _audit(args, base_url: str) -> dict:
    judge = JudgeClient(
        base_url, args.model, api_key_env=args.api_key_env, timeout_s=args.timeout_s, json_mode=args.json_mode
    )
    report: dict = {"judge": {"base_url": base_url, "model": args.model}, "categories": {}, "verifiers": {}}
    try:
        for category, sources in HUMAN_SETS.items():
            pool = [p for s in sources for p in load_source(s, args.data_dir)]
            pairs = sample(pool, args.pairs, args.seed)
            report["categories"][category] = {
                "sources": sources,
                **await judge_human_pairs(judge, pairs, args.concurrency, with_flags=category == "harmful"),
            }
    finally:
        await judge.close()
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
    print(f"{'category':10s} " + " ".join(f"{c:>12.12s}" for c in cols))
    for cat, row in report["categories"].items():
        print(
            f"{cat:10s} " + " ".join(f"{row[c]:12.3f}" if isinstance(row[c], float) else f"{row[c]:12d}" for c in cols)
        )
        if "redteam_flag_agreement" in row:
            print(
                f"{'':10s} red-team flags agree {row['redteam_flag_agreement']:.3f}, reverse {row['redteam_flag_reversal']:.3f}"
            )
    for name, row in report["verifiers"].items():
        print(f"verifier vs ground truth, {name}: {row['agreement']:.3f} over {row['items']} answers")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hrlaif audit-labels", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir")
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
    with contextlib.nullcontext(args.base_url) if args.base_url else sim_judge_server(args.sim) as base:
        report = asyncio.run(_audit(args, base))
    print_report(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))
    return 0
