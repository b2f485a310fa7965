"""The tool commands: data in (`prepare-data`, `make-prompts`) and models (`tiny-model`, `export-smollm2`)."""

from __future__ import annotations

from pathlib import Path

from hrlaif_ray.config import PromptMixConfig, TinyModelJob
from hrlaif_ray.entry import job_parser, parse_job
from hrlaif_ray.errors import HrlaifError, OneLineParser


def prepare_data(argv: list[str] | None = None) -> int:
    from hrlaif_ray.data.readers import HUMAN_PAIR_SOURCES, SOURCES, load_source
    from hrlaif_ray.data.schemas import write_records

    parser = OneLineParser(prog="hrlaif prepare-data", description="Read a public data set into a Parquet file.")
    parser.add_argument("--source", help="source name (see --list)")
    parser.add_argument("--data-dir", help="data folder (default: $HRLAIF_DATA_DIR, else ../shared/data)")
    parser.add_argument("--out", type=Path, help="output Parquet file")
    parser.add_argument("--limit", type=int, default=0, help="keep the first N records (0: all)")
    parser.add_argument("--list", action="store_true", help="list the known sources and exit")
    args = parser.parse_args(argv)
    if args.list:
        for name, (_, rel, rows) in SOURCES.items():
            kind = "human_pairs" if name in HUMAN_PAIR_SOURCES else "prompts"
            print(f"{name:32s} {kind:12s} {rows:6d}  {rel}")
        return 0
    if not args.source or not args.out:
        raise HrlaifError("prepare-data needs --source NAME and --out FILE (or --list)")
    records = load_source(args.source, args.data_dir)
    if args.limit:
        records = records[: args.limit]
    kind = "human_pairs" if args.source in HUMAN_PAIR_SOURCES else "prompts"
    print(f"wrote {len(records)} {kind} records to {write_records(args.out, records, kind)}")
    return 0


def make_prompts(argv: list[str] | None = None) -> int:
    from hrlaif_ray.data.prompt_mix import generate_prompt_mix
    from hrlaif_ray.data.schemas import write_records

    parser = job_parser("hrlaif make-prompts", PromptMixConfig, "n=500 seed=1", "Generate the project's prompt mix.")
    parser.add_argument("--out", type=Path, required=True, help="output Parquet file")
    cfg, args = parse_job(parser, PromptMixConfig, argv)
    records = generate_prompt_mix(cfg)
    counts: dict[str, int] = {}
    for r in records:
        counts[r.category] = counts.get(r.category, 0) + 1
    print(f"wrote {len(records)} prompts {counts} to {write_records(args.out, records, 'prompts')}")
    return 0


def tiny_model(argv: list[str] | None = None) -> int:
    from hrlaif_ray.models.tiny import tiny_model_folder

    parser = job_parser("hrlaif tiny-model", TinyModelJob, "model.hidden_size=256 model.arch=llama")
    parser.add_argument("--out", type=Path, required=True, help="output model folder")
    job, args = parse_job(parser, TinyModelJob, argv)
    out, n, vocab = tiny_model_folder(job, args.out)
    print(f"saved {job.model.arch} model ({n:,} parameters, vocab {vocab}) to {out}")
    return 0


def export_smollm2(argv: list[str] | None = None) -> int:
    from hrlaif_ray.models.smollm2 import export_smollm2 as export

    parser = OneLineParser(
        prog="hrlaif export-smollm2", description="Save the packaged SmolLM2-135M-Instruct GGUF as an HF folder."
    )
    parser.add_argument(
        "--out", type=Path, help="folder (default: $HRLAIF_CACHE_DIR or ~/.cache/hrlaif)/smollm2-135m-instruct"
    )
    print(f"SmolLM2-135M-Instruct as an HF folder: {export(parser.parse_args(argv).out)}")
    return 0
