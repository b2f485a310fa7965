"""The memory planner (`hrlaif plan`): what every role of a job holds per rank and per bundle, checked against the
accelerators' and the hosts' memory before anything is reserved, so a plan that cannot fit fails at once with
one line (the role, the bundle, the bytes needed and available, and the single settings that would make it fit)
rather than with an out-of-memory error an hour in.

Sizes come from each model's `config.json` (the model is instantiated on the meta device: no weights are read,
so a 70B plan is checked on a laptop). Per rank, with P parameters, N ranks and ZeRO stage s:
- weights: P x 2 bytes in bf16, x 4 in fp32, over N at stage 3;
- a trained role's gradients and optimizer, DeepSpeed's accounting (`estimate_zero2_model_states_mem_needs`,
  `..._zero3_...`, which a test compares): in bf16 the 16-bit gradients (2 bytes, over N from stage 2; none kept
  at stage 3), fp32 gradients, master weights and Adam's two moments (4 + 4 + 8 bytes, over N from stage 1); in
  fp32 the gradients (4, over N from stage 2), ZeRO's fp32 partition (4, over N, from stage 1) and Adam (8, over N
  from stage 1); with `offload.optimizer` the fp32 part lives in host memory, with `offload.params` the weights too;
- buffers: ZeRO's reduce and all-gather buckets (at most `zero.BUCKET_ELEMENTS`), and at stage 3 a gathered
  layer (4 bytes a parameter of the largest layer, as DeepSpeed counts it) and, over more than one rank, the
  gathered weights it keeps alive for reuse and prefetches (`stage3_max_live_parameters` and
  `stage3_prefetch_bucket_size`, each capped at `zero.BUCKET_ELEMENTS`);
- activations of one micro-batch (rows x sequence): per token and layer about 8h + 3 kv + 4 i elements (h the
  hidden size, kv the key/value width, i the MLP's) in the compute dtype, plus the attention scores where the
  kernel keeps them (CPU); with gradient checkpointing one layer's and every layer's input (h); the logits of the
  positions the loss reads (vocabulary x 2 or 3 copies: the model's, fp32's, the softmax's); a frozen role runs
  without gradients, one layer's activations at a time;
- a vLLM engine: on a GPU the share it reserves (`gpu_memory_utilization`), which must hold its weights and at
  least one whole sequence's KV cache; on a CPU its weights and `kv_cache_gib`;
- every actor process: `PROCESS_GIB` of host memory (the interpreter, torch, Ray, DeepSpeed).
Roles colocated in a bundle add up there; a plan without GPUs counts every role against host memory.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

from hrlaif_ray.config import (
    HUB_HINT,
    ROLES,
    FrozenConfig,
    LearnerConfig,
    LoRAConfig,
    ResourcePlan,
    RolloutConfig,
    SyncConfig,
    load_config,
    model_folder_problem,
)
from hrlaif_ray.config.base import implicit_rm_meta
from hrlaif_ray.errors import ConfigError, HrlaifError

GiB, MiB = 2**30, 2**20
# host memory of one actor process before its model (measured: 0.42 GiB with torch, transformers and DeepSpeed
# imported; Ray adds its own)
PROCESS_GIB = 0.5
CUDA_CONTEXT_GIB = 1.0  # accelerator memory of one process before its tensors (CUDA context, NCCL buffers)
GPU_USABLE = 0.95  # of a GPU's memory: what the plan may fill, the rest left to the allocator's fragmentation
# Measured (benchmarks/memory.py, 1-rank rows, CPU): calibrations of the counts above
TRAINER_BUFFERS = 100 * 2**20  # a trained rank's engine, autograd and communication buffers beyond its states
BF16_ACTIVATIONS = 1.5  # a bf16 model's activations: its norms, softmax and loss compute (and keep) fp32 copies
ZERO3_CPU_ACTIVATIONS = 1.6  # ZeRO-3 on gloo held 1.6-2x the activations ZeRO-2 held (not measured on a GPU)
BYTES = {"fp32": 4, "bf16": 2}


class PlanError(HrlaifError):
    """A plan that does not fit (one line: what, where, how much, and what would fit): exit status 2."""


@dataclass(frozen=True)
class ModelShape:
    """What memory depends on, read from a model's config."""

    params: int  # unique parameters (tied ones once)
    largest_layer: int  # the most parameters one module holds itself: ZeRO-3 gathers that much at once
    hidden: int
    layers: int
    heads: int
    kv_width: int  # key/value heads x head size
    intermediate: int
    vocab: int  # 0 for a scalar head (reward model, critic)
    # the decoder's linear layers (not the output layer): (module name, in features, out features, how many); what
    # LoRA's adapters are sized from (empty: estimated from the widths)
    linears: tuple[tuple[str, int, int, int], ...] = ()

    def adapter_params(self, lora: LoRAConfig) -> int:
        """The parameters of LoRA adapters of rank r on the targeted linear layers: r x (in + out) each."""
        linears = self.linears or (
            ("q_proj", self.hidden, self.hidden, self.layers),
            ("k_proj", self.hidden, self.kv_width, self.layers),
            ("v_proj", self.hidden, self.kv_width, self.layers),
            ("o_proj", self.hidden, self.hidden, self.layers),
            ("gate_proj", self.hidden, self.intermediate, self.layers),
            ("up_proj", self.hidden, self.intermediate, self.layers),
            ("down_proj", self.intermediate, self.hidden, self.layers),
        )
        every = lora.target_modules == "all-linear"
        return sum(lora.r * (i + o) * n for name, i, o, n in linears if every or name in lora.target_modules)

    def trained_params(self, lora: LoRAConfig) -> int:
        """What a trained role trains: every parameter, or with adapters theirs (and a scalar head's)."""
        if not lora.enabled:
            return self.params
        return self.adapter_params(lora) + (self.hidden + 1 if self.vocab == 0 else 0)

    @classmethod
    def of(cls, config, scalar_head: bool = False) -> ModelShape:
        """From an HF config (a `PretrainedConfig`): instantiated on the meta device, no weights read."""
        import torch
        from accelerate import init_empty_weights
        from transformers import AutoModel, AutoModelForCausalLM

        with init_empty_weights():
            model = (AutoModel if scalar_head else AutoModelForCausalLM).from_config(config)
        text = config.get_text_config()  # a multimodal config's language model
        params = sum(p.numel() for p in model.parameters()) + (text.hidden_size + 1 if scalar_head else 0)
        largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
        linears: dict[tuple[str, int, int], int] = {}
        output = model.get_output_embeddings() if not scalar_head else None
        for name, m in model.named_modules():
            if isinstance(m, torch.nn.Linear) and m is not output:
                key = (name.rsplit(".", 1)[-1], m.in_features, m.out_features)
                linears[key] = linears.get(key, 0) + 1
        heads = text.num_attention_heads
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
        kv = getattr(text, "num_key_value_heads", None) or heads
        return cls(
            params=params,
            largest_layer=largest,
            hidden=text.hidden_size,
            layers=text.num_hidden_layers,
            heads=heads,
            kv_width=kv * head_dim,
            intermediate=getattr(text, "intermediate_size", None) or 4 * text.hidden_size,
            vocab=0 if scalar_head else text.vocab_size,
            linears=tuple((*k, n) for k, n in sorted(linears.items())),
        )

    @classmethod
    def of_folder(cls, folder: str, key: str, scalar_head: bool = False) -> ModelShape:
        """A model folder's shape; `key` names the config key that gave the folder, for the error."""
        from transformers import AutoConfig

        from hrlaif_ray.lora import model_folders

        if problem := model_folder_problem(folder):
            raise ConfigError(f"{key}: {folder!r} is not a model folder ({problem}); {HUB_HINT}")
        if implicit := implicit_rm_meta(folder):  # an implicit RM: two causal LMs, DPO's and its reference
            shape = cls.of_folder(str(implicit["policy"]), key)
            return replace(shape, params=2 * shape.params)
        path = Path(model_folders(folder)[0])  # an adapter folder is sized by its base (the adapters are small)
        try:
            return cls.of(AutoConfig.from_pretrained(path), scalar_head)
        except (OSError, ValueError, TypeError, AttributeError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"{key}: {folder}/config.json cannot be sized: {first}") from None


