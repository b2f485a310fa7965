"""The broadcast weight sync (hrlaif_ray/weight_sync.py, actors/weight_sync.py).

In this process over gloo: the buckets rebuild every tensor exactly (tied ones under all their names, mixed
dtypes), the receiver drains what its consumer left so the sender never hangs, and the check catches an engine that
did not load what was sent. On a local Ray cluster: a ZeRO-3 actor of two ranks broadcasts to two vLLM engines;
afterwards the engines' log-probs match the learner's, the broadcast and the object-store paths leave the engines
with identical weights, rank 0 holds at most about a bucket during a broadcast (a whole copy of the model through
the object store), and an engine killed between syncs, or during one, rejoins and gets the weights.
"""

from __future__ import annotations

import threading

import pytest
import torch

from hrlaif_ray.weight_sync import (
    SyncGroup,
    TensorSpec,
    check,
    checksum,
    plan_buckets,
    receive,
    received_sums,
    send,
    specs_of,
)


def _pair(world: int = 2, timeout_s: float = 20.0) -> list[SyncGroup]:
    """A gloo sync group of `world` members in this process (each joined from a thread)."""
    store, port = SyncGroup.serve("127.0.0.1", world, timeout_s)
    groups: list = [None] * world

    def join(rank):
        groups[rank] = SyncGroup.join(
            "127.0.0.1", port, rank, world, 1, "gloo", timeout_s, store=store if rank == 0 else None
        )

    threads = [threading.Thread(target=join, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout_s)
    assert all(g is not None for g in groups)
    return groups


class _Tied(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(50, 16)
        self.mid = torch.nn.Linear(16, 16).to(torch.bfloat16)
        self.head = torch.nn.Linear(16, 50, bias=False)
        self.head.weight = self.embed.weight  # tied: one tensor, two names


def test_buckets_rebuild_every_tensor_exactly_and_the_check_passes():
    model = _Tied()
    specs = specs_of(model)
    assert [s.names for s in specs][0] == ("embed.weight", "head.weight")  # the tied tensor travels once
    buckets = plan_buckets(specs, bucket_bytes=1000)
    assert [[s.names[0] for s in b] for b in buckets] == [["embed.weight"], ["mid.weight", "mid.bias"]]  # 3200 B alone
    assert sum(len(b) for b in buckets) == len(specs) == 3
    sender, receiver = _pair()
    checked = frozenset({"embed.weight", "head.weight", "mid.bias"})
    out: dict = {}
    got: dict[str, torch.Tensor] = {}

    def receive_all():
        for name, t in received_sums(receive(receiver, buckets), checked, got_sums):
            got[name] = t.clone()

    got_sums: dict[str, float] = {}
    thread = threading.Thread(target=receive_all)
    thread.start()
    tensors = iter(t.detach() for t in {id(t): t for t in model.state_dict(keep_vars=True).values()}.values())
    out["sent"] = send(sender, buckets, tensors, checked)
    thread.join(20)
    state = model.state_dict()
    assert set(got) == set(state)
    for name, t in state.items():
        assert got[name].dtype == t.dtype and torch.equal(got[name], t), name
    sent = out["sent"]
    assert sent.nbytes == sum(s.nbytes for s in specs) and sent.buckets == 2
    loaded = {k: checksum(v) for k, v in state.items() if k in checked}
    assert check(sent.sums, got_sums, loaded, cast=False) == {
        "ok": True,
        "compared": 3,
        "transport_rel_diff": 0.0,
        "load_rel_diff": 0.0,
    }
    # An engine that kept its old weights fails the check, even after a small step.
    stale = dict(loaded, **{"mid.bias": loaded["mid.bias"] * (1 + 1e-6) + 1e-6})
    assert not check(sent.sums, got_sums, stale, cast=False)["ok"]


def test_the_receiver_drains_what_its_consumer_left_so_the_sender_finishes():
    specs = [TensorSpec((f"w{i}",), "torch.float32", (256,)) for i in range(6)]
    buckets = plan_buckets(specs, bucket_bytes=1024)  # one tensor a bucket: six broadcasts
    sender, receiver = _pair()

    def consume_one_then_fail():
        for _ in receive(receiver, buckets):
            raise RuntimeError("the loader failed on the first tensor")

    failed = []
    thread = threading.Thread(target=lambda: failed.append(pytest.raises(RuntimeError, consume_one_then_fail)))
    thread.start()
    sent = send(sender, buckets, iter(torch.full((256,), float(i)) for i in range(6)))
    thread.join(20)
    assert sent.buckets == 6 and failed and not thread.is_alive()


def _model_folder(root, tokenizer) -> str:
    """A ~14M-parameter Qwen2 (57 MB in fp32): big enough that a whole copy stands out from a 4 MiB bucket."""
    from hrlaif_ray.config import ModelConfig
    from hrlaif_ray.models import build_tiny_causal_lm, save_model_folder

    config = ModelConfig(hidden_size=384, num_layers=6, num_heads=6, num_kv_heads=2, intermediate_size=1536)
    return str(save_model_folder(build_tiny_causal_lm(config, tokenizer), tokenizer, root / "model"))


def test_broadcast_sync_on_ray_matches_the_learner_holds_a_bucket_and_survives_a_dead_engine(
    local_ray, tiny_tokenizer, tmp_path
):
    import ray

    from actors.learner import LearnerGroup
    from actors.rollout import RolloutActor, RolloutGroup
    from actors.runtime import actor_env
    from actors.weight_sync import BroadcastSync, ObjectStoreSync
    from cluster.topology import Topology
    from hrlaif_ray.config import LearnerConfig, ResourcePlan, RoleResources, SyncConfig
    from hrlaif_ray.data.chat import pad_token_id, prompt_token_ids
    from hrlaif_ray.ppo.experience import layout, pad_rows

    folder = _model_folder(tmp_path, tiny_tokenizer)
    plan = ResourcePlan(actor=RoleResources(replicas=2, share=0.5), rollout=RoleResources(replicas=2, threads=1))
    topo = Topology(plan, ("actor", "rollout"))
    try:
        actor = LearnerGroup(
            "actor",
            folder,
            [{**o, "runtime_env": actor_env(1, 0)} for o in topo.options("actor")],
            learner=LearnerConfig(lr=1e-2, zero_stage=3),
            micro_batch=4,
            grad_accum=1,
            threads=1,
            temperature=1.0,
        )
        engines = [
            RolloutActor.options(
                **o, runtime_env=actor_env(1, vllm=True, cache_dir=str(local_ray)), max_restarts=3
            ).remote(folder, "vllm", i, 1, 128, 0.25, 0.4)
            for i, o in enumerate(topo.options("rollout"))
        ]
        rollout = RolloutGroup(engines, timeout_s=180, restarts=3)
        sync = BroadcastSync(SyncConfig(bucket_mb=4), actor, rollout, timeout_s=180, restarts=3)
        prompts = [prompt_token_ids(tiny_tokenizer, t, 48) for t in ["Tom has 23 apples and buys 4 more.", "Hi there"]]
        pad = pad_token_id(tiny_tokenizer)

        def mismatch() -> float:
            """The largest |engine - learner| log-prob of the engines' sampled tokens (both engines sample)."""
            samples = rollout.generate(prompts, n=2, max_tokens=8, temperature=1.0, top_p=1.0, seed=0)
            batch = layout([prompts[s.prompt_index] for s in samples], [s.token_ids for s in samples], pad)
            learner = actor.logprobs(ray.put(batch), len(samples))
            return (learner - pad_rows([s.logprobs for s in samples], learner.size(1))).abs().max().item()

        def train() -> None:
            samples = rollout.generate(prompts, n=2, max_tokens=8, temperature=1.0, top_p=1.0, seed=1)
            batch = layout([prompts[s.prompt_index] for s in samples], [s.token_ids for s in samples], pad)
            old = actor.logprobs(ray.put(batch), len(batch))
            adv = torch.randn(len(batch), old.size(1)) * batch.response_mask
            train = batch.with_training(old, adv, torch.zeros_like(old), None)
            actor.train_actor(
                ray.put(train), len(batch), epochs=1, mini_batches=1, clip=0.2, dual_clip=None, entropy_coef=0.0
            )

        def greedy() -> list:
            return [(s.token_ids, s.logprobs) for s in rollout.generate(prompts, 1, 8, 0.0, 1.0, 0)]

        train()
        assert mismatch() > 1e-2  # the engines are stale until the sync
        result = sync.sync()
        after = mismatch()
        nbytes = sum(s.nbytes for s in sync.specs)
        print(f"broadcast: {result}; max |logprob diff| after {after:.2e}; model {nbytes / 2**20:.1f} MiB")
        assert after < 1e-3 and result.bytes == nbytes and result.checked > 0 and rollout.version == 1
        # Rank 0 held about a bucket (4 MiB) and one gathered tensor, not the model.
        largest = max(s.nbytes for s in sync.specs)
        assert result.peak_bytes is not None and result.peak_bytes <= 4 * 2**20 + largest + 12 * 2**20
        by_broadcast = greedy()
        stored = ObjectStoreSync(actor, rollout).sync()  # the same weights, through the object store
        assert greedy() == by_broadcast  # identical engine weights: the same greedy tokens and log-probs, exactly
        assert stored.peak_bytes >= 0.8 * nbytes  # the fallback holds a whole copy on rank 0
        print(
            f"rank 0's peak: broadcast {result.peak_bytes / 2**20:.1f} MiB, object store {stored.peak_bytes / 2**20:.1f} MiB"
        )

        # An engine that dies between syncs is restarted by Ray; the next sync forms a new group with it.
        generation = sync.generation
        ray.kill(engines[1], no_restart=False)
        train()
        result = sync.sync()
        assert sync.generation > generation and mismatch() < 1e-3 and result.checked > 0
        # One that dies during a sync: the sync is redone with it.
        train()
        threading.Timer(0.05, lambda: ray.kill(engines[0], no_restart=False)).start()
        sync.sync()
        assert mismatch() < 1e-3
        # One that dies before a generate is restored through a group of its own, then the next sync takes all.
        ray.kill(engines[0], no_restart=False)
        assert mismatch() < 1e-3
        train()
        sync.sync()
        assert mismatch() < 1e-3
        print(f"recoveries: {[(r.rank, r.what[:60]) for r in rollout.recoveries]}; generation {sync.generation}")
        assert len(rollout.recoveries) >= 2
    finally:
        topo.shutdown()


def test_a_broadcast_to_engines_on_the_actors_gpus_is_refused():
    """nccl cannot join two processes on one GPU: a GPU plan with the engines colocated with the actor must use the
    object store, and the config says so."""
    from pydantic import ValidationError

    from hrlaif_ray.config import PPOJob

    colocated = {
        "bundle": {"GPU": 1, "CPU": 4},
        "actor": {"replicas": 1, "share": 0.5},
        "rollout": {"replicas": 1, "share": 0.5, "colocate_with": "actor"},
    }
    with pytest.raises(ValidationError, match="sync.method: object_store"):
        PPOJob(policy="p", output_dir="o", resources=colocated)
    assert PPOJob(policy="p", output_dir="o", resources=colocated, sync={"method": "object_store"})
    cpu = {**colocated, "bundle": {"CPU": 1}}  # gloo has no such limit
    assert PPOJob(policy="p", output_dir="o", resources=cpu).sync.method == "broadcast"
