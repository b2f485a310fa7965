"""A constitution: principles read from YAML, cited by the judge and rewriter prompts, named by flags, versioned
into the template and the idempotency key; `hrlaif revise` (Constitutional AI's supervised phase) through the
labeler pool; `hrlaif audit-labels` on any file of human pairs. HTTP goes through the loopback simulated judge."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from conftest import ROOT
from labeling_fixtures import HARMFUL_RESPONSES, write_label_inputs

from hrlaif_ray.config import LabelingConfig, PromptMixConfig
from hrlaif_ray.data.prompt_mix import generate_prompt_mix
from hrlaif_ray.data.records import PromptRecord, Response, RolloutRecord
from hrlaif_ray.data.schemas import read_records, write_records
from hrlaif_ray.errors import DataError
from hrlaif_ray.judges.launch import sim_judge_server
from hrlaif_ray.judges.sim_judge import REWRITE
from hrlaif_ray.labeling.constitution import load_constitution, template_version
from hrlaif_ray.labeling.judge import CallLog
from hrlaif_ray.labeling.judge_prompts import (
    TEMPLATE_VERSION,
    JudgeOutputError,
    answer_schema,
    extract_payload,
    parse_answer,
    render,
)
from hrlaif_ray.labeling.strategies import Judges, LabelItem, Tier, idempotency_key, label_item
from hrlaif_ray.metrics import read_jsonl

SHIPPED = ROOT / "cluster" / "configs" / "constitution.yaml"
GOOD = """
principles:
  - {id: no-harm, text: Do not help anyone hurt people., categories: [harmful]}
  - {id: correct, text: Be correct., categories: [math, multiple_choice]}
  - {id: honest, text: Do not make things up., categories: all}
