"""The processes' runtime settings (actors/runtime.py): the warnings every run printed and that say nothing about it
are quiet, others are not, and a caller's own settings win."""

from __future__ import annotations

import warnings


def test_the_zero_copy_warnings_are_quiet_and_others_are_not():
    """Ray's serializer warns at every zero-copy tensor it sends (its own "once" filter, added when it is imported,
    goes ahead of PYTHONWARNINGS), torch at every one it reads; an unrelated warning still shows."""
    import torch
    from ray._private.tensor_serialization_utils import zero_copy_tensors_reducer

    from actors.runtime import quiet_known_warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_known_warnings()
        fn, args = zero_copy_tensors_reducer(torch.arange(4.0))
        received = fn(*args)
        warnings.warn("something else", UserWarning, stacklevel=1)
    assert received.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert [str(w.message) for w in caught] == ["something else"], [str(w.message) for w in caught]


def test_actors_get_the_quiet_warnings_and_vllms_level_and_the_callers_own_win(monkeypatch):
    from actors.runtime import QUIET, actor_env

    monkeypatch.delenv("VLLM_LOGGING_LEVEL", raising=False)
    monkeypatch.setenv("PYTHONWARNINGS", "error::DeprecationWarning")
    env = actor_env(2, vllm=True)["env_vars"]
    entries = env["PYTHONWARNINGS"].split(",")
    assert entries == ["error::DeprecationWarning", *(f"ignore:{m}" for m in QUIET)]
    assert all("," not in m and ":" not in m for m in QUIET)  # one PYTHONWARNINGS entry each
    assert env["VLLM_LOGGING_LEVEL"] == "ERROR"
    monkeypatch.setenv("VLLM_LOGGING_LEVEL", "INFO")
    monkeypatch.setenv("PYTHONWARNINGS", env["PYTHONWARNINGS"])  # added once, not again
    again = actor_env(2, vllm=True)["env_vars"]
    assert again["VLLM_LOGGING_LEVEL"] == "INFO" and again["PYTHONWARNINGS"] == env["PYTHONWARNINGS"]
    assert "VLLM_LOGGING_LEVEL" not in actor_env(1)["env_vars"]


def test_an_actors_device_is_the_gpus_it_reserved_not_the_drivers_environment(monkeypatch):
    """A `hrlaif ppo` started on a CPU head node (DS_ACCELERATOR=cpu in the driver) still gives GPU learners cuda, and
    a CPU actor on a GPU node stays on the CPU; inside an actor, the GPUs Ray assigned it decide (fake ids here)."""
    import ray

    from actors.runtime import actor_device, actor_env, placed_env
    from cluster.topology import Topology
    from hrlaif_ray.config import ResourcePlan

    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    assert actor_env(1, num_gpus=1)["env_vars"]["DS_ACCELERATOR"] == "cuda"
    engine = placed_env({"num_cpus": 2, "num_gpus": 0.5}, 2, vllm=True)["env_vars"]
    assert engine["DS_ACCELERATOR"] == "cuda" and engine["VLLM_CPU_OMP_THREADS_BIND"] == "auto"
    monkeypatch.setenv("DS_ACCELERATOR", "cuda")
    assert placed_env({"num_cpus": 1, "num_gpus": 0}, 1)["env_vars"]["DS_ACCELERATOR"] == "cpu"
    plan = ResourcePlan(bundle={"CPU": 4, "GPU": 1}, actor={"replicas": 2})
    topo = Topology.__new__(Topology)  # the options a placed role gets, without reserving the bundles
    topo.options = lambda name: [{"num_cpus": 2.0, "num_gpus": 0.5} for _ in range(plan.actor.replicas)]
    topo.role = lambda name: plan.actor
    assert {o["runtime_env"]["env_vars"]["DS_ACCELERATOR"] for o in topo.learner_options("actor")} == {"cuda"}
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [3])
    assert actor_device() == "cuda"
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [])
    assert actor_device() == "cpu"
