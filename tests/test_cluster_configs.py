"""The shipped PPO configs validate, and the GPU cluster definition provides what the 13B plan reserves."""

import re
from pathlib import Path

import pytest
import yaml

from cluster.topology import bundles_needed
from hrlaif_ray.config import PPOJob, load_config
from hrlaif_ray.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "cluster" / "configs"


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
    docs = list(yaml.safe_load_all((CONFIGS / "raycluster-8xa100.yaml").read_text()))
    (spec,) = [d for d in docs if d["kind"] == "RayJob"]
    claims = {d["metadata"]["name"]: d["spec"]["accessModes"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
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
    # the dashboard: reachable through the head's Service inside the cluster, which is not exposed outside it
    head = spec["spec"]["rayClusterSpec"]["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0" and head["serviceType"] == "ClusterIP"
    # every pod: the Dockerfile's image, and each of the config's paths on a volume mounted there
    pods = [head["template"]["spec"]] + [w["template"]["spec"] for w in workers]
    version = re.search(r'^version = "(.+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    dockerfile = (ROOT / "Dockerfile").read_text()
    ray_pin = re.search(r'"ray\[default,serve\]==(.+?)"', (ROOT / "pyproject.toml").read_text()).group(1)
    assert f"FROM rayproject/ray:{ray_pin}-py311-gpu" in dockerfile and '".[gpu,tracking]"' in dockerfile
    assert spec["spec"]["rayClusterSpec"]["rayVersion"] == ray_pin
    entry = spec["spec"]["entrypoint"].split("--config ")[1]
    assert "WORKDIR /app" in dockerfile and "COPY --chown=ray:users cluster cluster" in dockerfile
    assert (ROOT / Path(entry).relative_to("/app")).is_file()
    paths = {"policy": job.policy, "critic_init": job.critic_init, "reward.rm": job.reward.rm}
    paths |= {"prompts": job.prompts, "output_dir": job.output_dir}
    for pod in pods:
        (container,) = pod["containers"]
        assert container["image"] == f"hrlaif-ray:{version}"
        claim_of = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
        for key, path in paths.items():
            mounts = [m for m in container["volumeMounts"] if Path(path).is_relative_to(m["mountPath"])]
            assert mounts, f"{key}: {path} is on no volume of {container['name']}"
            assert claim_of[mounts[0]["name"]] in claims
            if key == "output_dir":  # written on the worker, read on the head: one folder for both
                assert not mounts[0].get("readOnly") and claims[claim_of[mounts[0]["name"]]] == ["ReadWriteMany"]


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


def test_the_run_refuses_an_output_dir_that_the_checkpoint_writer_does_not_see(tmp_path):
    from cluster.storage import check_shared_folder
    from hrlaif_ray.errors import HrlaifError

    def local(path: str) -> dict:  # rank 0 on the driver's machine: the same folder
        p = Path(path)
        return {"node": "10.0.0.1 (aaaa)", "path": path, "text": p.read_text() if p.is_file() else None}

    check_shared_folder(tmp_path / "ppo", local)
    assert not list((tmp_path / "ppo").iterdir())  # the probe is gone

    def elsewhere(path: str) -> dict:  # rank 0 on a node whose /checkpoints is its own local disk
        mine = Path(path.replace(str(tmp_path / "ppo"), str(tmp_path / "node-2")))
        return {"node": "10.0.0.2 (bbbb)", "path": str(mine), "text": mine.read_text() if mine.is_file() else None}

    with pytest.raises(HrlaifError) as err:
        check_shared_folder(tmp_path / "ppo", elsewhere)
    message = str(err.value)
    assert str(tmp_path / "ppo" / ".hrlaif-probe-") in message and str(tmp_path / "node-2") in message
    assert "10.0.0.2 (bbbb) finds no such file" in message and "storage every node mounts" in message
