"""`ppo_loop`, the algorithm, in this process with fake roles: no Ray, no vLLM, no DeepSpeed. What it checks: one
call per phase each step, the experience batch the learners get (RLOO advantages of the rewards, the sampler's
log-probs as the old ones), the weight sync every step, the metrics rows, the monitor and the checkpoint."""

from __future__ import annotations

import pytest
import torch

from actors.rollout import Sample
from cluster.ppo.experience import PromptSampler, experience_source
from cluster.ppo.loop import Watch, ppo_loop
from cluster.ppo.roles import Roles
from hrlaif_ray.config import PPOJob
from hrlaif_ray.data.records import PromptRecord
from hrlaif_ray.metrics import MetricsLog
from hrlaif_ray.ppo import core
from hrlaif_ray.ppo.experience import Experience
from hrlaif_ray.ppo.monitor import RewardHackingMonitor
from hrlaif_ray.reward.interface import Completions, Scores


class FakeRollout:
    """Response k of each prompt: k + 1 tokens, starting with `good` in the even ones and `bad` in the odd ones."""

    def __init__(self, good: int, bad: int, fill: int):
        self.good, self.bad, self.fill, self.calls, self.synced = good, bad, fill, 0, []

    def generate(self, prompt_ids, n, max_tokens, temperature, top_p, seed):
        self.calls += 1
        out = []
        for i in range(len(prompt_ids)):
            for k in range(n):  # response k of a prompt: k + 1 tokens, the good token in the even ones
                ids = [self.good if k % 2 == 0 else self.bad] + [self.fill] * k
                out.append(Sample(i, ids, [-0.5] * len(ids), "stop"))
        return out

    def generate_groups(self, prompt_ids, n, max_tokens, temperature, top_p, seed):
        """`generate`'s groups, the last prompt's first (streamed groups come in any order)."""
        samples = self.generate(prompt_ids, n, max_tokens, temperature, top_p, seed)
        for i in reversed(range(len(prompt_ids))):
            yield i, samples[i * n : (i + 1) * n]

    def update_weights(self, ref):
        self.synced.append(ref)
        return [0.01]


class FakeLearner:
    weights_bytes, weights_peak = 0, None

    def __init__(self):
        self.trained: list[Experience] = []

    def logprobs(self, batch: Experience, n: int) -> torch.Tensor:
        assert len(batch) == n
        return -0.4 * batch.response_mask

    def train_actor(self, batch: Experience, n: int, **kwargs) -> dict[str, float]:
        self.trained.append(batch)
        return {"policy_loss": 0.1, "clip_frac": 0.0}

    def weights_ref(self):
        return f"weights-{len(self.trained)}"

    def memory(self) -> list[dict]:
        return [{"peak_rss_bytes": 2**30}]


class FakeReward:
    """+1 for a response that starts with "A", else -1 (it reads the decoded text, as an RM on its own tokenizer)."""

    def score(self, batch: Completions) -> Scores:
        assert batch.sequences is None and batch.group_size == 4
        return Scores(torch.tensor([1.0 if t.startswith("A") else -1.0 for t in batch.texts]))


def _fake_job(tmp_path, steps: int, algo: dict, **extra) -> PPOJob:
    """RLOO over 2 prompts x 4 samples a step, the engines' log-probs asked for, phases one after another."""
    return PPOJob(
        policy="p",
        output_dir=str(tmp_path),
        steps=steps,
        prompts_per_step=2,
        overlap=False,
        algo={"estimator": "rloo", "use_rollout_logprobs": True, **algo},
        rollout={"samples_per_prompt": 4, "max_new_tokens": 8, "max_model_len": 64},
        **extra,
    )


