"""The shipped PPO configs validate, and the GPU cluster definition provides what the 13B plan reserves."""

from pathlib import Path

import pytest
import yaml

from cluster.topology import bundles_needed
from hrlaif_ray.config import PPOJob, load_config
from hrlaif_ray.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "cluster" / "configs"


def _roles(job: PPOJob) -> tuple[str, ...]:
    return ("actor", "reference", "reward", "rollout") + (("critic",) if job.algo.estimator == "gae" else ())


@pytest.mark.parametrize(
    "name,need", [("local-tiny.yaml", None), ("smollm2-cpu.yaml", None), ("13b-8xa100.yaml", {"GPU": 8.0, "CPU": 80.0})]
)
def test_ppo_configs_reserve_one_bundle_per_replica_of_each_owning_role(name, need):
    job = load_config(PPOJob, CONFIGS / name)
    roles = _roles(job)
    owners = [r for r in roles if getattr(job.resources, r).colocate_with not in roles]
    replicas = sum(getattr(job.resources, r).replicas for r in owners)
    expected = {k: v * replicas for k, v in job.resources.bundle.items()}
    assert bundles_needed(job.resources, roles) == expected
    if need is not None:
        assert expected == need


def test_kuberay_job_matches_the_13b_plan():
    job = load_config(PPOJob, CONFIGS / "13b-8xa100.yaml")
    need = bundles_needed(job.resources, _roles(job))
    assert need == {"GPU": 8.0, "CPU": 80.0}  # the paper's 8 x A100-40G
    spec = yaml.safe_load((CONFIGS / "raycluster-8xa100.yaml").read_text())
    assert (
        spec["kind"] == "RayJob"
        and "cluster.ppo" in spec["spec"]["entrypoint"]
        and "13b-8xa100.yaml" in spec["spec"]["entrypoint"]
    )
    workers = spec["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    gpus = sum(float(w["rayStartParams"]["num-gpus"]) * w["replicas"] for w in workers)
    cpus = sum(float(w["rayStartParams"]["num-cpus"]) * w["replicas"] for w in workers)
    assert gpus >= need["GPU"] and cpus >= need["CPU"]
    for w in workers:  # the container's limits back what Ray is told
        limits = w["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert int(limits["nvidia.com/gpu"]) >= int(w["rayStartParams"]["num-gpus"])
    head = spec["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"]
    assert head["dashboard-host"] == "127.0.0.1"


def test_ppo_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="rollout.samples_per_prompt: rloo needs at least 2"):
        load_config(PPOJob, CONFIGS / "local-tiny.yaml", ["algo.estimator=rloo", "rollout.samples_per_prompt=1"])
    with pytest.raises(ConfigError, match="must split evenly"):
        load_config(PPOJob, CONFIGS / "local-tiny.yaml", ["prompts_per_step=3", "rollout.samples_per_prompt=1"])
    with pytest.raises(
        ConfigError, match="algo.micro_batch_size: 3 does not divide the 32-row mini-batch of each actor rank"
    ):
        load_config(PPOJob, CONFIGS / "local-tiny.yaml", ["algo.micro_batch_size=3"])
    with pytest.raises(ConfigError, match="reward.*a reward-model folder is required"):
        load_config(PPOJob, CONFIGS / "local-tiny.yaml", ["reward.kind=rm"])
    with pytest.raises(ConfigError, match="algo.clip"):
        load_config(PPOJob, CONFIGS / "local-tiny.yaml", ["algo.clip=-1"])
