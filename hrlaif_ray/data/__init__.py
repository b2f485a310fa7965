"""Data: record types, Parquet schemas with atomic writes, readers of the public sets, the demo's prompt mix."""

from hrlaif_ray.data.records import (
    HumanPair,
    LabelRecord,
    PreferencePair,
    PromptRecord,
    Response,
    RolloutRecord,
    Verdict,
    tiers_from_pairs,
)
from hrlaif_ray.data.schemas import read_records, read_table, write_records, write_table

__all__ = [
    "HumanPair",
    "LabelRecord",
    "PreferencePair",
    "PromptRecord",
    "Response",
    "RolloutRecord",
    "Verdict",
    "read_records",
    "read_table",
    "tiers_from_pairs",
    "write_records",
    "write_table",
]
