"""Parquet schemas of the pipeline's files, written atomically and stamped with a schema version.

Every file carries `hrlaif.schema` = "<kind>/<version>" in its Parquet metadata; a reader refuses a file of
another kind or a newer version with an error naming the file. Writes go to a temporary file in the same
folder, are fsynced, then renamed over the target, so a reader (or a resume after SIGKILL) sees either the
old file or the whole new one, never a torn one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from hrlaif_ray.data.records import HumanDecision, HumanPair, LabelRecord, PromptRecord, RolloutRecord
from hrlaif_ray.errors import DataError

# 2: labels gained `stats` and a `tier` per pair and verdict, verdicts `principles`; 3: labels `prompt_digest`
# (the prompt they were made on, `hrlaif_ray.data.binding`); 4: labels `disputes` (the pairs to review), the
# human_labels kind (`hrlaif review`). Files of older versions still read.
SCHEMA_VERSION = 4
# Columns that files of older versions lack: (kind, column) -> the version that added it.
ADDED_IN = {("labels", "stats"): 2, ("labels", "prompt_digest"): 3, ("labels", "disputes"): 4}
META_KEY = b"hrlaif.schema"

_message = pa.struct([("role", pa.string()), ("content", pa.string())])
_response = pa.struct(
    [
        ("text", pa.string()),
        ("token_ids", pa.list_(pa.int32())),
        ("logprobs", pa.list_(pa.float32())),
        ("finish_reason", pa.string()),
        ("origin", pa.string()),
    ]
)

SCHEMAS: dict[str, pa.Schema] = {
    "prompts": pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("category", pa.string(), nullable=False),
            pa.field("text", pa.string(), nullable=False),
            pa.field("source", pa.string(), nullable=False),
            pa.field("messages", pa.list_(_message)),
            pa.field("answer", pa.string()),
            pa.field("choices", pa.list_(pa.string())),
            pa.field("tests", pa.string()),
            pa.field("entry_point", pa.string()),
            pa.field("metadata", pa.string()),  # JSON object
        ]
    ),
    "rollouts": pa.schema(
        [
            pa.field("prompt_id", pa.string(), nullable=False),
            pa.field("category", pa.string(), nullable=False),
            pa.field("prompt_text", pa.string(), nullable=False),
            pa.field("prompt_token_ids", pa.list_(pa.int32())),
            pa.field("responses", pa.list_(_response)),
            pa.field("policy_version", pa.int64()),
        ]
    ),
    "labels": pa.schema(
        [
            pa.field("prompt_id", pa.string(), nullable=False),
            pa.field("category", pa.string(), nullable=False),
            pa.field("method", pa.string(), nullable=False),
            pa.field("responses", pa.list_(_response)),
            pa.field(
                "pairs",
                pa.list_(
                    pa.struct(
                        [
                            ("better", pa.int32()),
                            ("worse", pa.int32()),
                            ("weight", pa.float32()),
                            ("source", pa.string()),
                            ("tier", pa.int32()),
                        ]
                    )
                ),
            ),
            pa.field("tiers", pa.list_(pa.list_(pa.int32()))),  # derived from pairs; null when not a weak order
            pa.field(
                "verdicts",
                pa.list_(
                    pa.struct(
                        [
                            ("response", pa.int32()),
                            ("verdict", pa.string()),
                            ("reason", pa.string()),
                            ("stage", pa.string()),
                            ("tier", pa.int32()),
                            ("principles", pa.list_(pa.string())),
                        ]
                    )
                ),
            ),
            pa.field("judge_model", pa.string()),
            pa.field("template_version", pa.string()),
            pa.field("idempotency_key", pa.string()),
            pa.field("prompt_digest", pa.string()),
            pa.field("tokens_in", pa.int64()),
            pa.field("tokens_out", pa.int64()),
            pa.field("cost_usd", pa.float64()),
            pa.field("status", pa.string()),
            pa.field("error", pa.string()),
            pa.field("stats", pa.string()),  # JSON object
            pa.field(
                "disputes",
                pa.list_(
                    pa.struct([("a", pa.int32()), ("b", pa.int32()), ("reason", pa.string()), ("detail", pa.string())])
                ),
            ),
        ]
    ),
    "human_pairs": pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("prompt", pa.string(), nullable=False),
            pa.field("chosen", pa.string(), nullable=False),
            pa.field("rejected", pa.string(), nullable=False),
            pa.field("source", pa.string(), nullable=False),
            pa.field("category", pa.string(), nullable=False),
        ]
    ),
    "human_labels": pa.schema(
        [
            pa.field("item", pa.string(), nullable=False),
            pa.field("label_key", pa.string(), nullable=False),
            pa.field("prompt_id", pa.string(), nullable=False),
            pa.field("a", pa.int32(), nullable=False),
            pa.field("b", pa.int32(), nullable=False),
            pa.field("decision", pa.string(), nullable=False),
            pa.field("reviewer", pa.string(), nullable=False),
            pa.field("queue", pa.string(), nullable=False),
            pa.field("ai", pa.string(), nullable=False),
            pa.field("pair_digest", pa.string(), nullable=False),
            pa.field("decided_at", pa.float64(), nullable=False),
        ]
    ),
}

RECORD_TYPES = {cls.KIND: cls for cls in (PromptRecord, RolloutRecord, LabelRecord, HumanPair, HumanDecision)}
R = TypeVar("R", PromptRecord, RolloutRecord, LabelRecord, HumanPair, HumanDecision)


def _stamp(kind: str) -> bytes:
    return f"{kind}/{SCHEMA_VERSION}".encode()


def write_table(table: pa.Table, path: str | Path, kind: str) -> Path:
    """Write `table` (cast to the `kind` schema) to `path` atomically: temp file, fsync, rename."""
    path = Path(path)
    schema = SCHEMAS[kind].with_metadata({META_KEY: _stamp(kind)})
    table = table.select(schema.names).cast(schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as sink:
            pq.write_table(table, sink)
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def records_to_table(records: Sequence[Any], kind: str) -> pa.Table:
    rows = [r.to_row() for r in records]
    schema = SCHEMAS[kind]
    try:
        return pa.Table.from_pylist(rows, schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        for i, row in enumerate(rows):  # find the record that does not fit, to name it
            try:
                pa.Table.from_pylist([row], schema=schema)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as row_exc:
                raise DataError(f"<{kind} table>", None, None, str(row_exc), record=i) from None
        raise DataError(f"<{kind} table>", None, None, str(exc)) from None


def write_records(path: str | Path, records: Iterable[R], kind: str | None = None) -> Path:
    records = list(records)
    if kind is None:
        if not records:
            raise ValueError("write_records needs `kind` when there are no records")
        kind = type(records[0]).KIND
    return write_table(records_to_table(records, kind), path, kind)


def read_table(path: str | Path, kind: str) -> pa.Table:
    """Read a file written by `write_table`, checking its kind and schema version."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, None, None, f"no such {kind} file")
    try:
        pfile = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(path, None, None, f"not a readable Parquet file ({exc})") from None
    meta = pfile.schema_arrow.metadata or {}
    stamp = meta.get(META_KEY)
    if stamp is None:
        raise DataError(path, None, "hrlaif.schema", f"missing: not an hrlaif {kind} file")
    found_kind, _, version = stamp.decode().partition("/")
    if found_kind != kind:
        raise DataError(path, None, "hrlaif.schema", f"is a {found_kind} file, expected {kind}")
    if not version.isdigit() or int(version) > SCHEMA_VERSION:
        raise DataError(path, None, "hrlaif.schema", f"version {version!r} is newer than this code ({SCHEMA_VERSION})")
    found = set(pfile.schema_arrow.names)
    for name in SCHEMAS[kind].names:
        if name not in found and int(version) >= ADDED_IN.get((kind, name), 1):
            raise DataError(path, None, name, f"missing column (a {kind}/{version} file has it)")
    try:  # columns this code does not know (a later minor addition) are left out
        return pfile.read(columns=[n for n in SCHEMAS[kind].names if n in found])
    except (pa.ArrowException, OSError) as exc:
        raise DataError(path, None, None, f"not a readable Parquet file ({exc})") from None


def read_records(path: str | Path, kind: str) -> list[Any]:
    cls = RECORD_TYPES[kind]
    out = []
    for i, row in enumerate(read_table(path, kind).to_pylist()):
        try:
            out.append(cls.from_row(row))
        except (TypeError, ValueError) as exc:
            raise DataError(path, None, None, str(exc), record=i) from None
    return out
