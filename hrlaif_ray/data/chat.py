"""How the policy, the reward model and the critic see a conversation: one encoding for all of them.

The prompt is a user turn rendered with the tokenizer's chat template plus the assistant's generation prompt
(the policy samples from exactly there); a response is its tokens ending in the end-of-turn token, where the
reward is read and where generation stops. SFT, reward-model training, the reward service and PPO all encode
through here, so serving reads exactly what training saw.
"""

from __future__ import annotations

import torch


def prompt_token_ids(tokenizer, text: str, max_tokens: int) -> list[int]:
    if tokenizer.chat_template:
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True
        )
        ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    else:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return list(ids)[-max_tokens:]  # keep the end: the question and the generation prompt


def response_token_ids(tokenizer, text: str, max_tokens: int | None = None) -> list[int]:
    """A response as the RM reads it: its tokens (cut to leave room for the end) ending in the end-of-turn
    token, where the reward is read. Training and serving both encode through here."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if max_tokens is not None:
        ids = ids[: max_tokens - len(eos)]
    return (ids + eos) or eos


def pad_token_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def left_pad(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows -> (ids, attention mask) [B, T], left-padded so that every row ends at the last column (where
    generation continues and where a sequence's reward is read)."""
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r) :], mask[i, width - len(r) :] = torch.tensor(r, dtype=torch.long), 1
    return ids, mask
