"""The simulated judge as an OpenAI-compatible chat-completions server (Starlette on uvicorn).

Endpoints: POST /v1/chat/completions, GET /v1/models, GET /billing (what it would have charged: tokens of
every attempt it processed, including those that timed out or dropped, as a real provider may). Faults are
drawn per (request hash, attempt), the attempt being the SDK's `x-stainless-retry-count` header plus the
labeler's `X-Hrlaif-Reask`, and stop after `max_faulty_attempts`, so a rerun meets the same faults and every
request eventually succeeds. Binds 127.0.0.1 unless told otherwise; prints `READY <base_url>` when listening.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import socket
import sys
import time
from collections import Counter
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from hrlaif_ray.entry import job_parser, parse_job
from hrlaif_ray.judges.sim_judge import SimJudge, SimJudgeConfig, count_tokens, uniform
from hrlaif_ray.labeling.judge_prompts import extract_payload


def build_app(cfg: SimJudgeConfig) -> Starlette:
    judge = SimJudge(cfg)
    billing: Counter = Counter()

    def bill(kind: str, tokens_in: int, tokens_out: int = 0) -> None:
        billing["requests"] += 1
        billing[f"status_{kind}"] += 1
        billing["tokens_in"] += tokens_in
        billing["tokens_out"] += tokens_out

    async def chat(request: Request):
        try:
            body = await request.json()
            messages, model = body["messages"], str(body.get("model", "sim-judge"))
        except (json.JSONDecodeError, KeyError, TypeError):
            return JSONResponse(
                {"error": {"message": "body must be JSON with 'messages'", "type": "invalid_request_error"}}, 400
            )
        parsed = extract_payload(messages)
        if parsed is None:
            return JSONResponse(
                {
                    "error": {
                        "message": "the simulated judge answers only hrlaif judge prompts",
                        "type": "invalid_request_error",
                    }
                },
                400,
            )
        task, payload = parsed
        rid = hashlib.sha256(json.dumps([model, messages], sort_keys=True).encode()).hexdigest()
        retry = int(request.headers.get("x-stainless-retry-count", "0") or 0)
        reask = int(request.headers.get("x-hrlaif-reask", "0") or 0)
        tokens_in = count_tokens(json.dumps(messages))
        stepped = cfg.latency_step_after is not None and billing["requests"] >= cfg.latency_step_after
        latency_ms = cfg.latency_step_ms if stepped else cfg.latency_ms
        if latency_ms:
            await asyncio.sleep(latency_ms / 1000)

        if retry + reask < cfg.max_faulty_attempts:
            kind = _pick_fault(uniform(cfg.seed, rid, "fault", retry, reask), cfg)
            if kind == "429":
                bill("429", 0)
                return JSONResponse(
                    {"error": {"message": "rate limited", "type": "rate_limit_error"}},
                    429,
                    headers={"retry-after": f"{cfg.retry_after_s:g}"},
                )
            if kind == "500":
                bill("500", 0)
                return JSONResponse({"error": {"message": "internal error", "type": "server_error"}}, 500)
            if kind == "timeout":  # processed (and billed) but answered too late: the client has given up
                bill("timeout", tokens_in)
                await asyncio.sleep(cfg.timeout_s)
                return JSONResponse({"error": {"message": "answer held back", "type": "timeout"}}, 504)
            if kind == "drop":
                bill("drop", tokens_in)
                return _DroppedConnection()

        answer = json.dumps(judge.answer(rid, task, payload))
        finish = "stop"
        v = uniform(cfg.seed, rid, "malformed", reask)
        if reask < cfg.max_faulty_attempts and v < cfg.p_malformed:
            answer = "Sure! Here is my verdict: " + answer.replace('"', "")
        elif reask < cfg.max_faulty_attempts and v < cfg.p_malformed + cfg.p_truncated:
            answer, finish = answer[: max(1, len(answer) // 2)], "length"
        tokens_out = count_tokens(answer)
        bill("200", tokens_in, tokens_out)
        return JSONResponse(
            {
                "id": f"chatcmpl-{rid[:24]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": finish}],
                "usage": {
                    "prompt_tokens": tokens_in,
                    "completion_tokens": tokens_out,
                    "total_tokens": tokens_in + tokens_out,
                },
            }
        )

    async def models(_: Request):
        return JSONResponse({"object": "list", "data": [{"id": "sim-judge", "object": "model", "owned_by": "hrlaif"}]})

    async def billing_view(_: Request):
        return JSONResponse(dict(billing))

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", models),
            Route("/billing", billing_view),
        ]
    )


def _pick_fault(u: float, cfg: SimJudgeConfig) -> str | None:
    """The fault a uniform draw `u` falls on, each taking its probability's share of [0, 1)."""
    for kind, p in (("429", cfg.p_429), ("500", cfg.p_500), ("timeout", cfg.p_timeout), ("drop", cfg.p_drop)):
        if u < p:
            return kind
        u -= p
    return None


