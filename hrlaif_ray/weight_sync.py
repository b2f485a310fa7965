"""Weight sync by broadcast: the policy's weights go from the actor learner's rank 0 to every rollout engine over a
process group of their own, a bucket at a time, and each engine loads them as they arrive.

This is how OpenRLHF, veRL and NeMo-RL move weights on GPUs (nccl there; gloo here on CPU): no copy of the whole
model is ever put anywhere. Rank 0 gathers one parameter at a time (ZeRO-3) into a bucket of `bucket_bytes`, the
bucket is broadcast as one flat byte buffer, and the engines rebuild the tensors from a plan both sides hold (the
names, dtypes and shapes, in order: `TensorSpec`, `plan_buckets`). Rank 0 thus holds one bucket's buffer (filled
again for each bucket) and one gathered parameter beyond its shard; an engine holds the bucket being loaded and
the one arriving (`receive` reads ahead by one in a thread, so the transfer overlaps the engine's loader).

The group is stateless in torch's sense: a `TCPStore` that rank 0 serves (its port chosen by the OS) and a gloo or
nccl process group made straight from it under a prefix per generation, never `init_process_group`, so it lives
beside the learners' own DeepSpeed group. An engine that restarts cannot join a group that exists, so a new
generation is formed with every engine (`SyncGroup.join`). Every broadcast is bounded by the group's timeout.

Written here rather than taken from vLLM (`StatelessProcessGroup`, `PyNcclCommunicator`): the learner ranks run
without vLLM, and the same code serves gloo on CPU, which vLLM's communicator does not.

Tied tensors (a tied lm_head) travel once, under all their names: vLLM loads each name.
"""

from __future__ import annotations

import datetime
import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

_DTYPES = {str(d): d for d in (torch.float32, torch.bfloat16, torch.float16, torch.float64, torch.int64, torch.int32)}


@dataclass(frozen=True)
class TensorSpec:
    """One tensor as it travels: the state-dict names it is loaded under (a tied tensor has several), its dtype and
    its full shape (a ZeRO-3 parameter's, not its partition's)."""

    names: tuple[str, ...]
    dtype: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * torch.empty((), dtype=_DTYPES[self.dtype]).element_size()


def unique_named(model: torch.nn.Module) -> list[tuple[tuple[str, ...], torch.Tensor]]:
    """The model's state dict as unique live tensors in order, each with every name it has (a tied weight)."""
    order: dict[int, list[str]] = {}
    tensors: dict[int, torch.Tensor] = {}
    for name, t in model.state_dict(keep_vars=True).items():
        order.setdefault(id(t), []).append(name)
        tensors[id(t)] = t
    return [(tuple(names), tensors[k]) for k, names in order.items()]


def specs_of(model: torch.nn.Module) -> list[TensorSpec]:
    """The model's state dict as unique tensors in order, each with every name it has. A ZeRO-3 parameter's full
    shape is its `ds_shape`."""
    return specs_named(unique_named(model))


def specs_named(named: Iterable[tuple[tuple[str, ...], torch.Tensor]]) -> list[TensorSpec]:
    """The specs of (names, tensor) pairs in order (a ZeRO-3 parameter's full shape is its `ds_shape`)."""
    return [TensorSpec(tuple(names), str(t.dtype), tuple(getattr(t, "ds_shape", t.shape))) for names, t in named]


def plan_buckets(specs: list[TensorSpec], bucket_bytes: int) -> list[list[TensorSpec]]:
    """Consecutive tensors grouped into buckets of at most `bucket_bytes` (a larger tensor travels alone)."""
    buckets: list[list[TensorSpec]] = []
    size = 0
    for spec in specs:
        if not buckets or size + spec.nbytes > bucket_bytes:
            buckets.append([])
            size = 0
        buckets[-1].append(spec)
        size += spec.nbytes
    return buckets


def bucket_nbytes(bucket: list[TensorSpec]) -> int:
    return sum(s.nbytes for s in bucket)


def checksum(t: torch.Tensor) -> float:
    """The float64 sum of a tensor, a chunk at a time (a float64 copy of a whole parameter would double what a
    sync holds)."""
    return sum(float(c.double().sum()) for c in t.detach().reshape(-1).split(2**20))


