"""DPO on Ray: `hrlaif dpo --config job.yaml`, or under a Ray cluster
`ray job submit --working-dir . -- python -m cluster.dpo --config job.yaml`.

The policy learns from the label ledger directly (no reward model, no RL loop), on every preference pair of the
labels' partial orders. `run_dpo` places the actor (the policy's DeepSpeed ranks) and the reference; `dpo_loop`
is the algorithm:

    reference log-probs of every response, once (they travel with the data)
    for each epoch: for each batch of prompts: one actor step on the DPO loss
                    then the held-out pairs: preference accuracy, margins, log-probs, per category

Batches cross the Ray boundary as `PreferenceBatch` references; each rank takes whole prompts. With `iterative`,
`run_iterative_dpo` repeats it in rounds: sample (vLLM actors) -> label (the labeler pool) -> DPO from the last
round's policy, each round resumable.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import ray
import torch
from tqdm import tqdm

from actors.learner import LearnerGroup
from cluster.connect import connect_ray
from cluster.topology import Topology
from hrlaif_ray.config import DPOJob, dump_config
from hrlaif_ray.data.binding import bound_labels
from hrlaif_ray.data.chat import pad_token_id
from hrlaif_ray.data.schemas import read_records
from hrlaif_ray.dpo.batch import PreferenceBatch, preference_batch
from hrlaif_ray.dpo.loss import dpo_loss
from hrlaif_ray.entry import load_job
from hrlaif_ray.errors import ConfigError
from hrlaif_ray.labeling.review import note_overrides, reviewed
from hrlaif_ray.lora import is_adapter_folder
from hrlaif_ray.metrics import MetricsLog, PhaseTimer
from hrlaif_ray.planner import check, plan_dpo
from hrlaif_ray.ppo.experience import sequence_logps
from hrlaif_ray.reward.data import examples_from_labels
from hrlaif_ray.reward.train import held_out
from hrlaif_ray.tracking import Tracker, check_trackers, stage_tracker


def load_preferences(job: DPOJob, tokenizer) -> tuple[PreferenceBatch, PreferenceBatch | None]:
    """The labels as (training, held-out) batches, people's decisions in place (`human_overrides`); held-out prompts
    are chosen by a hash of their id."""
    labels, prompts = bound_labels(job.labels_dir, job.prompts)
    labels, overrides = reviewed(job.labels_dir, labels, job.human_overrides)
    note_overrides(job.output_dir, overrides)
    examples = examples_from_labels(labels, prompts, tokenizer, job.max_prompt_tokens, job.max_response_tokens)
    train = [e for e in examples if not held_out(e.prompt_id, job.eval_fraction)]
    evaluation = [e for e in examples if held_out(e.prompt_id, job.eval_fraction)]
    if len(train) < job.batch_prompts:
        raise ValueError(
            f"{job.labels_dir}: {len(train)} training labels with preference pairs, fewer than batch_prompts "
            f"({job.batch_prompts})"
        )
    pad = pad_token_id(tokenizer)
    return preference_batch(train, pad), preference_batch(evaluation, pad) if evaluation else None


def group_sequence_logps(group: LearnerGroup, batch: PreferenceBatch, base: bool = False) -> torch.Tensor:
    """[rows] sequence log-probs of every response under a learner group (rows padded to split over its ranks);
    `base`: with its adapters off (the reference of a LoRA policy)."""
    seq, ranks = batch.sequences, len(group.ranks)
    n = seq.input_ids.size(0)
    idx = torch.cat([torch.arange(n), torch.full((-n % ranks,), n - 1, dtype=torch.long)])
    padded = seq.select(idx, 0, seq.response_width, float(seq.response_mask.sum()) or 1.0)
    token = group.logprobs(ray.put(padded), len(idx), base=base)
    return sequence_logps(token, padded.response_mask)[:n]


def held_out_metrics(batch: PreferenceBatch, logps: torch.Tensor, job: DPOJob) -> dict[str, float]:
    """DPO's statistics on the held-out pairs, all and per category (`eval/accuracy/math` ...)."""
    cats = [batch.categories[g] for g in batch.group.tolist()]
    out: dict[str, float] = {}
    for name in [None, *sorted(set(cats))]:
        keep = torch.tensor([name is None or c == name for c in cats])
        loss, stats = dpo_loss(
            logps,
            batch.ref_logps,
            batch.better[keep],
            batch.worse[keep],
            batch.weight[keep],
            batch.group[keep],
            job.beta,
            job.loss_type,
            job.margin * batch.tier_gap[keep],
        )
        suffix = f"/{name}" if name else ""
        out[f"eval/loss{suffix}"] = float(loss)
        out.update({f"eval/{k}{suffix}": float(v) for k, v in stats.items()})
        out[f"eval/pairs{suffix}"] = float(keep.sum())
    return out


