"""`hrlaif run --config run.yaml`: the whole HRLAIF pipeline, each stage resumable from its own output.

    model -> sft -> prompts (training, evaluation) -> eval(sft), probe samples (the SFT policy on the evaluation prompts)
          -> for each seed: sample -> for each arm (side by side): label -> train-rm -> ppo -> rm-probe -> eval
                                                                         (or label -> dpo -> its implicit reward's probe -> eval)
          -> report (the mechanism link by link, with 95% intervals over seeds and prompts; plots; results.json)

Each stage is the same command a user runs by hand (`hrlaif sft`, `hrlaif sample`, `hrlaif label`,
`hrlaif train-rm`, `hrlaif ppo`, `hrlaif dpo`, `hrlaif eval`), started as a child process with the config the run wrote to
`<output_dir>/configs/`, its output in `<output_dir>/logs/`. A stage whose output is complete is skipped, so a
rerun after a crash or Ctrl-C continues where it stopped (labels through the ledger, PPO through `--resume`).
The run starts one local Ray cluster (127.0.0.1) that every stage joins, and, unless `judge: null`, the
simulated judge on 127.0.0.1 with the run's prompts as its answer key.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from actors.runtime import stage_env
from hrlaif_ray.config import RunJob, dump_config, load_config
from hrlaif_ray.config.run import STAGES
from hrlaif_ray.entry import job_parser, parse_job
from hrlaif_ray.errors import HrlaifError
from hrlaif_ray.tracking import check_trackers, stage_tracker


def sampled_all(prompts: Path, rollouts: Path) -> bool:
    from hrlaif_ray.data.schemas import read_records

    return rollouts.exists() and len(read_records(rollouts, "rollouts")) == len(read_records(prompts, "prompts"))


class Stage:
    """One stage of the run: its command, its config file, its log, and the test that it is complete."""

    def __init__(self, run: Run, name: str, argv: list[str], config, done: Path | Callable[[], bool], threads: int):
        self.run, self.name, self.argv, self.config, self.done, self.threads = run, name, argv, config, done, threads

    def complete(self) -> bool:
        return self.done() if callable(self.done) else self.done.exists()

    def __call__(self) -> None:
        if self.complete():
            proof = self.done if isinstance(self.done, Path) else "its outputs are complete"
            self.run.say(f"{self.name}: done already ({proof})")
            return
        cfg = self.run.out / "configs" / f"{self.name.replace('/', '-')}.yaml"
        cfg.parent.mkdir(parents=True, exist_ok=True)
        cfg.write_text(dump_config(self.config))
        log = self.run.out / "logs" / f"{self.name.replace('/', '-')}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        self.run.say(f"{self.name}: started (log {log})")
        start = time.monotonic()
        env = stage_env(self.threads, self.run.env)
        with open(log, "a") as fh:
            code = subprocess.call(
                [sys.executable, "-m", "cluster.cli", *self.argv, "--config", str(cfg)],
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=Path(__file__).resolve().parent.parent,
            )
        if code != 0 or not self.complete():
            tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
            raise HrlaifError(f"stage {self.name} failed (exit {code}); its log {log} ends:\n{tail}")
        seconds = round(time.monotonic() - start, 1)
        self.run.record_stage(self.name, seconds)
        self.run.say(f"{self.name}: finished in {seconds:.0f} s")


class Run:
    def __init__(self, job: RunJob):
        self.job, self.out = job, Path(job.output_dir).resolve()
        # what every stage's process gets: RAY_ADDRESS, and one compile cache for all the run's vLLM engines (each
        # start would compile the same CPU kernels again) unless the environment names one
        self.env: dict[str, str] = {
            key: str(self.out / "cache" / sub)
            for key, sub in (("VLLM_CACHE_ROOT", "vllm"), ("TORCHINDUCTOR_CACHE_DIR", "inductor"))
            if not os.environ.get(key)
        }
        self.judge_url: str | None = None
        self.sft_evaluated = threading.Event()
        self.probe_sampled = threading.Event()
        self.rm_ready: dict[str, threading.Event] = {}  # seed/arm -> its labels and RM are there (or failed)
        self.labels_ready: dict[str, threading.Event] = {}  # seed/arm -> its labels are there (or failed)
        self.machine: dict = {}
        # one group in the trackers per invocation: its stage runs and its report
        self.group = job.logging.group or f"{self.out.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        self.lock = threading.Lock()
        self.t0 = time.monotonic()

    def say(self, line: str) -> None:
        with self.lock:
            print(f"[{time.monotonic() - self.t0:6.0f} s] {line}", flush=True)

    def record_stage(self, name: str, seconds: float) -> None:
        """A finished stage's time with its own provenance (stages.jsonl: a stage run by a later, resumed
        invocation keeps that invocation's date, commit and machine; the others keep theirs)."""
        from hrlaif_ray.provenance import stamp

        row = {"stage": name, "seconds": seconds, **stamp(), "matmul_gflops": self.machine.get("matmul_gflops")}
        with self.lock, open(self.out / "stages.jsonl", "a") as fh:
            fh.write(json.dumps(row) + "\n")

    # ---------------------------------------------------------------------------------------- paths
    def path(self, *parts: str) -> Path:
        return self.out.joinpath(*parts)

    @property
    def sft_dir(self) -> Path:
        return self.path("sft")

    def seed_dir(self, seed: int) -> Path:
        return self.path(f"seed-{seed}")

    def policy_of(self, arm_dir: Path) -> Path:
        """The arm's trained policy: DPO's, or its finished PPO run's (the last checkpoint: all steps, or stopped by
        the monitor; the best held-out check's with ppo.monitor.keep_best)."""
        if (arm_dir / "dpo" / "final.json").exists():  # the last round's, when DPO is iterative
            return Path(json.loads((arm_dir / "dpo" / "final.json").read_text())["policy"])
        final = json.loads((arm_dir / "ppo" / "final.json").read_text())
        return Path(final.get("policy") or Path(final["checkpoint"]) / "actor")

    # ---------------------------------------------------------------------------------------- stages
    def model(self) -> str:
        if self.job.init:
            return self.job.init
        from hrlaif_ray.models.tiny import tiny_model_folder

        folder = self.path("model")
        if not (folder / "config.json").exists():
            tiny_model_folder(self.job.model, folder)
            self.say(
                f"model: tiny {self.job.model.model.arch} with a {self.job.model.tokenizer.vocab_size}-token BPE in {folder}"
            )
        return str(folder)

    def prompts(self) -> Path:
        """The RL prompts (split 'train'), the evaluation's (split 'eval' or 'dev'), and the judge's answer key: both."""
        from hrlaif_ray.data.prompt_mix import generate_prompt_mix
        from hrlaif_ray.data.schemas import write_records

        path, evaluation, key = (
            self.path("prompts.parquet"),
            self.path("eval_prompts.parquet"),
            self.path("judge_answer_key.parquet"),
        )
        if not (path.exists() and evaluation.exists() and key.exists()):
            if self.job.prompts.split != "train":
                raise HrlaifError(
                    f"prompts.split: the RL prompts are trained on, so they must be 'train', not {self.job.prompts.split!r}"
                )
            prompts = generate_prompt_mix(self.job.prompts)
            mix = self.job.eval.mix
            held = generate_prompt_mix(mix) if mix else []
            write_records(evaluation, held, "prompts")
            write_records(key, prompts + held, "prompts")
            write_records(path, prompts, "prompts")
        return path

    def stage(
        self,
        name: str,
        argv: list[str],
        done: Path | Callable[[], bool],
        threads: int = 1,
        stage: str | None = None,
        **paths,
    ) -> Stage:
        """A stage named `name` (its log and config file) running the job of `stage` (default: the name's last
        part); a trained stage's tracker run is named `name`, in the run's group."""
        kind = stage or name.split("/")[-1]
        if "logging.name" in STAGES[kind][1]:
            paths.update({"logging.name": name, "logging.group": self.group})
            for key in ("wandb", "mlflow"):
                if (tracker := getattr(self.job.logging, key)) is not None:
                    paths[f"logging.{key}"] = tracker.model_dump(mode="json")
        return Stage(self, name, argv, self.job.stage_job(kind, **paths), done, threads)

    def eval_stage(
        self, name: str, policy: Path, out: Path, baseline: Path | None, threads: int, seed: int = 0
    ) -> Stage:
        extra = {"baseline": str(baseline)} if baseline else {}
        extra["seed"] = seed
        return self.stage(
            name,
            ["eval"],
            out / "eval.json",
            threads,
            policy=str(policy),
            output_dir=str(out),
            **self.judge_paths("judge"),
            **extra,
        )

    def judge_paths(self, key: str) -> dict:
        """Point the judge (and the red-team rewriter) at the run's simulated judge, when it runs one."""
        if self.job.judge is None:
            return {}
        base = self.judge_url
        return {
            f"{key}.judges": [{"base_url": base, "model": "gpt-3.5-turbo"}],
            f"{key}.rewriter": {"base_url": base, "model": "gpt-4"},
        }

    def arm(self, arm, seed: int) -> None:
        """One arm: its labels (or another arm's), then PPO on a reward model of them (train-rm -> ppo -> rm-probe)
        or DPO on them directly (dpo -> the implicit reward's probe); or PPO on the judge's labels of its own samples
        made in the loop (online: no label or RM stage); then the evaluation."""
        s = self.seed_dir(seed)
        a, tag = s / arm.name, f"seed-{seed}/{arm.name}"
        prompts = str(self.path("prompts.parquet"))
        owner = s / (arm.rm_from or arm.name)
        rm_dir = s / self.job.rm_owner(arm) / "rm"
        own_rm = arm.trainer == "ppo" and rm_dir.parent == a
        if arm.rm_from:  # labels (and RM) are another arm's: wait for them
            ready = self.rm_ready if arm.trainer == "ppo" and not own_rm else self.labels_ready
            ready[f"{seed}/{arm.rm_from}"].wait()
            if not (owner / "labels" / "summary.json").exists() or (
                arm.trainer == "ppo" and not (rm_dir / "metrics.json").exists() and not own_rm
            ):
                raise HrlaifError(f"{tag}: the labels or RM of arm {arm.rm_from} failed")
            if own_rm:  # the same labels, another kind of RM
                self.train_rm(tag, arm, owner / "labels", rm_dir, seed)
        elif arm.trainer == "online":  # labels its own samples in the loop: no offline labels, no RM
            self.labels_ready[f"{seed}/{arm.name}"].set()
            self.rm_ready[f"{seed}/{arm.name}"].set()
        else:
            try:
                self.stage(
                    f"{tag}/label",
                    ["label", "--no-progress"],
                    a / "labels" / "summary.json",
                    1,
                    prompts=prompts,
                    rollouts=str(s / "rollouts.parquet"),
                    output_dir=str(a / "labels"),
                    **{"labeling.method": arm.method, "labeling.cache_dir": str(s / "judge-cache")},
                    **self.judge_paths("labeling"),
                )()
                self.labels_ready[f"{seed}/{arm.name}"].set()
                if arm.trainer == "ppo":
                    self.train_rm(tag, arm, a / "labels", rm_dir, seed)
            finally:
                self.labels_ready[f"{seed}/{arm.name}"].set()
                self.rm_ready[f"{seed}/{arm.name}"].set()
        if arm.trainer == "dpo":
            rounds = {}  # iterative DPO labels its own samples each round: with the arm's method and the run's judge
            if self.job.dpo.iterative is not None:
                rounds = {"iterative.label.labeling.method": arm.method, **self.judge_paths("iterative.label.labeling")}
            self.stage(
                f"{tag}/dpo",
                ["dpo"],
                a / "dpo" / "final.json",
                1,
                policy=str(self.sft_dir),
                labels_dir=str(owner / "labels"),
                prompts=prompts,
                output_dir=str(a / "dpo"),
                seed=seed,
                **rounds,
            )()
            self.probe(tag, a / "dpo" / "probe.json", rm=str(a / "dpo" / "policy"), reference=str(self.sft_dir))
        else:
            if arm.trainer == "online":  # the judge labels each step's samples: the arm's method, the seed's cache
                reward = {
                    "reward.kind": "online",
                    "reward.labels_dir": str(a / "labels"),  # where the report's first link reads labels
                    "reward.labeling.method": arm.method,
                    "reward.labeling.cache_dir": str(s / "judge-cache"),
                    **self.judge_paths("reward.labeling"),
                }
            else:
                reward = {"reward.kind": arm.reward, "reward.rm": str(rm_dir)}
            self.stage(
                f"{tag}/ppo",
                ["ppo", "--resume"],
                a / "ppo" / "final.json",
                1,
                policy=str(self.sft_dir),
                output_dir=str(a / "ppo"),
                prompts=prompts,
                seed=seed,
                **reward,
            )()
            if own_rm:  # the RM against the ground truth (after PPO: the SFT samples may still be coming)
                self.probe(tag, rm_dir / "probe.json", rm=str(rm_dir))
        self.sft_evaluated.wait()  # the baseline's responses
        if not self.path("eval", "sft", "eval.json").exists():
            raise HrlaifError(f"{tag}/eval: the SFT evaluation (its baseline) failed")
        self.eval_stage(f"{tag}/eval", self.policy_of(a), a / "eval", self.path("eval", "sft"), 1, seed=seed)()

    def train_rm(self, tag: str, arm, labels: Path, out: Path, seed: int) -> None:
        """The arm's reward model, of its kind, on `labels`."""
        self.stage(
            f"{tag}/rm",
            ["train-rm"],
            out / "metrics.json",
            1,
            init=str(self.sft_dir),
            labels_dir=str(labels),
            prompts=str(self.path("prompts.parquet")),
            output_dir=str(out),
            seed=seed,
            kind=self.job.rm_kind(arm),
        )()

    def probe(self, tag: str, output: Path, **scorer) -> None:
        """The arm's reward (an RM, or a DPO policy's implicit reward) against the ground truth on the SFT policy's
        samples of the evaluation prompts."""
        self.probe_sampled.wait()
        if not self.probe_rollouts.exists():
            raise HrlaifError(f"{tag}/rm-probe: the SFT policy's samples of the evaluation prompts failed")
        self.stage(
            f"{tag}/probe",
            ["rm-probe"],
            output,
            1,
            prompts=str(self.path("eval_prompts.parquet")),
            rollouts=str(self.probe_rollouts),
            output=str(output),
            **scorer,
        )()

    @property
    def probe_rollouts(self) -> Path:
        return self.path("probe_rollouts.parquet")

    def execute(self) -> dict:
        from cluster.report import write_report
        from hrlaif_ray.provenance import measure_machine
        from hrlaif_ray.run_plan import check_run, run_slots

        plans, warnings = check_run(self.job)  # every trained stage fits, before any stage starts
        slots = self.job.ray_num_cpus or run_slots(self.job, plans)  # the local Ray cluster's logical CPUs
        check_trackers(self.job.logging)
        for stage in ("sft", "rm", "ppo", "dpo"):  # a stage section's own trackers, named by their path
            check_trackers(getattr(self.job, stage).logging, f"{stage}.logging")
        for line in warnings:
            self.say(f"plan: {line}")
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "run_config.yaml").write_text(dump_config(self.job))
        self.machine = machine = measure_machine()
        self.say(f"machine: {machine['cpus']} CPUs, fp32 matmul {machine['matmul_gflops']:.0f} GFLOP/s")
        cores = os.cpu_count() or 1
        with ExitStack() as stack:
            init = self.model()
            self.stage(
                "sft", ["sft"], self.sft_dir / "sft_metrics.json", cores, init=init, output_dir=str(self.sft_dir)
            )()
            self.prompts()
            self.start_ray(stack, slots)
            for i, seed in enumerate(self.job.seeds):
                self.run_seed(seed, first=i == 0)
        result = write_report(self.out, self.job, machine)
        self.say(f"report: {self.out / 'report.md'}")
        logging = self.job.logging.model_copy(update={"name": "report", "group": self.group})
        with stage_tracker(logging, "report", self.job) as tracker:
            for name in ("report.md", "results.json", "run_config.yaml"):
                tracker.artifact(self.out / name, "report")
        return result

    def run_seed(self, seed: int, first: bool) -> None:
        """One seed: the SFT policy's samples of the RL prompts, then every arm side by side (with the first seed, the
        SFT policy's evaluation and its samples of the evaluation prompts beside them)."""
        from hrlaif_ray.judges.launch import sim_judge_server

        cores = os.cpu_count() or 1
        s = self.seed_dir(seed)
        with ExitStack() as stack:
            if self.job.judge is not None:  # the labels are reseeded: the judge's draws too
                judge = {
                    **self.job.judge.model_dump(mode="json"),
                    "seed": seed,
                    "answer_key": str(self.path("judge_answer_key.parquet")),
                }
                self.judge_url = stack.enter_context(
                    sim_judge_server([f"{k}={json.dumps(v)}" for k, v in judge.items()])
                )
            prompts, rollouts = self.path("prompts.parquet"), s / "rollouts.parquet"
            self.stage(
                f"seed-{seed}/sample",
                ["sample"],
                lambda: sampled_all(prompts, rollouts),
                cores,
                policy=str(self.sft_dir),
                prompts=str(prompts),
                output=str(rollouts),
                seed=seed,
            )()
            jobs: list[tuple[str, Callable[[], None]]] = []
            if first:
                evaluation = self.path("eval_prompts.parquet")
                jobs += [
                    ("sft-eval", self.eval_stage("sft/eval", self.sft_dir, self.path("eval", "sft"), None, 1)),
                    (
                        "probe-sample",
                        self.stage(
                            "probe-sample",
                            ["sample"],
                            lambda: sampled_all(evaluation, self.probe_rollouts),
                            1,
                            stage="sample",
                            policy=str(self.sft_dir),
                            prompts=str(evaluation),
                            output=str(self.probe_rollouts),
                            seed=10_000,
                            # beside the arms' stages: one engine thread (threads beyond the cores stall OpenMP)
                            **{"engines.threads": 1},
                        ),
                    ),
                ]
            self.rm_ready.update({f"{seed}/{arm.name}": threading.Event() for arm in self.job.arms})
            self.labels_ready.update({f"{seed}/{arm.name}": threading.Event() for arm in self.job.arms})
            jobs += [(arm.name, lambda arm=arm: self.arm(arm, seed)) for arm in self.job.arms]
            done = {"sft-eval": self.sft_evaluated, "probe-sample": self.probe_sampled}
            if not self.job.parallel_arms:
                for name, fn in jobs:
                    try:
                        fn()
                    finally:
                        if name in done:
                            done[name].set()
                return
            errors: list[BaseException] = []

            def guarded(name, fn):
                try:
                    fn()
                except BaseException as exc:  # noqa: BLE001 (re-raised in the main thread)
                    errors.append(exc)
                finally:
                    if name in done:
                        done[name].set()

            threads = [threading.Thread(target=guarded, args=job, name=job[0]) for job in jobs]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if errors:
                raise errors[0]

    def start_ray(self, stack: ExitStack, slots: int) -> None:
        """One local Ray cluster on 127.0.0.1 for every stage (they join it through RAY_ADDRESS)."""
        import ray

        from cluster.connect import connect_ray

        if os.environ.get("RAY_ADDRESS"):
            return
        connect_ray(num_cpus=slots, log_to_driver=False)
        stack.callback(ray.shutdown)
        self.env["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address


def main(argv: list[str] | None = None) -> int:
    parser = job_parser(
        "hrlaif run", RunJob, "ppo.steps=40 output_dir=runs/x 'seeds=[1,2,3]'", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--control",
        action="store_true",
        help="the control: SFT answers as often right at every length "
        "(sft.responses.control=true), in <output_dir>-control unless output_dir is given",
    )
    parser.add_argument(
        "--summary",
        type=Path,
        help="also append the run's measured summary (links and outcomes per arm; date, commit, machine, and each "
        "stage's own) to this JSON file's records, e.g. benchmarks/results/demo_seeds.json",
    )
    job, args = parse_job(parser, RunJob, argv)
    overrides = list(args.overrides)
    if args.control:
        if not any(o.startswith("output_dir=") for o in overrides):
            overrides.append(f"output_dir={job.output_dir.rstrip('/')}-control")
        overrides.append("sft.responses.control=true")
        job = load_config(RunJob, args.config, overrides)
    result = Run(job).execute()
    print(result["table"])
    if args.summary:
        from cluster.report import summary_json
        from hrlaif_ray.provenance import append_record

        append_record(args.summary, summary_json(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
