"""Learner groups: the actor (policy), critic and reference roles as Ray actors that look like torchrun ranks.

Each `LearnerRank` sets MASTER_ADDR/MASTER_PORT/RANK/WORLD_SIZE/LOCAL_RANK itself (rank 0 picked a free port)
and then runs plain DeepSpeed ZeRO code (`hrlaif_ray.zero`), nccl on GPU and gloo with DS_ACCELERATOR=cpu
on CPU. The split of a batch happens at this boundary and nowhere else: `LearnerGroup` hands every rank the
same object-store reference and the row range it owns (contiguous, equal), ranks read their rows zero-copy,
and forward-only results come back concatenated in rank order. Training ranks all-reduce gradients inside
DeepSpeed, so every rank holds the same weights after a step.

Every rank loads its model in its precision (`learner.precision`, `frozen.precision`); a ZeRO-3 rank loads only
its partition (`hrlaif_ray.zero.partitioned_loading`), so no rank ever holds the whole model, and checkpoints and
weight syncs gather one parameter at a time into rank 0's host memory.

An unsharded reference has no optimizer and no process group (its ranks only run forwards on their rows), so Ray
restarts a reference rank that dies (`restarts`) and its rows are redone. A trained rank, or a rank of a ZeRO-3
reference, that dies fails the call at once (its peers may be waiting in a collective): the run restarts its
roles from the last checkpoint (cluster/ppo/run.py). Every call waits at most `timeout_s` (actors/calls.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import nullcontext
from typing import Any

import ray
import torch

from actors.calls import Member, Recovery, gather, gather_restarting, node_of_this_process, row_ranges, wait_ready
from actors.group import join, rendezvous
from actors.runtime import actor_device, start_process
from hrlaif_ray.config import FrozenConfig, LearnerConfig, LoRAConfig
from hrlaif_ray.dpo.batch import PreferenceBatch
from hrlaif_ray.dpo.loss import LossType, best_responses, dpo_loss, sft_loss
from hrlaif_ray.lora import (
    adapter_parameters,
    adapters_off,
    gathered_merged_state,
    has_adapters,
    load_policy,
    merge,
    merge_groups,
    save_adapter_folder,
    scaling,
    trained_state,
)
from hrlaif_ray.metrics import PeakMemory
from hrlaif_ray.models.scalar_head import ScalarHeadModel
from hrlaif_ray.ppo import core
from hrlaif_ray.ppo.experience import Experience, response_logits, sequence_logprobs
from hrlaif_ray.weight_sync import SyncGroup, TensorSpec, send, specs_named, unique_named
from hrlaif_ray.zero import (
    dtype_of,
    frozen_config,
    frozen_engine,
    frozen_stage,
    gathered_groups,
    gathered_state_dict,
    initialize,
    learner_config,
    loaded_share,
    optimizer_state_dtypes,
    partitioned_loading,
    stage_for_world,
)

TRAINED_ROLES = ("actor", "critic")


@ray.remote
class LearnerRank:
    def __init__(
        self,
        role: str,
        folder: str,
        rank: int,
        world: int,
        master: tuple[str, int] | None,
        learner: LearnerConfig | None = None,
        micro_batch: int = 1,
        grad_accum: int = 1,
        threads: int = 1,
        temperature: float = 1.0,
        seed: int = 0,
        frozen: FrozenConfig | None = None,
    ):
        """A trained role's rank (`learner`: its optimiser, precision, ZeRO stage, offload) or a frozen one's
        (`frozen`: its precision and sharding; the reference). A ZeRO-3 rank loads its partition only; every rank
        of a group must be started together (`master`: rank 0's address, None for an unsharded frozen role)."""

        start_process(threads)
        torch.manual_seed(seed)
        self.role, self.rank, self.world, self.temperature = role, rank, world, temperature
        self.micro_batch = micro_batch
        self.device = actor_device()
        frozen = frozen or FrozenConfig()
        if role in TRAINED_ROLES:
            self.zero_stage, precision = stage_for_world(learner, world), learner.precision
            config = learner_config(learner, micro_batch, world, grad_accum, self.zero_stage)
        else:
            self.zero_stage, precision = frozen_stage(frozen, world), frozen.precision
            frozen = frozen.model_copy(update={"zero_stage": self.zero_stage})
            config = frozen_config(frozen, world)
        if master is not None:
            join(master, rank, world)
        lora = learner.lora if role in TRAINED_ROLES else LoRAConfig()
        with partitioned_loading(config):
            if role == "critic":
                model = ScalarHeadModel.from_pretrained(folder, kind="critic", dtype=dtype_of(precision), lora=lora)
            else:  # with trainable adapters (lora), or the whole model
                model = load_policy(folder, dtype_of(precision), lora)
        self.loaded_share = loaded_share(model)  # what this rank held as soon as it had loaded
        self.engine = None
        self.lora = lora
        self.sync_as = "adapter" if lora.enabled else "full"  # what a sync sends (`sync_mode`)
        self.sync_group = None  # rank 0's generation of the weight-sync group (serve_sync, join_sync)
        if role in TRAINED_ROLES:
            self.engine = initialize(model, learner, micro_batch, world, grad_accum, stage=self.zero_stage)
            self.model = self.engine.module
        else:
            for p in model.parameters():
                p.requires_grad_(False)
            if self.zero_stage == 3:
                self.inference = frozen_engine(model, frozen, world)  # kept: its hooks gather the weights
                self.model = self.inference.module
            else:
                self.model = model.to(self.device).eval()

    def ready(self) -> str:
        """This rank's node, once it has started."""
        return node_of_this_process()

    def read_probe(self, path: str) -> dict:
        """What this rank finds at `path` (the driver's probe file): its node, the path as it resolves here, and the
        file's text (None when there is no such file here)."""
        from pathlib import Path

        probe = Path(path)
        text = probe.read_text() if probe.is_file() else None
        return {"node": node_of_this_process(), "path": str(probe.resolve()), "text": text}

    def memory(self) -> dict:
        """What this rank holds: the share of the model's parameters it loaded, its weights' and (trained roles)
        optimizer states' dtypes, and the most host memory its process has held."""
        import resource

        out = {
            "loaded_share": self.loaded_share,
            "weights_dtype": str(next(self.model.parameters()).dtype),
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # Linux: kilobytes
        }
        if self.engine is not None:
            out["optimizer_state_dtypes"] = optimizer_state_dtypes(self.engine)
        return out

    # ------------------------------------------------------------------------------------- forwards

    def _logits(self, m: Experience) -> torch.Tensor:
        return response_logits(self.model, m, self.device)

    def _values(self, m: Experience) -> torch.Tensor:
        """The critic's value of the state before each response token of micro-batch m."""
        return self.model(m.input_ids.to(self.device), m.attention_mask.to(self.device))[:, m.prompt_width - 1 : -1]

    def _per_token(self, batch: Experience, start: int, end: int, fn) -> torch.Tensor:
        """fn(micro-batch) -> [rows, width] for this rank's rows, put back in row order at the batch's width."""
        self.model.eval()
        out = torch.zeros(end - start, batch.response_width)
        for idx, m in batch.micro_batches(start, end, self.micro_batch):
            rmask = m.response_mask.to(self.device)
            out[idx - start, : rmask.size(1)] = (fn(m) * rmask).float().cpu()
        return out

    @torch.no_grad()
    def logprobs(self, batch: Experience, start: int, end: int, base: bool = False) -> torch.Tensor:
        """Per-token log-probs of this rank's rows; `base`: with the adapters off (the reference of a LoRA role)."""
        if base and not has_adapters(self.model):
            raise ValueError(f"{self.role}: has no adapters to turn off (its learner section's lora.r is 0)")
        with adapters_off(self.model) if base else nullcontext():
            return self._per_token(
                batch,
                start,
                end,
                lambda m: core.token_logprobs(
                    self._logits(m), m.input_ids[:, m.prompt_width :].to(self.device), self.temperature
                ),
            )

    @torch.no_grad()
    def values(self, batch: Experience, start: int, end: int) -> torch.Tensor:
        return self._per_token(batch, start, end, self._values)

    # -------------------------------------------------------------------------------------- updates

    def _check_accumulation(self, micros: int) -> None:
        """An optimizer step is DeepSpeed's accumulation steps of micro-batches: the split must agree with it."""
        if micros != self.engine.gradient_accumulation_steps():
            raise ValueError(
                f"{micros} micro-batches, but DeepSpeed accumulates {self.engine.gradient_accumulation_steps()}"
            )

    def _update(
        self, batch: Experience, start: int, end: int, epochs: int, mini_batches: int, loss_fn
    ) -> dict[str, float]:
        """`epochs` passes over this rank's rows in `mini_batches` optimizer steps; loss_fn(micro-batch) ->
        (token-mean loss, stats). A mini-batch runs as length-sorted micro-batches whose gradients accumulate
        (DeepSpeed steps the optimizer at the last); each micro-batch's loss is weighted by its share of the
        mini-batch's response tokens, so the step is that of the mini-batch's token-mean loss."""
        stats: dict[str, list[float]] = {}
        self.model.train()
        size = (end - start) // mini_batches
        for _ in range(epochs):
            for s in range(start, start + size * mini_batches, size):
                micros = batch.micro_batches(s, s + size, self.micro_batch)
                self._check_accumulation(len(micros))
                mean: dict[str, float] = {}
                for _, m in micros:
                    share = m.token_share
                    loss, st = loss_fn(m)
                    self.engine.backward(loss * share * len(micros))  # DeepSpeed divides by its accumulation steps
                    self.engine.step()
                    for k, v in st.items():
                        mean[k] = mean.get(k, 0.0) + share * float(v.detach() if torch.is_tensor(v) else v)
                for k, v in mean.items():
                    stats.setdefault(k, []).append(v)
        return {k: sum(v) / len(v) for k, v in stats.items()}

    def train_actor(
        self,
        batch: Experience,
        start: int,
        end: int,
        epochs: int,
        mini_batches: int,
        clip: float,
        dual_clip: float | None,
        entropy_coef: float,
    ) -> dict[str, float]:
        def loss_fn(m: Experience):
            rmask = m.response_mask.to(self.device)
            logits = self._logits(m)
            logp = core.token_logprobs(logits, m.input_ids[:, m.prompt_width :].to(self.device), self.temperature)
            weights = m.is_weights.to(self.device) if m.is_weights is not None else None
            loss, s = core.policy_loss(
                logp, m.old_logprobs.to(self.device), m.advantages.to(self.device), rmask, clip, dual_clip, weights
            )
            entropy = core.masked_mean(
                core.entropy_from_logits(logits if entropy_coef else logits.detach(), self.temperature), rmask
            )
            return loss - entropy_coef * entropy, {"policy_loss": loss.detach(), "entropy": entropy.detach(), **s}

        return self._update(batch, start, end, epochs, mini_batches, loss_fn)

    def train_critic(
        self, batch: Experience, start: int, end: int, epochs: int, mini_batches: int, value_clip: float | None
    ) -> dict[str, float]:
        def loss_fn(m: Experience):
            loss, s = core.value_loss(
                self._values(m),
                m.old_values.to(self.device),
                m.returns.to(self.device),
                m.response_mask.to(self.device),
                value_clip,
            )
            return loss, {"value_loss": loss.detach(), "value_clip_frac": s["clip_frac"]}

        return self._update(batch, start, end, epochs, mini_batches, loss_fn)

    def train_preferences(
        self,
        batch: PreferenceBatch,
        start: int,
        end: int,
        beta: float,
        loss_type: LossType,
        margin: float,
        sft_weight: float,
        forward_rows: int = 8,
    ) -> dict[str, float]:
        """One optimizer step of DPO on prompts start..end of the batch (this rank's share): micro-batches of
        `micro_batch` prompts, all responses of a prompt in one, accumulate their gradients, each weighted by its
        share of the prompts, so the step is that of the mean over the prompts (and, with the ranks' gradients
        averaged, over the whole batch). Inside a micro-batch the responses run `forward_rows` at a time."""
        self.model.train()
        micros = [list(range(s, min(s + self.micro_batch, end))) for s in range(start, end, self.micro_batch)]
        self._check_accumulation(len(micros))
        missing = self._missing_forwards(batch, micros, forward_rows)
        mean: dict[str, float] = {}
        for prompts, extra in zip(micros, missing):
            m = batch.select(prompts)
            # [rows] with their graph, `forward_rows` a forward; one backward below takes them all
            logps = sequence_logprobs(self.model, m.sequences, forward_rows, self.device, self.temperature)
            loss, stats = dpo_loss(
                logps, m.ref_logps, m.better, m.worse, m.weight, m.group, beta, loss_type, margin * m.tier_gap
            )
            if extra:  # in the graph, so that their backward runs too; weighted 0
                filler = m.sequences.take(torch.arange(min(forward_rows, len(m.sequences))), 1.0)
                pad = [sequence_logprobs(self.model, filler, forward_rows, self.device).sum() for _ in range(extra)]
                loss = loss + 0.0 * sum(pad)
            stats["dpo_loss"] = loss.detach()
            if sft_weight:
                sft = sft_loss(logps, m.lengths, best_responses(m.rows, m.better, m.worse), m.owner, logps)
                loss = loss + sft_weight * sft
                stats["sft_loss"] = sft.detach()
            share = len(prompts) / (end - start)
            self.engine.backward(loss * share * len(micros))  # DeepSpeed divides by its accumulation steps
            self.engine.step()
            for k, v in stats.items():
                mean[k] = mean.get(k, 0.0) + share * float(v)
        return mean

    def _missing_forwards(self, batch: PreferenceBatch, micros: list[list[int]], forward_rows: int) -> list[int]:
        """Under ZeRO-3 every rank must run as many forwards (and backwards) as the others, micro-batch by
        micro-batch, or their parameter gathers stop matching: the forwards each of this rank's micro-batches runs
        short of the most any rank runs there, agreed once before any forward (a collective among the forwards'
        would itself be out of order). Zeros elsewhere."""
        if self.zero_stage != 3:
            return [0] * len(micros)
        import torch.distributed as dist

        rows = [int(batch.starts[p[-1] + 1] - batch.starts[p[0]]) for p in micros]
        mine = torch.tensor([-(-r // forward_rows) for r in rows], device=self.device)  # nccl reduces device tensors
        most = mine.clone()
        dist.all_reduce(most, op=dist.ReduceOp.MAX)
        return (most - mine).tolist()

    # -------------------------------------------------------------------------------------- weights

    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        """A host copy of the whole model's weights on rank 0 (None elsewhere), gathered one parameter at a time
        under ZeRO-3; every rank must call it."""
        return gathered_state_dict(self.model, self.rank, self.zero_stage == 3)

    def sync_mode(self, mode: str) -> None:
        """What a sync sends: 'full' (every weight), 'adapter' (the adapters only, under PEFT's names) or 'merged'
        (the base weights with the adapters merged in: for engines that cannot load adapters). Every rank."""
        if mode != "full" and not has_adapters(self.model):
            raise ValueError(f"sync mode {mode!r} needs adapters (lora.r > 0)")
        self.sync_as = mode

    def _sync_named(self) -> list[tuple[tuple[str, ...], tuple[torch.Tensor, ...]]]:
        """What a sync sends, in order: each tensor's names and the live tensors it is made of (a merged weight is
        its base weight and its two adapter matrices; anything else one tensor)."""
        if self.sync_as == "adapter":
            return [((name,), (p,)) for name, p in adapter_parameters(self.model)]
        if self.sync_as == "merged":
            return merge_groups(self.model)
        return [(names, (t,)) for names, t in unique_named(self.model)]

    def _sync_tensors(self, named) -> Iterator[torch.Tensor | None]:
        """The tensors of `named` whole on rank 0 (None elsewhere), one at a time (gathered under ZeRO-3: every rank
        iterates to the end)."""
        scale = scaling(self.model) if self.sync_as == "merged" else 1.0
        for group in gathered_groups([g for _, g in named], self.rank, self.zero_stage == 3):
            yield None if group is None else merge(group, scale) if len(group) == 3 else group[0]

    def put_weights(self) -> list | None:
        """Rank 0 puts what a sync sends (`sync_mode`: every weight, the adapters, or the merged weights) in the
        object store (unsharded: straight from the parameters, so the put is the one copy; ZeRO-3: host copies
        gathered one parameter at a time); returns [ref, bytes, peak] (in a list, so Ray hands the reference back
        instead of resolving it), None on other ranks; every rank must call it. A tied lm_head goes too: vLLM on CPU
        packs it apart from the embeddings, so the engine reloads both. The peak: the most rank 0 held above its
        start meanwhile (`PeakMemory`)."""
        with PeakMemory(self.device) as peak:
            named = self._sync_named()
            state: dict[str, torch.Tensor] = {}
            nbytes = 0
            for (names, _), t in zip(named, self._sync_tensors(named)):
                if t is None:
                    continue
                t = t.to("cpu", copy=True) if self.zero_stage == 3 else t  # a gathered parameter is released next
                state.update((n, t) for n in names)
                nbytes += t.numel() * t.element_size()  # a tied tensor counted (and put) once
            if self.rank != 0:
                return None
            ref = ray.put(state)
        return [ref, nbytes, peak.bytes]

    # ---------------------------------------------------------------- broadcast weight sync (rank 0 sends)

    def weight_specs(self) -> list[TensorSpec]:
        """What the broadcast sends (`sync_mode`): unique tensors in order, with their names and full shapes."""
        return specs_named((names, group[0]) for names, group in self._sync_named())

    def serve_sync(self, world_limit: int, timeout_s: float) -> tuple[str, int, str]:
        """Rank 0: start the sync group's store on this node (a port the OS picks): (host, port, backend)."""
        host = ray.util.get_node_ip_address()
        self.sync_store, port = SyncGroup.serve(host, world_limit, timeout_s)
        self.sync_backend = "nccl" if self.device == "cuda" else "gloo"
        self.sync_group = None
        return host, port, self.sync_backend

    def join_sync(self, world: int, generation: int, timeout_s: float) -> None:
        """Rank 0: join generation `generation` of the sync group as its rank 0 (the engines join at once)."""
        self.sync_group = None  # the last generation's group goes first
        self.sync_group = SyncGroup.join(
            "", 0, 0, world, generation, self.sync_backend, timeout_s, store=self.sync_store
        )

    def broadcast_weights(self, buckets: list[list[TensorSpec]], checked: list[str]) -> dict | None:
        """Every rank: gather the weights one tensor at a time (ZeRO-3), rank 0 broadcasting them bucket by bucket
        to the engines. Rank 0 returns what it sent ({"bytes", "buckets", "sums", "seconds"}, or {"error"} when a
        broadcast failed: it then leaves the group, so the engines waiting on it fail at once rather than at the
        timeout, and goes on gathering, so its peers' gathers still match); the other ranks return None."""
        start = time.perf_counter()
        tensors = self._sync_tensors(self._sync_named())
        group = self.sync_group if self.rank == 0 else None
        try:
            if self.rank == 0 and group is None:
                raise RuntimeError("not in a sync group (the last one failed)")
            with PeakMemory(self.device) as peak:
                sent = send(group, buckets, tensors, frozenset(checked))
        except Exception as exc:  # noqa: BLE001 - reported to the controller, which re-forms the group
            for _ in tensors:  # the peers' gathers must still match
                pass
            self.sync_group = None
            return {"error": f"{type(exc).__name__}: {str(exc).strip()[:300]}"}
        if self.rank != 0:
            return None
        return {
            "bytes": sent.nbytes,
            "buckets": sent.buckets,
            "sums": sent.sums,
            "seconds": time.perf_counter() - start,
            "peak_bytes": peak.bytes,
        }

    def save(self, path: str, tokenizer_folder: str) -> str | None:
        """The role's folder at `path` on rank 0 (every rank must call it): the whole model as an HF folder, or with
        adapters an adapter folder in PEFT's format (and, with lora.save_merged, the merged model in `merged/`)."""
        from transformers import AutoTokenizer

        if has_adapters(getattr(self.model, "backbone", self.model)):
            return self._save_adapters(path, tokenizer_folder)
        state = self.full_state_dict()
        if self.rank != 0:
            return None
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder)
        if self.role == "critic":
            self.model.save_pretrained(path, tokenizer=tokenizer, state_dict=state)
        else:
            from hrlaif_ray.models.tiny import save_model_folder

            save_model_folder(self.model, tokenizer, path, state_dict=state)
        return path

    def _save_adapters(self, path: str, tokenizer_folder: str) -> str | None:
        """An adapter folder (gathered one adapter tensor at a time under ZeRO-3; a critic's head beside it) and, on
        request, the merged model in `merged/`."""
        from transformers import AutoTokenizer

        zero3 = self.zero_stage == 3
        state = trained_state(self.model, self.rank, zero3)
        merged = None
        if self.lora.save_merged:
            peft = self.model.backbone if self.role == "critic" else self.model
            merged = gathered_merged_state(peft, self.rank, zero3)
        if self.rank != 0:
            return None
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder)
        if self.role == "critic":
            self.model.save_pretrained(path, tokenizer=tokenizer, state_dict=state, merged=merged)
        else:
            save_adapter_folder(self.model, path, tokenizer, state, merged)
        return path


class LearnerGroup:
    """One role's ranks behind one handle. `options[i]` are rank i's Ray options (its placement-group bundle).
    `timeout_s` bounds every call; `restarts` (untrained roles only) is how often Ray restarts a rank in place."""

    def __init__(
        self,
        role: str,
        folder: str,
        options: list[dict[str, Any]],
        timeout_s: float = 1800,
        restarts: int = 0,
        **kwargs,
    ):
        world = len(options)
        self.role, self.timeout_s = role, timeout_s
        frozen = kwargs.get("frozen")
        grouped = role in TRAINED_ROLES or (frozen is not None and frozen_stage(frozen, world) == 3)
        self.restarts = 0 if grouped else restarts  # a grouped rank's peers wait for it in their collectives
        self.recoveries: list[Recovery] = []
        # Held while one call is submitted to every rank: Ray runs one caller's calls on an actor in the order they
        # were submitted, so calls submitted whole, one after another, run in the same order on every rank (two
        # threads interleaving their submissions could leave two ranks in different collectives).
        self.submit_lock = threading.Lock()
        self.weights_bytes = 0  # the size of the last weights_ref's state dict
        self.weights_peak: int | None = None  # the most rank 0 held above its start while putting it
        master = rendezvous(role, options[0], timeout_s) if grouped else None
        self.members = [
            Member(
                role,
                i,
                LearnerRank.options(**opt, max_restarts=self.restarts).remote(role, folder, i, world, master, **kwargs),
            )
            for i, opt in enumerate(options)
        ]
        wait_ready(self.members, timeout_s)

    @property
    def ranks(self) -> list:
        return [m.handle for m in self.members]

    def _per_rank(self, n: int, call) -> list:
        """call(rank, start, end) on every rank with its row range of an n-row batch (all read the same object-store
        reference to the batch: the one place a batch is split); a restarted rank redoes its rows."""
        try:
            ranges = row_ranges(n, len(self.members), exact=True)
        except ValueError as exc:
            raise ValueError(f"{self.role}: {exc}") from None
        return gather_restarting(
            self.members,
            lambda m: call(m.handle, *ranges[m.rank]),
            self.timeout_s,
            self.restarts,
            self.recoveries,
            lock=self.submit_lock,
        )

    def _all(self, call) -> list:
        """call(rank) on every rank (collectives: every rank must take part), bounded."""
        with self.submit_lock:
            refs = [call(m.handle) for m in self.members]
        return gather(self.members, refs, self.timeout_s)

    def logprobs(self, batch_ref, n: int, base: bool = False) -> torch.Tensor:
        """Per-token log-probs of an n-row batch; `base`: with the adapters off (a LoRA role's reference)."""
        return torch.cat(self._per_rank(n, lambda r, s, e: r.logprobs.remote(batch_ref, s, e, base)))

    def sync_mode(self, mode: str) -> None:
        """What its syncs send (`LearnerRank.sync_mode`), on every rank."""
        self._all(lambda r: r.sync_mode.remote(mode))

    def values(self, batch_ref, n: int) -> torch.Tensor:
        return torch.cat(self._per_rank(n, lambda r, s, e: r.values.remote(batch_ref, s, e)))

    def train_actor(self, batch_ref, n: int, **kwargs) -> dict[str, float]:
        return _mean(self._per_rank(n, lambda r, s, e: r.train_actor.remote(batch_ref, s, e, **kwargs)))

    def train_critic(self, batch_ref, n: int, **kwargs) -> dict[str, float]:
        return _mean(self._per_rank(n, lambda r, s, e: r.train_critic.remote(batch_ref, s, e, **kwargs)))

    def train_preferences(self, batch_ref, n: int, **kwargs) -> dict[str, float]:
        """One DPO step on an n-prompt `PreferenceBatch` (each rank a contiguous, equal share of the prompts)."""
        return _mean(self._per_rank(n, lambda r, s, e: r.train_preferences.remote(batch_ref, s, e, **kwargs)))

    def weights_ref(self):
        """An object-store reference to the full weights (rank 0 puts them; the controller never copies them)."""
        ref, self.weights_bytes, self.weights_peak = self._all(lambda r: r.put_weights.remote())[0]
        return ref

    def save(self, path: str, tokenizer_folder: str) -> None:
        self._all(lambda r: r.save.remote(path, tokenizer_folder))

    def memory(self) -> list[dict]:
        """Each rank's `LearnerRank.memory()`: what it holds."""
        return self._all(lambda r: r.memory.remote())

    def read_probe(self, path: str) -> dict:
        """Rank 0's `LearnerRank.read_probe(path)` (the rank that writes checkpoints), bounded."""
        first = self.members[0]
        return gather([first], [first.handle.read_probe.remote(path)], self.timeout_s)[0]

    def close(self) -> None:
        """End the ranks now (their memory back before the run ends; the placement group stays the run's)."""
        for m in self.members:
            ray.kill(m.handle)
        self.members = []


def _mean(results: list[dict[str, float]]) -> dict[str, float]:
    """The ranks' training statistics, averaged."""
    return {k: sum(r[k] for r in results) / len(results) for k in results[0]}