"""


def _write(tmp_path, text: str, name: str = "c.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_loading_and_every_bad_input_names_the_file_record_and_key(tmp_path):
    c = load_constitution(_write(tmp_path, GOOD))
    assert [p.id for p in c.for_category("harmful")] == ["no-harm", "honest"]
    assert [p.id for p in c.for_category("math")] == ["correct", "honest"]
    assert [p.id for p in c.for_category("open_qa")] == ["honest"]
    assert len(c.version) == 8 and c.version == load_constitution(_write(tmp_path, GOOD, "same.yaml")).version
    bad = {
        "principles: [\n": (None, None, "not valid YAML"),
        "principles: 3\n": (None, "principles", "a list of principles"),
        "- {id: a, text: b, categories: all}\n": (None, "principles", "a list of principles"),
        "principles: []\n": (None, "principles", "no principles"),
        "principles: [{text: b, categories: all}]\n": (0, "id", "expected letters"),
        "principles: [{id: a, text: b, categories: all}, {id: a, text: c, categories: all}]\n": (
            1,
            "id",
            "duplicate id 'a'",
        ),
        "principles: [{id: a, text: '  ', categories: all}]\n": (0, "text", "non-empty"),
        "principles: [{id: a, text: b, categories: [harmful, cooking]}]\n": (0, "categories", "'cooking'"),
        "principles: [{id: a, text: b, categories: []}]\n": (0, "categories", "a list of categories"),
        "principles: [{id: a, text: b, categories: all, weight: 2}]\n": (0, "weight", "unknown key"),
        "principles: [just text]\n": (0, None, "expected a mapping"),
        "principles: []\nname: x\n": (None, "name", "unknown key"),
    }
    for k, (text, (record, key, message)) in enumerate(bad.items()):
        path = _write(tmp_path, text, f"bad{k}.yaml")
        with pytest.raises(DataError, match=message) as err:
            load_constitution(path)
        assert str(path) in str(err.value) and (err.value.record, err.value.field) == (record, key), (text, err.value)
    with pytest.raises(DataError, match="file not found"):
        load_constitution(tmp_path / "missing.yaml")


def test_the_principles_change_the_template_version_and_the_idempotency_key(tmp_path):
    one = _write(tmp_path, GOOD)
    two = _write(tmp_path, GOOD.replace("Be correct.", "Be right."), "two.yaml")
    c1, c2 = load_constitution(one), load_constitution(two)
    assert template_version(None) == TEMPLATE_VERSION and template_version(c1) == f"{TEMPLATE_VERSION}+c{c1.version}"
    assert c1.version != c2.version
    item = LabelItem(PromptRecord("p", "math", "What is 2 + 2?", "t", answer="4"), [Response("4"), Response("5")])
    keys = {idempotency_key(item, LabelingConfig(constitution=c)) for c in (None, str(one), str(two))}
    assert len(keys) == 3
    # The request's tag carries the version; the data carries the principles of the category; the judge's answer
    # may name only the principles it was given.
    cited = c1.cite(c1.for_category("harmful"))
    messages = render("flag", {"question": "q", "response": "r", **cited})
    assert f"[hrlaif:flag:{template_version(c1)}]" in messages[1]["content"]
    assert '"principles"' in messages[0]["content"] and "operator's constitution" in messages[0]["content"]
    task, payload = extract_payload(messages)
    assert task == "flag" and payload == {"question": "q", "response": "r", "principles": cited["principles"]}
    assert render("flag", {"question": "q", "response": "r"})[1]["content"].startswith("[hrlaif:flag:v2]")
    ids = ["no-harm", "honest"]
    assert parse_answer("flag", '{"harmful": true, "principles": ["no-harm"]}', None, ids)["principles"] == ["no-harm"]
    assert parse_answer("flag", '{"harmful": false}', None, ids)["principles"] == []
    assert parse_answer("flag", '{"harmful": true, "principles": ["x"]}')["principles"] == []  # none cited
    with pytest.raises(JudgeOutputError, match="not among the principles given"):
        parse_answer("flag", '{"harmful": true, "principles": ["correct"]}', None, ids)
    with pytest.raises(JudgeOutputError, match="'principles' missing"):
        parse_answer("critique", '{"critique": "fine"}', None, ids)
    assert parse_answer("revise", '{"revision": "No."}') == {"revision": "No."}
    assert answer_schema("flag", None, ids)["properties"]["principles"]["items"]["enum"] == ids
    assert "principles" not in answer_schema("flag")["properties"]
    with pytest.raises(ValueError, match="needs the principles"):
        render("critique", {"question": "q", "response": "r"})


class RecordingJudge:
    """Answers rank, flag and rewrite like a judge, recording every payload (the strategies' own test double: the
    HTTP path is tested below against the simulated judge)."""

    model = "stub"

    def __init__(self):
        self.payloads = []

    async def ask(self, task: str, payload: dict, log: CallLog, n_responses: int | None = None) -> dict:
        self.payloads.append((task, payload))
        if task == "rank":
            return {"ranking": [r["id"] for r in payload["responses"]]}
        if task == "flag":
            harmful = "can't" not in payload["response"]
            return {"harmful": harmful, "reason": "", "principles": [payload["principles"][0]["id"]] if harmful else []}
        return {"rewrite": "I can't help with that."}


@pytest.mark.parametrize("method", ["basic", "hybrid"])
def test_rank_flag_and_rewrite_cite_the_principles_of_the_category_under_both_methods(tmp_path, method):
    cfg = LabelingConfig(method=method, constitution=str(_write(tmp_path, GOOD)))
    judge = RecordingJudge()
    judges = Judges([Tier([judge])], judge, cfg, constitution=load_constitution(cfg.constitution))
    harm = PromptRecord("h", "harmful", "How do I poison a dog?", "t")
    qa = PromptRecord("q", "open_qa", "Why is the sky blue?", "t")
    for prompt in (harm, qa):
        label = asyncio.run(label_item(judges, LabelItem(prompt, [Response("Sure: like so."), Response("I can't.")])))
        assert label.status == "ok" and label.template_version == f"v2+c{judges.constitution.version}"
    cited = {(task, p["question"]): [c["id"] for c in p["principles"]] for task, p in judge.payloads}
    harm_tasks = ["flag", "rewrite"] if method == "hybrid" else ["rank"]  # red teaming, or the judge's ranking
    assert {t: ids for (t, q), ids in cited.items() if q == harm.text} == {t: ["no-harm", "honest"] for t in harm_tasks}
    assert {t: ids for (t, q), ids in cited.items() if q == qa.text} == {"rank": ["honest"]}


def _harmful_ids():
    return [p.id for p in load_constitution(SHIPPED).for_category("harmful") if p.id.startswith("harmless-")]


def test_label_job_with_a_constitution_stores_the_broken_principles(tmp_path, local_ray):
    from cluster.label import run_label_job
    from hrlaif_ray.config import LabelJob

    prompts, rollouts = write_label_inputs(tmp_path, 24, seed=3)
    with sim_judge_server([f"answer_key={prompts}", "principle_prefix=harmless-"]) as base:
        judge = {"base_url": base, "model": "gpt-3.5-turbo", "timeout_s": 20}
        job = LabelJob.model_validate(
            {
                "prompts": str(prompts),
                "rollouts": str(rollouts),
                "output_dir": str(tmp_path / "labels"),
                "labeling": {"judges": [judge], "rewriter": {**judge, "model": "gpt-4"}, "constitution": str(SHIPPED)},
                "pool": {"labelers": 1, "concurrency": 8},
            }
        )
        summary = run_label_job(job, progress=False)
        # The basic method: the judge ranks every prompt, citing its category's principles over HTTP as well.
        basic = job.model_copy(update={"output_dir": str(tmp_path / "basic")}, deep=True)
        basic.labeling.method = "basic"
        basic_summary = run_label_job(basic, progress=False)
    assert summary["failed"] == 0 and basic_summary["failed"] == 0, (summary, basic_summary)
    version = f"v2+c{load_constitution(SHIPPED).version}"
    basic_labels = [x for s in sorted((tmp_path / "basic").glob("labels-*.parquet")) for x in read_records(s, "labels")]
    assert len(basic_labels) == 24 and {(x.method, x.template_version) for x in basic_labels} == {("basic", version)}
    labels = [x for s in sorted((tmp_path / "labels").glob("labels-*.parquet")) for x in read_records(s, "labels")]
    assert len(labels) == 24 and {x.template_version for x in labels} == {version}
    assert not {x.idempotency_key for x in labels} & {x.idempotency_key for x in basic_labels}
    harmful = [x for x in labels if x.category == "harmful"]
    assert harmful
    for label in harmful:
        flags = {v.response: v for v in label.verdicts if v.stage == "flag"}
        assert flags[0].verdict == "harmful" and flags[0].principles == _harmful_ids()  # complies
        assert flags[1].verdict == "harmless" and flags[1].principles == []  # refuses
        assert label.responses[2].text == REWRITE and {(p.better, p.worse) for p in label.pairs} == {(1, 0), (2, 0)}


def _revise_inputs(tmp_path):
    prompts = generate_prompt_mix(PromptMixConfig(n=12, seed=2, harmful=0.5, math=0.5, multiple_choice=0, open_qa=0))
    rollouts = [
        RolloutRecord(p.id, p.category, p.text, [], [Response(t) for t in HARMFUL_RESPONSES] + [Response("No.")])
        for p in prompts
    ]
    write_records(tmp_path / "prompts.parquet", prompts)
    write_records(tmp_path / "rollouts.parquet", rollouts)
    return tmp_path / "prompts.parquet", [p for p in prompts if p.category == "harmful"]


def test_revise_writes_sft_rows_and_a_rerun_asks_nothing(tmp_path, local_ray, capsys):
    from cluster.cli import main
    from hrlaif_ray.sft import read_sft_jsonl

    prompts, harmful = _revise_inputs(tmp_path)
    out = tmp_path / "sft" / "revised.jsonl"
    with sim_judge_server([f"answer_key={prompts}", "principle_prefix=harmless-"]) as base:
        billing = base.replace("/v1", "/billing")
        args = [
            "revise",
            f"prompts={prompts}",
            f"rollouts={tmp_path / 'rollouts.parquet'}",
            f"output={out}",
            "responses_per_prompt=2",  # the compliance and the refusal, not the third
            f"labeling.judges=[{{base_url: '{base}', timeout_s: 20}}]",
            f"labeling.rewriter={{base_url: '{base}', model: gpt-4, timeout_s: 20}}",
            "pool.labelers=1",
        ]
        assert main(args) == 0
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        asked = httpx.get(billing).json()["requests"]
        assert main(args) == 0
        again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert httpx.get(billing).json()["requests"] == asked  # the rerun asked nothing
    n = len(harmful)
    assert summary["critiqued"] == 2 * n and summary["revised"] == n and summary["kept_unbroken"] == n, summary
    assert summary["failed"] == 0 and summary["cost_usd"] > 0 and asked == 3 * n  # n x 2 critiques, n revisions
    assert again["already_written"] == 2 * n and again["critiqued"] == 0 and again["rows"] == 2 * n
    rows = read_jsonl(out)
    examples = read_sft_jsonl(out)  # what `hrlaif sft data=` reads
    assert len(examples) == 2 * n and {e.category for e in examples} == {"harmful"}
    for row in rows:
        assert row["prompt"] in {p.text for p in harmful}
        if row["response_index"] == 0:  # the compliance: revised, the principles it broke named
            assert row["response"] == REWRITE and row["principles"] == _harmful_ids()
            assert row["original"] == HARMFUL_RESPONSES[0] and "harmless-dangerous" in row["critique"]
        else:  # the refusal breaks nothing: kept as it is
            assert row["response"] == row["original"] == HARMFUL_RESPONSES[1] and row["principles"] == []


HUMAN = [
    {"prompt": "How do I poison my neighbour's dog?", "chosen": "I can't help with that.", "rejected": "Use X."},
    {"prompt": "How can I steal a car?", "chosen": "I won't help with this.", "rejected": "Break the window first."},
    {
        "prompt": "Why is the sky blue?",
        "chosen": "Sunlight scatters off air molecules. Blue scatters most. So the sky looks blue.",
        "rejected": "Magic.",
        "category": "open_qa",
        "id": "sky",
        "source": "mine",
    },
]


def test_audit_labels_reads_any_file_of_human_pairs(tmp_path, capsys):
    from cluster.cli import main

    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps({"category": "harmful", **r}) for r in HUMAN) + "\n")
    out = tmp_path / "audit.json"
    with sim_judge_server() as base:
        args = ["--human-pairs", str(path), "--base-url", base, "--skip-verifiers", "--out", str(out)]
        assert main(["audit-labels", *args, "--constitution", str(SHIPPED)]) == 0
    report = json.loads(out.read_text())
    harm, qa = report["categories"]["harmful"], report["categories"]["open_qa"]
    assert harm["pairs"] == 2 and qa["pairs"] == 1 and harm["failed"] == qa["failed"] == 0
    assert harm["sources"] == [str(path)] and harm["redteam_flag_agreement"] == 1.0 and qa["agreement"] == 1.0
    assert report["judge"]["template_version"].startswith("v2+c") and report["verifiers"] == {}
    assert "AI vs human" in capsys.readouterr().out
    # A bad row: one line naming the file, the line and the field; exit 2.
    for row, field in (
        ({"prompt": "p", "rejected": "r", "category": "harmful"}, "chosen"),
        ({**HUMAN[2], "category": "x"}, "category"),
    ):
        path.write_text(json.dumps(HUMAN[2]) + "\n\n" + json.dumps(row) + "\n")
        assert main(["audit-labels", "--human-pairs", str(path), "--base-url", "http://127.0.0.1:9/v1"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"{path}:3" in err[0] and f"field '{field}'" in err[0], err
