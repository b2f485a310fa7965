"""PPO step time, phase by phase, against TRL's PPO trainer on the same model, batch and lengths; vLLM vs HF
generate; weight sync vs memcpy; and each phase's compute floor.

Settings (matched with TRL): 32 prompts x 1 response x 32 new tokens, fp32, one PPO epoch, one optimizer step
per PPO step (gradients accumulated over 4 micro-batches of 8 rows, `--micro-batch` rows, which bounds activation
memory: SmolLM2's 49k-token logits for 32 rows at once do not fit a small machine's memory), a critic (GAE) and a reward model (the
policy's backbone with a fresh scalar head) in both. Ours sorts rows by length before cutting micro-batches and
trims their all-padding columns; TRL cuts its padded batch in order.
Models: the tiny demo Qwen2 (575k), a ~50M Qwen2 (hidden 768, 8 layers, 12 heads, 2 KV heads, MLP 2048,
the demo's 384-token BPE) and SmolLM2-135M. Ours runs `cluster.ppo.run_ppo` on a local Ray cluster: every role
one actor, vLLM with 2 threads, the learners and the RM with one thread each, so the phases that overlap (the
reward, reference and critic forwards; the actor and critic updates) share the machine's cores; TRL runs its phases one
after another in one process with 2 threads. Overlapping phases' times run from their common start, so the
phase columns add up to more than the step.

Compute floor of a phase = its matmul FLOPs (2 N tokens forward, 6 N tokens forward+backward, N the
parameters that multiply; tokens = 32 x (longest prompt + 32), the padded batch) over the fp32 matmul rate of 2
threads measured in the same run. Phases that overlap share the cores, so the figures that count are the groups':
forwards_vs_floor = the reward/reference/critic forwards' wall time over the sum of their floors, updates_vs_floor
= the actor and critic updates' wall time over the sum of theirs (the per-phase *_vs_floor columns divide one
overlapped phase by its own floor). sync_vs_memcpy = the sync's
bandwidth (weight bytes / time/sync) over a plain memcpy's. vllm_vs_hf: SmolLM2-135M, EOS-terminated sampling.

Each model runs once per weight-sync method (`--sync`, both by default: `broadcast` bucket by bucket over a process
group, `object_store` the whole state dict put once) and LoRA rank (`--lora`, 0 by default: full fine-tuning; r > 0:
rank-r adapters on every linear layer of the actor and the critic, the actor its own reference, syncs of the
adapters only), side by side in one run; sync_bytes is what left the actor's rank 0 (sync_vs_weights: over the
whole weights), sync_rank0_peak_mb the most rank 0 held above its start during the sync, and *_peak_rss_mb each
learner role's largest process peak (on CPU, everything it holds).

Run: `python -m benchmarks.ppo_step [--models tiny,50m,smollm2] [--steps 4] [--no-trl] [--sync broadcast] [--lora 0,16]`; TRL needs the `bench`
extra (`pip install -e .[bench]`: trl==1.12.0, the last release with PPO, as trl.experimental.ppo).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import print_table, write_results
from hrlaif_ray.config import ModelConfig, PPOJob, PromptMixConfig
from hrlaif_ray.data.chat import left_pad, pad_token_id, prompt_token_ids
from hrlaif_ray.data.prompt_mix import generate_prompt_mix
from hrlaif_ray.data.sft_mix import tokenizer_corpus

PROMPTS, RESPONSE_TOKENS = 32, 32
MICRO = (
    8  # rows per forward/backward in both by default (gradients accumulate over 4 micro-batches: one optimizer step)
)
PHASES = ["generate", "reward", "reference", "actor_logprobs", "critic", "actor_train", "critic_train", "sync"]
FORWARDS, UPDATES = ("reward", "reference", "critic"), ("actor_train", "critic_train")  # what overlaps in ours
MODEL_50M = ModelConfig(
    hidden_size=768, num_layers=8, num_heads=12, num_kv_heads=2, intermediate_size=2048, max_position_embeddings=512
)


def matmul_rate(threads: int = 2, n: int = 1024) -> float:
    """fp32 FLOP/s of an n x n GEMM with `threads` threads (median of 10)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(10):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times)