def test_ppo_loop_runs_the_algorithm_phase_by_phase(tmp_path, tiny_tokenizer):
    good, bad, fill = (tiny_tokenizer(c, add_special_tokens=False)["input_ids"][0] for c in ("A", "B", "x"))
    job = _fake_job(tmp_path, 3, {"whiten_advantages": False, "kl_coef": 0.0}, monitor={"every": 2, "prompts": 2})
    prompts = [
        PromptRecord(f"p{i}", "math", f"Tom has {10 + i} apples. How many?", "generated", answer=str(10 + i))
        for i in range(4)
    ]
    actor, rollout = FakeLearner(), FakeRollout(good, bad, fill)
    roles = Roles(
        rollout=rollout, actor=actor, reference=FakeLearner(), critic=None, reward=FakeReward(), put=lambda batch: batch
    )  # no object store: the batch itself is the reference
    saved = []
    log = MetricsLog(tmp_path, tensorboard=False)
    alert = ppo_loop(
        job,
        roles,
        experience_source(job, roles, tiny_tokenizer, PromptSampler(prompts, 2, 0), 0, None),
        0,
        core.KLController(0.0),
        log,
        lambda step, coef, buffer=None: saved.append(step),
        Watch(job, tiny_tokenizer, prompts[:2], RewardHackingMonitor()),
    )
    log.close()
    assert alert is None and saved == [3]
    assert rollout.calls == 3 + 1 and rollout.synced == ["weights-1", "weights-2", "weights-3"]  # + the monitor
    rows = log.rows()
    assert [r["step"] for r in rows] == [1, 2, 3]
    for key in ("time/generate", "time/reward", "time/reference", "time/actor_train", "time/sync", "reward/score_mean"):
        assert all(key in r for r in rows), key
    assert "eval/heldout_accuracy" in rows[1] and "eval/heldout_accuracy" not in rows[0]
    batch = actor.trained[0]
    assert len(batch) == 8 and batch.response_mask.sum(1).tolist() == [1, 2, 3, 4] * 2
    # RLOO over each prompt's 4 samples, rewards +1 -1 +1 -1: each sample's reward minus the mean of the other three.
    seq_adv = batch.advantages.sum(1) / batch.response_mask.sum(1)
    assert torch.allclose(seq_adv, torch.tensor([4 / 3, -4 / 3, 4 / 3, -4 / 3] * 2))
    assert torch.allclose(batch.old_logprobs, -0.5 * batch.response_mask)  # the sampler's log-probs
    assert rows[0]["reward/score_mean"] == 0.0 and rows[0]["response/length_mean"] == 2.5


def test_truncated_importance_sampling_has_the_actor_recompute_and_weights_each_token(tmp_path, tiny_tokenizer):
    """With algo.tis_cap the actor's log-probs (-0.4 a token) are the ratio's, though the engines' (-0.5) would
    serve; each token weighs min(exp(0.1), cap); the mismatch is logged."""
    good, bad, fill = (tiny_tokenizer(c, add_special_tokens=False)["input_ids"][0] for c in ("A", "B", "x"))
    job = _fake_job(tmp_path, 1, {"tis_cap": 1.05, "mismatch_threshold": 0.05})
    prompts = [PromptRecord(f"p{i}", "math", f"Tom has {i} apples.", "generated", answer=str(i)) for i in range(2)]
    actor = FakeLearner()
    roles = Roles(
        rollout=FakeRollout(good, bad, fill), actor=actor, reference=FakeLearner(), critic=None, reward=FakeReward()
    )
    roles.put = lambda batch: batch
    log = MetricsLog(tmp_path, tensorboard=False)
    source = experience_source(job, roles, tiny_tokenizer, PromptSampler(prompts, 2, 0), 0, None)
    ppo_loop(
        job,
        roles,
        source,
        0,
        core.KLController(0.0),
        log,
        lambda *a, **k: None,
        Watch(job, tiny_tokenizer, [], RewardHackingMonitor()),
    )
    log.close()
    (batch,) = actor.trained
    mask = batch.response_mask
    assert torch.allclose(batch.old_logprobs, -0.4 * mask)  # the actor's recomputation
    assert torch.allclose(batch.is_weights * mask, 1.05 * mask)  # exp(0.1) = 1.105, truncated at 1.05
    (row,) = log.rows()
    assert row["rollout/logprob_diff_mean"] == pytest.approx(0.1) and row["rollout/logprob_diff_over_frac"] == 1.0
    assert row["rollout/tis_weight_mean"] == pytest.approx(1.05) and row["rollout/tis_truncated_frac"] == 1.0


