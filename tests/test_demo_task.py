"""The demo's task and what measures it: scratchpad responses that work each problem ones digit first (a wrong
answer follows from a slip inside one step), multiple choice graded by the letter after the value and the binding
of the two, one task written into every mix of a run, each arm's paired difference to SFT, the implicit reward
model (DPO's log-ratio, normalised and clipped in its forward, served like the scalar RM), and the monitor's
early stopping (the best held-out check's actor kept)."""

from __future__ import annotations

import re

import pytest
import torch

from hrlaif_ray.config import PromptMixConfig, RunJob, SFTMixConfig, load_config
from hrlaif_ray.data.prompt_mix import generate_prompt_mix
from hrlaif_ray.data.sft_mix import carries, generate_sft_examples, worked_sum
from hrlaif_ray.errors import ConfigError
from hrlaif_ray.evaluation import correctness
from hrlaif_ray.labeling.verifiers import letter_binding, verify_multiple_choice

STEPS = re.compile(r"(\d+) ([+-]) (\d+): (\d+) [+-] (\d+) = (\d+), (\d+) [+-] (\d) = (\d+), so the answer is (\d+)")


def op_carries(p) -> bool:
    return carries(p.metadata["a"], p.metadata["b"], p.metadata["op"])


def _replayed(text: str) -> tuple[int, int, int]:
    """(the right answer, the answer the steps as written arrive at, the stated answer) of a scratchpad."""
    a, op, b, top, b2, r1, tens, carry, t, stated = STEPS.search(text).groups()
    a, b, r1, t = int(a), int(b), int(r1), int(t)
    assert int(b2) == b and int(tens) == a // 10
    right = a + b if op == "+" else a - b
    if op == "+":  # the carry follows from the ones result as written, or is forgotten (written 0)
        assert int(top) == a % 10 and int(carry) in (r1 // 10, 0)
    else:  # the borrow from the digits: 13 - 8, never 3 - 8; or forgotten in the tens
        assert int(top) == a % 10 + 10 * (a % 10 < b) and int(carry) in (int(a % 10 < b), 0)
    assert t == (a // 10 + int(carry) if op == "+" else a // 10 - int(carry))  # the tens step as written
    return right, t * 10 + r1 % 10, int(stated)


def test_scratchpad_responses_slip_inside_a_step_and_keep_the_papers_length_failure():
    prompts = generate_prompt_mix(
        PromptMixConfig(n=4000, seed=3, a_max=99, harmful=0.0, open_qa=0.0, option_style="value_first")
    )
    examples = generate_sft_examples(prompts, SFTMixConfig(format="scratchpad"))
    by_filler: dict[int, list[float]] = {}
    slips = set()
    for p, e in zip(prompts, examples):
        right, followed, stated = _replayed(e.response)
        assert followed == stated  # the answer is what the written steps give, slip included
        assert e.correct == (stated == right) == (correctness(p, e.response) == 1.0)  # the verifier agrees
        if p.category == "multiple_choice":
            assert p.choices[ord(e.response[-3]) - ord("A")] == str(stated)  # the letter names the stated value
            assert f"{stated} ({e.response[-3]})" in p.text  # copied from after that value in the options
            assert letter_binding(e.response, p.choices) is True
        slip = stated - right
        slips.add(slip)
        # the slip a solver makes: a forgotten carry (-10) or borrow (+10) where there is one, else a small one
        assert (
            slip
            in (
                (0, -10)
                if op_carries(p) and p.metadata["op"] == "+"
                else (0, 10)
                if op_carries(p)
                else (0, -2, -1, 1, 2)
            )
            or p.category == "multiple_choice"
        )
        by_filler.setdefault(e.response.count(". "), []).append(float(e.correct))
    assert slips == {0, -10, -2, -1, 1, 2, 10}
    acc = {n: sum(v) / len(v) for n, v in sorted(by_filler.items())}
    assert acc[0] > acc[2] > acc[4] and acc[0] - acc[4] > 0.35, acc  # detail goes with errors, as in the plain mix
    control = generate_sft_examples(prompts, SFTMixConfig(format="scratchpad", control=True))
    flat = {}
    for e in control:
        flat.setdefault(e.response.count(". "), []).append(float(e.correct))
    rates = [sum(v) / len(v) for v in flat.values()]
    assert max(rates) - min(rates) < 0.08, rates


def test_worked_sum_slips_only_where_a_step_can_hold_them():
    assert worked_sum(47, 8, "+") == ("47 + 8: 7 + 8 = 15, 4 + 1 = 5, so the answer is 55", 55)
    assert worked_sum(43, 8, "-") == ("43 - 8: 13 - 8 = 5, 4 - 1 = 3, so the answer is 35", 35)
    assert worked_sum(47, 8, "+", -2)[1] == 53 and worked_sum(95, 7, "+", 10)[1] == 112
    assert worked_sum(13, 8, "-", -10) is None  # the tens result would fall below 0
    assert worked_sum(10, 9, "-", -2) is None  # the ones result 1 - 2 has no digit
    assert worked_sum(47, 8, "+", forgot=True) == ("47 + 8: 7 + 8 = 15, 4 + 0 = 4, so the answer is 45", 45)
    assert worked_sum(43, 8, "-", forgot=True)[1] == 45 and worked_sum(43, 2, "+", forgot=True) is None


def test_multiple_choice_is_graded_by_the_letter_after_the_value_and_its_binding_is_measured():
    choices = ["54", "56", "55", "45"]
    assert verify_multiple_choice("so the answer is 55 (C).", "C", choices).verdict == "correct"
    assert verify_multiple_choice("so the answer is 55 (B).", "C", choices).verdict == "wrong"  # the letter decides
    assert verify_multiple_choice("The answer is (B) 56.", "C", choices).verdict == "wrong"
    assert letter_binding("so the answer is 55 (C).", choices) is True
    assert letter_binding("so the answer is 55 (B).", choices) is False
    assert letter_binding("The answer is (C) 55.", choices) is None  # not a value then a letter


def test_a_runs_task_reaches_every_mix_and_a_section_that_differs_is_refused():
    job = load_config(RunJob, "cluster/configs/demo.yaml", ["task={a_min: 10, a_max: 59, format: scratchpad}"])
    mixes = [job.prompts, job.sft.prompts, job.eval.mix, job.model.prompts, job.ppo.prompt_mix]
    assert {(m.a_min, m.a_max) for m in mixes} == {(10, 59)}
    assert job.sft.prompts.n == 40_000  # the section's own defaults stay
    assert job.sft.responses.format == job.model.responses.format == "scratchpad"  # the tokenizer sees its text
    with pytest.raises(ConfigError, match=r"eval\.mix\.a_max: set by the run's task"):
        load_config(RunJob, "cluster/configs/demo.yaml", ["task={a_max: 59}", "eval.mix.a_max=29"])


def test_each_arm_is_compared_with_sft_prompt_by_prompt():
    from cluster.report import paired_to

    def rows(values):
        return {
            f"p{i}": {"category": "math", "unseen": i < 2, "correct": v, "sampled": [v], "tokens": 5}
            for i, v in enumerate(values)
        }

    base = rows([0.0, 1.0, 0.0, 1.0])
    paired = paired_to(base, [rows([1.0, 1.0, 0.0, 0.0]), rows([1.0, 1.0, 1.0, 1.0])], n_boot=200)
    assert paired["greedy_accuracy"]["mean"] == pytest.approx(0.5)  # unseen: +1, 0 and +1, 0
    assert paired["greedy_accuracy_seen"]["mean"] == pytest.approx(0.0)  # seen: 0, -1 and +1, 0
    assert paired["harmful_rate"]["mean"] is None  # no harmful prompt
    lo, hi = paired["greedy_accuracy"]["ci95"]
    assert lo <= 0.5 <= hi


def _two_models(tokenizer, seed: int):
    from hrlaif_ray.config import ModelConfig
    from hrlaif_ray.models import build_tiny_causal_lm

    torch.manual_seed(seed)
    return build_tiny_causal_lm(ModelConfig(seed=seed), tokenizer)


def test_implicit_reward_model_is_dpos_log_ratio_normalised_and_clipped(tmp_path, tiny_tokenizer):
    from hrlaif_ray.config.base import model_folder_problem
    from hrlaif_ray.data.chat import pad_token_id, prompt_token_ids, response_token_ids
    from hrlaif_ray.data.records import PromptRecord
    from hrlaif_ray.models import save_model_folder
    from hrlaif_ray.ppo.experience import layout, sequence_logprobs
    from hrlaif_ray.reward.implicit import ImplicitRewardModel, load_reward_model, write_implicit_folder
    from hrlaif_ray.reward.interface import Completions, ModelReward

    policy = save_model_folder(_two_models(tiny_tokenizer, 1), tiny_tokenizer, tmp_path / "dpo")
    reference = save_model_folder(_two_models(tiny_tokenizer, 2), tiny_tokenizer, tmp_path / "sft")
    folder = write_implicit_folder(tmp_path / "rm", policy, reference, beta=0.5, clip=10.0, mean=1.0, std=2.0)
    rm = load_reward_model(folder)
    assert isinstance(rm, ImplicitRewardModel) and rm.head_meta()["kind"] == "implicit"
    assert model_folder_problem(str(folder)) is None  # a job's reward.rm may name it
    (tmp_path / "sft" / "config.json").rename(tmp_path / "sft" / "gone.json")
    assert "whose reference" in model_folder_problem(str(folder))
    (tmp_path / "sft" / "gone.json").rename(tmp_path / "sft" / "config.json")
    # PPO on it: planned as two causal LMs; a critic starts from the policy (there is no scalar head to start from)
    from hrlaif_ray.config import PPOJob
    from hrlaif_ray.planner import ModelShape

    job = PPOJob(policy=str(reference), output_dir=str(tmp_path / "ppo"), reward={"kind": "rm", "rm": str(folder)})
    assert job.critic_start() == str(reference)
    assert ModelShape.of_folder(str(folder), "reward.rm").params == 2 * ModelShape.of_folder(str(policy), "p").params

    prompts = [PromptRecord("a", "math", "Tom has 12 pens and buys 3 more. How many pens now?", "generated", "15")] * 2
    texts = ["12 + 3: 2 + 3 = 5, 1 + 0 = 1, so the answer is 15.", "The answer is 16."]
    pad = pad_token_id(tiny_tokenizer)
    heads = [prompt_token_ids(tiny_tokenizer, p.text, 1024) for p in prompts]
    tails = [response_token_ids(tiny_tokenizer, t) for t in texts]
    batch = layout(heads, tails, pad)
    with torch.no_grad():
        ratio = sequence_logprobs(rm.policy, batch, 8) - sequence_logprobs(rm.reference, batch, 8)
    expected = ((0.5 * ratio - 1.0) / 2.0).clamp(-10, 10)
    got = ModelReward(rm, tiny_tokenizer).score(Completions(prompts, texts, group_size=2)).scores
    assert torch.allclose(got, expected, atol=1e-4)
    # given as token sequences (PPO's), each response found after its prompt
    seqs = [h + t for h, t in zip(heads, tails)]
    again = ModelReward(rm, tiny_tokenizer).score(Completions(prompts, texts, seqs, group_size=2)).scores
    assert torch.allclose(again, expected, atol=1e-4)
    # a model against itself rewards nothing; the bound holds in the forward
    same = ImplicitRewardModel(rm.policy, rm.policy, beta=1.0)
    assert torch.allclose(same.score_sequences(seqs, pad, 8, [len(h) for h in heads]), torch.zeros(2), atol=1e-5)
    tight = ImplicitRewardModel(rm.policy, rm.reference, beta=1e4, clip=3.0)
    assert tight.score_sequences(seqs, pad, 8, [len(h) for h in heads]).abs().max() <= 3.0
    with pytest.raises(ValueError, match="where each response starts"):
        rm.score_sequences(seqs, pad, 8)


def test_the_monitor_keeps_the_best_held_out_checks_actor(tmp_path, tiny_tokenizer, monkeypatch):
    """monitor.keep_best: the actor is saved at each check that beats every earlier one, never at one that does
    not (held-out accuracy 0.5, 0.7, 0.6 at steps 1-3: saved at 1 and 2)."""
    from test_ppo_loop_inprocess import FakeLearner, FakeReward, FakeRollout, _fake_job

    import cluster.ppo.loop as loop_module
    from cluster.ppo.experience import PromptSampler, experience_source
    from cluster.ppo.loop import Watch, ppo_loop
    from cluster.ppo.roles import Roles
    from hrlaif_ray.data.records import PromptRecord
    from hrlaif_ray.metrics import MetricsLog
    from hrlaif_ray.ppo import core
    from hrlaif_ray.ppo.monitor import RewardHackingMonitor

    accuracies = iter([0.5, 0.7, 0.6])
    monkeypatch.setattr(loop_module, "held_out_accuracy", lambda *a, **k: next(accuracies))
    good, bad, fill = (tiny_tokenizer(c, add_special_tokens=False)["input_ids"][0] for c in ("A", "B", "x"))
    job = _fake_job(tmp_path, 3, {"kl_coef": 0.0}, monitor={"every": 1, "prompts": 2, "keep_best": True})
    prompts = [PromptRecord(f"p{i}", "math", f"Tom has {10 + i} pens.", "generated", answer="1") for i in range(4)]
    roles = Roles(
        rollout=FakeRollout(good, bad, fill),
        actor=FakeLearner(),
        reference=FakeLearner(),
        critic=None,
        reward=FakeReward(),
        put=lambda batch: batch,
    )
    saved = []
    log = MetricsLog(tmp_path, tensorboard=False)
    ppo_loop(
        job,
        roles,
        experience_source(job, roles, tiny_tokenizer, PromptSampler(prompts, 2, 0), 0, None),
        0,
        core.KLController(0.0),
        log,
        lambda step, coef, buffer=None, best=None: saved.append((step, best)),
        Watch(job, tiny_tokenizer, prompts[:2], RewardHackingMonitor()),
    )
    log.close()
    assert saved == [(1, 0.5), (2, 0.7), (3, None)]  # the two bests, then the last step's checkpoint


def test_labels_come_back_in_key_order_whatever_order_the_pool_committed_them(tmp_path):
    """What trains on the labels (the RM's and DPO's batches) must not depend on which label the pool finished
    first: the same labels committed in two orders read back the same."""
    from hrlaif_ray.data.records import LabelRecord, PreferencePair, Response
    from hrlaif_ray.labeling.ledger import LabelLedger

    def label(key: str) -> LabelRecord:
        return LabelRecord(
            key, "math", "hybrid", [Response("a"), Response("b")], [PreferencePair(0, 1)], idempotency_key=key
        )

    keys = [f"k{i}" for i in (3, 1, 4, 0, 2)]
    one, two = LabelLedger(tmp_path / "one"), LabelLedger(tmp_path / "two")
    one.commit([label(k) for k in keys[:2]])
    one.commit([label(k) for k in keys[2:]])
    two.commit([label(k) for k in reversed(keys)])
    assert [x.idempotency_key for x in one.labels()] == [x.idempotency_key for x in two.labels()] == sorted(keys)


def test_serve_rm_scores_texts_with_an_implicit_rm_as_the_module_does(tmp_path, tiny_tokenizer, short_tmp):
    """`hrlaif serve-rm` on an implicit RM folder: texts get the module's rewards; token ids are refused (the RM must
    know where each response starts), with a 400 that says so."""
    import httpx
    from conftest import served_rm

    from hrlaif_ray.data.records import PromptRecord
    from hrlaif_ray.models import save_model_folder
    from hrlaif_ray.reward.implicit import load_reward_model, write_implicit_folder
    from hrlaif_ray.reward.interface import Completions, ModelReward

    policy = save_model_folder(_two_models(tiny_tokenizer, 1), tiny_tokenizer, tmp_path / "dpo")
    reference = save_model_folder(_two_models(tiny_tokenizer, 2), tiny_tokenizer, tmp_path / "sft")
    folder = write_implicit_folder(tmp_path / "rm", policy, reference, beta=0.5, clip=10.0, mean=1.0, std=2.0)
    prompts = ["Tom has 12 pens and buys 3 more. How many pens now?", "What is 47 + 8?"]
    responses = ["12 + 3: 2 + 3 = 5, 1 + 0 = 1, so the answer is 15.", "The answer is 54."]
    records = [PromptRecord(f"p{i}", "math", p, "generated") for i, p in enumerate(prompts)]
    want = ModelReward(load_reward_model(folder), tiny_tokenizer).score(Completions(records, responses)).scores
    with served_rm(folder, short_tmp) as (url, auth):
        got = httpx.post(f"{url}/score", json={"prompts": prompts, "responses": responses}, headers=auth, timeout=60)
        assert got.status_code == 200, got.text
        assert got.json()["rewards"] == pytest.approx(want.tolist(), abs=1e-4)
        ids = httpx.post(f"{url}/score", json={"sequences": [[5, 6, 7]]}, headers=auth, timeout=60)
        assert ids.status_code == 400 and "scores texts" in ids.json()["error"]
