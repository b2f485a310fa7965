"""PPO's Ray roles on a local cluster: a vLLM rollout engine and a 2-rank DeepSpeed actor learner in placement
groups. After an update and an object-store weight sync, vLLM's logprobs of its sampled tokens equal the
learner's; the topology honours colocation."""

import pytest
import ray
import torch

from hrlaif_ray.config import LearnerConfig, ResourcePlan, RoleResources
from hrlaif_ray.data.chat import pad_token_id, prompt_token_ids


def test_weight_sync_makes_vllm_logprobs_match_the_learner(local_ray, tiny_model_dir):
    from transformers import AutoTokenizer

    from actors.learner import LearnerGroup
    from actors.rollout import RolloutActor, RolloutGroup
    from actors.runtime import actor_env
    from cluster.topology import Topology
    from hrlaif_ray.ppo.experience import layout, pad_rows

    plan = ResourcePlan(actor=RoleResources(replicas=2, share=0.5), rollout=RoleResources(threads=2))
    topo = Topology(plan, ("actor", "rollout"))
    try:
        tok = AutoTokenizer.from_pretrained(tiny_model_dir)
        folder = str(tiny_model_dir)
        options = [{**o, "runtime_env": actor_env(1, 0)} for o in topo.options("actor")]
        actor = LearnerGroup(
            "actor",
            folder,
            options,
            learner=LearnerConfig(lr=1e-2, zero_stage=2),
            micro_batch=2,
            grad_accum=2,
            threads=1,
            temperature=0.8,
        )
        engine = RolloutActor.options(
            **topo.options("rollout")[0], runtime_env=actor_env(2, vllm=True, cache_dir=str(local_ray))
        ).remote(folder, "vllm", 0, 2, 256, 1.0, 0.4)
        rollout = RolloutGroup([engine])
        prompts = [
            prompt_token_ids(tok, t, 64)
            for t in ["Tom has 23 apples and buys 4 more. How many apples now?", "How do I keep a plant healthy?"]
        ]
        kw = dict(n=4, max_tokens=12, temperature=0.8, top_p=1.0)

        def compare(seed):
            samples = rollout.generate(prompts, seed=seed, **kw)
            batch = layout(
                [prompts[s.prompt_index] for s in samples], [s.token_ids for s in samples], pad_token_id(tok)
            )
            learner = actor.logprobs(ray.put(batch), len(samples))
            vllm = pad_rows([s.logprobs for s in samples], learner.size(1))
            return batch, (learner - vllm).abs().max().item(), learner

        batch, before, learner = compare(0)
        assert before < 1e-3, before
        # One update with made-up advantages moves the weights; vLLM is now stale until the sync.
        B = len(batch)
        train = batch.with_training(
            learner, torch.randn(B, learner.size(1)) * batch.response_mask, torch.zeros(B, learner.size(1)), None
        )
        ref = ray.put(train)
        actor.train_actor(ref, B, epochs=1, mini_batches=1, clip=0.2, dual_clip=None, entropy_coef=0.0)
        _, stale, _ = compare(1)
        assert stale > 1e-2, f"the update did not change the policy enough to test the sync ({stale})"
        times = rollout.update_weights(actor.weights_ref())
        _, after, _ = compare(2)
        print(
            f"max |logprob diff|: before {before:.2e}, stale {stale:.2e}, after sync {after:.2e}; reload {times[0]:.3f} s"
        )
        assert after < 1e-3, after
    finally:
        topo.shutdown()


def test_topology_colocates_and_validates(local_ray):
    from cluster.topology import Topology, bundles_needed

    plan = ResourcePlan(
        bundle={"CPU": 1},
        actor=RoleResources(replicas=2, share=0.5),
        reference=RoleResources(replicas=2, share=0.5, colocate_with="actor"),
    )
    topo = Topology(plan, ("actor", "reference"))
    try:
        assert set(topo.groups) == {"actor"}  # the reference owns no bundles
        a, r = topo.options("actor"), topo.options("reference")
        assert [o["num_cpus"] for o in a + r] == [0.5] * 4
        assert [o["scheduling_strategy"].placement_group_bundle_index for o in r] == [0, 1]
        assert r[0]["scheduling_strategy"].placement_group.id == a[0]["scheduling_strategy"].placement_group.id
    finally:
        topo.shutdown()
    assert bundles_needed(ResourcePlan(bundle={"GPU": 1, "CPU": 8})) == {
        "GPU": 6.0,
        "CPU": 48.0,
    }  # 2 actor + critic + reference + reward + rollout
    with pytest.raises(ValueError, match="colocated shares sum to 1.5"):
        ResourcePlan(
            actor=RoleResources(replicas=2), reference=RoleResources(replicas=2, share=0.5, colocate_with="actor")
        )
    with pytest.raises(ValueError, match="exceeds actor.replicas"):
        ResourcePlan(
            actor=RoleResources(replicas=1, share=0.5),
            reference=RoleResources(replicas=2, share=0.5, colocate_with="actor"),
        )
    # A plan the cluster cannot place: one error, within the timeout, naming the role, the bundles and what is free;
    # nothing stays reserved.
    big = ResourcePlan(bundle={"CPU": 1}, actor=RoleResources(replicas=1), rollout=RoleResources(replicas=50))
    with pytest.raises(
        RuntimeError, match=r"role\(s\) rollout: asked for rollout: 50 x \{'CPU': 1.0\}.*free resources"
    ):
        Topology(big, ("actor", "rollout"), timeout_s=3)
    assert not any(pg["state"] == "CREATED" for pg in ray.util.placement_group_table().values())


def test_sample_writes_rollouts_and_resumes(local_ray, tiny_model_dir, tmp_path):
    from cluster.sample import SampleJob, run_sample
    from hrlaif_ray.config import PromptMixConfig
    from hrlaif_ray.data.prompt_mix import generate_prompt_mix
    from hrlaif_ray.data.schemas import read_records, write_records

    prompts = generate_prompt_mix(PromptMixConfig(n=6, seed=2))
    write_records(tmp_path / "prompts.parquet", prompts[:4])
    job = SampleJob(
        policy=str(tiny_model_dir),
        prompts=str(tmp_path / "prompts.parquet"),
        output=str(tmp_path / "rollouts.parquet"),
        # the HF engine: vLLM's is the weight-sync test's, and this run starts an engine twice
        rollout={"backend": "hf", "samples_per_prompt": 3, "max_new_tokens": 8, "max_model_len": 256},
        chunk=3,
    )
    assert run_sample(job)["sampled"] == 4
    rollouts = read_records(tmp_path / "rollouts.parquet", "rollouts")
    assert [r.prompt_id for r in rollouts] == [p.id for p in prompts[:4]]
    assert all(
        len(r.responses) == 3 and len(r.responses[0].token_ids) == 8 == len(r.responses[0].logprobs) for r in rollouts
    )
    write_records(tmp_path / "prompts.parquet", prompts)  # two more prompts: only they are sampled
    result = run_sample(job)
    assert (result["sampled"], result["already"]) == (2, 4)
    assert len(read_records(tmp_path / "rollouts.parquet", "rollouts")) == 6
