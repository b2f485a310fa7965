"""Faults during PPO: every controller call is bounded and names the role, rank and node; actors Ray restarts in
place redo their work; a run whose roles are killed at random (`faults.chaos`) finishes with every step logged
once, restarting in place or from its checkpoint (`faults.max_failures`). (slow) the same over 20 steps with
every role, vLLM engines and the critic."""

from __future__ import annotations

import json
import os
import time

import pytest
import ray
from conftest import merged, tiny_ppo_job
from fault_workers import Worker
from tracking_readers import mlflow_run, wandb_run

from actors.calls import (
    Member,
    Recovery,
    RoleFailure,
    failure,
    gather,
    gather_restarting,
    wait_ready,
)
from hrlaif_ray.metrics import read_jsonl


def _members(n: int, restarts: int = 0) -> list[Member]:
    members = [Member("reward", i, Worker.options(num_cpus=0, max_restarts=restarts).remote()) for i in range(n)]
    wait_ready(members, 60)
    return members


def test_gather_names_the_role_rank_and_node_of_a_hang_an_error_and_a_death(local_ray):
    members = _members(2)
    assert all("(" in m.node for m in members)  # ip (node id)
    assert gather(members, [m.handle.work.remote(i) for i, m in enumerate(members)], 30) == [0, 10]
    t0 = time.monotonic()
    with pytest.raises(RoleFailure) as hung:
        gather(members, [members[0].handle.work.remote(1), members[1].handle.work.remote(2, delay=30)], 1.5)
    assert time.monotonic() - t0 < 10 and hung.value.rank == 1 and hung.value.role == "reward"
    assert "no answer after 2 s" in str(hung.value) and members[1].node in str(hung.value) and hung.value.hung
    ray.kill(members[1].handle)  # still sleeping: a fresh pair for the rest
    members = _members(2)
    with pytest.raises(RoleFailure) as raised:
        gather(members, [members[0].handle.work.remote(1, fail=True), members[1].handle.work.remote(2)], 30)
    assert not raised.value.restartable and "ValueError: bad input 1" in str(raised.value)
    # A dead rank is reported at once, while its peer is still busy (as a peer waiting in a collective would be).
    t0 = time.monotonic()
    with pytest.raises(RoleFailure) as died:
        gather(members, [members[0].handle.work.remote(1, delay=20), members[1].handle.work.remote(2, die=True)], 60)
    assert time.monotonic() - t0 < 15 and died.value.rank == 1 and died.value.restartable and not died.value.hung
    assert "the actor died" in str(died.value)
    died.value.step = 7
    assert str(died.value).startswith(f"reward rank 1 on node {members[1].node} at step 7: the actor died")
    for m in members:
        ray.kill(m.handle)


def test_gather_restarting_redoes_the_work_of_a_restarted_actor_and_stops_when_out_of_restarts(local_ray):
    members = _members(2, restarts=1)
    recoveries: list[Recovery] = []
    first = ray.get(members[1].handle.pid.remote())
    calls = []

    def call(m: Member):
        calls.append(m.rank)
        return m.handle.work.remote(m.rank, die=(m.rank == 1 and len(calls) == 2))

    assert gather_restarting(members, call, 60, 3, recoveries) == [0, 10]
    assert calls == [0, 1, 1] and [(r.role, r.rank) for r in recoveries] == [("reward", 1)]
    assert ray.get(members[1].handle.pid.remote()) != first  # a new process
    with pytest.raises(RoleFailure) as exc:  # its one Ray restart is spent: it dies for good
        gather_restarting(members, lambda m: m.handle.work.remote(m.rank, die=m.rank == 1), 60, 3, recoveries)
    assert exc.value.rank == 1
    for m in members:
        ray.kill(m.handle)


def test_a_role_out_of_memory_is_told_which_setting_to_lower():
    from ray.exceptions import ActorDiedError, OutOfMemoryError

    oom = OutOfMemoryError("Task was killed due to the node running low on memory. Memory on the node was 23 GB.")
    msg = str(failure(Member("actor", 1, None, "10.0.0.2 (ab12cd34)"), oom))
    assert (
        msg.startswith("actor rank 1 on node 10.0.0.2 (ab12cd34): ran out of memory") and "algo.micro_batch_size" in msg
    )
    torch_oom = RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")
    assert "rollout.kv_cache_gib" in str(failure(Member("rollout", 0, None), torch_oom))
    died = str(failure(Member("critic", 0, None), ActorDiedError()))
    assert "the actor died" in died and "memory" not in died


