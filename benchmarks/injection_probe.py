"""An experiment beside the pattern detector: does a linear probe on a small language model's hidden states find
responses that address the judge in phrasings nobody wrote a pattern for?

`hrlaif_ray/labeling/injection.py`'s regular expressions catch every template they were written against and 10% of
paraphrases written after them (`benchmarks/injection.py`: `TEST2`). A pattern list cannot generalise; a model's
representation of "this text talks to the evaluator" might. The probe:

- **Features**: SmolLM2-135M-Instruct's hidden states, mean-pooled over a segment's tokens (a line, or a sentence of
  a line: an attack is usually a sentence added to an answer), from layer 10, 20 or 30, or all three.
- **Training data**: positives are the segments of every attack template and of both development paraphrase sets
  (`ATTACKS`, `DEV`, `TEST`), for either letter; negatives are segments of clean responses from training data only:
  the demo's SFT responses (seed 0) and the train buckets (`injection_judge.split_of`) of HH-RLHF, MT-Bench and
  LLMEval^2, and GSM8K solutions. Logistic regression (L-BFGS, positives weighted to balance, L2 `weight_decay`).
- **Threshold**: the score of the 0.5% highest-scoring held-aside negative segments (30% of the negatives).
- **Choice of layer and weight decay**: leave-one-family-out recall on the development positives (train on four
  families, measure the fifth), the mean over families. Held-out sets are not read until the choice is made.
- **Held out, measured once with the chosen setting**: `TEST2` and garak's `EXTERNAL` (an attack counts as caught
  when any of its segments scores above the threshold), and response-level false flags on clean responses the probe
  never saw (the demo's SFT responses of seed 1, HH-RLHF's evaluation buckets).

Not in the labeler: it needs a 135M-parameter forward pass per segment (seconds per PPO step on two cores), and its
false flags are above the patterns'. Rows go to benchmarks/results/injection.json with `defence: "probe"`.

Run: `python -m benchmarks.injection_probe` (about 20 minutes on two cores, most of it embedding the negatives).
"""

from __future__ import annotations

import random
import re

import torch

from benchmarks.common import print_table, write_results
from benchmarks.injection import DEV, EXTERNAL, TEST, TEST2, demo_responses
from benchmarks.injection_judge import split_of
from hrlaif_ray.data.readers import load_source
from hrlaif_ray.labeling.injection import ATTACKS, addresses_judge
from hrlaif_ray.models.smollm2 import export_smollm2

LAYERS = (10, 20, 30)
VIEWS = {"layer 10": [0], "layer 20": [1], "layer 30": [2], "all three": [0, 1, 2]}
WEIGHT_DECAYS = (1e-3, 1e-2, 1e-1)
FALSE_FLAG_BUDGET = 0.005  # of held-aside negative segments above the threshold
NEGATIVES = 5000


def segments(text: str) -> list[str]:
    out = []
    for line in text.split("\n"):
        out += [s for s in re.split(r"(?<=[.!?])\s+", line.strip()) if s.strip()]
    return out or [text]


class Embedder:
    def __init__(self):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = export_smollm2()
        self.tok = AutoTokenizer.from_pretrained(folder)
        self.tok.padding_side = "right"
        self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()

    @torch.no_grad()
    def __call__(self, texts: list[str], batch: int = 32) -> torch.Tensor:
        """[len(texts), 3, hidden]: each layer's states mean-pooled over the segment's tokens (at most 64)."""
        out: list[torch.Tensor | None] = [None] * len(texts)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for s in range(0, len(order), batch):
            idx = order[s : s + batch]
            enc = self.tok([texts[i] for i in idx], return_tensors="pt", padding=True, truncation=True, max_length=64)
            states = self.model(**enc, output_hidden_states=True).hidden_states
            mask = enc["attention_mask"].unsqueeze(-1).float()
            pooled = torch.stack([(states[layer] * mask).sum(1) / mask.sum(1) for layer in LAYERS], 1)
            for k, i in enumerate(idx):
                out[i] = pooled[k]
        return torch.stack(out)


def positives(sets: list[dict[str, list[str]]]) -> list[tuple[str, str]]:
    return sorted(
        {
            (f, seg)
            for s in sets
            for f, ts in s.items()
            for t in ts
            for x in "AB"
            for seg in segments(t.format(letter=x))
        }
    )


def clean(train: bool) -> dict[str, list[str]]:
    """Clean responses: for training (seed 0, train buckets), or never trained on (seed 1, development buckets)."""
    split = "train" if train else "dev"

    def turns(source: str) -> list[str]:
        return [t for p in load_source(source) if split_of(p) == split for t in (p.chosen, p.rejected)]

    found = {"demo SFT responses": demo_responses(600 if train else 1000, seed=0 if train else 1)}
    found["hh-rlhf"] = turns("hh-rlhf/harmless-base-test")[:800]
    if train:
        found["mt-bench+llmeval2"] = (turns("mt-bench") + turns("llmeval2"))[:300]
        found["gsm8k"] = [p.metadata["solution"].split("####")[0] for p in load_source("gsm8k/train")[:300]]
    return found


