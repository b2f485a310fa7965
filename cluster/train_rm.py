"""`hrlaif train-rm --config job.yaml` in one process, or several ranks:
`torchrun --nproc-per-node 2 -m cluster.train_rm --config job.yaml`.

`kind: implicit` trains the reward model through DPO on Ray instead (`cluster/dpo.py`, the `implicit` settings, the
starting policy as the reference), then measures the implicit reward's mean and std on the training responses and
writes the RM folder (`hrlaif_ray/reward/implicit.py`) with the same metrics.json as a scalar RM's."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from actors.runtime import process_defaults
from hrlaif_ray.config import RMTrainJob, dump_config
from hrlaif_ray.entry import load_job
from hrlaif_ray.reward.train import train_reward_model


def train_implicit_rm(job: RMTrainJob, log=print) -> dict:
    """DPO on the labels from `init`, then the RM folder: the DPO policy, the tokenizer, implicit_reward.json."""
    from transformers import AutoTokenizer

    from cluster.dpo import run_dpo
    from hrlaif_ray.data.binding import bound_labels
    from hrlaif_ray.data.chat import pad_token_id, prompt_token_ids, response_token_ids
    from hrlaif_ray.reward.implicit import ImplicitRewardModel, write_implicit_folder
    from hrlaif_ray.reward.train import held_out

    out = Path(job.output_dir)
    dpo = job.implicit_job()
    result = run_dpo(dpo)
    # Normalisation: the raw implicit reward of every labeled training response (as the scalar RM's is measured).
    labels, prompts = bound_labels(job.labels_dir, job.prompts)
    tok = AutoTokenizer.from_pretrained(job.init)
    heads, tails = [], []
    for label in labels:
        if label.status != "ok" or held_out(label.prompt_id, dpo.eval_fraction):
            continue
        head = prompt_token_ids(tok, prompts[label.prompt_id].text, dpo.max_prompt_tokens)
        for r in label.responses:
            heads.append(head)
            tails.append(response_token_ids(tok, r.text)[: dpo.max_response_tokens])
    policy = result["policy"]
    probe = ImplicitRewardModel.from_parts(policy, job.init, dpo.beta, job.clip)
    raw = probe.raw_rewards(heads, tails, pad_token_id(tok), 64)
    mean, std = (raw.mean().item(), raw.std().clamp(min=1e-6).item()) if job.normalize and len(raw) > 1 else (0.0, 1.0)
    write_implicit_folder(out, policy, job.init, dpo.beta, job.clip, mean, std)
    last = result["history"][-1] if result["history"] else {}
    metrics = {
        "kind": "implicit",
        "history": [
            {
                "epoch": dpo.epochs,
                "eval_accuracy_all": last.get("eval/accuracy"),
                "eval_accuracy": {k.split("/")[-1]: v for k, v in last.items() if k.startswith("eval/accuracy/")},
                "steps": result["steps"],
            }
        ],
        "normalization": {"mean": mean, "std": std, "responses": len(raw)},
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    (out / "rm_config.yaml").write_text(dump_config(job))
    log(json.dumps({"implicit_rm": str(out), **metrics["normalization"], "eval_accuracy": last.get("eval/accuracy")}))
    return metrics


def main(argv: list[str] | None = None) -> int:
    process_defaults()  # DeepSpeed's accelerator where torchrun (not `hrlaif`) started this rank
    job = load_job("hrlaif train-rm", RMTrainJob, argv, "epochs=3 lr=5e-5")
    if job.kind == "implicit":
        train_implicit_rm(job)
    else:
        train_reward_model(job)
    return 0


if __name__ == "__main__":
    sys.exit(main())
