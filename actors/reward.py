"""The reward service: reward-model replicas (Ray actors) behind one handle.

`RewardService.score_ids(sequences)` takes token-id sequences (prompt + response), sorts them by length and
deals contiguous length buckets to the replicas (little padding per batch), each replica scores its bucket with
the RM's forward (normalised and clipped inside it) and returns a tensor through the object store
(RAY_ENABLE_ZERO_COPY_TORCH_TENSORS=1 in the replicas, so it is not copied); the service puts the rewards
back in input order. `score_texts(prompts, responses)` renders the prompt with the RM tokenizer's chat
template first: prompt and completion in, score out, the interface PPO's reward role uses.
"""

from __future__ import annotations

import os

import ray
import torch

from hrlaif_ray.reward.data import pad_token_id, prompt_token_ids, response_token_ids
from hrlaif_ray.reward.model import RewardModel


@ray.remote
class RewardReplica:
    def __init__(self, folder: str, threads: int = 1):
        from transformers import AutoTokenizer

        torch.set_num_threads(threads)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.rm = RewardModel.from_pretrained(folder).to(self.device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.pad = pad_token_id(self.tokenizer)

    @torch.inference_mode()
    def score(self, sequences: list[list[int]]) -> torch.Tensor:
        """Rewards [len(sequences)] (clipped in the RM's forward), left-padded into one batch."""
        T = max(len(s) for s in sequences)
        ids = torch.full((len(sequences), T), self.pad, dtype=torch.long)
        mask = torch.zeros(len(sequences), T, dtype=torch.long)
        for i, s in enumerate(sequences):
            ids[i, T - len(s):], mask[i, T - len(s):] = torch.tensor(s), 1
        return self.rm(ids.to(self.device), mask.to(self.device)).float().cpu()

    def encode(self, prompts: list[str], responses: list[str], max_prompt_tokens: int = 1024) -> list[list[int]]:
        return [prompt_token_ids(self.tokenizer, p, max_prompt_tokens) + response_token_ids(self.tokenizer, r)
                for p, r in zip(prompts, responses)]


class RewardService:
    """Replicas of one RM folder; `num_gpus` per replica on a GPU cluster (0 here)."""

    def __init__(self, folder: str, replicas: int = 1, num_cpus: float = 1, num_gpus: float = 0, threads: int = 1):
        env = {"env_vars": {"RAY_ENABLE_ZERO_COPY_TORCH_TENSORS": "1", "OMP_NUM_THREADS": str(threads),
                            "DS_ACCELERATOR": os.environ.get("DS_ACCELERATOR", "cpu" if not num_gpus else "cuda")}}
        self.replicas = [RewardReplica.options(num_cpus=num_cpus, num_gpus=num_gpus, runtime_env=env).remote(folder, threads)
                         for _ in range(replicas)]

    def score_ids(self, sequences: list[list[int]]) -> torch.Tensor:
        if not sequences:
            return torch.zeros(0)
        if any(len(s) == 0 for s in sequences):
            raise ValueError("every sequence needs at least one token")
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        n = len(self.replicas)
        size = -(-len(order) // n)
        buckets = [order[i : i + size] for i in range(0, len(order), size)]
        refs = [r.score.remote([sequences[i] for i in b]) for r, b in zip(self.replicas, buckets)]
        out = torch.empty(len(sequences))
        for bucket, scores in zip(buckets, ray.get(refs)):
            out[torch.tensor(bucket)] = scores
        return out

    def score_texts(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        return self.score_ids(ray.get(self.replicas[0].encode.remote(prompts, responses)))

    def shutdown(self) -> None:
        for r in self.replicas:
            ray.kill(r)
