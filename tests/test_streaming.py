"""Rewards as samples finish (`rollout.stream`): the rollout engines hand each prompt's group on as soon as its n
samples are done, and the reward takes it then.

- A reward's stream gives what scoring the whole batch gives, whatever order the groups come in (the verifier
  through `Gathered`, and a weighted sum of streams).
- The online reward's stream labels groups while more are still to come, and ends with the rewards of a whole-batch
  labeling (the simulated judge over loopback HTTP).
- Streamed samples are the samples of `generate` (fresh engines, the same seeds), and an engine that dies before
  its stream is restarted and its prompts sampled again.
- (slow) A PPO run with streaming gives the batch and the rewards of one without, step by step (the online reward);
  in `make test` the in-process loop's tests stream their groups out of order.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest
import torch

from hrlaif_ray.config import LabelingConfig, PoolConfig, PromptMixConfig
from hrlaif_ray.data.prompt_mix import generate_prompt_mix
from hrlaif_ray.judges.launch import sim_judge_server
from hrlaif_ray.reward.interface import Completions, VerifierReward, WeightedSum, joined, stream_of


def _groups(n_prompts: int = 6, k: int = 4) -> list[Completions]:
    prompts = generate_prompt_mix(PromptMixConfig(n=n_prompts, seed=4, math=1.0, multiple_choice=0.0, harmful=0.0))
    out = []
    for p in prompts:
        texts = [f"The answer is {p.answer}." if i % 2 == 0 else "The answer is 12345." for i in range(k)]
        out.append(Completions([p] * k, texts, None, k))
    return out


def test_a_streamed_reward_is_the_whole_batchs_reward_whatever_the_order():
    groups = _groups()
    whole = joined(groups, 4)
    verifier, total = VerifierReward(), WeightedSum([("a", 1.0, VerifierReward()), ("b", 0.5, VerifierReward())])
    for reward in (verifier, total):
        stream = stream_of(reward, len(groups), 4)
        for i in reversed(range(len(groups))):
            stream.add(i, groups[i])
        assert torch.equal(stream.result().scores, reward.score(whole).scores)
    assert torch.equal(total.score(whole).scores, 1.5 * verifier.score(whole).scores)
    stream = stream_of(verifier, 2, 4)
    stream.add(1, groups[1])
    with pytest.raises(ValueError, match=r"groups \[0\] were never added"):
        stream.result()


def test_the_online_stream_labels_groups_as_they_come_and_gives_the_batchs_rewards(tmp_path, local_ray):
    from actors.online_reward import OnlineReward

    groups = _groups(8)
    with sim_judge_server() as base:
        judge = {"base_url": base, "model": "gpt-3.5-turbo", "timeout_s": 10}
        labeling = LabelingConfig(judges=[judge], rewriter={**judge, "model": "gpt-4"})
        billing = base.replace("/v1", "/billing")
        streamed = OnlineReward(labeling, PoolConfig(labelers=1, concurrency=4), tmp_path / "streamed")
        whole = OnlineReward(labeling, PoolConfig(labelers=1, concurrency=4), tmp_path / "whole")
        try:
            stream = streamed.stream(len(groups), 4)
            for i in (5, 1, 7, 0):
                stream.add(i, groups[i])
            deadline = time.monotonic() + 30  # the judge is asked before the batch is complete
            while httpx.get(billing).json().get("requests", 0) == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert httpx.get(billing).json().get("requests", 0) > 0
            for i in (3, 6, 2, 4):
                stream.add(i, groups[i])
            got = stream.result()
            expected, info = whole.rewards([g.groups()[0] for g in groups])
        finally:
            streamed.shutdown()
            whole.shutdown()
    assert got.scores.tolist() == pytest.approx([r for group in expected for r in group])
    assert got.info["online/labels"] == info["online/labels"] == 8 and got.info["online/labels_failed"] == 0


def test_streamed_samples_are_generates_and_a_dead_engine_is_redone(local_ray, tiny_model_dir, tiny_tokenizer):
    import ray

    from actors.rollout import RolloutActor, RolloutGroup
    from actors.runtime import actor_env
    from hrlaif_ray.data.chat import prompt_token_ids

    folder = str(tiny_model_dir)

    def engines():
        return [
            RolloutActor.options(
                num_cpus=0.5, runtime_env=actor_env(1, vllm=True, cache_dir=str(local_ray)), max_restarts=2
            ).remote(folder, "vllm", i, 1, 128, 0.25, 0.4)
            for i in range(2)
        ]

    prompts = [prompt_token_ids(tiny_tokenizer, f"Tom has {a} apples and buys {a + 3} more.", 48) for a in range(5)]
    args = (prompts, 3, 10, 1.0, 1.0, 0)
    plain, streamed = RolloutGroup(engines(), timeout_s=120), RolloutGroup(engines(), timeout_s=120, restarts=2)
    try:
        expected = plain.generate(*args)
        order, got = [], {}
        for i, samples in streamed.generate_groups(*args):
            order.append(i)
            got[i] = samples
        assert sorted(order) == list(range(5))
        flat = [s for i in range(5) for s in got[i]]
        assert [(s.prompt_index, s.token_ids, s.logprobs) for s in flat] == [
            (s.prompt_index, s.token_ids, s.logprobs) for s in expected
        ]
        # An engine that died is restarted by Ray; its prompts are sampled again, whole.
        ray.kill(streamed.members[1].handle, no_restart=False)
        again = dict(streamed.generate_groups(*args))
        assert sorted(again) == list(range(5)) and all(len(v) == 3 for v in again.values())
        assert all(s.prompt_index == i for i, v in again.items() for s in v)
        assert len(streamed.recoveries) == 1 and streamed.recoveries[0].rank == 1
    finally:
        for m in plain.members + streamed.members:
            ray.kill(m.handle)


@pytest.mark.slow  # 2.5 min; streaming is off by default, and its engines and rewards are tested above
def test_a_streamed_ppo_run_is_the_unstreamed_one_step_by_step(local_ray, tmp_path, tiny_model_dir):
    """The online reward, 2 steps of 4 prompts x 4 samples: with `rollout.stream` on and off, every step's rewards,
    lengths, accuracy and KL agree, and so do the labels made."""
    from cluster.ppo import run_ppo
    from hrlaif_ray.config import PPOJob

    rows = {}
    with sim_judge_server() as base:
        judge = {"base_url": base, "model": "gpt-3.5-turbo", "timeout_s": 30}
        for stream in (False, True):
            out = tmp_path / f"stream-{stream}"
            job = PPOJob(
                policy=str(tiny_model_dir),
                output_dir=str(out),
                steps=2,
                prompts_per_step=4,
                seed=3,
                logging={"tensorboard": False},
                algo={"estimator": "rloo", "use_rollout_logprobs": True},
                actor={"lr": 1e-3},
                rollout={"samples_per_prompt": 4, "max_new_tokens": 12, "max_model_len": 128, "stream": stream},
                reward={
                    "kind": "online",
                    "rm": None,
                    "labeling": {"judges": [judge], "rewriter": {**judge, "model": "gpt-4"}},
                    "pool": {"labelers": 1, "concurrency": 8},
                },
                prompt_mix={"n": 16, "seed": 2, "math": 0.7, "multiple_choice": 0.3, "harmful": 0.0, "open_qa": 0.0},
                resources={
                    "bundle": {"CPU": 1},
                    "actor": {"replicas": 1, "share": 0.5},
                    "reference": {"replicas": 1, "share": 0.5, "colocate_with": "actor"},
                    "rollout": {"replicas": 2, "share": 0.5},
                },
            )
            run_ppo(job)
            rows[stream] = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    keys = ("reward/score_mean", "reward/score_std", "response/length_mean", "eval/batch_accuracy", "online/labels")
    for off, on in zip(rows[False], rows[True], strict=True):
        for key in keys:
            assert on[key] == off[key], (key, on[key], off[key])
        assert on["actor/kl"] == pytest.approx(off["actor/kl"], abs=1e-6)
    assert sum(r["online/labels"] for r in rows[True]) == 8
