"""Shared fixtures: the real data folder (tests skip with a reason when it is absent), a tiny model folder."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors.runtime import process_defaults
from hrlaif_ray.config import ModelConfig, PromptMixConfig
from hrlaif_ray.data.prompt_mix import generate_prompt_mix
from hrlaif_ray.data.readers import resolve_data_dir

process_defaults()  # as the hrlaif command does: CPU DeepSpeed, a local Ray on 127.0.0.1, zero-copy tensors
ROOT = Path(__file__).resolve().parents[1]
# One compile cache for every test's vLLM engines and TorchInductor kernels (each engine start compiled the same
# CPU kernels again, about 10 s each); keyed by content, so sharing it across tests and sessions is safe.
COMPILE_CACHE = Path(tempfile.gettempdir()) / f"hrlaif-test-compile-cache-{os.getuid()}"
os.environ.setdefault("VLLM_CACHE_ROOT", str(COMPILE_CACHE / "vllm"))
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(COMPILE_CACHE / "inductor"))
# TorchInductor precompiles its C++ header into $TMPDIR/torchinductor_$USER, outside those caches, before it looks a
# kernel up; the tests give their children a TMPDIR each, so every engine compiled it again (about 8 s of g++). Off,
# a cached kernel loads without it and a new one compiles about 3 s slower, once.
os.environ.setdefault("TORCHINDUCTOR_CPP_CACHE_PRECOMPILE_HEADERS", "0")
# `make test` runs two workers on two cores, each test's processes with threads of their own: more threads than cores.
# OpenMP's threads then spin at each barrier while the thread they wait for is off the core; passive ones sleep
# (`hrlaif train-rm` beside one busy process, 2026-12-03: 23.2 -> 14.6 CPU-s, 33 -> 28 s).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
SCRIPTS = Path(__file__).resolve().parent / "scripts"


# `make test` runs the modules on 2 pytest-xdist workers (`-n 2 --dist loadfile`: a module's tests, and its Ray
# cluster, stay on one worker), which take them in collection order (`--no-loadscope-reorder`; by default xdist puts
# the modules with the most tests first). The longest modules go first (longest processing time first), so that
# neither worker is left with a long one at the end; those listed took 50-400 s each in a make test of 2026-12-07
# on 2 cores, every other module less. A module missing here only runs later.
LONGEST_FIRST = [  # by their tests' summed durations in a make test of 2026-12-07
    "test_readme.py",  # the Quick start, every stage by hand: about 3.5-6.5 min
    "test_weight_sync.py",
    "test_lora.py",
    "test_faults.py",
    "test_serve_reward.py",
    "test_streaming.py",
    "test_labeler_pool.py",
    "test_reward_service.py",
    "test_ppo_ray.py",
    "test_precision.py",
    "test_real_judge.py",
    "test_ppo_job.py",
    "test_review.py",
    "test_dpo_ray.py",
    "test_labeling_controls.py",
    "test_eval.py",
]


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each module's own order is kept
    if os.environ.get("HRLAIF_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow end-to-end test: set HRLAIF_SLOW=1 (make test-all) to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    found = resolve_data_dir()
    if found is None or not found.is_dir():
        pytest.skip("real data folder absent: set HRLAIF_DATA_DIR or place ../shared/data beside the checkout")
    return found


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from hrlaif_ray.data.sft_mix import tokenizer_corpus
    from hrlaif_ray.models import train_bpe_tokenizer

    return train_bpe_tokenizer(tokenizer_corpus(generate_prompt_mix(PromptMixConfig(n=500))), vocab_size=384)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    from hrlaif_ray.models import build_tiny_causal_lm, save_model_folder

    model = build_tiny_causal_lm(ModelConfig(), tiny_tokenizer)
    return save_model_folder(model, tiny_tokenizer, tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def local_ray(tmp_path_factory):
    """A local Ray cluster (8 logical CPUs), the project on its workers' path: one for every module of a pytest-xdist
    worker that needs one (starting and stopping a cluster costs about 6 CPU-seconds). A test leaves it as it found
    it: its actors killed, its placement groups removed."""
    import ray

    tmp = tmp_path_factory.mktemp("ray")
    os.environ.update(
        DS_ACCELERATOR="cpu", RAY_ENABLE_ZERO_COPY_TORCH_TENSORS="1", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0"
    )
    ray.init(
        address="local",
        num_cpus=8,
        include_dashboard=False,
        log_to_driver=False,
        _temp_dir=str(tmp),
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
    )
    yield tmp
    ray.shutdown()


def merged(base: dict, changes: dict) -> dict:
    """`base` with `changes` merged in, dicts key by key (any other value replaces)."""
    out = dict(base)
    for k, v in changes.items():
        out[k] = merged(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def tiny_ppo_job(policy: Path, out: Path, **changes) -> dict:
    """A PPO job on the tiny model that fits 2 cores, as the tests' base: GAE, 4 prompts x 2 samples a step, the RM
    the policy itself; 2 actor ranks with one reference beside rank 0 (one process fewer to start than a reference
    rank beside each), the critic with the RM beside it, one HF rollout engine. `changes` are merged in (`merged`)."""
    base = {
        "policy": str(policy),
        "output_dir": str(out),
        "steps": 2,
        "prompts_per_step": 4,
        "algo": {"estimator": "gae", "micro_batch_size": 2},
        "actor": {"lr": 1e-4},
        "critic": {"lr": 1e-4},
        "rollout": {"backend": "hf", "samples_per_prompt": 2, "max_new_tokens": 8, "max_model_len": 128},
        "reward": {"kind": "rm", "rm": str(policy)},
        "resources": {
            "actor": {"replicas": 2, "share": 0.5},
            "reference": {"replicas": 1, "share": 0.5, "colocate_with": "actor"},
            "critic": {"replicas": 1, "share": 0.5},
            "reward": {"replicas": 1, "share": 0.5, "colocate_with": "critic"},
            "rollout": {"replicas": 1},
        },
    }
    return merged(base, changes)


def script_env(tmp: Path, **extra: str) -> dict[str, str]:
    """Environment for a child process: temp files and sockets under `tmp` (the compile cache shared), CPU
    DeepSpeed, both cores."""
    # A process group this worker joined in-process names a port it holds; a child starts its own world.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK")
    }
    env.update(
        TMPDIR=str(tmp),
        DS_ACCELERATOR="cpu",
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
        **extra,
    )
    return env


PYTHON = sys.executable
RM_TOKEN = "s3cret-token"


@contextlib.contextmanager
def served_rm(folder: Path | str, tmp: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """`hrlaif serve-rm --rm folder` with a token: its URL and the header that carries the token; its process group
    stopped after."""
    import signal

    proc = subprocess.Popen(
        [str(ROOT / ".venv/bin/hrlaif"), "serve-rm", "--rm", str(folder)],
        env=script_env(tmp, HRLAIF_RM_TOKEN=RM_TOKEN),
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("READY http://127.0.0.1:"), line
        yield line.split()[1], {"Authorization": f"Bearer {RM_TOKEN}"}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@contextlib.contextmanager
def short_temp_dir() -> Iterator[Path]:
    """A folder of its own with a short path, removed after, for processes that open Unix sockets in their temp folder
    (Ray, vLLM's ZMQ): a socket path must stay under 108 bytes, which pytest's tmp_path can exceed (under pytest-xdist
    more so)."""
    path = Path(tempfile.mkdtemp(prefix="hr", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A `short_temp_dir` for one test."""
    with short_temp_dir() as path:
        yield path


def torchrun(*target: str, ranks: int = 2) -> list[str]:
    """The command that runs `target` (a script, or -m module, and its arguments) on `ranks` local torchrun ranks."""
    from hrlaif_ray.zero import free_port

    return [
        PYTHON,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        str(ranks),
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(free_port()),
        *target,
    ]


def run_hrlaif(*args: str, timeout: float, **env: str) -> subprocess.CompletedProcess:
    """`hrlaif ARGS` in a child process whose temp files (Ray's sockets among them) live in a `short_temp_dir`."""
    with short_temp_dir() as short:
        return subprocess.run(
            [str(ROOT / ".venv/bin/hrlaif"), *args],
            env=script_env(short, **env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct exported once per session from the packaged GGUF."""
    from hrlaif_ray.models.smollm2 import export_smollm2

    return export_smollm2(tmp_path_factory.mktemp("smollm2") / "smollm2-135m-instruct")


SFT_TEST_STEPS = 1000  # of 64 examples from the default 40,000: about 0.7 greedy math accuracy (430 steps: 10-20%)


@pytest.fixture(scope="session")
def sft_policy_dir(tmp_path_factory, tiny_model_dir) -> Path:
    """The tiny policy after `hrlaif sft` on the default 40,000 examples of the generated mix (76% greedy math
    accuracy after 1000 steps here; 4,000 examples, seen 17 times in that budget, gave 50%). Set
    HRLAIF_TEST_SFT_DIR to reuse a folder from an earlier run while iterating on one test."""
    reuse = os.environ.get("HRLAIF_TEST_SFT_DIR")
    if reuse:
        return Path(reuse)
    tmp = tmp_path_factory.mktemp("sft")
    proc = run_hrlaif(
        "sft",
        "--init",
        str(tiny_model_dir),
        "--out",
        str(tmp / "policy"),
        f"steps={SFT_TEST_STEPS}",
        timeout=900,
        OMP_NUM_THREADS="2",
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return tmp / "policy"
