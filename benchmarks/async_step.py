"""PPO step time, synchronous against asynchronous (one-step off-policy), side by side in one run.

Two rewards:
- `rm`: the reward model (the ~50M Qwen2 of benchmarks/ppo_step.py, its backbone with a fresh scalar head): every
  phase is compute and the cores are busy in both loops, so overlap has little to give (what it gives is the
  generation running while the updates wait on each other, and the reload);
- `online`: the online hybrid reward (`reward.kind: online`) from the simulated judge at 300 ms latency per answer,
  with the tiny demo Qwen2: the judge's latency is most of a synchronous step, and the asynchronous loop labels step
  t+1's samples while step t trains. Target: async <= 0.7 x sync.

Settings: RLOO, 16 math prompts x 4 samples x 32 new tokens, one PPO epoch, one optimizer step per step; vLLM with 2
threads, learners and RM one thread each; the labeler pool 2 actors x 16. Step time = the median of `time/step` over
steps 3..N (the first two warm up; the asynchronous loop's first step has nothing made ahead).

Run: `python -m benchmarks.async_step [--steps 8]`; results in benchmarks/results/async_step.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

from benchmarks.common import print_table, write_results
from benchmarks.ppo_step import make_model, matmul_rate
from hrlaif_ray.config import PPOJob, PromptMixConfig
from hrlaif_ray.data.prompt_mix import generate_prompt_mix
from hrlaif_ray.data.schemas import write_records
from hrlaif_ray.judges.launch import sim_judge_server

PROMPTS, SAMPLES, TOKENS, LATENCY_MS = 16, 4, 32, 300


def run(folder: str, root: Path, reward: dict, staleness: int, steps: int) -> list[dict]:
    import ray

    from cluster.ppo import run_ppo

    one = {"replicas": 1, "threads": 1}
    job = PPOJob.model_validate(
        {
            "policy": folder,
            "output_dir": str(root / f"ppo-{reward['kind']}-{staleness}"),
            "prompts": str(root / "prompts.parquet"),
            "steps": steps,
            "prompts_per_step": PROMPTS,
            "logging": {"tensorboard": False},
            "algo": {"estimator": "rloo", "micro_batch_size": 16, "use_rollout_logprobs": True},
            "actor": {"lr": 1e-6, "zero_stage": 2},
            "rollout": {"samples_per_prompt": SAMPLES, "max_new_tokens": TOKENS, "max_model_len": 512},
            "reward": reward,
            "async": {"max_staleness": staleness},
            "resources": {
                "bundle": {"CPU": 1},
                "actor": one,
                "reference": one,
                "reward": one,
                "rollout": {"replicas": 1, "threads": 2},
            },
        }
    )
    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False)
    try:
        run_ppo(job)
    finally:
        ray.shutdown()
    return [json.loads(line) for line in (Path(job.output_dir) / "metrics.jsonl").read_text().splitlines()]


def step_time(rows: list[dict]) -> float:
    return statistics.median(r["time/step"] for r in rows[2:])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    os.environ.setdefault("RAY_ENABLE_ZERO_COPY_TORCH_TENSORS", "1")
    gflops = matmul_rate() / 1e9
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        prompts = generate_prompt_mix(
            PromptMixConfig(n=PROMPTS * args.steps, seed=3, math=1.0, multiple_choice=0.0, harmful=0.0, open_qa=0.0)
        )
        write_records(root / "prompts.parquet", prompts)
        big = make_model("50m", root)
        tiny = make_model("tiny", root)
        cases = [("rm", "50m", big, {"kind": "rm", "rm": big})]
        with sim_judge_server([f"latency_ms={LATENCY_MS}"]) as base:
            judge = {"base_url": base, "model": "gpt-3.5-turbo", "timeout_s": 30}
            online = {
                "kind": "online",
                "labeling": {"judges": [judge], "rewriter": {**judge, "model": "gpt-4"}, "cache": False},
                "pool": {"labelers": 2, "concurrency": 16},
            }
            cases.append(("online", "tiny", tiny, online))
            for name, model, folder, reward in cases:
                times = {}
                for staleness in (0, 1):
                    rows = run(folder, root, reward, staleness, args.steps)
                    times[staleness] = step_time(rows)
                    print(f"{name} {model} max_staleness={staleness}: {times[staleness]:.2f} s/step")
                results.append(
                    {
                        "reward": name,
                        "model": model,
                        "judge_latency_ms": LATENCY_MS if name == "online" else None,
                        "sync_step_s": round(times[0], 3),
                        "async_step_s": round(times[1], 3),
                        "async_vs_sync": round(times[1] / times[0], 3),
                        "staleness_logged": [r["async/staleness"] for r in rows],
                    }
                )
    print_table(results, ["reward", "model", "sync_step_s", "async_step_s", "async_vs_sync"])
    path = write_results(
        "async_step",
        results,
        matmul_gflops=round(gflops, 1),
        steps=args.steps,
        note=f"RLOO, {PROMPTS} prompts x {SAMPLES} samples x {TOKENS} tokens; median time/step over steps 3..N",
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
