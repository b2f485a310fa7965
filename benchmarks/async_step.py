"""PPO step time with an online judge: synchronous, synchronous with streaming rewards, and asynchronous (one-step
off-policy) with streaming, at several judge latencies, side by side in one run; and with a reward model,
synchronous against asynchronous.

- `online`: the online hybrid reward (`reward.kind: online`) from the simulated judge at a fixed latency per answer
  (`--latencies`, ms; 0 is the baseline "without the judge's latency"), with the tiny demo Qwen2 (`--model 50m`:
  the ~50M Qwen2, whose update gives the judge something to hide behind). Three modes:
  `sync` (the reward waits for the whole batch: `rollout.stream: false`), `sync+stream` (each prompt's group is
  labeled as soon as its samples finish, while the engines sample the rest) and `async+stream`
  (`async.max_staleness: 1` as well: step t+1's samples and labels are made while step t trains).
  `judge_hidden` = 1 - (step - the same mode's step at latency 0) / (the synchronous step - the synchronous step at
  latency 0): the share of the judge's time on a synchronous step's critical path that the mode hides.
  Targets: async+stream <= 0.7 x sync at 300 ms; judge_hidden >= 0.8 at 1 s.
- `rm` (`--rm`): the reward model (the ~50M Qwen2 of benchmarks/ppo_step.py, its backbone with a fresh scalar
  head): every phase is compute and the cores are busy in both loops, so overlap has little to give.

Settings: RLOO, 16 math prompts x 4 samples x 32 new tokens, one PPO epoch, one optimizer step per step; vLLM with 2
threads, learners and RM one thread each; the labeler pool 2 actors x 16. Step time = the median of `time/step` over
steps 3..N (the first two warm up; the asynchronous loop's first step has nothing made ahead).

Run: `python -m benchmarks.async_step [--steps 6] [--latencies 0,300,1000,2000] [--model tiny|50m] [--rm]`; results in
benchmarks/results/async_step.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.common import print_table, write_results
from benchmarks.ppo_step import make_model, matmul_rate
from hrlaif_ray.config import PPOJob, PromptMixConfig
from hrlaif_ray.data.prompt_mix import generate_prompt_mix
from hrlaif_ray.data.schemas import write_records
from hrlaif_ray.judges.launch import sim_judge_server

PROMPTS, SAMPLES, TOKENS = 16, 4, 32
MODES = {"sync": (0, False), "sync+stream": (0, True), "async+stream": (1, True)}  # (max_staleness, stream)


def run(folder: str, root: Path, reward: dict, staleness: int, steps: int, stream: bool = True) -> list[dict]:
    import ray

    from cluster.ppo import run_ppo

    one = {"replicas": 1, "threads": 1}
    job = PPOJob.model_validate(
        {
            "policy": folder,
            "output_dir": str(root / f"ppo-{reward['kind']}-{staleness}-{stream}-{time.monotonic_ns()}"),
            "prompts": str(root / "prompts.parquet"),
            "steps": steps,
            "prompts_per_step": PROMPTS,
            "logging": {"tensorboard": False},
            "algo": {"estimator": "rloo", "micro_batch_size": 16, "use_rollout_logprobs": True},
            "actor": {"lr": 1e-6, "zero_stage": 2},
            "rollout": {
                "samples_per_prompt": SAMPLES,
                "max_new_tokens": TOKENS,
                "max_model_len": 512,
                "stream": stream,
            },
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
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--latencies", default="0,300,1000,2000", help="the judge's latency per answer, ms")
    parser.add_argument("--rm", action="store_true", help="also the reward-model case (50M, sync vs async)")
    parser.add_argument(
        "--model",
        default="tiny",
        choices=["tiny", "50m"],
        help="the policy of the online case (50m: a step with compute to hide the judge behind)",
    )
    args = parser.parse_args()
    os.environ.setdefault("RAY_ENABLE_ZERO_COPY_TORCH_TENSORS", "1")
    gflops = matmul_rate() / 1e9
    latencies = [int(x) for x in args.latencies.split(",")]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        prompts = generate_prompt_mix(
            PromptMixConfig(n=PROMPTS * args.steps, seed=3, math=1.0, multiple_choice=0.0, harmful=0.0, open_qa=0.0)
        )
        write_records(root / "prompts.parquet", prompts)
        policy = make_model(args.model, root)
        step: dict[tuple[str, int], float] = {}
        for latency in latencies:
            with sim_judge_server([f"latency_ms={latency}"]) as base:
                judge = {"base_url": base, "model": "gpt-3.5-turbo", "timeout_s": 30}
                online = {
                    "kind": "online",
                    "labeling": {"judges": [judge], "rewriter": {**judge, "model": "gpt-4"}, "cache": False},
                    "pool": {"labelers": 2, "concurrency": 16},
                }
                for mode, (staleness, stream) in MODES.items():
                    rows = run(policy, root, online, staleness, args.steps, stream)
                    step[mode, latency] = step_time(rows)
                    print(f"online {mode} judge {latency} ms: {step[mode, latency]:.2f} s/step", flush=True)
        for latency in latencies:
            judge_s = step["sync", latency] - step["sync", latencies[0]] if latency else 0.0
            for mode in MODES:
                hidden = None
                if latency and judge_s > 0:
                    hidden = 1 - (step[mode, latency] - step[mode, latencies[0]]) / judge_s
                results.append(
                    {
                        "reward": "online",
                        "model": args.model,
                        "mode": mode,
                        "judge_latency_ms": latency,
                        "step_s": round(step[mode, latency], 3),
                        "vs_sync": round(step[mode, latency] / step["sync", latency], 3),
                        "judge_on_sync_path_s": round(judge_s, 3),
                        "judge_hidden": None if hidden is None else round(hidden, 3),
                    }
                )
        if args.rm:
            big = make_model("50m", root)
            for staleness, mode in ((0, "sync"), (1, "async")):
                rows = run(big, root, {"kind": "rm", "rm": big}, staleness, args.steps)
                results.append(
                    {"reward": "rm", "model": "50m", "mode": mode, "judge_latency_ms": None, "step_s": step_time(rows)}
                )
            sync_s = results[-2]["step_s"]
            for r in results[-2:]:
                r["vs_sync"] = round(r["step_s"] / sync_s, 3)
    print_table(results, ["reward", "model", "mode", "judge_latency_ms", "step_s", "vs_sync", "judge_hidden"])
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
