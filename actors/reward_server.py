"""The hybrid reward as a Ray Serve deployment: `hrlaif serve-reward`'s front.

Contract (what clients rely on):
- `POST /reward` (or `/get_reward`, the path OpenRLHF's examples use) with OpenRLHF's body {"query", "prompts",
  "labels"} or ours {"prompts", "responses", "labels", "complete"} (`hrlaif_ray/reward/remote.py`) returns
  {"rewards": [...], "scores": [...], "extra_logs": {"group_size": [...]}}, one value a sample: the reward of the
  sample within its prompt's group, and the size of the group it was scored in.
- Every request needs `Authorization: Bearer <token>` (`actors/http_front.py`), unless the server was started
  without a token (loopback only). Bodies over `max_request_bytes` get 413; a body that is not one of the forms
  or a label the reward cannot read gets 400 naming the key and the item; a scoring failure 500.
- `GET /health` answers {"ok": true, "groups": ..., "labels": ..., "labels_failed": ..., "judge_cost_usd": ...}
  without a token.

One replica gathers the groups (a prompt's samples must meet in one place); the work is elsewhere: the labeler pool's
actors call the judges (the online reward) and the reward service's replicas run the RM and the verifier.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import torch
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

from actors.http_front import authorized, read_json, token_digest
from hrlaif_ray.config import ServeRewardJob
from hrlaif_ray.data.records import PromptRecord
from hrlaif_ray.reward.interface import Completions
from hrlaif_ray.reward.remote import BadRequest, ChatFrame, GroupGatherer, parse_request, prompt_record

log = logging.getLogger("ray.serve")


@serve.deployment(name="hybrid-reward", num_replicas=1)
class HybridRewardServer:
    """The gatherer, the online reward's labeler pool and the RM/verifier service."""

    def __init__(self, job_json: str, token_sha256: str | None):
        from actors.online_reward import OnlineReward
        from actors.reward import RewardService, parts_of
        from actors.runtime import start_process

        start_process(1)
        job = ServeRewardJob.model_validate_json(job_json)
        self.job, self.digest = job, bytes.fromhex(token_sha256) if token_sha256 else None
        parts = parts_of(job.reward)
        self.service = (
            RewardService(
                parts, replicas=job.replicas, num_cpus=job.num_cpus, num_gpus=job.num_gpus, threads=job.threads
            )
            if parts
            else None
        )
        self.online = None
        if job.reward.online:
            folder = job.reward.labels_dir or str(Path(job.output_dir) / "online-labels")
            self.online = OnlineReward(job.reward.labeling, job.reward.pool, folder)
        self.frame, self.markers = ChatFrame(), ()
        if job.tokenizer:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(job.tokenizer)
            self.frame, self.markers = ChatFrame.of(tokenizer), tuple(tokenizer.all_special_tokens)
        self.totals = {"labels": 0, "labels_failed": 0, "judge_cost_usd": 0.0}
        self.gatherer = GroupGatherer(self._score, job.group_size, job.group_wait_s)

    def _score(self, groups: list[tuple[PromptRecord, list[str]]]) -> list[list[float]]:
        """Rewards of whole groups (in a worker thread): the RM/verifier part plus online_weight x the online part
        for 'online+rm', as the PPO loop sums them."""
        sizes = [len(texts) for _, texts in groups]
        total = torch.zeros(sum(sizes))
        if self.service is not None:
            prompts = [record for record, texts in groups for _ in texts]
            total += self.service.score(Completions(prompts, [t for _, texts in groups for t in texts])).scores
        if self.online is not None:
            rewards, info = self.online.rewards(groups)
            weight = self.job.reward.online_weight if self.service is not None else 1.0
            total += weight * torch.tensor([r for group in rewards for r in group])
            self.totals["labels"] += info["online/labels"]
            self.totals["labels_failed"] += info["online/labels_failed"]
            self.totals["judge_cost_usd"] += info["online/judge_cost_usd"]
        out, k = [], 0
        for n in sizes:
            out.append(total[k : k + n].tolist())
            k += n
        return out

    def _samples(self, body) -> tuple[list[tuple[PromptRecord, str]], bool]:
        samples, complete = parse_request(body, self.markers)
        return [(prompt_record(self.frame.question(s.prompt), s.label), s.response) for s in samples], complete

    async def __call__(self, request: Request) -> JSONResponse:
        path = request.url.path.rstrip("/")
        if path.endswith("/health") and request.method == "GET":
            return JSONResponse({"ok": True, "groups": self.gatherer.scored_groups, **self.totals})
        if not path.endswith(("/reward", "/get_reward")) or request.method != "POST":
            return JSONResponse({"error": "not found: POST /reward (or /get_reward) or GET /health"}, 404)
        if not authorized(request, self.digest):
            return JSONResponse({"error": "missing or wrong bearer token"}, 401)
        body, refused = await read_json(request, self.job.max_request_bytes)
        if refused is not None:
            return refused
        try:
            samples, complete = await asyncio.to_thread(self._samples, body)
        except BadRequest as exc:
            return JSONResponse({"error": f"bad request: {exc}"}, 400)
        try:
            got = await self.gatherer.submit(samples, complete)
        except Exception as exc:  # the reward failed for this request's groups; the server goes on
            log.exception("scoring failed")
            return JSONResponse({"error": f"scoring failed: {type(exc).__name__}"}, 500)
        rewards = [r for r, _ in got]
        return JSONResponse({"rewards": rewards, "scores": rewards, "extra_logs": {"group_size": [n for _, n in got]}})


def reward_app(job: ServeRewardJob, token: str | None):
    """The Serve application: one gathering replica (no CPU reserved: it waits on the labelers and replicas), the
    token as its digest only (None: no token, a loopback server)."""
    from actors.runtime import actor_env

    deployment = HybridRewardServer.options(
        ray_actor_options={"num_cpus": 0, "runtime_env": actor_env(1)},
        max_ongoing_requests=job.max_ongoing_requests,
    )
    return deployment.bind(job.model_dump_json(), token_digest(token) if token else None)
