"""The README and the docs work as written: every `bash` block of README.md and docs/*.md runs, as a newcomer would
run it, in a fresh copy of the checkout (its tracked and unignored files, as a clone has them) after a stand-in for
`make demo`, each `hrlaif` command with small overrides appended (steps, sizes: `SMALL`) so that a block takes
minutes, not the demo's half hour. A block this module does not know fails the test, so a new block gets a kind
here rather than going unchecked.

The stand-ins for `make demo`: `world` has what the fast blocks read (the demo's SFT policy: the tiny model after a
few SFT steps, `runs/demo/sft`); `demo_world` runs the pipeline itself (`hrlaif run --config
cluster/configs/demo.yaml`, one arm, small), for the blocks that read its prompts, samples and labels (slow).

In `make test`: the Quick start (every stage by hand, from a prompt mix to a trained policy) and the planner's
13B plan. Slow (`make test-all`): the blocks whose every command another test runs too (labeling controls,
revise, online PPO, the docs' blocks) and the two that start servers of their own (vLLM's judge; a Ray head for
`ray job submit`, whose fixed ports this module moves to free ones).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, script_env, short_temp_dir

from hrlaif_ray.zero import free_port

DOCS = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]

# Appended to every `hrlaif COMMAND` (and `python -m cluster.X`) of a block: the budgets that make a block quick,
# and transformers' generate in place of a vLLM engine for the fast blocks' samples (an engine's start is 40 s of
# the Quick start's 3.5 min here; the vLLM path runs in the slow blocks, and in tests/test_ppo_job.py in make test).
SMALL = {
    "make-prompts": ["n=24"],
    "sample": ["rollout.max_new_tokens=12", "rollout.kv_cache_gib=0.25"],
    "label": ["limit=24", "pool.tpm=null"],  # the shipped config's 90k tokens a minute is for OpenAI
    "train-rm": ["epochs=1"],
    "ppo": [
        "steps=1",
        "prompts_per_step=4",
        "rollout.max_new_tokens=12",
        "rollout.samples_per_prompt=2",
        "rollout.kv_cache_gib=0.25",
        "prompt_mix.n=64",
    ],
    "dpo": ["epochs=1", "batch_prompts=4", "micro_batch_prompts=2"],
    "eval": ["mix.n=12", "sampled=0", "max_new_tokens=12"],
    "sft": ["steps=4"],
    "revise": [],
    "plan": [],
    "config": [],
    "serve-judge": [],
    "serve-reward": [],
    "export-smollm2": [],
    "audit-labels": [],
    "review": [],
}
FAST = {"sample": ["rollout.backend=hf"], "ppo": ["rollout.backend=hf"], "eval": ["backend=hf"]}
MODULES = {"cluster.ppo": "ppo"}  # `python -m MODULE` lines (through `ray job submit`) and their command
CLI_FLAG_COMMANDS = {"audit-labels", "export-smollm2", "plan", "config", "serve-judge"}  # flags, no key=value
AUDIT_SMALL = {"--pairs 200": "--pairs 4"}
RAY_TMP_VAR = "HRLAIF_TEST_RAY_TMP"  # a ray block's head folder, passed by the environment (see `smaller`)


def blocks(doc: str) -> list[tuple[str, str]]:
    """(file:line, the block's text) of every ```bash block of `doc`."""
    lines = (ROOT / doc).read_text().splitlines()
    out, start, body = [], None, []
    for i, line in enumerate(lines, 1):
        if start is None and line.strip() == "```bash":
            start, body = i, []
        elif start is not None and line.strip() == "```":
            out.append((f"{doc}:{start}", "\n".join(body)))
            start = None
        elif start is not None:
            body.append(line)
    return out


def kind(where: str, text: str) -> tuple[str, str]:
    """How a block runs: skip (with the reason), fast, slow, demo (needs `demo_world`) or ray."""
    if text.lstrip().startswith("make demo"):
        return "skip", "the set-up commands: what CI itself runs (`make test`), and the demo (docs/demo.md)"
    if "ray start" in text:
        return "ray", ""
    if "runs/demo/" in text.replace("runs/demo/sft", "") or "label-local.yaml" in text and "prompts=" not in text:
        return "demo", ""
    if "make-prompts" in text and "sample" in text or "hrlaif plan" in text:
        return "fast", ""
    return "slow", ""


ALL = [(where, text) for doc in DOCS for where, text in blocks(doc)]


def printed_after(where: str) -> list[str]:
    """The output a doc shows after the block at `where` (a planner's tables, its host line and verdict), to be
    printed as shown: the lines after the closing fence up to the first that is none of these."""
    doc, start = where.rsplit(":", 1)
    lines = (ROOT / doc).read_text().splitlines()[int(start) :]
    after = lines[lines.index("```") + 1 :]
    shown = []
    for line in after:
        if line.startswith("|") or line.startswith("host memory:") or line in ("fits", ""):
            shown.append(line)
        else:
            break
    return [line for line in shown if line]


def _logical_lines(text: str) -> list[str]:
    """The block's commands, a line each (continuations joined, comments dropped)."""
    joined = text.replace("\\\n", " ")
    return [re.sub(r"\s+#\s.*$", "", line).rstrip() for line in joined.splitlines()]


def smaller(text: str, ports: dict[str, str] | None = None, fast: bool = False) -> str:
    """The block with `SMALL`'s overrides appended to each command (and `FAST`'s for a fast block), and (ray) its
    fixed ports moved."""
    out = []
    for line in _logical_lines(text):
        background = line.endswith("&")
        body = line[:-1].rstrip() if background else line
        command = None
        m = re.search(r"(?:^|\s)hrlaif\s+([a-z0-9-]+)", body)
        if m:
            command = m.group(1)
        for module, name in MODULES.items():
            if f"-m {module}" in body:
                command = name
        if command is not None:
            if command not in SMALL:
                raise AssertionError(f"no SMALL entry for `hrlaif {command}`: give it one in tests/test_readme.py")
            if command not in CLI_FLAG_COMMANDS:
                body = " ".join([body, *SMALL[command], *(FAST.get(command, []) if fast else [])])
            for big, small in AUDIT_SMALL.items():
                body = body.replace(big, small)
        if ports and body.startswith("ray start"):
            body += (
                f" --port={ports['gcs']} --dashboard-port={ports['dash']}"
                f' --dashboard-agent-listen-port={ports["agent"]} --temp-dir="${{{RAY_TMP_VAR}:?}}"'
            )
        if ports:
            body = body.replace("127.0.0.1:8265", f"127.0.0.1:{ports['dash']}")
            if body.strip() == "ray stop":  # every Ray on the machine: this head's processes only
                # the folder by a variable: the block's own shell holds the script's text, never the path
                body = f'pkill -f -- "${{{RAY_TMP_VAR}:?}}" || true'
        out.append(body + (" &" if background else ""))
    return "\n".join(out)


def _copy_checkout(dest: Path) -> None:
    """The checkout as a clone has it: tracked and unignored files (uncommitted edits included), no runs/."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        src = ROOT / os.fsdecode(name)
        if src.is_file():
            target = dest / os.fsdecode(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
    (dest / ".venv").symlink_to(ROOT / ".venv")  # `make setup`'s venv, not built again


def _run(checkout: Path, tmp: Path, script: str, timeout: float, **extra: str) -> str:
    """The script in bash as a reader's shell (`set -e`: the first failing command fails it), in its own process
    group, whose every process (a background judge) is stopped after; a trace with times for the failure's output."""
    env = script_env(tmp, HOME=str(tmp / "home"), **extra)
    env["PYTHONPATH"] = str(checkout)  # the copy's code, as a clone's own checkout is
    env.pop("RAY_ADDRESS", None)
    (tmp / "home").mkdir(exist_ok=True)
    # a background job (a judge) ends with the block, passed or failed: it holds the output pipe open otherwise
    # the reader's shell: the venv activated, as the Quick start's first line does
    prefix = (
        "set -e\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n. .venv/bin/activate\nPS4='+ $(date +%T) '\nset -x\n"
    )
    proc = subprocess.Popen(
        ["bash", "-c", prefix + script],
        cwd=checkout,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        raise AssertionError(f"the block ran past {timeout} s:\n{output[-6000:]}") from None
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # what the block left in the background
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, f"the block failed (exit {proc.returncode}):\n{output[-8000:]}"
    return output


def _world(factory, name: str) -> Path:
    checkout = factory.mktemp(name) / "checkout"
    checkout.mkdir()
    _copy_checkout(checkout)
    return checkout


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A fresh copy of the checkout with `runs/demo/sft`: the tiny model after 60 SFT steps (what the fast
    blocks read of `make demo`'s output; fewer steps leave it writing bytes, with nothing for a judge to rank)."""
    checkout = _world(tmp_path_factory, "world")
    with short_temp_dir() as tmp:
        script = (
            "hrlaif tiny-model --config cluster/configs/tiny-model.yaml --out runs/demo/model\n"
            "hrlaif sft init=runs/demo/model output_dir=runs/demo/sft steps=60 eval_prompts=8\n"
        )
        _run(checkout, tmp, script, timeout=600)
    return checkout


@pytest.fixture(scope="module")
def demo_world(tmp_path_factory):
    """A fresh copy of the checkout after `hrlaif run --config cluster/configs/demo.yaml` with one arm, a small
    budget: the demo's files where the docs say (prompts, the SFT policy's samples, the HRLAIF arm's labels)."""
    checkout = _world(tmp_path_factory, "demo")
    small = [
        "'arms=[{name: hrlaif, method: hybrid}]'",
        "targets=[]",
        "prompts.n=32",
        "sft.steps=60",
        "sample.rollout.max_new_tokens=12",
        "ppo.steps=1",
        "ppo.prompts_per_step=4",
        "ppo.rollout.max_new_tokens=12",
        "eval.mix.n=8",
    ]
    with short_temp_dir() as tmp:
        _run(
            checkout,
            tmp,
            "hrlaif run --config cluster/configs/demo.yaml " + " ".join(small),
            1800,
        )
    for path in ("runs/demo/sft", "runs/demo/prompts.parquet", "runs/demo/seed-1/rollouts.parquet"):
        assert (checkout / path).exists(), path
    assert (checkout / "runs/demo/seed-1/hrlaif/labels/summary.json").exists()
    return checkout


def _params():
    for where, text in ALL:
        how, why = kind(where, text)
        marks = [] if how == "fast" else [pytest.mark.slow]
        if how == "skip":
            marks.append(pytest.mark.skip(reason=why))
        yield pytest.param(where, text, how, id=where, marks=marks)


@pytest.mark.parametrize(("where", "text", "how"), list(_params()))
def test_block_runs_as_written(where, text, how, request):
    extra = {}
    if "audit-labels --pairs" in text:
        from hrlaif_ray.data.readers import DATA_DIR_ENV, resolve_data_dir

        found = resolve_data_dir()
        if found is None or not found.is_dir():
            pytest.skip("the bundled human pairs need the data folder (../shared/data or HRLAIF_DATA_DIR)")
        extra[DATA_DIR_ENV] = str(found.resolve())  # the copy is not beside ../shared/data, as the checkout is
    checkout = request.getfixturevalue("demo_world" if how == "demo" else "world")
    with short_temp_dir() as tmp:
        ports = None
        if how == "ray":
            ports = {"gcs": free_port(), "dash": free_port(), "agent": free_port(), "tmp": str(tmp / "ray")}
            extra[RAY_TMP_VAR] = ports["tmp"]
        script = smaller(text, ports, fast=how == "fast")
        try:
            output = _run(checkout, tmp, script, timeout=1500, **extra)
        finally:
            if ports:
                subprocess.run(["pkill", "-f", "--", ports["tmp"]], check=False)
    assert "Traceback" not in output, output[-4000:]
    if "hrlaif plan" in text:  # what the doc shows the planner printing is what it prints
        shown = printed_after(where)
        assert shown and not [line for line in shown if line not in output.splitlines()], output[-4000:]


def test_every_block_has_a_kind_and_its_commands_a_size():
    """The module knows every block (a new one gets a kind) and every command in them (a size in SMALL)."""
    assert len(ALL) >= 10, [w for w, _ in ALL]
    for where, text in ALL:
        how, _ = kind(where, text)
        assert how in ("skip", "fast", "slow", "demo", "ray"), where
        if how != "skip":
            smaller(text)  # raises for a command without a size
    assert any(kind(w, t)[0] == "fast" and "hrlaif ppo" in t for w, t in ALL), "the Quick start runs in make test"
