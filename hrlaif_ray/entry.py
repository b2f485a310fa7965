"""The shape every config-driven command shares: `--config FILE` plus dotted overrides, loaded as a typed job, with
`--help` generated from the job's field descriptions. A command adds its own flags to `job_parser`'s parser; a
flag that stands for a config key (`--out` for `output_dir`) is turned into an override by `parse_job`."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from hrlaif_ray.config import check_model_folders, config_help, load_config
from hrlaif_ray.errors import OneLineParser


def job_parser(prog: str, job_cls, example: str, description: str | None = None) -> OneLineParser:
    """The parser of a command whose input is `job_cls`: its --help lists every key with its description."""
    parser = OneLineParser(
        prog=prog,
        description=description or (job_cls.__doc__ or "").strip().splitlines()[0],
        epilog=f"config keys ({job_cls.__name__}; set in the YAML file or as key=value):\n{config_help(job_cls)}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, help="a YAML or JSON file of the keys below")
    parser.add_argument("overrides", nargs="*", help=f"dotted overrides, after the file, e.g. {example}")
    return parser


def parse_job(
    parser: argparse.ArgumentParser, job_cls, argv: Sequence[str] | None, keys: dict[str, str] | None = None
) -> tuple:
    """(the validated job, the parsed arguments). `keys` maps a flag's dest to the config key it sets (the flag
    wins over the file, an explicit override over the flag); errors name the key."""
    args = parser.parse_intermixed_args(argv)  # overrides before and after the flags (`--out X n=24`)
    flags = [f"{key}={getattr(args, dest)}" for dest, key in (keys or {}).items() if getattr(args, dest) is not None]
    job = load_config(job_cls, args.config, [*flags, *args.overrides])
    check_model_folders(job)  # before anything is loaded or written
    return job, args


def load_job(prog: str, job_cls, argv: Sequence[str] | None, example: str):
    """Parse `--config FILE key=value ...` and return the validated job (errors name the key)."""
    return parse_job(job_parser(prog, job_cls, example), job_cls, argv)[0]
