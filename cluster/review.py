"""`hrlaif review`: a page where people decide the pairs the AI labels were unsure of.

    HRLAIF_REVIEW_TOKEN=... hrlaif review --labels runs/labels [--prompts prompts.parquet] [--port 8765]

Serves on 127.0.0.1 (Starlette under uvicorn, both Ray Serve's own dependencies; plain HTML and a little JS) behind
a token read from the environment variable `--token-env` names (never a flag, never printed): the page asks for it
once and keeps a session cookie derived from it (HttpOnly, SameSite=Strict), and the API also takes
`Authorization: Bearer <token>`. Without it every path but the sign-in answers 401.

The queue is `hrlaif_ray.labeling.review.review_queue`: the disputed pairs, then a seeded audit sample of the rest.
Each item shows the prompt, the two responses side by side, the verifier's and the judge's verdicts with their
reasons, tiers and cited principles, why the labeling was unsure, and what the AI labels state of the pair. The
reviewer (a name, kept by the browser) picks A, B, tie or skip with the mouse or the keys (A / 1 / left, B / 2 /
right, T / 0 / down, S); each decision is committed at once as its own Parquet shard in `<labels>/human/`, so a
reload, a restart or a second reviewer picks up where the decisions are. The page shows the reviewer's progress
and the AI-vs-human agreement so far; the label-quality report (`quality.json`, `quality.md`) gains a `human`
section after every decision.

A labels folder that is not one (a foreign or damaged shard, prompts that are not the labels', a decision on a
label or text the folder does not hold) stops the command at start with one line naming the file, exit 2.

API (JSON): GET /api/state?reviewer=NAME -> the reviewer's next item, progress and agreement; POST /api/decide
{"item", "decision": "a" | "b" | "tie" | "skip", "reviewer", "digest"} -> the state after it (409 when the item's
digest is not the one shown: the labels changed under the page).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path

from hrlaif_ray.data.binding import bound_labels, made_on
from hrlaif_ray.data.records import HUMAN_DECISIONS, HumanDecision
from hrlaif_ray.errors import HrlaifError, OneLineParser
from hrlaif_ray.labeling.quality import save_report
from hrlaif_ray.labeling.review import HumanLedger, ReviewItem, agreement, latest, review_queue

PAGE = Path(__file__).with_name("review_page.html")
COOKIE = "hrlaif_review"


class Review:
    """The queue of one labels folder, its decisions, and what a reviewer sees next."""

    def __init__(self, labels_dir: str | Path, prompts: str | Path, audit_fraction: float, seed: int):
        self.folder = Path(labels_dir)
        labels, prompts_by_id = bound_labels(labels_dir, prompts)
        self.ledger = HumanLedger(labels_dir)
        self.ledger.check(labels)
        self.queue: list[ReviewItem] = review_queue(labels, audit_fraction, seed)
        self.by_id = {item.item: item for item in self.queue}
        self.prompts = {pid: p.text for pid, p in prompts_by_id.items()}
        self.lock = threading.Lock()

    def state(self, reviewer: str) -> dict:
        done = {item for (item, who) in latest(self.ledger.decisions) if who == reviewer}
        nxt = next((item for item in self.queue if item.item not in done), None)
        by_queue = {
            q: {
                "total": sum(i.queue == q for i in self.queue),
                "done": sum(i.queue == q and i.item in done for i in self.queue),
            }
            for q in ("disputed", "audit")
        }
        return {
            "folder": self.folder.name,
            "reviewer": reviewer,
            "total": len(self.queue),
            "done": sum(i.item in done for i in self.queue),
            "queues": by_queue,
            "agreement": agreement(self.ledger.decisions),
            "item": nxt.view(self.prompts.get(nxt.label.prompt_id, "")) if nxt else None,
        }

    def decide(self, item_id: str, decision: str, reviewer: str, digest: str) -> HumanDecision:
        item = self.by_id.get(item_id)
        if item is None:
            raise KeyError(item_id)
        if decision not in HUMAN_DECISIONS:
            raise ValueError(f"decision must be one of {', '.join(HUMAN_DECISIONS)}, got {decision!r}")
        if digest != item.digest:
            raise ValueError(f"item {item_id} has changed since it was shown")
        with self.lock:
            made = item.decided(decision, reviewer, time.time())
            self.ledger.commit(made)
            self._report()
        return made

    def _report(self) -> None:
        """The label-quality report's `human` section (and human/report.json): agreement and reviewers."""
        human = {"decisions": len(self.ledger.decisions), **agreement(self.ledger.decisions)}
        (self.ledger.folder / "report.json").write_text(json.dumps(human, indent=1))
        quality = self.folder / "quality.json"
        if quality.exists():
            save_report(self.folder, {**json.loads(quality.read_text()), "human": human})


def session_value(token: str) -> str:
    """What the cookie holds: derived from the token, never the token itself."""
    return hmac.new(token.encode(), b"hrlaif-review-session", hashlib.sha256).hexdigest()