@dataclass
class Memory:
    """Bytes one rank holds on its device (the accelerator, or the host in a plan without GPUs) and on the host."""

    weights: int = 0
    gradients: int = 0
    optimizer: int = 0
    activations: int = 0
    buffers: int = 0
    runtime: int = 0  # on a GPU: the process's CUDA context and communication buffers
    host: int = 0  # offloaded states (on top of the process itself)
    loading: int = 0  # host bytes while the model loads (its dtype; ZeRO-3: its partition), before the states exist

    @property
    def host_peak(self) -> int:
        """A rank's host bytes at their peak (the offloaded states, or the model while it loads)."""
        return max(self.host, self.loading)

    @property
    def device(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations + self.buffers + self.runtime

    def parts(self) -> str:
        names = ("weights", "gradients", "optimizer", "activations", "buffers", "runtime")
        return ", ".join(f"{n} {gib(getattr(self, n))}" for n in names if getattr(self, n))


def gib(n: float) -> str:
    return f"{n / GiB:.2f} GiB"


def _divided(n: float, ranks: int, when: bool) -> int:
    return int(n / ranks) if when else int(n)


def zero3_gathered(shape: ModelShape, b: int, ranks: int) -> int:
    """What a ZeRO-3 rank holds gathered beyond its partition: a layer (4 bytes a parameter of the largest, as
    DeepSpeed counts it) and, over more than one rank, the weights kept alive for reuse and the prefetch bucket
    (`stage3_max_live_parameters`, `stage3_prefetch_bucket_size`: each capped at `zero.BUCKET_ELEMENTS`), trained
    or frozen alike."""
    from hrlaif_ray.zero import BUCKET_ELEMENTS

    return 4 * shape.largest_layer + (2 * min(BUCKET_ELEMENTS, shape.params) * b if ranks > 1 else 0)


def model_states(shape: ModelShape, learner: LearnerConfig, ranks: int, stage: int) -> Memory:
    """A trained rank's weights, gradients, optimizer states and ZeRO buffers (see the module's text). With LoRA
    the gradients, optimizer states and reduce buckets are the adapters' (`ModelShape.trained_params`); the frozen
    base is weights only."""
    T, b = shape.trained_params(learner.lora), BYTES[learner.precision]
    weights = _divided((shape.params + (T if learner.lora.enabled else 0)) * b, ranks, stage >= 3)
    P = T  # what the gradients and the optimizer cover
    if learner.precision == "bf16":
        grads16 = 0 if stage >= 3 else _divided(P * 2, ranks, stage >= 2)
        fp32 = _divided(P * (4 + 4 + 8), ranks, stage >= 1)  # fp32 gradients, master weights, Adam's moments
        gradients, optimizer = grads16, fp32
    else:
        gradients = _divided(P * 4, ranks, stage >= 2)
        optimizer = _divided(P * 8, ranks, stage >= 1) + (int(P * 4 / ranks) if stage >= 1 else 0)
    buckets = 0
    if stage >= 1:
        from hrlaif_ray.zero import BUCKET_ELEMENTS

        buckets = min(BUCKET_ELEMENTS, P) * (4 + b)  # a reduce bucket (fp32) and an all-gather bucket (trained)
    if stage >= 3:
        buckets += zero3_gathered(shape, b, ranks)
    host = 0
    if learner.offload.optimizer == "cpu":  # the gradients go to the host partition bucket by bucket too
        host, optimizer = optimizer + (gradients if learner.precision == "fp32" else 0), 0
        gradients = 0
    loading = _divided(shape.params * b, ranks, stage >= 3)
    if learner.offload.params == "cpu":
        host, weights = host + weights, 0
    return Memory(
        weights=weights, gradients=gradients, optimizer=optimizer, buffers=buckets, host=host, loading=loading
    )


def activations(
    shape: ModelShape,
    precision: str,
    rows: int,
    seq: int,
    logit_positions: int,
    train: bool,
    checkpointing: bool,
    attention_scores: bool,
) -> int:
    """One micro-batch's activation bytes: `rows` sequences of `seq` tokens, the logits at `logit_positions` of
    each (see the module's text)."""
    b, t = BYTES[precision], rows * seq
    per_token_layer = 8 * shape.hidden + 3 * shape.kv_width + 4 * shape.intermediate
    scores = shape.heads * seq * rows * seq * b if attention_scores else 0  # one layer's softmax
    layer = t * per_token_layer * b + scores
    logits = rows * logit_positions * shape.vocab * (b + 4 + (4 if train else 0))
    if train:
        layer = t * shape.hidden * b * shape.layers + layer if checkpointing else layer * shape.layers
    return int((layer + logits) * (BF16_ACTIVATIONS if precision == "bf16" else 1.0))


@dataclass
class RolePlan:
    """One role: its ranks, what each holds, and a one-line description of its settings."""

    role: str
    ranks: int
    memory: Memory
    what: str
    process_bytes: int = int(PROCESS_GIB * GiB)
    problem: str | None = None  # a role that cannot start whatever the bundle holds
    rank0_host: int = (
        0  # on rank 0's host only: a gathered copy of the model (a checkpoint, an object-store sync's put)
    )


@dataclass
class BundlePlan:
    """One placement-group bundle: the roles' ranks it hosts and what they need there."""

    name: str  # e.g. actor[0]
    roles: list[str]
    needed: int
    capacity: int | None  # None: not checked


@dataclass
class Plan:
    roles: list[RolePlan]
    bundles: list[BundlePlan] = field(default_factory=list)
    host_needed: int = 0
    host_capacity: int | None = None
    gpus: bool = False
    unknown: list[tuple[str, str]] = field(default_factory=list)  # (key, what it is): needed, and left unset

    def problems(self, prefix: str = "") -> list[str]:
        out = [f"the plan cannot be checked: {prefix}{key} is not set ({what})" for key, what in self.unknown]
        out += [f"{r.role}: {r.problem}" for r in self.roles if r.problem]
        for b in self.bundles:
            if b.capacity is not None and b.needed > b.capacity:
                parts = "; ".join(f"{r.role} {r.memory.parts()}" for r in self.roles if r.role in b.roles)
                out.append(
                    f"bundle {b.name} ({', '.join(b.roles)}) needs {gib(b.needed)} of accelerator memory, "
                    f"{gib(b.capacity)} there ({parts})"
                )
        if self.host_capacity is not None and self.host_needed > self.host_capacity:
            out.append(f"host memory: the plan needs {gib(self.host_needed)}, {gib(self.host_capacity)} there")
        return out

    def to_json(self) -> dict:
        return {
            "fits": not self.problems(),
            "problems": self.problems(),
            "roles": [{**asdict(r), "device_bytes": r.memory.device} for r in self.roles],
            "bundles": [asdict(b) for b in self.bundles],
            "host_needed": self.host_needed,
            "host_capacity": self.host_capacity,
            "gpus": self.gpus,
            "unknown": self.unknown,
        }

    def table(self) -> str:
        where = "accelerator" if self.gpus else "host"
        lines = [f"| role | ranks | per rank on the {where} | of which | host (offloaded) |", "|---|---|---|---|---|"]
        for r in self.roles:
            lines.append(
                f"| {r.role}: {r.what} | {r.ranks} | {gib(r.memory.device)} | {r.memory.parts()} | {gib(r.memory.host)} |"
            )
        lines += ["", "| bundle | roles | needed | capacity |", "|---|---|---|---|"]
        for b in self.bundles:
            cap = gib(b.capacity) if b.capacity is not None else "not checked"
            lines.append(f"| {b.name} | {', '.join(b.roles)} | {gib(b.needed)} | {cap} |")
        host_cap = gib(self.host_capacity) if self.host_capacity is not None else "not checked"
        lines += ["", f"host memory: {gib(self.host_needed)} needed, {host_cap} available"]
        verdict = self.problems()
        lines.append("fits" if not verdict else "DOES NOT FIT: " + "; ".join(verdict))
        return "\n".join(lines)


def host_bytes(role: RolePlan, gpu: bool) -> int:
    """One rank's host memory: its process, and on a GPU its offloaded states (or the model while it loads), on a
    CPU everything it holds."""
    return role.process_bytes + (role.memory.host_peak if gpu else role.memory.device + role.memory.host)


def machine_memory() -> int:
    """This machine's memory, or the cgroup's limit where one is lower (a container's)."""
    import os

    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            value = Path(limit).read_text().strip()
        except OSError:
            continue
        if value.isdigit():
            return min(physical, int(value))
    return physical


def place(plan: ResourcePlan, roles: dict[str, RolePlan], remote: bool = False) -> Plan:
    """The roles' ranks in their bundles (a colocated role's rank i in its host's bundle i), each bundle's sum
    against one GPU's usable memory (times the bundle's GPUs), and the host's total against the host memory
    (`host_memory_gib`; else, for a plan without GPUs on this machine's cluster, not `remote`, this machine's)."""
    placed = [name for name in roles if name in ROLES]  # the others (the labeler pool) live outside the plan
    gpus = any(plan.bundle_of(name).get("GPU", 0) > 0 for name in placed)
    out = Plan(list(roles.values()), gpus=gpus)
    per_gpu = int(plan.gpu_memory_gib * GiB) if plan.gpu_memory_gib else None
    for name in placed:
        res = getattr(plan, name)
        if res.colocate_with in roles:
            continue
        guests = [g for g in placed if getattr(plan, g).colocate_with == name]
        for i in range(res.replicas):
            here = [name] + [g for g in guests if getattr(plan, g).replicas > i]
            needed = sum(roles[g].memory.device for g in here)
            n_gpus = plan.bundle_of(name).get("GPU", 0)
            capacity = int(per_gpu * n_gpus * GPU_USABLE) if gpus and per_gpu and n_gpus else None
            out.bundles.append(BundlePlan(f"{name}[{i}]", here, needed, capacity))
    out.host_needed = sum(
        r.ranks * host_bytes(r, n in placed and plan.bundle_of(n).get("GPU", 0) > 0) + r.rank0_host
        for n, r in roles.items()
    )
    if plan.host_memory_gib:
        out.host_capacity = int(plan.host_memory_gib * GiB)
    elif not gpus and not remote:
        out.host_capacity = machine_memory()
    # A GPU plan is checked against the cluster's sizes, which the driver (often a CPU head node) cannot see: a
    # job that leaves them unset is refused, not passed unchecked (an OOM an hour in is what the check prevents).
    if gpus and per_gpu is None:
        out.unknown.append(("resources.gpu_memory_gib", "one GPU's memory: 40 for an A100-40G, 80 for an H100"))
    if gpus and out.host_capacity is None:
        out.unknown.append(("resources.host_memory_gib", "the host memory the run may use, over all its nodes"))
    return out


def describe(settings: LearnerConfig | FrozenConfig, shape: ModelShape, stage: int) -> str:
    extra = []
    if isinstance(settings, LearnerConfig):
        if settings.offload.optimizer != "none":
            extra.append("optimizer offloaded")
        if settings.offload.params != "none":
            extra.append("weights offloaded")
        if settings.gradient_checkpointing:
            extra.append("checkpointing")
        if settings.lora.enabled:
            extra.append(f"LoRA r={settings.lora.r}")
    elif settings.offload_params:
        extra.append("weights offloaded")
    kind = "frozen" if isinstance(settings, FrozenConfig) else "trained"
    return f"{shape.params / 1e9:.3g}B params, {kind}, {settings.precision}, ZeRO-{stage}" + "".join(
        f", {e}" for e in extra
    )


@dataclass(frozen=True)
class Batch:
    """What one forward of a role holds: `rows` sequences of `seq` tokens, logits at `logits` positions of each
    (0: a scalar head), on a GPU (whose attention kernels keep no score matrix) or not."""

    rows: int
    seq: int
    logits: int
    gpu: bool


def trained_role(
    role: str,
    shape: ModelShape,
    learner: LearnerConfig,
    ranks: int,
    stage: int,
    batch: Batch,
    sync: SyncConfig | None = None,
    adapters_synced: bool = True,
) -> RolePlan:
    """A trained role's rank; `sync`: how its weights go to the rollout engines every step (`adapters_synced`:
    a LoRA actor's adapters alone, else merged whole weights). A broadcast holds one
    bucket on rank 0's device (counted on every rank: a plan is per rank); the object store a copy on rank 0's
    host. Under ZeRO-3 rank 0's host also takes a checkpoint's gathered copy."""
    mem = model_states(shape, learner, ranks, stage)
    mem.buffers += TRAINER_BUFFERS
    mem.activations = activations(
        shape,
        learner.precision,
        batch.rows,
        batch.seq,
        batch.logits,
        True,
        learner.gradient_checkpointing,
        not batch.gpu,
    )
    if stage == 3 and not batch.gpu:
        mem.activations = int(mem.activations * ZERO3_CPU_ACTIVATIONS)
    mem.runtime = int(CUDA_CONTEXT_GIB * GiB) if batch.gpu else 0
    whole = shape.params * BYTES[learner.precision]
    sent = synced_bytes(shape, learner) if adapters_synced else whole
    saved = shape.trained_params(learner.lora) * BYTES[learner.precision] if learner.lora.enabled else whole
    rank0 = (saved if stage == 3 else 0) + (sent if sync is not None and sync.method == "object_store" else 0)
    if sync is not None and sync.method == "broadcast":
        mem.buffers += min(int(sync.bucket_mb * MiB), sent)
    return RolePlan(role, ranks, mem, describe(learner, shape, stage), rank0_host=rank0)


def synced_bytes(shape: ModelShape, learner: LearnerConfig) -> int:
    """What a weight sync sends: the whole weights, or with LoRA the adapters."""
    if learner.lora.enabled:
        return shape.adapter_params(learner.lora) * BYTES[learner.precision]
    return shape.params * BYTES[learner.precision]


def frozen_role(role: str, shape: ModelShape, frozen: FrozenConfig, ranks: int, batch: Batch) -> RolePlan:
    from hrlaif_ray.zero import frozen_stage

    b, stage = BYTES[frozen.precision], frozen_stage(frozen, ranks)
    weights = _divided(shape.params * b, ranks, stage == 3)
    mem = Memory(weights=weights, buffers=zero3_gathered(shape, b, ranks) if stage == 3 else 0, loading=weights)
    if frozen.offload_params:
        mem.host, mem.weights = mem.weights, 0
    mem.activations = activations(
        shape, frozen.precision, batch.rows, batch.seq, batch.logits, False, False, not batch.gpu
    )
    mem.runtime = int(CUDA_CONTEXT_GIB * GiB) if batch.gpu else 0
    return RolePlan(role, ranks, mem, describe(frozen, shape, stage))


def engine_role(
    shape: ModelShape,
    rollout: RolloutConfig,
    ranks: int,
    gpu: bool,
    gpu_bytes: int | None,
    sync: SyncConfig | None = None,
    lora: LoRAConfig | None = None,
) -> RolePlan:
    """vLLM: on a GPU what it reserves (and that this holds its weights and one sequence's KV cache); on a CPU
    its fp32 weights and KV cache. A broadcast sync adds two buckets beside it (the one loading, the one
    arriving). With the actor's adapters, the engine holds one adapter (its slot, at vLLM's rank) beside its
    weights, and a sync moves only that."""
    b = 2 if gpu else 4
    weights = shape.params * b
    plan = _engine_role(shape, rollout, ranks, gpu, gpu_bytes, b, weights)
    sent = weights
    if lora is not None and lora.enabled:
        sent = shape.adapter_params(lora) * b
        plan.memory.weights += sent
        plan.what += f", a rank-{lora.r} adapter"
    if sync is not None and sync.method == "broadcast":
        plan.memory.buffers += 2 * min(int(sync.bucket_mb * MiB), sent)
    return plan


def _engine_role(
    shape: ModelShape, rollout: RolloutConfig, ranks: int, gpu: bool, gpu_bytes: int | None, b: int, weights: int
) -> RolePlan:
    kv_one = rollout.max_model_len * 2 * shape.layers * shape.kv_width * b
    if gpu:
        share = f"reserves {rollout.gpu_memory_utilization:g} of the GPU"
        if not gpu_bytes:  # the GPU's size not given: only the weights and one sequence's KV cache are known
            return RolePlan("rollout", ranks, Memory(weights=weights, buffers=kv_one), f"vLLM, {share}")
        reserved = int(rollout.gpu_memory_utilization * gpu_bytes)
        mem = Memory(weights=weights, buffers=max(0, reserved - weights))
        plan = RolePlan("rollout", ranks, mem, f"vLLM, {gib(weights)} weights, {share}")
        if weights + kv_one > reserved:
            plan.problem = (
                f"vLLM's share ({rollout.gpu_memory_utilization:g} x {gib(gpu_bytes)}) holds less than its weights "
                f"and one sequence's KV cache ({gib(weights + kv_one)}); raise rollout.gpu_memory_utilization"
            )
        return plan
    else:
        mem = Memory(weights=weights, buffers=int(rollout.kv_cache_gib * GiB))
        what = f"vLLM, {gib(weights)} weights, {rollout.kv_cache_gib:g} GiB KV cache"
    return RolePlan("rollout", ranks, mem, what)


def plan_ppo(job, shape_of=None) -> Plan:
    """The PPO job's roles, from its models' configs (`shape_of(folder, key, scalar_head)`, default: read each
    folder's config.json)."""
    from hrlaif_ray.zero import stage_for_world

    shape_of = shape_of or ModelShape.of_folder
    res, algo, r = job.resources, job.algo, job.rollout
    policy = shape_of(job.policy, "policy", False)
    rows_per_step = job.prompts_per_step * r.samples_per_prompt

    def batch(role: str, logits: int) -> Batch:
        share = rows_per_step // (
            getattr(res, role).replicas * (algo.mini_batches if role in ("actor", "critic") else 1)
        )
        gpu = res.bundle_of(role).get("GPU", 0) > 0
        return Batch(min(algo.micro_batch_size or share, share), r.max_model_len, logits, gpu)

    roles, ranks = {}, res.actor.replicas
    answer = r.max_new_tokens + 1  # the positions whose logits predict the response
    adapters = job.rollout.lora_weights == "adapter"  # else the engines take merged whole weights
    roles["actor"] = trained_role(
        "actor",
        policy,
        job.actor,
        ranks,
        stage_for_world(job.actor, ranks),
        batch("actor", answer),
        sync=job.sync,
        adapters_synced=adapters,
    )
    if not job.actor.lora.enabled:  # else the actor is its own reference (its adapters off): nothing more held
        roles["reference"] = frozen_role(
            "reference", policy, job.frozen, res.reference.replicas, batch("reference", answer)
        )
    if algo.estimator == "gae":
        start = job.critic_start()
        key = "critic_init" if job.critic_init else "reward.rm" if start == job.reward.rm else "policy"
        critic = shape_of(start, key, True)
        ranks = res.critic.replicas
        roles["critic"] = trained_role(
            "critic", critic, job.critic, ranks, stage_for_world(job.critic, ranks), batch("critic", 0)
        )
    if job.reward.uses_rm:
        rm = shape_of(job.reward.rm, "reward.rm", True)
        # an implicit RM (a causal LM's head, no scalar one) reads log-probs: logits over the response positions
        logits = answer if rm.vocab else 0
        roles["reward"] = frozen_role("reward", rm, job.frozen, res.reward.replicas, batch("reward", logits))
    elif job.reward.kind == "verifier":  # the verifier's replicas: processes without a model
        roles["reward"] = RolePlan("reward", res.reward.replicas, Memory(), "the verifier")
    if job.reward.online:  # the labeler pool's actors, outside the placement groups
        pool = job.reward.pool
        labelers = pool.autoscale.max if pool.autoscale else pool.labelers
        roles["labelers"] = RolePlan("labelers", labelers, Memory(), "the online reward's labeler pool")
    gpu_bytes = int(res.gpu_memory_gib * GiB) if res.gpu_memory_gib else None
    on_gpu = res.bundle_of("rollout").get("GPU", 0) > 0
    roles["rollout"] = engine_role(
        policy, r, res.rollout.replicas, on_gpu, gpu_bytes, job.sync, job.actor.lora if adapters else None
    )
    return place(res, roles, remote=bool(job.ray_address))


