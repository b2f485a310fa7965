"""The implicit reward model: a reward read from a language model's likelihood instead of a scalar head.

A policy trained with DPO on preference labels defines a reward, r(x, y) = beta (log pi(y|x) - log pi_ref(y|x)),
the log-probability ratio of the response to the reference (Rafailov et al. 2023; as a process/outcome reward
model, Yuan et al. 2024, "Free Process Rewards without Process Labels"; as PPO's reward, Zhong et al. 2024). It
scores through every token the language model predicts, so what the model knows of the task (the arithmetic of a
worked answer) is in the score, where a scalar head trained on a few hundred pairs reads mostly surface features
(docs/demo.md measured a scalar RM at chance on correctness where this reward was above it).

`ImplicitRewardModel` is used wherever a reward model is: its forward normalises (a mean and std measured on the
training responses) and clips to [-clip, clip] like `RewardModel`'s, so PPO, the reward service, `serve-rm` and
`rm-probe` take either. The folder `hrlaif train-rm` writes with `kind: implicit` holds the DPO policy, the
tokenizer and `implicit_reward.json` (beta, clip, normalisation, and the reference's folder, which is read, not
copied: it is the SFT policy every stage already has). Written here rather than taken from TRL: TRL computes the
same ratio inside its DPO trainer's loss but has no model class that serves it as a reward.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from hrlaif_ray.config.base import IMPLICIT_RM as META
from hrlaif_ray.config.base import implicit_rm_meta


class ImplicitRewardModel(nn.Module):
    reads_responses = True  # scoring needs where each response starts (ModelReward passes it)

    def __init__(self, policy, reference, beta: float, clip: float = 10.0, mean: float = 0.0, std: float = 1.0):
        super().__init__()
        if beta <= 0 or clip <= 0 or std <= 0:
            raise ValueError(f"implicit reward: beta, clip and std must be positive, got {beta}, {clip}, {std}")
        self.policy, self.reference = policy, reference
        self.beta, self.clip, self.mean, self.std = float(beta), float(clip), float(mean), float(std)

    def finish(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw rewards -> normalised and clipped to [-clip, clip] (a NaN becomes the neutral 0, as in RewardModel)."""
        scores = torch.nan_to_num((raw - self.mean) / self.std, nan=0.0, posinf=self.clip, neginf=-self.clip)
        return scores.clamp(-self.clip, self.clip)

    @torch.inference_mode()
    def raw_rewards(
        self, prompts: list[list[int]], responses: list[list[int]], pad: int, micro_batch: int
    ) -> torch.Tensor:
        """beta x (log pi(y|x) - log pi_ref(y|x)) of each (prompt, response) token pair."""
        from hrlaif_ray.ppo.experience import layout, sequence_logprobs

        batch = layout(prompts, responses, pad)
        device = next(self.policy.parameters()).device
        mine = sequence_logprobs(self.policy, batch, micro_batch, device)
        theirs = sequence_logprobs(self.reference, batch, micro_batch, device)
        return self.beta * (mine - theirs).float().cpu()

    def score_sequences(
        self, sequences: list[list[int]], pad: int, micro_batch: int | None = None, response_starts=None
    ) -> torch.Tensor:
        """Rewards [len(sequences)] of prompt + response token sequences, each response from `response_starts[i]`."""
        if response_starts is None or len(response_starts) != len(sequences):
            raise ValueError("an implicit reward needs where each response starts in its sequence")
        heads = [s[:k] for s, k in zip(sequences, response_starts)]
        tails = [s[k:] for s, k in zip(sequences, response_starts)]
        if any(not h or not t for h, t in zip(heads, tails)):
            raise ValueError("every sequence needs a prompt and at least one response token")
        return self.finish(self.raw_rewards(heads, tails, pad, micro_batch or 64))

    def head_meta(self) -> dict:
        return {"kind": "implicit", "beta": self.beta, "clip": self.clip, "mean": self.mean, "std": self.std}

    @classmethod
    def from_parts(
        cls,
        policy: str | Path,
        reference: str | Path,
        beta: float,
        clip: float = 10.0,
        mean: float = 0.0,
        std: float = 1.0,
        dtype: torch.dtype = torch.float32,
    ) -> ImplicitRewardModel:
        """From a policy folder and its reference folder (frozen: no gradients)."""
        from transformers import AutoModelForCausalLM

        models = []
        for folder in (policy, reference):
            if not (Path(folder) / "config.json").is_file():
                raise FileNotFoundError(f"implicit reward: {folder} is not a model folder")
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).eval()
            model.requires_grad_(False)
            models.append(model)
        return cls(*models, beta, clip, mean, std)

    @classmethod
    def from_pretrained(
        cls, path: str | Path, clip: float | None = None, dtype: torch.dtype = torch.float32
    ) -> ImplicitRewardModel:
        """The RM folder `hrlaif train-rm` wrote with kind implicit."""
        meta = implicit_rm_meta(path)
        return cls.from_parts(
            meta["policy"],
            meta["reference"],
            meta["beta"],
            clip if clip is not None else meta.get("clip", 10.0),
            meta.get("mean", 0.0),
            meta.get("std", 1.0),
            dtype,
        )


def write_implicit_folder(
    out: str | Path, policy: str | Path, reference: str | Path, beta: float, clip: float, mean: float, std: float
) -> Path:
    """The RM folder of an implicit reward: `policy` (the DPO policy, inside out or a path to it), the tokenizer,
    and the meta file naming the reference folder (absolute, so the RM folder can be read from anywhere)."""
    from transformers import AutoTokenizer

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    AutoTokenizer.from_pretrained(policy).save_pretrained(out)
    rel = Path(policy).resolve()
    rel = rel.relative_to(out.resolve()) if rel.is_relative_to(out.resolve()) else rel
    meta = {
        "kind": "implicit",
        "policy": str(rel),
        "reference": str(Path(reference).resolve()),
        "beta": beta,
        "clip": clip,
        "mean": mean,
        "std": std,
    }
    (out / META).write_text(json.dumps(meta, indent=1))
    return out


def load_reward_model(path: str | Path, clip: float | None = None, dtype: torch.dtype = torch.float32, lora=None):
    """The reward model in an RM folder, of whichever kind `hrlaif train-rm` wrote there."""
    if implicit_rm_meta(path) is not None:
        if lora is not None:
            raise ValueError(f"{path}: an implicit reward model is frozen; it takes no LoRA adapters")
        return ImplicitRewardModel.from_pretrained(path, clip, dtype)
    from hrlaif_ray.reward.model import RewardModel

    return RewardModel.from_pretrained(path, clip, dtype, lora)
