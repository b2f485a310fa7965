"""The reward service returns the same (clipped) rewards as the module, in input order, across replicas."""

import pytest
import ray
import torch

from actors.reward import RewardService
from hrlaif_ray.reward import RewardModel
from hrlaif_ray.reward.data import prompt_token_ids


@pytest.fixture(scope="module")
def rm_folder(tmp_path_factory, tiny_model_dir, tiny_tokenizer):
    rm = RewardModel.from_pretrained(tiny_model_dir, clip=0.5)  # a tight clip, so clipping shows
    with torch.no_grad():
        rm.head.weight.mul_(50.0)
    rm.mean, rm.std = 0.1, 0.7
    return rm.save_pretrained(tmp_path_factory.mktemp("rm") / "rm", tokenizer=tiny_tokenizer)


def test_service_matches_module(rm_folder, tiny_tokenizer):
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        service = RewardService(str(rm_folder), replicas=2)
        gen = torch.Generator().manual_seed(0)
        sequences = [torch.randint(5, 384, (int(n),), generator=gen).tolist() for n in torch.randint(1, 40, (11,), generator=gen)]
        got = service.score_ids(sequences)
        rm = RewardModel.from_pretrained(rm_folder).eval()
        with torch.no_grad():
            want = torch.stack([rm(torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long))[0] for s in sequences])
        assert torch.allclose(got, want, atol=1e-5), (got, want)
        assert (got.abs() <= 0.5).all() and (got.abs() == 0.5).any()  # clipped inside the forward
        prompts, responses = ["Tom has 23 apples. How many?", "Hi"], ["The answer is 23.", "Hello!"]
        texts = service.score_texts(prompts, responses)
        ids = [prompt_token_ids(tiny_tokenizer, p, 1024) + tiny_tokenizer(r, add_special_tokens=False)["input_ids"] + [tiny_tokenizer.eos_token_id]
               for p, r in zip(prompts, responses)]
        assert torch.allclose(texts, service.score_ids(ids), atol=1e-6)
        with pytest.raises(ValueError, match="2 prompts but 1 responses"):
            service.score_texts(prompts, responses[:1])
        service.shutdown()
    finally:
        ray.shutdown()
