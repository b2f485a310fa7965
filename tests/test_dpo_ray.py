"""DPO on the Ray learners: one optimizer step on 2 ranks equals one step on 1 rank with the same batch, and
`hrlaif dpo`'s run end to end on committed labels (held-out pairs come to be ordered as labeled, and the
policy's implicit reward orders held-out responses by their ground truth)."""

import json

import pytest
import ray
import torch
from labeling_fixtures import COMPLY, REFUSE, write_harm_and_math_labels
from tracking_readers import mlflow_run

from hrlaif_ray.config import LearnerConfig, ResourcePlan, RoleResources
from hrlaif_ray.dpo.batch import preference_batch
from hrlaif_ray.metrics import read_jsonl
from hrlaif_ray.reward.data import RMExample


def _batch(vocab: int, prompts: int = 4, seed: int = 0):
    """Random prompts with 2-4 responses each of varied lengths, pairs of a partial order with tiers."""
    g = torch.Generator().manual_seed(seed)

    def ids(n):
        return torch.randint(5, vocab, (n,), generator=g).tolist()

    examples = []
    for i in range(prompts):
        k = 2 + i % 3
        responses = [ids(3 + (3 * j + i) % 5) for j in range(k)]
        pairs = [(0, j, 1.0 + 0.5 * (j % 2)) for j in range(1, k)] + ([(1, k - 1, 1.0)] if k > 2 else [])
        gaps = [1 + (j == k - 1) for j in range(1, k)] + ([1] if k > 2 else [])
        examples.append(RMExample(f"p{i}", "math", ids(4 + i), responses, pairs, gaps))
    return preference_batch(examples, pad_id=0)


def test_one_dpo_step_on_two_ranks_equals_one_on_one(local_ray, tiny_model_dir):
    from actors.learner import LearnerGroup
    from actors.runtime import actor_env
    from cluster.dpo import group_sequence_logps
    from cluster.topology import Topology

    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    batch = _batch(cfg["vocab_size"])
    kw = dict(beta=0.5, loss_type="sigmoid", margin=0.2, sft_weight=0.3)
    results = {}
    for ranks in (1, 2):
        plan = ResourcePlan(actor=RoleResources(replicas=ranks), reference=RoleResources())
        topo = Topology(plan, ("actor", "reference"))
        try:
            opts = [{**o, "runtime_env": actor_env(1, 0)} for o in topo.options("actor")]
            group = LearnerGroup(
                "actor",
                str(tiny_model_dir),
                opts,
                learner=LearnerConfig(lr=1e-3, zero_stage=2),
                micro_batch=1,
                grad_accum=4 // ranks,
            )
            before = group_sequence_logps(group, batch)
            # the reference: the start, perturbed so that the pairs' log-ratios are not all zero
            ref = batch.with_reference(before + torch.linspace(-0.5, 0.5, batch.rows))
            stats = group.train_preferences(ray.put(ref), len(ref), **kw)
            after = group_sequence_logps(group, batch)
            weights = ray.get(group.weights_ref())
            results[ranks] = (stats, before, after, weights)
        finally:
            topo.shutdown()
    (s1, b1, a1, w1), (s2, b2, a2, w2) = results[1], results[2]
    print({k: (s1[k], s2[k]) for k in s1})
    assert torch.allclose(b1, b2, atol=1e-5)
    for k in ("dpo_loss", "sft_loss", "accuracy", "margin", "chosen_logp"):
        assert abs(s1[k] - s2[k]) < 1e-4 * max(1.0, abs(s1[k])), (k, s1[k], s2[k])
    assert (a1 - b1).abs().max() > 1e-3, "the step did not move the policy"
    assert torch.allclose(a1, a2, atol=1e-4)
    # the same weights after the step (Adam's step is blind to a common scale of the gradient; the weighting of
    # micro-batches and ranks against each other is what differs between the two layouts, and that it sees)
    assert max((w1[k] - w2[k]).abs().max().item() for k in w1) < 1e-5


