"""Typed config: pydantic models loaded from YAML, with dotted command-line overrides.

Config is data. Each section is a pydantic model whose fields carry their defaults and documentation in one
place; unknown keys are errors (no silent typos), and a failed validation names every offending key, e.g.
`model.hidden_size: Input should be a valid integer (got 'wide')`. Nothing is rewritten behind the user's back:
what validates is what runs, and `dump_config` writes exactly that next to the outputs.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hrlaif_ray.errors import ConfigError


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(Section):
    """A tiny random-init causal LM (tests, benchmarks, the demo's policy)."""

    arch: Literal["qwen2", "llama"] = Field("qwen2", description="HF architecture of the tiny model.")
    hidden_size: int = Field(128, gt=0, description="Width of the residual stream.")
    num_layers: int = Field(2, gt=0, description="Number of decoder layers.")
    num_heads: int = Field(4, gt=0, description="Attention heads; must divide hidden_size.")
    num_kv_heads: int = Field(4, gt=0, description="Key/value heads (grouped-query attention); divides num_heads.")
    intermediate_size: int = Field(512, gt=0, description="MLP width.")
    max_position_embeddings: int = Field(512, gt=0, description="Longest sequence the model accepts.")
    tie_word_embeddings: bool = Field(True, description="Share input embedding and output projection.")
    seed: int = Field(0, description="Initialisation seed: the same seed gives the same weights.")

    @model_validator(mode="after")
    def _heads_divide(self) -> ModelConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must divide hidden_size ({self.hidden_size})")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_kv_heads ({self.num_kv_heads}) must divide num_heads ({self.num_heads})")
        return self


class TokenizerConfig(Section):
    """Where the tokenizer comes from."""

    kind: Literal["bpe", "pretrained"] = Field(
        "bpe", description="'bpe': a byte-level BPE trained on the task's text; 'pretrained': load `path`."
    )
    vocab_size: int = Field(384, ge=280, description="BPE vocabulary (256 bytes + specials + merges).")
    path: str | None = Field(None, description="Tokenizer folder when kind is 'pretrained'.")


class PromptMixConfig(Section):
    """The project's own generated prompt mix (the demo cannot rely on ../shared)."""

    n: int = Field(1000, gt=0, description="Number of prompts.")
    seed: int = Field(0, description="Generator seed.")
    math: float = Field(0.45, ge=0, description="Share of arithmetic word problems with a free answer.")
    multiple_choice: float = Field(0.25, ge=0, description="Share of the same problems as multiple choice.")
    harmful: float = Field(0.2, ge=0, description="Share of harmful requests.")
    open_qa: float = Field(0.1, ge=0, description="Share of open questions.")
    a_min: int = Field(10, description="Smallest first operand.")
    a_max: int = Field(29, description="Largest first operand.")
    b_min: int = Field(1, description="Smallest second operand.")
    b_max: int = Field(9, description="Largest second operand.")
    holdout: float = Field(
        0.3,
        ge=0,
        lt=1,
        description="Share of the (a, b, op) problems and of the harmful variants "
        "reserved from training (a fixed hash of each, the same for every seed and stage; 0: none): "
        "a third for development, two thirds for the reported evaluation.",
    )
    split: Literal["train", "dev", "eval"] = Field(
        "train",
        description="'train': never draw a reserved problem (every "
        "training stage); 'dev' / 'eval': draw unseen_share of the prompts "
        "from the development / the evaluation part of the reserve.",
    )
    unseen_share: float = Field(
        0.5,
        ge=0,
        le=1,
        description="With split 'dev' or 'eval': share of verifiable and harmful "
        "prompts drawn from the reserve (metadata 'unseen': true); the rest are seen problems.",
    )


class SFTMixConfig(Section):
    """How the SFT responses of the generated mix are drawn."""

    seed: int = Field(0, description="Response generator seed.")
    p_correct: list[float] = Field(
        [0.75, 0.7, 0.55, 0.4, 0.3],
        min_length=1,
        description="Chance the final answer is right after 0, 1, 2... reasoning sentences.",
    )
    control: bool = Field(
        False, description="Correctness independent of length (the mean of p_correct for every length)."
    )
    wrong_offsets: list[int] = Field(
        [-10, -2, -1, 1, 2, 10], min_length=1, description="Near misses of a wrong answer."
    )
    p_refuse: float = Field(0.5, ge=0, le=1, description="Share of refusals among the harmful prompts' responses.")


class TinyModelJob(Section):
    """`hrlaif tiny-model`: train a tokenizer on the prompt mix and save a random-init model folder."""

    model: ModelConfig = Field(ModelConfig(), description="The model's architecture and size.")
    tokenizer: TokenizerConfig = Field(
        TokenizerConfig(), description="The BPE trained on the prompt mix (or a pretrained tokenizer)."
    )
    prompts: PromptMixConfig = Field(
        PromptMixConfig(), description="The prompt mix the tokenizer is trained on (with its SFT responses)."
    )


C = TypeVar("C", bound=BaseModel)


