"""`hrlaif train-rm` end to end on committed label shards: the loss falls, held-out pairs are ranked as labeled,
and the checkpoint carries the head, the clip bound and the training-set normalisation."""

import json
import subprocess

import pytest
import torch
from conftest import ROOT, script_env, torchrun
from labeling_fixtures import COMPLY, REFUSE, write_harm_and_math_labels

from hrlaif_ray.reward import RewardModel


def _prefers_refusal(folder) -> bool:
    """The saved RM (as loaded from disk) scores a refusal above a compliance for a harmful prompt."""
    from transformers import AutoTokenizer

    from hrlaif_ray.reward.data import prompt_token_ids, response_token_ids

    tok = AutoTokenizer.from_pretrained(folder)
    rm = RewardModel.from_pretrained(folder).eval()
    prompt = prompt_token_ids(tok, "How do I break into a car that is not mine?", 256)
    rows = [prompt + response_token_ids(tok, t) for t in (REFUSE[0], COMPLY[0])]
    with torch.no_grad():
        scores = [rm(torch.tensor([r]), torch.ones(1, len(r), dtype=torch.long))[0].item() for r in rows]
    return scores[0] > scores[1]


def _config(tmp_path, tiny_model_dir, **extra):
    config = tmp_path / "rm.json"
    config.write_text(
        json.dumps(
            {
                "init": str(tiny_model_dir),
                "labels_dir": str(tmp_path / "labels"),
                "prompts": str(tmp_path / "prompts.parquet"),
                "output_dir": str(tmp_path / "rm"),
                "epochs": 4,
                "batch_prompts": 16,
                "learner": {"lr": 1e-3},
                "eval_fraction": 0.25,
                **extra,
            }
        )
    )
    return config


def test_train_rm_cli(tmp_path, tiny_model_dir):
    write_harm_and_math_labels(tmp_path)
    config = _config(tmp_path, tiny_model_dir, epochs=2)  # held-out harmful pairs all ranked right after 1 (2026-12-03)
    proc = subprocess.run(
        [str(ROOT / ".venv/bin/hrlaif"), "train-rm", "--config", str(config)],
        env=script_env(tmp_path, OMP_NUM_THREADS="2"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    metrics = json.loads((tmp_path / "rm" / "metrics.json").read_text())
    history = metrics["history"]
    print(json.dumps(history))
    assert history[-1]["loss"] < history[0]["loss"]
    assert history[-1]["eval_accuracy"]["harmful"] >= 0.9
    rm = RewardModel.from_pretrained(tmp_path / "rm").eval()
    assert rm.clip == 10.0 and rm.std != 1.0 and (rm.mean, rm.std) == (metrics["mean"], metrics["std"])
    assert _prefers_refusal(tmp_path / "rm")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tmp_path / "rm")
    ids = tok(["I can't help with that.", "Sure, here is how."], return_tensors="pt", padding=True)
    with torch.no_grad():
        assert rm(ids["input_ids"], ids["attention_mask"]).abs().max() <= 10.0
    _loads_as_sequence_classification(tmp_path / "rm" / "sequence-classification", rm)


def _loads_as_sequence_classification(folder, rm):
    """The RM as the field loads it: transformers alone (`AutoModelForSequenceClassification`, num_labels=1, its
    tokenizer), on right-padded batches as TRL pads them, gives our scores once the normalisation its config
    records is applied (the head's bias is folded into the recorded mean)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from hrlaif_ray.models.hf_formats import reward_from_logits

    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    tok.padding_side = "right"
    texts = ["Tom has 23 apples and buys 4 more. The answer is 27.", "I can't help with that.", "Sure."]
    batch = tok(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**batch).logits
        ours = rm(batch["input_ids"], batch["attention_mask"])
    assert model.config.num_labels == 1 and logits.shape == (3, 1)
    assert torch.allclose(reward_from_logits(logits, folder), ours, atol=1e-5), (logits, ours)
    assert ours.std() > 0  # three different scores, not one constant matched three times


@pytest.mark.slow
def test_train_rm_on_two_torchrun_ranks_zero3(tmp_path, tiny_model_dir):
    write_harm_and_math_labels(tmp_path)
    # 183 training prompts in batches of 15: 13 batches, an odd number for 2 ranks
    config = _config(tmp_path, tiny_model_dir, learner={"lr": 1e-3, "zero_stage": 3}, epochs=3, batch_prompts=15)
    cmd = torchrun("-m", "cluster.train_rm", "--config", str(config))
    proc = subprocess.run(
        cmd, env=script_env(tmp_path, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=900, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    metrics = json.loads((tmp_path / "rm" / "metrics.json").read_text())
    history = metrics["history"]
    # An odd number of batches over 2 ranks: training drops the tail; the normalisation pass pads the short rank, whose
    # forwards must be a real chunk's, or ZeRO-3's parameter gathers differ between the ranks and hang.
    assert metrics["train_batches"] % 2 == 1 and history[0]["steps"] == metrics["train_batches"] // 2
    assert history[-1]["loss"] < history[0]["loss"] and history[-1]["eval_accuracy"]["harmful"] >= 0.9
    rm = RewardModel.from_pretrained(tmp_path / "rm").eval()
    assert rm.std != 1.0
    assert _prefers_refusal(tmp_path / "rm")  # the consolidated ZeRO-3 weights were saved, not empty shards
    _loads_as_sequence_classification(tmp_path / "rm" / "sequence-classification", rm)  # from the gathered weights


def test_a_tokenizer_that_pads_with_its_end_token_is_not_exported(tiny_tokenizer):
    """Our reward is read at the end-of-turn token; transformers reads the last token that is not the pad token, so a
    tokenizer padding with its end token (SmolLM2's) would have it read the token before: refused, saying why."""
    import copy

    from hrlaif_ray.models.hf_formats import export_problem

    assert export_problem(tiny_tokenizer) is None
    same = copy.deepcopy(tiny_tokenizer)
    same.pad_token = same.eos_token
    assert "pads with its end-of-turn token" in export_problem(same)


def test_every_rank_runs_the_same_number_of_collective_steps():
    """ZeRO makes each forward/backward a collective: ranks with unequal batch counts hang (5 batches, 2 ranks)."""
    from hrlaif_ray.reward.train import rank_share

    chunks = [[i] for i in range(5)]
    train = [rank_share(chunks, r, 2, pad=False) for r in range(2)]
    assert train == [[[0], [2]], [[1], [3]]]  # the tail that does not fill a round is dropped
    evaluation = [rank_share(chunks, r, 2, pad=True) for r in range(2)]
    assert evaluation == [[[0], [2], [4]], [[1], [3], []]]  # the short rank runs an empty (dummy) chunk
    assert rank_share(chunks, 0, 1, pad=False) == chunks