class FakeOnline:
    """The online judge's group rewards: +1 for the samples starting with "A", -1 for the others, except prompts
    whose id is in `flat` (every sample 0: a group without signal); records the groups it was asked about."""

    def __init__(self, flat: set[str] = frozenset()):
        self.flat, self.asked = flat, []

    def score(self, batch: Completions) -> Scores:
        groups = batch.groups()
        self.asked.append([p.id for p, _ in groups])
        out = [0.0 if p.id in self.flat else 1.0 if x.startswith("A") else -1.0 for p, texts in groups for x in texts]
        return Scores(torch.tensor(out), {"online/labels": len(groups), "online/judge_cost_usd": 0.001 * len(groups)})


def _loop(tmp_path, tiny_tokenizer, steps, start=0, buffered=None, online=None, reward_role=None, wrap=None, **job):
    good, bad, fill = (tiny_tokenizer(c, add_special_tokens=False)["input_ids"][0] for c in ("A", "B", "x"))
    job = PPOJob(
        policy="p",
        output_dir=str(tmp_path),
        steps=steps,
        prompts_per_step=2,
        overlap=False,
        algo={"estimator": "rloo", "whiten_advantages": False, "kl_coef": 0.0, **job.pop("algo", {})},
        rollout={"samples_per_prompt": 4, "max_new_tokens": 8, "max_model_len": 64},
        **job,
    )
    prompts = [
        PromptRecord(f"p{i}", "math", f"Tom has {10 + i} apples. How many?", "generated", answer=str(10 + i))
        for i in range(8)
    ]
    actor, rollout = FakeLearner(), FakeRollout(good, bad, fill)
    roles = Roles(
        rollout=rollout,
        actor=actor,
        reference=FakeLearner(),
        critic=None,
        reward=online or reward_role,
        put=lambda batch: batch,
    )
    saved = {}
    log = MetricsLog(tmp_path, tensorboard=False)
    log.truncate(start)
    source = experience_source(job, roles, tiny_tokenizer, PromptSampler(prompts, 2, 0), start, buffered)
    ppo_loop(
        job,
        roles,
        wrap(source, roles) if wrap else source,
        start,
        core.KLController(0.0),
        log,
        lambda step, coef, buffer=None: saved.update({step: buffer}),
        Watch(job, tiny_tokenizer, prompts[:2], RewardHackingMonitor()),
    )
    log.close()
    return log.rows(), saved, rollout, actor


def test_async_loop_trains_on_a_one_step_stale_batch_and_resumes_from_the_buffered_one(tmp_path, tiny_tokenizer):
    rows, saved, rollout, actor = _loop(
        tmp_path, tiny_tokenizer, 4, reward_role=FakeReward(), checkpoint_every=2, **{"async": {"max_staleness": 1}}
    )
    assert [r["async/staleness"] for r in rows] == [0, 1, 1, 1]  # step 1's batch came before any update
    assert [r["data/batch_step"] for r in rows] == [0, 1, 2, 3]
    assert rollout.calls == 4 and len(rollout.synced) == 4 and "time/generate_wait" in rows[1]
    assert not any("time/reward" in r for r in rows)  # rewarded in the background, with the samples made ahead
    assert torch.allclose(actor.trained[0].old_logprobs, -0.5 * actor.trained[0].response_mask)  # the engines'
    assert saved[2] is not None and saved[2].step == 2 and saved[2].version == 1 and saved[4] is None
    # A crash after the checkpoint at step 2 (steps 3 and 4 logged, no checkpoint): the resume drops their rows and
    # trains step 3 on the batch the checkpoint buffered (made by the weights after 1 update), then makes step 4's.
    rows2, _, rollout2, actor2 = _loop(
        tmp_path,
        tiny_tokenizer,
        4,
        start=2,
        buffered=saved[2],
        reward_role=FakeReward(),
        **{"async": {"max_staleness": 1}},
    )
    assert [r["step"] for r in rows2] == [1, 2, 3, 4] and [r["data/batch_step"] for r in rows2] == [0, 1, 2, 3]
    assert rows2[2]["async/staleness"] == 1 and rollout2.calls == 1  # only step 4's batch was generated
    assert torch.equal(actor2.trained[0].input_ids, saved[2].batch.input_ids)


