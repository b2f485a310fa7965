"""`hrlaif rm-probe`: how often a reward model scores a correct response above a wrong one (and a refusal above a
compliance) on held-out policy samples, per category, for the reserved ("unseen") prompts and the others apart.
The mechanism's link 2 (`hrlaif_ray/mechanism.py`); the pipeline runs it on each arm's RM."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from actors.runtime import start_process
from hrlaif_ray.config import RMProbeJob
from hrlaif_ray.data.binding import bound_rollouts
from hrlaif_ray.entry import load_job
from hrlaif_ray.mechanism import correct_above_wrong


def run_probe(job: RMProbeJob) -> dict:
    from hrlaif_ray.reward.probe import score_rollouts

    start_process(job.threads)
    rollouts, prompts = bound_rollouts(job.rollouts, job.prompts)
    groups = score_rollouts(job.rm, prompts, rollouts, reference=job.reference)

    def rates(keep) -> dict:
        return correct_above_wrong((g["category"], g["scores"], g["truths"]) for g in groups if keep(g))

    result = {
        "rm": job.rm,
        "reference": job.reference,
        "rollouts": job.rollouts,
        "prompts": len(groups),
        "unseen": rates(lambda g: g["unseen"]),
        "seen": rates(lambda g: not g["unseen"]),
        "all": rates(lambda g: True),
        "groups": groups,
    }
    out = Path(job.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(out)
    return result


def main(argv: list[str] | None = None) -> int:
    result = run_probe(load_job("hrlaif rm-probe", RMProbeJob, argv, "rm=runs/demo/seed-1/hrlaif/rm"))
    print(json.dumps({k: result[k] for k in ("prompts", "unseen", "seen")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
