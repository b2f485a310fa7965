"""Typed config: one pydantic section per concept, a module per job family, loaded from YAML with dotted
overrides (`base.py`: the machinery, and why a job's own defaults are a `variant` of a section).

- `data`: the generated prompt mix and its SFT responses;      - `model`: the tiny model (`hrlaif tiny-model`);
- `learner`: the one learner section of every trained role;    - `resources`: the resource plan (roles, bundles);
- `labeling`: judges, labeling, the labeler pool, `hrlaif label` and `hrlaif revise`, the simulated judge;
- `sft`, `reward` (`train-rm`, `rm-probe`), `ppo` (and `sample`), `dpo`, `evaluation`: each stage's job;
- `tracking`: where metrics go (TensorBoard, W&B, MLflow);
- `run`: the pipeline, whose stage sections are the stages' own settings; `serve`: `hrlaif serve-reward`.

Each job `XJob` is its settings `XSettings` (what a pipeline's stage section holds) plus the files it reads and
writes and its seed, which a pipeline sets.
"""

from hrlaif_ray.config.base import (
    HUB_HINT,
    Section,
    apply_override,
    check_model_folders,
    config_help,
    dump_config,
    field_order,
    format_validation_error,
    load_config,
    model_folder_problem,
    variant,
    yaml_problem,
)
from hrlaif_ray.config.data import (
    EvalPromptMix,
    PPOPromptMix,
    PromptMixConfig,
    RunPromptMix,
    SFTMixConfig,
    SFTPromptMix,
    TaskConfig,
)
from hrlaif_ray.config.dpo import DPOJob, DPOSettings, IterativeDPOConfig
from hrlaif_ray.config.evaluation import EvalJob, EvalSettings
from hrlaif_ray.config.labeling import (
    AutoscaleConfig,
    EvalPool,
    JudgeEndpoint,
    JudgeTier,
    LabelingConfig,
    LabelJob,
    LabelSettings,
    OnlinePool,
    PoolConfig,
    Price,
    ReviseJob,
    ReviseLabeling,
    RewriterEndpoint,
    SimJudgeConfig,
)
from hrlaif_ray.config.learner import (
    ActorLearner,
    CriticLearner,
    DPOLearner,
    FrozenConfig,
    LearnerConfig,
    LoRAConfig,
    OffloadConfig,
    RMLearner,
    SFTLearner,
)
from hrlaif_ray.config.model import ModelConfig, TinyModelJob, TokenizerConfig
from hrlaif_ray.config.ppo import (
    AsyncConfig,
    ChaosConfig,
    FaultsConfig,
    MonitorConfig,
    PPOAlgoConfig,
    PPOJob,
    PPOSettings,
    RewardRoleConfig,
    RolloutConfig,
    SampleJob,
    SampleSettings,
    SyncConfig,
)
from hrlaif_ray.config.resources import ROLES, DPOResourcePlan, ResourcePlan, Role, RoleResources, TwoRanks, TwoThreads
from hrlaif_ray.config.reward import RMProbeJob, RMProbeSettings, RMTrainJob, RMTrainSettings
from hrlaif_ray.config.run import STAGES, ArmConfig, RunJob, TargetConfig
from hrlaif_ray.config.serve import ServeRewardJob
from hrlaif_ray.config.sft import SFTJob, SFTSettings
from hrlaif_ray.config.tracking import LoggingConfig, MlflowConfig, WandbConfig

__all__ = [
    "HUB_HINT",
    "ROLES",
    "STAGES",
    "ActorLearner",
    "apply_override",
    "check_model_folders",
    "ArmConfig",
    "AsyncConfig",
    "AutoscaleConfig",
    "ChaosConfig",
    "config_help",
    "CriticLearner",
    "DPOJob",
    "DPOLearner",
    "DPOResourcePlan",
    "DPOSettings",
    "FrozenConfig",
    "OffloadConfig",
    "dump_config",
    "EvalJob",
    "EvalPool",
    "EvalPromptMix",
    "EvalSettings",
    "FaultsConfig",
    "SyncConfig",
    "field_order",
    "format_validation_error",
    "IterativeDPOConfig",
    "JudgeEndpoint",
    "JudgeTier",
    "LabelingConfig",
    "LabelJob",
    "LabelSettings",
    "LearnerConfig",
    "LoRAConfig",
    "LoggingConfig",
    "load_config",
    "model_folder_problem",
    "MlflowConfig",
    "ModelConfig",
    "MonitorConfig",
    "OnlinePool",
    "PoolConfig",
    "PPOAlgoConfig",
    "PPOJob",
    "PPOPromptMix",
    "PPOSettings",
    "Price",
    "PromptMixConfig",
    "ResourcePlan",
    "ReviseJob",
    "ReviseLabeling",
    "RewardRoleConfig",
    "RewriterEndpoint",
    "RMLearner",
    "RMProbeJob",
    "RMProbeSettings",
    "RMTrainJob",
    "RMTrainSettings",
    "Role",
    "RoleResources",
    "RolloutConfig",
    "RunJob",
    "RunPromptMix",
    "SampleJob",
    "SampleSettings",
    "Section",
    "ServeRewardJob",
    "SFTJob",
    "SFTLearner",
    "SFTMixConfig",
    "SFTPromptMix",
    "SFTSettings",
    "SimJudgeConfig",
    "TaskConfig",
    "TargetConfig",
    "TinyModelJob",
    "TokenizerConfig",
    "TwoRanks",
    "TwoThreads",
    "variant",
    "WandbConfig",
    "yaml_problem",
]
