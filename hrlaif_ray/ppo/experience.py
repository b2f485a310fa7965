"""Experience: sampled responses laid out as the typed batch every role reads (`Experience`), and the advantages
computed from what the roles returned."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

from hrlaif_ray.config import PPOAlgoConfig
from hrlaif_ray.data.records import PromptRecord
from hrlaif_ray.ppo import core

PER_TOKEN = ("response_mask", "old_logprobs", "advantages", "returns", "old_values", "is_weights")  # [B, T] fields


@dataclass
class Experience:
    """One PPO batch as it crosses the Ray boundary: written by the controller, read by every learner.

    Layout (OpenRLHF's): `input_ids` [B, P + T] = the prompt left-padded to width P (`prompt_width`), then the
    response right-padded to width T; `attention_mask` the same shape; `response_mask` [B, T] marks response
    tokens. A learner's logits at positions P-1 .. P+T-2 predict the response tokens. Rows are prompt-major (the
    n samples of a prompt are consecutive, which RLOO and GRPO rely on). The training fields are None until the
    controller has computed them (`with_training`). In a micro-batch, `token_share` is its share of the
    mini-batch's response tokens."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    prompt_width: int
    old_logprobs: torch.Tensor | None = None
    advantages: torch.Tensor | None = None
    returns: torch.Tensor | None = None
    old_values: torch.Tensor | None = None
    is_weights: torch.Tensor | None = None  # truncated importance sampling's per-token weights (algo.tis_cap)
    token_share: float = 1.0

    def __len__(self) -> int:
        return self.input_ids.size(0)

    @property
    def response_width(self) -> int:
        return self.response_mask.size(1)

    def with_training(
        self,
        old_logprobs: torch.Tensor,
        advantages: torch.Tensor,
        returns: torch.Tensor,
        old_values: torch.Tensor | None,
        is_weights: torch.Tensor | None = None,
    ) -> Experience:
        """The batch with what the learners train on ([B, T] each; old_values zeros without a critic; is_weights
        only under truncated importance sampling)."""
        return replace(
            self,
            old_logprobs=old_logprobs,
            advantages=advantages,
            returns=returns,
            old_values=old_values if old_values is not None else torch.zeros_like(self.response_mask),
            is_weights=is_weights,
        )

    def select(self, idx: torch.Tensor, first: int, width: int, tokens: float) -> Experience:
        """Rows `idx`, the columns from `first` of the full sequence and the first `width` response columns: copies
        (indexing by a tensor), never views, so a batch that came through Ray's zero-copy object store is never
        written through."""
        P = self.prompt_width
        per_token = {k: getattr(self, k)[idx, :width] for k in PER_TOKEN if getattr(self, k) is not None}
        return replace(
            self,
            input_ids=self.input_ids[idx, first : P + width],
            attention_mask=self.attention_mask[idx, first : P + width],
            prompt_width=P - first,
            token_share=float(per_token["response_mask"].sum()) / tokens,
            **per_token,
        )

    def micro_batches(self, start: int, end: int, size: int) -> list[tuple[torch.Tensor, Experience]]:
        """Rows start..end sorted by length and cut into micro-batches of `size` rows (the last may be smaller),
        each trimmed of the columns that are padding in all of its rows; (row indices, micro-batch) pairs.

        The token-mean loss of rows start..end is the sum of the micro-batches' token-mean losses weighted by
        their `token_share` (how the learner accumulates gradients). Sorting puts prompts of like length together,
        so the trimmed micro-batches carry little padding (docs/training.md measures it). A trimmed row gives the same
        logits as the full row (left padding is masked and positions count real tokens), a test checks it."""
        if size < 1:
            raise ValueError(f"micro-batch size must be at least 1, got {size}")
        order = start + torch.argsort(self.attention_mask[start:end].sum(1), stable=True)
        tokens = float(self.response_mask[start:end].sum()) or 1.0
        return [(order[i : i + size], self.take(order[i : i + size], tokens)) for i in range(0, len(order), size)]

    def take(self, idx: torch.Tensor, tokens: float) -> Experience:
        """Rows `idx` trimmed of the columns that are padding in all of them (`tokens`: the response tokens their
        `token_share` is a share of)."""
        P = self.prompt_width
        used = self.attention_mask[idx].any(0).nonzero().flatten()
        first = min(int(used[0]), P - 1) if len(used) else P - 1  # position P-1 predicts the first response token
        width = max(int(used[-1]) + 1 - P, 1) if len(used) else 1  # response columns kept
        return self.select(idx, first, width, tokens)


def response_logits(model, m: Experience, device="cpu") -> torch.Tensor:
    """The logits that predict each response token of batch m under an HF causal LM: the LM head runs on positions
    P-1..end only (`logits_to_keep`), not on the prompt's (on SmolLM2 the head is a fifth of the forward's FLOPs)."""
    from hrlaif_ray.models.scalar_head import position_ids_from_mask

    ids, mask = m.input_ids.to(device), m.attention_mask.to(device)
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=position_ids_from_mask(mask),
        logits_to_keep=ids.size(1) - m.prompt_width + 1,
    )
    return out.logits[:, :-1]


