"""Load test of `hrlaif serve-reward` (the hybrid reward on Ray Serve, for other trainers), against the same labels
made in-process.

A step is P prompts x K = 8 samples (a trainer's rollout batch), new prompts each step so that every group is
labeled afresh (the ledger would answer a repeated one for free). The judge is the simulated one on loopback with
`latency_ms` added to each answer (an API's latency, scaled down); hybrid labels, listwise ranking within the sets,
one labeler of 16 concurrent labels. Rows:
- `in-process`: the peer: the step's groups handed to `OnlineReward.rewards` in this process (the labeler pool on
  a local Ray; no HTTP, no Serve, no gathering): what the labels alone cost.
- `openrlhf`: one request a sample, all P x K at once, as OpenRLHF's remote reward client sends them (no token:
  its client sends no header); the server gathers each prompt's 8 samples into its group.
- `verl-batch`: the whole step in one request of whole groups (`compute_score_batch`, with the token).
Each row: samples/s over the steps, the step's wall time, p50/p99 of one request, errors (anything but 200 with
the right count), and whether every probe under load (no token: 401; 8 MiB + 1: 413) was refused (token rows).
Results: a record in benchmarks/results/rm_service.json (`"service": "serve-reward"`).
Run: `python -m benchmarks.reward_service [--prompts 16] [--steps 3] [--quick]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import print_table, timed_post, write_results

ROOT = Path(__file__).resolve().parents[1]
K = 8


def steps_of(prompts: int, steps: int, seed: int = 0) -> list[list[tuple]]:
    """`steps` lists of (prompt record, K response texts), math prompts with right and wrong answers."""
    import random

    from hrlaif_ray.config import PromptMixConfig
    from hrlaif_ray.data.prompt_mix import generate_prompt_mix
    from hrlaif_ray.labeling.synthetic import math_item

    mix = PromptMixConfig(n=prompts * steps, seed=seed, math=1.0, multiple_choice=0.0, harmful=0.0, open_qa=0.0)
    rng = random.Random(seed)
    groups = []
    for p in generate_prompt_mix(mix):
        item, _ = math_item(p, rng)
        texts = [r.text for r in item.responses]
        groups.append((p, (texts * K)[:K]))
    return [groups[i * prompts : (i + 1) * prompts] for i in range(steps)]


def labeling(base: str) -> dict:
    judge = {"base_url": base, "model": "gpt-3.5-turbo", "timeout_s": 30}
    return {"judges": [judge], "rewriter": {**judge, "model": "gpt-4"}, "ranking": "listwise"}


def row(name: str, latencies: list[float], step_walls: list[float], samples: int, errors: int, refused: str) -> dict:
    lat = sorted(latencies)
    return {
        "mode": name,
        "samples_per_s": round(samples / sum(step_walls), 1),
        "step_s": round(statistics.median(step_walls), 2),
        "p50_ms": round(1000 * statistics.median(lat), 1) if lat else None,
        "p99_ms": round(1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], 1) if lat else None,
        "errors": errors,
        "requests": len(lat),
        "refused": refused,
    }


def in_process(steps: list, base: str, folder: Path) -> dict:
    import ray

    from actors.online_reward import OnlineReward
    from hrlaif_ray.config import LabelingConfig, PoolConfig

    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False)
    online = OnlineReward(LabelingConfig(**labeling(base)), PoolConfig(labelers=1, concurrency=16), folder)
    walls, samples = [], 0
    try:
        for groups in steps:
            t = time.perf_counter()
            online.rewards(groups)
            walls.append(time.perf_counter() - t)
            samples += sum(len(texts) for _, texts in groups)
    finally:
        online.shutdown()
        ray.shutdown()
    return row("in-process", walls, walls, samples, 0, "-")


def start_server(base: str, folder: Path, tmp: Path, token: str | None) -> tuple[subprocess.Popen, str]:
    lab = labeling(base)
    overrides = [
        f"output_dir={folder}",
        f"group_size={K}",
        "group_wait_s=60",
        f"reward.labeling.judges={json.dumps(lab['judges'])}",
        f"reward.labeling.rewriter={json.dumps(lab['rewriter'])}",
        "reward.labeling.ranking=listwise",
        "reward.pool.labelers=1",
        "reward.pool.concurrency=16",
        *([] if token else ["no_token=true"]),
    ]
    env = {**os.environ, "TMPDIR": str(tmp), **({"HRLAIF_REWARD_TOKEN": token} if token else {})}
    from hrlaif_ray.judges.launch import ready_process

    return ready_process([sys.executable, "-m", "cluster.cli", "serve-reward", *overrides], env, ROOT)


async def over_http(name: str, url: str, steps: list, token: str | None) -> dict:
    import httpx

    latencies, walls, errors, samples, refusals = [], [], 0, 0, []
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=2048)) as http:

        async def post(body: dict, n: int) -> None:
            nonlocal errors
            errors += not await timed_post(http, f"{url}/reward", n, latencies, json=body, headers=auth)

        async def prober(done: asyncio.Event) -> None:
            big = b"{" + b" " * (8 * 2**20 + 1) + b"}"
            while not done.is_set():
                r = await http.post(f"{url}/reward", json={"prompts": ["q"], "responses": ["r"]})
                refusals.append(r.status_code == 401)
                r = await http.post(f"{url}/reward", content=big, headers=auth)
                refusals.append(r.status_code == 413)
                await asyncio.sleep(0.5)

        for groups in steps:
            done = asyncio.Event()
            probe = asyncio.create_task(prober(done)) if token else None
            t = time.perf_counter()
            labels = [p.answer for p, _ in groups]
            if name == "openrlhf":
                await asyncio.gather(
                    *(
                        post({"query": [p.text + x], "prompts": [p.text], "labels": [label]}, 1)
                        for (p, texts), label in zip(groups, labels)
                        for x in texts
                    )
                )
            else:
                body = {
                    "prompts": [p.text for p, texts in groups for _ in texts],
                    "responses": [x for _, texts in groups for x in texts],
                    "labels": [label for (_, texts), label in zip(groups, labels) for _ in texts],
                    "complete": True,
                }
                await post(body, len(body["prompts"]))
            walls.append(time.perf_counter() - t)
            samples += sum(len(texts) for _, texts in groups)
            done.set()
            if probe:
                await probe
    refused = f"{sum(refusals)}/{len(refusals)}" if token else "- (no token)"
    return row(name, latencies, walls, samples, errors, refused)


def main() -> None:
    from hrlaif_ray.judges.launch import sim_judge_server

    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=16, help="prompts a step (K = 8 samples each)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, default=200, help="the simulated judge's added latency")
    parser.add_argument("--quick", action="store_true", help="4 prompts, 1 step, nothing written")
    args = parser.parse_args()
    prompts, steps = (4, 1) if args.quick else (args.prompts, args.steps)
    tmp = Path(tempfile.mkdtemp(prefix="rsv", dir="/tmp"))
    token = secrets.token_hex(16)
    rows = []
    with sim_judge_server([f"latency_ms={args.latency_ms}"]) as base:
        rows.append(in_process(steps_of(prompts, steps, seed=0), base, tmp / "in-process"))
        print_table(rows[-1:], list(rows[0]))
        for name, tok in (("openrlhf", None), ("verl-batch", token)):
            proc, url = start_server(base, tmp / name, tmp, tok)
            try:
                rows.append(asyncio.run(over_http(name, url, steps_of(prompts, steps, seed=0), tok)))
                print_table(rows[-1:], list(rows[0]))
            finally:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=60)
    print(
        f"\nserve-reward under load: {prompts} prompts x {K} samples a step, {steps} steps, judge +{args.latency_ms} ms"
    )
    print_table(rows, list(rows[0]))
    if not args.quick:
        meta = {"service": "serve-reward", "prompts_per_step": prompts, "samples_per_prompt": K, "steps": steps}
        print(f"wrote {write_results('rm_service', rows, **meta, judge_latency_ms=args.latency_ms)}")


if __name__ == "__main__":
    main()
