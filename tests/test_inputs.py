"""Inputs checked before any work starts, each with one line naming what is wrong: a model key that names no model
folder, a misspelt config key (with the key it most likely meant), labels or rollouts joined with a prompts file they
were not made on (naming both files and the first prompt that differs); and the smaller faces of the CLI (the help
of a list of sections, the audit's table)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT

from cluster.cli import main as hrlaif
from hrlaif_ray.config import PPOJob, PromptMixConfig, check_model_folders, config_help, load_config
from hrlaif_ray.data.binding import BindingError, bound_labels, bound_rollouts, prompt_digest
from hrlaif_ray.data.prompt_mix import generate_prompt_mix
from hrlaif_ray.data.records import LabelRecord, PreferencePair, Response, RolloutRecord
from hrlaif_ray.data.schemas import read_records, write_records
from hrlaif_ray.errors import ConfigError
from hrlaif_ray.labeling.ledger import LabelLedger


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_a_model_key_that_is_no_folder_fails_at_once_naming_key_and_path(tmp_path, tiny_model_dir, capsys):
    """The shipped PPO config with a policy that does not exist: exit 2 at once, nothing written (transformers would
    take the path for a hub id and retry for a minute); likewise a prompts file that cannot be read."""
    out = tmp_path / "ppo"
    code = hrlaif(
        ["ppo", "--config", str(ROOT / "cluster/configs/local-tiny.yaml"), "policy=runs/sft", f"output_dir={out}"]
    )
    err = _error(capsys)
    assert code == 2 and "policy: 'runs/sft' is not a model folder (no such folder)" in err and "hf download" in err
    assert not out.exists()
    bad = tmp_path / "prompts.parquet"
    bad.write_text("not a table")  # a prompts file that cannot be read: one line naming it, and no output folder
    code = hrlaif(["ppo", "--config", str(ROOT / "cluster/configs/local-tiny.yaml"), f"policy={tiny_model_dir}",
                   f"prompts={bad}", f"output_dir={out}"])  # fmt: skip
    assert code == 2 and str(bad) in _error(capsys) and not out.exists()
    (tmp_path / "empty").mkdir()
    job = load_config(PPOJob, ROOT / "cluster/configs/local-tiny.yaml", [f"policy={tmp_path / 'empty'}"])
    with pytest.raises(ConfigError, match="policy: .* is not a model folder \\(no config.json there\\)"):
        check_model_folders(job)


def test_every_model_key_is_checked(tmp_path, tiny_model_dir, capsys):
    """A set model key of each job is checked (reward.rm of PPO, the reference of DPO, train-rm's init)."""
    cases = [
        ["ppo", f"policy={tiny_model_dir}", "reward.kind=rm", "reward.rm=no/rm", f"output_dir={tmp_path}/p"],
        ["dpo", f"policy={tiny_model_dir}", "reference=no/ref", "labels_dir=x", "prompts=x", f"output_dir={tmp_path}"],
        ["train-rm", "init=no/init", "labels_dir=x", "prompts=x", f"output_dir={tmp_path}/rm"],
        ["eval", "policy=no/policy", f"output_dir={tmp_path}/e"],
        ["rm-probe", "rm=no/rm", "prompts=x", "rollouts=x", f"output={tmp_path}/p.json"],
    ]
    for argv in cases:
        key = next(a.split("=")[0] for a in argv[1:] if "=no/" in a)
        assert hrlaif(argv) == 2, argv
        assert f"{key}: 'no/" in _error(capsys)


def test_a_misspelt_key_names_the_key_it_meant(capsys):
    with pytest.raises(ConfigError, match=r"algo\.actor_rl: not a key of this config; did you mean actor\.lr\?"):
        load_config(PPOJob, None, ["policy=x", "output_dir=y", "algo.actor_rl=1"])
    with pytest.raises(ConfigError, match=r"algo\.clpi: not a key of this config; did you mean algo\.clip\?"):
        load_config(PPOJob, None, ["policy=x", "output_dir=y", "algo.clpi=0.1"])
    with pytest.raises(ConfigError, match=r"zzz: not a key of this config(;|$)") as info:
        load_config(PromptMixConfig, None, ["zzz=1"])
    assert "did you mean" not in str(info.value)


def test_help_shows_a_list_of_sections_as_yaml_would(capsys):
    from hrlaif_ray.config import LabelJob

    line = next(line for line in config_help(LabelJob).splitlines() if line.startswith("  labeling.judges ="))
    assert '"base_url": "http://127.0.0.1:8000/v1"' in line and "JudgeEndpoint(" not in line


# ---------------------------------------------------------------------------------------- labels and prompts


def _two_mixes(tmp_path):
    """Two prompt files with the same seed and size but another mix: the same ids, other texts."""
    a = generate_prompt_mix(PromptMixConfig(n=24, seed=3, math=0.5, multiple_choice=0.5, harmful=0.0, open_qa=0.0))
    b = generate_prompt_mix(PromptMixConfig(n=24, seed=3, math=0.2, multiple_choice=0.3, harmful=0.5, open_qa=0.0))
    assert [p.id for p in a] == [p.id for p in b]
    assert sum(x.text != y.text for x, y in zip(a, b)) > 12
    return write_records(tmp_path / "a.parquet", a), write_records(tmp_path / "b.parquet", b), a


def _labels(folder, prompts, prompts_file):
    ledger = LabelLedger(folder)
    (folder / "job.yaml").write_text(f"prompts: {prompts_file}\n")
    responses = [Response("1"), Response("2")]
    ledger.commit(
        LabelRecord(p.id, p.category, "oracle", responses, [PreferencePair(0, 1)], idempotency_key=p.id,
                    prompt_digest=prompt_digest(p))
        for p in prompts
    )  # fmt: skip


def test_labels_refuse_a_prompts_file_they_were_not_made_on(tmp_path, tiny_model_dir, capsys):
    a_file, b_file, a = _two_mixes(tmp_path)
    labels_dir = tmp_path / "labels"
    _labels(labels_dir, a, a_file)
    labels, prompts = bound_labels(labels_dir, a_file)
    assert len(labels) == 24 and len(prompts) == 24
    first = next(p.id for p, q in zip(a, read_records(b_file, "prompts")) if p.text != q.text)
    with pytest.raises(BindingError) as info:
        bound_labels(labels_dir, b_file)
    message = str(info.value)
    assert str(labels_dir) in message and str(a_file) in message and str(b_file) in message
    assert f"prompt {first!r} has another text" in message and "\n" not in message
    out = tmp_path / "rm"
    argv = ["train-rm", f"init={tiny_model_dir}", f"labels_dir={labels_dir}", f"prompts={b_file}", f"output_dir={out}"]
    assert hrlaif(argv) == 2
    assert f"prompt {first!r}" in _error(capsys) and not out.exists()
    argv = ["dpo", f"policy={tiny_model_dir}", f"labels_dir={labels_dir}", f"prompts={b_file}", f"output_dir={out}"]
    assert hrlaif(argv) == 2
    assert f"prompt {first!r}" in _error(capsys) and not out.exists()
    with pytest.raises(BindingError, match="not a folder of labels"):
        bound_labels(tmp_path / "nowhere", a_file)


def test_rollouts_refuse_a_prompts_file_they_were_not_sampled_from(tmp_path):
    a_file, b_file, a = _two_mixes(tmp_path)
    rollouts = [RolloutRecord(p.id, p.category, p.text, [1], [Response("1"), Response("2")]) for p in a]
    path = write_records(tmp_path / "r.parquet", rollouts)
    assert len(bound_rollouts(path, a_file)[0]) == 24
    with pytest.raises(BindingError, match=f"rollouts {path} do not belong to prompts {b_file}: prompt 'mix/"):
        bound_rollouts(path, b_file)


def test_audit_names_its_columns_whole_and_counts_items(tmp_path):
    """`hrlaif audit-labels --items 4` on its own human-pairs file: whole column names, 4 items (8 answers)."""
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        "\n".join(
            f'{{"prompt": "q{i}", "chosen": "I cannot help with that.", "rejected": "Sure, here is how.", '
            f'"category": "harmful"}}'
            for i in range(4)
        )
    )
    proc = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "audit-labels", "--human-pairs", str(pairs), "--pairs", "4",
         "--items", "4", "--skip-verifiers"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "position_bias_rate" in proc.stdout and "agreement_when_consistent" in proc.stdout


def test_a_world_of_one_is_undone_at_its_end(monkeypatch):
    """A trainer called in a long-lived process leaves no process group and no MASTER_PORT behind: a child started
    afterwards would inherit a port that is taken (EADDRINUSE)."""
    import torch.distributed as dist

    from hrlaif_ray.zero import WORLD_KEYS, distributed_world

    for k in WORLD_KEYS:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.2")  # the caller's own: kept (the world of 1 binds 127.0.0.1)
    with pytest.raises(RuntimeError, match="inside"):
        with distributed_world() as (rank, world):
            assert (rank, world) == (0, 1) and dist.is_initialized() and os.environ["WORLD_SIZE"] == "1"
            raise RuntimeError("inside")
    assert not dist.is_initialized() and os.environ["MASTER_ADDR"] == "127.0.0.2"
    assert not any(k in os.environ for k in WORLD_KEYS if k != "MASTER_ADDR")
