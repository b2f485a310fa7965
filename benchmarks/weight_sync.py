"""The weight sync alone: the actor's weights into a vLLM engine by broadcast (several bucket sizes, with and
without the check) and through the object store, side by side in one run, against a memcpy of the same bytes.

Settings: the ~50M Qwen2 of the PPO benchmark (188 MB in fp32), one actor rank (1 thread) and one vLLM engine
(1 thread) on a local Ray cluster, both on this machine; each setting syncs `--repeats` times after one warm-up,
and each row gives the medians. Columns:
- sync_s: the controller's wall time for one sync (gathers, transfer, the engine's loading, the check);
- send_s: rank 0's time in a broadcast (packing and sending; not measured for the object store);
- load_s: the engine's time (receiving and loading, overlapped one bucket ahead; the object store: its reload);
- sync_vs_memcpy: (bytes / sync_s) / memcpy bandwidth;
- rank0_peak_mb: the most rank 0 held above its start during the sync (its resident set).
On a CPU the engine's loading is vLLM's `reload_weights` (its layer-wise loader, then oneDNN repacking of every
linear weight), which no sync method avoids; `load_only_s` times it alone on a state dict already in the engine.

Run: `python -m benchmarks.weight_sync [--model 50m] [--buckets 16,64,256] [--repeats 5]`.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.common import print_table, write_results
from benchmarks.ppo_step import make_model, memcpy_bandwidth


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="50m", choices=["tiny", "50m", "smollm2"])
    parser.add_argument("--buckets", default="16,64,256", help="broadcast bucket sizes in MiB")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import os

    os.environ.setdefault("RAY_ENABLE_ZERO_COPY_TORCH_TENSORS", "1")
    import ray

    from actors.learner import LearnerGroup
    from actors.rollout import RolloutGroup, start_engines
    from actors.runtime import actor_env
    from actors.weight_sync import BroadcastSync, ObjectStoreSync
    from hrlaif_ray.config import LearnerConfig, RolloutConfig, SyncConfig

    memcpy = memcpy_bandwidth()
    rows = []
    with tempfile.TemporaryDirectory(prefix="sync-bench-") as tmp:
        folder = make_model(args.model, Path(tmp))
        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
        try:
            actor = LearnerGroup(
                "actor",
                folder,
                [{"num_cpus": 1, "runtime_env": actor_env(1, 0)}],
                learner=LearnerConfig(lr=1e-6, zero_stage=0),
                threads=1,
            )
            engines = start_engines(
                folder,
                RolloutConfig(max_model_len=256, kv_cache_gib=0.25),
                [{"num_cpus": 1}],
                threads=1,
                seed=0,
                cache_dir=str(Path(tmp) / "cache"),
            )
            rollout = RolloutGroup(engines, timeout_s=600)
            settings = [("object_store", None, True)] + [
                ("broadcast", float(b), check) for b in args.buckets.split(",") for check in (True, False)
            ]
            state = ray.get(actor.weights_ref())
            for method, bucket, check in settings:
                if method == "broadcast":
                    sync = BroadcastSync(SyncConfig(bucket_mb=bucket, check=check), actor, rollout, 600, 0)
                else:
                    sync = ObjectStoreSync(actor, rollout)
                results, walls = [], []
                for i in range(args.repeats + 1):
                    t = time.perf_counter()
                    result = sync.sync()
                    if i:  # the first is warm-up
                        walls.append(time.perf_counter() - t)
                        results.append(result)
                rows.append(
                    {
                        "model": args.model,
                        "method": method,
                        "bucket_mb": bucket,
                        "check": check if method == "broadcast" else None,
                        "bytes": results[0].bytes,
                        "sync_s": statistics.median(walls),
                        "send_s": statistics.median(r.send_s for r in results) if method == "broadcast" else None,
                        "load_s": statistics.median(r.reload_s for r in results),
                        "sync_vs_memcpy": results[0].bytes / statistics.median(walls) / memcpy,
                        "rank0_peak_mb": statistics.median((r.peak_bytes or 0) / 2**20 for r in results),
                        "checked": results[0].checked,
                    }
                )
                print_table(rows[-1:], list(rows[-1]))
            # The engine's loading alone: the same state dict from the object store, reloaded.
            loads = [ray.get(engines[0].update_weights.remote(state, 0)) for _ in range(args.repeats + 1)][1:]
            load_only = statistics.median(loads)
        finally:
            ray.shutdown()
    for r in rows:
        r["load_only_s"] = load_only
    print_table(rows, list(rows[0]))
    path = write_results("weight_sync", rows, memcpy_gbs=memcpy / 1e9, repeats=args.repeats)
    print(f"memcpy {memcpy / 1e9:.2f} GB/s; vLLM's reload alone {load_only:.3f} s; wrote {path}")


if __name__ == "__main__":
    main()
