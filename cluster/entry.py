"""The shape every config-driven entry point shares: `--config FILE` plus dotted overrides, loaded as a job."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from hrlaif_ray.config import config_help, load_config
from hrlaif_ray.errors import OneLineParser


def load_job(prog: str, job_cls, argv: Sequence[str] | None, example: str):
    """Parse `--config FILE key=value ...` and return the validated job (errors name the key)."""
    parser = OneLineParser(
        prog=prog,
        description=(job_cls.__doc__ or "").strip().splitlines()[0],
        epilog=f"config keys ({job_cls.__name__}; set in the YAML file or as key=value):\n{config_help(job_cls)}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path)
    parser.add_argument("overrides", nargs="*", help=f"dotted overrides, e.g. {example}")
    args = parser.parse_args(argv)
    return load_config(job_cls, args.config, args.overrides)
