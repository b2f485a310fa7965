"""PPO's config (`hrlaif ppo`) and sampling's (`hrlaif sample`): the rollouts, the algorithm, the reward role,
asynchronous rollouts, faults, the reward-hacking monitor, and the two trained roles' learner sections."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import ConfigDict, Field, model_validator

from hrlaif_ray.config.base import Section
from hrlaif_ray.config.data import PPOPromptMix
from hrlaif_ray.config.labeling import LabelingConfig, OnlinePool
from hrlaif_ray.config.learner import ActorLearner, CriticLearner, FrozenConfig
from hrlaif_ray.config.resources import ROLES, ResourcePlan, Role, TwoThreads
from hrlaif_ray.config.tracking import LoggingConfig


class RolloutConfig(Section):
    """How responses are sampled (the vLLM engines' settings)."""

    backend: Literal["vllm", "hf"] = Field(
        "vllm", description="vLLM engines; 'hf' (transformers generate) is the fallback."
    )
    samples_per_prompt: int = Field(4, ge=1, description="Responses sampled per prompt (n); RLOO/GRPO need >= 2.")
    max_new_tokens: int = Field(40, ge=1, description="Longest response in tokens.")
    temperature: float = Field(
        1.0, gt=0, description="Sampling temperature (> 0; the log-probs are those of this distribution)."
    )
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling threshold in (0, 1].")
    max_model_len: int = Field(512, ge=16, description="vLLM context (prompt + response).")
    kv_cache_gib: float = Field(1.0, gt=0, description="vLLM's KV-cache size in GiB on CPU (VLLM_CPU_KVCACHE_SPACE).")
    gpu_memory_utilization: float = Field(
        0.4, gt=0, le=1, description="vLLM's share of a GPU (colocated engines want less)."
    )
    stream: bool = Field(
        False,
        description="Hand each prompt's group to the reward as soon as its engine has finished its n samples, so the "
        "online judge labels while the engines still sample (the same samples and rewards as without; a reward "
        "model or the verifier scores the whole batch either way). It gains where groups finish at different "
        "times (responses well under max_new_tokens); measured where they all finish at the last step, it cost "
        "2-12% of a step (docs/training.md), hence off by default.",
    )
    lora_weights: Literal["adapter", "merged"] = Field(
        "adapter",
        description="With the actor's LoRA adapters (actor.lora.r > 0): 'adapter' serves them in vLLM (enable_lora) "
        "and each sync moves only them; 'merged' has the engines take the merged weights at each sync (the whole "
        "model's bytes, but the base model's generation speed: vLLM's CPU LoRA kernels generated 4x slower on the "
        "50M model, docs/training.md). An engine that cannot serve adapters falls back to 'merged' by itself.",
    )


class PPOAlgoConfig(Section):
    """The algorithm's knobs, documented where they are used (hrlaif_ray/ppo/core.py)."""

    estimator: Literal["gae", "rloo", "grpo"] = Field(
        "gae", description="Advantages: GAE with a critic, or critic-free RLOO/GRPO."
    )
    gamma: float = Field(
        1.0, ge=0, le=1, description="Discount of GAE (1: none; the reward comes at the end of the response)."
    )
    lam: float = Field(0.95, ge=0, le=1, description="GAE's lambda in [0, 1] (bias-variance trade of the advantage).")
    kl_coef: float = Field(0.05, ge=0, description="Initial KL penalty coefficient (in the reward).")
    kl_estimator: Literal["k1", "k2", "k3"] = Field("k1", description="Per-token KL estimator in the reward.")
    kl_target: float | None = Field(
        None, gt=0, description="Adaptive KL controller's target (None: fixed coefficient)."
    )
    kl_horizon: int = Field(
        10000,
        gt=0,
        description="Adaptive KL: the horizon (in samples) over which the coefficient moves toward kl_target.",
    )
    clip: float = Field(0.2, gt=0, description="Policy ratio clip.")
    dual_clip: float | None = Field(None, gt=1, description="Dual-clip bound c (None: off).")
    value_clip: float | None = Field(0.2, gt=0, description="Value clip around the old values (None: off).")
    entropy_coef: float = Field(0.0, ge=0, description="Weight of the entropy bonus in the actor's loss (0: off).")
    epochs: int = Field(1, ge=1, description="Passes over each batch of experience.")
    mini_batches: int = Field(1, ge=1, description="Optimizer steps per epoch (the batch is split into this many).")
    micro_batch_size: int | None = Field(
        None,
        ge=1,
        description="Rows per forward/backward on one learner rank or reward "
        "replica (None: its whole share). Rows are sorted by length first and each "
        "micro-batch drops its all-padding columns; gradients accumulate over a "
        "mini-batch's micro-batches, one optimizer step each mini-batch.",
    )
    whiten_advantages: bool = Field(True, description="Normalise advantages to mean 0 and std 1 over the batch.")
    use_rollout_logprobs: bool = Field(
        False,
        description="Take the old log-probs from the rollout engines (vLLM's "
        "processed logprobs match the learner's to ~1e-6 after a sync, a test) instead of "
        "a learner forward: one forward less per step, as TRL does with its generate logits.",
    )
    tis_cap: float | None = Field(
        None,
        gt=0,
        description="Truncated importance sampling (veRL's and OpenRLHF's correction of the sampler's mismatch): "
        "the actor recomputes the samples' log-probs (the ratio's old log-probs, even where the engines' would "
        "serve), and each token's policy loss is weighted by min(exp(actor - engine log-prob), tis_cap), since "
        "the engines' kernels (vLLM's bf16 on a GPU), not the learner's, drew the tokens. None: off.",
    )
    mismatch_threshold: float = Field(
        0.1,
        gt=0,
        description="The engines' and the actor's log-probs of a token differing by more than this count in "
        "rollout/logprob_diff_over_frac (logged whenever the actor recomputes them).",
    )
    reward_clip: float = Field(
        10.0, gt=0, description="Bound of the programmatic reward (the RM clips in its forward)."
    )
    dynamic_sampling: bool = Field(
        False,
        description="DAPO's dynamic sampling: groups whose rewards are all equal (no signal for a group baseline) "
        "are dropped and more prompts sampled until the step has prompts_per_step groups with signal, or "
        "max_generation_rounds is reached (then dropped groups fill the batch: under RLOO/GRPO they add no gradient).",
    )
    max_generation_rounds: int = Field(
        3, ge=1, description="Dynamic sampling: most generation rounds per step (the first included)."
    )


class RewardRoleConfig(Section):
    """The reward role: one interface (prompt and response in, score out) for the RM, the verifiers and the judge."""

    kind: Literal["rm", "verifier", "rm+verifier", "online", "online+rm"] = Field(
        "verifier",
        description="The reward model, the programmatic verifier (+1 correct / -1 wrong), or their sum; 'online': "
        "each prompt's group of samples labeled during the step by the labeler pool (hybrid: verify, then the judge "
        "within the correct and the wrong set; red teaming; basic for open questions) and its partial order turned "
        "into rewards in [-1, 1] (hrlaif_ray/reward/group.py); 'online+rm': the RM plus online_weight x that.",
    )
    rm: str | None = Field(
        None, description="Reward-model folder (`hrlaif train-rm`'s output) for kind rm, rm+verifier and online+rm."
    )
    verifier_weight: float = Field(1.0, ge=0, description="Weight of the verifier's +-1 in rm+verifier.")
    online_weight: float = Field(1.0, ge=0, description="Weight of the online group reward in online+rm.")
    labeling: LabelingConfig = Field(
        default_factory=LabelingConfig,
        description="Online kinds: how each group is labeled (method, judges or tiers, rewriter, cache), as in "
        "`hrlaif label`.",
    )
    pool: OnlinePool = Field(
        default_factory=OnlinePool,
        description="Online kinds: the labeler pool the loop labels through (actors, concurrency, rate limits).",
    )
    labels_dir: str | None = Field(
        None,
        description="Online kinds: the ledger of the loop's labels (None: <output_dir>/online-labels); its judge "
        "cache is <labels_dir>/judge-cache unless labeling.cache_dir names one.",
    )

    @property
    def online(self) -> bool:
        return self.kind.startswith("online")

    @property
    def uses_rm(self) -> bool:
        return self.kind in ("rm", "rm+verifier", "online+rm")

    @model_validator(mode="after")
    def _rm_given(self) -> RewardRoleConfig:
        if self.uses_rm and not self.rm:
            raise ValueError(f"rm: a reward-model folder is required for kind {self.kind!r}")
        return self


class AsyncConfig(Section):
    """Asynchronous rollouts: the engines generate the next step's samples while the learners train."""

    max_staleness: int = Field(
        0,
        ge=0,
        le=1,
        description="0: the synchronous loop (generate, then train, then sync). 1: one-step off-policy: step t+1's "
        "samples are made by the weights before step t's update, and then their rewards (the RM's scores, the online "
        "judge's labels), while the learners train on step t; the PPO ratio uses the engines' log-probs (the behaviour policy's; "
        "with algo.tis_cap, the actor's, each token weighted), and a "
        "checkpoint keeps the buffered batch so a resume neither loses nor repeats it.",
    )


class SyncConfig(Section):
    """How the actor's new weights reach the rollout engines after each update (hrlaif_ray/weight_sync.py)."""

    method: Literal["broadcast", "object_store"] = Field(
        "broadcast",
        description="broadcast: the actor's rank 0 sends the weights a bucket at a time over a process group that "
        "joins it to every engine (gloo on CPU, nccl on GPU), as OpenRLHF, veRL and NeMo-RL do; object_store: rank 0 "
        "puts the whole state dict in Ray's object store and every engine reads it (the fallback: it holds a whole "
        "copy of the weights, and on a GPU pickles CUDA tensors). Broadcast over nccl needs the engines on GPUs of "
        "their own: not colocated with the actor.",
    )
    bucket_mb: float = Field(
        16.0,
        gt=0,
        description="The broadcast's bucket in MiB: consecutive tensors sent as one buffer (a larger tensor alone). "
        "Rank 0 holds one bucket beyond its shard; each engine the one it loads and the one arriving. Measured on "
        "CPU with a 188 MB model (benchmarks/weight_sync.py): 8-16 MiB synced fastest (transfer and loading "
        "overlap), 256 MiB took 2.6x as long; on GPUs, nccl's per-call cost favours larger buckets (not measured).",
    )
    check: bool = Field(
        True,
        description="After each broadcast sync, check that every engine holds what was sent: the checksums of "
        "the sent, the received and the loaded tensors (those the engine keeps under their own name and shape) "
        "agree; a sync that fails it fails the step, naming the engine.",
    )


class ChaosConfig(Section):
    """Fault injection (for testing a deployment's recovery): the controller kills one actor of a role at random
    every few steps, at a random moment inside the step, as a dying process or node would."""

    every: int = Field(3, ge=1, description="Kill one actor every this many steps (steps every, 2 x every, ...).")
    roles: list[Role] = Field(
        default_factory=lambda: list(ROLES),
        description="The roles whose actors may be killed (one chosen at random, then one of its ranks); roles the "
        "run does not have are skipped.",
    )
    delay_s: float = Field(
        1.0, ge=0, description="The kill comes up to this many seconds (uniform) after the step starts."
    )
    seed: int = Field(0, description="Seed of which role, rank and moment.")


class FaultsConfig(Section):
    """How PPO survives dying actors: restarts in place, restarts from the checkpoint, and a bound on every wait."""

    actor_restarts: int = Field(
        3,
        ge=0,
        description="Ray restarts of each rollout engine, reward replica and reference rank (max_restarts); the "
        "restarted actor reloads the current weights and the work it held is redone in the same step.",
    )
    max_failures: int = Field(
        3,
        ge=0,
        description="Restarts of the whole run from its last checkpoint (in the same process) after a trained "
        "rank (actor, critic) dies or any role runs out of in-place restarts; each step stays in metrics.jsonl once.",
    )
    call_timeout_s: float = Field(
        1800,
        gt=0,
        description="The longest the controller waits for one call on a role (a step's generation, a forward, an "
        "update, a weight sync); past it the call fails naming the role, rank, node and step.",
    )
    chaos: ChaosConfig | None = Field(None, description="Fault injection for tests (None: off).")


class MonitorConfig(Section):
    """The reward-hacking monitor: held-out greedy accuracy every `every` steps against the reward's trend."""

    every: int = Field(0, ge=0, description="Check every N PPO steps (0: off).")
    prompts: int = Field(64, ge=1, description="Held-out verifiable prompts (a prompt-mix seed of their own).")
    seed: int = Field(10_001, description="Seed of the held-out prompt mix (apart from the training prompts).")
    accuracy_drop: float = Field(0.05, ge=0, description="Alert when accuracy falls this far below its best...")
    reward_rise: float = Field(0.0, description="...while the mean reward rose more than this since then.")
    injection_rate: float = Field(
        0.1,
        ge=0,
        le=1,
        description="Alert when more than this share of a step's samples address the judge (the prompt-injection "
        "detector, `hrlaif_ray/labeling/injection.py`; `monitor/injection_rate` is logged every step). 0: off.",
    )
    stop: bool = Field(False, description="Stop the run at the first alert (after a checkpoint).")
    keep_best: bool = Field(
        False,
        description="Early stopping's choice: save the actor at each check whose held-out accuracy is the best so "
        "far (output_dir/best, best.json) and name it the run's policy (final.json's `policy`) instead of the last "
        "step's. The held-out prompts are the monitor's (training problems with new names), so the choice uses no "
        "evaluation prompt.",
    )


class SampleSettings(Section):
    """`hrlaif sample`'s settings: everything but its files and seed (a pipeline's `sample` section)."""

    rollout: RolloutConfig = Field(
        default_factory=RolloutConfig, description="How responses are sampled (samples_per_prompt is K)."
    )
    engines: TwoThreads = Field(default_factory=TwoThreads, description="vLLM engines (replicas) and their threads.")
    bundle: dict[str, float] = Field(default_factory=lambda: {"CPU": 1.0}, description="Resources of one engine.")
    chunk: int = Field(256, ge=1, description="Prompts per write (progress is saved between chunks).")


class SampleJob(SampleSettings):
    """`hrlaif sample`: prompts in, K responses each out."""

    model_keys: ClassVar[tuple[str, ...]] = ("policy",)

    policy: str = Field(description="Policy folder (the SFT checkpoint).")
    prompts: str = Field(description="Prompts Parquet.")
    output: str = Field(description="Rollouts Parquet to write (resumed when it exists).")
    seed: int = Field(0, description="Sampling seed (engine i uses seed + i).")


class PPOSettings(Section):
    """`hrlaif ppo`'s settings: everything but its folders, prompts file and seed (a pipeline's `ppo` section)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True, serialize_by_alias=True)
    moved = {
        "algo.actor_lr": ("actor.lr",),
        "algo.critic_lr": ("critic.lr",),
        **{f"algo.{k}": (f"actor.{k}", f"critic.{k}") for k in ("weight_decay", "grad_clip")},
        "zero_stage": ("actor.zero_stage", "critic.zero_stage"),
        "tensorboard": ("logging.tensorboard",),
    }

    critic_init: str | None = Field(
        None, description="Critic's starting folder (default: a scalar RM, else the policy)."
    )
    prompt_mix: PPOPromptMix = Field(
        default_factory=PPOPromptMix,
        description="The generated prompts when prompts is None; also the monitor's held-out mix (its own seed).",
    )
    steps: int = Field(
        10, ge=1, description="PPO steps (the budget: each samples prompts_per_step x samples_per_prompt responses)."
    )
    prompts_per_step: int = Field(32, ge=1, description="Prompts per step.")
    checkpoint_every: int = Field(0, ge=0, description="Save an HF checkpoint every N steps (0: only at the end).")
    max_checkpoints: int = Field(
        3,
        ge=1,
        description="Checkpoints kept in output_dir/checkpoints, the newest (older ones are deleted once a newer "
        "one is whole; a 13B actor and critic are about 50 GB each in bf16).",
    )
    resume: bool = Field(False, description="Continue from the last checkpoint in output_dir.")
    ray_address: str | None = Field(
        None, description="Ray cluster to join (None: RAY_ADDRESS, else start a local one)."
    )
    algo: PPOAlgoConfig = Field(
        default_factory=PPOAlgoConfig, description="The algorithm: estimator, KL, clipping, epochs, batches."
    )
    actor: ActorLearner = Field(
        default_factory=ActorLearner, description="The actor's optimiser and ZeRO stage (its ranks: resources.actor)."
    )
    critic: CriticLearner = Field(
        default_factory=CriticLearner,
        description="The critic's optimiser and ZeRO stage (GAE only; its ranks: resources.critic).",
    )
    frozen: FrozenConfig = Field(
        default_factory=FrozenConfig,
        description="How the frozen roles run: the reference (resources.reference) and the reward model's replicas "
        "(resources.reward): precision, ZeRO-3 sharding over their ranks, offload.",
    )
    rollout: RolloutConfig = Field(default_factory=RolloutConfig, description="How responses are sampled.")
    reward: RewardRoleConfig = Field(
        default_factory=RewardRoleConfig, description="The reward role: the RM, the verifier, the online judge, sums."
    )
    resources: ResourcePlan = Field(
        default_factory=ResourcePlan,
        description="The resource plan: bundles, replicas, colocation (cluster/topology.py).",
    )
    monitor: MonitorConfig = Field(default_factory=MonitorConfig, description="The reward-hacking monitor.")
    logging: LoggingConfig = Field(
        default_factory=LoggingConfig,
        description="Where the metrics go besides metrics.jsonl: TensorBoard, W&B, MLflow (hrlaif_ray/tracking.py).",
    )
    overlap: bool = Field(
        True,
        description="Run independent phases at once: the reward, reference, actor log-prob "
        "and critic forwards; the actor and critic updates. Off: one after another.",
    )
    faults: FaultsConfig = Field(
        default_factory=FaultsConfig,
        description="Restarts, timeouts and (for tests) fault injection: how a run survives faults.",
    )
    sync: SyncConfig = Field(
        default_factory=SyncConfig, description="The weight sync from the actor to the rollout engines."
    )
    async_: AsyncConfig = Field(
        default_factory=AsyncConfig,
        alias="async",
        description="Asynchronous rollouts (key `async`): max_staleness 1 overlaps the next step's generation (and "
        "its rewards) with this step's training.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> PPOSettings:
        if self.algo.estimator in ("rloo", "grpo") and self.rollout.samples_per_prompt < 2:
            raise ValueError(f"rollout.samples_per_prompt: {self.algo.estimator} needs at least 2 samples per prompt")
        batch = self.prompts_per_step * self.rollout.samples_per_prompt
        for role in ("actor", "critic") if self.algo.estimator == "gae" else ("actor",):
            parts = getattr(self.resources, role).replicas * self.algo.mini_batches
            if batch % parts:
                raise ValueError(
                    f"prompts_per_step x samples_per_prompt ({batch}) must split evenly over {role}.replicas x "
                    f"algo.mini_batches ({parts})"
                )
            micro = self.algo.micro_batch_size
            if micro and (batch // parts) % micro:
                raise ValueError(
                    f"algo.micro_batch_size: {micro} does not divide the {batch // parts}-row mini-batch of each {role} rank"
                )
        rollout = self.resources.rollout
        if (
            self.sync.method == "broadcast"
            and rollout.colocate_with == "actor"
            and self.resources.bundle_of("actor").get("GPU", 0) > 0
        ):
            raise ValueError(
                "sync.method: broadcast joins the engines to the actor's rank 0 in an nccl group, which needs them on "
                "GPUs of their own; with resources.rollout.colocate_with: actor use sync.method: object_store"
            )
        if batch % self.resources.reference.replicas:
            raise ValueError(
                f"prompts_per_step x samples_per_prompt ({batch}) must split evenly over reference.replicas"
            )
        return self


class PPOJob(PPOSettings):
    """`hrlaif ppo` / `python -m cluster.ppo`: PPO on Ray."""

    model_keys: ClassVar[tuple[str, ...]] = ("policy", "critic_init", "reward.rm")

    policy: str = Field(description="The SFT policy folder (actor, reference and rollout start from it).")
    output_dir: str = Field(description="metrics.jsonl, TensorBoard events, checkpoints.")
    prompts: str | None = Field(None, description="Prompts Parquet; None: the generated mix below.")
    seed: int = Field(0, description="Seed of the prompt order, the sampling and the learners.")

    def critic_start(self) -> str:
        """The critic's starting folder: critic_init, else a scalar RM (its head reads values already), else the
        policy (an implicit RM has no scalar head to start from)."""
        from hrlaif_ray.config.base import implicit_rm_meta

        scalar_rm = self.reward.rm and implicit_rm_meta(self.reward.rm) is None
        return self.critic_init or (self.reward.rm if scalar_rm else None) or self.policy