def unpack(flat: torch.Tensor, bucket: list[TensorSpec]) -> list[tuple[str, torch.Tensor]]:
    """The (name, tensor) pairs a received bucket holds: views of `flat`, one pair per name."""
    out, offset = [], 0
    for spec in bucket:
        part = flat[offset : offset + spec.nbytes].view(_DTYPES[spec.dtype]).view(spec.shape)
        out.extend((name, part) for name in spec.names)
        offset += spec.nbytes
    return out


class SyncGroup:
    """One generation of the sync group: rank 0 is the actor learner's rank 0, ranks 1.. the rollout engines."""

    def __init__(self, pg, rank: int, world: int, generation: int, device: torch.device, store):
        self.pg, self.rank, self.world, self.generation, self.device = pg, rank, world, generation, device
        self._store = store  # the group talks through it; a client's must live as long as the group

    @staticmethod
    def serve(host: str, world_limit: int, timeout_s: float):
        """Rank 0's TCPStore server on a port the OS picks: (store, port). One serves every generation."""
        timeout = datetime.timedelta(seconds=timeout_s)
        store = dist.TCPStore(host, 0, world_limit, True, timeout=timeout, wait_for_workers=False)
        return store, store.port

    @staticmethod
    def join(
        host: str,
        port: int,
        rank: int,
        world: int,
        generation: int,
        backend: str,
        timeout_s: float,
        store=None,
    ) -> SyncGroup:
        """Join generation `generation` of the group (every member calls it at once; it returns when all have).
        Rank 0 passes the store it serves; the others connect to host:port."""
        timeout = datetime.timedelta(seconds=timeout_s)
        if store is None:
            store = dist.TCPStore(host, port, is_master=False, timeout=timeout)
        prefixed = dist.PrefixStore(f"weight-sync/{generation}", store)
        if backend == "nccl":
            options = dist.ProcessGroupNCCL.Options()
            options._timeout = timeout
            pg = dist.ProcessGroupNCCL(prefixed, rank, world, options)
            device = torch.device("cuda", torch.cuda.current_device())
        elif backend == "gloo":
            pg = dist.ProcessGroupGloo(prefixed, rank, world, timeout)
            device = torch.device("cpu")
        else:
            raise ValueError(f"weight sync: unknown backend {backend!r} (gloo or nccl)")
        return SyncGroup(pg, rank, world, generation, device, store)

    def broadcast(self, tensor: torch.Tensor) -> None:
        """Rank 0's `tensor` into every member's (bounded by the group's timeout)."""
        options = dist.BroadcastOptions()
        options.rootRank = 0
        self.pg.broadcast([tensor], options).wait()


class TransportError(RuntimeError):
    """A broadcast failed mid-sync (a member left the group): what was received so far is incomplete."""


@dataclass
class Sent:
    """What rank 0 sent in one sync: bytes, buckets, and the checksums of the checked tensors (by name), the sent
    side of the sync's check."""

    nbytes: int
    buckets: int
    sums: dict[str, float]


def send(
    group: SyncGroup | None,
    buckets: list[list[TensorSpec]],
    tensors: Iterator[torch.Tensor | None],
    checked: frozenset[str] = frozenset(),
) -> Sent:
    """Rank 0: pack `tensors` (one per spec, in order: the gathered parameters) into buckets and broadcast each;
    the checksums of the tensors named in `checked` are recorded for the sync's check.

    Every learner rank calls it with its own iterator (under ZeRO-3 each `next` is a gather all ranks take part
    in); only rank 0, whose tensors are not None, packs and broadcasts: `group` is None elsewhere."""
    checksums: dict[str, float] = {}
    nbytes = 0
    # One buffer for every bucket: a broadcast has completed (gloo) or is ordered before the next copy on the
    # stream (nccl's wait) when the buffer is filled again; fresh buffers cost their first-touch page faults.
    largest = max((bucket_nbytes(b) for b in buckets), default=0)
    buffer = torch.empty(largest, dtype=torch.uint8, device=group.device) if group is not None else None
    for bucket in buckets:
        flat = buffer[: bucket_nbytes(bucket)] if buffer is not None else None
        offset = 0
        for spec in bucket:
            t = next(tensors)
            if flat is not None:
                if tuple(t.shape) != spec.shape or str(t.dtype) != spec.dtype:
                    raise ValueError(f"weight sync: {spec.names[0]} is {tuple(t.shape)} {t.dtype}, planned {spec}")
                flat[offset : offset + spec.nbytes].copy_(t.detach().reshape(-1).view(torch.uint8))
                for name in checked.intersection(spec.names):
                    checksums[name] = checksum(t)
            offset += spec.nbytes
            del t  # a gathered parameter is released before the next is gathered
        if flat is not None:
            group.broadcast(flat)
            nbytes += flat.numel()
    return Sent(nbytes, len(buckets), checksums)


