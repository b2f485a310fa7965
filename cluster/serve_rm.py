"""`hrlaif serve-rm`: the reward model as a Ray Serve application, for users who run the RM apart from training.

POST /score with {"prompts": [...], "responses": [...]} or {"sequences": [[token ids], ...]} returns
{"rewards": [...]} (clipped inside the RM's forward); GET /health. Every /score request needs
`Authorization: Bearer <token>`, the token read from the environment variable named by --token-env (never a flag,
so it stays out of process lists and logs; the replicas hold only its digest). Serve's HTTP proxy binds
127.0.0.1 unless --host says otherwise. Replicas: --replicas fixed, or autoscaling between --min-replicas and
--max-replicas on the ongoing requests per replica; requests are batched (--max-batch-size). Prints
`READY <url>` once every replica is up; SIGTERM or Ctrl-C shuts the application down. The contract in full:
actors/rm_server.py.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hrlaif_ray.config import model_folder_problem
from hrlaif_ray.errors import HrlaifError, OneLineParser


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="hrlaif serve-rm", description=__doc__.splitlines()[0])
    parser.add_argument("--rm", required=True, help="reward-model folder (hrlaif train-rm's output)")
    parser.add_argument("--replicas", type=int, default=1, help="fixed replicas (unless --max-replicas is larger)")
    parser.add_argument("--min-replicas", type=int, default=None, help="autoscaling lower bound (default --replicas)")
    parser.add_argument("--max-replicas", type=int, default=None, help="autoscaling upper bound (default --replicas)")
    parser.add_argument("--target-ongoing-requests", type=float, default=16, help="autoscaling target per replica")
    parser.add_argument("--num-cpus", type=float, default=1, help="CPUs each replica reserves")
    parser.add_argument("--num-gpus", type=float, default=0, help="GPUs each replica reserves")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each replica")
    parser.add_argument("--max-batch-size", type=int, default=32, help="requests batched into one forward")
    parser.add_argument("--max-request-bytes", type=int, default=8 * 2**20, help="larger bodies get 413")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--token-env", default="HRLAIF_RM_TOKEN", help="environment variable holding the bearer token")
    args = parser.parse_args(argv)
    if problem := model_folder_problem(args.rm):  # a whole folder, or an adapter folder on one
        raise HrlaifError(f"--rm {args.rm}: not a reward-model folder ({problem}; `hrlaif train-rm` writes one)")
    low = args.min_replicas or args.replicas
    high = max(low, args.max_replicas or args.replicas)
    if low < 1:
        raise HrlaifError(f"--min-replicas/--replicas must be at least 1, got {low}")
    token = os.environ.pop(args.token_env, None)  # out of the environment that Ray's processes inherit
    if not token:
        raise HrlaifError(f"set {args.token_env} to the bearer token clients must send")

    from actors.rm_server import rm_app
    from cluster.serving import serve_until_stopped

    def app():
        return rm_app(
            str(Path(args.rm).resolve()),
            token,
            min_replicas=low,
            max_replicas=high,
            target_ongoing_requests=args.target_ongoing_requests,
            num_cpus=args.num_cpus,
            num_gpus=args.num_gpus,
            threads=args.threads,
            max_request_bytes=args.max_request_bytes,
            max_batch_size=args.max_batch_size,
        )

    serve_until_stopped("hrlaif-rm", args.host, args.port, app)
    return 0


if __name__ == "__main__":
    sys.exit(main())
