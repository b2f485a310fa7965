"""Human review of disputed labels: the labeling records why a pair is unsure, the queue, the decisions' ledger,
majority and overrides (train-rm and DPO read them), a foreign or tampered folder refused naming the file, and
`hrlaif review`'s page: its API over loopback HTTP, then driven in a real headless chromium through Selenium
(decided by keyboard, reloaded, read back from Parquet, and looked at from a screenshot)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from conftest import ROOT, run_hrlaif
from labeling_fixtures import label_items, write_label_inputs

from hrlaif_ray.data.records import Dispute, LabelRecord, PreferencePair, Response
from hrlaif_ray.data.schemas import read_records, write_records
from hrlaif_ray.errors import DataError, HrlaifError
from hrlaif_ray.judges.launch import ready_process, sim_judge_server
from hrlaif_ray.labeling.ledger import LabelLedger
from hrlaif_ray.labeling.quality import write_quality
from hrlaif_ray.labeling.review import (
    HumanLedger,
    ReviewItem,
    agreement,
    apply_overrides,
    item_id,
    majority,
    review_queue,
    reviewed,
)
from hrlaif_ray.labeling.strategies import LabelItem

TOKEN = "review-token-for-tests"


def _labeled(folder: Path, n: int = 16, **sim: str) -> tuple[Path, list[LabelRecord]]:
    """Labels of n synthetic prompts through the simulated judge over HTTP, committed to `folder`/labels."""
    prompts, rollouts = write_label_inputs(folder, n, seed=5)
    items = [
        LabelItem(p, r.responses) for p, r in zip(read_records(prompts, "prompts"), read_records(rollouts, "rollouts"))
    ]
    with sim_judge_server([f"answer_key={prompts}", *(f"{k}={v}" for k, v in sim.items())]) as base:
        labels = label_items(base, "hybrid", items, ranking="pairwise")
    LabelLedger(folder / "labels").commit(labels)
    write_quality(folder / "labels", labels)
    return prompts, labels


def test_labels_record_why_each_pair_is_disputed(tmp_path):
    _, labels = _labeled(tmp_path, position_bias="0.5", p_false_alarm="0.2")
    assert all(l.status == "ok" for l in labels)
    reasons = Counter(d.reason for l in labels for d in l.disputes)
    assert reasons["position"] > 0 and reasons["low_confidence"] > 0, reasons
    for label in labels:
        stated = {tuple(sorted((p.better, p.worse))): p for p in label.pairs}
        swaps = label.stats.get("swap_pairs", 0) - label.stats.get("swap_consistent", 0)
        position = [d for d in label.disputes if d.reason == "position"]
        assert len(position) == swaps  # one dispute per pair whose two presentation orders disagreed
        for d in position:  # what the orders contradicted is never stated as a judge's pair
            assert (d.a, d.b) not in stated or stated[(d.a, d.b)].source != "judge"
        assert all(d.detail for d in label.disputes if d.reason != "verifier_abstained")
    again = LabelLedger(tmp_path / "labels").labels()  # disputes survive the Parquet round trip
    assert sorted((l.prompt_id, l.disputes) for l in again) == sorted((l.prompt_id, l.disputes) for l in labels)


def _label(key: str, n: int, pairs: list[tuple[int, int, str]], disputes: list[tuple[int, int, str]]) -> LabelRecord:
    return LabelRecord(
        prompt_id=f"p-{key}",
        category="open_qa",
        method="basic",
        responses=[Response(f"response {i} of {key}") for i in range(n)],
        pairs=[PreferencePair(b, w, 1.0, source) for b, w, source in pairs],
        idempotency_key=key,
        prompt_digest="d" * 16,
        disputes=[Dispute(a, b, reason, "said so") for a, b, reason in disputes],
    )


def _decide(label: LabelRecord, a: int, b: int, decision: str, reviewer: str, at: float, queue="disputed"):
    return ReviewItem(item_id(label, a, b), queue, label, a, b).decided(decision, reviewer, at)


def test_queue_majority_overrides_and_agreement(tmp_path, capsys):
    one = _label("k1", 3, [(0, 2, "judge")], [(0, 1, "position"), (1, 2, "low_confidence")])
    two = _label("k2", 4, [(0, 1, "judge"), (0, 2, "judge"), (0, 3, "verifier"), (1, 3, "judge")], [])
    failed = _label("k3", 2, [], [(0, 1, "position")])
    failed.status = "failed"
    queue = review_queue([two, failed, one], audit_fraction=0.5, seed=3)
    assert [(i.item, i.queue) for i in queue[:2]] == [("k1:0-1", "disputed"), ("k1:1-2", "disputed")]
    audit = queue[2:]  # half of the 5 undisputed AI pairs, rounded; a failed label is never reviewed
    assert len(audit) == 2 and {i.queue for i in audit} == {"audit"} and all(i.item[:2] in ("k1", "k2") for i in audit)
    assert [i.item for i in review_queue([one, two, failed], 0.5, seed=3)] == [i.item for i in queue]  # seeded
    assert queue[0].ai == "none" and queue[1].reasons == [("low_confidence", "said so")]

    ledger = HumanLedger(tmp_path)
    made = [
        _decide(one, 0, 1, "a", "ann", 1.0),
        _decide(one, 0, 1, "a", "bob", 2.0),
        _decide(one, 0, 1, "b", "cy", 3.0),  # 2 to 1: a
        _decide(one, 1, 2, "b", "ann", 4.0),
        _decide(one, 1, 2, "a", "bob", 5.0),  # 1 to 1: no majority, the AI's pair stays
        _decide(one, 0, 2, "b", "ann", 6.0, "audit"),
        _decide(one, 0, 2, "tie", "ann", 7.0, "audit"),  # ann changed her mind: a tie drops the pair
        _decide(two, 0, 1, "a", "ann", 8.0, "audit"),
        _decide(two, 1, 3, "b", "bob", 9.0, "audit"),
        _decide(two, 0, 2, "skip", "bob", 10.0, "audit"),  # a skip decides nothing
    ]
    for d in made:
        ledger.commit(d)
    reread = HumanLedger(tmp_path)
    assert reread.decisions == made and len(list((tmp_path / "human").glob("decisions-*.parquet"))) == len(made)
    assert majority(reread.decisions) == {"k1:0-1": "a", "k1:0-2": "tie", "k2:0-1": "a", "k2:1-3": "b"}

    out, counts = apply_overrides([one, two], reread.decisions)
    assert counts == {"decided": 4, "agreed": 1, "reversed": 1, "added": 1, "tied": 1}
    pairs = {l.idempotency_key: {(p.better, p.worse, p.source) for p in l.pairs} for l in out}
    assert pairs["k1"] == {(0, 1, "human")}  # (0, 2) tied away, (0, 1) stated by people
    assert pairs["k2"] == {(0, 1, "human"), (0, 2, "judge"), (0, 3, "verifier"), (3, 1, "human")}

    report = agreement(reread.decisions)
    assert report["queues"]["disputed"] == {"items": 2, "decided": 1, "ai_stated": 0, "ai_agreement": None}
    assert report["queues"]["audit"] == {"items": 4, "decided": 3, "ai_stated": 3, "ai_agreement": round(1 / 3, 4)}
    assert report["reviewers"] == {"ann": 4, "bob": 4, "cy": 1}
    # k1:0-1: ann/bob/cy -> a, a, b (1 of 3 pairs alike); k1:1-2: b, a (0 of 1)
    assert report["inter_reviewer"] == {"pairs": 4, "agreement": 0.25}

    labels, counts = reviewed(tmp_path, [one, two], human_overrides=False)
    assert labels == [one, two] and counts["decided"] == 0

    from cluster.audit import main as audit_labels  # the decisions as human pairs: no judge is asked

    assert audit_labels(["--labels", str(tmp_path), "--out", str(tmp_path / "audit.json")]) == 0
    assert json.loads((tmp_path / "audit.json").read_text()) == {"review": {str(tmp_path): {"decisions": 10, **report}}}
    assert "  audit     items     4  decided     3  AI agrees 0.333 of 3" in capsys.readouterr().out
    with pytest.raises(HrlaifError, match="no decisions in"):
        audit_labels(["--labels", str(tmp_path / "elsewhere")])


def test_a_foreign_or_tampered_folder_is_one_error_naming_the_file(tmp_path):
    prompts, labels = _labeled(tmp_path, n=8)
    folder = tmp_path / "labels"
    label = next(l for l in labels if len(l.responses) > 1)
    ledger = HumanLedger(folder)
    ledger.commit(_decide(label, 0, 1, "a", "ann", 1.0))
    reviewed(folder, labels, True)  # fine as it is

    stranger = _label("not-here", 2, [], [])
    shard = ledger.commit(_decide(stranger, 0, 1, "b", "ann", 2.0))
    with pytest.raises(DataError, match=f"{shard}.*names no label of"):
        reviewed(folder, labels, True)
    shard.unlink()

    changed = list(labels)  # the label's first response rewritten after the decision
    changed[labels.index(label)] = replace(label, responses=[Response("rewritten"), *label.responses[1:]])
    with pytest.raises(DataError, match="made on other texts"):
        reviewed(folder, changed, True)

    write_records(folder / "labels-99999999999999999999-foreign.parquet", read_records(prompts, "prompts"))
    env = {"HRLAIF_REVIEW_TOKEN": TOKEN}
    done = run_hrlaif("review", "--labels", str(folder), "--prompts", str(prompts), timeout=60, **env)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert (
        len(lines) == 1
        and "labels-99999999999999999999-foreign.parquet" in lines[0]
        and "is a prompts file" in lines[0]
    )
    assert TOKEN not in done.stderr + done.stdout


@pytest.fixture(scope="module")
def review_server(tmp_path_factory):
    """`hrlaif review` on a folder labeled by a position-biased judge: (url, folder, prompts, process)."""
    root = tmp_path_factory.mktemp("review")
    prompts, _ = _labeled(root, n=24, position_bias="0.5", p_false_alarm="0.1")
    env = {**os.environ, "HRLAIF_REVIEW_TOKEN": TOKEN}
    cmd = [sys.executable, "-m", "cluster.review", "--labels", str(root / "labels"), "--prompts", str(prompts)]
    proc, url = ready_process(cmd, env=env, cwd=ROOT, stderr=subprocess.PIPE)
    yield url, root / "labels", prompts, proc
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


def test_review_api_needs_the_token_and_commits_each_decision(review_server):
    url, folder, _, _ = review_server
    assert httpx.get(url + "/").status_code == 401
    assert httpx.get(url + "/api/state", params={"reviewer": "x"}).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert httpx.get(url + "/api/state", params={"reviewer": "x"}, headers=wrong).status_code == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    state = httpx.get(url + "/api/state", params={"reviewer": "api"}, headers=auth).json()
    assert state["total"] > 10 and state["queues"]["disputed"]["total"] > 0 and state["done"] == 0
    item = state["item"]
    assert item["queue"] == "disputed" and item["reasons"] and len(item["responses"]) == 2
    body = {"item": item["item"], "decision": "a", "reviewer": "api", "digest": "0" * 16}
    assert httpx.post(url + "/api/decide", json=body, headers=auth).status_code == 409  # not what was shown
    assert httpx.post(url + "/api/decide", json={**body, "decision": "maybe"}, headers=auth).status_code == 400
    body["digest"] = item["digest"]
    after = httpx.post(url + "/api/decide", json=body, headers=auth).json()
    assert after["done"] == 1 and after["item"]["item"] != item["item"]
    [decision] = [d for d in HumanLedger(folder).decisions if d.reviewer == "api"]
    assert (decision.item, decision.decision, decision.queue) == (item["item"], "a", "disputed")
    signin = httpx.post(url + "/sign-in", data={"token": TOKEN})
    assert signin.status_code == 303 and TOKEN not in signin.headers["set-cookie"]


def _browser():
    chromium = shutil.which("chromium")
    driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if chromium is None or not Path(driver).exists():
        pytest.skip("no chromium and chromedriver on this machine (make setup installs them: apt-get, as root)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


def test_review_page_in_a_real_browser(review_server, tmp_path, tiny_model_dir):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import WebDriverWait

    url, folder, prompts, _ = review_server
    browser = _browser()
    try:
        wait = WebDriverWait(browser, 20)
        browser.get(url + "/")
        assert "needs the review token" in browser.page_source and browser.find_elements(By.ID, "item") == []
        browser.find_element(By.ID, "token").send_keys("wrong" + Keys.ENTER)
        wait.until(seen.presence_of_element_located((By.ID, "error")))
        browser.find_element(By.ID, "token").send_keys(TOKEN + Keys.ENTER)
        name = wait.until(seen.presence_of_element_located((By.ID, "reviewer")))
        name.send_keys("ann" + Keys.ENTER)
        wait.until(lambda b: b.find_element(By.ID, "progress").text.startswith("You: 0 /"))
        total = int(browser.find_element(By.ID, "progress").text.split("/")[1].split()[0])
        keys = ["a", "b", Keys.ARROW_LEFT, "t", "2", "s", Keys.ARROW_RIGHT, "1", Keys.ARROW_DOWN, "b"]
        shown = []
        body = browser.find_element(By.TAG_NAME, "body")
        for k, key in enumerate(keys):
            shown.append(browser.find_element(By.ID, "prompt-id").text)
            body.send_keys(key)
            wait.until(lambda b, k=k: b.find_element(By.ID, "progress").text.startswith(f"You: {k + 1} /"))
        # The two responses side by side, each as wide as the other: the look, from the page's layout and a shot.
        a, b = browser.find_element(By.ID, "response-a"), browser.find_element(By.ID, "response-b")
        assert abs(a.location["y"] - b.location["y"]) < 5 and b.location["x"] > a.location["x"] + a.size["width"]
        assert abs(a.size["width"] - b.size["width"]) < 5 and a.size["width"] > 400
        shot = tmp_path / "review.png"
        browser.save_screenshot(str(shot))
        _check_screenshot(shot)
        browser.refresh()  # the progress is kept: it lives in the decisions, not the page
        wait.until(lambda b: b.find_element(By.ID, "progress").text.startswith(f"You: 10 / {total}"))
        assert "AI agrees with reviewers" in browser.find_element(By.ID, "agreement").text
    finally:
        browser.quit()

    mine = [d for d in HumanLedger(folder).decisions if d.reviewer == "ann"]
    assert [d.decision for d in mine] == ["a", "b", "a", "tie", "b", "skip", "b", "a", "tie", "b"]
    assert [d.prompt_id for d in mine] == shown and all(d.queue == "disputed" for d in mine[:3])
    quality = (folder / "quality.md").read_text()
    assert "Human review:" in quality

    # train-rm takes the decisions over the AI's pairs (and says how many); off, it does not.
    out = tmp_path / "rm"
    args = ["train-rm", f"init={tiny_model_dir}", f"labels_dir={folder}", f"prompts={prompts}", f"output_dir={out}"]
    done = run_hrlaif(*args, "epochs=1", "sequence_classification=false", timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    counts = json.loads((out / "human_overrides.json").read_text())
    labels = LabelLedger(folder).labels()
    expected = apply_overrides(labels, HumanLedger(folder).decisions)[1]
    assert counts == expected and counts["decided"] >= 8 and "human overrides:" in done.stdout
    overridden, _ = reviewed(folder, labels, True)
    human = {(l.idempotency_key, p.better, p.worse) for l in overridden for p in l.pairs if p.source == "human"}
    assert len(human) == counts["decided"] - counts["tied"]


def _check_screenshot(path: Path) -> None:
    """The shot is the page, not a blank or an error: its width, and enough distinct colours (text, cards, header)."""
    from PIL import Image

    image = Image.open(path).convert("RGB")
    assert image.size[0] >= 1200
    header = image.crop((0, 0, image.size[0], 30)).getcolors(1 << 16)
    assert max(header)[1] == (0x1D, 0x23, 0x30)  # the dark header bar drew
    assert len(image.getcolors(1 << 20)) > 50  # text was drawn, not one flat colour
