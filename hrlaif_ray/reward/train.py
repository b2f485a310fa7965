"""Reward-model training on K-response partial orders, with DeepSpeed ZeRO.

One process is the simple case of many: without a torchrun-style environment the trainer is rank 0 of a world
of 1; under `torchrun --nproc-per-node N -m cluster.train_rm` (or a Ray learner group setting the same
variables) each rank takes every N-th batch. Each step scores every response of its prompts once through the
shared prompt prefix (O(1) prompt forwards, O(K) response forwards) and takes the partial-order loss over the
labels' pairs. Held-out ranking accuracy (share of held-out pairs ordered as labeled) is reported per category
every epoch. The checkpoint is an HF folder with the head, the clip bound and the training-set reward
mean/std that the forward normalises with.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from pathlib import Path

import torch

from hrlaif_ray.config import RMTrainJob, dump_config
from hrlaif_ray.data.binding import bound_labels
from hrlaif_ray.data.chat import pad_token_id
from hrlaif_ray.labeling.review import note_overrides, reviewed
from hrlaif_ray.lora import gathered_merged_state, trained_state
from hrlaif_ray.models.hf_formats import SEQUENCE_CLASSIFICATION, export_problem, save_sequence_classification
from hrlaif_ray.planner import check, plan_rm
from hrlaif_ray.reward.data import RMExample, collate, examples_from_labels
from hrlaif_ray.reward.loss import partial_order_loss
from hrlaif_ray.reward.model import RewardModel
from hrlaif_ray.tracking import Tracker, check_trackers, stage_tracker
from hrlaif_ray.zero import (
    distributed_world,
    dtype_of,
    gathered_state_dict,
    initialize,
    learner_config,
    optimizer_state_dtypes,
    partitioned_loading,
)


def held_out(prompt_id: str, fraction: float) -> bool:
    return int(hashlib.sha256(prompt_id.encode()).hexdigest()[:8], 16) / 2**32 < fraction


def batches(examples: list[RMExample], size: int, rng: random.Random | None = None) -> list[list[RMExample]]:
    order = list(examples)
    if rng is not None:
        rng.shuffle(order)
    return [order[i : i + size] for i in range(0, len(order), size)]


def rank_share(chunks: list, rank: int, world: int, pad: bool) -> list:
    """This rank's chunks, the same number on every rank (each forward/backward under ZeRO is a collective, so
    unequal counts hang): training drops the tail that does not fill a round (as DistributedSampler with
    drop_last); evaluation pads the short ranks with an empty chunk, whose forwards count nothing (`padded_scores`)."""
    rounds = -(-len(chunks) // world) if pad else len(chunks) // world
    mine = chunks[rank : rounds * world : world]
    return mine + [[]] * (rounds - len(mine))


def raw_scores(rm: RewardModel, chunk: list[RMExample], pad_id: int) -> tuple[torch.Tensor, dict]:
    """The unclipped, unnormalised scores of a chunk's responses (each prompt's prefix run once), with the collated
    batch (its preference pairs, weights and groups)."""
    b = collate(chunk, pad_id)
    scores = rm.score_shared_prefix(
        b["prompt_ids"], b["prompt_mask"], b["response_ids"], b["response_mask"], b["owner"], raw=True
    )
    return scores.float(), b  # the loss and the statistics in fp32 whatever the model's precision


@torch.no_grad()
def padded_scores(rm: RewardModel, chunks: list[list[RMExample]], filler: list[RMExample], pad_id: int):
    """(chunk, scores, batch) of each non-empty chunk of a rank's share. An empty chunk (a short rank's padding)
    scores `filler` (a chunk every rank has) and yields nothing: the very same forwards as a real chunk, so under
    ZeRO-3 this rank joins as many parameter gathers (collectives) as the others. A cheaper dummy forward of another
    shape (one backbone call, not the prompt's and the responses') made the ranks' collectives differ: a hang."""
    for chunk in chunks:
        scores, b = raw_scores(rm, chunk or filler, pad_id)
        if chunk:
            yield chunk, scores, b


def ranking_accuracy(
    rm: RewardModel, chunks: list[list[RMExample]], filler: list[RMExample], pad_id: int
) -> dict[str, list[int]]:
    """category -> [pairs ordered as labeled, pairs] over the examples of `chunks` (see `padded_scores`)."""
    counts: dict[str, list[int]] = {}
    for chunk, scores, b in padded_scores(rm, chunks, filler, pad_id):
        right = (scores[b["better"]] > scores[b["worse"]]).tolist()
        for ok, g in zip(right, b["group"].tolist()):
            c = counts.setdefault(chunk[g].category, [0, 0])
            c[0] += ok
            c[1] += 1
    return counts


def train_reward_model(job: RMTrainJob, log=print) -> dict:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(job.init)
    labels, prompts = bound_labels(job.labels_dir, job.prompts)  # the inputs are checked before any process group
    labels, overrides = reviewed(job.labels_dir, labels, job.human_overrides)
    examples = examples_from_labels(labels, prompts, tokenizer, job.max_prompt_tokens, job.max_response_tokens)
    if not any(not held_out(e.prompt_id, job.eval_fraction) for e in examples):
        raise ValueError(f"no labels with preference pairs in {job.labels_dir}")
    check_trackers(job.logging)
    with distributed_world() as (rank, world):
        with stage_tracker(job.logging, "train-rm", job, rank) as tracker:
            result = _fit(job, tokenizer, examples, rank, world, log, tracker)
            if rank == 0:
                note_overrides(job.output_dir, overrides, log)
            last = result["history"][-1]
            tracker.summary({k: v for k, v in last.items() if k != "eval_accuracy"})
            tracker.artifact(Path(job.output_dir) / "metrics.json")
            return result