def _chaos_job(tmp_path, policy, **changes) -> dict:
    """The tiny job (`tiny_ppo_job`) over 4 steps, a checkpoint after each, chaos on the rollout and an actor rank."""
    chaos = {"every": 2, "roles": ["rollout", "actor"], "delay_s": 0.05}  # well inside a step, even the last
    job = tiny_ppo_job(
        policy,
        tmp_path / "ppo",
        steps=4,
        checkpoint_every=1,
        logging={"tensorboard": False},
        faults={"call_timeout_s": 300, "chaos": chaos},
    )
    return merged(job, changes)


def _check_every_step_once(out, steps: int) -> tuple[list[dict], list[dict]]:
    rows = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, steps + 1))
    events = read_jsonl(out / "faults.jsonl")
    return rows, events


def test_chaos_kills_a_rollout_engine_and_an_actor_rank_and_the_run_finishes_with_each_step_once(
    local_ray, tmp_path, tiny_model_dir
):
    from cluster.ppo import run_ppo
    from hrlaif_ray.config import PPOJob

    # seed 9 draws the rollout engine at step 2 and an actor rank at step 4 (chaos is seeded)
    mlflow = {
        "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db",
        "experiment": "chaos",
        "artifact_location": str(tmp_path),
    }
    logging = {"tensorboard": False, "wandb": {"project": "chaos", "mode": "offline"}, "mlflow": mlflow, "name": "ppo"}
    job = _chaos_job(
        tmp_path, tiny_model_dir, algo={"estimator": "rloo"}, faults={"chaos": {"seed": 9}}, logging=logging
    )
    job["reward"] = {"kind": "verifier"}  # RLOO and the verifier: no critic, no RM, fewer actors (the slow run has all)
    job["resources"] = {k: v for k, v in job["resources"].items() if k not in ("critic", "reward")}
    job = PPOJob.model_validate(job)
    stale = tmp_path / "ppo" / "checkpoints" / "step_99"  # an earlier run's, in the same folder: never resumed from
    stale.mkdir(parents=True)
    (stale / "state.json").write_text(json.dumps({"step": 99, "kl_coef": 0.0}))
    result = run_ppo(job)
    rows, events = _check_every_step_once(tmp_path / "ppo", 4)
    injected = [e for e in events if e["event"] == "injected"]
    assert [(e["step"], e["role"]) for e in injected] == [(2, "rollout"), (4, "actor")], events
    restarted = [e for e in events if e["event"] == "restarted"]
    resumed = [e for e in events if e["event"] == "resumed"]
    assert [(e["role"], e["rank"]) for e in restarted] == [("rollout", 0)], events  # reloaded and resampled in place
    # counted in the metrics of the step that found the engine dead (2, or 3 when step 2's samples were in first)
    assert [r["step"] for r in rows if r["faults/restarts"]] == [restarted[0]["step"]] and restarted[0]["step"] in (
        2,
        3,
    )
    assert len(resumed) == 1 and resumed[0]["role"] == "actor" and resumed[0]["from_step"] == 3, events
    assert resumed[0]["failed_step"] == 4 and "the actor died" in resumed[0]["what"]
    assert result["faults"] == {
        "injected": 2,
        "restarted_in_place": 1,
        "resumed_from_checkpoint": 1,
        "steps_redone": 1,
    }
    assert (tmp_path / "ppo" / "checkpoints" / "step_4" / "actor" / "config.json").is_file()
    assert result["checkpoint"].endswith("step_4")
    # the trackers got every step once, under the JSONL's names, through the restart from the checkpoint
    keys = {k for r in rows for k in r} - {"step"}
    ml = mlflow_run(mlflow["tracking_uri"], "chaos", "ppo")
    assert {k for k in ml["metrics"] if not k.startswith("final/")} == keys and ml["status"] == "FINISHED"
    steps = {k: sorted(s for s, _ in ml["metrics"][k]) for k in keys}
    assert all(steps[k] == [r["step"] for r in rows if k in r] for k in keys), (steps, rows)
    assert ml["metrics"]["reward/score_mean"] == [(r["step"], pytest.approx(r["reward/score_mean"])) for r in rows]
    assert sorted(ml["artifacts"]) == ["config.json", "results/final.json", "results/ppo_config.yaml"]
    wb = wandb_run(tmp_path / "ppo")
    assert [h["_step"] for h in wb["history"]] == [1, 2, 3, 4] and wb["exit_code"] == 0
    assert {k for h in wb["history"] for k in h if not k.startswith("_")} == keys


