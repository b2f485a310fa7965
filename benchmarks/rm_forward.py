"""Reward-model scoring cost per prompt: naive pairwise vs O(k) vs O(k) with the shared prompt prefix.

For one prompt of 256 tokens and K responses of 64 (K = 2, 4, 8), on the tiny demo model and SmolLM2-135M:
- naive: what pairwise trainers do, every (chosen, rejected) pair of the K(K-1)/2 as two sequences, batched:
  K(K-1) forwards of prompt+response;
- ok: each response once, batched: K forwards of prompt+response;
- prefix: the prompt once, its key/value cache reused for the K responses.
Forward only (inference mode, float32), median of repeats, all in one run. speedup = naive / ok; target
>= 0.8 x (K - 1). Extra rows with a 1024-token prompt show the prefix gain growing with the prompt.
Run: `python -m benchmarks.rm_forward [--quick]`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from itertools import combinations

import torch

from benchmarks.common import print_table, write_results
from hrlaif_ray.config import ModelConfig, PromptMixConfig
from hrlaif_ray.data.prompt_mix import generate_prompt_mix
from hrlaif_ray.models import build_tiny_causal_lm, train_bpe_tokenizer
from hrlaif_ray.reward import RewardModel


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench(rm: RewardModel, vocab: int, k: int, prompt_len: int, response_len: int, repeats: int) -> dict:
    gen = torch.Generator().manual_seed(k)
    prompt = torch.randint(5, vocab, (1, prompt_len), generator=gen)
    responses = torch.randint(5, vocab, (k, response_len), generator=gen)
    full = torch.cat([prompt.expand(k, -1), responses], 1)
    ones = torch.ones_like(full)
    pairs = list(combinations(range(k), 2))
    naive_ids = torch.cat([full[[a for a, _ in pairs]], full[[b for _, b in pairs]]])  # chosen rows, rejected rows

    with torch.inference_mode():
        naive = timed(lambda: rm(naive_ids, torch.ones_like(naive_ids)), repeats)
        ok = timed(lambda: rm(full, ones), repeats)
        prefix = timed(
            lambda: rm.score_shared_prefix(prompt, torch.ones_like(prompt), responses, torch.ones_like(responses)),
            repeats,
        )
        same = torch.allclose(
            rm.score_shared_prefix(prompt, torch.ones_like(prompt), responses, torch.ones_like(responses), raw=True),
            rm(full, ones, raw=True),
            atol=1e-4,
        )
    return {
        "K": k,
        "prompt_tokens": prompt_len,
        "naive_s": round(naive, 4),
        "ok_s": round(ok, 4),
        "prefix_s": round(prefix, 4),
        "speedup": round(naive / ok, 2),
        "target": round(0.8 * (k - 1), 2),
        "prefix_vs_ok": round(ok / prefix, 2),
        "prefix_matches": bool(same),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="tiny model only")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    tok = train_bpe_tokenizer([r.text for r in generate_prompt_mix(PromptMixConfig(n=500))])
    models = [
        (
            "tiny-qwen2-575k",
            RewardModel(build_tiny_causal_lm(ModelConfig(max_position_embeddings=2048), tok).model).eval(),
            len(tok),
            15,
        )
    ]
    if not args.quick:
        from hrlaif_ray.models.smollm2 import export_smollm2

        models.append(("smollm2-135m", RewardModel.from_pretrained(export_smollm2()).eval(), 49152, 2))
    rows = []
    for name, rm, vocab, repeats in models:
        for k, prompt_len in [(2, 256), (4, 256), (8, 256), (4, 1024)]:
            row = {"model": name, **bench(rm, vocab, k, prompt_len, 64, repeats)}
            rows.append(row)
            print_table([row], list(row))
    cols = [
        "model",
        "K",
        "prompt_tokens",
        "naive_s",
        "ok_s",
        "prefix_s",
        "speedup",
        "target",
        "prefix_vs_ok",
        "prefix_matches",
    ]
    print("\nRM scoring of K responses (64 tokens) to one prompt, forward only, float32")
    print_table(rows, cols)
    print(f"wrote {write_results('rm_forward', rows, threads=torch.get_num_threads(), device='cpu')}")


if __name__ == "__main__":
    main()
