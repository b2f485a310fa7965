"""The reward service: reward-model replicas (Ray actors) behind one handle.

`RewardService.score_ids(sequences)` takes token-id sequences (prompt + response), sorts them by length and
deals contiguous length buckets to the replicas (little padding per batch), each replica scores its bucket
(`micro_batch` rows per forward when set) with the RM's forward (normalised and clipped inside it) and returns a
tensor through the object store
(RAY_ENABLE_ZERO_COPY_TORCH_TENSORS=1 in the replicas, so it is not copied); the service puts the rewards
back in input order; a replica that dies (or hangs past `timeout_s`) is restarted by Ray (`restarts`) and its
bucket scored again. `score_texts(prompts, responses)` renders the prompt with the RM tokenizer's chat
template first.

`RewardService.score(prompts, responses)` is the reward role's one interface (prompt records and response texts
in, scores out) for the RM, the programmatic verifier (+1 correct, -1 wrong, 0 where there is no standard
answer) and their sum (`rm+verifier`: the RM plus `verifier_weight` x the verdict where a standard answer exists).

The online hybrid reward (the labeler pool during the step) is `actors/online_reward.py`: a replica's process does
not import the judge SDK.
"""

from __future__ import annotations

import ray
import torch

from actors.calls import Member, Recovery, gather_restarting, node_of_this_process, wait_ready
from actors.runtime import actor_env, set_threads
from hrlaif_ray.data.chat import pad_token_id, prompt_token_ids, response_token_ids
from hrlaif_ray.data.records import PromptRecord
from hrlaif_ray.evaluation import correctness
from hrlaif_ray.reward.model import RewardModel


def verifier_scores(prompts: list[PromptRecord], responses: list[str]) -> torch.Tensor:
    """+1 for a verified-correct response, -1 for a wrong one, 0 where the prompt has no standard answer."""
    verdicts = [correctness(p, r) for p, r in zip(prompts, responses, strict=True)]
    return torch.tensor([0.0 if v is None else 2 * v - 1 for v in verdicts])


@ray.remote
class RewardReplica:
    def __init__(self, folder: str | None, threads: int = 1):
        from transformers import AutoTokenizer

        set_threads(threads)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.rm = RewardModel.from_pretrained(folder).to(self.device).eval() if folder else None
        self.tokenizer = AutoTokenizer.from_pretrained(folder) if folder else None
        self.pad = pad_token_id(self.tokenizer) if folder else 0

    def ready(self) -> str:
        """This replica's node, once it has started."""
        return node_of_this_process()

    def verify(self, prompts: list[PromptRecord], responses: list[str]) -> torch.Tensor:
        return verifier_scores(prompts, responses)

    def score(self, sequences: list[list[int]], micro_batch: int | None = None) -> torch.Tensor:
        """Rewards [len(sequences)] (clipped in the RM's forward), `micro_batch` rows a forward in length order."""
        return self.rm.score_sequences(sequences, self.pad, micro_batch)

    def encode(self, prompts: list[str], responses: list[str], max_prompt_tokens: int = 1024) -> list[list[int]]:
        return [
            prompt_token_ids(self.tokenizer, p, max_prompt_tokens) + response_token_ids(self.tokenizer, r)
            for p, r in zip(prompts, responses)
        ]


class RewardService:
    """Replicas of one RM folder (or verifier-only replicas when `folder` is None). Each replica's Ray options
    come from `options` (the launch layer's placement-group bundles), else `num_cpus`/`num_gpus`."""

    def __init__(
        self,
        folder: str | None,
        replicas: int = 1,
        num_cpus: float = 1,
        num_gpus: float = 0,
        threads: int = 1,
        kind: str = "rm",
        verifier_weight: float = 1.0,
        options: list[dict] | None = None,
        micro_batch: int | None = None,
        timeout_s: float = 1800,
        restarts: int = 3,
    ):
        if kind not in ("rm", "verifier", "rm+verifier"):
            raise ValueError(f"reward kind must be rm, verifier or rm+verifier, got {kind!r}")
        if kind != "verifier" and not folder:
            raise ValueError(f"reward kind {kind!r} needs a reward-model folder")
        self.kind, self.verifier_weight, self.micro_batch = kind, verifier_weight, micro_batch
        env = actor_env(threads, num_gpus)
        options = options or [{"num_cpus": num_cpus, "num_gpus": num_gpus} for _ in range(replicas)]
        rm_folder = folder if kind != "verifier" else None
        self.timeout_s, self.restarts = timeout_s, restarts
        self.recoveries: list[Recovery] = []
        self.members = [
            Member(
                "reward",
                i,
                RewardReplica.options(**opt, runtime_env=env, max_restarts=restarts).remote(rm_folder, threads),
            )
            for i, opt in enumerate(options)
        ]
        wait_ready(self.members, timeout_s)

    @property
    def replicas(self) -> list:
        return [m.handle for m in self.members]

    def _each(self, parts: list, call) -> list:
        """call(replica, part) for parts[i] on replica i, bounded; a replica that died redoes its part."""
        return gather_restarting(
            self.members[: len(parts)],
            lambda m: call(m.handle, parts[m.rank]),
            self.timeout_s,
            self.restarts,
            self.recoveries,
        )

    def score(
        self, prompts: list[PromptRecord], responses: list[str], sequences: list[list[int]] | None = None
    ) -> torch.Tensor:
        """The reward role's interface: one score per (prompt, response). `sequences`, when the RM shares the
        policy's tokenizer: the prompt + response token ids as the policy produced them, which the RM then reads
        as they are (no decode and re-encode, which turned 32 sampled tokens into 51 on average here)."""
        if len(prompts) != len(responses) or (sequences is not None and len(sequences) != len(prompts)):
            raise ValueError(
                f"{len(prompts)} prompts but {len(responses)} responses"
                + (f" and {len(sequences)} sequences" if sequences is not None else "")
            )
        if self.kind == "verifier":
            k = len(self.members)
            size = max(1, -(-len(prompts) // k))
            parts = [(prompts[i : i + size], responses[i : i + size]) for i in range(0, len(prompts), size)]
            out = self._each(parts, lambda r, part: r.verify.remote(*part))
            return torch.cat(out) if out else torch.zeros(0)
        scores = (
            self.score_ids(sequences)
            if sequences is not None
            else self.score_texts([p.text for p in prompts], responses)
        )
        if self.kind == "rm+verifier":
            scores = scores + self.verifier_weight * verifier_scores(prompts, responses)
        return scores

    def score_ids(self, sequences: list[list[int]]) -> torch.Tensor:
        if not sequences:
            return torch.zeros(0)
        if any(len(s) == 0 for s in sequences):
            raise ValueError("every sequence needs at least one token")
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        n = len(self.replicas)
        size = -(-len(order) // n)
        buckets = [order[i : i + size] for i in range(0, len(order), size)]
        results = self._each(buckets, lambda r, b: r.score.remote([sequences[i] for i in b], self.micro_batch))
        out = torch.empty(len(sequences))
        for bucket, scores in zip(buckets, results):
            out[torch.tensor(bucket)] = scores
        return out

    def score_texts(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        return self.score_ids(self._each([(prompts, responses)], lambda r, part: r.encode.remote(*part))[0])

    def shutdown(self) -> None:
        for r in self.replicas:
            ray.kill(r)