def build_app(review: Review, token: str):
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
    from starlette.routing import Route

    session = session_value(token)
    page = PAGE.read_text()

    def allowed(request: Request) -> bool:
        bearer = request.headers.get("authorization", "")
        if bearer.startswith("Bearer ") and hmac.compare_digest(bearer[7:].encode(), token.encode()):
            return True
        return hmac.compare_digest(request.cookies.get(COOKIE, "").encode(), session.encode())

    def sign_in_page(status: int, message: str = "") -> HTMLResponse:
        note = f'<p class="error" id="error">{message}</p>' if message else ""
        return HTMLResponse(
            "<!doctype html><html><head><meta charset='utf-8'><title>hrlaif review: sign in</title></head><body>"
            "<h1>hrlaif review</h1><p>This page needs the review token.</p>"
            f"{note}<form method='post' action='/sign-in'><input type='password' name='token' id='token' "
            "autofocus placeholder='token'> <button type='submit' id='sign-in'>Sign in</button></form></body></html>",
            status_code=status,
        )

    async def index(request: Request) -> Response:
        if not allowed(request):
            return sign_in_page(401)
        return HTMLResponse(page)

    async def sign_in(request: Request) -> Response:
        form = await request.form()
        if not hmac.compare_digest(str(form.get("token", "")).encode(), token.encode()):
            return sign_in_page(401, "That is not the token.")
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, session, httponly=True, samesite="strict")
        return response

    def reviewer_of(value) -> str | None:
        name = str(value or "").strip()
        return name[:80] if name else None

    async def state(request: Request) -> Response:
        if not allowed(request):
            return JSONResponse({"error": "token required"}, status_code=401)
        reviewer = reviewer_of(request.query_params.get("reviewer"))
        if reviewer is None:
            return JSONResponse({"error": "reviewer: give your name"}, status_code=400)
        return JSONResponse(review.state(reviewer))

    async def decide(request: Request) -> Response:
        if not allowed(request):
            return JSONResponse({"error": "token required"}, status_code=401)
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "the body is not JSON"}, status_code=400)
        reviewer = reviewer_of(body.get("reviewer"))
        if reviewer is None:
            return JSONResponse({"error": "reviewer: give your name"}, status_code=400)
        try:
            review.decide(str(body.get("item")), str(body.get("decision")), reviewer, str(body.get("digest")))
        except KeyError:
            return JSONResponse({"error": f"item {body.get('item')!r} is not on the queue"}, status_code=404)
        except ValueError as exc:
            status = 409 if "changed" in str(exc) else 400
            return JSONResponse({"error": str(exc)}, status_code=status)
        return JSONResponse(review.state(reviewer))

    return Starlette(
        routes=[
            Route("/", index),
            Route("/sign-in", sign_in, methods=["POST"]),
            Route("/api/state", state),
            Route("/api/decide", decide, methods=["POST"]),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="hrlaif review", description=__doc__.splitlines()[0])
    parser.add_argument("--labels", required=True, type=Path, help="a labels folder (`hrlaif label`'s output_dir)")
    parser.add_argument("--prompts", type=Path, help="the prompts Parquet they were made on (default: its job.yaml's)")
    parser.add_argument(
        "--audit-fraction", type=float, default=0.05, help="share of the undisputed AI pairs sampled for audit"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the audit sample and its order")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port (printed in the READY line)")
    parser.add_argument("--token-env", default="HRLAIF_REVIEW_TOKEN", help="environment variable holding the token")
    args = parser.parse_args(argv)
    if not 0 <= args.audit_fraction <= 1:
        raise HrlaifError(f"--audit-fraction must be in [0, 1], got {args.audit_fraction}")
    if not args.labels.is_dir():
        raise HrlaifError(f"--labels: {args.labels} is not a folder of labels (`hrlaif label` writes one)")
    token = os.environ.pop(args.token_env, None)
    if not token:
        raise HrlaifError(f"set {args.token_env} to the token reviewers sign in with")
    prompts = args.prompts or made_on(args.labels)
    if prompts is None:
        raise HrlaifError(
            f"--prompts: {args.labels}/job.yaml names no prompts file; give the one the labels were made on"
        )
    review = Review(args.labels, prompts, args.audit_fraction, args.seed)

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(2048)  # before READY: a client that connects at once waits in the backlog instead of being refused
    server = uvicorn.Server(uvicorn.Config(build_app(review, token), log_level="warning", access_log=False))
    counts = {q: sum(i.queue == q for i in review.queue) for q in ("disputed", "audit")}
    print(
        f"reviewing {args.labels}: {counts['disputed']} disputed pairs, {counts['audit']} for audit, "
        f"{len(review.ledger.decisions)} decisions so far",
        file=sys.stderr,
    )
    print(f"READY http://{args.host}:{sock.getsockname()[1]}", flush=True)
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
