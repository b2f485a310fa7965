"""The reward service returns the same (clipped) rewards as the module, in input order, across replicas; a replica
holds a weighted sum of the RM and the verifier."""

import pytest
import torch

from actors.reward import RewardPart, RewardService
from hrlaif_ray.data.records import PromptRecord
from hrlaif_ray.reward import RewardModel
from hrlaif_ray.reward.data import prompt_token_ids, response_token_ids
from hrlaif_ray.reward.interface import Completions, VerifierReward


@pytest.fixture(scope="module")
def rm_folder(tmp_path_factory, tiny_model_dir, tiny_tokenizer):
    rm = RewardModel.from_pretrained(tiny_model_dir, clip=0.5)  # a tight clip, so clipping shows
    with torch.no_grad():
        rm.head.weight.mul_(50.0)
    rm.mean, rm.std = 0.1, 0.7
    return rm.save_pretrained(tmp_path_factory.mktemp("rm") / "rm", tokenizer=tiny_tokenizer)


def test_service_matches_module(rm_folder, tiny_tokenizer, local_ray):
    service = RewardService([RewardPart("rm", folder=str(rm_folder))], replicas=2)
    try:
        gen = torch.Generator().manual_seed(0)
        sequences = [
            torch.randint(5, 384, (int(n),), generator=gen).tolist() for n in torch.randint(1, 40, (11,), generator=gen)
        ]
        records = [PromptRecord(f"p{i}", "open_qa", f"question {i}", "test") for i in range(len(sequences))]
        ids_batch = Completions(records, ["-"] * len(sequences), sequences)  # the token ids are what is scored
        got = service.score(ids_batch).scores
        rm = RewardModel.from_pretrained(rm_folder).eval()
        with torch.no_grad():
            want = torch.stack([rm(torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long))[0] for s in sequences])
        # The head is scaled x50 (so clipping shows), which scales float noise between a padded batch on one
        # thread and a single sequence on two threads too: 1e-4 here is 2e-6 in the unscaled head's units.
        assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()
        assert (got.abs() <= 0.5).all() and (got.abs() == 0.5).any()  # clipped inside the forward
        prompts, responses = ["Tom has 23 apples. How many?", "Hi"], ["The answer is 23.", "Hello!"]
        records = [PromptRecord(f"p{i}", "open_qa", p, "test") for i, p in enumerate(prompts)]
        texts = service.score(Completions(records, responses)).scores  # rendered with the RM's chat template
        ids = [
            prompt_token_ids(tiny_tokenizer, p, 1024) + response_token_ids(tiny_tokenizer, r)
            for p, r in zip(prompts, responses)
        ]
        assert torch.allclose(texts, service.score(Completions(records, responses, ids)).scores, atol=1e-6)
        with pytest.raises(ValueError, match="2 prompts but 1 completions"):
            Completions(records, responses[:1])
    finally:
        service.shutdown()
    # forwards of 3 rows in length order (as PPO asks them, `algo.micro_batch_size`), on one replica
    service = RewardService([RewardPart("rm", folder=str(rm_folder))], micro_batch=3)
    try:
        assert torch.allclose(service.score(ids_batch).scores, got, atol=1e-4)
    finally:
        service.shutdown()


def test_a_replica_sums_the_rm_and_the_verifier(rm_folder, local_ray):
    """rm+verifier: each replica holds both and scores their weighted sum; the verifier alone as a reward."""
    prompts = [PromptRecord("m", "math", "Tom has 23 apples. How many?", "test", answer="23")] * 2
    prompts += [PromptRecord("o", "open_qa", "Hi", "test")]
    batch = Completions(prompts, ["The answer is 23.", "The answer is 24.", "Hello!"])
    assert VerifierReward().score(batch).scores.tolist() == [1.0, -1.0, 0.0]
    rm = RewardService([RewardPart("rm", folder=str(rm_folder))])
    both = RewardService([RewardPart("rm", folder=str(rm_folder)), RewardPart("verifier", 0.5)], replicas=2)
    try:
        assert torch.allclose(
            both.score(batch).scores, rm.score(batch).scores + 0.5 * torch.tensor([1.0, -1.0, 0.0]), atol=1e-6
        )
    finally:
        rm.shutdown()
        both.shutdown()
    with pytest.raises(ValueError, match="'rm' with a folder"):
        RewardPart("rm")