def memcpy_bandwidth(nbytes: int = 256 * 2**20) -> float:
    x = torch.ones(nbytes // 4)  # touched pages: an untouched source reads as shared zero pages, far too fast
    y = torch.zeros_like(x)
    y.copy_(x)
    times = []
    for _ in range(5):
        t = time.perf_counter()
        y.copy_(x)
        times.append(time.perf_counter() - t)
    return nbytes / statistics.median(times)


def matmul_params(folder: str) -> tuple[int, int]:
    """(parameters that multiply per token: every Linear plus the output projection, total bytes of weights synced)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    n = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    if model.config.tie_word_embeddings:  # lm_head is the embedding: the lookup is free, the projection is not
        n += model.get_input_embeddings().weight.numel()
    return n, sum(p.numel() * p.element_size() for p in model.state_dict().values())  # a tied lm_head is synced too


def make_model(kind: str, root: Path) -> str:
    from hrlaif_ray.models import build_tiny_causal_lm, save_model_folder, train_bpe_tokenizer
    from hrlaif_ray.models.smollm2 import export_smollm2

    if kind == "smollm2":
        return str(export_smollm2(root / "smollm2"))
    tok = train_bpe_tokenizer(tokenizer_corpus(generate_prompt_mix(PromptMixConfig(n=2000))), 384)
    cfg = ModelConfig() if kind == "tiny" else MODEL_50M
    return str(save_model_folder(build_tiny_causal_lm(cfg, tok), tok, root / kind))


def prompt_texts() -> list[str]:
    return [p.text for p in generate_prompt_mix(PromptMixConfig(n=PROMPTS, seed=3, harmful=0.0, open_qa=0.0))]


# ------------------------------------------------------------------------------------------------ ours


def ours(
    folder: str,
    root: Path,
    steps: int,
    sync_method: str = "broadcast",
    lora_r: int = 0,
    lora_weights: str = "adapter",
    checkpointing: bool = False,
    micro: int = MICRO,
) -> dict:
    import ray

    from cluster.ppo import run_ppo
    from hrlaif_ray.data.records import PromptRecord
    from hrlaif_ray.data.schemas import write_records

    prompts = [PromptRecord(f"bench/{i}", "open_qa", t, "bench") for i, t in enumerate(prompt_texts())]
    write_records(root / "prompts.parquet", prompts)
    one = {"replicas": 1, "threads": 1}  # the learners and the RM: one thread each, their phases overlap
    job = PPOJob.model_validate(
        {
            "policy": folder,
            "output_dir": str(root / "ppo"),
            "prompts": str(root / "prompts.parquet"),
            "steps": steps,
            "prompts_per_step": PROMPTS,
            "logging": {"tensorboard": False},
            **{
                role: {
                    "lr": 1e-6,
                    "zero_stage": 2,
                    "gradient_checkpointing": checkpointing,
                    "lora": {"r": lora_r, "alpha": 2 * lora_r or 16},
                }
                for role in ("actor", "critic")
            },
            "algo": {
                "estimator": "gae",
                "epochs": 1,
                "mini_batches": 1,
                "micro_batch_size": micro,
                "use_rollout_logprobs": True,
            },  # TRL too takes the old log-probs from its sampler
            "rollout": {
                "backend": "vllm",
                "samples_per_prompt": 1,
                "max_new_tokens": RESPONSE_TOKENS,
                "max_model_len": 512,
                "lora_weights": lora_weights,
            },
            "reward": {"kind": "rm", "rm": folder},
            "sync": {"method": sync_method},
            "resources": {
                "bundle": {"CPU": 1},
                "actor": one,
                "critic": one,
                "reference": one,
                "reward": one,
                "rollout": {"replicas": 1, "threads": 2},
            },
        }
    )
    os.environ.setdefault("RAY_ENABLE_ZERO_COPY_TORCH_TENSORS", "1")
    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False)
    try:
        run_ppo(job)
    finally:
        ray.shutdown()
    rows = [json.loads(line) for line in (root / "ppo" / "metrics.jsonl").read_text().splitlines()][1:]  # skip warm-up
    out = {k: statistics.median(r[k] for r in rows) for k in rows[0] if k.startswith(("time/", "sync/"))}
    return out | {k: max(r[k] for r in rows) for k in rows[-1] if k.startswith("memory/")}


# ------------------------------------------------------------------------------------------------- TRL


def trl_step(
    folder: str, root: Path, steps: int, checkpointing: bool = False, micro: int = MICRO
) -> tuple[float, float]:
    """Median seconds per step of TRL's PPO trainer with the same model, prompts and lengths (one process), and of
    its generation in the step (`batch_generation`, timed around TRL's own function: under gradient checkpointing
    its policy samples in training mode, where transformers turns the KV cache off)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
    from trl.experimental.ppo import PPOConfig, PPOTrainer
    from trl.experimental.ppo import ppo_trainer as trl_ppo

    generation: list[float] = []
    sample = trl_ppo.batch_generation

    def timed_generation(*a, **k):
        t = time.perf_counter()
        try:
            return sample(*a, **k)
        finally:
            generation.append(time.perf_counter() - t)

    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(folder, padding_side="left")
    ids = [prompt_token_ids(tok, t, 256) for t in prompt_texts()]
    data = Dataset.from_dict({"input_ids": ids * steps})
    args = PPOConfig(
        output_dir=str(root / "trl"),
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=PROMPTS // micro,
        num_mini_batches=1,
        num_ppo_epochs=1,
        total_episodes=PROMPTS * steps,
        response_length=RESPONSE_TOKENS,
        local_rollout_forward_batch_size=PROMPTS,
        num_sample_generations=0,
        learning_rate=1e-6,
        report_to=[],
        save_strategy="no",
        logging_steps=10**6,
        use_cpu=True,
        bf16=False,
        fp16=False,
        temperature=1.0,
        stop_token=None,
        seed=0,
        gradient_checkpointing=checkpointing,
    )

    def lm():
        return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)

    def scalar():
        return AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1, dtype=torch.float32)

    stamps: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *a, **k):
            stamps.append(time.perf_counter())

    trainer = PPOTrainer(
        args=args,
        processing_class=tok,
        model=lm(),
        ref_model=lm(),
        reward_model=scalar(),
        value_model=scalar(),
        train_dataset=data,
        callbacks=[Clock()],
    )
    trl_ppo.batch_generation = timed_generation
    try:
        start = time.perf_counter()
        trainer.train()
    finally:
        trl_ppo.batch_generation = sample
    times = [b - a for a, b in zip([start, *stamps], stamps)]
    return statistics.median(times[1:] if len(times) > 1 else times), statistics.median(generation[1:] or generation)


