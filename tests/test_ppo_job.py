"""PPO end to end: `ray job submit` of `cluster.ppo` to a head node this test starts on 127.0.0.1 (2 DeepSpeed
ranks, a vLLM rollout engine, the reward service, the critic and the reference), asynchronous, with the batch made
ahead kept in each checkpoint; (slow) resume from a checkpoint through `ray job submit`; (slow) the same with LoRA
adapters synced alone and resumed; and (slow) 30 seeded PPO steps on the tiny arithmetic task with the programmatic
reward raise the mean reward."""

import json
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, merged, run_hrlaif, script_env, tiny_ppo_job

from hrlaif_ray.metrics import read_jsonl
from hrlaif_ray.zero import free_port

PHASES = [
    "time/generate",
    "time/sync",
    "time/reference",
    "time/critic",
    "time/reward",
    "time/actor_train",
    "time/critic_train",
    "time/step",
]
RAY = str(ROOT / ".venv/bin/ray")


@pytest.fixture
def ray_head(short_tmp):
    """A head node of our own on 127.0.0.1 (short temp dir: Ray's socket paths have a length limit), with Ray's
    token authentication on and a token of this test's own (the job API refuses requests without it). `ray start
    --block` holds it: stopping that process stops this head only (`ray stop` would stop every Ray on the machine,
    another test session's too)."""
    import httpx

    tmp = short_tmp
    port, dash = free_port(), free_port()
    token = secrets.token_hex(16)
    env = script_env(
        tmp,
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        RAY_ENABLE_ZERO_COPY_TORCH_TENSORS="1",
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=token,
    )
    env["PATH"] = f"{ROOT / '.venv/bin'}{os.pathsep}{env['PATH']}"  # as an activated venv: the job's `python` is ours
    start = [RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}"]
    start += [f"--dashboard-port={dash}", "--dashboard-host=127.0.0.1", "--include-dashboard=true"]
    start += ["--num-cpus=8", "--disable-usage-stats", f"--temp-dir={tmp}"]
    # The job agent's port, which is 52365 on every Ray unless told: another Ray on this machine (a test on the other
    # pytest-xdist worker) may hold that one, and the job API then has "no available agent".
    start += [f"--dashboard-agent-listen-port={free_port()}"]
    log = (tmp / "ray-start.log").open("wb")
    head = subprocess.Popen(start, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.monotonic() + 180
        while True:  # the job API answers once the dashboard is up
            assert head.poll() is None, (tmp / "ray-start.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the head node did not come up in 180 s"
            try:
                if httpx.get(f"{address}/api/version", headers={"Authorization": f"Bearer {token}"}).is_success:
                    break
            except httpx.TransportError:
                pass
            time.sleep(1)
        yield address, env
    finally:
        head.terminate()  # its processes are shut down as it exits
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        log.close()


def _config(path: Path, policy, out, **changes) -> Path:
    """The tiny job (`tiny_ppo_job`) on a vLLM engine, ZeRO-2 with 2 rows a rank accumulated, written to `path`."""
    vllm = {"backend": "vllm", "max_new_tokens": 12, "max_model_len": 256}
    job = merged(
        tiny_ppo_job(
            policy,
            out,
            actor={"zero_stage": 2},
            critic={"zero_stage": 2},
            rollout=vllm,
            resources={"rollout": {"threads": 2}},
        ),
        changes,
    )
    path.write_text(json.dumps(job))
    return path


def _wait(address: str, job_id: str, env: dict, timeout_s: float = 600) -> str:
    """The job's final status from the job REST API with this test's bearer token (an in-process SDK client may
    hold a token Ray cached earlier in the session)."""
    import httpx

    headers = {"Authorization": f"Bearer {env['RAY_AUTH_TOKEN']}"}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = httpx.get(f"{address}/api/jobs/{job_id}", headers=headers, timeout=30).json()["status"]
        if status == "SUCCEEDED":
            return status
        if status in ("FAILED", "STOPPED"):
            logs = httpx.get(f"{address}/api/jobs/{job_id}/logs", headers=headers, timeout=30).json().get("logs", "")
            return f"{status}: {logs[-6000:]}"
        time.sleep(2)
    httpx.post(f"{address}/api/jobs/{job_id}/stop", headers=headers, timeout=30)
    return "TIMEOUT"


def _submit(address: str, env: dict, job_id: str, config, *args: str, check: bool = False):
    """`ray job submit --no-wait` of cluster.ppo with this checkout as the working dir."""
    cmd = [
        RAY,
        "job",
        "submit",
        "--address",
        address,
        "--working-dir",
        str(ROOT),
        "--submission-id",
        job_id,
        "--no-wait",
        "--",
        "python",
        "-m",
        "cluster.ppo",
        "--config",
        str(config),
        *args,
    ]
    deadline = time.monotonic() + 120
    while True:  # the head's job agent starts after its dashboard; until then the API says to try again later
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        if proc.returncode == 0 or "No available agent" not in proc.stderr or time.monotonic() > deadline:
            break
        time.sleep(2)
    if check:
        proc.check_returncode()
    return proc


def _rows(out: Path) -> list[dict]:
    return read_jsonl(out / "metrics.jsonl")


def _has_the_step_metrics(rows: list[dict], phases: list[str] = PHASES) -> None:
    expected = phases + [
        "reward/score_mean",
        "actor/kl",
        "actor/entropy",
        "actor/clip_frac",
        "critic/value_loss",
        "response/length_mean",
    ]
    for row in rows:
        missing = [k for k in expected if k not in row]
        assert not missing, missing
        assert abs(row["reward/score_mean"]) <= 10.0


def _buffered_batch(out: Path, step: int):
    import torch

    return torch.load(out / "checkpoints" / f"step_{step}" / "buffer.pt", weights_only=False)


def test_ray_job_submit_ppo_three_asynchronous_steps(ray_head, tmp_path, tiny_model_dir):
    """One submission, asynchronous (each step's batch sampled by the engines while the step before trains), a
    checkpoint after each step holding the batch made ahead. Resuming from one through `ray job submit` is the slow
    test below; `tests/test_faults.py` resumes real roles from a checkpoint in `make test`."""
    address, env = ray_head
    out = tmp_path / "ppo"
    config = _config(tmp_path / "ppo.json", tiny_model_dir, out, steps=3, checkpoint_every=1)
    job_id = f"ppo-{os.getpid()}"
    proc = _submit(address, env, job_id, config, "async.max_staleness=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _wait(address, job_id, env) == "SUCCEEDED"
    rows = _rows(out)
    assert [r["step"] for r in rows] == [1, 2, 3]
    # the rewards come with the batch made ahead (in the background), not beside the forwards
    _has_the_step_metrics(rows, [p for p in PHASES if p != "time/reward"])
    assert not any("time/reward" in r for r in rows)
    # Step 1 has nothing made ahead; steps 2 and 3 were sampled by the weights of one update before.
    assert [r["async/staleness"] for r in rows] == [0, 1, 1] and "time/generate_wait" in rows[1]
    assert (out / "checkpoints" / "step_3" / "actor" / "config.json").is_file()
    assert (out / "checkpoints" / "step_3" / "critic" / "scalar_head.safetensors").is_file()
    assert list((out / "tensorboard").glob("events.*"))
    # Step 3's batch, made by the weights after 1 update while step 2 trained: what a resume from step 2 trains on.
    buffered = _buffered_batch(out, 2)
    assert (buffered.step, buffered.version, len(buffered.batch)) == (2, 1, 8) and buffered.scores is not None


@pytest.mark.slow  # 2.5 min; LoRA on Ray stays in make test: tests/test_lora.py's actor with vLLM serving adapters
def test_ray_job_submit_ppo_with_adapters_syncs_only_them_and_resumes_with_the_same_adapter(
    ray_head, tmp_path, tiny_model_dir
):
    """The actor trains LoRA adapters and is its own reference (no reference placed), each sync sends only the
    adapter to the vLLM engine, which samples with it; a resume goes on with the checkpoint's adapter in the learner
    and in the engine alike (tests/test_lora.py checks the base stays byte-identical, and a critic's and an RM's
    adapters). RLOO: no critic to start."""
    from safetensors.torch import load_file

    address, env = ray_head
    out = tmp_path / "ppo"
    config = _config(
        tmp_path / "ppo.json",
        tiny_model_dir,
        out,
        checkpoint_every=1,
        actor={"lora": {"r": 8, "alpha": 16}},
        algo={"estimator": "rloo"},
    )
    job_id = f"ppo-lora-{os.getpid()}"
    proc = _submit(address, env, job_id, config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _wait(address, job_id, env) == "SUCCEEDED"
    rows = _rows(out)
    assert [r["step"] for r in rows] == [1, 2]
    rloo = [p for p in PHASES if p not in ("time/critic", "time/critic_train")]
    for row in rows:  # no critic, and the reference's forward is the actor's with its adapters off
        assert all(k in row for k in rloo) and "memory/reference_peak_rss_mb" not in row
    adapter = load_file(out / "checkpoints" / "step_1" / "actor" / "adapter_model.safetensors")
    adapter_bytes = sum(t.numel() * t.element_size() for t in adapter.values())
    assert all(r["sync/bytes"] == adapter_bytes and r["sync/checked"] == len(adapter) for r in rows)
    assert all(r["rollout/logprob_max_abs_diff"] < 1e-3 for r in rows)  # the engine samples the learner's adapter
    later = load_file(out / "checkpoints" / "step_2" / "actor" / "adapter_model.safetensors")
    assert any(not torch.equal(adapter[k], later[k]) for k in adapter)  # the adapter moved
    assert not (out / "checkpoints" / "step_2" / "actor" / "model.safetensors").exists()

    _submit(address, env, job_id + "-resume", config, "--resume", "steps=3", check=True)
    assert _wait(address, job_id + "-resume", env) == "SUCCEEDED"
    rows = _rows(out)
    assert [r["step"] for r in rows] == [1, 2, 3]
    # Step 3 samples with the engine's start: the checkpoint's adapter, the one the actor resumed (no mismatch),
    # not a fresh one (which would equal the reference: a KL of 0).
    assert rows[2]["rollout/logprob_max_abs_diff"] < 1e-3 and rows[2]["actor/kl"] != 0.0


@pytest.mark.slow
def test_ray_job_submit_ppo_two_steps_then_resume(ray_head, tmp_path, tiny_model_dir):
    address, env = ray_head
    out = tmp_path / "ppo"
    config = _config(tmp_path / "ppo.json", tiny_model_dir, out)
    job_id = f"ppo-{os.getpid()}"
    proc = _submit(address, env, job_id, config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _wait(address, job_id, env) == "SUCCEEDED"
    rows = _rows(out)
    assert [r["step"] for r in rows] == [1, 2]
    _has_the_step_metrics(rows)
    assert all(r["rollout/logprob_max_abs_diff"] < 1e-3 for r in rows)  # the engines sample the learner's weights
    assert (out / "checkpoints" / "step_2" / "actor" / "config.json").is_file()
    assert (out / "checkpoints" / "step_2" / "critic" / "scalar_head.safetensors").is_file()
    assert list((out / "tensorboard").glob("events.*"))
    # Resume, asynchronous: 4 steps asked, 2 done; steps 3 and 4 run one-step off-policy (step 4's batch made by the
    # weights before step 3's update, while step 3 trained), a checkpoint after each holding the batch made ahead.
    job_id2 = job_id + "-resume"
    more = ["--resume", "steps=4", "checkpoint_every=1", "async.max_staleness=1"]
    _submit(address, env, job_id2, config, *more, check=True)
    assert _wait(address, job_id2, env) == "SUCCEEDED"
    rows = _rows(out)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert [r["async/staleness"] for r in rows[2:]] == [0, 1] and "time/generate_wait" in rows[2]
    # The buffered batch is what a resume from step 3 trains on (tests/test_ppo_loop_inprocess.py resumes from one
    # after a crash): step 4's prompts, sampled by the weights after 2 updates, with their rewards (made in the
    # background once the samples were there: the RM is frozen, so they stand for the resumed step as they are).
    assert (out / "checkpoints" / "step_3" / "buffer.pt").is_file()  # step 4's batch, made before step 3's update
    buffered = _buffered_batch(out, 3)
    assert (buffered.step, buffered.version, len(buffered.batch)) == (3, 2, 8)
    assert buffered.scores is not None and buffered.scores.shape == (8,)


@pytest.mark.slow
def test_thirty_ppo_steps_raise_the_verifier_reward(tmp_path, sft_policy_dir):
    """Seeded: RLOO with the programmatic verifier served by the reward role, on 32 problems of the arithmetic mix
    seen every step (the same prompts each step, so the reward curve is not drowned by which prompts were drawn)."""
    out = tmp_path / "ppo"
    config = _config(
        tmp_path / "ppo.json",
        sft_policy_dir,
        out,
        steps=30,
        prompts_per_step=32,
        algo={"estimator": "rloo", "kl_coef": 0.05},
        actor={"lr": 3e-4},
        rollout={"samples_per_prompt": 4, "max_new_tokens": 64},
        reward={"kind": "verifier", "rm": None},
        prompt_mix={"n": 32, "seed": 1, "math": 0.7, "multiple_choice": 0.3, "harmful": 0.0, "open_qa": 0.0},
    )
    proc = run_hrlaif("ppo", "--config", str(config), timeout=1800, RAY_ENABLE_ZERO_COPY_TORCH_TENSORS="1")
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = _rows(out)
    first = sum(r["reward/score_mean"] for r in rows[:5]) / 5
    last = sum(r["reward/score_mean"] for r in rows[-5:]) / 5
    accuracy = [sum(r["eval/batch_accuracy"] for r in part) / 5 for part in (rows[:5], rows[-5:])]
    print(f"mean verifier reward: first 5 steps {first:.3f}, last 5 steps {last:.3f}; batch accuracy {accuracy}")
    assert last > first + 0.1


@pytest.mark.slow
def test_thirty_ppo_steps_with_the_online_hybrid_reward_raise_batch_accuracy(tmp_path, sft_policy_dir):
    """The same 32 arithmetic problems and budget as the verifier-reward run above, the reward now the online hybrid
    labels of each step's groups (verifier sorts, the simulated judge ranks within the sets, labeled through the
    pool over HTTP): batch accuracy rises as it does there."""
    from hrlaif_ray.judges.launch import sim_judge_server

    out = tmp_path / "ppo"
    with sim_judge_server() as base:
        judge = {"base_url": base, "model": "gpt-3.5-turbo", "timeout_s": 30}
        config = _config(
            tmp_path / "ppo.json",
            sft_policy_dir,
            out,
            steps=30,
            prompts_per_step=32,
            algo={"estimator": "rloo", "kl_coef": 0.05},
            actor={"lr": 3e-4},
            rollout={"samples_per_prompt": 4, "max_new_tokens": 64},
            reward={
                "kind": "online",
                "rm": None,
                "labeling": {"judges": [judge], "rewriter": {**judge, "model": "gpt-4"}},
                "pool": {"labelers": 1, "concurrency": 32},
            },
            prompt_mix={"n": 32, "seed": 1, "math": 0.7, "multiple_choice": 0.3, "harmful": 0.0, "open_qa": 0.0},
        )
        proc = run_hrlaif("ppo", "--config", str(config), timeout=2400, RAY_ENABLE_ZERO_COPY_TORCH_TENSORS="1")
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = _rows(out)
    first = sum(r["eval/batch_accuracy"] for r in rows[:5]) / 5
    last = sum(r["eval/batch_accuracy"] for r in rows[-5:]) / 5
    cost = sum(r["online/judge_cost_usd"] for r in rows)
    print(
        f"batch accuracy with the online hybrid reward: first 5 steps {first:.3f}, last 5 {last:.3f}; judge ${cost:.4f}"
    )
    assert last > first + 0.05 and all(r["online/labels_failed"] == 0 for r in rows)