@pytest.mark.slow
def test_twenty_steps_with_a_role_killed_every_three_steps(local_ray, tmp_path, tiny_model_dir):
    """Every role may be killed (rollout, reward, reference, critic, an actor rank), vLLM engines."""
    from cluster.ppo import run_ppo
    from hrlaif_ray.config import PPOJob

    job = _chaos_job(
        tmp_path,
        tiny_model_dir,
        steps=20,
        checkpoint_every=2,
        rollout={"backend": "vllm", "max_model_len": 256},
        faults={
            "max_failures": 6,
            "chaos": {"every": 3, "roles": ["rollout", "reward", "reference", "critic", "actor"], "seed": 0},
        },
    )
    result = run_ppo(PPOJob.model_validate(job))
    rows, events = _check_every_step_once(tmp_path / "ppo", 20)
    print(json.dumps(result["faults"]))
    assert result["faults"]["injected"] == 6
    kinds = {e["role"] for e in events if e["event"] == "injected"}
    assert len(kinds) >= 3, events
    (tmp_path.parent / "chaos_result.json").write_text(json.dumps({"faults": result["faults"], "events": events}))


def test_an_engine_restarted_between_steps_gets_the_synced_weights_before_it_samples(local_ray, tiny_model_dir):
    """Killed while idle, the engine comes back with the weights it started from; the next generate finds it out
    (the weights version it expects) and reloads the synced weights before sampling."""
    import torch
    from transformers import AutoModelForCausalLM

    from actors.rollout import RolloutActor, RolloutGroup

    engine = RolloutActor.options(num_cpus=0, max_restarts=1).remote(str(tiny_model_dir), "hf", 0, 1)
    group = RolloutGroup([engine], timeout_s=120, restarts=2)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    state = {k: (v * 1.5 if "mlp" in k else v).contiguous() for k, v in model.state_dict().items()}  # other weights
    prompts = [[5, 6, 7, 8], [9, 10, 11]]
    before = group.generate(prompts, 1, 6, 0.0, 1.0, 0)
    group.update_weights(ray.put(state))
    synced = group.generate(prompts, 1, 6, 0.0, 1.0, 0)
    assert [s.token_ids for s in synced] != [s.token_ids for s in before]  # the new weights sample otherwise
    pid = ray.get(engine.__ray_call__.remote(lambda self: os.getpid()))
    ray.kill(engine, no_restart=False)
    deadline = time.monotonic() + 120
    while True:  # until Ray has restarted it (a new process), with no call of ours in between
        try:
            if ray.get(engine.__ray_call__.remote(lambda self: os.getpid()), timeout=10) != pid:
                break
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError, ray.exceptions.GetTimeoutError):
            pass
        assert time.monotonic() < deadline, "the engine was not restarted"
        time.sleep(0.2)
    again = group.generate(prompts, 1, 6, 0.0, 1.0, 0)
    assert [s.token_ids for s in again] == [s.token_ids for s in synced]
    assert len(group.recoveries) == 1, group.recoveries
    assert torch.allclose(torch.tensor(again[0].logprobs), torch.tensor(synced[0].logprobs), atol=1e-5)
    ray.kill(engine)


def test_the_command_reports_a_role_that_died_for_good_in_one_line_with_status_1(monkeypatch, capsys, tiny_model_dir):
    import cluster.ppo.run
    from cluster.cli import main

    def dies(job):
        raise RoleFailure("critic", 0, "10.0.0.3 (0badc0de)", "the actor died (node lost)", step=12)

    monkeypatch.setattr(cluster.ppo.run, "run_ppo", dies)
    assert main(["ppo", f"policy={tiny_model_dir}", "output_dir=o"]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == "hrlaif ppo: error: critic rank 0 on node 10.0.0.3 (0badc0de) at step 12: the actor died (node lost)"
