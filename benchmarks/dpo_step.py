"""One DPO optimizer step, ours against TRL 1.12's `DPOTrainer` on the same pairs, model, batch and precision, and
the step's compute floor, side by side in one run.

Settings (matched): 16 prompts of the generated mix, two responses each (one pair a prompt, TRL's format: the
chosen and the rejected answer), fp32, one optimizer step of all 32 sequences (one micro-batch of 16 prompts in
both; ours runs its 32 responses as 4 length-sorted, padding-trimmed forwards of 8, `forward_rows`, and one
backward; TRL pads chosen and rejected to the longest), AdamW, beta 0.1, the sigmoid loss, the reference's log-probs computed before the steps in both (ours:
`hrlaif dpo` computes them once; TRL: `precompute_ref_log_probs=True`), so a step is the policy's forward and
backward. Ours: `LearnerGroup.train_preferences` on one Ray learner rank (DeepSpeed, 2 threads), timed at the
controller (object-store put and the call included); TRL: its trainer in this process with 2 threads, timed from
step begin to step end. The first step is warm-up; the row gives the median of the rest.

Compute floor = 6 x (the body's multiplying parameters x every token + the output projection x the response
tokens: the logits at prompt positions are not needed, ours skips them) over the fp32 matmul rate of 2 threads
measured in the same run. Tokens are the sequences' real tokens (no padding).

Run: `python -m benchmarks.dpo_step [--models 50m,smollm2] [--steps 4] [--no-trl]` (TRL needs the `bench` extra:
`pip install -e .[bench]`); results in benchmarks/results/dpo_step.json.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import print_table, write_results
from benchmarks.ppo_step import make_model, matmul_rate
from hrlaif_ray.config import LearnerConfig, PromptMixConfig
from hrlaif_ray.data.chat import pad_token_id, prompt_token_ids, response_token_ids
from hrlaif_ray.data.prompt_mix import generate_prompt_mix

PROMPTS = 16
FORWARD_ROWS = 8
BETA = 0.1
FILLER = "First I read the question again, then I work through it one step at a time and check each step."


def pairs() -> list[tuple[str, str, str]]:
    """(prompt, chosen, rejected) texts: the right answer with some reasoning against a wrong one."""
    rng = random.Random(0)
    out = []
    mix = PromptMixConfig(n=64, seed=7, math=1.0, multiple_choice=0.0, harmful=0.0, open_qa=0.0)
    for p in [p for p in generate_prompt_mix(mix) if p.category == "math"][:PROMPTS]:
        a = int(p.answer)
        words = FILLER.split()[: rng.randint(4, len(FILLER.split()))]
        out.append((p.text, f"{' '.join(words)} The answer is {a}.", f"The answer is {a + rng.randint(1, 9)}."))
    return out


def token_counts(folder: str) -> dict[str, int]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    prompt = response = 0
    for p, c, r in pairs():
        head = len(prompt_token_ids(tok, p, 256))
        for text in (c, r):
            prompt += head
            response += len(response_token_ids(tok, text))
    return {"prompt_tokens": prompt, "response_tokens": response}


def floor_s(folder: str, counts: dict[str, int], rate: float) -> float:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    head = model.get_output_embeddings().weight.numel()
    body = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear)) - (
        0 if model.config.tie_word_embeddings else head
    )
    tokens = counts["prompt_tokens"] + counts["response_tokens"]
    return 6 * (body * tokens + head * counts["response_tokens"]) / rate


# ------------------------------------------------------------------------------------------------ ours


def ours(folder: str, steps: int) -> list[float]:
    import ray
    from transformers import AutoTokenizer

    from actors.learner import LearnerGroup
    from actors.runtime import actor_env
    from cluster.dpo import group_sequence_logps
    from hrlaif_ray.dpo.batch import preference_batch
    from hrlaif_ray.reward.data import RMExample

    tok = AutoTokenizer.from_pretrained(folder)
    examples = [
        RMExample(
            f"b{i}",
            "math",
            prompt_token_ids(tok, p, 256),
            [response_token_ids(tok, c), response_token_ids(tok, r)],
            [(0, 1, 1.0)],
        )
        for i, (p, c, r) in enumerate(pairs())
    ]
    batch = preference_batch(examples, pad_token_id(tok))
    os.environ.setdefault("RAY_ENABLE_ZERO_COPY_TORCH_TENSORS", "1")
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        group = LearnerGroup(
            "actor",
            folder,
            [{"num_cpus": 1, "runtime_env": actor_env(2)}],
            learner=LearnerConfig(lr=1e-6, zero_stage=0),
            micro_batch=PROMPTS,
            grad_accum=1,
            threads=2,
        )
        batch = batch.with_reference(group_sequence_logps(group, batch))
        times = []
        for _ in range(steps):
            t = time.perf_counter()
            group.train_preferences(
                ray.put(batch),
                len(batch),
                beta=BETA,
                loss_type="sigmoid",
                margin=0.0,
                sft_weight=0.0,
                forward_rows=FORWARD_ROWS,
            )
            times.append(time.perf_counter() - t)
        return times
    finally:
        ray.shutdown()


# ------------------------------------------------------------------------------------------------- TRL


def trl(folder: str, root: Path, steps: int) -> list[float]:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(folder)
    rows = [
        {
            "prompt": [{"role": "user", "content": p}],
            "chosen": [{"role": "assistant", "content": c}],
            "rejected": [{"role": "assistant", "content": r}],
        }
        for p, c, r in pairs()
    ]
    data = Dataset.from_list(rows * steps)
    args = DPOConfig(
        output_dir=str(root / "trl"),
        per_device_train_batch_size=PROMPTS,
        gradient_accumulation_steps=1,
        max_steps=steps,
        learning_rate=1e-6,
        beta=BETA,
        loss_type=["sigmoid"],
        precompute_ref_log_probs=True,
        max_length=None,
        report_to=[],
        save_strategy="no",
        logging_steps=10**6,
        use_cpu=True,
        bf16=False,
        fp16=False,
        dataloader_num_workers=0,
        seed=0,
    )
    begin: list[float] = []
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            begin.append(time.perf_counter())

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - begin[-1])

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    trainer = DPOTrainer(model=model, args=args, processing_class=tok, train_dataset=data, callbacks=[Clock()])
    trainer.train()
    return times


# ------------------------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="50m,smollm2")
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps per run (the first is warm-up)")
    parser.add_argument("--no-trl", action="store_true")
    parser.add_argument("--out", default="dpo_step", help="results name (benchmarks/results/NAME.json)")
    args = parser.parse_args()
    rate = matmul_rate()
    print(f"fp32 matmul rate {rate / 1e9:.1f} GFLOP/s (2 threads)", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="dpo-bench-") as tmp:
        root = Path(tmp)
        for kind in [m for m in args.models.split(",") if m]:
            folder = make_model(kind, root)
            counts = token_counts(folder)
            floor = floor_s(folder, counts, rate)
            mine = ours(folder, args.steps)
            theirs = None if args.no_trl else trl(folder, root / f"trl-{kind}", args.steps)
            step = statistics.median(mine[1:])
            trl_s = statistics.median(theirs[1:]) if theirs else None
            rows.append(
                {
                    "model": kind,
                    "step_s": step,
                    "trl_step_s": trl_s,
                    "ratio_vs_trl": step / trl_s if trl_s else None,
                    "floor_s": floor,
                    "step_vs_floor": step / floor,
                    "trl_vs_floor": trl_s / floor if trl_s else None,
                    "steps_s": mine,
                    "trl_steps_s": theirs,
                    **counts,
                }
            )
            print_table(rows, ["model", "step_s", "trl_step_s", "ratio_vs_trl", "floor_s", "step_vs_floor"])
    path = write_results(
        args.out,
        rows,
        matmul_gflops=rate / 1e9,
        settings={
            "prompts": PROMPTS,
            "forward_rows": FORWARD_ROWS,
            "pairs_per_prompt": 1,
            "beta": BETA,
            "dtype": "float32",
            "threads": 2,
        },
        targets={"ratio_vs_trl": "<= 0.9", "step_vs_floor": "<= 1.5"},
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
