"""The reward model against the ground truth (the mechanism's link 2): score held-out policy samples.
A DPO policy has no reward model; its implicit reward (the log-probability ratio to its reference) is probed alike.

`score_rollouts` scores every response of every rollout with one RM (in this process: the probe is a few
thousand short sequences) and returns, per prompt, its category, the scores, the ground truths and whether the
prompt is from the reserve no training stage sees. `hrlaif_ray.mechanism.correct_above_wrong` turns them into
the share of (correct, wrong) and (refusal, compliance) pairs the RM orders right.
"""

from __future__ import annotations

from hrlaif_ray.data.chat import pad_token_id, prompt_token_ids, response_token_ids
from hrlaif_ray.data.records import PromptRecord, RolloutRecord
from hrlaif_ray.labeling.verifiers import ground_truth
from hrlaif_ray.reward.implicit import ImplicitRewardModel, load_reward_model


def score_rollouts(
    folder: str,
    prompts: dict[str, PromptRecord],
    rollouts: list[RolloutRecord],
    batch: int = 64,
    max_prompt_tokens: int = 256,
    reference: str | None = None,
) -> list[dict]:
    """[{prompt_id, category, unseen, scores, truths}] for each rollout whose prompt has a ground truth. With a
    `reference`, `folder` is a DPO policy and the score its implicit reward, log pi(y|x) - log pi_ref(y|x)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    pad = pad_token_id(tok)
    heads, tails, owners = [], [], []
    out = []
    for r in rollouts:
        prompt = prompts.get(r.prompt_id)
        if prompt is None:
            raise KeyError(f"rollout of prompt {r.prompt_id!r} has no prompt record")
        truths = [ground_truth(prompt, x.text) for x in r.responses]
        if all(t is None for t in truths):
            continue
        head = prompt_token_ids(tok, prompt.text, max_prompt_tokens)
        for x in r.responses:
            heads.append(head)
            tails.append(response_token_ids(tok, x.text))
            owners.append(len(out))
        out.append(
            {
                "prompt_id": prompt.id,
                "category": prompt.category,
                "unseen": bool(prompt.metadata.get("unseen")),
                "scores": [],
                "truths": truths,
            }
        )
    if reference is None:  # a scalar RM, or an implicit one (its own reference)
        rm = load_reward_model(folder).eval()
        starts = [len(h) for h in heads] if getattr(rm, "reads_responses", False) else None
        sequences = [h + t for h, t in zip(heads, tails)]
        kwargs = {"response_starts": starts} if starts is not None else {}
        scores = rm.score_sequences(sequences, pad, batch, **kwargs).tolist()
    else:
        # DPO's implicit reward, log pi(y|x) - log pi_ref(y|x) (beta, a positive scale, leaves every order as it is)
        model = ImplicitRewardModel.from_parts(folder, reference, beta=1.0)
        scores = model.raw_rewards(heads, tails, pad, batch).tolist()
    for i, s in enumerate(scores):
        out[owners[i]]["scores"].append(s)
    return out
