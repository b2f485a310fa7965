"""Supervised fine-tuning of the policy: next-token loss on the response tokens only, DeepSpeed ZeRO.

The first stage of the pipeline (`hrlaif sft`). One process is rank 0 of a world of 1; under torchrun or a Ray
learner group each rank takes its share of every batch. The schedule is linear warm-up then cosine decay to
`min_lr`; the budget is `steps` (never a time, so the result does not depend on the machine's speed). The
output is an HF folder (model, tokenizer, generation config) that vLLM, the reward model and PPO start from,
with `sft_metrics.json`: the loss curve and greedy accuracy on held-out verifiable prompts.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from pathlib import Path

import torch

from hrlaif_ray.config import SFTJob, dump_config
from hrlaif_ray.data.chat import pad_token_id, prompt_token_ids, response_token_ids
from hrlaif_ray.data.prompt_mix import generate_prompt_mix
from hrlaif_ray.data.readers import iter_jsonl
from hrlaif_ray.data.sft_mix import SFTExample, generate_sft_examples
from hrlaif_ray.errors import DataError
from hrlaif_ray.planner import check, plan_sft
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

IGNORE = -100


def read_sft_jsonl(path: str | Path) -> list[SFTExample]:
    """{"prompt", "response"} rows; a bad row is an error naming the file, line and field."""
    out = []
    for n, row in iter_jsonl(Path(path)):
        for key in ("prompt", "response"):
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise DataError(path, n, key, "must be a non-empty string")
        out.append(
            SFTExample(str(row.get("id", f"line/{n}")), row.get("category", "open_qa"), row["prompt"], row["response"])
        )
    if not out:
        raise DataError(path, None, None, "no SFT rows")
    return out


def encode(tokenizer, ex: SFTExample, max_prompt: int, max_response: int) -> tuple[list[int], list[int]]:
    """(input ids, labels) with the prompt masked out of the loss."""
    p = prompt_token_ids(tokenizer, ex.prompt, max_prompt)
    r = response_token_ids(tokenizer, ex.response, max_response)
    return p + r, [IGNORE] * len(p) + r


def collate(rows: list[tuple[list[int], list[int]]], pad: int) -> dict[str, torch.Tensor]:
    T = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), T), pad, dtype=torch.long)
    labels = torch.full((len(rows), T), IGNORE, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.long)
    for i, (x, y) in enumerate(rows):  # right padding: positions count from 0 without help
        ids[i, : len(x)], labels[i, : len(y)], mask[i, : len(x)] = torch.tensor(x), torch.tensor(y), 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def lr_at(step: int, job: SFTJob) -> float:
    """The learning rate of step `step`: linear warm-up to learner.lr, then cosine decay to min_lr."""
    lr = job.learner.lr
    if step < job.warmup_steps:
        return lr * (step + 1) / job.warmup_steps
    progress = min(1.0, (step - job.warmup_steps) / max(1, job.steps - job.warmup_steps))
    return job.min_lr + 0.5 * (lr - job.min_lr) * (1 + math.cos(math.pi * progress))


def sft_examples(job: SFTJob) -> tuple[list[SFTExample], list]:
    """(training examples, held-out verifiable prompts for the closing accuracy check)."""
    if job.data:
        return read_sft_jsonl(job.data), []
    prompts = generate_prompt_mix(job.prompts)
    held = {p.id for p in [p for p in prompts if p.answer is not None][: job.eval_prompts]}
    train = [p for p in prompts if p.id not in held]
    return generate_sft_examples(train, job.responses), [p for p in prompts if p.id in held]


def train_sft(job: SFTJob, log=print) -> dict:
    world = int(os.environ.get("WORLD_SIZE", 1)) if "RANK" in os.environ else 1  # a launcher's, or the one made below
    check(job, lambda j: plan_sft(j, world))  # before a process group is joined or a model loaded
    check_trackers(job.logging)
    if job.batch_size % world:
        raise ValueError(f"batch_size ({job.batch_size}) must divide over {world} ranks")
    if job.threads:
        torch.set_num_threads(job.threads)
    with distributed_world() as (rank, world):
        with stage_tracker(job.logging, "sft", job, rank) as tracker:
            result = _fit(job, rank, world, log, tracker)
            tracker.summary(result)
            tracker.artifact(Path(job.output_dir) / "sft_metrics.json")
            return result


def _fit(job: SFTJob, rank: int, world: int, log, tracker: Tracker) -> dict:
    import torch.distributed as dist
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hrlaif_ray.evaluation import hf_generate, verified_accuracy
    from hrlaif_ray.lora import (
        gathered_merged_state,
        load_policy,
        model_folders,
        save_adapter_folder,
        trained_state,
        with_adapters,
    )
    from hrlaif_ray.models.tiny import save_model_folder

    torch.manual_seed(job.seed)
    tokenizer = AutoTokenizer.from_pretrained(job.init)
    pad = pad_token_id(tokenizer)
    dtype = dtype_of(job.learner.precision)
    lora = job.learner.lora
    with partitioned_loading(learner_config(job.learner, job.batch_size // world, world)):  # ZeRO-3: a shard each
        model = load_policy(job.init, dtype, lora)
    examples, held_out = sft_examples(job)
    rows = [encode(tokenizer, e, job.max_prompt_tokens, job.max_response_tokens) for e in examples]
    engine = initialize(
        model, job.learner, job.batch_size // world, world, lr_lambda=lambda s: lr_at(s, job) / job.learner.lr
    )
    sched = engine.lr_scheduler
    rng = random.Random(job.seed)
    order: list[int] = []
    losses, start, step = [], time.perf_counter(), 0
    engine.train()
    while step < job.steps:
        if len(order) < job.batch_size:
            order += rng.sample(range(len(rows)), len(rows))  # epochs of a fresh permutation, same on every rank
        batch, order = order[: job.batch_size], order[job.batch_size :]
        b = collate([rows[i] for i in batch[rank::world]], pad)
        loss = engine(**b).loss
        engine.backward(loss)
        engine.step()
        losses.append(loss.item())
        step += 1
        tracker.log(step, {"sft/loss": losses[-1], "sft/lr": sched.get_last_lr()[0]})
        if rank == 0 and (step % 50 == 0 or step == 1):
            log(
                json.dumps(
                    {
                        "step": step,
                        "loss": round(losses[-1], 4),
                        "lr": sched.get_last_lr()[0],
                        "elapsed_s": round(time.perf_counter() - start, 1),
                    }
                )
            )
    train_s = time.perf_counter() - start
    # ZeRO-3: every rank joins the gathering, one parameter at a time; rank 0 keeps the whole weights on its host
    zero3 = job.learner.zero_stage == 3
    if lora.enabled:  # the adapters (an adapter folder) and, on request, the merged model
        state = trained_state(engine.module, rank, zero3)
        merged = gathered_merged_state(engine.module, rank, zero3) if lora.save_merged else None
    else:
        state = gathered_state_dict(engine.module, rank, zero3=True) if zero3 else None
    result = {
        "steps": step,
        "train_s": train_s,
        "first_loss": losses[0],
        "final_loss": sum(losses[-20:]) / len(losses[-20:]),
        "examples": len(rows),
        "world_size": world,
        "weights_dtype": str(next(engine.module.parameters()).dtype),
        "optimizer_state_dtypes": optimizer_state_dtypes(engine),
    }
    if rank == 0:
        if state is not None and zero3:  # the engine's module holds only this rank's shard: a fresh whole copy
            model = AutoModelForCausalLM.from_pretrained(model_folders(job.init)[0], dtype=dtype)
            if lora.enabled:
                model = with_adapters(model, lora)
            model.load_state_dict(state, strict=not lora.enabled)
        if held_out:
            texts = hf_generate(model, tokenizer, [p.text for p in held_out], max_new_tokens=job.max_response_tokens)
            result["greedy_accuracy"] = verified_accuracy(held_out, texts)
            result["mean_response_chars"] = sum(map(len, texts)) / len(texts)
        if lora.enabled:
            out = save_adapter_folder(model, job.output_dir, tokenizer, state, merged)
        else:
            out = save_model_folder(model, tokenizer, job.output_dir)
        (out / "sft_config.yaml").write_text(dump_config(job))
        (out / "sft_metrics.json").write_text(json.dumps({**result, "losses": losses}, indent=1))
        log(json.dumps(result))
    dist.barrier()
    return result
