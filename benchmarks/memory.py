"""The memory planner against measured memory: a trained role's peak per rank, estimated (`hrlaif_ray.planner`)
and measured, for the tiny demo model (575k parameters) and the ~50M Qwen2 of benchmarks/ppo_step.py, in fp32 and
bf16, at ZeRO 0, 2 and 3, on 1 and 2 ranks.

Each configuration runs in its own torchrun processes (gloo on CPU). A rank measures its resident memory before
it loads the model (the interpreter, torch, DeepSpeed and the process group already there), loads it (partitioned
at ZeRO-3), builds the DeepSpeed engine (`hrlaif_ray.zero.initialize`, as every trained role does) and runs two
optimizer steps of an SFT loss on `ROWS` sequences of `SEQ` tokens; measured = its peak resident memory
(`ru_maxrss`), the baseline included. The estimate is what the planner checks for such a rank on a CPU: its process
allowance (`PROCESS_GIB`) and everything the role holds (all in host memory). Target: within 25%, and never below
the measured peak by more than 10%. The planner's calibrations (`TRAINER_BUFFERS`, `BF16_ACTIVATIONS`,
`ZERO3_CPU_ACTIVATIONS`) were chosen on the 1-rank rows of a first run; the 2-rank rows are held out.

Run: `python -m benchmarks.memory [--models tiny 50m]`; the rows are appended to benchmarks/results/memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROWS, SEQ = 8, 256


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def rank_step(folder: str, precision: str, stage: int, out: str) -> None:
    """One rank's measurement (run under torchrun): baseline, load, engine, two steps; writes its JSON."""
    import torch

    from hrlaif_ray.config import LearnerConfig
    from hrlaif_ray.zero import dtype_of, init_distributed, initialize, learner_config, partitioned_loading

    torch.set_num_threads(1)
    rank, world = init_distributed()
    from transformers import AutoModelForCausalLM

    baseline = rss_bytes()
    learner = LearnerConfig(lr=1e-4, precision=precision, zero_stage=stage)
    with partitioned_loading(learner_config(learner, ROWS, world)):
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype_of(precision))
    engine = initialize(model, learner, ROWS, world)
    gen = torch.Generator().manual_seed(rank)
    vocab = model.config.vocab_size
    t = time.perf_counter()
    for _ in range(2):
        x = torch.randint(0, vocab, (ROWS, SEQ), generator=gen)
        loss = engine(input_ids=x, labels=x).loss
        engine.backward(loss)
        engine.step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    torch.distributed.destroy_process_group()  # gloo's threads still running at exit abort a rank now and then
    Path(out).with_suffix(f".{rank}.json").write_text(
        json.dumps(
            {
                "rank": rank,
                "measured_bytes": peak - baseline,
                "baseline_bytes": baseline,
                "step_s": time.perf_counter() - t,
            }
        )
    )


def estimate(folder: str, precision: str, stage: int, ranks: int) -> int:
    """The planner's per-rank figure for the role (everything in host memory, a CPU plan), its process included."""
    from hrlaif_ray.config import LearnerConfig
    from hrlaif_ray.planner import Batch, ModelShape, host_bytes, trained_role

    shape = ModelShape.of_folder(folder, "model")
    learner = LearnerConfig(lr=1e-4, precision=precision, zero_stage=stage)
    return host_bytes(trained_role("sft", shape, learner, ranks, stage, Batch(ROWS, SEQ, SEQ, gpu=False)), gpu=False)


def measure(folder: str, precision: str, stage: int, ranks: int, workdir: Path) -> dict:
    from hrlaif_ray.zero import free_port

    out = workdir / f"m-{Path(folder).name}-{precision}-{stage}-{ranks}"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks), "--master-addr", "127.0.0.1"]
    cmd += ["--master-port", str(free_port()), "-m", "benchmarks.memory", "--rank-step", folder, precision, str(stage)]
    cmd += [str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parents[1])
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    ranks_out = [json.loads(out.with_suffix(f".{r}.json").read_text()) for r in range(ranks)]
    worst = max(ranks_out, key=lambda r: r["measured_bytes"] + r["baseline_bytes"])
    measured = worst["measured_bytes"] + worst["baseline_bytes"]  # the rank's whole peak, its process included
    est = estimate(folder, precision, stage, ranks)
    return {
        "model": Path(folder).name,
        "precision": precision,
        "zero_stage": stage,
        "ranks": ranks,
        "rows": ROWS,
        "seq": SEQ,
        "estimate_bytes": est,
        "measured_bytes": measured,
        "estimate_over_measured": round(est / measured, 3),
        "within_target": 0.9 <= est / measured <= 1.25,
        "measured_above_baseline_bytes": worst["measured_bytes"],
        "baseline_bytes": worst["baseline_bytes"],
        "step_s": round(max(r["step_s"] for r in ranks_out) / 2, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rank-step", nargs=4, metavar=("FOLDER", "PRECISION", "STAGE", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--models", nargs="+", default=["tiny", "50m"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--stages", nargs="+", type=int, default=[0, 2, 3])
    parser.add_argument("--ranks", nargs="+", type=int, default=[1, 2])
    args = parser.parse_args(argv)
    if args.rank_step:
        folder, precision, stage, out = args.rank_step
        rank_step(folder, precision, int(stage), out)
        return 0
    from benchmarks.common import print_table, write_results
    from benchmarks.ppo_step import make_model

    root = Path(tempfile.mkdtemp(prefix="memory-bench-"))
    rows = []
    for kind in args.models:
        folder = make_model(kind, root)
        for precision in args.precisions:
            for stage in args.stages:
                for ranks in args.ranks:
                    row = measure(folder, precision, stage, ranks, root)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    columns = [
        "model",
        "precision",
        "zero_stage",
        "ranks",
        "estimate_bytes",
        "measured_bytes",
        "estimate_over_measured",
    ]
    print_table(rows, columns)
    write_results("memory", rows, rows_per_rank=ROWS, seq=SEQ, target="0.9 <= estimate / measured <= 1.25")
    return 0


if __name__ == "__main__":
    sys.exit(main())
