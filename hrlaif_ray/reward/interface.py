"""The reward interface: completions (each with the prompt it answers) in, one score each and what scoring measured
out. Every reward the RL loop can use implements it, as TRL's `reward_funcs` and nanochat's `Task.reward` do: the
programmatic verifier (`VerifierReward`), a reward model (`ModelReward`; on Ray, `actors.reward.RewardService`
spreads it over replicas), the online hybrid reward (`actors.online_reward.OnlineReward`, the labeler pool labeling
each prompt's group) and weighted sums of them (`WeightedSum`). The loop calls `score` once a batch and never asks
which kind it holds.

A reward may also take a batch as a stream of groups (`stream_of(reward, groups, group_size)`): each prompt's
group is `add`ed as soon as the rollout engines have finished it, in any order, and `result()` gives the scores of
all of them in prompt order. The online reward labels each group as it arrives, so the judge works while the
engines still sample; a reward with nothing to gain from it (`Gathered`: the verifier, an RM) scores the whole
batch at `result()`.

Completions are prompt-major: the `group_size` completions of one prompt are consecutive, which a reward that
labels a prompt's samples together (the online reward) relies on, and which RLOO/GRPO's baselines need anyway.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch

from hrlaif_ray.data.records import PromptRecord


@dataclass
class Completions:
    """What a reward scores. `sequences`, when the caller has them: each prompt + completion as token ids in the
    policy's tokenizer, ending in the end-of-turn token; a reward model on the same tokenizer reads them as they
    are rather than decoding and re-encoding the text (which need not give back the sampled tokens)."""

    prompts: list[PromptRecord]  # one per completion
    texts: list[str]
    sequences: list[list[int]] | None = None
    group_size: int = 1  # consecutive completions of one prompt

    def __post_init__(self):
        n = len(self.texts)
        if len(self.prompts) != n or (self.sequences is not None and len(self.sequences) != n):
            seqs = f" and {len(self.sequences)} sequences" if self.sequences is not None else ""
            raise ValueError(f"{len(self.prompts)} prompts but {n} completions{seqs}")
        if self.group_size < 1 or n % self.group_size:
            raise ValueError(f"{n} completions do not form groups of {self.group_size}")

    def __len__(self) -> int:
        return len(self.texts)

    def groups(self) -> list[tuple[PromptRecord, list[str]]]:
        """(prompt, its completions) for each group, in order."""
        k = self.group_size
        return [(self.prompts[i], self.texts[i : i + k]) for i in range(0, len(self), k)]

    def rows(self, index: list[int]) -> Completions:
        """The completions at `index`, as completions of their own (no group structure: groups of 1)."""
        seqs = [self.sequences[i] for i in index] if self.sequences is not None else None
        return Completions([self.prompts[i] for i in index], [self.texts[i] for i in index], seqs)


@dataclass
class Scores:
    """One score per completion ([B] float32) and what scoring measured (metric name -> a total over the batch:
    labels made, labels failed, judge spend, seconds), which the loop logs with the step. Totals add up: the info
    of a batch scored in parts is the sum of the parts' info."""

    scores: torch.Tensor
    info: dict[str, float] = field(default_factory=dict)


class Reward(Protocol):
    def score(self, batch: Completions) -> Scores:
        """One score per completion of `batch`, in its order."""
        ...


class GroupStream(Protocol):
    def add(self, index: int, group: Completions) -> None:
        """Group `index` of the batch (one prompt's completions), in any order."""
        ...

    def result(self) -> Scores:
        """Every group's scores, in group order (once every group was added)."""
        ...


class Gathered:
    """The stream of a reward that scores a whole batch at once: the groups are kept, and scored at `result()`."""

    def __init__(self, reward: Reward, groups: int, group_size: int):
        self.reward, self.group_size = reward, group_size
        self.parts: list[Completions | None] = [None] * groups

    def add(self, index: int, group: Completions) -> None:
        self.parts[index] = group

    def result(self) -> Scores:
        missing = [i for i, p in enumerate(self.parts) if p is None]
        if missing:
            raise ValueError(f"groups {missing[:5]} were never added")
        return self.reward.score(joined(self.parts, self.group_size))


def joined(parts: list[Completions], group_size: int) -> Completions:
    """Groups as one prompt-major batch."""
    sequences = None if any(p.sequences is None for p in parts) else [q for p in parts for q in p.sequences]
    return Completions(
        [x for p in parts for x in p.prompts], [t for p in parts for t in p.texts], sequences, group_size
    )