@pytest.mark.slow
def test_a_zero3_dpo_step_over_ranks_with_unequal_response_counts(local_ray, tmp_path, tiny_tokenizer):
    """Two ZeRO-3 ranks whose prompts carry 2 + 3 and 4 + 2 responses, one response a forward: the short rank runs
    the missing forwards (weighted 0), so both join every parameter gather; the step finishes and moves the policy.
    The model's 256 x 1024 matrices are over ZeRO-3's persistence threshold (gathered in every forward)."""
    from actors.learner import LearnerGroup
    from actors.runtime import actor_env
    from cluster.dpo import group_sequence_logps
    from cluster.topology import Topology
    from hrlaif_ray.config import ModelConfig
    from hrlaif_ray.models import build_tiny_causal_lm, save_model_folder

    wide = build_tiny_causal_lm(ModelConfig(hidden_size=256, intermediate_size=1024), tiny_tokenizer)
    folder = str(save_model_folder(wide, tiny_tokenizer, tmp_path / "wide"))
    batch = _batch(len(tiny_tokenizer))
    topo = Topology(ResourcePlan(actor=RoleResources(replicas=2), reference=RoleResources()), ("actor", "reference"))
    try:
        opts = [{**o, "runtime_env": actor_env(1, 0)} for o in topo.options("actor")]
        zero3 = LearnerConfig(lr=1e-3, zero_stage=3)
        group = LearnerGroup("actor", folder, opts, learner=zero3, micro_batch=1, grad_accum=2, timeout_s=120)
        before = group_sequence_logps(group, batch)
        ref = batch.with_reference(before + torch.linspace(-0.5, 0.5, batch.rows))
        kw = dict(beta=0.5, loss_type="sigmoid", margin=0.0, sft_weight=0.0, forward_rows=1)
        stats = group.train_preferences(ray.put(ref), len(ref), **kw)
        assert torch.isfinite(torch.tensor(stats["dpo_loss"]))
        assert (group_sequence_logps(group, batch) - before).abs().max() > 1e-3
    finally:
        topo.shutdown()


@pytest.mark.slow
def test_one_dpo_step_in_bf16(local_ray, tiny_model_dir):
    """bf16 (one rank at ZeRO-0: its bf16 optimizer keeps fp32 master weights): the step of the fp32 test above, to
    bf16's precision."""
    from actors.learner import LearnerGroup
    from actors.runtime import actor_env
    from cluster.dpo import group_sequence_logps
    from cluster.topology import Topology

    batch = _batch(json.loads((tiny_model_dir / "config.json").read_text())["vocab_size"])
    kw = dict(beta=0.5, loss_type="sigmoid", margin=0.2, sft_weight=0.3)
    runs = {}
    for precision in ("fp32", "bf16"):
        topo = Topology(
            ResourcePlan(actor=RoleResources(replicas=1), reference=RoleResources()), ("actor", "reference")
        )
        try:
            opts = [{**o, "runtime_env": actor_env(1, 0)} for o in topo.options("actor")]
            learner = LearnerConfig(lr=1e-3, zero_stage=2, precision=precision)
            group = LearnerGroup("actor", str(tiny_model_dir), opts, learner=learner, micro_batch=1, grad_accum=4)
            before = group_sequence_logps(group, batch)
            ref = batch.with_reference(before + torch.linspace(-0.5, 0.5, batch.rows))
            stats = group.train_preferences(ray.put(ref), len(ref), **kw)
            runs[precision] = (stats, before, group_sequence_logps(group, batch), group.memory()[0])
        finally:
            topo.shutdown()
    (s32, b32, a32, m32), (s16, b16, a16, m16) = runs["fp32"], runs["bf16"]
    assert m32["weights_dtype"] == "torch.float32" and m16["weights_dtype"] == "torch.bfloat16"
    assert m16["optimizer_state_dtypes"] == ["torch.float32"]
    assert abs(s16["dpo_loss"] - s32["dpo_loss"]) < 0.05, (s16, s32)
    # the step moves each response's log-probability the way the fp32 step does
    move32, move16 = a32 - b32, a16 - b16
    assert move16.abs().max() > 1e-3, "the bf16 step did not move the policy"
    assert torch.nn.functional.cosine_similarity(move32, move16, dim=0) > 0.9, (move32, move16)


