"""Load test of `hrlaif serve-rm` (the RM on Ray Serve): N concurrent clients for a fixed time, at 1 and 2 replicas.

Each client sends `POST /score` with one prompt's K = 8 sequences of 96 tokens (what PPO asks of the RM per prompt)
back to back; a row reports requests/s, sequences/s, p50 and p99 latency and the errors (anything but 200). While
the clients run, a prober sends an unauthenticated and an oversized request every half second: `refused` says
whether every one was refused (401, 413) under load. The peer, in the same run: the same requests scored
in-process by one RewardModel (no HTTP, no Serve), one after another with the same threads: what the model alone
costs. The RM is the demo's tiny model (the serving overhead dominates; a GPU cluster's RM is larger).
A last row runs 16 clients for 3 x the time against `--min-replicas 1 --max-replicas 2`, and reads the running
replicas from Serve before and after (Serve adds one after 5 s over the target of 2 ongoing requests a replica).
Run: `python -m benchmarks.rm_service [--seconds 10] [--quick]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import print_table, timed_post, write_results

ROOT = Path(__file__).resolve().parents[1]
K, LENGTH = 8, 96


def rm_folder(out: Path) -> tuple[Path, int]:
    from hrlaif_ray.config import ModelConfig, PromptMixConfig
    from hrlaif_ray.data.prompt_mix import generate_prompt_mix
    from hrlaif_ray.models import build_tiny_causal_lm, train_bpe_tokenizer
    from hrlaif_ray.reward import RewardModel

    tok = train_bpe_tokenizer([r.text for r in generate_prompt_mix(PromptMixConfig(n=500))])
    rm = RewardModel(build_tiny_causal_lm(ModelConfig(), tok).model).eval()
    return rm.save_pretrained(out, tokenizer=tok), len(tok)


def body(vocab: int, seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {"sequences": torch.randint(5, vocab, (K, LENGTH), generator=gen).tolist()}


def start_server(
    folder: Path, replicas: int, token: str, tmp: Path, extra: tuple[str, ...] = (), address: str | None = None
) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "HRLAIF_RM_TOKEN": token, "TMPDIR": str(tmp), **({"RAY_ADDRESS": address} if address else {})}
    from hrlaif_ray.judges.launch import ready_process

    cmd = [sys.executable, "-m", "cluster.cli", "serve-rm", "--rm", str(folder), "--replicas", str(replicas), *extra]
    return ready_process(cmd, env, ROOT)


async def load(url: str, token: str, vocab: int, clients: int, seconds: float) -> dict:
    import httpx

    latencies: list[float] = []
    errors = 0
    refusals: list[int] = []
    stop = time.monotonic() + seconds
    auth = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:

        async def client(i: int) -> None:
            nonlocal errors
            payload = body(vocab, i)
            while time.monotonic() < stop:
                errors += not await timed_post(http, f"{url}/score", K, latencies, json=payload, headers=auth)

        async def prober() -> None:
            big = b"{" + b" " * (8 * 2**20 + 1) + b"}"
            while time.monotonic() < stop:
                r = await http.post(f"{url}/score", json=body(vocab, 0))
                refusals.append(r.status_code == 401)
                r = await http.post(f"{url}/score", content=big, headers=auth)
                refusals.append(r.status_code == 413)
                await asyncio.sleep(0.5)

        t0 = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(clients)), prober())
        wall = time.perf_counter() - t0
    lat = sorted(latencies)
    return {
        "requests_per_s": round(len(lat) / wall, 1),
        "sequences_per_s": round(K * len(lat) / wall, 1),
        "p50_ms": round(1000 * statistics.median(lat), 1) if lat else None,
        "p99_ms": round(1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], 1) if lat else None,
        "errors": errors,
        "requests": len(lat),
        "refused": f"{sum(refusals)}/{len(refusals)}",
    }


def in_process(folder: Path, vocab: int, seconds: float) -> dict:
    from hrlaif_ray.data.chat import pad_token_id
    from hrlaif_ray.reward import RewardModel

    rm = RewardModel.from_pretrained(folder).eval()
    from transformers import AutoTokenizer

    pad = pad_token_id(AutoTokenizer.from_pretrained(folder))
    seqs = body(vocab, 0)["sequences"]
    lat = []
    stop = time.monotonic() + seconds
    t0 = time.perf_counter()
    while time.monotonic() < stop:
        t = time.perf_counter()
        rm.score_sequences(seqs, pad)
        lat.append(time.perf_counter() - t)
    wall = time.perf_counter() - t0
    lat.sort()
    return {
        "replicas": "in-process",
        "clients": 1,
        "requests_per_s": round(len(lat) / wall, 1),
        "sequences_per_s": round(K * len(lat) / wall, 1),
        "p50_ms": round(1000 * statistics.median(lat), 1),
        "p99_ms": round(1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], 1),
        "errors": 0,
        "requests": len(lat),
        "refused": "-",
    }


def autoscaled(folder: Path, vocab: int, token: str, tmp: Path, seconds: float) -> dict:
    """16 clients against `--min-replicas 1 --max-replicas 2` (target 2 ongoing requests a replica) on a Ray
    cluster this process also joins, to read Serve's replica count before and after the load."""
    import ray
    from ray import serve

    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False)
    address = ray.get_runtime_context().gcs_address
    extra = ("--min-replicas", "1", "--max-replicas", "2", "--target-ongoing-requests", "2")
    proc, url = start_server(folder, 1, token, tmp, extra, address)

    def running() -> int:
        app = serve.status().applications["hrlaif-rm"]
        return sum(d.replica_states.get("RUNNING", 0) for d in app.deployments.values())

    try:
        before = running()
        row = asyncio.run(load(url, token, vocab, 16, seconds))
        after = running()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
        ray.shutdown()
    return {"replicas": f"1-2 auto ({before} -> {after})", "clients": 16, **row}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0, help="load per row")
    parser.add_argument("--quick", action="store_true", help="1 replica, 4 clients, 3 s")
    args = parser.parse_args()
    seconds = 3.0 if args.quick else args.seconds
    plan = [(1, [4])] if args.quick else [(1, [1, 4, 16]), (2, [1, 4, 16])]
    tmp = Path(tempfile.mkdtemp(prefix="rms", dir="/tmp"))
    folder, vocab = rm_folder(tmp / "rm")
    token = secrets.token_hex(16)
    torch.set_num_threads(1)
    rows = [in_process(folder, vocab, seconds)]
    print_table(rows, list(rows[0]))
    for replicas, client_counts in plan:
        proc, url = start_server(folder, replicas, token, tmp)
        try:
            for clients in client_counts:
                asyncio.run(load(url, token, vocab, 1, 1.0))  # warm-up
                row = {
                    "replicas": replicas,
                    "clients": clients,
                    **asyncio.run(load(url, token, vocab, clients, seconds)),
                }
                rows.append(row)
                print_table([row], list(row))
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
    print(f"\nRM service under load: {K} sequences of {LENGTH} tokens a request, {seconds:.0f} s a row")
    print_table(rows, list(rows[0]))
    if not args.quick:
        row = autoscaled(folder, vocab, token, tmp, 3 * seconds)
        rows.append(row)
        print_table([row], list(row))
    if not args.quick:
        print(f"wrote {write_results('rm_service', rows, seconds=seconds, sequences_per_request=K, tokens=LENGTH)}")


if __name__ == "__main__":
    main()
