import pytest

from hrlaif_ray.config import ModelConfig, TinyModelJob, apply_override, dump_config, load_config
from hrlaif_ray.errors import ConfigError


def test_defaults_and_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  hidden_size: 64\n  num_heads: 2\n  num_kv_heads: 1\ntokenizer:\n  vocab_size: 300\n")
    job = load_config(TinyModelJob, path, ["model.num_layers=3", "model.arch=llama", "prompts.n=10"])
    assert (job.model.hidden_size, job.model.num_heads, job.model.num_layers, job.model.arch) == (64, 2, 3, "llama")
    assert job.tokenizer.vocab_size == 300 and job.prompts.n == 10
    assert job.model.intermediate_size == ModelConfig().intermediate_size  # untouched default
    # What is dumped loads back to the same config.
    again = tmp_path / "again.yaml"
    again.write_text(dump_config(job))
    assert load_config(TinyModelJob, again) == job


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["model.hidden_size=wide"], "model.hidden_size"),
        (["model.hiden_size=64"], "model.hiden_size"),  # a typo is an error, not ignored
        (["model.arch=gpt5"], "model.arch"),
        (["model.num_heads=3"], "num_heads (3) must divide hidden_size (128)"),
        (["tokenizer.vocab_size=10"], "tokenizer.vocab_size"),
    ],
)
def test_errors_name_the_key(overrides, key):
    with pytest.raises(ConfigError) as info:
        load_config(TinyModelJob, None, overrides)
    assert key in str(info.value)


