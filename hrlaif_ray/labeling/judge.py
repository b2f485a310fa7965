"""The judge client: one model behind any OpenAI-compatible endpoint, through the `openai` SDK on httpx.

What the SDK already does is used as is: retries with exponential backoff and jitter on 408/409/429/5xx,
timeouts and connection errors, honouring Retry-After (`max_retries`, `timeout`). What it does not do is
added here: httpx event hooks see every attempt, so each one waits for the shared rate limit and is accounted
(a provider may bill an attempt that timed out: its input tokens are counted as an estimate), and an answer
that is not the JSON the task asks for is re-asked a bounded number of times, then raised as a failure.

The API key is read from the environment variable the config names, never stored in config, labels or logs.
"""

from __future__ import annotations

import contextvars
import json
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import httpx
import openai
from openai import AsyncOpenAI, DefaultAioHttpClient, DefaultAsyncHttpxClient
from openai.types.chat import ChatCompletion

if TYPE_CHECKING:
    from hrlaif_ray.config import JudgeEndpoint

from hrlaif_ray.labeling.cache import JudgeCache, cache_key
from hrlaif_ray.labeling.judge_prompts import (
    TEMPLATE_VERSION,
    JudgeOutputError,
    answer_schema,
    parse_answer,
    principle_ids,
    render,
)


class RateLimiter(Protocol):
    async def acquire(self, tokens: int = 0) -> None: ...


class JudgeCallError(RuntimeError):
    """A judge call that failed for good: retries exhausted, or the answer stayed malformed."""


@dataclass
class Attempt:
    status: str  # "ok", "malformed", "http_<code>" (429, 5xx), "refused" (no connection), "lost" (maybe billed)
    tokens_in: int = 0
    tokens_out: int = 0
    estimated: bool = False
    started: float = 0.0  # when it left, after the rate limit (time.monotonic)
    seconds: float | None = None  # until the response's headers came back (None: none came)


@dataclass
class CallLog:
    """Every attempt of every request made for one label, and the questions the cache answered instead."""

    model: str
    attempts: list[Attempt] = field(default_factory=list)
    cache_hits: int = 0
    saved_in: int = 0  # tokens the cached answers were billed when first asked
    saved_out: int = 0

    @property
    def tokens_in(self) -> int:
        return sum(a.tokens_in for a in self.attempts)

    @property
    def tokens_out(self) -> int:
        return sum(a.tokens_out for a in self.attempts)


# The attempts of the request in flight in this task, and its token estimate, for the httpx hooks.
_current_log: contextvars.ContextVar[tuple[list, int] | None] = contextvars.ContextVar("hrlaif_call_log", default=None)