def stream_of(reward: Reward, groups: int, group_size: int) -> GroupStream:
    """The reward's own stream where it has one (`reward.stream`), else `Gathered`."""
    own = getattr(reward, "stream", None)
    return own(groups, group_size) if own is not None else Gathered(reward, groups, group_size)


def verifier_scores(prompts: list[PromptRecord], texts: list[str]) -> torch.Tensor:
    """+1 for a verified-correct response, -1 for a wrong one, 0 where the prompt has no standard answer (or the
    verifier cannot tell)."""
    from hrlaif_ray.evaluation import correctness

    verdicts = [correctness(p, t) for p, t in zip(prompts, texts, strict=True)]
    return torch.tensor([0.0 if v is None else 2 * v - 1 for v in verdicts], dtype=torch.float32)


class VerifierReward:
    """The programmatic verifier as a reward: +1 correct, -1 wrong, 0 where no standard answer decides."""

    def score(self, batch: Completions) -> Scores:
        return Scores(verifier_scores(batch.prompts, batch.texts))


class ModelReward:
    """A reward model (`hrlaif_ray.reward.model.RewardModel`, normalised and clipped in its forward) as a reward:
    the completions' token sequences when given, else the prompt rendered with the RM tokenizer's chat template
    and the completion ending in its end-of-turn token (`hrlaif_ray.data.chat`), scored `micro_batch` rows a
    forward in length order."""

    def __init__(self, rm, tokenizer, micro_batch: int | None = None, max_prompt_tokens: int = 1024):
        from hrlaif_ray.data.chat import pad_token_id

        self.rm, self.tokenizer, self.micro_batch = rm, tokenizer, micro_batch
        self.pad, self.max_prompt_tokens = pad_token_id(tokenizer), max_prompt_tokens

    def encode(self, batch: Completions) -> list[list[int]]:
        from hrlaif_ray.data.chat import prompt_token_ids, response_token_ids

        if batch.sequences is not None:
            return batch.sequences
        return [
            prompt_token_ids(self.tokenizer, p.text, self.max_prompt_tokens) + response_token_ids(self.tokenizer, t)
            for p, t in zip(batch.prompts, batch.texts)
        ]

    def response_starts(self, batch: Completions, sequences: list[list[int]]) -> list[int]:
        """Where each completion starts in its sequence: after its prompt rendered with the tokenizer's template
        (a reward that reads the response's likelihood, `ImplicitRewardModel`, needs it)."""
        from hrlaif_ray.data.chat import prompt_token_ids

        starts = []
        for p, s in zip(batch.prompts, sequences):
            head = prompt_token_ids(self.tokenizer, p.text, self.max_prompt_tokens)
            if s[: len(head)] != head:
                raise ValueError(f"prompt {p.id}: the sequence does not start with its prompt in the RM's template")
            starts.append(len(head))
        return starts

    def score(self, batch: Completions) -> Scores:
        sequences = self.encode(batch)
        if any(len(s) == 0 for s in sequences):
            raise ValueError("every sequence needs at least one token")
        if not sequences:
            return Scores(torch.zeros(0))
        if getattr(self.rm, "reads_responses", False):
            starts = self.response_starts(batch, sequences)
            return Scores(self.rm.score_sequences(sequences, self.pad, self.micro_batch, response_starts=starts))
        return Scores(self.rm.score_sequences(sequences, self.pad, self.micro_batch))


class WeightedSum:
    """sum_i weight_i x reward_i (each part named, its info added to the others')."""

    def __init__(self, parts: list[tuple[str, float, Reward]]):
        if not parts:
            raise ValueError("a weighted sum needs at least one reward")
        self.parts = parts

    def score(self, batch: Completions) -> Scores:
        return self.summed([reward.score(batch) for _, _, reward in self.parts])

    def summed(self, got: list[Scores]) -> Scores:
        total, info = 0, {}
        for (_, weight, _), part in zip(self.parts, got, strict=True):
            total = total + weight * part.scores
            for key, value in part.info.items():
                info[key] = info.get(key, 0) + value
        return Scores(torch.as_tensor(total, dtype=torch.float32), info)

    def stream(self, groups: int, group_size: int) -> GroupStream:
        return _SummedStream(self, [stream_of(r, groups, group_size) for _, _, r in self.parts])


class _SummedStream:
    """A weighted sum's stream: every group to each part's stream, the parts' results summed."""

    def __init__(self, total: WeightedSum, streams: list[GroupStream]):
        self.total, self.streams = total, streams

    def add(self, index: int, group: Completions) -> None:
        for s in self.streams:
            s.add(index, group)

    def result(self) -> Scores:
        return self.total.summed([s.result() for s in self.streams])