def sequence_logps(token_logps: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """[N, T] per-token log-probs (zero beyond the response) -> [N] sequence log-probs."""
    return (token_logps * response_mask).sum(1)


def sequence_logprobs(
    model, batch: Experience, rows_per_forward: int, device="cpu", temperature: float = 1.0
) -> torch.Tensor:
    """[rows] sequence log-probs of the batch's responses (on CPU, with their graph unless called under no_grad),
    from forwards of `rows_per_forward` length-sorted rows trimmed of their padding (a prompt's responses differ in
    length: one forward of them all would pad each to the longest)."""
    parts = []
    for idx, m in batch.micro_batches(0, len(batch), rows_per_forward):
        targets = m.input_ids[:, m.prompt_width :].to(device)
        tok = core.token_logprobs(response_logits(model, m, device), targets, temperature)
        parts.append((idx, sequence_logps(tok, m.response_mask.to(device)).cpu()))
    order = torch.cat([idx for idx, _ in parts])
    return torch.cat([lp for _, lp in parts])[torch.argsort(order)]


def layout(prompts: list[list[int]], responses: list[list[int]], pad: int) -> Experience:
    """One row per (prompt, response) pair; both lists are aligned (a prompt repeated for each of its samples)."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    B = len(prompts)
    P = max(map(len, prompts))
    T = max(1, max(map(len, responses)))
    ids = torch.full((B, P + T), pad, dtype=torch.long)
    mask = torch.zeros(B, P + T, dtype=torch.long)
    rmask = torch.zeros(B, T, dtype=torch.float32)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        ids[i, P - len(p) : P], mask[i, P - len(p) : P] = torch.tensor(p, dtype=torch.long), 1
        if r:
            ids[i, P : P + len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, P : P + len(r)], rmask[i, : len(r)] = 1, 1
    return Experience(ids, mask, rmask, P)


def pad_rows(rows: list[list[float]], width: int) -> torch.Tensor:
    out = torch.zeros(len(rows), width)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r[:width])
    return out


@dataclass
class Forwards:
    """What a step's forwards returned for its batch: reward scores [B], the reference's log-probs and those of
    the policy that sampled [B, T], the engines' own log-probs [B, T], the critic's values [B, T] (GAE only)."""

    scores: torch.Tensor
    ref_logprobs: torch.Tensor
    old_logprobs: torch.Tensor
    rollout_logprobs: torch.Tensor
    values: torch.Tensor | None
    from_rollout: bool  # old_logprobs are the engines' (the behaviour policy's), not the actor's recomputation
    actor_logprobs: torch.Tensor | None = None  # the actor's recomputation, when it ran


@dataclass
class Advantages:
    advantages: torch.Tensor  # [B, T]
    returns: torch.Tensor  # [B, T] (GAE) or zeros (critic-free)
    kl: torch.Tensor  # [B] sum over the response of the per-token KL estimate
    total_reward: torch.Tensor  # [B] score - kl_coef * kl


def compute_advantages(
    algo: PPOAlgoConfig, forwards: Forwards, mask: torch.Tensor, kl_coef: float, group_size: int
) -> Advantages:
    """The rewards with their KL penalty (mask [B, T]: the response tokens) into advantages and returns, by the
    algorithm's estimator.

    gae: the KL penalty per token plus the score on the last token, then GAE over the critic's values.
    rloo / grpo: the sequence return score - kl_coef x sum KL, a leave-one-out (or group-normalised) baseline
    over the prompt's `group_size` samples, broadcast to every response token.
    """
    kl_tok = core.kl_estimate(forwards.old_logprobs, forwards.ref_logprobs, algo.kl_estimator) * mask
    kl = kl_tok.sum(1)
    scores = forwards.scores
    total = scores - kl_coef * kl
    if algo.estimator == "gae":
        if forwards.values is None:
            raise ValueError("GAE needs the critic's values")
        rewards = core.token_rewards(scores, kl_tok, mask, kl_coef)
        adv, returns = core.gae(rewards, forwards.values, mask, algo.gamma, algo.lam)
    elif algo.estimator in ("rloo", "grpo"):
        baseline = core.rloo_advantages if algo.estimator == "rloo" else core.grpo_advantages
        adv, returns = baseline(total, group_size).unsqueeze(1) * mask, torch.zeros_like(mask)
    else:
        raise ValueError(f"estimator must be gae, rloo or grpo, got {algo.estimator!r}")
    if algo.whiten_advantages:
        adv = core.whiten(adv, mask)
    return Advantages(adv, returns, kl, total)


@dataclass
class Rollouts:
    """What one PPO step trains on (made by `cluster/ppo/experience.py`; defined here so that the batch an asynchronous
    checkpoint buffers, pickled, names an importable class whatever module ran the controller): the prompt of each
    row, the responses (engine samples and text), the batch; the reward when it was computed with the samples
    (online labels, dynamic sampling), what making them measured, the sampler step whose prompts they answer and
    the weights' version (updates done) that sampled them."""

    prompts: list[PromptRecord]
    samples: list
    texts: list[str]
    batch: Experience
    sequences: list[list[int]] | None  # prompt + response ids ending in the end-of-turn token, when the RM reads them
    scores: torch.Tensor | None = None
    info: dict = field(default_factory=dict)
    step: int = 0
    version: int = 0
    pending: Any = None  # the reward's stream of these groups while it scores them (its result() gives the scores)


@dataclass
class Group:
    """One prompt's n samples as they come from the engines, with their rewards once known."""

    prompt: PromptRecord
    prompt_ids: list[int]
    samples: list
    texts: list[str]
    sequences: list[list[int]] | None
    scores: list[float] | None = None