def estimate_tokens(text: str) -> int:
    """A rough count (4 characters a token) for rate budgets and unconfirmed attempts."""
    return max(1, len(text) // 4)


class _AttemptTransport(httpx.AsyncBaseTransport):
    """Marks an attempt whose connection could not be made as 'refused': it never reached the provider, so it
    cannot have been billed (a read that failed later may have been, and stays 'lost')."""

    def __init__(self, inner: httpx.AsyncBaseTransport):
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await self.inner.handle_async_request(request)
        except (httpx.ConnectError, httpx.ConnectTimeout):
            current = _current_log.get()
            if current is not None and current[0]:
                current[0][-1].status = "refused"
            raise

    async def aclose(self) -> None:
        await self.inner.aclose()


class JudgeClient:
    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        timeout_s: float = 60.0,
        max_retries: int = 6,
        max_reasks: int = 2,
        max_tokens: int = 512,
        json_mode: str = "object",
        limiter: RateLimiter | None = None,
        max_connections: int = 64,
        http_backend: str = "aiohttp",
        cache: JudgeCache | None = None,
    ):
        self.model, self.max_reasks, self.max_tokens, self.json_mode = model, max_reasks, max_tokens, json_mode
        self.limiter, self.cache = limiter, cache
        # httpx with the aiohttp transport (the SDK's DefaultAioHttpClient): the same httpx client and event
        # hooks, without httpcore's pool, whose per-request scan of every connection cost more CPU than the rest
        # of a judge call at the pool's concurrency. `http_backend="httpx"` keeps httpcore.
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        if http_backend == "aiohttp":
            from httpx_aiohttp.transport import AiohttpTransport

            client_cls, inner = DefaultAioHttpClient, AiohttpTransport(limits=limits)
        else:
            client_cls, inner = DefaultAsyncHttpxClient, httpx.AsyncHTTPTransport(limits=limits)
        http = client_cls(
            transport=_AttemptTransport(inner),
            event_hooks={"request": [self._on_request], "response": [self._on_response]},
        )
        self._client = AsyncOpenAI(
            base_url=base_url,
            api_key=os.environ.get(api_key_env) or "EMPTY",  # local servers accept any key
            timeout=timeout_s,
            max_retries=max_retries,
            http_client=http,
        )

    @classmethod
    def for_endpoint(
        cls, endpoint: JudgeEndpoint, limiter: RateLimiter | None = None, cache: JudgeCache | None = None
    ) -> JudgeClient:
        """The client of one configured endpoint, every field of it applied."""
        e = endpoint
        return cls(
            e.base_url,
            e.model,
            e.api_key_env,
            e.timeout_s,
            e.max_retries,
            e.max_reasks,
            e.max_tokens,
            e.json_mode,
            limiter,
            e.max_connections,
            e.http_backend,
            cache,
        )

    def __repr__(self) -> str:  # never the key
        return f"JudgeClient(model={self.model!r}, base_url={str(self._client.base_url)!r})"

    async def _on_request(self, request: httpx.Request) -> None:
        current = _current_log.get()
        if current is None:
            return
        attempts, tokens = current
        if self.limiter is not None:
            await self.limiter.acquire(tokens)
        attempts.append(Attempt("sent", started=time.monotonic()))

    async def _on_response(self, response: httpx.Response) -> None:
        current = _current_log.get()
        if current is not None and current[0]:
            attempt = current[0][-1]
            attempt.status, attempt.seconds = f"http_{response.status_code}", time.monotonic() - attempt.started

    async def ask(
        self, task: str, payload: dict[str, Any], log: CallLog, n_responses: int | None = None
    ) -> dict[str, Any]:
        """The validated answer of `task`, every attempt recorded in `log`; raises JudgeCallError. The cache, when
        there is one, is consulted first (before the rate limit) and given every validated answer."""
        return await self.ask_rendered(task, render(task, payload), log, n_responses, principle_ids(payload))

    async def ask_rendered(
        self,
        task: str,
        messages: list[dict[str, str]],
        log: CallLog,
        n_responses: int | None = None,
        cited: list[str] | None = None,
    ) -> dict[str, Any]:
        """`ask` for messages already rendered (`judge_prompts.render`), which a caller may have changed: the
        injection benchmark measures the template without its escaping this way. `cited`: the principle ids the
        request cites (`principle_ids`)."""
        key = cache_key(task, self.model, messages) if self.cache is not None else ""
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            log.cache_hits += 1
            log.saved_in += hit.tokens_in
            log.saved_out += hit.tokens_out
            return hit.answer
        estimate = estimate_tokens(json.dumps(messages)) + self.max_tokens
        last_error = ""
        asked: list[Attempt] = []  # every attempt and re-ask of this question: what a cached answer saves later
        for reask in range(self.max_reasks + 1):
            # This request's own attempts: concurrent asks for the same label must not see each other's.
            attempts: list[Attempt] = []
            completion = None
            token = _current_log.set((attempts, estimate))
            try:
                kwargs: dict[str, Any] = {}
                if self.json_mode == "object":
                    kwargs["response_format"] = {"type": "json_object"}
                elif self.json_mode == "schema":
                    kwargs["response_format"] = {
                        "type": "json_schema",
                        "json_schema": {
                            "name": f"hrlaif_{task}",
                            "schema": answer_schema(task, n_responses, cited),
                            "strict": True,
                        },
                    }
                # The SDK's documented `post` for custom requests: same retries, timeouts, auth and typed
                # ChatCompletion as `chat.completions.create`, without its TypedDict transform of `messages`
                # (plain dicts of strings here), whose CPU cost a call bounds the pool's ceiling (benchmarks/labeler_pool.py).
                completion = await self._client.post(
                    "/chat/completions",
                    cast_to=ChatCompletion,
                    body={
                        "model": self.model,
                        "messages": messages,
                        "temperature": 0.0,
                        "max_tokens": self.max_tokens,
                        **kwargs,
                    },
                    options={"headers": {"X-Hrlaif-Reask": str(reask)}},
                )
                if not attempts:  # a transport without hooks
                    attempts.append(Attempt("sent"))
                final = attempts[-1]
                final.status = "ok"
                if completion.usage is not None:
                    final.tokens_in, final.tokens_out = (
                        completion.usage.prompt_tokens,
                        completion.usage.completion_tokens,
                    )
            except openai.APIStatusError as exc:
                raise JudgeCallError(f"{task}: HTTP {exc.status_code} after retries: {exc.message}") from None
            except (openai.APITimeoutError, openai.APIConnectionError) as exc:
                raise JudgeCallError(f"{task}: {type(exc).__name__} after retries") from None
            finally:
                _current_log.reset(token)
                for attempt in attempts[: len(attempts) - (completion is not None)]:
                    if attempt.status in ("sent", "http_200"):  # timed out or dropped mid-answer: maybe billed
                        attempt.status, attempt.tokens_in, attempt.estimated = "lost", estimate - self.max_tokens, True
                log.attempts.extend(attempts)
                asked.extend(attempts)
            try:
                answer = parse_answer(task, completion.choices[0].message.content or "", n_responses, cited)
            except JudgeOutputError as exc:
                final.status = "malformed"
                last_error = str(exc)
                continue
            if self.cache is not None:
                tokens_in, tokens_out = sum(a.tokens_in for a in asked), sum(a.tokens_out for a in asked)
                self.cache.put(key, task, self.model, answer, tokens_in, tokens_out)
            return answer
        raise JudgeCallError(f"{task}: malformed answer after {self.max_reasks + 1} asks: {last_error}")

    async def close(self) -> None:
        await self._client.close()


__all__ = ["CallLog", "JudgeCallError", "JudgeClient", "TEMPLATE_VERSION", "estimate_tokens"]