def dpo_loop(
    job: DPOJob, actor: LearnerGroup, train: PreferenceBatch, evaluation: PreferenceBatch | None, log: MetricsLog
) -> list[dict]:
    """The algorithm, given the reference's log-probs in the batches: epochs of optimizer steps on shuffled
    batches of whole prompts (the tail that does not fill a batch waits for the next epoch's shuffle), each epoch
    closed by the held-out metrics. Returns the per-epoch held-out history."""
    rng, history, step = random.Random(job.seed), [], 0
    steps_per_epoch = len(train) // job.batch_prompts
    for epoch in range(job.epochs):
        order = list(range(len(train)))
        rng.shuffle(order)
        for i in tqdm(range(steps_per_epoch), desc=f"dpo epoch {epoch + 1}"):
            timer = PhaseTimer()
            with timer("step"):
                chunk = train.select(order[i * job.batch_prompts : (i + 1) * job.batch_prompts])
                stats = actor.train_preferences(
                    ray.put(chunk),
                    len(chunk),
                    beta=job.beta,
                    loss_type=job.loss_type,
                    margin=job.margin,
                    sft_weight=job.sft_weight,
                    forward_rows=job.forward_rows,
                )
            step += 1
            log.write(step, {**{f"dpo/{k}": v for k, v in stats.items()}, "dpo/epoch": epoch + 1, **timer.times})
        if evaluation is not None:
            timer = PhaseTimer()
            with timer("eval"):
                metrics = held_out_metrics(evaluation, group_sequence_logps(actor, evaluation), job)
            log.write(step, {**metrics, **timer.times})
            history.append({"epoch": epoch + 1, "step": step, **metrics})
            tqdm.write(json.dumps({"epoch": epoch + 1, "eval/accuracy": metrics["eval/accuracy"]}))
    return history


def run_dpo(job: DPOJob) -> dict:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(job.policy)
    if job.learner.lora.enabled and not job.reference and is_adapter_folder(job.policy):
        raise ConfigError(
            f"policy: {job.policy!r} is an adapter folder, but learner.lora trains adapters on the policy and takes "
            "it as the reference; give a whole model folder (an adapter folder's merged/ folder, written with "
            "lora.save_merged: true), or name the reference"
        )
    train, evaluation = load_preferences(job, tokenizer)
    responses = int((train.starts[1:] - train.starts[:-1]).max())  # a prompt's responses keep their graphs together
    check(job, lambda j: plan_dpo(j, responses=responses))  # before anything is reserved or written
    check_trackers(job.logging)
    out = Path(job.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "dpo_config.yaml").write_text(dump_config(job))
    for name in ("metrics.jsonl", "final.json"):  # a run owns its metrics
        (out / name).unlink(missing_ok=True)
    connect_ray(job.ray_address, num_cpus=8)
    with stage_tracker(job.logging, "dpo", job) as tracker:
        result = _train(job, out, train, evaluation, tracker)
        tracker.summary({**(result["history"][-1] if result["history"] else {}), "steps": result["steps"]})
        for name in ("final.json", "dpo_config.yaml"):
            tracker.artifact(out / name)
    return result