def receive(group: SyncGroup, buckets: list[list[TensorSpec]]) -> Iterator[tuple[str, torch.Tensor]]:
    """An engine's side: the broadcast tensors as (name, tensor) pairs, in the plan's order, read one bucket ahead
    in a thread (the transfer of bucket k+1 overlaps the loading of bucket k). Every bucket is received even when
    the consumer stops early or fails, so rank 0's broadcasts always complete (or time out) for every member."""
    ahead: queue.Queue = queue.Queue(maxsize=1)

    def fetch():
        try:
            for bucket in buckets:
                flat = torch.empty(bucket_nbytes(bucket), dtype=torch.uint8, device=group.device)
                group.broadcast(flat)
                ahead.put((bucket, flat))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            ahead.put(exc)
            return
        ahead.put(None)

    thread = threading.Thread(target=fetch, name="weight-sync-receive", daemon=True)
    thread.start()
    try:
        while (item := ahead.get()) is not None:
            if isinstance(item, BaseException):
                raise TransportError(f"the weight broadcast failed: {type(item).__name__}: {item}") from item
            yield from unpack(*reversed(item))
    finally:
        while thread.is_alive():  # the consumer stopped early: drain, so the sender is not left waiting
            try:
                ahead.get(timeout=0.1)
            except queue.Empty:
                pass
        thread.join()


def received_sums(
    pairs: Iterable[tuple[str, torch.Tensor]], checked: frozenset[str], sums: dict[str, float]
) -> Iterator[tuple[str, torch.Tensor]]:
    """`pairs` passed through, with the checksum of each tensor named in `checked` recorded in `sums` (the received
    side of the sync's check)."""
    for name, t in pairs:
        if name in checked:
            sums[name] = checksum(t)
        yield name, t


def comparable(model: torch.nn.Module, specs: list[TensorSpec]) -> frozenset[str]:
    """The sent names the engine's model holds as they were sent (what `loaded_sums` can compare)."""
    shapes = {name: spec.shape for spec in specs for name in spec.names}
    return frozenset(loaded_sums(model, shapes, values=False))


def loaded_sums(model: torch.nn.Module, shapes: dict[str, tuple[int, ...]], values: bool = True) -> dict[str, float]:
    """The checksums of the engine's own parameters that hold a sent tensor under its name and shape (vLLM
    fuses q/k/v and gate/up, and on CPU packs its linear weights, so those are not comparable; a vocabulary padded
    to a multiple is compared on its first rows): the loaded side of the sync's check."""
    out = {}
    for name, p in model.named_parameters():
        shape = shapes.get(name)
        if shape is None or p.dim() != len(shape) or p.shape[1:] != shape[1:] or p.shape[0] < shape[0]:
            continue
        out[name] = checksum(p[: shape[0]]) if values else 0.0
    return out


def check(sent: dict[str, float], received: dict[str, float], loaded: dict[str, float], cast: bool) -> dict:
    """The sync's check: every tensor arrived as sent (exactly), and every engine parameter that can be compared
    holds what arrived (to 1e-9 relative, the sums' own rounding, when the engine keeps the learner's dtype; to 1e-3
    when it casts, e.g. an fp32 learner into a bf16 engine). Returns how many were compared and the largest relative difference of each."""

    def rel(a: float, b: float) -> float:
        return abs(a - b) / max(abs(a), abs(b), 1e-12)

    transport = max((rel(sent[k], received[k]) for k in sent if k in received), default=0.0)
    load = max((rel(received[k], v) for k, v in loaded.items() if k in received), default=0.0)
    compared = sum(k in received for k in loaded)
    ok = transport <= 1e-9 and load <= (1e-3 if cast else 1e-9) and compared > 0
    return {"ok": ok, "compared": compared, "transport_rel_diff": transport, "load_rel_diff": load}
