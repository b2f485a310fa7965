"""`hrlaif audit-labels` on real human pairs, against the simulated judge (plumbing, not judge quality)."""

import json

import pytest

from cluster.audit import main as audit
from hrlaif_ray.labeling.audit import pair_outcome, summarize


def test_outcomes_and_summary():
    assert [
        pair_outcome(*v) for v in [("A", "B"), ("B", "A"), ("A", "A"), ("B", "B"), ("tie", "tie"), ("A", "tie")]
    ] == ["agree", "reverse", "position_a", "position_b", "tie", "inconsistent"]
    s = summarize(["agree", "agree", "reverse", "position_a"], ["A", "B", "A", "B", "B", "A", "A", "A"])
    assert s["agreement"] == 0.5 and s["agreement_when_consistent"] == pytest.approx(2 / 3)
    assert s["consistency"] == 0.75 and s["position_bias_rate"] == 0.25 and s["a_share"] == 0.625


@pytest.mark.data
def test_audit_labels_report(tmp_path, data_dir, capsys):
    out = tmp_path / "audit.json"
    assert audit(["--data-dir", str(data_dir), "--pairs", "30", "--items", "50", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    for category in ("harmful", "open_qa"):
        row = report["categories"][category]
        assert row["pairs"] == 30 and row["failed"] == 0
        assert row["consistency"] + row["position_bias_rate"] <= 1.0 + 1e-9
    assert "redteam_flag_agreement" in report["categories"]["harmful"]
    assert report["verifiers"]["gsm8k/test"]["agreement"] >= 0.95
    assert report["verifiers"]["mmlu/test"]["agreement"] >= 0.95
    assert "AI vs human" in capsys.readouterr().out
    # A judge that always answers A: every pair is position-biased, none agrees.
    biased = tmp_path / "biased.json"
    audit(
        [
            "--data-dir",
            str(data_dir),
            "--pairs",
            "20",
            "--items",
            "10",
            "--sim",
            "position_bias=1.0",
            "--out",
            str(biased),
        ]
    )
    row = json.loads(biased.read_text())["categories"]["open_qa"]
    assert row["position_bias_rate"] == 1.0 and row["agreement"] == 0.0 and row["a_share"] == 1.0
