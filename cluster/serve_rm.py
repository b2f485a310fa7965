"""`hrlaif serve-rm`: the reward service over HTTP, for users who run the RM apart from training.

POST /score with {"prompts": [...], "responses": [...]} or {"sequences": [[token ids], ...]} returns
{"rewards": [...]} (clipped inside the RM's forward). Every request needs `Authorization: Bearer <token>`, the
token read from the environment variable named by --token-env (never a flag, so it stays out of process lists
and logs). Binds 127.0.0.1 unless --host says otherwise; prints `READY <url>` when listening.
"""

from __future__ import annotations

import hmac
import os
import socket
import sys
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from hrlaif_ray.errors import HrlaifError, OneLineParser


def build_app(service, token: str) -> Starlette:
    async def score(request: Request):
        header = request.headers.get("authorization", "")
        if not hmac.compare_digest(header.encode(), f"Bearer {token}".encode()):
            return JSONResponse({"error": "missing or wrong bearer token"}, 401)
        try:
            body = await request.json()
            if "sequences" in body:
                rewards = service.score_ids([[int(t) for t in s] for s in body["sequences"]])
            else:
                rewards = service.score_texts([str(p) for p in body["prompts"]], [str(r) for r in body["responses"]])
        except (ValueError, KeyError, TypeError) as exc:
            return JSONResponse({"error": f"bad request: {exc}"}, 400)
        return JSONResponse({"rewards": rewards.tolist()})

    async def health(_: Request):
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/score", score, methods=["POST"]), Route("/health", health)])


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="hrlaif serve-rm", description=__doc__.splitlines()[0])
    parser.add_argument("--rm", required=True, help="reward-model folder (hrlaif train-rm's output)")
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token-env", default="HRLAIF_RM_TOKEN", help="environment variable holding the bearer token")
    args = parser.parse_args(argv)
    if not (Path(args.rm) / "config.json").is_file():
        raise HrlaifError(f"--rm {args.rm}: not a reward-model folder (no config.json; `hrlaif train-rm` writes one)")
    token = os.environ.get(args.token_env)
    if not token:
        print(f"hrlaif serve-rm: error: set {args.token_env} to the bearer token clients must send", file=sys.stderr)
        return 2

    from actors.reward import RewardService
    from cluster.connect import connect_ray

    connect_ray(log_to_driver=False, configure_logging=False)
    service = RewardService(args.rm, replicas=args.replicas)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(2048)  # listening before READY: a client that connects before uvicorn's start is queued, not refused
    print(f"READY http://{args.host}:{sock.getsockname()[1]}", flush=True)
    uvicorn.Server(uvicorn.Config(build_app(service, token), log_level="warning", access_log=False)).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
