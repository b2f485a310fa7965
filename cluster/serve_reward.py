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
import signal
import sys
import threading
from pathlib import Path

from hrlaif_ray.config import ServeRewardJob, dump_config
from hrlaif_ray.entry import job_parser, parse_job
from hrlaif_ray.errors import HrlaifError

EXAMPLE = "group_size=8 reward.kind=online"


def main(argv: list[str] | None = None) -> int:
    parser = job_parser("hrlaif serve-reward", ServeRewardJob, EXAMPLE)
    job, _ = parse_job(parser, ServeRewardJob, argv)
    token = os.environ.pop(job.token_env, None)  # out of the environment that Ray's processes inherit
    if not token and not job.no_token:
        raise HrlaifError(
            f"set {job.token_env} to the bearer token clients must send (or no_token=true, loopback only)"
        )
    if job.no_token:
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

    import ray
    from ray import serve

    from actors.reward_server import reward_app
    from cluster.connect import connect_ray
    from hrlaif_ray.zero import free_port

    own_cluster = not os.environ.get("RAY_ADDRESS")  # else we joined someone's cluster: leave it as it was
    connect_ray(log_to_driver=False, configure_logging=False)
    stop = threading.Event()  # after Ray's start, whose own SIGTERM handler would dump a stack trace first
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    port = job.port or free_port()
    serve.start(http_options={"host": job.host, "port": port}, proxy_location="HeadOnly")
    try:
        serve.run(reward_app(job, token), name="hrlaif-reward", route_prefix="/")
        print(f"READY http://{job.host}:{port}", flush=True)
        stop.wait()
    finally:
        if own_cluster:  # the local Ray this command started goes, Serve and the labelers with it
            ray.shutdown()
        else:  # someone else's cluster: only our application goes
            serve.delete("hrlaif-reward")
    return 0


if __name__ == "__main__":
    sys.exit(main())
