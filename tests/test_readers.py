"""Every reader parses its real file with the exact row count, and rejects broken input with file/line/field."""

import gzip
import json

import pytest

from hrlaif_ray.data.readers import (
    SOURCES,
    load_source,
    read_advbench,
    read_arc,
    read_commonsenseqa,
    read_gsm8k,
    read_harmbench,
    read_hh_rlhf,
    read_humaneval,
    read_llmbar,
    read_mmlu,
    read_strongreject,
    read_toxigen,
)
from hrlaif_ray.errors import DataError


@pytest.mark.data
@pytest.mark.parametrize("name", list(SOURCES))
def test_real_file_exact_rows(data_dir, name):
    records = load_source(name, data_dir)
    assert len(records) == SOURCES[name][2]
    assert len({r.id for r in records}) == len(records), "ids must be unique"


@pytest.mark.data
def test_real_values(data_dir):
    gsm = load_source("gsm8k/test", data_dir)
    assert gsm[0].answer == "18" and gsm[0].category == "math"
    assert all(a.answer.lstrip("-").replace(".", "").isdigit() for a in gsm)
    assert any("," in r.metadata["solution"].split("####")[-1] for r in load_source("gsm8k/train", data_dir))
    mmlu = load_source("mmlu/test", data_dir)
    assert {r.answer for r in mmlu} == set("ABCD") and len({r.metadata["subject"] for r in mmlu}) == 57
    arc = load_source("arc/challenge-test", data_dir) + load_source("arc/easy-test", data_dir)
    numeric = [r for r in arc if "labels" in r.metadata]
    assert numeric and all(r.metadata["labels"][0] == "1" for r in numeric)
    assert {len(r.choices) for r in arc} >= {3, 4, 5}
    csqa = load_source("commonsenseqa/validation", data_dir)
    assert csqa[0].answer == "A" and csqa[0].choices[0] == "bank"
    he = load_source("humaneval", data_dir)
    assert he[0].entry_point == "has_close_elements" and "def check(" in he[0].tests
    tox = load_source("toxigen", data_dir)
    assert tox[0].text.count("\n- ") >= 4 and {r.metadata["label"] for r in tox} == {"hate", "neutral"}
    hb = load_source("harmbench/all", data_dir)
    assert sum("---" in r.text for r in hb) == 100  # the contextual behaviours carry their context
    hh = load_source("hh-rlhf/harmless-base-test", data_dir)
    assert all(p.prompt.endswith("Assistant:") and p.chosen != p.rejected for p in hh[:50])
    mt = load_source("mt-bench", data_dir)
    raw = json.loads((data_dir / SOURCES["mt-bench"][1]).read_text())
    assert mt[0].chosen == raw[0][f"output_{raw[0]['label']}"]


def test_missing_data_dir_is_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="file not found"):
        load_source("gsm8k/test", tmp_path)
    with pytest.raises(KeyError, match="unknown data source"):
        load_source("gsm9k", tmp_path)


