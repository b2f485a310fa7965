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

    from hrlaif_ray.config import LabelJob, PPOJob, RunJob

    folder = Path(__file__).parents[1] / "cluster" / "configs"
    jobs = {
        "tiny-model.yaml": TinyModelJob,
        "label-local.yaml": LabelJob,
        "demo.yaml": RunJob,
        "local-tiny.yaml": PPOJob,
        "smollm2-cpu.yaml": PPOJob,
        "13b-8xa100.yaml": PPOJob,
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
    assert [(a.method, a.trainer) for a in demo.arms] == [
        ("basic", "ppo"),
        ("hybrid", "ppo"),
        ("oracle", "ppo"),
        ("hybrid", "dpo"),
    ]
    assert demo.sft["steps"] > 0 and demo.stage_job("dpo", policy="-", labels_dir="-", prompts="-", output_dir="-")
    assert "max_time_s" not in demo.sft  # budgets are steps, never seconds
    assert demo.stage_job("eval", policy="-", output_dir="-").mix.split == "eval" and demo.prompts.split == "train"
    assert loaded["local-tiny.yaml"].resources.actor.replicas == 2  # its comment: 2 DeepSpeed ranks for the actor
    assert loaded["13b-8xa100.yaml"].resources.bundle.get("GPU") == 1


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


def test_override_of_one_field_keeps_the_section_default():
    """SFTJob.prompts defaults to 40,000 prompts (a default_factory): overriding one field of it must keep the rest,
    not fall back to the section class's own defaults (1,000 prompts)."""
    from hrlaif_ray.config import SFTJob

    job = load_config(SFTJob, None, ["init=m", "output_dir=o", "prompts.a_max=99"])
    assert (job.prompts.n, job.prompts.a_max, job.prompts.open_qa) == (40000, 99, 0.0)


def test_every_config_field_has_a_description():
    import inspect

    from pydantic import BaseModel

    import hrlaif_ray.config as config
    from hrlaif_ray.judges.sim_judge import SimJudgeConfig

    classes = [c for _, c in inspect.getmembers(config, inspect.isclass) if issubclass(c, BaseModel)]
    classes = [c for c in classes if c.__module__ == config.__name__] + [SimJudgeConfig]
    missing = [f"{c.__name__}.{name}" for c in classes for name, f in c.model_fields.items() if not f.description]
    assert not missing, missing