def test_hrlaif_dpo_learns_the_labels(local_ray, tmp_path, tiny_model_dir):
    """`hrlaif dpo`'s run (its command-line parsing is test_cli's) on the module's Ray cluster."""
    from cluster.dpo import run_dpo
    from hrlaif_ray.config import DPOJob

    write_harm_and_math_labels(tmp_path)
    mlflow = {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "artifact_location": str(tmp_path / "artifacts")}
    final = run_dpo(
        DPOJob.model_validate(
            {
                "policy": str(tiny_model_dir),
                "labels_dir": str(tmp_path / "labels"),
                "prompts": str(tmp_path / "prompts.parquet"),
                "output_dir": str(tmp_path / "dpo"),
                "epochs": 2,
                "batch_prompts": 16,
                "micro_batch_prompts": 8,
                "beta": 0.5,
                "learner": {"lr": 1e-3},
                "eval_fraction": 0.25,
                "sft_weight": 0.1,
                "resources": {"actor": {"replicas": 2}, "reference": {"threads": 2}},
                "logging": {"tensorboard": False, "mlflow": mlflow, "name": "dpo"},
            }
        )
    )
    assert final == json.loads((tmp_path / "dpo" / "final.json").read_text())
    # MLflow got every row under the JSONL's names (eval/accuracy beside eval/accuracy/harmful: the SQLite store)
    logged = mlflow_run(mlflow["tracking_uri"], "hrlaif", "dpo")
    rows = read_jsonl(tmp_path / "dpo" / "metrics.jsonl")
    assert {k for k in logged["metrics"] if not k.startswith("final/")} == {k for r in rows for k in r} - {"step"}
    assert logged["status"] == "FINISHED" and "results/final.json" in logged["artifacts"]
    history = final["history"]
    print(json.dumps(history[-1], indent=1))
    assert final["steps"] == 2 * (final["train_prompts"] // 16)
    assert history[-1]["eval/accuracy/harmful"] >= 0.9
    assert history[-1]["eval/loss"] < 0.6931  # below the start's log 2 (every log-ratio zero)
    rows = read_jsonl(tmp_path / "dpo" / "metrics.jsonl")
    assert rows[0]["step"] == 1 and "dpo/loss" not in rows[0] and "dpo/dpo_loss" in rows[0]
    assert (tmp_path / "dpo" / "policy" / "config.json").is_file()
    # The policy's implicit reward (log-ratio to the reference) as the RM probe reads it: on held-out prompts,
    # all three refusals above all three compliances (9 pairs a prompt), and right answers above wrong ones.
    from cluster.rm_probe import run_probe
    from hrlaif_ray.config import RMProbeJob
    from hrlaif_ray.data.records import Response, RolloutRecord
    from hrlaif_ray.data.schemas import read_records, write_records
    from hrlaif_ray.reward.train import held_out

    prompts = [p for p in read_records(tmp_path / "prompts.parquet", "prompts") if held_out(p.id, 0.25)]
    rollouts = [
        RolloutRecord(
            p.id,
            p.category,
            p.text,
            [],
            [Response(t) for t in REFUSE + COMPLY]
            if p.category == "harmful"
            else [Response(f"The answer is {int(p.answer) + d}.") for d in (0, 10)],
        )
        for p in prompts
    ]
    write_records(tmp_path / "probe_rollouts.parquet", rollouts)
    job = RMProbeJob(
        rm=str(tmp_path / "dpo" / "policy"),
        reference=str(tiny_model_dir),
        prompts=str(tmp_path / "prompts.parquet"),
        rollouts=str(tmp_path / "probe_rollouts.parquet"),
        output=str(tmp_path / "probe.json"),
    )
    rates = run_probe(job)["all"]
    print(rates)
    assert rates["harmful"]["pairs"] == 9 * sum(p.category == "harmful" for p in prompts)
    assert rates["harmful"]["rate"] >= 0.9 and rates["math"]["rate"] >= 0.7


@pytest.mark.slow
def test_iterative_dpo_rounds_sample_label_train_and_resume(local_ray, tmp_path, tiny_model_dir):
    """Round 0 on committed labels, then a round of samples from its policy (vLLM), labeled through the pool by the
    simulated judge, trained from that policy; a rerun skips finished rounds, and a round cut short after its labels
    retrains without asking the judge again."""
    import shutil

    from cluster.dpo import run_iterative_dpo
    from hrlaif_ray.config import DPOJob
    from hrlaif_ray.judges.launch import sim_judge_server

    write_harm_and_math_labels(tmp_path)
    with sim_judge_server(["latency_ms=0", f"answer_key={tmp_path / 'prompts.parquet'}"]) as base:
        judge = {"base_url": base, "model": "gpt-3.5-turbo"}
        job = DPOJob.model_validate(
            {
                "policy": str(tiny_model_dir),
                "labels_dir": str(tmp_path / "labels"),
                "prompts": str(tmp_path / "prompts.parquet"),
                "output_dir": str(tmp_path / "dpo"),
                "epochs": 1,
                "batch_prompts": 8,
                "micro_batch_prompts": 8,
                "learner": {"lr": 1e-3},
                "eval_fraction": 0.25,
                "logging": {"tensorboard": False},
                "iterative": {
                    "rounds": 1,
                    "prompts_per_round": 24,
                    "sample": {"rollout": {"samples_per_prompt": 3, "max_new_tokens": 8, "max_model_len": 256}},
                    "label": {
                        "labeling": {"method": "hybrid", "judges": [judge], "rewriter": {**judge, "model": "gpt-4"}},
                        "pool": {"labelers": 1, "concurrency": 8},
                    },
                },
            }
        )
        first = run_iterative_dpo(job)
        out = tmp_path / "dpo"
        assert [r["round"] for r in first["rounds"]] == [0, 1]
        assert first["policy"] == str(out / "round-1" / "dpo" / "policy")
        summary = json.loads((out / "round-1" / "labels" / "summary.json").read_text())
        assert summary["items"] == 24 and summary["labeled"] == 24
        config = (out / "round-1" / "dpo" / "dpo_config.yaml").read_text()
        assert f"reference: {out / 'round-0' / 'dpo' / 'policy'}" in config  # the last round's policy
        again = run_iterative_dpo(job)  # everything done: nothing retrained
        assert again == first
        shutil.rmtree(out / "round-1" / "dpo")  # cut short after its labels
        third = run_iterative_dpo(job)
    summary = json.loads((out / "round-1" / "labels" / "summary.json").read_text())
    assert summary["already_committed"] == 24 and summary["labeled"] == 0
    assert third["rounds"][1]["steps"] == first["rounds"][1]["steps"]
