"""Evaluation helpers shared by SFT, PPO's reward-hacking watch and `hrlaif eval`: generate, then verify.

`correctness` is the verifier's verdict on a response to a verifiable prompt (1 correct, 0 wrong or no final
answer, None for prompts without a standard answer). `hf_generate` is the plain transformers path (greedy or
sampled), used where no vLLM engine is running (SFT's closing check, tests); PPO and `hrlaif eval` generate
through the rollout engines.
"""

from __future__ import annotations

import torch

from hrlaif_ray.data.chat import left_pad, pad_token_id, prompt_token_ids
from hrlaif_ray.data.records import PromptRecord
from hrlaif_ray.labeling import verifiers


def correctness(prompt: PromptRecord, text: str) -> float | None:
    check = verifiers.verify_prompt(prompt, text)
    return None if check is None else 1.0 if check.verdict == verifiers.CORRECT else 0.0


@torch.no_grad()
def hf_generate(
    model,
    tokenizer,
    texts: list[str],
    max_new_tokens: int = 48,
    greedy: bool = True,
    batch_size: int = 64,
    temperature: float = 1.0,
    max_prompt_tokens: int = 256,
) -> list[str]:
    """Responses (decoded, without the end token) to `texts` rendered as user turns."""
    pad = pad_token_id(tokenizer)
    out: list[str] = []
    model.eval()
    for start in range(0, len(texts), batch_size):
        ids, mask = left_pad(
            [prompt_token_ids(tokenizer, t, max_prompt_tokens) for t in texts[start : start + batch_size]], pad
        )
        width = ids.size(1)
        gen = model.generate(
            input_ids=ids.to(model.device),
            attention_mask=mask.to(model.device),
            max_new_tokens=max_new_tokens,
            do_sample=not greedy,
            temperature=temperature if not greedy else None,
            top_p=None,
            top_k=None,
            pad_token_id=pad,
            eos_token_id=tokenizer.eos_token_id,
        )
        out += tokenizer.batch_decode(gen[:, width:], skip_special_tokens=True)
    return out


def verified_accuracy(prompts: list[PromptRecord], responses: list[str]) -> dict[str, float]:
    """Mean correctness per category and over all verifiable prompts ('all')."""
    sums: dict[str, list[float]] = {}
    for p, r in zip(prompts, responses, strict=True):
        c = correctness(p, r)
        if c is not None:
            for key in (p.category, "all"):
                s = sums.setdefault(key, [0.0, 0])
                s[0] += c
                s[1] += 1
    return {k: v[0] / v[1] for k, v in sums.items()}


def pairwise_outcome(forward: dict | None, reverse: dict | None) -> float | None:
    """The policy's score in one judged comparison asked in both orders: `forward` has the policy as A, `reverse`
    as B. 1 a win (both orders agree), 0 a loss, 0.5 a tie or a disagreement (position bias cancels), None when
    either answer is missing (a failed request is not a tie)."""
    if forward is None or reverse is None:
        return None
    f = {"A": 1.0, "B": 0.0}.get(forward["better"], 0.5)
    r = {"B": 1.0, "A": 0.0}.get(reverse["better"], 0.5)
    return 1.0 if f == r == 1.0 else 0.0 if f == r == 0.0 else 0.5


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
