"""The `hrlaif` command (it lives in `cluster`, the launch layer, so it may start Ray jobs). One table, `COMMANDS`,
maps each command to the function that runs it and the job class its config is; config-driven commands take
`--config FILE` plus dotted overrides (`model.hidden_size=256`), and their `--help` lists every key with its
description (`hrlaif_ray.entry`)."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from hrlaif_ray.errors import HrlaifError, RunFailure


@dataclass(frozen=True)
class Command:
    """One `hrlaif` command: the function that runs it (`module:function`, called with the arguments after the
    command's name), the job class its config is (`module:Class`; None for a command with flags only), its help."""

    entry: str
    job: str | None
    help: str


C = "hrlaif_ray.config:"
COMMANDS: dict[str, Command] = {
    # the stages
    "sft": Command("cluster.sft:main", C + "SFTJob", "supervised fine-tuning of the policy (default data: the mix)"),
    "sample": Command("cluster.sample:main", C + "SampleJob", "K responses per prompt through the vLLM rollout actors"),
    "label": Command("cluster.label:main", C + "LabelJob", "label prompts + K responses through the labeler pool"),
    "train-rm": Command("cluster.train_rm:main", C + "RMTrainJob", "train the reward model on label shards"),
    "rm-probe": Command(
        "cluster.rm_probe:main", C + "RMProbeJob", "a reward model against the ground truth on held-out samples"
    ),
    "ppo": Command(
        "cluster.ppo.run:main", C + "PPOJob", "PPO on Ray: vLLM rollouts, DeepSpeed learners, the reward service"
    ),
    "dpo": Command("cluster.dpo:main", C + "DPOJob", "DPO on Ray on the labels' partial orders, no reward model"),
    "revise": Command(
        "cluster.revise:main",
        C + "ReviseJob",
        "Constitutional AI's supervised phase: harmful responses critiqued and revised into SFT data",
    ),
    "eval": Command("cluster.evaluate:main", C + "EvalJob", "accuracy, harmful rate, win rate, reward and length"),
    "run": Command(
        "cluster.pipeline:main",
        C + "RunJob",
        "the pipeline: sft -> sample -> label -> train-rm -> ppo (or dpo) -> rm-probe -> eval per arm and seed",
    ),
    # the services
    "serve-judge": Command(
        "hrlaif_ray.judges.server:main",
        C + "SimJudgeConfig",
        "serve the simulated judge (OpenAI-compatible, explicit biases) on 127.0.0.1",
    ),
    "serve-rm": Command("cluster.serve_rm:main", None, "serve a reward model over HTTP on 127.0.0.1 (bearer token)"),
    "serve-reward": Command(
        "cluster.serve_reward:main",
        C + "ServeRewardJob",
        "serve the hybrid reward to OpenRLHF and veRL over HTTP on 127.0.0.1 (bearer token)",
    ),
    # the tools
    "plan": Command(
        "hrlaif_ray.planner:main",
        None,
        "a job's memory per role and bundle, checked against its GPUs and hosts (exit 2 when it cannot fit)",
    ),
    "audit-labels": Command(
        "cluster.audit:main", None, "AI-vs-human and verifier-vs-ground-truth agreement per category"
    ),
    "review": Command(
        "cluster.review:main", None, "a page on 127.0.0.1 (token) where people decide the labels the AI was unsure of"
    ),
    "prepare-data": Command("cluster.tools:prepare_data", None, "read a public data set into a Parquet file"),
    "make-prompts": Command("cluster.tools:make_prompts", C + "PromptMixConfig", "generate the project's prompt mix"),
    "tiny-model": Command(
        "cluster.tools:tiny_model", C + "TinyModelJob", "a BPE on the prompt mix and a random-init tiny LM folder"
    ),
    "export-smollm2": Command(
        "cluster.tools:export_smollm2", None, "the packaged SmolLM2-135M-Instruct GGUF as an HF safetensors folder"
    ),
}


def overview() -> str:
    """`hrlaif --help`: every command with its help, from the table."""
    rows = [f"  {name:15s} {c.help}" for name, c in COMMANDS.items()]
    rows.append(f"  {'config':15s} config show JOB: every key of a job with its default and description")
    return (
        "usage: hrlaif COMMAND [--config FILE] [key=value ...]   (hrlaif COMMAND --help: its flags and keys)\n\n"
        "Hybrid RL from AI Feedback on Ray.\n\ncommands:\n" + "\n".join(rows)
    )


def _resolve(ref: str):
    import importlib

    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


def config_show(argv: list[str]) -> int:
    """`hrlaif config show JOB`: the job's every key with its default and description."""
    from hrlaif_ray.config import config_help

    jobs = {name: c.job for name, c in COMMANDS.items() if c.job}
    if len(argv) != 2 or argv[0] != "show" or argv[1] not in jobs:
        raise HrlaifError(f"usage: hrlaif config show JOB, JOB one of {', '.join(sorted(jobs))}")
    cls = _resolve(jobs[argv[1]])
    print(f"# hrlaif {argv[1]}: {cls.__name__}. {(cls.__doc__ or '').strip().splitlines()[0]}")
    print(config_help(cls))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Every command, one error path: a bad config, override or input file is one line naming the key, file or
    record, and exit status 2; a run that failed after that (a role that died for good) one line and status 1;
    never a traceback."""
    from actors.runtime import process_defaults

    process_defaults()  # before anything imports DeepSpeed or Ray
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv else None
    if command in (None, "-h", "--help"):
        print(overview())
        return 0 if command else 2
    try:
        if command == "config":
            return config_show(argv[1:])
        if command not in COMMANDS:
            raise HrlaifError(f"unknown command {command!r}; one of {', '.join(COMMANDS)}, config")
        return _resolve(COMMANDS[command].entry)(argv[1:]) or 0
    except (HrlaifError, KeyError, ValueError, OSError) as exc:  # ours name what is wrong (files by path)
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"hrlaif {command}: error: {message}", file=sys.stderr)
        return 1 if isinstance(exc, RunFailure) else 2  # 2: the input was wrong; 1: the run failed


if __name__ == "__main__":
    sys.exit(main())