def test_http_front_needs_the_token_and_matches_the_module(rm_folder, short_tmp):
    import subprocess

    import httpx
    from conftest import RM_TOKEN, ROOT, script_env, served_rm

    env = script_env(short_tmp, HRLAIF_RM_TOKEN=RM_TOKEN)
    assert (
        subprocess.run(
            [str(ROOT / ".venv/bin/hrlaif"), "serve-rm", "--rm", str(rm_folder)],
            env={**env, "HRLAIF_RM_TOKEN": ""},
            capture_output=True,
            text=True,
            timeout=60,
        ).returncode
        == 2
    )  # no token: refuses to start
    with served_rm(rm_folder, short_tmp) as (url, auth):
        seqs = [[5, 6, 7, 8], [9, 10]]
        assert httpx.post(f"{url}/score", json={"sequences": seqs}, timeout=60).status_code == 401
        assert (
            httpx.post(
                f"{url}/score", json={"sequences": seqs}, headers={"Authorization": "Bearer wrong"}, timeout=60
            ).status_code
            == 401
        )
        ok = httpx.post(f"{url}/score", json={"sequences": seqs}, headers=auth, timeout=60)
        assert ok.status_code == 200
        rm = RewardModel.from_pretrained(rm_folder).eval()
        with torch.no_grad():
            want = [rm(torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long))[0].item() for s in seqs]
        assert ok.json()["rewards"] == pytest.approx(want, abs=1e-4)
        bad = httpx.post(f"{url}/score", json={"sequences": [[]]}, headers=auth, timeout=60)
        assert bad.status_code == 400 and "at least one token" in bad.json()["error"]
        for body, says in (
            (b"{not json", "not JSON"),
            (b'{"sequences": [[1, 99999999]]}', "token ids must be integers"),
            (b'{"prompts": ["a"], "responses": []}', "equal length"),
            (b"[1, 2]", "JSON object"),
        ):
            bad = httpx.post(f"{url}/score", content=body, headers=auth, timeout=60)
            assert bad.status_code == 400 and says in bad.json()["error"], (body, bad.text)
        texts = httpx.post(f"{url}/score", json={"prompts": ["2+2?"], "responses": ["4"]}, headers=auth, timeout=60)
        assert texts.status_code == 200 and -10 <= texts.json()["rewards"][0] <= 10
        huge = httpx.post(f"{url}/score", content=b"x" * (8 * 2**20 + 1), headers=auth, timeout=60)
        assert huge.status_code == 413
        health = httpx.get(f"{url}/health", timeout=60)
        assert health.status_code == 200 and health.json()["ok"] is True


@pytest.mark.slow
def test_a_zero3_reward_model_over_two_replicas_scores_as_the_whole_one(tmp_path, tiny_tokenizer, local_ray):
    """`frozen: {zero_stage: 3}`: the replicas shard the RM (a process group); an odd batch is padded so both run
    the same forwards, and the scores are the unsharded RM's (in fp32, exactly; in bf16, to its precision). The RM
    has 256 x 1024 matrices: over ZeRO-3's persistence threshold, so every forward gathers them collectively."""
    from hrlaif_ray.config import FrozenConfig, ModelConfig
    from hrlaif_ray.models import build_tiny_causal_lm, save_model_folder

    wide = build_tiny_causal_lm(ModelConfig(hidden_size=256, intermediate_size=1024), tiny_tokenizer)
    rm_folder = RewardModel.from_pretrained(save_model_folder(wide, tiny_tokenizer, tmp_path / "wide"))
    rm_folder = rm_folder.save_pretrained(tmp_path / "rm", tokenizer=tiny_tokenizer)

    records = [PromptRecord(f"p{i}", "open_qa", f"question {i}?", "test") for i in range(5)]
    batch = Completions(records, ["yes", "no, not at all", "maybe so", "a longer answer than the rest", "ok"])
    whole = RewardService([RewardPart("rm", folder=str(rm_folder))])
    try:
        want = whole.score(batch).scores
    finally:
        whole.shutdown()
    for precision, atol in (("fp32", 1e-5), ("bf16", 0.05)):
        frozen = FrozenConfig(precision=precision, zero_stage=3)
        # one row a forward: unpadded, the replica with 3 rows would run a forward its peer never joins (a hang,
        # cut short by the timeout)
        part = [RewardPart("rm", folder=str(rm_folder))]
        sharded = RewardService(part, replicas=2, frozen=frozen, micro_batch=1, timeout_s=120)
        try:
            assert sharded.grouped and sharded.restarts == 0
            assert torch.allclose(sharded.score(batch).scores, want, atol=atol), precision
        finally:
            sharded.shutdown()
