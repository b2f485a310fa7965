"""Labeling's config: the judges (endpoints, tiers, prices), how labels are made, the labeler pool, and the jobs
that label (`hrlaif label`) and revise (`hrlaif revise`); the simulated judge's behaviour (`hrlaif serve-judge`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from hrlaif_ray.config.base import Section, variant


class JudgeEndpoint(Section):
    """One model behind an OpenAI-compatible endpoint (OpenAI itself, vLLM, the simulated judge)."""

    base_url: str = Field("http://127.0.0.1:8000/v1", description="OpenAI-compatible base URL.")
    model: str = Field("gpt-3.5-turbo", description="Model name sent with every request; also the price key.")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the key (never the key).")
    timeout_s: float = Field(60.0, gt=0, description="Seconds one HTTP attempt may take (the SDK's `timeout`).")
    max_retries: int = Field(6, ge=0, description="SDK retries on 408/409/429/5xx/timeouts/connection errors.")
    max_reasks: int = Field(2, ge=0, description="Re-asks when the answer is not the JSON the task wants.")
    max_tokens: int = Field(512, gt=0, description="Answer length cap.")
    json_mode: Literal["object", "schema", "off"] = Field(
        "object",
        description="response_format: 'object' (json_object: gpt-3.5/gpt-4), 'schema' (a JSON schema per "
        "task: vLLM structured outputs, newer OpenAI models), 'off' (servers without it).",
    )
    max_connections: int = Field(64, gt=0, description="HTTP connection pool size per labeler actor.")
    http_backend: Literal["aiohttp", "httpx"] = Field(
        "aiohttp",
        description="httpx transport: 'aiohttp' (the SDK's DefaultAioHttpClient, less CPU a call; see "
        "benchmarks/labeler_pool.py) or 'httpx' (httpcore).",
    )


class Price(Section):
    input_per_m: float = Field(ge=0, description="USD per million input tokens.")
    output_per_m: float = Field(ge=0, description="USD per million output tokens.")

    def cost(self, tokens_in: int, tokens_out: int) -> float:
        return (tokens_in * self.input_per_m + tokens_out * self.output_per_m) / 1e6


def _default_prices() -> dict[str, Price]:
    # Historical list prices (USD per million tokens).
    return {"gpt-3.5-turbo": Price(input_per_m=0.5, output_per_m=1.5), "gpt-4": Price(input_per_m=30, output_per_m=60)}


class JudgeTier(Section):
    """One tier of tiered judging: a judge (or an ensemble) and when its answer counts as unsure."""

    judges: list[JudgeEndpoint] = Field(min_length=1, description="The tier's judge; several make an ensemble.")
    min_confidence: float = Field(
        0.0,
        ge=0,
        le=1,
        description="An answer stating a lower confidence (0-1) escalates to the next tier (0: confidence never does).",
    )


RewriterEndpoint = variant(
    JudgeEndpoint, "RewriterEndpoint", "The stronger model that rewrites harmful responses.", model="gpt-4"
)


class HumanOverrides(Section):
    """Whether people's decisions on disputed labels (`hrlaif review`) replace the AI's pairs they decided."""

    human_overrides: bool = Field(
        True,
        description="Take a person's decision over the AI's pair where one exists (the majority of the reviewers "
        "who decided it; `hrlaif review` commits them to <labels_dir>/human): A or B states that pair as a 'human' "
        "pair, a tie drops it; counted in the label-quality report. False: the AI labels as they are.",
    )


class LabelingConfig(HumanOverrides):
    """How labels are made (`hrlaif label`)."""

    method: Literal["hybrid", "basic", "oracle"] = Field(
        "hybrid",
        description="'hybrid': route by category (HRLAIF); 'basic': the judge ranks every prompt (RLAIF); "
        "'oracle': labels from the ground truth (verified correct or a refusal above the rest; no judge call), the "
        "demo's ceiling and its control without the judge's bias.",
    )
    judges: list[JudgeEndpoint] = Field(
        default_factory=lambda: [JudgeEndpoint()],
        min_length=1,
        description="The AI judge; several make an ensemble (majority vote).",
    )
    rewriter: RewriterEndpoint = Field(
        default_factory=RewriterEndpoint,
        description="The stronger model that rewrites harmful responses.",
    )
    ranking: Literal["listwise", "pairwise"] = Field("listwise", description="How the judge orders responses.")
    both_orders: bool = Field(True, description="Judge every ranking/pair in both orders; disagreements become ties.")
    min_agreement: float = Field(0.5, gt=0, le=1, description="Ensemble: share of judges that must state a pair.")
    within_set_weight: float = Field(1.0, ge=0, description="Weight of judge pairs inside the correct/wrong sets.")
    code_timeout_s: float = Field(10.0, gt=0, description="Seconds a code response's tests may run in the sandbox.")
    classify_unknown: bool = Field(True, description="Ask the judge for the category of prompts without one.")
    constitution: str | None = Field(
        None,
        description="Principles YAML (`hrlaif_ray/labeling/constitution.py`; the default set: "
        "cluster/configs/constitution.yaml) that the flag, rank, compare and rewrite prompts cite, those of the "
        "prompt's category; a flag names the principles a response breaks. Its content hash joins the template "
        "version (v2+c<hash>) and the idempotency key. A relative path not found here is read from the checkout. "
        "None: no principles, the prompts as they are.",
    )
    prices: dict[str, Price] = Field(default_factory=_default_prices, description="USD per million tokens by model.")
    tiers: list[JudgeTier] = Field(
        default_factory=list,
        description="Tiered judging, cheapest first (replaces `judges`): every judge task goes to the first tier and "
        "escalates to the next when the answer is unsure: the two presentation orders disagree, the ensemble falls "
        "below min_agreement, the answer fails after its retries and re-asks, or its confidence is below the tier's "
        "min_confidence. Each pair and verdict records its tier. Empty: `judges` is the one tier.",
    )
    review_confidence: float = Field(
        0.5,
        ge=0,
        le=1,
        description="A pair whose deciding answer states a confidence below this goes on the review queue "
        "(`hrlaif review`), as do pairs whose presentation orders disagreed, whose ensemble split, or whose response "
        "the verifier could not read (the judge decided it). 0: confidence never does.",
    )
    detect_injection: bool = Field(
        True,
        description="Run the prompt-injection detector (`hrlaif_ray/labeling/injection.py`) on every response: one "
        "that addresses the judge (an instruction, a fake verdict, a closing tag, a note to the grader, a bare master "
        "key) puts its pairs on the review queue and counts in the quality report's `injection_flags`.",
    )
    cache: bool = Field(
        True,
        description="Consult the judge cache before asking (and fill it): the same question (task, template version, "
        "model, material) is asked once. False: every question goes to the judge.",
    )
    cache_dir: str | None = Field(
        None,
        description="Folder of the judge cache (SQLite), shared by every run and arm that names it. None: the label "
        "job's own cache in <output_dir>/judge-cache (a resume or a rerun with a higher budget asks nothing twice). A "
        "judge whose answers should be drawn afresh (another seed, another server behind the same model name) needs "
        "another folder.",
    )

    def with_own_cache(self, folder: str | Path) -> LabelingConfig:
        """This config with `cache_dir` defaulted to `<folder>/judge-cache` (a ledger's own cache) when caching is on
        and no folder is named."""
        if not self.cache or self.cache_dir is not None:
            return self
        return self.model_copy(update={"cache_dir": str(Path(folder) / "judge-cache")})

    @property
    def tier_list(self) -> list[JudgeTier]:
        """The tiers that judge, cheapest first (`judges` as the one tier when `tiers` is empty)."""
        return self.tiers or [JudgeTier(judges=self.judges)]


class AutoscaleConfig(Section):
    """How the labeler pool sizes itself (`hrlaif_ray.labeling.autoscale`)."""

    min: int = Field(1, ge=1, description="Fewest labeler actors.")
    max: int = Field(8, ge=1, description="Most labeler actors.")
    target_inflight_per_actor: int | None = Field(
        None,
        ge=1,
        description="Labels each actor should have at the judge (None: the pool's concurrency). The pool wants "
        "enough actors for the labels in flight that keep up with the rate limit at the measured latency (Little's "
        "law), or for the whole backlog when there is no rate limit.",
    )
    interval_s: float = Field(1.0, gt=0, description="Seconds between sizing decisions.")
    standby: int = Field(
        0,
        ge=0,
        description="Actors kept started and idle beyond the active ones (within max), so the pool grows without "
        "waiting for processes to start (a Python process with Ray each); each costs an idle "
        "process's memory.",
    )
    max_429_share: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Shrink by one actor when more than this share of the last interval's attempts were answered 429.",
    )

    @model_validator(mode="after")
    def _bounds(self) -> AutoscaleConfig:
        if self.min > self.max:
            raise ValueError(f"autoscale.min ({self.min}) is above autoscale.max ({self.max})")
        return self


class PoolConfig(Section):
    """The labeler pool: Ray actors, each with bounded async concurrency, sharing one rate limit."""

    labelers: int = Field(2, ge=1, description="Number of labeler actors (can change while a job runs).")
    concurrency: int = Field(8, ge=1, description="Labels in flight per actor.")
    rpm: float | None = Field(None, gt=0, description="Requests per minute for the whole pool (None: no limit).")
    tpm: float | None = Field(None, gt=0, description="Tokens per minute for the whole pool (None: no limit).")
    shard_size: int = Field(64, ge=1, description="Labels per committed Parquet shard.")
    commit_interval_s: float = Field(5.0, gt=0, description="Commit a partial shard at least this often.")
    num_cpus_per_labeler: float = Field(0.25, gt=0, description="Ray CPUs per labeler actor (they mostly wait).")
    call_timeout_s: float = Field(
        1800,
        gt=0,
        description="The longest the driver waits on one call to the labelers (their start, a batch of judge "
        "questions); past it the call fails naming the labeler and its node.",
    )
    spread: bool = Field(
        False,
        description="Spread the labeler actors over the cluster's nodes (Ray's SPREAD), so one node's loss takes "
        "a share of them (their work is requeued and they are replaced, on the nodes left); off: Ray's default.",
    )
    autoscale: AutoscaleConfig | None = Field(
        None, description="Let the pool size itself between min and max actors while it runs (None: `labelers`)."
    )


EvalPool = variant(
    PoolConfig, "EvalPool", "The evaluation's labeler pool (harm flags, comparisons).", labelers=1, concurrency=32
)
OnlinePool = variant(
    PoolConfig,
    "OnlinePool",
    "The labeler pool PPO labels through during its steps (shards committed every second).",
    commit_interval_s=1.0,
)


class LabelSettings(Section):
    """`hrlaif label`'s settings: everything but its files (a pipeline's `label` section)."""

    labeling: LabelingConfig = Field(
        default_factory=LabelingConfig, description="How labels are made: method, judges, rewriter, ranking."
    )
    pool: PoolConfig = Field(
        default_factory=PoolConfig, description="The labeler pool: actors, concurrency, rate limits, shards."
    )
    retry_failed: bool = Field(False, description="Re-request labels committed as failed.")
    limit: int = Field(0, ge=0, description="Label only the first N items (0: all).")
    budget_usd: float | None = Field(
        None,
        gt=0,
        description="Stop before the run's judge spend (USD at `labeling.prices`, labels in flight counted at the "
        "dearest label so far) would pass this; what is labeled is committed, and a rerun with a higher cap "
        "continues. None: no cap.",
    )
    budget_tokens: int | None = Field(
        None, gt=0, description="The same cap in judge tokens (input + output) for this run. None: no cap."
    )


class LabelJob(LabelSettings):
    """`hrlaif label`: prompts + K responses in, labels out."""

    prompts: str = Field(description="Prompts Parquet (standard answers, choices, tests).")
    rollouts: str = Field(description="Rollouts Parquet: K responses per prompt.")
    output_dir: str = Field(description="Folder of committed label shards (the ledger).")


ReviseLabeling = variant(
    LabelingConfig,
    "ReviseLabeling",
    "Labeling for `hrlaif revise`: the default constitution cited.",
    constitution="cluster/configs/constitution.yaml",
)


class ReviseJob(Section):
    """`hrlaif revise`: Constitutional AI's supervised phase: critique and revise the policy's harmful responses."""

    prompts: str = Field(description="Prompts Parquet the rollouts refer to (their categories and texts).")
    rollouts: str = Field(description="Rollouts Parquet: the policy's responses; those to harmful prompts are read.")
    output: str = Field(
        description='JSONL of SFT rows {"id", "category", "prompt", "response", "prompt_id", "response_index", '
        '"principles", "critique", "original", "template_version"} (`hrlaif sft data=` reads prompt and response); '
        "rewritten atomically after each chunk, a rerun skips the rows it holds."
    )
    labeling: ReviseLabeling = Field(
        default_factory=ReviseLabeling,
        description="The judge that critiques (judges), the rewriter that revises, the principles (constitution, "
        "required) and the prices.",
    )
    pool: PoolConfig = Field(
        default_factory=PoolConfig, description="The labeler pool the critiques and revisions go through."
    )
    responses_per_prompt: int = Field(
        1, ge=0, description="Responses of each harmful prompt to critique and revise, the first N (0: all)."
    )
    keep_unbroken: bool = Field(
        True,
        description="Write a response whose critique names no principle as it is (its revision would be itself: "
        "the SFT set keeps every harmful prompt, as Constitutional AI's does). False: leave it out.",
    )
    chunk: int = Field(256, ge=1, description="Responses per round of critiques and revisions (written after each).")
    limit: int = Field(0, ge=0, description="Only the first N harmful prompts (0: all).")

    @model_validator(mode="after")
    def _needs_principles(self) -> ReviseJob:
        if not self.labeling.constitution:
            raise ValueError("labeling.constitution: revise critiques against principles; give a principles YAML")
        return self


class SimJudgeConfig(Section):
    """Behaviour and faults of the simulated judge (`hrlaif serve-judge`)."""

    seed: int = Field(0, description="Keys every random draw together with the request hash.")
    length_bias: float = Field(1.0, description="Weight of detail (min(sentences, 4) / 4) in the judge's score.")
    p_check: float = Field(0.2, ge=0, le=1, description="Probability the judge checks correctness on a request.")
    correctness_weight: float = Field(1.0, description="Score of a correct (+) or wrong (-) answer when checked.")
    position_bias: float = Field(0.0, ge=0, le=1, description="Probability a comparison answers A regardless.")
    p_flag_miss: float = Field(0.0, ge=0, le=1, description="Probability a harm verdict is flipped.")
    principle_prefix: str = Field(
        "",
        description="With a constitution cited, a harmful flag or critique names the principles given whose id "
        "starts with this ('': every principle given; 'harmless-': the default constitution's harmlessness ones).",
    )
    confidence: float = Field(0.9, ge=0, le=1, description="Confidence it states on compare, rank, match and flag.")
    confidence_low: float = Field(0.3, ge=0, le=1, description="Confidence it states when it signals doubt.")
    calibration: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Probability that an answer which is not what checking correctness would have given (a missed "
        "check, a position-biased pick, a missed harm flag) states `confidence_low`: how well its stated confidence "
        "tracks its mistakes (what tiered judging escalates on). 0: never; 1: a perfectly calibrated judge.",
    )
    p_false_alarm: float = Field(
        0.0, ge=0, le=1, description="Probability that any other answer states `confidence_low`."
    )
    latency_ms: float = Field(0.0, ge=0, description="Added latency of every answer.")
    latency_step_after: int | None = Field(
        None, ge=0, description="After this many requests the latency becomes `latency_step_ms` (None: never)."
    )
    latency_step_ms: float = Field(0.0, ge=0, description="The latency after the step.")
    answer_key: str | None = Field(None, description="Prompts Parquet whose standard answers the judge may check.")
    # Faults, drawn per (request, attempt): the SDK's retry count and the labeler's re-ask number.
    p_429: float = Field(0.0, ge=0, le=1, description="Rate-limit answers (429 with Retry-After).")
    p_500: float = Field(0.0, ge=0, le=1, description="Server errors.")
    p_timeout: float = Field(0.0, ge=0, le=1, description="Answers held back for timeout_s (the client gives up).")
    p_drop: float = Field(0.0, ge=0, le=1, description="Connections dropped mid-answer.")
    p_malformed: float = Field(0.0, ge=0, le=1, description="Answers that are not JSON.")
    p_truncated: float = Field(0.0, ge=0, le=1, description="JSON answers cut off (finish_reason 'length').")
    retry_after_s: float = Field(0.05, ge=0, description="Retry-After of a 429.")
    timeout_s: float = Field(30.0, ge=0, description="How long a 'timeout' fault holds the answer.")
    max_faulty_attempts: int = Field(3, ge=0, description="Attempts after this many always succeed.")
