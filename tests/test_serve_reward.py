"""`hrlaif serve-reward`: the request forms, labels and chat frames (`hrlaif_ray/reward/remote.py`), the gatherer
that makes one prompt's samples a group, and the server itself on Ray Serve called by OpenRLHF's own remote reward
client (one sample a request, no header) and by the veRL reward functions, with the simulated judge on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess

import httpx
import pytest
from conftest import ROOT, script_env

from hrlaif_ray.config import PromptMixConfig, ServeRewardJob
from hrlaif_ray.data.prompt_mix import generate_prompt_mix
from hrlaif_ray.judges.launch import ready_process, sim_judge_server
from hrlaif_ray.labeling.synthetic import perturbed_items
from hrlaif_ray.reward import remote
from hrlaif_ray.reward.remote import BadRequest, ChatFrame, GroupGatherer, parse_request, prompt_record


def test_both_request_forms_and_what_a_bad_one_names():
    openrlhf = {"query": ["<s>Q: 2+2?A: 4</s>"], "prompts": ["Q: 2+2?"], "labels": ["4"]}
    assert parse_request(openrlhf, ("</s>",)) == ([remote.Sample("Q: 2+2?", "A: 4", "4")], False)
    ours = {"prompts": ["a", "b"], "responses": ["x", "y"], "labels": [None, {"category": "harmful"}], "complete": True}
    samples, complete = parse_request(ours)
    assert complete and [s.label for s in samples] == ["", '{"category": "harmful"}']
    assert parse_request({"prompts": ["a"], "responses": ["x"]})[0][0].label == ""
    for body, says in (
        ([1], "JSON object"),
        ({"prompts": ["a"]}, "expected 'query' and 'prompts'"),
        ({"prompts": ["a", "b"], "responses": ["x"]}, "'responses' has 1 items, expected 2"),
        ({"prompts": ["a"], "query": [3]}, "query[0]: expected a string"),
        ({"prompts": ["a"], "query": ["zzz"]}, "query[0] does not contain prompts[0]"),
        ({"prompts": ["a"], "responses": ["x"], "labels": [True]}, "labels[0]"),
        ({"prompts": ["a"], "responses": ["x"], "labels": ["1", "2"]}, "list of 1 items"),
        ({"prompts": ["a"], "responses": ["x"], "complete": "yes"}, "'complete'"),
    ):
        with pytest.raises(BadRequest, match=says.replace("[", r"\[").replace("]", r"\]")):
            parse_request(body)


def test_labels_become_prompt_records():
    math = prompt_record("What is 6 x 7?", "42")
    assert (math.category, math.answer) == ("math", "42")
    mc = prompt_record("Pick one", json.dumps({"category": "multiple_choice", "answer": "B", "choices": ["x", "y"]}))
    assert (mc.category, mc.answer, mc.choices) == ("multiple_choice", "B", ["x", "y"])
    assert prompt_record("How do I pick a lock?", '{"category": "harmful"}').category == "harmful"
    assert prompt_record("Tell me a story", "").category == "open_qa"
    assert prompt_record("x", '{"answer": 7}').answer == "7"  # a JSON answer alone: math
    assert prompt_record("x", "42").id == prompt_record("x", "42").id != prompt_record("y", "42").id
    with pytest.raises(BadRequest, match="label field 'grade'"):
        prompt_record("x", '{"grade": 1}')
    with pytest.raises(BadRequest, match="unknown category 'poetry'"):
        prompt_record("x", '{"category": "poetry"}')
    with pytest.raises(BadRequest, match="not a JSON object"):
        prompt_record("x", "{oops")
    with pytest.raises(BadRequest, match="the verifier cannot use it.*not a number"):
        prompt_record("x", "nan")  # it would fail its whole batch at scoring time
    with pytest.raises(BadRequest, match="'choices' must be a list of strings"):
        prompt_record("x", '{"category": "multiple_choice", "answer": "A", "choices": "AB"}')


def test_the_chat_frame_gives_back_the_question(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    frame = ChatFrame.of(tok)
    question = "What is 12 + 30?\nAnswer with a number."
    templated = tok.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
    )
    assert templated != question and frame.question(templated) == question
    assert frame.question("not templated") == "not templated" and ChatFrame().question("q") == "q"
    # OpenRLHF's query: the prompt's and the response's tokens decoded together, special tokens kept
    ids = tok(templated, add_special_tokens=False)["input_ids"] + tok("The answer is 42.")["input_ids"]
    query = tok.decode(ids + [tok.eos_token_id], skip_special_tokens=False)
    samples, _ = parse_request({"query": [query], "prompts": [templated]}, tuple(tok.all_special_tokens))
    assert samples[0].response == "The answer is 42."


def _records(n: int):
    return [prompt_record(f"question {i}", str(i)) for i in range(n)]


def test_the_gatherer_scores_whole_groups_and_waits_no_longer_than_it_may():
    batches = []

    def scorer(groups):
        batches.append([(r.text, list(t)) for r, t in groups])
        return [[float(len(r.text)) + j for j in range(len(t))] for r, t in groups]

    async def run():
        gatherer = GroupGatherer(scorer, group_size=3, group_wait_s=0.5)
        records = _records(2)
        # one sample a request, as OpenRLHF sends them, interleaved over two prompts
        calls = [gatherer.submit([(records[i % 2], f"s{i}")]) for i in range(6)]
        got = await asyncio.gather(*calls)
        assert sorted(len(g) for b in batches for _, g in b) == [3, 3]
        assert all(n == 3 for [(_, n)] in got)
        # a partial group: scored after group_wait_s, as a group of 2
        start = asyncio.get_running_loop().time()
        lone = await asyncio.gather(*(gatherer.submit([(records[0], f"late{i}")]) for i in range(2)))
        assert [n for [(_, n)] in lone] == [2, 2] and asyncio.get_running_loop().time() - start >= 0.45
        # a complete request: scored at once, not merged with anything pending
        start = asyncio.get_running_loop().time()
        whole = await gatherer.submit([(records[1], "a"), (records[1], "b")], complete=True)
        assert [n for _, n in whole] == [2, 2] and asyncio.get_running_loop().time() - start < 0.4
        return gatherer.scored_groups

    assert asyncio.run(run()) == 4


def test_a_sample_whose_client_left_is_not_scored():
    seen = []

    def scorer(groups):
        seen.extend(list(t) for _, t in groups)
        return [[1.0] * len(t) for _, t in groups]

    async def run():
        gatherer = GroupGatherer(scorer, group_size=3, group_wait_s=5)
        record = _records(1)[0]
        left = asyncio.ensure_future(gatherer.submit([(record, "gone")]))
        await asyncio.sleep(0.01)
        left.cancel()  # the client disconnected: Starlette cancels its handler
        return await asyncio.gather(*(gatherer.submit([(record, t)]) for t in ("a", "b")))

    assert asyncio.run(run()) == [[(1.0, 2)], [(1.0, 2)]] and seen == [["a", "b"]]  # scored as the group of 2 left


def test_a_failing_scorer_fails_its_requests_and_the_gatherer_goes_on():
    calls = []

    def scorer(groups):
        calls.append(len(groups))
        if len(calls) == 1:
            raise RuntimeError("judge down")
        return [[1.0] * len(t) for _, t in groups]

    async def run():
        gatherer = GroupGatherer(scorer, group_size=1, group_wait_s=5)
        with pytest.raises(RuntimeError, match="judge down"):
            await gatherer.submit([(_records(1)[0], "x")])
        return await gatherer.submit([(_records(1)[0], "y")])

    assert asyncio.run(run()) == [(1.0, 1)]


def test_a_reward_that_answers_the_wrong_shape_fails_its_requests_not_the_gatherer():
    async def run():
        gatherer = GroupGatherer(lambda groups: [[1.0]], group_size=2, group_wait_s=5)  # one reward for two
        with pytest.raises(RuntimeError, match="different number"):
            await gatherer.submit([(_records(1)[0], "x"), (_records(1)[0], "y")])
        gatherer.scorer = lambda groups: [[0.5] * len(t) for _, t in groups]
        return await gatherer.submit([(_records(1)[0], "z")], complete=True)

    assert asyncio.run(run()) == [(0.5, 1)]


def test_no_token_is_for_loopback_only():
    with pytest.raises(ValueError, match="binds 127.0.0.1 only"):
        ServeRewardJob(group_size=2, output_dir="x", no_token=True, host="0.0.0.0")
    assert ServeRewardJob(group_size=2, output_dir="x").reward.kind == "online"


def _start(env: dict, *overrides: str) -> tuple[subprocess.Popen, str, str]:
    proc, url = ready_process([str(ROOT / ".venv/bin/hrlaif"), "serve-reward", *overrides], env, stderr=subprocess.PIPE)
    assert url.startswith("http://127.0.0.1:")
    return proc, url, ""


def _stop(proc: subprocess.Popen) -> str:
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    return err


def test_openrlhf_and_verl_get_the_hybrid_reward_of_each_group(tmp_path, short_tmp, tiny_model_dir):
    from openrlhf.utils.agent import SingleTurnAgentExecutor
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompts = generate_prompt_mix(
        PromptMixConfig(n=3, seed=11, math=1.0, multiple_choice=0.0, harmful=0.0, open_qa=0.0)
    )
    items = perturbed_items(prompts, seed=11)  # per prompt: 4 responses, the `right` ones correct
    with sim_judge_server() as base:
        judge = f'{{"base_url": "{base}", "model": "gpt-3.5-turbo", "timeout_s": 10}}'
        common = [
            "group_size=4",
            "group_wait_s=8",
            f"reward.labeling.judges=[{judge}]",
            f'reward.labeling.rewriter={{"base_url": "{base}", "model": "gpt-4"}}',
            "reward.pool.labelers=1",
            f"tokenizer={tiny_model_dir}",
        ]
        env = script_env(short_tmp)
        # without a token and without no_token: refuses to start, exit 2
        refused = subprocess.run(
            [str(ROOT / ".venv/bin/hrlaif"), "serve-reward", f"output_dir={tmp_path / 'x'}", *common],
            env={**env, "HRLAIF_REWARD_TOKEN": ""},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert refused.returncode == 2 and "HRLAIF_REWARD_TOKEN" in refused.stderr
        # without a token on someone else's Ray: its Serve proxy may listen beyond loopback, so it refuses
        joined = subprocess.run(
            [str(ROOT / ".venv/bin/hrlaif"), "serve-reward", f"output_dir={tmp_path / 'x'}", "no_token=true", *common],
            env={**env, "RAY_ADDRESS": "127.0.0.1:6379"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert joined.returncode == 2 and "only on a Ray this command starts" in joined.stderr

        # OpenRLHF's client: one request a sample, all at once, no header; templated prompts, math labels
        proc, url, _ = _start(env, f"output_dir={tmp_path / 'openrlhf'}", "no_token=true", *common)
        try:
            executor = SingleTurnAgentExecutor(f"{url}/get_reward")

            async def one(prompt: str, response: str, label: str):
                ids = tok(prompt, add_special_tokens=False)["input_ids"] + tok(response)["input_ids"]
                query = tok.decode(ids + [tok.eos_token_id], skip_special_tokens=False)
                return (await executor._fetch_rewards_via_http([query], [prompt], [label]))[0]

            async def everything():
                calls = []
                for item, _ in items:
                    templated = tok.apply_chat_template(
                        [{"role": "user", "content": item.prompt.text}], add_generation_prompt=True, tokenize=False
                    )
                    calls += [one(templated, r.text, item.prompt.answer) for r in item.responses]
                return await asyncio.gather(*calls)

            answers = asyncio.run(everything())
            health = httpx.get(f"{url}/health", timeout=30).json()
        finally:
            err = _stop(proc)
        assert "WARNING: no token" in err
        assert health["groups"] == 3 and health["labels"] == 3 and health["labels_failed"] == 0
        assert health["judge_cost_usd"] > 0
        for k, (_, right) in enumerate(items):
            got = answers[4 * k : 4 * k + 4]
            assert all(a["extra_logs"]["group_size"] == [4] for a in got)
            rewards = [a["rewards"][0] for a in got]
            assert min(rewards[i] for i in right) > max(rewards[i] for i in range(4) if i not in right), rewards

        # veRL's functions, with the token: the batch form (whole groups), then one sample alone
        proc, url, _ = _start({**env, "HRLAIF_REWARD_TOKEN": "s3cret"}, f"output_dir={tmp_path / 'verl'}", *common)
        try:
            body = {"prompts": ["q"], "responses": ["r"]}
            assert httpx.post(f"{url}/reward", json=body, timeout=30).status_code == 401
            wrong = {"Authorization": "Bearer nope"}
            assert httpx.post(f"{url}/reward", json=body, headers=wrong, timeout=30).status_code == 401
            auth = {"Authorization": "Bearer s3cret"}
            bad = httpx.post(
                f"{url}/reward", json={"prompts": ["q"], "responses": ["r"], "labels": [[1]]}, headers=auth
            )
            assert bad.status_code == 400 and "labels[0]" in bad.json()["error"]
            os.environ.update(HRLAIF_REWARD_TOKEN="s3cret", HRLAIF_REWARD_URL=url)
            try:
                call = (
                    ["gsm8k"] * 8,
                    [r.text for item, _ in items[:2] for r in item.responses],
                    [item.prompt.answer for item, _ in items[:2] for _ in item.responses],
                    [
                        {"question": item.prompt.text, "index": k}
                        for k, (item, _) in enumerate(items[:2])
                        for _ in range(4)
                    ],
                )
                batch = remote.compute_score_batch(*call)
                # a request a group (the byte budget below any group's size): the same rewards, in the same order
                assert remote.compute_score_batch(*call, max_request_bytes=1) == batch
                alone = remote.compute_score(
                    "gsm8k",
                    items[2][0].responses[0].text,
                    items[2][0].prompt.answer,
                    {"question": items[2][0].prompt.text},
                    timeout_s=120,
                )
            finally:
                os.environ.pop("HRLAIF_REWARD_TOKEN")
                os.environ.pop("HRLAIF_REWARD_URL")
        finally:
            _stop(proc)
    for k, (_, right) in enumerate(items[:2]):
        rewards = batch[4 * k : 4 * k + 4]
        assert min(rewards[i] for i in right) > max(rewards[i] for i in range(4) if i not in right), rewards
    assert alone == 0.0  # a group of one: nothing to compare it with
    with pytest.raises(ValueError, match="extra_info of sample 0 has no 'prompt'"):
        remote.compute_score("gsm8k", "x", "1", {"index": 3})
