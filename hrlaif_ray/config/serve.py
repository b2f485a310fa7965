"""`hrlaif serve-reward`: the hybrid reward served to other trainers (OpenRLHF's remote reward, veRL's reward
function); the request forms and the grouping are `hrlaif_ray/reward/remote.py`."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator

from hrlaif_ray.config.base import Section, variant
from hrlaif_ray.config.ppo import RewardRoleConfig

LOOPBACK = "127.0.0.1"

ServedReward = variant(
    RewardRoleConfig, "ServedReward", "The reward `hrlaif serve-reward` serves (PPO's reward role).", kind="online"
)


class ServeRewardJob(Section):
    """`hrlaif serve-reward`: the online hybrid reward and/or the RM over HTTP, in OpenRLHF's remote reward form."""

    model_keys: ClassVar[tuple[str, ...]] = ("reward.rm", "tokenizer")

    reward: ServedReward = Field(
        default_factory=ServedReward,
        description="What the server scores with, as PPO's reward role: 'online' (the labeler pool labels each "
        "prompt's group: verify, sort, the judge within the sets, red teaming), 'rm', 'verifier', their sums; "
        "reward.labeling names the judges.",
    )
    group_size: int = Field(
        ge=1,
        description="Samples per prompt the trainer generates (OpenRLHF's n_samples_per_prompt, veRL's "
        "rollout.n): a prompt's group is scored once this many of its samples have come.",
    )
    group_wait_s: float = Field(
        30.0,
        gt=0,
        description="A prompt's partial group is scored this long after its first sample came (a sample whose "
        "siblings never come waits no longer); a group of one gets no signal from the judge.",
    )
    tokenizer: str | None = Field(
        None,
        description="The policy's model folder: its chat template is taken off the prompts the trainer sends (so "
        "the judge, the verifier and the RM read the question) and its special tokens off the responses' ends. "
        "None: prompts and responses are read as sent.",
    )
    replicas: int = Field(1, ge=1, description="Replicas of the RM/verifier part (Ray actors).")
    num_cpus: float = Field(1, ge=0, description="CPUs each RM/verifier replica reserves.")
    num_gpus: float = Field(0, ge=0, description="GPUs each RM/verifier replica reserves.")
    threads: int = Field(1, ge=1, description="torch threads of each RM/verifier replica.")
    host: str = Field(LOOPBACK, description="Address Serve's HTTP proxy binds.")
    port: int = Field(0, ge=0, le=65535, description="Port (0: a free one).")
    token_env: str = Field(
        "HRLAIF_REWARD_TOKEN", description="Environment variable holding the bearer token every request must send."
    )
    no_token: bool = Field(
        False,
        description="Serve without a token, for a client that cannot send headers (OpenRLHF's remote reward "
        f"client): allowed only with host {LOOPBACK}, and said at start.",
    )
    max_ongoing_requests: int = Field(
        4096,
        ge=1,
        description="Requests the server holds at once: at least the samples a trainer sends at once, since a "
        "one-sample request waits for its group.",
    )
    max_request_bytes: int = Field(8 * 2**20, ge=1024, description="Larger bodies get 413.")
    output_dir: str = Field(
        description="The online reward's label ledger (every label kept, a repeated group asks nothing) and judge "
        "cache, and the resolved config."
    )

    @model_validator(mode="after")
    def _token_or_loopback(self) -> ServeRewardJob:
        if self.no_token and self.host != LOOPBACK:
            raise ValueError(f"no_token: a server without a token binds {LOOPBACK} only, not {self.host!r}")
        return self
