"""`make bench`: every benchmark in turn, each appending its record (date, commit, machine) to its results file in
$HRLAIF_BENCH_RESULTS (`make bench` sets runs/bench/). `make bench` installs the `bench` extra first: TRL and
datasets, the peers that ppo_step and dpo_step run side by side with ours.

Two are left to their own commands: `python -m benchmarks.ci_time` clones the checkout and times install plus the
whole test suite (about 15 minutes), and nothing else may run while it does; `python -m benchmarks.lora_learning`
is an experiment (LoRA PPO against full-weight PPO on the arithmetic set), not a speed benchmark; so are the
injection experiments: `injection_judge` fine-tunes a judge (about 35 minutes), `injection_flip --judge DIR` attacks
it (about 20) and `injection_probe` tries a learned detector (about 12)."""

import subprocess
import sys

BENCHMARKS = [
    "benchmarks.labeler_pool",
    "benchmarks.verifier",
    "benchmarks.injection",
    "benchmarks.rm_forward",
    "benchmarks.memory",
    "benchmarks.ppo_step",
    "benchmarks.weight_sync",
    "benchmarks.dpo_step",
    "benchmarks.async_step",
    "benchmarks.rm_service",
    "benchmarks.reward_service",
]
APART = {
    "benchmarks.ci_time": "times install plus the test suite in a clone, alone on the machine",
    "benchmarks.lora_learning": "a learning experiment, not a speed benchmark: an SFT policy and six 30-step PPO runs",
    "benchmarks.injection_judge": "fine-tunes SmolLM2 as a judge for injection_flip (about 35 minutes)",
    "benchmarks.injection_flip": "flip rates of a judge under prompt injection; needs injection_judge's folder",
    "benchmarks.injection_probe": "an experiment: a learned injection detector beside the patterns",
}

if __name__ == "__main__":
    for name in BENCHMARKS:
        print(f"== {name}", flush=True)
        subprocess.run([sys.executable, "-m", name], check=True)