def _fit(job: RMTrainJob, tokenizer, examples: list[RMExample], rank: int, world: int, log, tracker: Tracker) -> dict:
    import torch.distributed as dist

    torch.manual_seed(job.seed)
    pad = pad_token_id(tokenizer)
    train = [e for e in examples if not held_out(e.prompt_id, job.eval_fraction)]
    evaluation = [e for e in examples if held_out(e.prompt_id, job.eval_fraction)]
    responses = max(len(e.response_ids) for e in train)
    check(job, lambda j: plan_rm(j, world, responses=responses))  # before the model is loaded
    with partitioned_loading(learner_config(job.learner, job.batch_prompts, world)):  # ZeRO-3: a shard each
        rm = RewardModel.from_pretrained(
            job.init, clip=job.clip, dtype=dtype_of(job.learner.precision), lora=job.learner.lora
        )
    engine = initialize(rm, job.learner, job.batch_prompts, world)
    model: RewardModel = engine.module
    rng, history, step = random.Random(job.seed), [], 0
    eval_chunks = batches(evaluation, job.batch_prompts)  # the same every epoch: dealt once
    eval_share = rank_share(eval_chunks, rank, world, pad=True)
    for epoch in range(job.epochs):
        model.train()
        losses = []
        for chunk in rank_share(batches(train, job.batch_prompts, rng), rank, world, pad=False):
            scores, b = raw_scores(model, chunk, pad)
            margin = (
                job.margin * b["tier_gap"] if job.margin else None
            )  # a wider gap between tiers asks for a wider score gap
            loss = partial_order_loss(scores, b["better"], b["worse"], b["weight"], b["group"], margin)
            engine.backward(loss)
            engine.step()
            losses.append(loss.item())
            step += 1
            tracker.log(step, {"rm/loss": losses[-1]})
        model.eval()
        counts = ranking_accuracy(model, eval_share, eval_chunks[0], pad) if eval_chunks else {}
        cats = sorted({e.category for e in evaluation})
        flat = torch.tensor([x for c in cats for x in counts.get(c, [0, 0])], dtype=torch.float64)
        dist.all_reduce(flat)
        acc = {c: flat[2 * j].item() / flat[2 * j + 1].item() for j, c in enumerate(cats) if flat[2 * j + 1] > 0}
        total = flat[1::2].sum().item()
        entry = {
            "epoch": epoch + 1,
            "loss": sum(losses) / max(1, len(losses)),
            "eval_accuracy": acc,
            "eval_accuracy_all": flat[0::2].sum().item() / total if total else None,
            "eval_pairs": int(total),
            "steps": len(losses),  # this rank's optimizer steps; every rank makes as many
        }
        history.append(entry)
        metrics = {"rm/epoch_loss": entry["loss"], **{f"rm/eval_accuracy/{c}": a for c, a in acc.items()}}
        if entry["eval_accuracy_all"] is not None:
            metrics["rm/eval_accuracy_all"] = entry["eval_accuracy_all"]
        tracker.log(step, metrics)
        if rank == 0:
            log(json.dumps(entry))
    # Normalisation from the training set's rewards (ZeRO-3's hooks gather the weights for these forwards).
    if job.normalize:
        with torch.no_grad():
            chunks = batches(train, job.batch_prompts)
            share = rank_share(chunks, rank, world, pad=True)
            raw = [scores for _, scores, _ in padded_scores(model, share, chunks[0], pad)]
        raw = torch.cat(raw) if raw else torch.zeros(0)
        stats = torch.tensor([raw.sum().item(), (raw**2).sum().item(), raw.numel()], dtype=torch.float64)
        dist.all_reduce(stats)
        mean = stats[0] / stats[2]
        model.mean, model.std = float(mean), float(max((stats[1] / stats[2] - mean**2).clamp(min=0).sqrt(), 1e-6))
    # Under ZeRO-3 each rank holds a shard: every rank joins the gathering, one parameter at a time, and rank 0
    # writes the whole model from its host.
    # With adapters: the adapters and the head (an adapter folder), and the merged backbone where a merged folder
    # or the sequence-classification export needs it.
    zero3, lora = job.learner.zero_stage == 3, job.learner.lora
    merged = whole = None
    if lora.enabled:
        state = trained_state(model, rank, zero3)
        if lora.save_merged or job.sequence_classification:
            merged = gathered_merged_state(model.backbone, rank, zero3)
    else:
        state = gathered_state_dict(model, rank, zero3=True) if zero3 else None
    if rank == 0:
        out = model.save_pretrained(
            job.output_dir, tokenizer=tokenizer, state_dict=state, merged=merged if lora.save_merged else None
        )
        if merged is not None:
            head = {k: v for k, v in state.items() if k.startswith("head.")}
            whole = {**{f"backbone.{k}": v for k, v in merged.items()}, **head}
        if job.sequence_classification and (problem := export_problem(tokenizer)):
            log(f"not saved as sequence classification: {problem}")
        elif job.sequence_classification:
            save_sequence_classification(model, tokenizer, out / SEQUENCE_CLASSIFICATION, whole or state)
        (out / "train_config.yaml").write_text(dump_config(job))
        (out / "metrics.json").write_text(
            json.dumps(
                {
                    "history": history,
                    "train_prompts": len(train),
                    "train_batches": -(-len(train) // job.batch_prompts),  # before they are dealt to the ranks
                    "eval_prompts": len(evaluation),
                    "mean": model.mean,
                    "std": model.std,
                    "weights_dtype": str(next(model.parameters()).dtype),
                    "optimizer_state_dtypes": optimizer_state_dtypes(engine),
                    "categories": dict(Counter(e.category for e in examples)),
                },
                indent=1,
            )
        )
    dist.barrier()
    return {"history": history, "output_dir": job.output_dir}