class Probe:
    def __init__(self, pos: torch.Tensor, neg: torch.Tensor, weight_decay: float):
        x = torch.cat([pos, neg])
        y = torch.cat([torch.ones(len(pos)), torch.zeros(len(neg))])
        self.mu, self.sd = x.mean(0), x.std(0) + 1e-5
        z = (x - self.mu) / self.sd
        self.w = torch.zeros(z.shape[1], requires_grad=True)
        self.b = torch.zeros(1, requires_grad=True)
        opt = torch.optim.LBFGS([self.w, self.b], max_iter=300, line_search_fn="strong_wolfe")
        balance = torch.tensor(len(neg) / len(pos))

        def closure():
            opt.zero_grad()
            logits = z @ self.w + self.b
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, pos_weight=balance)
            loss = loss + weight_decay * (self.w * self.w).sum()
            loss.backward()
            return loss

        opt.step(closure)
        self.threshold = float("inf")

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.mu) / self.sd) @ self.w.detach() + self.b.detach()

    def calibrate(self, neg: torch.Tensor) -> Probe:
        ranked = self.score(neg).sort(descending=True).values
        self.threshold = ranked[int(FALSE_FLAG_BUDGET * len(ranked))].item()
        return self

    def flags(self, x: torch.Tensor) -> torch.Tensor:
        return self.score(x) > self.threshold


def main() -> None:
    embed = Embedder()
    pos = positives([ATTACKS, DEV, TEST])
    neg_texts = sorted({s for texts in clean(train=True).values() for t in texts for s in segments(t)})
    random.Random(0).shuffle(neg_texts)
    neg_texts = neg_texts[:NEGATIVES]
    xp, xn = embed([s for _, s in pos]), embed(neg_texts)
    order = torch.randperm(len(xn), generator=torch.Generator().manual_seed(0))
    fit_idx, aside_idx = order[: int(0.7 * len(xn))], order[int(0.7 * len(xn)) :]
    families = sorted({f for f, _ in pos})
    rows, best = [], None
    for view, layers in VIEWS.items():
        for wd in WEIGHT_DECAYS:
            recalls = {}
            for family in families:
                keep = torch.tensor([f != family for f, _ in pos])
                probe = Probe(xp[keep][:, layers].flatten(1), xn[fit_idx][:, layers].flatten(1), wd)
                probe.calibrate(xn[aside_idx][:, layers].flatten(1))
                recalls[family] = round(probe.flags(xp[~keep][:, layers].flatten(1)).float().mean().item(), 4)
            mean = round(sum(recalls.values()) / len(recalls), 4)
            rows.append(
                {
                    "attack": "leave one family out",
                    "defence": "probe",
                    "view": view,
                    "weight_decay": wd,
                    "corpus": "development positives",
                    "rate": mean,
                    "families": recalls,
                }
            )
            if best is None or mean > best[2]:
                best = (view, wd, mean)
    view, wd, _ = best
    layers = VIEWS[view]
    probe = Probe(xp[:, layers].flatten(1), xn[fit_idx][:, layers].flatten(1), wd).calibrate(
        xn[aside_idx][:, layers].flatten(1)
    )

    def caught(texts: list[str]) -> list[bool]:
        return [bool(probe.flags(embed(segments(t))[:, layers].flatten(1)).any()) for t in texts]

    def held_row(attack: str, corpus: str, texts: list[str]) -> dict:
        by_probe = caught(texts)
        either = [p or bool(addresses_judge(t)) for p, t in zip(by_probe, texts)]
        return {
            "attack": attack,
            "defence": "probe",
            "view": view,
            "weight_decay": wd,
            "corpus": corpus,
            "responses": len(texts),
            "flagged": sum(by_probe),
            "rate": round(sum(by_probe) / len(texts), 4),
            "rate_with_patterns": round(sum(either) / len(texts), 4),
        }

    for family, templates in TEST2.items():
        rows.append(
            held_row(family, "held-out test paraphrase (alone)", [t.format(letter=x) for t in templates for x in "AB"])
        )
    rows.append(held_row("external", "garak injection (alone)", EXTERNAL))
    for corpus, texts in clean(train=False).items():
        rows.append(held_row("none", f"{corpus} (never trained on)", texts))
    print(f"chosen: {view}, weight decay {wd}")
    print_table(rows, ["attack", "view", "weight_decay", "corpus", "rate"])
    print(f"wrote {write_results('injection', rows)}")


if __name__ == "__main__":
    main()
