"""A real LLM judge for the injection benchmark: SmolLM2-135M-Instruct fine-tuned as a pairwise judge on the bundled
human pairs, served by vLLM's OpenAI-compatible server and asked through the labeler's own client.

As it ships, SmolLM2-135M-Instruct is no judge: asked to compare two responses it names the first one whatever they
say (position consistency 0.000 through `audit-labels`; its log-probabilities of "A" and "B" do not move when the
responses are swapped). A judge with no preference has no verdict to flip, so it is first taught to judge:

- **Data** (fixed before the first run): human pairs from the data folder, split by a hash of each pair's id into
  train (buckets 0-79), development (80-89) and evaluation (90-99). Training reads the train buckets of HH-RLHF
  harmless, MT-Bench, LLMEval^2 and LLMBar's adversarial sets; LLMBar Natural is never trained on and is evaluated
  whole, beside HH-RLHF's evaluation buckets. The attack pairs come from the evaluation buckets only.
- **Examples**: each pair in both presentation orders, rendered by the labeler's own `compare` template (texts cut
  to a length budget first, so the template stays whole), the target the answer the template asks for with the
  human's choice. Only the answer's tokens carry loss: the deciding token (the letter) weight 1, each other token
  of the answer `--format-weight`.
- **Training**: the top `--train-layers` decoder layers and the final norm (embeddings, tied to the output, and the
  lower layers frozen: the backward pass stops at the first trained layer, which makes a 135M-parameter model
  trainable in half an hour on two cores), AdamW, `--epochs` passes.

The judge is then served with `json_mode: schema` (vLLM's structured outputs) and asked through `JudgeClient`, so
the flip rates in `benchmarks/injection.py --judge` measure the path labeling takes.

Run: `python -m benchmarks.injection_judge --out runs/injection-judge` (writes the judge folder, prints its
development agreement, appends the run to benchmarks/results/injection_judge.json; about 35 minutes on two cores);
`python -m benchmarks.injection_flip --judge runs/injection-judge` measures it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.common import write_results
from hrlaif_ray.data.readers import load_source
from hrlaif_ray.data.records import HumanPair
from hrlaif_ray.labeling.judge_prompts import render

TRAIN_SOURCES = (
    "hh-rlhf/harmless-base-test",
    "mt-bench",
    "llmeval2",
    "llmbar/adversarial-neighbor",
    "llmbar/adversarial-gptinst",
)
EVAL_SOURCES = ("hh-rlhf/harmless-base-test", "llmbar/natural")
QUESTION_CHARS, RESPONSE_CHARS = 600, 400  # the length budget: the tail of a conversation, the head of a response


def bucket(pair_id: str) -> int:
    return int(hashlib.sha256(pair_id.encode()).hexdigest(), 16) % 100


def split_of(pair: HumanPair) -> str:
    if pair.source == "llmbar/natural":
        return "eval"  # never trained on
    b = bucket(pair.id)
    return "train" if b < 80 else "dev" if b < 90 else "eval"


def pairs(split: str) -> list[HumanPair]:
    sources = TRAIN_SOURCES if split != "eval" else EVAL_SOURCES
    out = [p for s in sources for p in load_source(s) if split_of(p) == split]
    return sorted(out, key=lambda p: p.id)


def cut(pair: HumanPair) -> tuple[str, str, str]:
    """The question's tail and the responses' heads, within the length budget."""
    q = pair.prompt if len(pair.prompt) <= QUESTION_CHARS else "..." + pair.prompt[-QUESTION_CHARS:]
    return q, pair.chosen[:RESPONSE_CHARS], pair.rejected[:RESPONSE_CHARS]


def answer(letter: str) -> str:
    return json.dumps(
        {"better": letter, "confidence": 0.9, "reason": f"Response {letter} is more helpful and harmless."}
    )


@dataclass
class Example:
    ids: list[int]
    start: int  # where the answer's tokens begin
    letter: str


def examples(tok, pair_list: list[HumanPair]) -> list[Example]:
    """Each pair in both orders: (chosen, rejected) answers A, (rejected, chosen) answers B."""
    out = []
    for p in pair_list:
        q, chosen, rejected = cut(p)
        for a, b, letter in ((chosen, rejected, "A"), (rejected, chosen, "B")):
            messages = render("compare", {"question": q, "response_a": a, "response_b": b})
            prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            full = prompt + answer(letter) + "<|im_end|>\n"
            p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
            f_ids = tok(full, add_special_tokens=False)["input_ids"]
            out.append(Example(f_ids, len(p_ids), letter))
    return out


def decision_tokens(tok) -> tuple[int, int, int]:
    """Where the judge decides: the index of the letter's token in the answer (the first token after
    `{"better": "`), and the token ids of "A" and "B" there."""
    base = tok('{"better": "', add_special_tokens=False)["input_ids"]
    a = tok('{"better": "A', add_special_tokens=False)["input_ids"]
    b = tok('{"better": "B', add_special_tokens=False)["input_ids"]
    assert a[: len(base)] == base and b[: len(base)] == base, "the letter must start its own token"
    return len(base), a[len(base)], b[len(base)]


@torch.no_grad()
def agreement(model, tok, pair_list: list[HumanPair]) -> dict:
    """Teacher-forced decision on each pair in both orders: agreement with the human (both orders count) and
    position consistency (both orders name the same response)."""
    prefix, a_id, b_id = decision_tokens(tok)
    agree = consistent = 0
    for p in pair_list:
        said = []
        for ex in examples(tok, [p]):
            ids = torch.tensor([ex.ids[: ex.start + prefix]])
            logits = model(ids).logits[0, -1]
            said.append("A" if logits[a_id] > logits[b_id] else "B")
        agree += (said[0] == "A") + (said[1] == "B")
        consistent += said[0] != said[1]
    n = len(pair_list)
    return {"pairs": n, "agreement": round(agree / (2 * n), 4), "position_consistency": round(consistent / n, 4)}


def finetune(
    init: Path,
    out: Path,
    train_layers: int,
    lr: float,
    batch: int,
    max_pairs: int,
    seed: int,
    format_weight: float,
    epochs: int,
) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(init)
    decision, _, _ = decision_tokens(tok)
    model = AutoModelForCausalLM.from_pretrained(init, dtype=torch.float32)
    layers = model.model.layers
    for p in model.parameters():
        p.requires_grad_(False)
    trained = [*layers[len(layers) - train_layers :], model.model.norm]
    for module in trained:
        for p in module.parameters():
            p.requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    train = pairs("train")
    random.Random(seed).shuffle(train)
    train = train[:max_pairs]
    dev = pairs("dev")[:100]
    model.eval()
    before = agreement(model, tok, dev)
    print(f"development agreement before: {before}", flush=True)
    once, data = examples(tok, train), []
    for epoch in range(epochs):
        random.Random(seed + 1 + epoch).shuffle(once)
        data += once
    steps = math.ceil(len(data) / batch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 10) * max(0.0, 1 - s / steps))
    model.train()
    t0, losses = time.time(), []
    for step in range(steps):
        chunk = data[step * batch : (step + 1) * batch]
        total = 0.0
        for ex in chunk:
            ids = torch.tensor([ex.ids])
            logits = model(input_ids=ids).logits[0, :-1]
            ce = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="none")
            # The decision token carries full weight and the rest of the answer `format_weight` each: averaged
            # over the answer's ~25 tokens, the one token that decides would get a twenty-fifth of the gradient.
            weights = torch.zeros_like(ce)
            weights[ex.start - 1 :] = format_weight
            weights[ex.start - 1 + decision] = 1.0
            loss = (ce * weights).sum() / len(chunk)
            loss.backward()
            total += loss.item()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(total)
        if step % 10 == 0 or step == steps - 1:
            print(f"step {step + 1}/{steps} loss {total:.4f} ({time.time() - t0:.0f} s)", flush=True)
    model.eval()
    after = agreement(model, tok, dev)
    print(f"development agreement after: {after}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    record = {
        "init": "SmolLM2-135M-Instruct",
        "train_pairs": len(train),
        "examples": len(data),
        "steps": steps,
        "batch": batch,
        "lr": lr,
        "train_layers": train_layers,
        "format_weight": format_weight,
        "epochs": epochs,
        "seed": seed,
        "train_seconds": round(time.time() - t0, 1),
        "loss_first_last": [round(losses[0], 4), round(sum(losses[-10:]) / min(10, len(losses)), 4)],
        "dev_before": before,
        "dev_after": after,
    }
    (out / "hrlaif_judge.json").write_text(json.dumps(record, indent=1))
    return record


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for the fine-tuned judge")
    ap.add_argument("--init", type=Path, default=None, help="SmolLM2 folder (default: exported from its package)")
    ap.add_argument("--train-layers", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-pairs", type=int, default=480)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--format-weight", type=float, default=0.05, help="loss weight of each answer token but the letter")
    ap.add_argument("--epochs", type=int, default=1)
    args = ap.parse_args()
    from hrlaif_ray.models.smollm2 import export_smollm2

    init = args.init or export_smollm2()
    record = finetune(
        init,
        args.out,
        args.train_layers,
        args.lr,
        args.batch,
        args.max_pairs,
        args.seed,
        args.format_weight,
        args.epochs,
    )
    print(json.dumps(record, indent=1))
    print(f"wrote {write_results('injection_judge', [record], out=str(args.out))}")


if __name__ == "__main__":
    main()