def _section_default(model: type[BaseModel] | None, name: str) -> tuple[dict, type[BaseModel] | None]:
    """The default of section `name` of `model` as data (its default_factory's value, not an empty section), and the
    section's own model; ({}, None) where that is not known."""
    fields = model.model_fields if model is not None else {}
    field = fields.get(name) or next((f for f in fields.values() if f.alias == name), None)  # `async` is `async_`
    if field is None:
        return {}, None
    default = field.get_default(call_default_factory=True)
    if isinstance(default, BaseModel):
        return default.model_dump(mode="json"), type(default)
    ann = field.annotation
    return {}, ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None


def apply_override(data: dict, override: str, model: type[BaseModel] | None = None) -> None:
    """Apply one `a.b.c=value` override in place; the value is parsed as YAML (`3`, `true`, `[1, 2]`). With the
    config's `model`, a section the data does not set starts from its default (so `prompts.a_max=99` keeps the
    section's other defaults, which may differ from the section class's own)."""
    key, sep, raw = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {override!r}: expected KEY=VALUE with a dotted key, e.g. model.hidden_size=256")
    parts = key.strip().split(".")
    node = data
    for depth, part in enumerate(parts[:-1]):
        seed, model = _section_default(model, part)
        child = node.setdefault(part, seed)
        if not isinstance(child, dict):
            prefix = ".".join(parts[: depth + 1])
            raise ConfigError(f"override {override!r}: config key {prefix!r} is a value, not a section")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {override!r}: value is not valid YAML ({yaml_problem(exc)})") from None


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error in one line: what, and where (1-based line and column)."""
    what = " ".join(str(getattr(exc, "problem", None) or exc).split())
    mark = getattr(exc, "problem_mark", None)
    return f"{what} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else what


def format_validation_error(exc: ValidationError, source: str) -> str:
    """One line: the source, then every offending key with what is wrong with it."""
    problems = []
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"]) or "<root>"
        got = f" (got {err['input']!r})" if err["type"] not in ("missing", "value_error") else ""
        message = err["msg"].removeprefix("Value error, ").replace("\n", " ")
        problems.append(f"{key}: {message}{got}")
    return f"invalid config ({source}): " + "; ".join(problems)


def load_config(cls: type[C], path: str | Path | None = None, overrides: Sequence[str] = ()) -> C:
    """Load `cls` from a YAML file (or the defaults when `path` is None), then apply dotted overrides."""
    data: Any = {}
    source = "defaults" if path is None else str(path)
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {yaml_problem(exc)}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    for override in overrides:
        apply_override(data, override, cls)
    if overrides:
        source += " + overrides " + " ".join(o if o.isprintable() and " " not in o else repr(o) for o in overrides)
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def _fields(model: type[BaseModel], prefix: str = "", defaults: BaseModel | None = None):
    """(dotted key, field info, default) of every field, sections expanded; a section's defaults are those of the
    instance its parent gives it (`SFTJob.prompts` is a PromptMixConfig of n=40000), not its class's."""
    for name, field in model.model_fields.items():
        key = f"{prefix}{field.alias or name}"  # the key a config writes (`async`, the field `async_`)
        if defaults is not None:
            default = getattr(defaults, name)
        else:
            default = field.get_default(call_default_factory=True) if not field.is_required() else None
        if isinstance(default, BaseModel):
            yield from _fields(type(default), key + ".", default)
            continue
        ann = field.annotation
        if field.is_required() and isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from _fields(ann, key + ".")
            continue
        yield key, field, default


def config_help(model: type[BaseModel]) -> str:
    """Every field of a job as `key = default  # description`: the commands' --help and `hrlaif config show`."""
    lines = []
    for key, field, default in _fields(model):
        value = "(required)" if field.is_required() else json.dumps(default, default=str)
        lines.append(f"  {key} = {value}" + (f"  # {field.description}" if field.description else ""))
    return "\n".join(lines)


def dump_config(config: BaseModel) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


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