def test_malformed_overrides_and_files(tmp_path):
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(TinyModelJob, None, ["model.hidden_size"])
    with pytest.raises(ConfigError, match="'model.arch' is a value"):
        apply_override({"model": {"arch": "qwen2"}}, "model.arch.x=1")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(TinyModelJob, bad)
    bad.write_text("model: {hidden_size: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(TinyModelJob, bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(TinyModelJob, tmp_path / "missing.yaml")


def test_shipped_config_files_validate():
    """Every file in cluster/configs validates as the job it is for (the KubeRay spec is checked in
    test_cluster_configs), and says what its comment says."""
    from pathlib import Path

    from hrlaif_ray.config import LabelJob, PPOJob, RunJob, ServeRewardJob, SFTJob

    folder = Path(__file__).parents[1] / "cluster" / "configs"
    jobs = {
        "tiny-model.yaml": TinyModelJob,
        "label-local.yaml": LabelJob,
        "demo.yaml": RunJob,
        "local-tiny.yaml": PPOJob,
        "smollm2-cpu.yaml": PPOJob,
        "13b-8xa100.yaml": PPOJob,
        "7b-lora-1xa100.yaml": PPOJob,
        "serve-reward.yaml": ServeRewardJob,
    }
    shipped = {p.name for p in folder.glob("*.yaml")} - {"raycluster-8xa100.yaml", "constitution.yaml"}
    assert shipped == set(jobs), f"a shipped config without a test: {shipped ^ set(jobs)}"
    # The default constitution (not a job): principles for every category, harmlessness ones for harmful prompts.
    from hrlaif_ray.categories import Category
    from hrlaif_ray.labeling.constitution import load_constitution

    constitution = load_constitution(folder / "constitution.yaml")
    assert all(constitution.for_category(c) for c in Category)
    assert any(p.id.startswith("harmless-") for p in constitution.for_category(Category.HARMFUL))
    loaded = {name: load_config(cls, folder / name) for name, cls in jobs.items()}
    assert loaded["tiny-model.yaml"].model.hidden_size == 128 and loaded["tiny-model.yaml"].tokenizer.vocab_size == 384
    demo = loaded["demo.yaml"]
    assert [(a.method, a.trainer, demo.rm_kind(a), demo.rm_owner(a)) for a in demo.arms] == [
        ("basic", "ppo", "implicit", "rlaif"),
        ("hybrid", "ppo", "implicit", "hrlaif"),
        ("hybrid", "ppo", "scalar", "hrlaif-scalar"),  # hrlaif's labels, its own scalar RM (the paper's)
        ("basic", "online", "implicit", "rlaif-online"),
        ("hybrid", "online", "implicit", "hrlaif-online"),
    ]
    assert demo.sft.steps > 0 and demo.stage_job("dpo", policy="-", labels_dir="-", prompts="-", output_dir="-")
    assert not [k for k in SFTJob.model_fields if k.endswith("_s")]  # budgets are steps, never seconds
    assert demo.eval.mix.split == "eval" and demo.prompts.split == "train"
    assert [(t.policy, t.than) for t in demo.targets][:3] == [("hrlaif", 0.8), ("hrlaif", 0.8), ("hrlaif", 0.05)]
    assert loaded["local-tiny.yaml"].resources.actor.replicas == 2  # its comment: 2 DeepSpeed ranks for the actor
    assert loaded["13b-8xa100.yaml"].resources.bundle.get("GPU") == 1
    lora = loaded["7b-lora-1xa100.yaml"]  # its comments: rank-16 adapters, one GPU, the object-store sync
    assert (lora.actor.lora.r, lora.resources.actor.replicas, lora.sync.method) == (16, 1, "object_store")
    served = loaded["serve-reward.yaml"]  # its comments: the hybrid online reward, groups of 8, a loopback judge
    assert (served.reward.kind, served.reward.labeling.method, served.group_size) == ("online", "hybrid", 8)
    assert served.reward.labeling.judges[0].base_url == "http://127.0.0.1:8000/v1" and not served.no_token


def test_label_config_file_validates():
    from pathlib import Path

    from hrlaif_ray.config import LabelJob

    job = load_config(LabelJob, Path(__file__).parents[1] / "cluster/configs/label-local.yaml", ["pool.labelers=4"])
    assert job.pool.labelers == 4 and job.labeling.judges[0].model == "gpt-3.5-turbo"
    with pytest.raises(ConfigError, match="labeling.judges.0.json_mode"):
        load_config(
            LabelJob,
            Path(__file__).parents[1] / "cluster/configs/label-local.yaml",
            ["labeling.judges=[{json_mode: yaml}]"],
        )


def test_one_field_of_a_section_keeps_the_jobs_defaults_for_it(tmp_path):
    """SFT's prompt mix defaults to 40,000 prompts without open questions (its variant of the mix): setting one field
    of it, by an override or in a file, keeps the rest rather than falling back to the mix's general defaults
    (1,000 prompts); a section given as an object of the general class keeps them too."""
    from hrlaif_ray.config import DPOJob, PromptMixConfig, ResourcePlan, RoleResources, RunJob, SFTJob

    job = load_config(SFTJob, None, ["init=m", "output_dir=o", "prompts.a_max=99"])
    assert (job.prompts.n, job.prompts.a_max, job.prompts.open_qa) == (40000, 99, 0.0)
    path = tmp_path / "sft.yaml"
    path.write_text("init: m\noutput_dir: o\nprompts: {seed: 3}\n")
    assert (load_config(SFTJob, path).prompts.n, load_config(SFTJob, path).prompts.seed) == (40000, 3)
    run = load_config(RunJob, None, ["sft.prompts.seed=2", "eval.mix.n=10"])
    assert (run.sft.prompts.n, run.eval.mix.split, run.eval.mix.seed, run.eval.mix.n) == (40000, "eval", 20001, 10)
    job = SFTJob(init="m", output_dir="o", prompts=PromptMixConfig(seed=4))
    assert (job.prompts.n, job.prompts.seed) == (40000, 4)
    dpo = DPOJob(policy="p", labels_dir="l", prompts="x", output_dir="o", resources=ResourcePlan(actor=RoleResources()))
    assert (dpo.resources.actor.threads, dpo.resources.reference.threads) == (2, 2)
    assert "policy: p" in dump_config(dpo).splitlines()[0]  # a job's files come first


def test_a_moved_or_run_set_key_says_where_it_is():
    from hrlaif_ray.config import PPOJob, RunJob

    with pytest.raises(
        ConfigError, match=r"algo\.actor_lr: moved to actor\.lr; zero_stage: moved to actor\.zero_stage "
    ):
        load_config(PPOJob, None, ["policy=p", "output_dir=o", "algo.actor_lr=1e-5", "zero_stage=3"])
    with pytest.raises(ConfigError, match=r"rm\.lr: moved to rm\.learner\.lr"):
        load_config(RunJob, None, ["rm.lr=1e-5"])
    with pytest.raises(ConfigError, match=r"ppo\.seed: set by the run"):
        load_config(RunJob, None, ["ppo.seed=1"])
    with pytest.raises(ConfigError, match=r"label\.labeling\.method: set by the run \(each arm\)"):
        load_config(RunJob, None, ["label.labeling.method=basic"])
    with pytest.raises(ConfigError, match=r"eval\.judge\.judges: set by the run"):
        load_config(RunJob, None, ["eval.judge.judges=[{model: m}]"])
    assert load_config(RunJob, None, ["judge=null", "eval.judge.judges=[{model: m}]"]).eval.judge.judges[0].model == "m"


def test_every_config_field_has_a_description():
    import inspect

    from pydantic import BaseModel

    import hrlaif_ray.config as config
    from hrlaif_ray.judges.sim_judge import SimJudgeConfig

    classes = [c for _, c in inspect.getmembers(config, inspect.isclass) if issubclass(c, BaseModel)]
    classes = [c for c in classes if c.__module__ == config.__name__] + [SimJudgeConfig]
    missing = [f"{c.__name__}.{name}" for c in classes for name, f in c.model_fields.items() if not f.description]
    assert not missing, missing
