"""Bad input everywhere, as properties (hypothesis): every reader, the Parquet readers of our own schemas, config
overrides and the judge's answers either parse or raise one error of ours naming the file (and the line, record
or field), never a stray exception; what was already committed (label shards, checkpoints) stays as it was."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_records_schemas import _examples

from hrlaif_ray.config import LabelJob, PPOJob, load_config
from hrlaif_ray.data.readers import iter_csv, load_json_array, read_gsm8k, read_human_pairs_jsonl
from hrlaif_ray.data.schemas import META_KEY, SCHEMAS, read_records, write_records
from hrlaif_ray.errors import ConfigError, DataError
from hrlaif_ray.labeling.judge_prompts import JudgeOutputError, parse_answer
from hrlaif_ray.labeling.ledger import LabelLedger

PROPS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


def _where(exc: DataError, path: Path) -> None:
    """The error names the file (and is one line)."""
    assert str(path) in str(exc) and "\n" not in str(exc)


# ------------------------------------------------------------------------------------------------ text readers

PAIR_KEYS = ("prompt", "chosen", "rejected", "category", "id", "source")
pair_objects = st.dictionaries(
    st.sampled_from(PAIR_KEYS + ("other",)),
    st.sampled_from(["harmful", "open_qa", "x", "", "  "]) | st.text(max_size=6) | JSON,
    max_size=7,
)
jsonl_lines = st.lists(
    pair_objects.map(json.dumps) | st.text(max_size=20) | st.sampled_from(["", "[1]", "{", "null"]), max_size=6
)


@PROPS
@given(lines=jsonl_lines)
def test_human_pairs_jsonl_parses_or_names_the_line_and_field(tmp_path, lines):
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8")
    try:
        pairs = read_human_pairs_jsonl(path)
    except DataError as exc:
        _where(exc, path)
        assert exc.line is not None or "no human pairs" in str(exc) or "cannot read" in str(exc)
        return
    assert pairs and all(p.category in ("harmful", "open_qa") and p.prompt.strip() for p in pairs)


@PROPS
@given(data=st.binary(max_size=64))
def test_a_reader_given_arbitrary_bytes_names_the_file(tmp_path, data):
    for name, read in (
        ("gsm8k.jsonl", read_gsm8k),
        ("pairs.jsonl", read_human_pairs_jsonl),
        ("arr.json", load_json_array),
        ("rows.csv", lambda p: list(iter_csv(p, ("Behavior",)))),
    ):
        path = tmp_path / name
        path.write_bytes(data)
        try:
            read(path)
        except DataError as exc:
            _where(exc, path)


@PROPS
@given(objs=st.lists(st.dictionaries(st.sampled_from(["question", "answer", "x"]), JSON | st.text(), max_size=3)))
def test_gsm8k_records_parse_or_name_the_line_and_field(tmp_path, objs):
    path = tmp_path / "test.jsonl"
    path.write_text("\n".join(json.dumps(o) for o in objs))
    try:
        records = read_gsm8k(path)
    except DataError as exc:
        _where(exc, path)
        return
    assert all(r.answer is not None for r in records)


# ------------------------------------------------------------------------------------- our own Parquet files

KINDS = {records[0].KIND: records for records in _examples()}


@PROPS
@given(
    kind=st.sampled_from(sorted(KINDS)),
    damage=st.sampled_from(["version", "kind", "drop", "extra", "truncate", "garbage", "no-stamp"]),
    pick=st.integers(0, 1000),
)
def test_our_parquet_files_read_whole_or_fail_naming_file_and_field(tmp_path, kind, damage, pick):
    path = write_records(tmp_path / f"{kind}.parquet", KINDS[kind], kind)
    table = pq.read_table(path)
    names = SCHEMAS[kind].names
    column = names[pick % len(names)]
    meta = table.schema.metadata
    if damage == "version":
        table = table.replace_schema_metadata({**meta, META_KEY: f"{kind}/{99 + pick}".encode()})
    elif damage == "kind":
        other = sorted(set(KINDS) - {kind})[pick % 3]
        table = table.replace_schema_metadata({**meta, META_KEY: f"{other}/2".encode()})
    elif damage == "no-stamp":
        table = table.replace_schema_metadata({})
    elif damage == "drop":
        table = table.drop_columns([column]).replace_schema_metadata(meta)
    elif damage == "extra":
        table = table.append_column("surprise", pa.array([pick] * len(table))).replace_schema_metadata(meta)
    if damage in ("version", "kind", "no-stamp", "drop", "extra"):
        pq.write_table(table, path)
    elif damage == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: pick % len(data)])
    else:
        path.write_bytes(os.urandom(pick % 200))
    try:
        got = read_records(path, kind)
    except DataError as exc:
        _where(exc, path)
        assert damage != "extra", exc  # a column this code does not know is ignored
        if damage == "drop":
            assert exc.field == column, exc
        return
    assert damage == "extra", damage
    assert got == KINDS[kind]


def test_a_damaged_shard_is_named_and_the_committed_labels_stay(tmp_path):
    """The ledger refuses a folder with a damaged shard, naming it; the whole shards are left untouched."""
    (label,) = KINDS["labels"]
    ledger = LabelLedger(tmp_path)
    good = ledger.commit([label])
    before = good.read_bytes()
    bad = tmp_path / "labels-99999999999999999999-deadbeef.parquet"
    bad.write_bytes(before[: len(before) // 2])
    with pytest.raises(DataError) as exc:
        LabelLedger(tmp_path)
    _where(exc.value, bad)
    assert good.read_bytes() == before
    bad.unlink()
    assert LabelLedger(tmp_path).is_done(label.idempotency_key)


# ------------------------------------------------------------------------------------------- config overrides

KEYS = ["steps", "algo.estimator", "algo.kl_coef", "rollout", "rollout.samples_per_prompt", "resources.actor.replicas"]
KEYS += ["faults.chaos.every", "async.max_staleness", "nope", "algo.nope", "steps.x", "", ".", "a..b"]
VALUES = st.sampled_from(["1", "-1", "0", "2.5", "true", "[1, 2]", "{a: 1}", "gae", "rloo", "'", ": :", "", "null"])


@PROPS
@given(overrides=st.lists(st.tuples(st.sampled_from(KEYS), VALUES) | st.text(max_size=10).map(lambda t: (t, None))))
def test_config_overrides_validate_or_name_the_key(overrides):
    args = ["policy=p", "output_dir=o"] + [k if v is None else f"{k}={v}" for k, v in overrides]
    try:
        job = load_config(PPOJob, None, args)
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(exc)
        return
    assert isinstance(job, PPOJob) and job.steps >= 1


@PROPS
@given(text=st.text(max_size=30), key=st.sampled_from(["output_dir", "pool.labelers", "labeling.method", "bogus"]))
def test_label_job_overrides_validate_or_name_the_key(text, key):
    try:
        load_config(LabelJob, None, ["prompts=p", "rollouts=r", f"{key}={text}"])
    except ConfigError as exc:
        assert "\n" not in str(exc)


# ------------------------------------------------------------------------------------------- the judge's answers

ANSWER_KEYS = ["better", "ranking", "match", "harmful", "category", "rewrite", "reason", "confidence", "principles"]
answers = st.dictionaries(
    st.sampled_from(ANSWER_KEYS),
    st.sampled_from(["A", "B", "tie", "C", 1, 0.5, 2, -1, True, [1, 2, 3], [3, 1, 2], [1, 1, 2], "math", "", None]),
    max_size=5,
)


@PROPS
@given(
    task=st.sampled_from(["compare", "rank", "match", "flag", "classify", "rewrite", "critique"]),
    body=answers.map(json.dumps) | st.text(max_size=40),
    wrap=st.sampled_from(["{}", "```json\n{}\n```", "Sure! {} Hope it helps.", "{}}}"]),
)
def test_a_judge_answer_parses_or_names_the_field(task, body, wrap):
    text = wrap.replace("{}", body, 1)
    try:
        out = parse_answer(task, text, n_responses=3, principles=["P1", "P2"])
    except JudgeOutputError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert isinstance(out, dict)
    if "confidence" in out:
        assert 0.0 <= out["confidence"] <= 1.0
    if task == "rank":
        assert sorted(out["ranking"]) == [1, 2, 3]
