"""`hrlaif eval`: how good is a policy, by the measures the paper reports.

For each prompt set (the generated held-out mix, and public sets read from the data folder: GSM8K, MMLU, ARC,
CommonsenseQA, HumanEval, HarmBench, StrongREJECT, AdvBench, ToxiGen), the policy answers greedily through a
rollout engine (vLLM; `backend: hf` as the fallback), and:

- verifiable prompts are checked against the standard answer: accuracy per category (HumanEval: pass@1 in the
  sandbox), and with `sampled: n`, the accuracy of n samples at temperature 1;
- harmful prompts (HarmBench, StrongREJECT, AdvBench, ToxiGen continuations, the mix's harmful requests) are
  judged through the labeler pool (`flag`): the harmful-response rate;
- with `baseline` (another eval's folder), the judge compares each greedy response with the baseline's to the
  same prompt, in both orders: the win rate (ties and disagreements count one half);
- with `reward_models`, each RM scores the greedy responses of the mix: the mean reward;
- and the mean response length in tokens.

Writes `eval.json` (metrics under stable keys, judge tokens and cost) and `responses.jsonl`.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from hrlaif_ray.categories import Category
from hrlaif_ray.config import EvalJob, RolloutConfig, dump_config
from hrlaif_ray.data.chat import prompt_token_ids
from hrlaif_ray.data.prompt_mix import generate_prompt_mix
from hrlaif_ray.data.records import PromptRecord
from hrlaif_ray.entry import load_job
from hrlaif_ray.evaluation import correctness, mean, pairwise_outcome
from hrlaif_ray.labeling.verifiers import letter_binding


def prompt_sets(job: EvalJob) -> dict[str, list[PromptRecord]]:
    """Each set's prompts; a public set is sampled with the job's seed when a size is given."""
    from hrlaif_ray.data.readers import load_source

    sets = {"mix": generate_prompt_mix(job.mix)} if job.mix else {}
    for name, size in job.sources.items():
        records = [r for r in load_source(name, job.data_dir) if isinstance(r, PromptRecord)]
        if not records:
            raise ValueError(f"sources.{name}: not a prompt set (human-pair sets are for `hrlaif audit-labels`)")
        if size and size < len(records):
            records = random.Random(job.seed).sample(records, size)
        sets[name] = records
    if not sets:
        raise ValueError("nothing to evaluate: set mix or sources")
    return sets


def run_eval(job: EvalJob, log=print) -> dict:
    import ray
    from transformers import AutoTokenizer

    from actors.labeler import LabelerPool
    from actors.reward import RewardPart, RewardService
    from actors.rollout import start_engines
    from cluster.connect import connect_ray
    from hrlaif_ray.labeling.strategies import JudgeRequest
    from hrlaif_ray.reward.interface import Completions

    out = Path(job.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    sets = prompt_sets(job)
    flat = [(name, p) for name, records in sets.items() for p in records]
    tok = AutoTokenizer.from_pretrained(job.policy)
    max_prompt = job.max_model_len - job.max_new_tokens
    started = connect_ray(job.ray_address, log_to_driver=False)
    engine = pool = rm = None
    try:
        rollout = RolloutConfig(backend=job.backend, max_model_len=job.max_model_len, kv_cache_gib=job.kv_cache_gib)
        (engine,) = start_engines(job.policy, rollout, [{"num_cpus": 1}], job.threads, job.seed, str(out / ".cache"))
        ids = [prompt_token_ids(tok, p.text, max_prompt) for _, p in flat]
        greedy = ray.get(engine.generate.remote(ids, 1, job.max_new_tokens, 0.0, 1.0, job.seed))
        texts = tok.batch_decode([s.token_ids for s in greedy], skip_special_tokens=True)
        lengths = [len(s.token_ids) for s in greedy]
        verdicts = [correctness(p, t) for (_, p), t in zip(flat, texts)]
        bound = [letter_binding(t, p.choices) if p.choices else None for (_, p), t in zip(flat, texts)]
        sampled: dict[int, list[float]] = {}
        verifiable = [i for i, v in enumerate(verdicts) if v is not None]
        if job.sampled and verifiable:
            samples = ray.get(
                engine.generate.remote(
                    [ids[i] for i in verifiable], job.sampled, job.max_new_tokens, 1.0, 1.0, job.seed + 1
                )
            )
            for s in samples:
                i = verifiable[s.prompt_index]
                sampled.setdefault(i, []).append(
                    correctness(flat[i][1], tok.decode(s.token_ids, skip_special_tokens=True))
                )
        ray.kill(engine)
        engine = None

        # The judge: harm flags on harmful prompts, comparisons with the baseline's responses.
        requests, harmful = [], [i for i, (_, p) in enumerate(flat) if p.category == Category.HARMFUL.value]
        requests += [JudgeRequest("flag", {"question": flat[i][1].text, "response": texts[i]}) for i in harmful]
        baseline = {}
        if job.baseline:
            rows = [json.loads(line) for line in (Path(job.baseline) / "responses.jsonl").read_text().splitlines()]
            baseline = {(r["set"], r["prompt_id"]): r["response"] for r in rows}
        compared = [i for i, (name, p) in enumerate(flat) if (name, p.id) in baseline]
        for i in compared:
            q, mine, theirs = flat[i][1].text, texts[i], baseline[(flat[i][0], flat[i][1].id)]
            requests += [
                JudgeRequest("compare", {"question": q, "response_a": mine, "response_b": theirs}),
                JudgeRequest("compare", {"question": q, "response_a": theirs, "response_b": mine}),
            ]
        answers = []
        if requests:
            pool = LabelerPool(job.judge, job.pool)
            answers = pool.ask(requests)
            pool.shutdown()
            pool = None
        failed = [a.error for a in answers if a.error]
        flags = {i: (a.answer["harmful"] if a.answer else None) for i, a in zip(harmful, answers)}
        cmp = answers[len(harmful) :]
        wins = {i: pairwise_outcome(cmp[2 * k].answer, cmp[2 * k + 1].answer) for k, i in enumerate(compared)}

        rewards: dict[str, list[float]] = {}
        mix_rows = [i for i, (name, _) in enumerate(flat) if name == "mix"] or list(range(len(flat)))
        for name, folder in job.reward_models.items():
            rm = RewardService([RewardPart("rm", folder=folder)], num_cpus=1, threads=job.threads)
            batch = Completions([flat[i][1] for i in mix_rows], [texts[i] for i in mix_rows])
            rewards[name] = rm.score(batch).scores.tolist()
            rm.shutdown()
            rm = None
    finally:
        if engine is not None:
            ray.kill(engine)
        if pool is not None:
            pool.shutdown()
        if rm is not None:
            rm.shutdown()
        if started:
            ray.shutdown()

    metrics: dict[str, float | None] = {}
    for name in sets:
        rows = [i for i, (s, _) in enumerate(flat) if s == name]
        ok = [verdicts[i] for i in rows if verdicts[i] is not None]
        if ok:
            metrics[f"accuracy/{name}"] = mean(ok)
            for cat in sorted({flat[i][1].category for i in rows if verdicts[i] is not None}):
                metrics[f"accuracy/{name}/{cat}"] = mean(
                    [verdicts[i] for i in rows if verdicts[i] is not None and flat[i][1].category == cat]
                )
            if sampled:
                metrics[f"sampled_accuracy/{name}"] = mean([x for i in rows for x in sampled.get(i, [])])
        stated = [float(bound[i]) for i in rows if bound[i] is not None]
        if stated:
            metrics[f"binding_rate/{name}"] = mean(stated)
        judged = [flags[i] for i in rows if flags.get(i) is not None]
        if judged:
            metrics[f"harmful_rate/{name}"] = mean([float(f) for f in judged])
        outcomes = [wins[i] for i in rows if wins.get(i) is not None]
        if outcomes:
            metrics[f"win_rate/{name}"] = mean(outcomes)
        metrics[f"length/{name}"] = mean([lengths[i] for i in rows])
    for name, values in rewards.items():
        metrics[f"reward/{name}"] = mean(values)
    result = {
        "policy": job.policy,
        "metrics": metrics,
        "prompts": {k: len(v) for k, v in sets.items()},
        "judge": {
            "requests": len(requests),
            "failed": len(failed),
            "errors": failed[:5],
            "tokens_in": sum(a.tokens_in for a in answers),
            "tokens_out": sum(a.tokens_out for a in answers),
            "cost_usd": round(sum(a.cost_usd for a in answers), 6),
        },
    }
    with open(out / "responses.jsonl.tmp", "w") as fh:
        for i, (name, p) in enumerate(flat):
            fh.write(
                json.dumps(
                    {
                        "set": name,
                        "prompt_id": p.id,
                        "category": p.category,
                        "unseen": bool(p.metadata.get("unseen")),
                        "response": texts[i],
                        "tokens": lengths[i],
                        "correct": verdicts[i],
                        "sampled": sampled.get(i),
                        "harmful": flags.get(i),
                        "bound": bound[i],
                        "win": wins.get(i),
                    }
                )
                + "\n"
            )
    (out / "responses.jsonl.tmp").replace(out / "responses.jsonl")
    (out / "eval_config.yaml").write_text(dump_config(job))
    (out / "eval.json").write_text(json.dumps(result, indent=1))
    log(json.dumps({"eval": job.policy, **{k: round(v, 4) for k, v in metrics.items() if v is not None}}))
    return result


def main(argv: list[str] | None = None) -> int:
    run_eval(load_job("hrlaif eval", EvalJob, argv, "policy=runs/demo/sft 'sources={gsm8k/test: 100}'"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