# ------------------------------------------------------------------------------------------ generation


def vllm_vs_hf(folder: str, n_prompts: int = 32, max_tokens: int = 96) -> dict:
    """Generated tokens per second, EOS-terminated sampling (temperature 1), same prompts, both 2 threads."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hrlaif_ray.data.prompt_mix import OPEN_QUESTIONS

    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(folder)
    texts = [OPEN_QUESTIONS[i % len(OPEN_QUESTIONS)] + f" (#{i})" for i in range(n_prompts)]
    ids = [prompt_token_ids(tok, t, 256) for t in texts]
    from vllm import LLM, SamplingParams

    llm = LLM(model=folder, dtype="float32", enforce_eager=True, max_model_len=512, seed=0, kv_cache_memory_bytes=2**30)
    params = SamplingParams(temperature=1.0, max_tokens=max_tokens, seed=0)
    llm.generate([{"prompt_token_ids": p} for p in ids[:2]], params, use_tqdm=False)  # warm-up
    t = time.perf_counter()
    outs = llm.generate([{"prompt_token_ids": p} for p in ids], params, use_tqdm=False)
    v_s = time.perf_counter() - t
    v_tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    del llm
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    x, m = left_pad(ids, pad_token_id(tok))
    width = x.size(1)
    torch.manual_seed(0)
    t = time.perf_counter()
    with torch.no_grad():
        out = model.generate(
            input_ids=x,
            attention_mask=m,
            do_sample=True,
            temperature=1.0,
            top_k=None,
            top_p=None,
            max_new_tokens=max_tokens,
            pad_token_id=pad_token_id(tok),
            eos_token_id=tok.eos_token_id,
        )
    h_s = time.perf_counter() - t
    gen = out[:, width:]
    h_tokens = int(sum(((row != tok.eos_token_id).cumprod(0).sum() + 1).clamp(max=len(row)) for row in gen))
    return {
        "vllm_tok_s": v_tokens / v_s,
        "hf_tok_s": h_tokens / h_s,
        "vllm_vs_hf": (v_tokens / v_s) / (h_tokens / h_s),
        "vllm_tokens": v_tokens,
        "hf_tokens": h_tokens,
    }


# ------------------------------------------------------------------------------------------------ main


def floors(n_params: int, rate: float, prompt_tokens: int) -> dict[str, float]:
    tokens = PROMPTS * (prompt_tokens + RESPONSE_TOKENS)
    fwd = 2 * n_params * tokens / rate
    return {
        "generate": fwd,
        "reward": fwd,
        "reference": fwd,
        "actor_logprobs": fwd,
        "critic": fwd,
        "actor_train": 3 * fwd,
        "critic_train": 3 * fwd,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="tiny,50m,smollm2")
    parser.add_argument("--steps", type=int, default=4, help="PPO steps per run (the first is warm-up)")
    parser.add_argument("--no-trl", action="store_true")
    parser.add_argument(
        "--sync", default="broadcast,object_store", help="weight-sync methods, each a run of ours side by side"
    )
    parser.add_argument(
        "--lora",
        default="0",
        help="LoRA ranks of the actor and the critic, each a run of ours (0: full fine-tuning; a rank followed by m, "
        "e.g. 16m: the engines take merged weights, rollout.lora_weights: merged)",
    )
    parser.add_argument(
        "--checkpointing", action="store_true", help="gradient checkpointing in the trained roles (ours and TRL's)"
    )
    parser.add_argument(
        "--micro-batch", type=int, default=MICRO, help="rows per forward/backward in both (a divisor of 32)"
    )
    parser.add_argument("--out", default="ppo_step", help="results name (benchmarks/results/NAME.json)")
    parser.add_argument("--no-generation", action="store_true", help="skip the SmolLM2 vLLM-vs-HF generation run")
    args = parser.parse_args()
    if PROMPTS % args.micro_batch:
        parser.error(f"--micro-batch must divide {PROMPTS}")
    rate = matmul_rate()
    memcpy = memcpy_bandwidth()
    print(f"fp32 matmul rate {rate / 1e9:.1f} GFLOP/s (2 threads); memcpy {memcpy / 1e9:.2f} GB/s", flush=True)
    rows, gen = [], None
    with tempfile.TemporaryDirectory(prefix="ppo-bench-") as tmp:
        root = Path(tmp)
        for kind in [m for m in args.models.split(",") if m]:
            folder = make_model(kind, root)
            n_params, nbytes = matmul_params(folder)
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(folder)
            prompt_tokens = max(len(prompt_token_ids(tok, t, 256)) for t in prompt_texts())
            trl_s, trl_gen_s = (
                (None, None)
                if args.no_trl
                else trl_step(folder, root / f"trl-{kind}", args.steps, args.checkpointing, args.micro_batch)
            )
            floor = floors(n_params, rate, prompt_tokens)
            runs = [(m, r) for m in args.sync.split(",") if m for r in args.lora.split(",") if r]
            for method, lora in runs:
                lora_r, weights = int(lora.removesuffix("m")), "merged" if lora.endswith("m") else "adapter"
                try:
                    times = ours(
                        folder,
                        root / f"ours-{kind}-{method}-{lora}",
                        args.steps,
                        method,
                        lora_r,
                        weights,
                        args.checkpointing,
                        args.micro_batch,
                    )
                except Exception as exc:  # noqa: BLE001 - a run that fails (or that the planner refuses) is a row too
                    failed = {"model": kind, "sync_method": method, "lora_r": lora_r, "lora_weights": weights}
                    rows.append({**failed, "failed": f"{type(exc).__name__}: {str(exc)[:500]}"})
                    print(f"FAILED {failed}: {rows[-1]['failed']}", flush=True)
                    continue
                row = {
                    "model": kind,
                    "sync_method": method,
                    "lora": lora_r > 0,
                    "lora_r": lora_r,
                    "lora_weights": weights if lora_r else None,
                    "gradient_checkpointing": args.checkpointing,
                    "params_matmul": n_params,
                    "step_s": times["time/step"],
                    "trl_step_s": trl_s,
                    "ratio_vs_trl": times["time/step"] / trl_s if trl_s else None,
                    "trl_generate_s": trl_gen_s,
                    # the step without its sampling, on both sides (vLLM against TRL's HF generate)
                    "ratio_vs_trl_without_generation": (times["time/step"] - times.get("time/generate", 0.0))
                    / (trl_s - trl_gen_s)
                    if trl_s
                    else None,
                    **{f"{p}_s": times.get(f"time/{p}", 0.0) for p in PHASES},
                    **{f"{p}_floor_s": f for p, f in floor.items()},
                    **{
                        f"{p}_vs_floor": times.get(f"time/{p}", 0.0) / f
                        for p, f in floor.items()
                        if p.endswith("train")
                    },
                    # Overlapping phases share the cores: their wall time against the sum of their floors.
                    "forwards_vs_floor": max(times.get(f"time/{p}", 0.0) for p in FORWARDS)
                    / sum(floor[p] for p in FORWARDS),
                    "updates_vs_floor": max(times.get(f"time/{p}", 0.0) for p in UPDATES)
                    / sum(floor[p] for p in UPDATES),
                    "sync_share": times["time/sync"] / times["time/step"],
                    "sync_bytes": times.get("sync/bytes", nbytes),
                    "sync_vs_memcpy": (times.get("sync/bytes", nbytes) / times["time/sync"]) / memcpy,
                    "weights_mb": nbytes / 2**20,
                    "sync_rank0_peak_mb": times.get("sync/rank0_peak_mb"),
                    "sync_checked": times.get("sync/checked"),
                    "sync_vs_weights": times.get("sync/bytes", nbytes) / nbytes,
                    # each learner role's largest process peak (host memory: on CPU all it holds); no reference
                    # process where the LoRA actor is its own reference
                    **{
                        f"{role}_peak_rss_mb": times.get(f"memory/{role}_peak_rss_mb")
                        for role in ("actor", "reference", "critic")
                    },
                    # The sync's two parts: the transfer (the object store's put and read, or the broadcast) and
                    # the engines' loading (vLLM's loader plus oneDNN repacking on CPU; a broadcast overlaps the
                    # two, so for it the difference is the part of the transfer the loading did not hide).
                    "sync_reload_s": times.get("time/sync_reload", 0.0),
                    "transfer_vs_memcpy": (
                        times.get("sync/bytes", nbytes)
                        / max(times["time/sync"] - times.get("time/sync_reload", 0.0), 1e-9)
                    )
                    / memcpy,
                }
                rows.append(row)
                print_table(
                    [row],
                    [
                        "model",
                        "sync_method",
                        "lora_r",
                        "lora_weights",
                        "step_s",
                        "trl_step_s",
                        "ratio_vs_trl",
                        "generate_s",
                        "actor_train_s",
                        "sync_s",
                        "sync_bytes",
                        "sync_vs_weights",
                        "actor_peak_rss_mb",
                        "reference_peak_rss_mb",
                    ],
                )
        if not args.no_generation:
            gen = vllm_vs_hf(make_model("smollm2", root))
            print(
                f"SmolLM2-135M generation, EOS-terminated: vLLM {gen['vllm_tok_s']:.1f} tok/s, HF {gen['hf_tok_s']:.1f} tok/s, "
                f"vllm_vs_hf {gen['vllm_vs_hf']:.2f}"
            )
    cols = [
        "model",
        "sync_method",
        "lora_r",
        "lora_weights",
        "step_s",
        "trl_step_s",
        "ratio_vs_trl",
        "trl_generate_s",
        "ratio_vs_trl_without_generation",
        *[f"{p}_s" for p in PHASES],
        "forwards_vs_floor",
        "updates_vs_floor",
        "sync_share",
        "sync_vs_memcpy",
        "sync_reload_s",
        "transfer_vs_memcpy",
        "sync_rank0_peak_mb",
        "sync_bytes",
        "sync_vs_weights",
        "actor_peak_rss_mb",
        "reference_peak_rss_mb",
        "critic_peak_rss_mb",
    ]
    print_table([r for r in rows if "failed" not in r], cols)
    path = write_results(
        args.out,
        rows,
        matmul_gflops=rate / 1e9,
        memcpy_gbs=memcpy / 1e9,
        generation=gen,
        settings={
            "prompts": PROMPTS,
            "responses_per_prompt": 1,
            "response_tokens": RESPONSE_TOKENS,
            "micro_batch_rows": args.micro_batch,
            "dtype": "float32",
            "ppo_epochs": 1,
            "optimizer_steps_per_ppo_step": 1,
            "gradient_checkpointing": args.checkpointing,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