def plan_dpo(job, shape_of=None, responses: int = 4) -> Plan:
    """The DPO job's policy (actor) and reference; `responses` a prompt (every response of a micro-batch's prompts
    keeps its graph until the one backward)."""
    from hrlaif_ray.zero import stage_for_world

    shape_of = shape_of or ModelShape.of_folder
    res = job.resources
    policy = shape_of(job.policy, "policy", False)
    reference = shape_of(job.reference, "reference", False) if job.reference else policy
    seq, answer = job.max_prompt_tokens + job.max_response_tokens, job.max_response_tokens
    ranks = res.actor.replicas
    train = Batch(job.micro_batch_prompts * responses, seq, answer, res.bundle_of("actor").get("GPU", 0) > 0)
    # the reference's forwards: micro_batch_prompts rows each (its ranks' micro-batch, in responses)
    forward = Batch(job.micro_batch_prompts, seq, answer, res.bundle_of("reference").get("GPU", 0) > 0)
    roles = {"actor": trained_role("actor", policy, job.learner, ranks, stage_for_world(job.learner, ranks), train)}
    if not (job.learner.lora.enabled and not job.reference):  # else the policy with its adapters off
        roles["reference"] = frozen_role("reference", reference, job.frozen, res.reference.replicas, forward)
    return place(res, roles, remote=bool(job.ray_address))


