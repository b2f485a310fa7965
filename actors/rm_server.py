"""The reward model as a Ray Serve deployment: `hrlaif serve-rm`'s replicas.

Contract (what clients rely on):
- `POST /score` with {"sequences": [[token ids], ...]} or {"prompts": [...], "responses": [...]} returns
  {"rewards": [...]} (normalised and clipped inside the RM's forward).
- Every /score request needs `Authorization: Bearer <token>`, checked against the token's digest
  (`actors/http_front.py`).
- A body over `max_request_bytes` is refused (413) before it is read when its Content-Length says so; a body
  that is not the JSON above, an empty sequence, a token id outside the vocabulary or a sequence longer than the
  model's positions gets a 400 naming what is wrong.
- `GET /health` answers {"ok": true, ...} without a token (for load balancers and probes).

Requests are batched (`serve.batch`): the sequences of up to `max_batch_size` concurrent requests go through one
length-sorted forward, run in a worker thread so the replica's event loop keeps accepting requests.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

from actors.http_front import authorized, read_json, token_digest
from hrlaif_ray.data.chat import pad_token_id, prompt_token_ids, response_token_ids
from hrlaif_ray.reward.remote import BadRequest


def parse_body(body: Any, vocab: int, max_len: int) -> tuple[str, Any]:
    """("sequences", [[int]]) or ("texts", ([prompts], [responses])) from a decoded JSON body; BadRequest names
    the key and the item that is wrong."""
    if not isinstance(body, dict):
        raise BadRequest(f"the body must be a JSON object, got {type(body).__name__}")
    if "sequences" in body:
        seqs = body["sequences"]
        if not isinstance(seqs, list) or not seqs:
            raise BadRequest("'sequences' must be a non-empty list of token-id lists")
        for i, s in enumerate(seqs):
            if not isinstance(s, list) or not s:
                raise BadRequest(f"sequences[{i}]: every sequence needs at least one token")
            if not all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < vocab for t in s):
                raise BadRequest(f"sequences[{i}]: token ids must be integers in [0, {vocab})")
            if len(s) > max_len:
                raise BadRequest(f"sequences[{i}]: {len(s)} tokens, the model reads at most {max_len}")
        return "sequences", seqs
    if "prompts" in body and "responses" in body:
        prompts, responses = body["prompts"], body["responses"]
        ok = isinstance(prompts, list) and isinstance(responses, list)
        if not ok or not prompts or len(prompts) != len(responses):
            raise BadRequest("'prompts' and 'responses' must be non-empty lists of equal length")
        if not all(isinstance(t, str) for t in prompts + responses):
            raise BadRequest("'prompts' and 'responses' must hold strings")
        return "texts", (prompts, responses)
    raise BadRequest("expected 'sequences', or 'prompts' and 'responses'")


@serve.deployment(name="reward-model", max_ongoing_requests=64)
class RMServer:
    """One replica: the RM on its device, the tokenizer, the token's digest."""

    def __init__(
        self,
        folder: str,
        token_sha256: str,
        threads: int = 1,
        max_request_bytes: int = 8 * 2**20,
        max_batch_size: int = 32,
        batch_wait_s: float = 0.005,
        micro_batch: int | None = None,
    ):
        from transformers import AutoTokenizer

        from actors.runtime import actor_device, start_process
        from hrlaif_ray.reward.implicit import load_reward_model

        start_process(threads)
        self.device = actor_device()
        self.rm = load_reward_model(folder).to(self.device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.pad = pad_token_id(self.tokenizer)
        # an implicit RM reads the response's likelihood, so it needs to know where each response starts: texts
        self.implicit = getattr(self.rm, "reads_responses", False)
        config = (self.rm.policy if self.implicit else self.rm.backbone).config
        self.vocab = int(config.vocab_size)
        self.max_len = int(getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", 2**31))
        self.digest, self.max_bytes, self.micro_batch = bytes.fromhex(token_sha256), max_request_bytes, micro_batch
        self._score.set_max_batch_size(max_batch_size)
        self._score.set_batch_wait_timeout_s(batch_wait_s)

    async def __call__(self, request: Request) -> JSONResponse:
        path = request.url.path.rstrip("/")
        if path.endswith("/health") and request.method == "GET":
            return JSONResponse({"ok": True, "model": "reward", "device": self.device})
        if not path.endswith("/score") or request.method != "POST":
            return JSONResponse({"error": "not found: POST /score or GET /health"}, 404)
        if not authorized(request, self.digest):
            return JSONResponse({"error": "missing or wrong bearer token"}, 401)
        body, refused = await read_json(request, self.max_bytes)
        if refused is not None:
            return refused
        try:  # checking up to max_bytes of token ids: off the event loop
            kind, payload = await asyncio.to_thread(parse_body, body, self.vocab, self.max_len)
        except BadRequest as exc:
            return JSONResponse({"error": f"bad request: {exc}"}, 400)
        if kind != "texts" and self.implicit:
            return JSONResponse(
                {"error": "bad request: an implicit reward model scores texts (prompts and responses), not token ids"},
                400,
            )
        if kind == "texts":
            payload = await asyncio.to_thread(self._encode, *payload)
            if any(len(s) > self.max_len for s, _ in payload):
                return JSONResponse({"error": f"bad request: a prompt + response over {self.max_len} tokens"}, 400)
        return JSONResponse({"rewards": await self._score(payload)})

    def _encode(self, prompts: list[str], responses: list[str]) -> list[tuple[list[int], int]]:
        """Each prompt + response as token ids, with where the response starts."""
        heads = [prompt_token_ids(self.tokenizer, p, self.max_len) for p in prompts]
        return [(h + response_token_ids(self.tokenizer, r), len(h)) for h, r in zip(heads, responses)]

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def _score(self, requests: list[list[list[int]]]) -> list[list[float]]:
        """The sequences of several requests in one forward (off the event loop); each request gets its own back."""
        flat = [s for r in requests for s in r]
        if self.implicit:  # (sequence, response start) pairs, from texts
            seqs, starts = [s for s, _ in flat], [k for _, k in flat]
            scores = (
                await asyncio.to_thread(self.rm.score_sequences, seqs, self.pad, self.micro_batch, starts)
            ).tolist()
        else:
            flat = [s[0] if isinstance(s, tuple) else s for s in flat]
            scores = (await asyncio.to_thread(self.rm.score_sequences, flat, self.pad, self.micro_batch)).tolist()
        out, k = [], 0
        for r in requests:
            out.append(scores[k : k + len(r)])
            k += len(r)
        return out


def rm_app(
    folder: str,
    token: str,
    *,
    min_replicas: int = 1,
    max_replicas: int = 1,
    target_ongoing_requests: float = 16,
    num_cpus: float = 1,
    num_gpus: float = 0,
    threads: int = 1,
    max_request_bytes: int = 8 * 2**20,
    max_batch_size: int = 32,
    batch_wait_s: float = 0.005,
):
    """The Serve application: fixed `min_replicas` replicas when the bounds are equal, else autoscaling between
    them on the ongoing requests per replica. Only the token's digest goes into the deployment."""
    from actors.runtime import actor_env

    scaling: dict[str, Any] = (
        {"num_replicas": min_replicas}
        if min_replicas == max_replicas
        else {
            "autoscaling_config": {
                "min_replicas": min_replicas,
                "max_replicas": max_replicas,
                "target_ongoing_requests": target_ongoing_requests,
                "upscale_delay_s": 5.0,  # Serve's default waits 30 s before it adds a replica
                "downscale_delay_s": 60.0,
            }
        }
    )
    deployment = RMServer.options(
        ray_actor_options={"num_cpus": num_cpus, "num_gpus": num_gpus, "runtime_env": actor_env(threads, num_gpus)},
        **scaling,
    )
    return deployment.bind(folder, token_digest(token), threads, max_request_bytes, max_batch_size, batch_wait_s)
