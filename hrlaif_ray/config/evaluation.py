"""`hrlaif eval`'s config: a policy's greedy and sampled responses, verified, judged and scored."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from hrlaif_ray.config.base import Section
from hrlaif_ray.config.data import EvalPromptMix
from hrlaif_ray.config.labeling import EvalPool, LabelingConfig


class EvalSettings(Section):
    """`hrlaif eval`'s settings: everything but its folders and seed (a pipeline's `eval` section)."""

    mix: EvalPromptMix | None = Field(
        default_factory=EvalPromptMix,
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
    reward_models: dict[str, str] = Field(
        default_factory=dict, description="name -> RM folder: mean reward of the greedy responses."
    )
    judge: LabelingConfig = Field(
        default_factory=LabelingConfig, description="The judge endpoint(s) for flag and compare."
    )
    pool: EvalPool = Field(
        default_factory=EvalPool, description="The labeler pool that asks the judge (harm flags, comparisons)."
    )
    backend: Literal["vllm", "hf"] = Field(
        "vllm", description="'vllm': the rollout engine; 'hf': transformers' generate (the fallback)."
    )
    threads: int = Field(1, ge=1, description="Threads of the rollout engine and the RM replica.")
    kv_cache_gib: float = Field(0.5, gt=0, description="vLLM's KV-cache size in GiB (CPU).")
    ray_address: str | None = Field(None, description="Ray cluster to join (None: RAY_ADDRESS, else a local one).")


class EvalJob(EvalSettings):
    """`hrlaif eval`: greedy (and sampled) responses of a policy, verified, judged and scored."""

    model_keys: ClassVar[tuple[str, ...]] = ("policy",)

    policy: str = Field(description="Policy folder (SFT, or a PPO checkpoint's actor).")
    output_dir: str = Field(description="eval.json (the metrics) and responses.jsonl go here.")
    baseline: str | None = Field(
        None,
        description="Another eval's output_dir: the judge compares greedy responses to its "
        "own (win rate, both orders, disagreement = tie).",
    )
    seed: int = Field(0, description="Seed of the samples (sampled accuracy) and of public-set subsampling.")
