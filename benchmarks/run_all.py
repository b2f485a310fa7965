"""`make bench`: every benchmark in turn."""

import subprocess
import sys

BENCHMARKS = [
    "benchmarks.labeler_pool",
    "benchmarks.rm_forward",
    "benchmarks.ppo_step",
    "benchmarks.memory",
    "benchmarks.verifier",
]

if __name__ == "__main__":
    for name in BENCHMARKS:
        print(f"== {name}", flush=True)
        subprocess.run([sys.executable, "-m", name], check=True)
