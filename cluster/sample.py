"""`hrlaif sample`: K responses per prompt from the policy through the vLLM rollout actors, into a rollouts
Parquet (token ids and the sampling distribution's logprobs kept), the input of `hrlaif label`.

Resumable: a rerun finds the prompts already sampled in the output and samples only the rest; the file is
rewritten atomically with both. `ray job submit ... -- python -m cluster.sample --config job.yaml` on a cluster.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hrlaif_ray.config import ResourcePlan, SampleJob
from hrlaif_ray.data.chat import prompt_token_ids
from hrlaif_ray.data.records import Response, RolloutRecord
from hrlaif_ray.data.schemas import read_records, write_records
from hrlaif_ray.entry import load_job


def run_sample(job: SampleJob, log=print) -> dict:
    import ray
    from transformers import AutoTokenizer

    from actors.rollout import RolloutGroup, start_engines
    from cluster.connect import connect_ray
    from cluster.topology import Topology

    prompts = read_records(job.prompts, "prompts")
    out = Path(job.output)
    done = read_records(out, "rollouts") if out.is_file() else []
    have = {r.prompt_id for r in done}
    todo = [p for p in prompts if p.id not in have]
    if not todo:
        return {"prompts": len(prompts), "sampled": 0, "already": len(done), "output": str(out)}
    started = connect_ray(log_to_driver=False)
    topo = Topology(ResourcePlan(bundle=job.bundle, rollout=job.engines), ("rollout",))
    try:
        tok = AutoTokenizer.from_pretrained(job.policy)
        r = job.rollout
        options, cache = topo.options("rollout"), str(out.parent / ".cache")
        group = RolloutGroup(start_engines(job.policy, r, options, job.engines.threads, job.seed, cache))
        for start in range(0, len(todo), job.chunk):
            chunk = todo[start : start + job.chunk]
            ids = [prompt_token_ids(tok, p.text, r.max_model_len - r.max_new_tokens) for p in chunk]
            samples = group.generate(
                ids, r.samples_per_prompt, r.max_new_tokens, r.temperature, r.top_p, job.seed + start
            )
            by_prompt: dict[int, list[Response]] = {}
            for s in samples:
                text = tok.decode(s.token_ids, skip_special_tokens=True)
                by_prompt.setdefault(s.prompt_index, []).append(
                    Response(text, s.token_ids, s.logprobs, s.finish_reason)
                )
            done += [RolloutRecord(p.id, p.category, p.text, ids[i], by_prompt[i]) for i, p in enumerate(chunk)]
            write_records(out, done, "rollouts")  # atomic: the file holds every finished chunk
            log(json.dumps({"sampled": len(done), "of": len(prompts)}))
    finally:
        topo.shutdown()
        if started:
            ray.shutdown()
    return {"prompts": len(prompts), "sampled": len(todo), "already": len(have), "output": str(out)}


def main(argv: list[str] | None = None) -> int:
    print(json.dumps(run_sample(load_job("hrlaif sample", SampleJob, argv, "rollout.samples_per_prompt=4"))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
