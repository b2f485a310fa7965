"""`hrlaif run`'s config: the pipeline's arms, seeds, shared stages and, as typed sections, every stage's own
settings (each stage job's fields but those the run sets: its files, its seed, and what each arm decides)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from hrlaif_ray.config.base import Section, apply_override, set_by
from hrlaif_ray.config.data import RunPromptMix, TaskConfig
from hrlaif_ray.config.dpo import DPOJob, DPOSettings
from hrlaif_ray.config.evaluation import EvalJob, EvalSettings
from hrlaif_ray.config.labeling import LabelJob, LabelSettings, SimJudgeConfig
from hrlaif_ray.config.model import TinyModelJob
from hrlaif_ray.config.ppo import PPOJob, PPOSettings, SampleJob, SampleSettings
from hrlaif_ray.config.reward import RMProbeJob, RMProbeSettings, RMTrainJob, RMTrainSettings
from hrlaif_ray.config.sft import SFTJob, SFTSettings
from hrlaif_ray.config.tracking import LoggingConfig

# stage -> its job, and the keys inside its section that the run sets for each arm (a config that sets one is an
# error: the run would overwrite it)
TRACKED = ("logging.name", "logging.group")  # each stage's run in the trackers, named and grouped by the run
STAGES: dict[str, tuple[type[Section], tuple[str, ...]]] = {
    "sft": (SFTJob, TRACKED),
    "sample": (SampleJob, ()),
    "label": (LabelJob, ("labeling.method", "labeling.cache_dir")),
    "rm": (RMTrainJob, TRACKED),
    "ppo": (
        PPOJob,
        ("reward.kind", "reward.rm", "reward.labels_dir", "reward.labeling.method", "reward.labeling.cache_dir")
        + TRACKED,
    ),
    "dpo": (DPOJob, ("iterative.label.labeling.method", *TRACKED)),
    "eval": (EvalJob, ()),
    "probe": (RMProbeJob, ()),
}
# the judge endpoints, which the run points at its simulated judge when it starts one
JUDGED = {"label": "labeling", "ppo": "reward.labeling", "dpo": "iterative.label.labeling", "eval": "judge"}

OUTCOME = r"(greedy_accuracy|sampled_accuracy|harmful_rate|win_rate_vs_sft|length|binding_rate)(_seen)?"
LINK = r"(label_agreement|rm_correct_above_wrong|rm_correct_above_wrong_seen)\.(math|multiple_choice|harmful)"
PAIRED = r"vs_sft\.(greedy_accuracy|sampled_accuracy|harmful_rate)(_seen)?(\.ci_low|\.ci_high)?"


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
        description="Use that arm's labels (and, for PPO, its RM): an arm that differs only in its RL reward, "
        "its trainer or its RM's kind.",
    )
    rm_kind: Literal["scalar", "implicit"] | None = Field(
        None,
        description="A PPO arm's reward model: 'scalar' (the paper's: a head on the backbone) or 'implicit' (DPO's "
        "log-probability ratio, hrlaif_ray/reward/implicit.py); None: the run's rm.kind. With rm_from and another "
        "kind than that arm's, the arm trains its own RM on that arm's labels.",
    )


class TargetConfig(Section):
    """A claim the report checks on the unseen prompts: a policy's measured value against a number or the same
    measure of another policy, stated met or not met beside its values."""

    policy: str = Field(
        description="An arm's name, or 'sft' (the SFT policy); a claim on an arm the run does not have (its arms "
        "overridden) is reported as not measured."
    )
    metric: str = Field(
        pattern=rf"^({OUTCOME}|{LINK}|{PAIRED})$",
        description="An outcome (greedy_accuracy, sampled_accuracy, harmful_rate, win_rate_vs_sft, length, "
        "binding_rate; `_seen` for the seen problems), a link per category (label_agreement.math, "
        "rm_correct_above_wrong.multiple_choice, ...), as the report's mechanism table gives them, or the arm's "
        "paired difference to SFT (vs_sft.greedy_accuracy; `.ci_low` / `.ci_high`: its 95% interval's bounds).",
    )
    op: Literal[">=", ">", "<=", "<"] = Field(description="How the value must compare.")
    than: float | str = Field(description="A number, or a policy (an arm's name or 'sft') whose same metric.")


class RunJob(Section):
    """`hrlaif run`: sft -> sample -> label -> train-rm -> ppo (or dpo) -> rm-probe -> eval per arm, the report.

    The stage sections hold each stage job's settings (`hrlaif sft`'s, ...): every field but the files, the seed
    and the arm's choices, which the run sets."""

    model_keys: ClassVar[tuple[str, ...]] = ("init",)

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
    task: TaskConfig | None = Field(
        None,
        description="The generated task, written into every prompt mix (operand ranges) and SFT response mix "
        "(format) of the sections below; a section that sets one of those keys to another value is refused. None: "
        "each section's own.",
    )
    init: str | None = Field(None, description="Policy to start from (an HF folder); None: build the tiny model below.")
    model: TinyModelJob = Field(default_factory=TinyModelJob, description="The tiny model built when init is None.")
    prompts: RunPromptMix = Field(
        default_factory=RunPromptMix,
        description="The RL prompts: sampled and labeled for the RM, then PPO's prompts.",
    )
    judge: SimJudgeConfig | None = Field(
        default_factory=SimJudgeConfig,
        description="The simulated judge the run starts on 127.0.0.1 (its seed is each run seed, its answer key "
        "the run's prompts) and points every stage's judge and rewriter at; None: the stages' endpoints as given.",
    )
    sft: SFTSettings = Field(default_factory=SFTSettings, description="`hrlaif sft`'s settings.")
    sample: SampleSettings = Field(default_factory=SampleSettings, description="`hrlaif sample`'s settings.")
    label: LabelSettings = Field(default_factory=LabelSettings, description="`hrlaif label`'s settings.")
    rm: RMTrainSettings = Field(default_factory=RMTrainSettings, description="`hrlaif train-rm`'s settings.")
    ppo: PPOSettings = Field(default_factory=PPOSettings, description="`hrlaif ppo`'s settings.")
    dpo: DPOSettings = Field(
        default_factory=DPOSettings, description="`hrlaif dpo`'s settings (the arms with trainer: dpo)."
    )
    eval: EvalSettings = Field(default_factory=EvalSettings, description="`hrlaif eval`'s settings.")
    probe: RMProbeSettings = Field(
        default_factory=RMProbeSettings,
        description="`hrlaif rm-probe`'s settings (each arm's RM on the SFT policy's samples of the evaluation prompts).",
    )
    arms: list[ArmConfig] = Field(
        default_factory=lambda: [ArmConfig(name="rlaif", method="basic"), ArmConfig(name="hrlaif", method="hybrid")],
        min_length=1,
        description="The compared arms: labels (method) and RL reward each, run side by side on the same budget.",
    )
    targets: list[TargetConfig] = Field(
        default_factory=list,
        description="Claims the report checks, each stated met, not met or not measured (none: no claims).",
    )
    logging: LoggingConfig = Field(
        default_factory=LoggingConfig,
        description="W&B and MLflow for every trained stage (sft, rm, ppo, dpo: a run each, named by the stage's "
        "folder, one group per `hrlaif run`) and a `report` run with report.md; a stage section's own logging "
        "keeps its tensorboard and, when this sets none, its trackers.",
    )
    parallel_arms: bool = Field(True, description="Run the arms side by side (one thread each) rather than in turn.")
    ray_num_cpus: int | None = Field(
        None,
        ge=1,
        description="Logical CPUs of the run's local Ray cluster (slots, not cores). None: what the stages side by "
        "side may reserve at once (`run_plan.run_slots`), so that none waits for another's placement groups.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> RunJob:
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
        for stage, (_, keys) in STAGES.items():
            judged = (f"{JUDGED[stage]}.judges", f"{JUDGED[stage]}.rewriter") if self.judge and stage in JUDGED else ()
            for key in keys + judged:
                if _is_set(getattr(self, stage), key):
                    raise ValueError(f"{stage}.{key}: set by the run ({_SETTER.get(key.split('.')[-1], 'each arm')})")
        if self.task is not None:
            clashes = [
                f"{name}.{key}"
                for name in type(self).model_fields
                if isinstance(getattr(self, name), Section)
                for key in self.task.apply(getattr(self, name))
            ]
            if clashes:
                raise ValueError(f"{clashes[0]}: set by the run's task (task.{clashes[0].split('.')[-1]})")
        self.model.responses = self.sft.responses.model_copy()  # the tokenizer sees the SFT text
        for key in ("seed", "answer_key"):
            if self.judge is not None and key in self.judge.model_fields_set:
                raise ValueError(f"judge.{key}: set by the run (each seed's judge; its prompts as the answer key)")
        return self

    def rm_kind(self, arm: ArmConfig) -> str:
        """The kind of reward model a PPO arm's reward comes from."""
        return arm.rm_kind or self.rm.kind

    def rm_owner(self, arm: ArmConfig) -> str:
        """The arm whose folder holds this arm's RM (its own, unless it shares that of rm_from, of the same kind)."""
        owner = next((b for b in self.arms if b.name == arm.rm_from), None)
        if arm.trainer == "ppo" and owner is not None and self.rm_kind(owner) == self.rm_kind(arm):
            return owner.name
        return arm.name

    def stage_job(self, stage: str, **values: Any):
        """The stage's own job: its section of this config plus what the run sets (files, seed, the arm's
        choices; dotted keys reach into sections: `labeling.method`)."""
        cls, _ = STAGES[stage]
        data = getattr(self, stage).model_dump(mode="json", by_alias=True)
        for key, value in values.items():
            apply_override(data, f"{key}={_yaml(value)}")
        return cls.model_validate(data)


RunJob.moved = set_by(
    "the run (its folders, files and seeds)",
    {stage: (job, RunJob.model_fields[stage].annotation) for stage, (job, _) in STAGES.items()},
)

_SETTER = {
    "judges": "its simulated judge; judge: null keeps them",
    "rewriter": "its simulated judge; judge: null keeps it",
}


def _is_set(section: Section, dotted: str) -> bool:
    """Whether the config gave `dotted` (a key inside `section`) itself, rather than left it at its default."""
    node: Any = section
    for part in dotted.split("."):
        if not isinstance(node, Section) or part not in node.model_fields_set:
            return False
        node = getattr(node, part)
    return True


def _yaml(value: Any) -> str:
    import json

    return json.dumps(value)  # JSON is YAML: a value of any shape survives the override's parser
