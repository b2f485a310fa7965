"""The `hrlaif` console script as a user runs it."""

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, script_env

from hrlaif_ray.data import read_records

HRLAIF = shutil.which("hrlaif") or str(Path(__import__("sys").executable).parent / "hrlaif")


def _hrlaif(tmp_path, *args):
    return subprocess.run(
        [HRLAIF, *args], env=script_env(tmp_path), capture_output=True, text=True, cwd=ROOT, timeout=300
    )


def test_make_prompts_and_tiny_model(tmp_path):
    proc = _hrlaif(tmp_path, "make-prompts", "--out", str(tmp_path / "p.parquet"), "n=50", "seed=2")
    assert proc.returncode == 0, proc.stderr
    assert len(read_records(tmp_path / "p.parquet", "prompts")) == 50
    proc = _hrlaif(
        tmp_path,
        "tiny-model",
        "--config",
        "cluster/configs/tiny-model.yaml",
        "--out",
        str(tmp_path / "m"),
        "model.arch=llama",
        "prompts.n=200",
    )
    assert proc.returncode == 0, proc.stderr
    assert "llama" in proc.stdout and (tmp_path / "m" / "model.safetensors").is_file()
    assert "arch: llama" in (tmp_path / "m" / "hrlaif_config.yaml").read_text()


def test_bad_config_exits_2_naming_the_key(tmp_path):
    """The console script itself (every command's in-process error path is tested below); a command that needs no
    torch, so the process is quick."""
    proc = _hrlaif(tmp_path, "make-prompts", "--out", str(tmp_path / "p.parquet"), "n=-1")
    assert proc.returncode == 2 and "n:" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "p.parquet").exists()


@pytest.mark.data
def test_prepare_data(tmp_path, data_dir):
    proc = _hrlaif(
        tmp_path,
        "prepare-data",
        "--source",
        "mt-bench",
        "--data-dir",
        str(data_dir),
        "--out",
        str(tmp_path / "h.parquet"),
    )
    assert proc.returncode == 0, proc.stderr
    assert len(read_records(tmp_path / "h.parquet", "human_pairs")) == 200
    proc = _hrlaif(tmp_path, "prepare-data", "--source", "nope", "--out", str(tmp_path / "x.parquet"))
    assert proc.returncode == 2 and "unknown data source 'nope'" in proc.stderr
    assert "gsm8k/test" in _hrlaif(tmp_path, "prepare-data", "--list").stdout


BAD_INPUT = {  # command -> arguments with one bad config, override or input, and what the one-line error must name
    "prepare-data": (["--source", "nope", "--out", "x.parquet"], "unknown data source 'nope'"),
    "make-prompts": (["--out", "p.parquet", "n=-1"], "n:"),
    "tiny-model": (["--out", "m", "model.num_layers=-1"], "model.num_layers"),
    "export-smollm2": (["--out", "/proc/version/smollm2"], "/proc/version"),
    "sft": (["--config", "missing.yaml"], "missing.yaml"),
    "label": (["--config", "missing.yaml"], "missing.yaml"),
    "serve-judge": (["p_429=2"], "p_429"),
    "sample": (["--config", "missing.yaml"], "missing.yaml"),
    "train-rm": (["init=x", "labels_dir=y", "prompts=z", "output_dir=o", "epochs=zero"], "epochs"),
    "rm-probe": (["rm=x", "prompts=y"], "rollouts"),
    "ppo": (["policy=p", "output_dir=o", "algo.estimator=nope"], "algo.estimator"),
    "dpo": (["policy=p", "labels_dir=l", "prompts=q", "output_dir=o", "batch_prompts=6"], "batch_prompts"),
    "eval": (["--config", "missing.yaml"], "missing.yaml"),
    "revise": (["prompts=p", "rollouts=r", "output=o.jsonl", "labeling.constitution=no-such.yaml"], "no-such.yaml"),
    "run": (["arms=[]"], "arms"),
    "plan": (["ppo", "policy=no-such-model", "output_dir=o"], "policy: 'no-such-model' is not a model folder"),
    "serve-rm": (["--rm", "no-such-rm"], "no-such-rm"),
    "serve-reward": (["output_dir=x", "group_size=0"], "group_size"),
    "review": (["--labels", "no-such-labels"], "no-such-labels"),
    "audit-labels": (["--data-dir", "no-such-data", "--base-url", "http://127.0.0.1:9/v1"], "no-such-data"),
    "config": (["show", "nope"], "config show JOB"),
}


def test_every_command_reports_bad_input_in_one_line_with_exit_2(tmp_path, monkeypatch, capsys):
    from cluster.cli import COMMANDS, main

    assert set(BAD_INPUT) == set(COMMANDS) | {"config"}
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HRLAIF_RM_TOKEN", "t")
    for command, (args, names) in BAD_INPUT.items():
        assert main([command, *args]) == 2, command
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"hrlaif {command}: error:") and names in err[0], (command, err)


def test_every_config_command_refuses_a_missing_file_a_wrong_key_and_a_malformed_override(
    tmp_path, monkeypatch, capsys
):
    """Each config-driven command, each of three mistakes: exit 2 and one line naming the file, key or override."""
    from cluster.cli import COMMANDS, main

    monkeypatch.chdir(tmp_path)
    commands = sorted(name for name, c in COMMANDS.items() if c.job)
    mistakes = {
        "missing file": (["--config", "no-such-config.yaml"], "no-such-config.yaml"),
        "wrong key": (["no_such_key.deeper=1"], "no_such_key"),
        "malformed override": (["just-a-word"], "just-a-word"),
        "malformed value": (["seed=[1, 2"], "seed=[1, 2"),
    }
    for command in commands:
        for what, (args, names) in mistakes.items():
            if command in ("make-prompts", "tiny-model"):  # their output is a flag of its own
                args = ["--out", "out", *args]
            try:
                status = main([command, *args])
            except SystemExit as exc:  # argparse's usage errors
                status = exc.code
            assert status == 2, (command, what)
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and err[0].startswith(f"hrlaif {command}: error:") and names in err[0], (
                command,
                what,
                err,
            )


def test_config_show_prints_every_key_with_its_description(capsys):
    from cluster.cli import main

    assert main(["config", "show", "sft"]) == 0
    out = capsys.readouterr().out
    assert "steps = 1100  # Optimizer steps" in out and "prompts.holdout = 0.3" in out and "(required)" in out
    assert "prompts.n = 40000" in out  # the section's default is the job's instance, not its class's (n=1000)


def test_every_command_has_help_and_a_config_command_lists_every_key(capsys):
    """`hrlaif --help` lists the table; `hrlaif COMMAND --help` exits 0, and a config-driven command's help is
    generated from its job's field descriptions (every key, as `config show` prints it)."""
    from cluster.cli import COMMANDS, _resolve, main
    from hrlaif_ray.config import config_help

    assert main(["--help"]) == 0
    listing = capsys.readouterr().out
    assert all(f"  {name} " in listing for name in COMMANDS)
    assert main([]) == 2 and main(["no-such-command"]) == 2
    assert "unknown command 'no-such-command'" in capsys.readouterr().err
    for name, command in COMMANDS.items():
        with pytest.raises(SystemExit) as exit_:
            main([name, "--help"])
        assert exit_.value.code == 0, name
        out = capsys.readouterr().out
        assert out.startswith(f"usage: hrlaif {name}"), (name, out[:200])
        if command.job:
            assert config_help(_resolve(command.job)) in out, name