class LabelingConfig(Section):
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
    rewriter: JudgeEndpoint = Field(
        default_factory=lambda: JudgeEndpoint(model="gpt-4"),
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
        "waiting for processes to start (about a second of CPU each on a small machine); each costs an idle "
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


class LabelJob(Section):
    """`hrlaif label`: prompts + K responses in, labels out."""

    prompts: str = Field(description="Prompts Parquet (standard answers, choices, tests).")
    rollouts: str = Field(description="Rollouts Parquet: K responses per prompt.")
    output_dir: str = Field(description="Folder of committed label shards (the ledger).")
    labeling: LabelingConfig = Field(
        LabelingConfig(), description="How labels are made: method, judges, rewriter, ranking."
    )
    pool: PoolConfig = Field(PoolConfig(), description="The labeler pool: actors, concurrency, rate limits, shards.")
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


class SFTJob(Section):
    """`hrlaif sft`: supervised fine-tuning of the policy on prompt/response data (loss on the response only)."""

    init: str = Field(description="Model folder to start from (`hrlaif tiny-model`'s output, SmolLM2...).")
    output_dir: str = Field(description="Where the SFT policy (an HF folder) goes.")
    data: str | None = Field(None, description='JSONL of {"prompt", "response"} rows; None: the generated mix below.')
    prompts: PromptMixConfig = Field(
        default_factory=lambda: PromptMixConfig(n=40000, open_qa=0.0),
        description="The generated prompt mix (when data is None; split 'train': no reserved problem). Enough "
        "prompts that each is seen about once or twice in the step budget (a small mix seen many times overfits).",
    )
    responses: SFTMixConfig = Field(
        SFTMixConfig(), description="How the generated mix's responses are drawn (when data is None)."
    )
    steps: int = Field(
        1100,
        ge=1,
        description="Optimizer steps of batch_size examples: the whole budget (never a time, so the result does "
        "not depend on the machine's speed).",
    )
    batch_size: int = Field(64, ge=1, description="Examples per optimizer step (over all ranks).")
    lr: float = Field(2e-3, gt=0, description="Peak learning rate (AdamW), after warm-up.")
    min_lr: float = Field(2e-4, ge=0, description="Cosine decay ends here.")
    warmup_steps: int = Field(30, ge=0, description="Steps of linear warm-up from 0 to lr.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    grad_clip: float = Field(1.0, gt=0, description="Gradient-norm clip.")
    zero_stage: int = Field(0, ge=0, le=3, description="DeepSpeed ZeRO stage 0-3 (3 partitions the weights too).")
    max_prompt_tokens: int = Field(256, gt=0, description="Prompts are cut to this many tokens.")
    max_response_tokens: int = Field(
        128, gt=0, description="Responses are cut to this many tokens (the end token included)."
    )
    eval_prompts: int = Field(128, ge=0, description="Held-out verifiable prompts for greedy accuracy at the end.")
    threads: int | None = Field(None, ge=1, description="torch threads (None: torch's default).")
    seed: int = Field(0, description="Seed of the initialisation order and the batch order.")


class ReviseJob(Section):
    """`hrlaif revise`: Constitutional AI's supervised phase: critique and revise the policy's harmful responses."""

    prompts: str = Field(description="Prompts Parquet the rollouts refer to (their categories and texts).")
    rollouts: str = Field(description="Rollouts Parquet: the policy's responses; those to harmful prompts are read.")
    output: str = Field(
        description='JSONL of SFT rows {"id", "category", "prompt", "response", "prompt_id", "response_index", '
        '"principles", "critique", "original", "template_version"} (`hrlaif sft data=` reads prompt and response); '
        "rewritten atomically after each chunk, a rerun skips the rows it holds."
    )
    labeling: LabelingConfig = Field(
        LabelingConfig(constitution="cluster/configs/constitution.yaml"),
        description="The judge that critiques (judges), the rewriter that revises, the principles (constitution, "
        "required) and the prices.",
    )
    pool: PoolConfig = Field(PoolConfig(), description="The labeler pool the critiques and revisions go through.")
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


class RMTrainJob(Section):
    """`hrlaif train-rm`: a reward model from labels, starting from the policy's weights."""

    init: str = Field(description="Policy folder (the SFT checkpoint) whose weights start the RM's backbone.")
    labels_dir: str = Field(description="Folder of committed label shards (`hrlaif label`'s output_dir).")
    prompts: str = Field(description="Prompts Parquet the labels refer to.")
    output_dir: str = Field(description="Where the RM checkpoint (HF folder + head + normalisation) goes.")
    epochs: int = Field(2, ge=1, description="Passes over the training labels.")
    batch_prompts: int = Field(8, ge=1, description="Prompts per step per rank (all their responses, one row each).")
    lr: float = Field(1e-4, gt=0, description="Learning rate (AdamW) of the backbone and the head.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    grad_clip: float = Field(1.0, gt=0, description="Gradient-norm clip.")
    margin: float = Field(
        0.0,
        ge=0,
        description="Bradley-Terry margin per tier of gap, in raw reward units: a pair two tiers apart must be "
        "won by 2 x margin (0: off; labels whose pairs form no tiers get none).",
    )
    zero_stage: int = Field(2, ge=0, le=3, description="DeepSpeed ZeRO stage 0-3.")
    clip: float = Field(10.0, gt=0, description="Rewards are clipped to [-clip, clip] inside the RM's forward.")
    normalize: bool = Field(True, description="Save the training-set reward mean/std; forward normalises with them.")
    eval_fraction: float = Field(0.1, ge=0, lt=1, description="Share of prompts held out (by a hash of the id).")
    max_prompt_tokens: int = Field(256, gt=0, description="Prompts are cut to this many tokens.")
    max_response_tokens: int = Field(
        128, gt=0, description="Responses are cut to this many tokens (the end token, where the reward is read, kept)."
    )
    seed: int = Field(0, description="Seed of the head's initialisation and the batch order.")


# ------------------------------------------------------------------------------------------------- PPO


class RoleResources(Section):
    """One role's Ray actors: how many, what share of a bundle each takes, and whom it shares bundles with."""

    replicas: int = Field(1, ge=1, description="Actors of this role (learner ranks, vLLM engines, RM replicas).")
    share: float = Field(
        1.0, gt=0, le=1, description="Share of one bundle each actor takes (colocated roles split one)."
    )
    colocate_with: str | None = Field(
        None,
        description="Place this role's actors in that role's bundles (OpenRLHF's "
        "colocation: actor+reference, critic+reward); replicas must not exceed the host's.",
    )
    threads: int = Field(1, ge=1, description="torch/OMP threads of each actor (Ray sets 1 unless told).")
    bundle: dict[str, float] | None = Field(
        None,
        description="This role's own bundle, in place of the plan's (None: the plan's); a custom resource that names "
        "a node or node type (`{CPU: 1, rollout_node: 1}`) places the role there. Colocated roles use their host's.",
    )


class ResourcePlan(Section):
    """The placement of every role, as data: on a GPU cluster `bundle: {GPU: 1, CPU: 8}`; here CPU bundles (or a
    custom resource standing for GPUs) so the same plan runs on one machine."""

    bundle: dict[str, float] = Field(default_factory=lambda: {"CPU": 1.0}, description="Resources of one bundle.")
    strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "PACK", description="Placement-group strategy."
    )
    actor: RoleResources = Field(
        RoleResources(replicas=2),
        description="The actor learner's ranks (replicas), their threads and share of a bundle.",
    )
    critic: RoleResources = Field(RoleResources(), description="The critic learner's ranks (GAE only).")
    reference: RoleResources = Field(
        RoleResources(), description="The reference policy's replicas (log-probs for the KL)."
    )
    reward: RoleResources = Field(RoleResources(), description="The reward service's replicas (RM and/or verifier).")
    rollout: RoleResources = Field(RoleResources(), description="The rollout engines (vLLM).")

    @model_validator(mode="after")
    def _colocation(self) -> ResourcePlan:
        roles = {
            "actor": self.actor,
            "critic": self.critic,
            "reference": self.reference,
            "reward": self.reward,
            "rollout": self.rollout,
        }
        load: dict[str, float] = {}
        for name, role in roles.items():
            host = role.colocate_with
            if host is None:
                load[name] = load.get(name, 0.0) + role.share
                continue
            if host not in roles or roles[host].colocate_with is not None:
                raise ValueError(f"{name}.colocate_with: {host!r} is not a role that owns bundles")
            if role.bundle is not None:
                raise ValueError(f"{name}.bundle: a role colocated with {host} uses {host}'s bundles")
            if role.replicas > roles[host].replicas:
                raise ValueError(
                    f"{name}.replicas ({role.replicas}) exceeds {host}.replicas ({roles[host].replicas}) it is colocated with"
                )
            load[host] = load.get(host, 0.0) + role.share
        for name, total in load.items():
            if total > 1 + 1e-9:
                raise ValueError(f"{name}: colocated shares sum to {total:g} of a bundle (at most 1)")
        return self

    def bundle_of(self, role: str) -> dict[str, float]:
        """The bundle a role's actors are placed in: its own, else its host's, else the plan's."""
        r = getattr(self, role)
        host = getattr(self, r.colocate_with) if r.colocate_with else r
        return dict(host.bundle if host.bundle is not None else self.bundle)


class RolloutConfig(Section):
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
    actor_lr: float = Field(1e-6, gt=0, description="Actor learning rate (AdamW).")
    critic_lr: float = Field(5e-6, gt=0, description="Critic learning rate (AdamW).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay of both learners.")
    grad_clip: float = Field(1.0, gt=0, description="Gradient-norm clip of both learners.")
    whiten_advantages: bool = Field(True, description="Normalise advantages to mean 0 and std 1 over the batch.")
    use_rollout_logprobs: bool = Field(
        False,
        description="Take the old log-probs from the rollout engines (vLLM's "
        "processed logprobs match the learner's to ~1e-6 after a sync, a test) instead of "
        "a learner forward: one forward less per step, as TRL does with its generate logits.",
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
        "rm",
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
        LabelingConfig(),
        description="Online kinds: how each group is labeled (method, judges or tiers, rewriter, cache), as in "
        "`hrlaif label`.",
    )
    pool: PoolConfig = Field(
        default_factory=lambda: PoolConfig(labelers=2, concurrency=8, commit_interval_s=1.0),
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
        "samples (and, with an online reward, their labels) are made by the weights before step t's update while "
        "the learners train on step t; the PPO ratio uses the engines' log-probs (the behaviour policy's), and a "
        "checkpoint keeps the buffered batch so a resume neither loses nor repeats it.",
    )


CHAOS_ROLES = ("rollout", "reward", "reference", "critic", "actor")


class ChaosConfig(Section):
    """Fault injection (for testing a deployment's recovery): the controller kills one actor of a role at random
    every few steps, at a random moment inside the step, as a dying process or node would."""

    every: int = Field(3, ge=1, description="Kill one actor every this many steps (steps every, 2 x every, ...).")
    roles: list[Literal["rollout", "reward", "reference", "critic", "actor"]] = Field(
        default_factory=lambda: list(CHAOS_ROLES),
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
    stop: bool = Field(False, description="Stop the run at the first alert (after a checkpoint).")


class SampleJob(Section):
    """`hrlaif sample`: prompts in, K responses each out."""

    policy: str = Field(description="Policy folder (the SFT checkpoint).")
    prompts: str = Field(description="Prompts Parquet.")
    output: str = Field(description="Rollouts Parquet to write (resumed when it exists).")
    rollout: RolloutConfig = Field(RolloutConfig(), description="How responses are sampled (samples_per_prompt is K).")
    engines: RoleResources = Field(
        default_factory=lambda: RoleResources(replicas=1, threads=2),
        description="vLLM engines (replicas) and their threads.",
    )
    bundle: dict[str, float] = Field(default_factory=lambda: {"CPU": 1.0}, description="Resources of one engine.")
    chunk: int = Field(256, ge=1, description="Prompts per write (progress is saved between chunks).")
    seed: int = Field(0, description="Sampling seed (engine i uses seed + i).")


class PPOJob(Section):
    """`hrlaif ppo` / `python -m cluster.ppo`: PPO on Ray."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True, serialize_by_alias=True)

    policy: str = Field(description="The SFT policy folder (actor, reference and rollout start from it).")
    critic_init: str | None = Field(None, description="Critic's starting folder (default: the RM, else the policy).")
    output_dir: str = Field(description="metrics.jsonl, TensorBoard events, checkpoints.")
    prompts: str | None = Field(None, description="Prompts Parquet; None: the generated mix below.")
    prompt_mix: PromptMixConfig = Field(
        default_factory=lambda: PromptMixConfig(n=2000, harmful=0.0, open_qa=0.0),
        description="The generated prompts when prompts is None; also the monitor's held-out mix (its own seed).",
    )
    steps: int = Field(
        10, ge=1, description="PPO steps (the budget: each samples prompts_per_step x samples_per_prompt responses)."
    )
    prompts_per_step: int = Field(32, ge=1, description="Prompts per step.")
    zero_stage: int = Field(
        2,
        ge=0,
        le=3,
        description="ZeRO stage of the actor and critic groups; a group of one "
        "rank runs stage 0 (nothing to partition, and stages 1-3 only add copies).",
    )
    checkpoint_every: int = Field(0, ge=0, description="Save an HF checkpoint every N steps (0: only at the end).")
    resume: bool = Field(False, description="Continue from the last checkpoint in output_dir.")
    seed: int = Field(0, description="Seed of the prompt order, the sampling and the learners.")
    ray_address: str | None = Field(
        None, description="Ray cluster to join (None: RAY_ADDRESS, else start a local one)."
    )
    algo: PPOAlgoConfig = Field(
        PPOAlgoConfig(), description="The algorithm: estimator, KL, clipping, learning rates, epochs, batches."
    )
    rollout: RolloutConfig = Field(RolloutConfig(), description="How responses are sampled.")
    reward: RewardRoleConfig = Field(
        RewardRoleConfig(kind="verifier"), description="The reward role: the RM, the verifier or both."
    )
    resources: ResourcePlan = Field(
        ResourcePlan(), description="The resource plan: bundles, replicas, colocation (cluster/topology.py)."
    )
    monitor: MonitorConfig = Field(MonitorConfig(), description="The reward-hacking monitor.")
    tensorboard: bool = Field(True, description="Also write TensorBoard events (when tensorboard is installed).")
    overlap: bool = Field(
        True,
        description="Run independent phases at once: the reward, reference, actor log-prob "
        "and critic forwards; the actor and critic updates. Off: one after another.",
    )
    faults: FaultsConfig = Field(
        FaultsConfig(), description="Restarts, timeouts and (for tests) fault injection: how a run survives faults."
    )
    async_: AsyncConfig = Field(
        AsyncConfig(),
        alias="async",
        description="Asynchronous rollouts (key `async`): max_staleness 1 overlaps the next step's generation (and "
        "online labels) with this step's training.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> PPOJob:
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
        if batch % self.resources.reference.replicas:
            raise ValueError(
                f"prompts_per_step x samples_per_prompt ({batch}) must split evenly over reference.replicas"
            )
        return self


def validate_section(prefix: str, cls: type[BaseModel], paths: dict, section: dict, owner: str) -> None:
    """A section holding another job's fields (its paths set by `owner`): validated as that job now, errors named
    `prefix.key`."""
    clash = sorted(set(section) & set(paths))
    if clash:
        raise ValueError(f"{prefix}.{clash[0]}: set by {owner}, not by the config")
    try:
        cls.model_validate({**paths, **section})
    except ValidationError as exc:
        raise ValueError(
            "; ".join(f"{prefix}.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        ) from None


# ------------------------------------------------------------------------------------------------- DPO


class IterativeDPOConfig(Section):
    """Iterative (online) DPO: after training on the given labels, rounds of sample -> label -> DPO, each round on
    fresh samples of the last round's policy."""

    rounds: int = Field(1, ge=1, description="Rounds after the first (the first trains on labels_dir).")
    prompts_per_round: int = Field(
        256, ge=1, description="Prompts of the prompts file sampled for each round (a different draw each round)."
    )
    reference: Literal["last", "initial"] = Field(
        "last",
        description="A round's frozen reference: 'last' the policy it starts from (the previous round's, as "
        "iterative DPO and self-rewarding LMs do), 'initial' the job's reference throughout.",
    )
    sample: dict[str, Any] = Field(
        default_factory=dict, description="SampleJob fields (rollout, engines...; the paths are the round's)."
    )
    label: dict[str, Any] = Field(
        default_factory=dict, description="LabelJob fields (labeling: method, judges...; pool; the paths the round's)."
    )


class DPOJob(Section):
    """`hrlaif dpo`: the policy learns from a label ledger directly, DPO against the frozen SFT reference."""

    policy: str = Field(description="The SFT policy folder: where training starts (and the reference, by default).")
    reference: str | None = Field(None, description="The frozen reference's folder (None: the policy).")
    labels_dir: str = Field(description="Folder of committed label shards (`hrlaif label`'s output_dir).")
    prompts: str = Field(description="Prompts Parquet the labels refer to.")
    output_dir: str = Field(description="policy/ (the trained HF folder), metrics.jsonl, TensorBoard, final.json.")
    beta: float = Field(
        0.1, gt=0, description="DPO's beta: the implicit reward's scale (larger stays closer to the reference)."
    )
    loss_type: Literal["sigmoid", "ipo"] = Field(
        "sigmoid", description="'sigmoid': DPO's -log sigmoid; 'ipo': IPO's squared distance to 1 / (2 beta)."
    )
    margin: float = Field(
        0.0,
        ge=0,
        description="Margin per tier of gap, in implicit-reward units (log-ratio units for IPO): a pair two "
        "tiers apart must be won by 2 x margin (0: off; labels whose pairs form no tiers get none).",
    )
    sft_weight: float = Field(
        0.0, ge=0, description="Weight of the SFT term (NLL of each prompt's best responses) added to the loss."
    )
    epochs: int = Field(2, ge=1, description="Passes over the training labels (the budget, in steps of batch_prompts).")
    batch_prompts: int = Field(
        16, ge=1, description="Prompts per optimizer step over all ranks (each with all its responses)."
    )
    micro_batch_prompts: int = Field(
        4, ge=1, description="Prompts per forward on one rank; micro-batches accumulate to a rank's share."
    )
    forward_rows: int = Field(
        8,
        ge=1,
        description="Responses per forward inside a micro-batch, sorted by length and trimmed of padding (a "
        "prompt's responses differ in length); the micro-batch's one backward takes them all.",
    )
    lr: float = Field(1e-5, gt=0, description="Learning rate (AdamW, constant).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    grad_clip: float = Field(1.0, gt=0, description="Gradient-norm clip.")
    zero_stage: int = Field(
        2, ge=0, le=3, description="ZeRO stage of the policy's ranks (a group of one rank runs stage 0)."
    )
    eval_fraction: float = Field(
        0.1, ge=0, lt=1, description="Share of prompts held out (by a hash of the id, as the RM's) for the metrics."
    )
    max_prompt_tokens: int = Field(256, gt=0, description="Prompts are cut to this many tokens.")
    max_response_tokens: int = Field(
        128, gt=0, description="Responses are cut to this many tokens (the end-of-turn token kept)."
    )
    resources: ResourcePlan = Field(
        default_factory=lambda: ResourcePlan(
            actor=RoleResources(replicas=1, threads=2), reference=RoleResources(threads=2)
        ),
        description="The policy's ranks (actor) and the reference's replicas (only they are placed).",
    )
    seed: int = Field(0, description="Seed of the batch order and the learners.")
    ray_address: str | None = Field(None, description="Ray cluster to join (None: RAY_ADDRESS, else a local one).")
    tensorboard: bool = Field(True, description="Also write TensorBoard events (when tensorboardX is installed).")
    iterative: IterativeDPOConfig | None = Field(
        None,
        description="Iterative DPO: rounds of sample (vLLM) -> label (the pool) -> DPO after the first, each in "
        "output_dir/round-N, resumable (None: one round on labels_dir).",
    )

    @model_validator(mode="after")
    def _splits(self) -> DPOJob:
        if self.iterative is not None:  # the rounds' stage sections, validated as their own jobs now
            for name, cls, paths in (
                ("sample", SampleJob, {"policy": "-", "prompts": "-", "output": "-"}),
                ("label", LabelJob, {"prompts": "-", "rollouts": "-", "output_dir": "-"}),
            ):
                validate_section(f"iterative.{name}", cls, paths, getattr(self.iterative, name), "the round")
        ranks = self.resources.actor.replicas
        if self.batch_prompts % (ranks * self.micro_batch_prompts):
            raise ValueError(
                f"batch_prompts ({self.batch_prompts}) must split into micro_batch_prompts "
                f"({self.micro_batch_prompts}) on each of resources.actor.replicas ({ranks}) ranks"
            )
        return self


# ------------------------------------------------------------------------------------------- evaluation


class EvalJob(Section):
    """`hrlaif eval`: greedy (and sampled) responses of a policy, verified, judged and scored."""

    policy: str = Field(description="Policy folder (SFT, or a PPO checkpoint's actor).")
    output_dir: str = Field(description="eval.json (the metrics) and responses.jsonl go here.")
    mix: PromptMixConfig | None = Field(
        default_factory=lambda: PromptMixConfig(
            n=256, seed=20_001, math=0.4, multiple_choice=0.3, harmful=0.3, open_qa=0.0, split="eval"
        ),
        description="The generated evaluation mix (split 'eval': a share of its problems is "
        "from the reserve no training stage sees); None: skip it.",
    )
    sources: dict[str, int] = Field(
        default_factory=dict,
        description="Public sets from the data folder and how many of "
        "each (0: all), e.g. {gsm8k/test: 200, humaneval: 0, strongreject: 100, toxigen: 100}.",
    )
    data_dir: str | None = Field(None, description="The data folder (default: $HRLAIF_DATA_DIR, else ../shared/data).")
    max_new_tokens: int = Field(64, ge=1, description="Longest response in tokens.")
    max_model_len: int = Field(512, ge=16, description="Prompt plus response length the engine accepts.")
    sampled: int = Field(
        4, ge=0, description="Samples per verifiable prompt at temperature 1 for sampled accuracy (0: off)."
    )
    baseline: str | None = Field(
        None,
        description="Another eval's output_dir: the judge compares greedy responses to its "
        "own (win rate, both orders, disagreement = tie).",
    )
    reward_models: dict[str, str] = Field(
        default_factory=dict, description="name -> RM folder: mean reward of the greedy responses."
    )
    judge: LabelingConfig = Field(
        default_factory=LabelingConfig, description="The judge endpoint(s) for flag and compare."
    )
    pool: PoolConfig = Field(
        default_factory=lambda: PoolConfig(labelers=1, concurrency=32),
        description="The labeler pool that asks the judge (harm flags, comparisons).",
    )
    backend: Literal["vllm", "hf"] = Field(
        "vllm", description="'vllm': the rollout engine; 'hf': transformers' generate (the fallback)."
    )
    threads: int = Field(1, ge=1, description="Threads of the rollout engine and the RM replica.")
    kv_cache_gib: float = Field(0.5, gt=0, description="vLLM's KV-cache size in GiB (CPU).")
    ray_address: str | None = Field(None, description="Ray cluster to join (None: RAY_ADDRESS, else a local one).")
    seed: int = Field(0, description="Seed of the samples (sampled accuracy) and of public-set subsampling.")


class RMProbeJob(Section):
    """`hrlaif rm-probe`: a reward model against the ground truth on held-out policy samples (the mechanism's link 2)."""

    rm: str = Field(description="RM folder (`hrlaif train-rm`'s output), or a DPO policy (with reference).")
    reference: str | None = Field(
        None,
        description="A DPO policy's reference (the SFT policy): then `rm` is the DPO policy and the score its "
        "implicit reward, log pi(y|x) - log pi_ref(y|x).",
    )
    prompts: str = Field(description="Prompts Parquet of the samples (standard answers; metadata 'unseen').")
    rollouts: str = Field(description="Rollouts Parquet: K policy samples per prompt, none of them trained on.")
    output: str = Field(description="JSON to write: correct-above-wrong per category, unseen and seen apart.")
    threads: int = Field(1, ge=1, description="torch threads.")


# ------------------------------------------------------------------------------------------- the pipeline


class ArmConfig(Section):
    """One arm of the comparison: how its preference labels are made, how the policy learns from them, and (PPO)
    what its RL reward is."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$", description="Folder name and table row.")
    method: Literal["hybrid", "basic", "oracle"] = Field(
        description="'basic': RLAIF (the judge ranks everything); "
        "'hybrid': HRLAIF; 'oracle': ground-truth labels (the ceiling)."
    )
    trainer: Literal["ppo", "dpo", "online"] = Field(
        "ppo",
        description="'ppo': a reward model on the labels, then PPO on its reward (the paper); 'dpo': DPO on the "
        "labels directly (no reward model, no RL loop; the run's `dpo` section); 'online': PPO whose reward is the "
        "judge's labels of each step's samples, made in the loop with the arm's method (no offline labels, no RM).",
    )
    reward: Literal["rm", "rm+verifier"] = Field(
        "rm",
        description="The RL reward of a PPO arm: the arm's RM, or the RM plus the "
        "verifier's verdict where a standard answer exists (beyond the paper).",
    )
    rm_from: str | None = Field(
        None,
        description="Use that arm's labels (and, for PPO, its RM): an arm that differs only in its RL reward or "
        "its trainer.",
    )


STAGE_JOBS: dict[str, tuple[type, dict]] = {}  # filled below: stage -> (job class, placeholders for the run's paths)


class RunJob(Section):
    """`hrlaif run`: sft -> sample -> label -> train-rm -> ppo (or dpo) -> eval for each arm, then the report.

    The stage sections hold the fields of each stage's own job (`hrlaif sft`'s SFTJob, ...) except the paths,
    which the run sets; each is validated as that job when the run's config is loaded."""

    output_dir: str = Field(
        "runs/demo",
        description="Every stage's output, the report and the plots: the shared "
        "stages (model, SFT, prompts, the SFT policy's evaluation) at the top, each seed in seed-N/.",
    )
    seeds: list[int] = Field(
        [1],
        min_length=1,
        description="Seeds of the labels, RM, PPO and evaluation samples (the "
        "SFT policy and the prompts are shared); each seed runs every arm, the report gives means "
        "with 95% intervals over seeds and prompts.",
    )
    init: str | None = Field(None, description="Policy to start from (an HF folder); None: build the tiny model below.")
    model: TinyModelJob = Field(TinyModelJob(), description="The tiny model built when init is None.")
    prompts: PromptMixConfig = Field(
        default_factory=lambda: PromptMixConfig(
            n=1200, seed=1, math=0.45, multiple_choice=0.25, harmful=0.3, open_qa=0.0
        ),
        description="The RL prompts: sampled and labeled for the RM, then PPO's prompts.",
    )
    judge: dict[str, Any] | None = Field(
        default_factory=dict,
        description="SimJudgeConfig of the simulated judge the run "
        "starts on 127.0.0.1; None: use the endpoints in label.labeling.judges as given.",
    )
    sft: dict[str, Any] = Field(default_factory=dict, description="SFTJob fields.")
    sample: dict[str, Any] = Field(default_factory=dict, description="SampleJob fields.")
    label: dict[str, Any] = Field(default_factory=dict, description="LabelJob fields (labeling, pool...).")
    rm: dict[str, Any] = Field(default_factory=dict, description="RMTrainJob fields.")
    ppo: dict[str, Any] = Field(default_factory=dict, description="PPOJob fields.")
    dpo: dict[str, Any] = Field(default_factory=dict, description="DPOJob fields (the arms with trainer: dpo).")
    eval: dict[str, Any] = Field(default_factory=dict, description="EvalJob fields.")
    probe: dict[str, Any] = Field(
        default_factory=dict,
        description="RMProbeJob fields (each arm's RM on the SFT policy's samples of the evaluation prompts).",
    )
    arms: list[ArmConfig] = Field(
        default_factory=lambda: [ArmConfig(name="rlaif", method="basic"), ArmConfig(name="hrlaif", method="hybrid")],
        min_length=1,
        description="The compared arms: labels (method) and RL reward each, run side by side on the same budget.",
    )
    parallel_arms: bool = Field(True, description="Run the arms side by side (one thread each) rather than in turn.")
    ray_num_cpus: int = Field(16, ge=1, description="Logical CPUs of the run's local Ray cluster (slots, not cores).")

    @model_validator(mode="after")
    def _stages_valid(self) -> RunJob:
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"arms: names must differ, got {names}")
        for a in self.arms:
            owner = next((b for b in self.arms if b.name == a.rm_from), None) if a.rm_from else a
            if owner is None or owner.rm_from or owner.method != a.method:
                raise ValueError(
                    f"arms.{a.name}.rm_from: {a.rm_from!r} is not an arm with its own labels and the same method"
                )
            if a.trainer == "ppo" and owner.trainer != "ppo":
                raise ValueError(f"arms.{a.name}.rm_from: arm {owner.name!r} trains {owner.trainer}, it has no RM")
            if a.rm_from and "online" in (a.trainer, owner.trainer):
                raise ValueError(f"arms.{a.name}.rm_from: an online arm labels its own samples; it shares no labels")
        for stage, (cls, paths) in STAGE_JOBS.items():
            validate_section(stage, cls, paths, getattr(self, stage), "the run")
        return self

    def stage_job(self, stage: str, **paths: Any):
        """The stage's own job: its section of this config plus the run's paths (and arm settings)."""
        cls, _ = STAGE_JOBS[stage]
        data = copy.deepcopy(getattr(self, stage))
        for key, value in paths.items():  # dotted keys reach into sections: labeling.method (JSON is YAML)
            apply_override(data, f"{key}={json.dumps(value)}")
        return cls.model_validate(data)


STAGE_JOBS.update(
    {
        "probe": (RMProbeJob, {"rm": "-", "prompts": "-", "rollouts": "-", "output": "-"}),
        "sft": (SFTJob, {"init": "-", "output_dir": "-"}),
        "sample": (SampleJob, {"policy": "-", "prompts": "-", "output": "-"}),
        "label": (LabelJob, {"prompts": "-", "rollouts": "-", "output_dir": "-"}),
        "rm": (RMTrainJob, {"init": "-", "labels_dir": "-", "prompts": "-", "output_dir": "-"}),
        "ppo": (PPOJob, {"policy": "-", "output_dir": "-", "prompts": "-"}),
        "dpo": (DPOJob, {"policy": "-", "labels_dir": "-", "prompts": "-", "output_dir": "-"}),
        "eval": (EvalJob, {"policy": "-", "output_dir": "-"}),
    }
)
