"""`hrlaif serve-reward`: the hybrid reward (the online labels: verify, sort, the judge within the sets, red teaming;
and/or the RM) on Ray Serve for other trainers: OpenRLHF's remote reward (`--remote_rm_url <url>/get_reward`) and
veRL's reward function (`hrlaif_ray/reward/remote.py: compute_score`, `compute_score_batch`).

Every request needs `Authorization: Bearer <token>`, the token read from the environment variable `token_env`
(never a flag or a config value). `no_token=true` serves without one, for clients that cannot send headers
(OpenRLHF's client sends none): only on 127.0.0.1, and said on stderr at start. Prints `READY <url>` once the
application is up; SIGTERM or Ctrl-C shuts it down. The contract in full: actors/reward_server.py.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hrlaif_ray.config import ServeRewardJob, dump_config
from hrlaif_ray.entry import load_job
from hrlaif_ray.errors import HrlaifError

EXAMPLE = "group_size=8 reward.kind=online"


def main(argv: list[str] | None = None) -> int:
    job = load_job("hrlaif serve-reward", ServeRewardJob, argv, EXAMPLE)
    token = os.environ.pop(job.token_env, None)  # out of the environment that Ray's processes inherit
    if not token and not job.no_token:
        raise HrlaifError(
            f"set {job.token_env} to the bearer token clients must send (or no_token=true, loopback only)"
        )
    if job.no_token:
        if os.environ.get("RAY_ADDRESS"):  # a running Serve keeps its own proxy's address: maybe not loopback
            raise HrlaifError("no_token=true: only on a Ray this command starts (unset RAY_ADDRESS)")
        token = None
        print(
            f"hrlaif serve-reward: WARNING: no token (no_token=true): any process on this machine can call it; "
            f"bound to {job.host} only",
            file=sys.stderr,
            flush=True,
        )
    out = Path(job.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "serve-reward.yaml").write_text(dump_config(job))

    from actors.reward_server import reward_app
    from cluster.serving import serve_until_stopped

    serve_until_stopped("hrlaif-reward", job.host, job.port, lambda: reward_app(job, token))
    return 0


if __name__ == "__main__":
    sys.exit(main())
