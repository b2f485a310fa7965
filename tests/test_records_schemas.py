import itertools
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hrlaif_ray.data import (
    HumanPair,
    LabelRecord,
    PreferencePair,
    PromptRecord,
    Response,
    RolloutRecord,
    Verdict,
    read_records,
    tiers_from_pairs,
    write_records,
)
from hrlaif_ray.data.schemas import SCHEMA_VERSION, SCHEMAS, read_table, write_table
from hrlaif_ray.errors import DataError


def _examples():
    prompt = PromptRecord("p1", "multiple_choice", "2+2?", "test", answer="B", choices=["3", "4"], metadata={"k": 1})
    chat = PromptRecord("p2", "open_qa", "hi", "test", messages=[{"role": "user", "content": "hi"}])
    rollout = RolloutRecord(
        "p1",
        "math",
        "2+2?",
        [1, 2, 3],
        [Response("4", [5, 6], [-0.5, -0.25], "stop"), Response("5", [7], [-1.5], "length")],
        policy_version=3,
    )
    label = LabelRecord(
        "p1",
        "math",
        "hybrid",
        [Response("4"), Response("four"), Response("5"), Response("Sure, it's 4", origin="rewrite")],
        [
            PreferencePair(0, 2, 1.0, "verifier"),
            PreferencePair(1, 2, 1.0, "verifier"),
            PreferencePair(3, 2, 0.5, "redteam"),
            PreferencePair(0, 1),
            PreferencePair(3, 1),
            PreferencePair(0, 3),
        ],
        [Verdict(0, "correct", "4 == 4", "verify"), Verdict(2, "wrong", "5 != 4", "verify")],
        judge_model="gpt-3.5-turbo",
        template_version="v1",
        idempotency_key="abc",
        tokens_in=10,
        tokens_out=3,
        cost_usd=0.001,
    )
    pair = HumanPair("h1", "How do I?", "Safely.", "Dangerously.", "hh-rlhf", "harmful")
    return [[prompt, chat], [rollout], [label], [pair]]


@pytest.mark.parametrize("records", _examples(), ids=["prompts", "rollouts", "labels", "human_pairs"])
def test_roundtrip_and_metadata(tmp_path, records):
    kind = records[0].KIND
    path = write_records(tmp_path / f"{kind}.parquet", records)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind
    assert pq.read_schema(path).metadata[b"hrlaif.schema"] == f"{kind}/{SCHEMA_VERSION}".encode()
    back = read_records(path, kind)
    assert back == records


def test_label_tiers_are_written_derived():
    label = _examples()[2][0]
    assert label.tiers == [[0], [3], [1], [2]]
    assert label.to_row()["tiers"] == [[0], [3], [1], [2]]


def test_reader_refuses_other_kind_old_files_and_garbage(tmp_path):
    path = write_records(tmp_path / "p.parquet", _examples()[0])
    with pytest.raises(DataError, match="is a prompts file, expected labels"):
        read_table(path, "labels")
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"id": ["x"]}), plain)
    with pytest.raises(DataError, match="hrlaif.schema"):
        read_table(plain, "prompts")
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="junk.parquet: not a readable Parquet file"):
        read_table(junk, "prompts")
    newer = tmp_path / "newer.parquet"
    pq.write_table(pa.table({"id": ["x"]}).replace_schema_metadata({b"hrlaif.schema": b"prompts/99"}), newer)
    with pytest.raises(DataError, match="newer than this code"):
        read_table(newer, "prompts")


def test_failed_write_keeps_the_old_file(tmp_path):
    path = write_records(tmp_path / "p.parquet", _examples()[0])
    before = path.read_bytes()
    bad = pa.table(
        {name: pa.array([None], type=f.type) for name, f in zip(SCHEMAS["prompts"].names, SCHEMAS["prompts"])}
    )
    with pytest.raises((pa.ArrowInvalid, ValueError)):
        write_table(bad, path, "prompts")  # null in non-nullable fields
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["p.parquet"]


def test_bad_records_are_named():
    with pytest.raises(ValueError, match="unknown category 'poetry'"):
        PromptRecord("x", "poetry", "t", "s")
    with pytest.raises(ValueError, match="two different responses"):
        PreferencePair(1, 1)
    with pytest.raises(ValueError, match="outside 0..1"):
        LabelRecord("x", "math", "hybrid", [Response("a"), Response("b")], [PreferencePair(0, 5)])
    from hrlaif_ray.data.schemas import records_to_table

    bad = PromptRecord("x", "math", "t", "s")
    bad.choices = [1, 2]  # ints where option texts belong
    with pytest.raises(DataError, match="record 1"):
        records_to_table([PromptRecord("ok", "math", "t", "s"), bad], "prompts")


# tiers_from_pairs against a brute-force definition of a weak order.


def _brute_force_tiers(n, stated):
    for ranks in itertools.product(range(n), repeat=n):
        if {(i, j) for i in range(n) for j in range(n) if ranks[i] < ranks[j]} == stated:
            levels = sorted(set(ranks))
            return [[i for i in range(n) if ranks[i] == level] for level in levels]
    return None


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 4).flatmap(
        lambda n: st.tuples(st.just(n), st.sets(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1))))
    )
)
def test_tiers_match_brute_force(case):
    n, raw = case
    stated = {(b, w) for b, w in raw if b != w}
    pairs = [PreferencePair(b, w) for b, w in stated]
    assert tiers_from_pairs(n, pairs) == _brute_force_tiers(n, stated)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=1, max_size=6))
def test_tiers_recover_any_weak_order(ranks):
    n = len(ranks)
    pairs = [PreferencePair(i, j) for i in range(n) for j in range(n) if ranks[i] < ranks[j]]
    expected = [[i for i in range(n) if ranks[i] == level] for level in sorted(set(ranks))]
    assert tiers_from_pairs(n, pairs) == expected


def test_a_version_1_labels_file_still_reads(tmp_path):
    """Labels schema 1 had no `stats`, and no `tier` per pair and verdict nor `principles` per verdict."""
    old_pair = pa.struct(
        [("better", pa.int32()), ("worse", pa.int32()), ("weight", pa.float32()), ("source", pa.string())]
    )
    old_verdict = pa.struct(
        [("response", pa.int32()), ("verdict", pa.string()), ("reason", pa.string()), ("stage", pa.string())]
    )
    fields = [
        f
        if f.name not in ("pairs", "verdicts")
        else pa.field(f.name, pa.list_(old_pair if f.name == "pairs" else old_verdict))
        for f in SCHEMAS["labels"]
        if f.name != "stats"
    ]
    row = {
        "prompt_id": "p1",
        "category": "math",
        "method": "hybrid",
        "responses": [{"text": "4", "origin": "policy"}, {"text": "5", "origin": "policy"}],
        "pairs": [{"better": 0, "worse": 1, "weight": 1.0, "source": "verifier"}],
        "tiers": [[0], [1]],
        "verdicts": [{"response": 0, "verdict": "correct", "reason": "", "stage": "verify"}],
        "idempotency_key": "k",
        "status": "ok",
    }
    schema = pa.schema(fields).with_metadata({b"hrlaif.schema": b"labels/1"})
    path = tmp_path / "old.parquet"
    pq.write_table(pa.Table.from_pylist([row], schema=schema), path)
    (label,) = read_records(path, "labels")
    assert label.stats == {} and label.pairs[0].tier == 0 and label.verdicts[0].principles == []
    assert label.pairs[0].source == "verifier" and label.tiers == [[0], [1]]
