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
    proc = _hrlaif(tmp_path, "tiny-model", "--out", str(tmp_path / "m"), "model.num_layers=-1")
    assert proc.returncode == 2 and "model.num_layers" in proc.stderr and "Traceback" not in proc.stderr


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