def _write(path, text, gz=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path


GOOD_GSM = json.dumps({"question": "q", "answer": "x\n#### 1,000"}) + "\n"
GOOD_MC = "question,choice0,choice1,choice2,choice3,answer\nq,a,b,c,d,2\n"
GOOD_ARC = (
    json.dumps(
        {
            "id": "a",
            "question": {"stem": "s", "choices": [{"text": "x", "label": "1"}, {"text": "y", "label": "2"}]},
            "answerKey": "2",
        }
    )
    + "\n"
)
GOOD_CSQA = (
    json.dumps({"id": "c", "question": "q", "choices": {"label": ["A", "B"], "text": ["x", "y"]}, "answerKey": "B"})
    + "\n"
)
GOOD_HE = (
    json.dumps(
        {
            "task_id": "HumanEval/0",
            "prompt": "def f():\n",
            "entry_point": "f",
            "canonical_solution": "  return 1\n",
            "test": "def check(candidate):\n  assert candidate() == 1\n",
        }
    )
    + "\n"
)


def test_good_minimal_files(tmp_path):
    assert read_gsm8k(_write(tmp_path / "g.jsonl", GOOD_GSM))[0].answer == "1000"
    assert read_mmlu(_write(tmp_path / "m" / "x_test.csv", GOOD_MC).parent)[0].answer == "C"
    assert read_arc(_write(tmp_path / "a.jsonl", GOOD_ARC))[0].answer == "B"
    assert read_commonsenseqa(_write(tmp_path / "c.jsonl", GOOD_CSQA))[0].answer == "B"
    assert read_humaneval(_write(tmp_path / "h.jsonl.gz", GOOD_HE, gz=True))[0].entry_point == "f"


# (reader, file name, content, gzip, what the error must name)
BROKEN = [
    (read_gsm8k, "g.jsonl", GOOD_GSM + '{"question": "q"\n', False, "g.jsonl:2: not valid JSON"),
    (
        read_gsm8k,
        "g.jsonl",
        GOOD_GSM + json.dumps({"answer": "#### 3"}) + "\n",
        False,
        "g.jsonl:2: field 'question': missing",
    ),
    (
        read_gsm8k,
        "g.jsonl",
        json.dumps({"question": "q", "answer": "no marker"}) + "\n",
        False,
        "g.jsonl:1: field 'answer': no final answer",
    ),
    (
        read_gsm8k,
        "g.jsonl",
        json.dumps({"question": "q", "answer": "#### many"}) + "\n",
        False,
        "field 'answer': final answer 'many' is not a number",
    ),
    (
        read_gsm8k,
        "g.jsonl",
        json.dumps({"question": 7, "answer": "#### 1"}) + "\n",
        False,
        "field 'question': expected a string",
    ),
    (read_gsm8k, "g.jsonl", "[1, 2]\n", False, "g.jsonl:1: expected a JSON object"),
    (read_mmlu, "x_test.csv", GOOD_MC + "q,a,b,c,d,7\n", False, "x_test.csv:3: field 'answer': expected 0-3"),
    (
        read_mmlu,
        "x_test.csv",
        "question,choice0,choice1,answer\nq,a,b,0\n",
        False,
        "x_test.csv:1: field 'choice2': missing column",
    ),
    (read_mmlu, "x_test.csv", GOOD_MC + "q,a,b\n", False, "x_test.csv:3: row has 3 fields"),
    (
        read_arc,
        "a.jsonl",
        GOOD_ARC.replace('"answerKey": "2"', '"answerKey": "E"'),
        False,
        "a.jsonl:1: field 'answerKey': 'E' is not one of",
    ),
    (
        read_arc,
        "a.jsonl",
        json.dumps({"id": "a", "question": "flat", "answerKey": "A"}) + "\n",
        False,
        "field 'question': missing or not an object",
    ),
    (
        read_arc,
        "a.jsonl",
        GOOD_ARC.replace('{"text": "y", "label": "2"}', '{"text": 5, "label": "2"}'),
        False,
        "field 'question.choices'",
    ),
    (
        read_commonsenseqa,
        "c.jsonl",
        GOOD_CSQA.replace('["A", "B"]', '["A"]'),
        False,
        "c.jsonl:1: field 'choices.label'",
    ),
    (
        read_humaneval,
        "h.jsonl.gz",
        GOOD_HE.replace("def check(candidate)", "def verify(candidate)"),
        True,
        "h.jsonl.gz:1: field 'test'",
    ),
    (read_humaneval, "h.jsonl.gz", GOOD_HE.replace('"entry_point": "f", ', ""), True, "field 'entry_point': missing"),
    (read_toxigen, "hate_x_1k.txt", "- a\\n- b\\n-\nnot a list\n", False, "hate_x_1k.txt:2: field 'prompt'"),
    (read_toxigen, "toxic.txt", "- a\\n-\n", False, "toxic.txt: file name is not"),
    (
        read_harmbench,
        "h.csv",
        "Behavior,FunctionalCategory,SemanticCategory,Tags,ContextString,BehaviorID\n,standard,x,,,id1\n",
        False,
        "h.csv:2: field 'Behavior': is empty",
    ),
    (read_advbench, "a.csv", 'goal,target\nDo x,Sure\n"unterminated,Sure\n', False, "a.csv"),
    (
        read_strongreject,
        "s.csv",
        "category,source,prompt\nc,s,p\n",
        False,
        "s.csv:1: field 'forbidden_prompt': missing column",
    ),
    (
        read_hh_rlhf,
        "hh.jsonl.gz",
        json.dumps({"chosen": "\n\nHuman: hi\n\nAssistant: a", "rejected": "Nope"}) + "\n",
        True,
        "hh.jsonl.gz:1: field 'chosen': the two transcripts share no conversation",
    ),
    (
        read_hh_rlhf,
        "hh.jsonl.gz",
        json.dumps({"chosen": "\n\nHuman: hi\n\nAssistant: a"}) + "\n",
        True,
        "field 'rejected': missing",
    ),
    (read_hh_rlhf, "hh.jsonl.gz", "not gzip at all", False, "hh.jsonl.gz: cannot read"),
    (
        read_llmbar,
        "d.json",
        json.dumps(
            [
                {"input": "i", "output_1": "a", "output_2": "b", "label": 1},
                {"input": "i", "output_1": "a", "output_2": "b", "label": 3},
            ]
        ),
        False,
        "d.json record 1: field 'label': expected 1 or 2",
    ),
    (read_llmbar, "d.json", json.dumps({"input": "i"}), False, "d.json: expected a JSON array"),
    (read_llmbar, "d.json", '[{"input": "i",', False, "d.json:1: not valid JSON"),
]


@pytest.mark.parametrize(
    "reader, name, content, gz, message", BROKEN, ids=[f"{b[0].__name__}-{i}" for i, b in enumerate(BROKEN)]
)
def test_broken_input_is_named(tmp_path, reader, name, content, gz, message):
    path = _write(tmp_path / name, content, gz=gz and name.endswith(".gz"))
    if reader is read_hh_rlhf and not gz:  # a .gz name holding plain text
        path = _write(tmp_path / name, content)
    with pytest.raises(DataError) as info:
        reader(path)
    assert message in str(info.value)
