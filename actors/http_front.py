"""What every HTTP service of the project does before it reads a request: the bearer token checked against its
digest (a replica holds only the token's SHA-256, so the secret never reaches Ray's state, logs or the dashboard;
digests are compared in constant time) and the body read up to a size limit (413 before reading when
Content-Length says so, and counted as it comes when it does not), decoded as JSON off the event loop."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def authorized(request: Request, digest: bytes | None) -> bool:
    """Does the request carry the token whose SHA-256 is `digest`? (None: the service runs without a token.)"""
    if digest is None:
        return True
    header = request.headers.get("authorization", "")
    presented = header[7:] if header.startswith("Bearer ") else ""
    return hmac.compare_digest(hashlib.sha256(presented.encode()).digest(), digest)


async def read_json(request: Request, max_bytes: int) -> tuple[Any, JSONResponse | None]:
    """(the decoded body, None), or (None, the error response: 413 over `max_bytes`, 400 when not JSON)."""
    declared = request.headers.get("content-length")
    too_big = JSONResponse({"error": f"request body over {max_bytes} bytes"}, 413)
    if declared is not None and (not declared.isdigit() or int(declared) > max_bytes):
        return None, too_big
    raw = bytearray()
    async for chunk in request.stream():  # counted as it comes: a body without Content-Length is bounded too
        raw += chunk
        if len(raw) > max_bytes:
            return None, too_big
    try:  # decoding up to max_bytes of JSON: off the event loop
        return await asyncio.to_thread(json.loads, bytes(raw) or b"null"), None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):  # (nesting deeper than the parser goes)
        return None, JSONResponse({"error": "bad request: the body is not JSON"}, 400)