def test_synchronous_loop_is_unchanged_by_the_async_machinery(tmp_path, tiny_tokenizer):
    rows, _, rollout, _ = _loop(tmp_path, tiny_tokenizer, 2, reward_role=FakeReward())
    assert [r["async/staleness"] for r in rows] == [0, 0] and rollout.calls == 2
    assert "time/generate_wait" not in rows[0] and "time/reward" in rows[0]  # the reward scored beside the forwards


def test_online_reward_comes_with_the_samples_and_dynamic_sampling_keeps_groups_with_signal(tmp_path, tiny_tokenizer):
    online = FakeOnline(flat={"p0", "p3", "p5"})
    rows, _, rollout, actor = _loop(
        tmp_path,
        tiny_tokenizer,
        2,
        online=online,
        reward={"kind": "online"},
        algo={"dynamic_sampling": True, "max_generation_rounds": 4},
    )
    trained = [p for batch in actor.trained for p in batch.input_ids.tolist()]
    assert len(actor.trained[0]) == 8 and "time/reward" not in rows[0]  # rewarded with the samples
    assert all(0.0 < r["dynamic/kept_fraction"] <= 1.0 for r in rows) and trained
    asked = [pid for call in online.asked for pid in call]
    for row, batch in zip(rows, actor.trained):
        advantages = batch.advantages.sum(1)
        assert (advantages != 0).all(), "a group without signal was trained on although others were left"
        assert row["online/labels"] >= 2 and row["reward/score_mean"] == 0.0
    assert {"p0", "p3", "p5"} & set(asked)  # flat groups were drawn, labeled and dropped
    assert rollout.calls > 2  # extra generation rounds filled the steps


def test_fault_injection_wraps_the_experience_source(tmp_path, tiny_tokenizer):
    """Chaos schedules each step's kill when the loop asks for the step's experience, from outside the loop, and
    its pending kills are cancelled when the loop ends."""
    from cluster.ppo.faults import ChaosSource

    class Recorder:
        def __init__(self):
            self.steps, self.stopped = [], False

        def step(self, step, groups):
            self.steps.append((step, sorted(groups)))

        def stop(self):
            self.stopped = True

    chaos, wrapped = Recorder(), []

    def wrap(source, roles):
        wrapped.append(ChaosSource(source, chaos, roles))
        return wrapped[-1]

    rows, _, _, _ = _loop(tmp_path, tiny_tokenizer, 3, reward_role=FakeReward(), wrap=wrap)
    assert [r["step"] for r in rows] == [1, 2, 3] and chaos.stopped
    assert [s for s, _ in chaos.steps] == [1, 2, 3]


def test_checkpoint_retention_keeps_the_newest_and_another_runs(tmp_path):
    """`max_checkpoints`: after step 5's checkpoint is whole, only the newest 2 up to it stay, and the one the
    attempt started from; a later step's checkpoint (another run's, left in the folder) is not this run's to
    delete."""
    import json

    from cluster.ppo.run import checkpoints, prune_checkpoints

    for step in (1, 2, 3, 4, 5, 99):
        (tmp_path / "checkpoints" / f"step_{step}").mkdir(parents=True)
        (tmp_path / "checkpoints" / f"step_{step}" / "state.json").write_text(json.dumps({"step": step}))
    (tmp_path / "checkpoints" / "step_6.tmp").mkdir()  # a checkpoint being written is not one
    start = tmp_path / "checkpoints" / "step_2"  # the attempt started from it: its engines may reload it
    gone = prune_checkpoints(tmp_path, keep=2, upto=5, protect=start)
    assert [p.name for p in gone] == ["step_1", "step_3"]
    assert [p.name for p in checkpoints(tmp_path)] == ["step_2", "step_4", "step_5", "step_99"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "step_2",
        "step_4",
        "step_5",
        "step_6.tmp",
        "step_99",
    ]