class _DroppedConnection:
    """An ASGI response that promises a body and closes the connection after a few bytes."""

    async def __call__(self, scope, receive, send):
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"id": ', "more_body": True})
        raise ConnectionAbortedError("simulated dropped connection")  # uvicorn closes the socket


class _HideSimulatedDrops(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ConnectionAbortedError))


def serve(cfg: SimJudgeConfig, host: str = "127.0.0.1", port: int = 0) -> None:
    logging.getLogger("uvicorn.error").addFilter(_HideSimulatedDrops())
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)  # before READY: a client that connects at once waits in the backlog instead of being refused
    server = uvicorn.Server(
        uvicorn.Config(build_app(cfg), log_level="warning", access_log=False, timeout_keep_alive=30)
    )
    print(f"READY http://{host}:{sock.getsockname()[1]}/v1", flush=True)
    server.run(sockets=[sock])


def main(argv: list[str] | None = None) -> None:
    parser = job_parser(
        "hrlaif serve-judge", SimJudgeConfig, "latency_ms=200 p_429=0.1", "Serve the simulated judge over HTTP."
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed in the READY line)")
    parser.add_argument(
        "--model",
        help="serve this model folder as the judge with vLLM's OpenAI-compatible server instead (the simulated "
        "judge's keys do not apply); on CPU with a KV cache of --kv-cache-gib",
    )
    parser.add_argument("--served-model-name", default="judge", help="--model: the name requests give as `model`")
    parser.add_argument("--max-model-len", type=int, default=2048, help="--model: the longest prompt + answer")
    parser.add_argument("--kv-cache-gib", type=float, default=1.0, help="--model on CPU: vLLM's KV cache in GiB")
    parser.add_argument("--log", default="runs/vllm-judge.log", help="--model: vLLM's own log (folders made)")
    cfg, args = parse_job(parser, SimJudgeConfig, argv)
    if args.model:
        serve_model(args)
        return
    serve(cfg, args.host, args.port)


def serve_model(args) -> None:
    """`--model DIR`: vLLM over the folder on 127.0.0.1 until interrupted (its own log in `--log`)."""
    import signal
    import time

    from hrlaif_ray.config import HUB_HINT, model_folder_problem
    from hrlaif_ray.errors import ConfigError
    from hrlaif_ray.judges.launch import vllm_server

    if problem := model_folder_problem(args.model):
        raise ConfigError(f"--model: {args.model!r} is not a model folder ({problem}); {HUB_HINT}")
    if args.host != "127.0.0.1":
        raise ConfigError("--model: vLLM's server binds 127.0.0.1 only here (it has no token)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # `kill` stops vLLM too (the block below exits)
    Path(args.log).parent.mkdir(parents=True, exist_ok=True)
    with vllm_server(
        args.model,
        args.served_model_name,
        max_model_len=args.max_model_len,
        timeout_s=600,
        log_path=args.log,
        port=args.port,
        kv_cache_gib=args.kv_cache_gib,
    ) as base:
        print(f"READY {base} (model {args.served_model_name})", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    sys.exit(main())