def plan_torchrun(role: str, shape: ModelShape, learner: LearnerConfig, world: int, rows: int, seq: int, logits: int):
    """A job run as `world` torchrun ranks on one machine (SFT, reward-model training), against its memory."""
    gpu = _has_cuda()
    mem_role = trained_role(role, shape, learner, world, learner.zero_stage, Batch(rows, seq, logits, gpu))
    plan = Plan([mem_role], gpus=gpu)
    plan.host_needed = world * host_bytes(mem_role, plan.gpus) + mem_role.rank0_host
    plan.host_capacity = machine_memory()  # torchrun's ranks share this machine's host memory, GPUs or not
    if plan.gpus:
        import torch

        cap = int(torch.cuda.get_device_properties(0).total_memory * GPU_USABLE)
        plan.bundles = [BundlePlan(f"{role}[{i}]", [role], mem_role.memory.device, cap) for i in range(world)]
    return plan


def plan_sft(job, world: int = 1, shape_of=None) -> Plan:
    shape = (shape_of or ModelShape.of_folder)(job.init, "init", False)
    seq = job.max_prompt_tokens + job.max_response_tokens
    return plan_torchrun("sft", shape, job.learner, world, job.batch_size // max(world, 1), seq, seq)


def plan_rm(job, world: int = 1, shape_of=None, responses: int = 4) -> Plan:
    if job.kind == "implicit":  # a DPO run on Ray (its actor and reference), not torchrun ranks
        return plan_dpo(job.implicit_job(), shape_of, responses)
    shape = (shape_of or ModelShape.of_folder)(job.init, "init", True)
    seq = job.max_prompt_tokens + job.max_response_tokens
    return plan_torchrun("rm", shape, job.learner, world, job.batch_prompts * responses, seq, 0)


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover - torch is a dependency
        return False


# ------------------------------------------------------------------------------------------- the check


def suggestions(job, planner, limit: int = 4) -> list[str]:
    """Single settings that would make the job's plan fit (each tried alone, in the order an engineer would)."""
    from hrlaif_ray.config import DPOJob, PPOJob, RMTrainJob, SFTJob

    learners = {PPOJob: ["actor", "critic"], DPOJob: ["learner"], SFTJob: ["learner"], RMTrainJob: ["learner"]}
    tries: list[str] = []
    for key in learners.get(type(job), []):
        section: LearnerConfig = getattr(job, key)
        if section.precision == "fp32":
            tries.append(f"{key}.precision=bf16")
        if not section.gradient_checkpointing:
            tries.append(f"{key}.gradient_checkpointing=true")
        if section.zero_stage < 3:
            tries.append(f"{key}.zero_stage=3")
        if section.offload.optimizer == "none" and section.zero_stage >= 1:
            tries.append(f"{key}.offload.optimizer=cpu")
        if section.offload.params == "none" and section.zero_stage == 3:
            tries.append(f"{key}.offload.params=cpu")
    if hasattr(job, "frozen"):
        if job.frozen.precision == "fp32":
            tries.append("frozen.precision=bf16")
        if job.frozen.zero_stage == 0:
            tries.append("frozen.zero_stage=3")
    if isinstance(job, PPOJob) and job.algo.micro_batch_size != 1:
        rows = job.prompts_per_step * job.rollout.samples_per_prompt
        tries.append(f"algo.micro_batch_size={max(1, (job.algo.micro_batch_size or rows) // 2)}")
    data = job.model_dump(mode="json", by_alias=True)
    fits = []
    for override in tries:
        from hrlaif_ray.config import apply_override

        changed = json.loads(json.dumps(data))
        apply_override(changed, override)
        try:
            candidate = type(job).model_validate(changed)
        except ValueError:
            continue
        if not planner(candidate).problems():
            fits.append(override)
        if len(fits) >= limit:
            break
    return fits


def refusal(job, planner, plan: Plan, prefix: str = "") -> PlanError:
    """The one-line error of a plan that does not fit: its first problem and the single settings that would fit
    (`prefix`: where the job's keys sit in the config given, e.g. 'ppo.' in a pipeline's)."""
    where = f"{prefix.rstrip('.')}: " if prefix else ""
    if plan.unknown:
        return PlanError(f"{plan.problems(prefix)[0]}; set it in the job's config")
    fits = [prefix + f for f in suggestions(job, planner)]
    hint = f"; fits with {' or '.join(fits)}" if fits else "; no single setting fits (`hrlaif plan` shows every role)"
    return PlanError(f"plan does not fit: {where}{plan.problems()[0]}{hint}")


def check(job, planner, prefix: str = "") -> Plan:
    """The job's plan, or a PlanError naming what does not fit and the single settings that would."""
    plan = planner(job)
    if plan.problems():
        raise refusal(job, planner, plan, prefix)
    return plan


def plan_for(kind: Literal["sft", "train-rm", "ppo", "dpo"], world: int = 1):
    """The planner of a job of `kind` (torchrun jobs on `world` ranks)."""
    planners = {
        "sft": lambda j: plan_sft(j, world),
        "train-rm": lambda j: plan_rm(j, world),
        "ppo": plan_ppo,
        "dpo": plan_dpo,
    }
    return planners[kind]


def main(argv: list[str] | None = None) -> int:
    """`hrlaif plan JOB --config FILE [key=value ...] [--json] [--world N]`."""
    import argparse

    from hrlaif_ray.config import DPOJob, PPOJob, RMTrainJob, RunJob, SFTJob
    from hrlaif_ray.errors import OneLineParser

    jobs = {"ppo": PPOJob, "dpo": DPOJob, "sft": SFTJob, "train-rm": RMTrainJob, "run": RunJob}
    parser = OneLineParser(
        prog="hrlaif plan", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("job", choices=sorted(jobs), help="the job the config is for")
    parser.add_argument("--config", type=Path, help="the job's YAML or JSON file")
    parser.add_argument("--json", action="store_true", help="the plan as JSON")
    parser.add_argument("--world", type=int, default=1, help="torchrun ranks (sft, train-rm)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, after the file")
    args = parser.parse_intermixed_args(argv)
    job = load_config(jobs[args.job], args.config, args.overrides)
    if args.job == "run":
        from hrlaif_ray.run_plan import run_stages

        stages = {name: (stage, planner, planner(stage)) for name, (stage, planner) in run_stages(job).items()}
    else:
        planner = plan_for(args.job, args.world)
        stages = {args.job: (job, planner, planner(job))}
    if args.json:
        print(json.dumps({name: plan.to_json() for name, (_, _, plan) in stages.items()}, indent=1))
    else:
        print("\n\n".join(f"## {name}\n\n{plan.table()}" for name, (_, _, plan) in stages.items()))
    for name, (stage, planner, plan) in stages.items():
        if plan.problems():
            raise refusal(stage, planner, plan, f"{name}." if args.job == "run" else "")
    return 0
