"""The `hrlaif` command (it lives in `cluster`, the launch layer, so it may start Ray jobs). Each subcommand is one stage of the system; config-driven ones take `--config FILE`
plus dotted overrides (`model.hidden_size=256`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hrlaif_ray.errors import HrlaifError, OneLineParser, RunFailure


def _cmd_prepare_data(args: argparse.Namespace) -> None:
    from hrlaif_ray.data.readers import HUMAN_PAIR_SOURCES, SOURCES, load_source
    from hrlaif_ray.data.schemas import write_records

    if args.list:
        for name, (_, rel, rows) in SOURCES.items():
            kind = "human_pairs" if name in HUMAN_PAIR_SOURCES else "prompts"
            print(f"{name:32s} {kind:12s} {rows:6d}  {rel}")
        return
    if not args.source or not args.out:
        raise HrlaifError("prepare-data needs --source NAME and --out FILE (or --list)")
    records = load_source(args.source, args.data_dir)
    if args.limit:
        records = records[: args.limit]
    kind = "human_pairs" if args.source in HUMAN_PAIR_SOURCES else "prompts"
    print(f"wrote {len(records)} {kind} records to {write_records(args.out, records, kind)}")


def _cmd_make_prompts(args: argparse.Namespace) -> None:
    from hrlaif_ray.config import PromptMixConfig, load_config
    from hrlaif_ray.data.prompt_mix import generate_prompt_mix
    from hrlaif_ray.data.schemas import write_records

    cfg = load_config(PromptMixConfig, args.config, args.overrides)
    records = generate_prompt_mix(cfg)
    counts: dict[str, int] = {}
    for r in records:
        counts[r.category] = counts.get(r.category, 0) + 1
    print(f"wrote {len(records)} prompts {counts} to {write_records(args.out, records, 'prompts')}")


def _cmd_tiny_model(args: argparse.Namespace) -> None:
    from hrlaif_ray.config import TinyModelJob, load_config
    from hrlaif_ray.models.tiny import tiny_model_folder

    job = load_config(TinyModelJob, args.config, args.overrides)
    out, n, vocab = tiny_model_folder(job, args.out)
    print(f"saved {job.model.arch} model ({n:,} parameters, vocab {vocab}) to {out}")


def _cmd_export_smollm2(args: argparse.Namespace) -> None:
    from hrlaif_ray.models.smollm2 import export_smollm2

    print(f"SmolLM2-135M-Instruct as an HF folder: {export_smollm2(args.out)}")


def _cmd_sft(args: argparse.Namespace) -> None:
    import json

    from hrlaif_ray.config import SFTJob, load_config
    from hrlaif_ray.sft import train_sft

    overrides = [
        *([f"init={args.init}"] if args.init else []),
        *([f"output_dir={args.out}"] if args.out else []),
        *args.overrides,
    ]
    result = train_sft(load_config(SFTJob, args.config, overrides), log=lambda line: print(line, flush=True))
    print(json.dumps(result))


def _cmd_label(args: argparse.Namespace) -> None:
    import json

    from cluster.label import run_label_job
    from hrlaif_ray.config import LabelJob, load_config

    overrides = [*args.overrides, *([f"pool.labelers={args.labelers}"] if args.labelers else [])]
    job = load_config(LabelJob, args.config, overrides)
    print(json.dumps(run_label_job(job, progress=not args.no_progress)))


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="hrlaif", description="Hybrid RL from AI Feedback on Ray.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare-data", help="read a public data set into a prompts or human-pairs Parquet file")
    p.add_argument("--source", help="source name (see --list)")
    p.add_argument("--data-dir", help="data folder (default: $HRLAIF_DATA_DIR, else ../shared/data)")
    p.add_argument("--out", type=Path, help="output Parquet file")
    p.add_argument("--limit", type=int, default=0, help="keep the first N records (0: all)")
    p.add_argument("--list", action="store_true", help="list the known sources and exit")
    p.set_defaults(func=_cmd_prepare_data)

    p = sub.add_parser("make-prompts", help="generate the project's own prompt mix (config section: PromptMixConfig)")
    p.add_argument("--config", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. n=500 seed=1")
    p.set_defaults(func=_cmd_make_prompts)

    p = sub.add_parser("tiny-model", help="train a small BPE on the prompt mix and save a random-init tiny LM folder")
    p.add_argument("--config", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. model.hidden_size=256 model.arch=llama")
    p.set_defaults(func=_cmd_tiny_model)

    p = sub.add_parser(
        "export-smollm2", help="save the packaged SmolLM2-135M-Instruct GGUF as an HF safetensors folder"
    )
    p.add_argument(
        "--out", type=Path, help="folder (default: $HRLAIF_CACHE_DIR or ~/.cache/hrlaif)/smollm2-135m-instruct"
    )
    p.set_defaults(func=_cmd_export_smollm2)
    p = sub.add_parser(
        "sft", help="supervised fine-tuning of the policy (config: SFTJob; default data: the generated mix)"
    )
    p.add_argument("--config", type=Path)
    p.add_argument("--init", help="model folder to start from (init=)")
    p.add_argument("--out", help="output folder (output_dir=)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. steps=800 responses.control=true")
    p.set_defaults(func=_cmd_sft)

    p = sub.add_parser("label", help="label prompts + K responses through the labeler pool (config: LabelJob)")
    p.add_argument("--config", type=Path)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--labelers",
        type=int,
        help="labeler actors (pool.labelers); change it while running via <output_dir>/labelers.target",
    )
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. pool.concurrency=16 labeling.method=basic")
    p.set_defaults(func=_cmd_label)
    # The commands with entry points of their own (their --help is their own, generated from the job's fields).
    for name, (_, job, text) in ENTRY_POINTS.items():
        sub.add_parser(name, help=text + (f" (config: {job.split(':')[1]})" if job else ""), add_help=False)
    sub.add_parser(
        "config", help="config show JOB: every key of a job with its default and description", add_help=False
    )
    return parser


# Commands with an entry point of their own: name -> (module whose main(argv) runs it, its job class, help).
# The job class names the config section `hrlaif config show NAME` prints.
ENTRY_POINTS: dict[str, tuple[str, str | None, str]] = {
    "serve-judge": (
        "hrlaif_ray.judges.server",
        "hrlaif_ray.judges.sim_judge:SimJudgeConfig",
        "serve the simulated judge (OpenAI-compatible, explicit biases) on 127.0.0.1",
    ),
    "sample": (
        "cluster.sample",
        "hrlaif_ray.config:SampleJob",
        "K responses per prompt from the policy through the vLLM rollout actors",
    ),
    "train-rm": ("cluster.train_rm", "hrlaif_ray.config:RMTrainJob", "train the reward model on label shards"),
    "rm-probe": (
        "cluster.rm_probe",
        "hrlaif_ray.config:RMProbeJob",
        "a reward model against the ground truth on held-out policy samples",
    ),
    "ppo": (
        "cluster.ppo",
        "hrlaif_ray.config:PPOJob",
        "PPO on Ray: vLLM rollouts, DeepSpeed learners, the reward service",
    ),
    "dpo": (
        "cluster.dpo",
        "hrlaif_ray.config:DPOJob",
        "DPO on Ray: the policy learns from the labels' partial orders, no reward model",
    ),
    "revise": (
        "cluster.revise",
        "hrlaif_ray.config:ReviseJob",
        "Constitutional AI's supervised phase: critique the policy's harmful responses against the principles and "
        "revise them, into SFT data (hrlaif sft data=)",
    ),
    "eval": (
        "cluster.evaluate",
        "hrlaif_ray.config:EvalJob",
        "accuracy, harmful rate, win rate, reward and length of a policy",
    ),
    "run": (
        "cluster.pipeline",
        "hrlaif_ray.config:RunJob",
        "the pipeline: sft -> sample -> label -> train-rm -> ppo (or dpo) -> rm-probe -> eval per arm and seed, then the report",
    ),
    "serve-rm": ("cluster.serve_rm", None, "serve a reward model over HTTP on 127.0.0.1 (bearer token)"),
    "audit-labels": (
        "cluster.audit",
        None,
        "AI-vs-human agreement per category (the bundled human sets, or --human-pairs FILE.jsonl), "
        "verifier-vs-ground-truth agreement",
    ),
}
# Commands parsed here (build_parser) and their job classes.
PARSED_JOBS = {
    "sft": "hrlaif_ray.config:SFTJob",
    "label": "hrlaif_ray.config:LabelJob",
    "tiny-model": "hrlaif_ray.config:TinyModelJob",
    "make-prompts": "hrlaif_ray.config:PromptMixConfig",
}


def _job_class(ref: str):
    import importlib

    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


def config_show(argv: list[str]) -> int:
    """`hrlaif config show JOB`: the job's every key with its default and description."""
    from hrlaif_ray.config import config_help

    jobs = {**{k: v[1] for k, v in ENTRY_POINTS.items() if v[1]}, **PARSED_JOBS}
    if len(argv) != 2 or argv[0] != "show" or argv[1] not in jobs:
        raise HrlaifError(f"usage: hrlaif config show JOB, JOB one of {', '.join(sorted(jobs))}")
    cls = _job_class(jobs[argv[1]])
    print(f"# hrlaif {argv[1]}: {cls.__name__}. {(cls.__doc__ or '').strip().splitlines()[0]}")
    print(config_help(cls))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Every command, one error path: a bad config, override or input file is one line naming the key, file or
    record, and exit status 2; a run that failed after that (a role that died for good) one line and status 1;
    never a traceback."""
    import importlib

    from actors.runtime import process_defaults

    process_defaults()  # before anything imports DeepSpeed or Ray
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv else None
    try:
        if command == "config":
            return config_show(argv[1:])
        if command in ENTRY_POINTS:
            return importlib.import_module(ENTRY_POINTS[command][0]).main(argv[1:]) or 0
        args = build_parser().parse_args(argv)
        args.func(args)
        return 0
    except (HrlaifError, KeyError, ValueError, OSError) as exc:  # ours name what is wrong (files by path)
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"hrlaif {command}: error: {message}", file=sys.stderr)
        return 1 if isinstance(exc, RunFailure) else 2  # 2: the input was wrong; 1: the run failed


if __name__ == "__main__":
    sys.exit(main())