def _train(job: DPOJob, out: Path, train, evaluation, tracker: Tracker) -> dict:
    """The reference's log-probs, then the policy's DPO epochs; final.json. A policy that trains adapters is its
    own reference (the adapters off: no reference model is loaded) unless `reference` names another folder."""
    shared = job.learner.lora.enabled and not job.reference
    topo = Topology(job.resources, ("actor",) if shared else ("actor", "reference"))
    try:  # every exit path gives back the placement groups (and their actors)

        def learner(role: str, folder: str) -> LearnerGroup:
            res = topo.role(role)
            share = job.batch_prompts // res.replicas
            return LearnerGroup(
                role,
                folder,
                topo.learner_options(role),
                learner=job.learner if role == "actor" else None,
                frozen=job.frozen if role == "reference" else None,
                micro_batch=job.micro_batch_prompts,
                grad_accum=share // job.micro_batch_prompts,
                threads=res.threads,
                temperature=1.0,
                seed=job.seed,
            )

        timer = PhaseTimer()
        actor = learner("actor", job.policy) if shared else None
        with timer("reference"):  # once: the reference is frozen, so its log-probs are data
            reference = actor or learner("reference", job.reference or job.policy)
            train = train.with_reference(group_sequence_logps(reference, train, base=shared))
            if evaluation is not None:
                evaluation = evaluation.with_reference(group_sequence_logps(reference, evaluation, base=shared))
            if not shared:
                reference.close()
        actor = actor or learner("actor", job.policy)
        log = MetricsLog(out, job.logging.tensorboard, tracker)
        try:
            history = dpo_loop(job, actor, train, evaluation, log)
        finally:
            log.close()
        actor.save(str(out / "policy"), job.policy)
    finally:
        topo.shutdown()
    result = {
        "policy": str(out / "policy"),
        "train_prompts": len(train),
        "train_pairs": int(train.better.numel()),
        "eval_prompts": len(evaluation) if evaluation is not None else 0,
        "steps": job.epochs * (len(train) // job.batch_prompts),
        "reference_s": timer.times["time/reference"],
        "history": history,
    }
    (out / "final.json").write_text(json.dumps(result, indent=1))
    return result


def run_iterative_dpo(job: DPOJob) -> dict:
    """Iterative (online) DPO: round 0 trains on labels_dir; round r draws `prompts_per_round` prompts afresh,
    samples them with the last round's policy (vLLM actors), labels the samples (the labeler pool) and trains from
    that policy, each in output_dir/round-N. A round whose dpo/final.json exists is done and skipped on a rerun; a
    round cut short resumes its samples (`hrlaif sample`) and labels (the ledger) and retrains."""
    from cluster.label import run_label_job
    from cluster.sample import run_sample
    from hrlaif_ray.config import LabelJob, SampleJob
    from hrlaif_ray.data.schemas import write_records

    it, out = job.iterative, Path(job.output_dir)
    everything = read_records(job.prompts, "prompts")
    policy, initial_reference, rounds = job.policy, job.reference or job.policy, []
    for r in range(it.rounds + 1):
        folder = out / f"round-{r}"
        labels, prompts = job.labels_dir, job.prompts
        if r > 0:
            prompts, rollouts, labels = (str(folder / n) for n in ("prompts.parquet", "rollouts.parquet", "labels"))
            if not Path(prompts).exists():  # the round's draw, written once (a rerun keeps it)
                k = min(it.prompts_per_round, len(everything))
                write_records(prompts, random.Random(f"{job.seed}/{r}").sample(everything, k), "prompts")
            files = {"prompts": prompts, "rollouts": rollouts}
            sample = SampleJob(**dict(it.sample), policy=policy, prompts=prompts, output=rollouts, seed=job.seed + r)
            run_sample(sample, log=lambda line: None)
            run_label_job(LabelJob(**dict(it.label), **files, output_dir=labels), progress=False)
        final = folder / "dpo" / "final.json"
        if not final.exists():
            reference = initial_reference if r == 0 or it.reference == "initial" else policy
            update = dict(policy=policy, reference=reference, labels_dir=labels, prompts=prompts, iterative=None)
            run_dpo(job.model_copy(update={**update, "output_dir": str(folder / "dpo"), "seed": job.seed + r}))
        result = json.loads(final.read_text())
        last = result["history"][-1] if result["history"] else {}
        rounds.append(
            {
                "round": r,
                "policy": result["policy"],
                "steps": result["steps"],
                "eval/accuracy": last.get("eval/accuracy"),
            }
        )
        tqdm.write(json.dumps(rounds[-1]))
        policy = result["policy"]
    summary = {**result, "rounds": rounds}  # the last round's result (its policy and history), and every round's
    (out / "final.json").write_text(json.dumps(summary, indent=1))
    return summary


def main(argv: list[str] | None = None) -> int:
    job = load_job("hrlaif dpo", DPOJob, argv, "beta=0.1 epochs=2 loss_type=ipo")
    result = run_iterative_dpo(job) if job.iterative else run_dpo(job)
    print(json.dumps({k: v for k, v in result.items() if k != "history"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
