"""A PPO run: its roles started, `ppo_loop` to the end, the roles given back; checkpoints, resume, and the
restarts after faults.

Rollout engines, reward replicas and reference ranks are restarted by Ray in place and redo their share of the
step (`faults.actor_restarts`); a trained rank that dies, or a role out of restarts, fails the step and `run_ppo`
restarts every role from the last checkpoint this run saved (`faults.max_failures` times); every call is bounded
(`faults.call_timeout_s`) and a failure names the role, rank, node and step. faults.jsonl lists each event.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from actors.calls import RoleFailure
from cluster.connect import connect_ray
from cluster.ppo.experience import PromptSampler, experience_source
from cluster.ppo.faults import Chaos, ChaosSource, FaultLog
from cluster.ppo.loop import Watch, ppo_loop
from cluster.ppo.roles import build_roles, placed_roles
from cluster.storage import check_shared_folder
from cluster.topology import Topology
from hrlaif_ray.config import PPOJob, dump_config
from hrlaif_ray.data.prompt_mix import generate_prompt_mix
from hrlaif_ray.data.schemas import read_records
from hrlaif_ray.entry import job_parser, parse_job
from hrlaif_ray.errors import ConfigError
from hrlaif_ray.lora import is_adapter_folder
from hrlaif_ray.metrics import MetricsLog, truncate_jsonl
from hrlaif_ray.planner import check, plan_ppo
from hrlaif_ray.ppo import core
from hrlaif_ray.ppo.experience import Rollouts
from hrlaif_ray.ppo.monitor import RewardHackingMonitor
from hrlaif_ray.tracking import Tracker, check_trackers, stage_tracker

BUFFER = "buffer.pt"  # in an asynchronous run's checkpoint: the next step's batch, already made


def checkpoints(out: Path) -> list[Path]:
    """The whole checkpoints in `out` (`step_N` with its state.json), oldest first."""
    found = (out / "checkpoints").glob("step_*")
    return sorted((p for p in found if p.name[5:].isdigit() and (p / "state.json").is_file()), key=step_of)


def last_checkpoint(out: Path) -> Path | None:
    found = checkpoints(out)
    return found[-1] if found else None


def step_of(folder: Path) -> int:
    return int(folder.name.split("_")[1])


def prune_checkpoints(out: Path, keep: int, upto: int, protect: Path | None = None) -> list[Path]:
    """After the checkpoint of step `upto` is whole: delete all but the newest `keep` of those up to it (one of a
    later step is another run's, and stays), never `protect` (the one the attempt started from: an engine that
    Ray restarts in place loads its start folder again); the deleted ones. Each goes out of sight first (renamed
    from step_N), so a deletion cut short never leaves a half checkpoint that looks whole."""
    gone = [p for p in checkpoints(out) if step_of(p) <= upto][:-keep]
    gone = [p for p in gone if protect is None or p.resolve() != Path(protect).resolve()]
    for folder in gone:
        trash = folder.with_name(f".pruned-{folder.name}")
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(folder, trash)
        shutil.rmtree(trash, ignore_errors=True)
    return gone


def run_ppo(job: PPOJob) -> dict:
    """The run: its roles started, `ppo_loop`, the roles given back; after a role's failure that the roles could not
    mend in place (a trained rank died, a role ran out of restarts or did not answer) every role is restarted from
    the last checkpoint, at most `faults.max_failures` times. final.json and the returned summary count them."""
    check(job, plan_ppo)  # the roles fit their bundles, before anything is reserved or written
    if job.actor.lora.enabled and is_adapter_folder(job.policy):
        raise ConfigError(
            f"policy: {job.policy!r} is an adapter folder, but actor.lora trains adapters on the policy and takes "
            "the policy as the KL reference; give a whole model folder (an adapter folder's merged/ folder, written "
            "with lora.save_merged: true)"
        )
    check_trackers(job.logging)
    # the prompts read (a bad file is one error naming it) before the output folder is made
    prompts = read_records(job.prompts, "prompts") if job.prompts else generate_prompt_mix(job.prompt_mix)
    out = Path(job.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ppo_config.yaml").write_text(dump_config(job))
    # Logical CPUs: the plan's bundles are slots, not cores (on a small machine the roles take turns).
    connect_ray(job.ray_address, num_cpus=max(8, os.cpu_count() or 1))
    faults = FaultLog(out)
    if not job.resume:
        faults.clear()
    # a resumed run goes on logging into its tracker runs
    with stage_tracker(job.logging, "ppo", job, resume=job.resume) as tracker:
        result = run_with_restarts(job, prompts, faults, tracker)
        tracker.summary({**(result["last"] or {}), "steps": result["steps"]})
        for name in ("final.json", "ppo_config.yaml"):
            tracker.artifact(out / name)
    return result


def run_with_restarts(job: PPOJob, prompts: list, faults: FaultLog, tracker: Tracker) -> dict:
    """`run_attempt` until the run ends, restarting every role from the last checkpoint after a role's failure
    (`faults.max_failures` times at most); final.json, also returned."""
    out = Path(job.output_dir)
    chaos = Chaos(job.faults.chaos, faults) if job.faults.chaos else None
    # Where an attempt starts: the last checkpoint when resuming, then the last one this run saved (never one an
    # earlier run left in the folder).
    resume_from = last_checkpoint(out) if job.resume else None
    saved: list[Path] = []
    failures = 0
    try:
        while True:
            try:
                alert = run_attempt(job, prompts, faults, chaos, resume_from, saved, tracker)
                break
            except RoleFailure as exc:
                if not exc.restartable or failures >= job.faults.max_failures:
                    raise
                failures += 1
                resume_from = saved[-1] if saved else resume_from
                from_step = json.loads((resume_from / "state.json").read_text())["step"] if resume_from else 0
                tqdm.write(
                    f"FAULT: {exc}; restarting every role from step {from_step} ({failures}/{job.faults.max_failures})"
                )
                faults.write(
                    "resumed",
                    failed_step=exc.step,
                    from_step=from_step,
                    role=exc.role,
                    rank=exc.rank,
                    node=exc.node,
                    what=exc.what,
                )
    finally:
        if chaos is not None:
            chaos.stop()
    rows = MetricsLog(out, tensorboard=False).rows()
    events = faults.rows()
    checkpoint = saved[-1] if saved else resume_from
    best = json.loads((out / "best.json").read_text()) if (out / "best.json").is_file() else None
    result = {
        "steps": len(rows),
        "last": rows[-1] if rows else None,
        "checkpoint": str(checkpoint),
        # the run's policy: the best held-out check's actor with monitor.keep_best, else the last checkpoint's
        "policy": str(out / "best" / "actor" if best and job.monitor.keep_best else Path(str(checkpoint)) / "actor"),
        "best": best,
        "stopped_by_monitor": alert,
        "faults": {
            "injected": sum(e["event"] == "injected" for e in events),
            "restarted_in_place": sum(e["event"] == "restarted" for e in events),
            "resumed_from_checkpoint": sum(e["event"] == "resumed" for e in events),
            # the steps run again after a restart from a checkpoint, the failed one included
            "steps_redone": sum(
                (e["failed_step"] or e["from_step"]) - e["from_step"] for e in events if e["event"] == "resumed"
            ),
        },
    }
    # The run is over (all steps, or stopped by the monitor): what the pipeline and a user look for.
    (out / "final.json").write_text(json.dumps(result, indent=1, default=float))
    return result


def run_attempt(
    job: PPOJob,
    prompts: list,
    faults: FaultLog,
    chaos: Chaos | None,
    resume_from: Path | None,
    saved: list[Path],
    tracker: Tracker,
) -> str | None:
    """One start of every role (from checkpoint `resume_from`, else from the start: a fresh metrics log) and the
    loop to the end; each checkpoint it writes is appended to `saved`. The monitor's alert if it stopped the run.
    Every exit gives back the placement groups and their actors."""
    from transformers import AutoTokenizer

    out = Path(job.output_dir)
    critic_init = None
    if job.algo.estimator == "gae":
        critic_init = job.critic_start()
    policy, start_step, kl_coef, buffered = job.policy, 0, job.algo.kl_coef, None
    if resume_from is not None:
        state = json.loads((resume_from / "state.json").read_text())
        policy, start_step, kl_coef = str(resume_from / "actor"), state["step"], state["kl_coef"]
        critic_init = str(resume_from / "critic") if critic_init else None
        if job.async_.max_staleness and (resume_from / BUFFER).is_file():  # the batch it had made for this step
            buffered = torch.load(resume_from / BUFFER, weights_only=False)
            buffered = buffered if buffered.step == start_step else None
    else:  # a fresh run owns its metrics, alerts and final state
        for name in ("metrics.jsonl", "alerts.jsonl", "final.json", "best.json"):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / "best", ignore_errors=True)
    topo = Topology(job.resources, placed_roles(job, critic=critic_init is not None))
    roles = None
    try:  # every exit path, a role that fails to start included, gives back the placement groups (and their actors)
        tokenizer = AutoTokenizer.from_pretrained(job.policy)
        sampler = PromptSampler(prompts, job.prompts_per_step, job.seed)
        mix = job.prompt_mix.model_copy(update={"seed": job.monitor.seed, "n": job.monitor.prompts * 4})
        held_out = [p for p in generate_prompt_mix(mix) if p.answer is not None][: job.monitor.prompts]
        roles = build_roles(job, topo, policy, critic_init)
        check_shared_folder(out, roles.actor.read_probe)  # checkpoints: written by rank 0, read by this driver
        kl_ctl = core.KLController(kl_coef, job.algo.kl_target, job.algo.kl_horizon)
        watch = Watch(
            job, tokenizer, held_out, RewardHackingMonitor(job.monitor.accuracy_drop, job.monitor.reward_rise)
        )

        def save(step: int, coef: float, buffer: Rollouts | None = None, best: float | None = None) -> None:
            if best is not None:  # early stopping's candidate: the actor alone, replaced whole
                tmp = out / "best.tmp"
                shutil.rmtree(tmp, ignore_errors=True)
                roles.actor.save(str(tmp / "actor"), job.policy)
                shutil.rmtree(out / "best", ignore_errors=True)
                os.replace(tmp, out / "best")
                (out / "best.json").write_text(json.dumps({"step": step, "heldout_accuracy": best}))
                return
            folder = out / "checkpoints" / f"step_{step}"
            tmp = folder.with_name(folder.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            roles.actor.save(str(tmp / "actor"), job.policy)
            if roles.critic is not None:
                roles.critic.save(str(tmp / "critic"), job.policy)
            if buffer is not None:  # one step ahead: the next step's batch, made by the weights before this update
                torch.save(buffer, tmp / BUFFER)
            (tmp / "state.json").write_text(json.dumps({"step": step, "kl_coef": coef}))
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(tmp, folder)  # a checkpoint exists whole or not at all
            saved.append(folder)
            prune_checkpoints(out, job.max_checkpoints, step, protect=resume_from)

        log = MetricsLog(out, job.logging.tensorboard, tracker)
        log.truncate(start_step)  # steps logged after the checkpoint are redone from it: each step once
        truncate_jsonl(out / "alerts.jsonl", start_step)  # and so are their monitor checks
        try:
            source = experience_source(job, roles, tokenizer, sampler, start_step, buffered)  # the loop closes it
            if chaos is not None:
                source = ChaosSource(source, chaos, roles)
            return ppo_loop(job, roles, source, start_step, kl_ctl, log, save, watch, faults)
        finally:
            log.close()
    finally:
        if roles is not None:
            roles.shutdown()
        topo.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = job_parser("hrlaif ppo", PPOJob, "steps=30 algo.estimator=rloo")
    parser.add_argument(
        "--resume", action="store_const", const=True, help="continue from the last checkpoint in output_dir (resume=)"
    )
    job, _ = parse_job(parser, PPOJob, argv, {"resume": "resume"})
    result = run_ppo(job)
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
