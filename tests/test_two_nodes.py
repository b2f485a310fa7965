"""(slow) Two Ray nodes on one machine (Ray's own `ray.cluster_utils.Cluster`, as Ray's tests do), each with its
CPUs and a custom resource naming it (`head_node`, `worker_node`):

1. `hrlaif label` with its labelers spread over both nodes; the worker node is killed mid-run: the labelers on it
   are replaced on the node left and every label is committed exactly once.
2. PPO through `ray job submit`, the plan placing the learners (actor, reference) on the head node and the rollout
   engine, the critic and the RM on the worker; the worker node is killed mid-run and a replacement node joins
   (what a cluster's autoscaler does): the run restarts its roles from the last checkpoint, finishes, and
   logs each step once; the weight sync crossed nodes through the object store (its bytes and rate per step)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import ROOT, script_env, tiny_ppo_job
from labeling_fixtures import write_label_inputs

from hrlaif_ray.data.schemas import read_records
from hrlaif_ray.judges.launch import sim_judge_server
from hrlaif_ray.metrics import read_jsonl
from hrlaif_ray.zero import free_port

pytestmark = pytest.mark.slow
WORKER = {"num_cpus": 4, "resources": {"worker_node": 4}}


@pytest.fixture
def two_nodes(short_tmp):
    from ray._common.utils import get_ray_address_file
    from ray.cluster_utils import Cluster

    tmp = short_tmp  # Ray's socket paths must stay short
    # Cluster writes the head's address into the default temp folder (/tmp/ray), which it never creates: on a
    # machine where no Ray has run with its default temp folder, that is a FileNotFoundError.
    Path(get_ray_address_file(None)).parent.mkdir(parents=True, exist_ok=True)
    dash = free_port()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 4,
            "resources": {"head_node": 4},
            "include_dashboard": True,
            "dashboard_host": "127.0.0.1",
            "dashboard_port": dash,
            "temp_dir": str(tmp),
        },
    )
    worker = cluster.add_node(**WORKER)
    cluster.wait_for_nodes()
    try:
        yield cluster, worker, f"http://127.0.0.1:{dash}", tmp
    finally:
        cluster.shutdown()


def _env(cluster, tmp: Path) -> dict:
    env = script_env(tmp, RAY_ADDRESS=cluster.address)
    env["PATH"] = f"{ROOT / '.venv/bin'}{os.pathsep}{env['PATH']}"
    return env


def _wait_for(predicate, timeout_s: float, what: str, proc=None) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the process ended first ({proc.returncode})")
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:.0f} s"
        time.sleep(0.5)


def test_two_nodes_lose_the_worker_during_labeling_and_during_ppo(two_nodes, tmp_path, tiny_model_dir):
    cluster, worker, dashboard, tmp = two_nodes
    env = _env(cluster, tmp)

    # 1. Labeling: 6 labelers spread over the two nodes; the worker node dies while they label.
    prompts, rollouts = write_label_inputs(tmp_path, 300, seed=3)
    out = tmp_path / "labels"
    with sim_judge_server(["latency_ms=120"]) as base:
        judge = {"base_url": base, "model": "gpt-3.5-turbo", "timeout_s": 5.0, "max_retries": 8}
        job = {
            "prompts": str(prompts),
            "rollouts": str(rollouts),
            "output_dir": str(out),
            "labeling": {"judges": [judge], "rewriter": {**judge, "model": "gpt-4"}},
            "pool": {"labelers": 6, "concurrency": 4, "shard_size": 20, "spread": True, "num_cpus_per_labeler": 0.5},
        }
        config = tmp_path / "label.json"
        config.write_text(json.dumps(job))
        proc = subprocess.Popen(
            [sys.executable, "-m", "cluster.cli", "label", "--config", str(config), "--no-progress"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        _wait_for(lambda: len(list(out.glob("labels-*.parquet"))) >= 2, 180, "two label shards", proc)
        cluster.remove_node(worker, allow_graceful=False)  # its labelers die with it
        stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    summary = json.loads(stdout.strip().splitlines()[-1])
    rows = [label for s in sorted(out.glob("labels-*.parquet")) for label in read_records(s, "labels")]
    keys = Counter(label.idempotency_key for label in rows)
    assert len(keys) == 300 and max(keys.values()) == 1, "a lost or duplicated label"
    assert all(label.status == "ok" for label in rows)
    assert summary["requeued"] > 0, summary  # the dead labelers' work went back to the queue and was redone

    # 2. PPO through `ray job submit`, across the two nodes; a replacement worker node joins after the kill.
    worker = cluster.add_node(**WORKER)
    cluster.wait_for_nodes()
    ppo_out = tmp_path / "ppo"
    on_head, on_worker = {"CPU": 1, "head_node": 1}, {"CPU": 1, "worker_node": 1}
    resources = {
        "actor": {"bundle": on_head},
        "critic": {"bundle": on_worker},
        "rollout": {"bundle": on_worker},
    }
    ppo = tiny_ppo_job(
        tiny_model_dir,
        ppo_out,
        steps=6,
        checkpoint_every=1,
        logging={"tensorboard": False},
        resources=resources,
        faults={"call_timeout_s": 120},
    )
    config = tmp_path / "ppo.json"
    config.write_text(json.dumps(ppo))
    job_id = f"ppo2n-{os.getpid()}"
    submit = [str(ROOT / ".venv/bin/ray"), "job", "submit", "--address", dashboard, "--working-dir", str(ROOT)]
    submit += [
        "--submission-id",
        job_id,
        "--no-wait",
        "--",
        sys.executable,
        "-m",
        "cluster.ppo",
        "--config",
        str(config),
    ]
    done = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = ppo_out / "metrics.jsonl"
    from ray.job_submission import JobSubmissionClient

    jobs = JobSubmissionClient(dashboard)

    def two_steps() -> bool:
        status = str(jobs.get_job_status(job_id))
        assert not status.endswith(("FAILED", "STOPPED")), jobs.get_job_logs(job_id)[-4000:]
        return metrics.is_file() and len(metrics.read_text().splitlines()) >= 2

    _wait_for(two_steps, 400, "two PPO steps")
    dead = worker.node_id[:8]
    cluster.remove_node(worker, allow_graceful=False)  # the rollout engine, the critic and the RM die with it
    time.sleep(3)
    cluster.add_node(**WORKER)  # the replacement node
    status = _job_status(dashboard, job_id, env, 600)
    assert status == "SUCCEEDED", status
    steps = read_jsonl(metrics)
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5, 6]
    events = read_jsonl(ppo_out / "faults.jsonl")
    resumed = [e for e in events if e["event"] == "resumed"]
    assert resumed and dead in resumed[0]["node"] and resumed[0]["role"] in ("rollout", "critic", "reward"), events
    assert all(r["sync/bytes"] > 0 and r["sync/gb_per_s"] > 0 for r in steps)
    final = json.loads((ppo_out / "final.json").read_text())
    (tmp_path.parent / "two_nodes_result.json").write_text(
        json.dumps(
            {
                "labels": {k: summary[k] for k in ("labeled", "requeued", "seconds", "max_actors")},
                "ppo": {"faults": final["faults"], "events": events},
                "sync": [{k: r[k] for k in ("step", "time/sync", "sync/bytes", "sync/gb_per_s")} for r in steps],
            }
        )
    )


def _job_status(address: str, job_id: str, env: dict, timeout_s: float) -> str:
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(address)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = str(client.get_job_status(job_id)).split(".")[-1]
        if status == "SUCCEEDED":
            return status
        if status in ("FAILED", "STOPPED"):
            return f"{status}: {client.get_job_logs(job_id)[-6000:]}"
        time.sleep(2)
    return "TIMEOUT"
