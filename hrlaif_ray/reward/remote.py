"""The hybrid reward for other trainers: the request forms `hrlaif serve-reward` reads, how a trainer's prompt and
label become a prompt record, how one prompt's samples are gathered into a group, and a veRL reward function that
calls the server.

Why a gatherer: the hybrid reward labels a prompt's samples together (verify, sort, the judge within the sets), but
OpenRLHF's remote reward client sends one sample a request, concurrently (`SingleTurnAgentExecutor`, 0.11), and veRL
calls a reward function per sample or per batch. So the server keys each sample by its prompt and label, and scores
a prompt's group once `group_size` samples (the trainer's samples per prompt) have come, or once the first of them
has waited `group_wait_s`; a group of one gets no signal from the judge (nothing to compare it with). Complete
groups are scored together, a batch at a time, while new ones gather.

The request forms (POST, JSON), each answered with {"rewards": [...], "scores": [...], "extra_logs": {...}}:
- OpenRLHF's: {"query": [prompt + response, as the trainer decoded it], "prompts": [...], "labels": [...]}; the
  response is what follows the prompt in the query, with the tokenizer's special tokens taken off its end.
- Ours (what the veRL functions send): {"prompts": [...], "responses": [...], "labels": [...]}, and
  "complete": true when each prompt's samples in the request are its whole group (scored without waiting).
`labels` may be left out (open questions). A label is the standard answer of a math prompt ("72"), or a JSON
object of a prompt record's fields ({"category": "multiple_choice", "answer": "B", "choices": [...]}, or
{"category": "harmful"} for red teaming), or "" for an open question.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hrlaif_ray.data.records import PromptRecord

SCORED_FIELDS = ("category", "answer", "choices", "tests", "entry_point", "id")  # what a JSON label may set
_SENTINEL = "\x00hrlaif-question\x00"


class BadRequest(ValueError):
    """A request the server refuses with 400, saying why."""


@dataclass(frozen=True)
class Sample:
    """One sample to score: the prompt as the trainer sent it, the response, the label."""

    prompt: str
    response: str
    label: str = ""


def _strings(body: dict, key: str, n: int | None = None) -> list[str]:
    value = body[key]
    if not isinstance(value, list) or not value:
        raise BadRequest(f"'{key}' must be a non-empty list of strings")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise BadRequest(f"{key}[{i}]: expected a string, got {type(item).__name__}")
    if n is not None and len(value) != n:
        raise BadRequest(f"'{key}' has {len(value)} items, expected {n} (one per sample)")
    return value


def parse_request(body: Any, end_markers: tuple[str, ...] = ()) -> tuple[list[Sample], bool]:
    """The samples of a decoded JSON body in either form, and whether the body says its samples are whole groups
    ("complete": true); BadRequest names the key and the item that is wrong. `end_markers`: strings (the
    tokenizer's special tokens) taken off the end of each response."""
    if not isinstance(body, dict):
        raise BadRequest(f"the body must be a JSON object, got {type(body).__name__}")
    if "prompts" not in body or ("query" not in body and "responses" not in body):
        raise BadRequest("expected 'query' and 'prompts' (OpenRLHF's form), or 'prompts' and 'responses'")
    prompts = _strings(body, "prompts")
    labels = [""] * len(prompts)
    if body.get("labels") is not None:
        labels = [
            json.dumps(x) if isinstance(x, dict) else "" if x is None else str(x) for x in _labels(body, len(prompts))
        ]
    if "responses" in body:
        responses = _strings(body, "responses", len(prompts))
    else:
        responses = [
            split_query(q, p, i) for i, (q, p) in enumerate(zip(_strings(body, "query", len(prompts)), prompts))
        ]
    complete = body.get("complete", False)
    if not isinstance(complete, bool):
        raise BadRequest("'complete' must be true or false")
    return [Sample(p, strip_end(r, end_markers), l) for p, r, l in zip(prompts, responses, labels)], complete


def _labels(body: dict, n: int) -> list:
    labels = body["labels"]
    if not isinstance(labels, list) or len(labels) != n:
        raise BadRequest(f"'labels' must be a list of {n} items (one per sample)")
    for i, x in enumerate(labels):
        if not (x is None or isinstance(x, (str, int, float, dict))) or isinstance(x, bool):
            raise BadRequest(f"labels[{i}]: expected a string, a number or an object, got {type(x).__name__}")
    return labels


def split_query(query: str, prompt: str, index: int = 0) -> str:
    """The response inside OpenRLHF's query (the decoded prompt + response tokens): what follows the prompt."""
    if query.startswith(prompt):
        return query[len(prompt) :]
    at = query.find(prompt)  # a decoder that adds a prefix (a BOS token) before the prompt
    if prompt and at >= 0:
        return query[at + len(prompt) :]
    raise BadRequest(f"query[{index}] does not contain prompts[{index}]: cannot tell the response apart")


def strip_end(response: str, markers: tuple[str, ...]) -> str:
    """The response without the special tokens (end of turn, padding) that close it."""
    response = response.rstrip()
    changed = True
    while changed and markers:
        changed = False
        for m in markers:
            if m and response.endswith(m):
                response, changed = response[: -len(m)].rstrip(), True
    return response


@dataclass(frozen=True)
class ChatFrame:
    """What a tokenizer's chat template puts around one user turn (with the generation prompt): trainers send
    templated prompts, and the verifier, the judge and the RM read the question itself."""

    before: str = ""
    after: str = ""

    @classmethod
    def of(cls, tokenizer) -> ChatFrame:
        if not getattr(tokenizer, "chat_template", None):
            return cls()
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": _SENTINEL}], add_generation_prompt=True, tokenize=False
        )
        before, _, after = text.partition(_SENTINEL)
        return cls(before, after)

    def question(self, prompt: str) -> str:
        """The user's question inside a templated prompt (the prompt itself when it is not templated)."""
        bos = prompt.find(self.before) if self.before else 0
        if self.before and bos >= 0 and prompt.endswith(self.after):
            return prompt[bos + len(self.before) : len(prompt) - len(self.after)]
        return prompt


def prompt_record(question: str, label: str) -> PromptRecord:
    """A prompt record for the question and its label: a JSON object sets the record's fields, any other text is a
    math prompt's standard answer, "" an open question. Raises BadRequest naming a field it cannot use."""
    fields: dict[str, Any] = {"category": "open_qa"}
    label = label.strip()
    if label.startswith("{"):
        try:
            given = json.loads(label)
        except json.JSONDecodeError as exc:
            raise BadRequest(f"label {label[:60]!r}: not a JSON object ({exc.msg})") from None
        unknown = sorted(set(given) - set(SCORED_FIELDS))
        if unknown:
            raise BadRequest(f"label field {unknown[0]!r} is not one of {', '.join(SCORED_FIELDS)}")
        fields.update(given)
        if fields.get("answer") is not None:
            fields["answer"] = str(fields["answer"])
        if "category" not in given:
            fields["category"] = "math" if fields.get("answer") else "open_qa"
    elif label:
        fields = {"category": "math", "answer": label}
    pid = str(fields.pop("id", "")) or hashlib.sha256(json.dumps([question, label]).encode()).hexdigest()[:16]
    for key in ("answer", "tests", "entry_point"):
        if fields.get(key) is not None and not isinstance(fields[key], str):
            raise BadRequest(f"label {label[:60]!r}: {key!r} must be a string")
    choices = fields.get("choices")
    if choices is not None and not (isinstance(choices, list) and all(isinstance(c, str) for c in choices)):
        raise BadRequest(f"label {label[:60]!r}: 'choices' must be a list of strings")
    try:
        record = PromptRecord(id=pid, text=question, source="remote", **fields)
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"label {label[:60]!r}: {exc}") from None
    _verifiable(record, label)
    return record


def _verifiable(record: PromptRecord, label: str) -> None:
    """A verifiable prompt's standard answer must be one the verifier reads (it would fail the whole batch later)."""
    from hrlaif_ray.evaluation import correctness

    if record.category not in ("math", "multiple_choice") or record.answer is None:  # (code runs its tests later)
        return
    try:
        correctness(record, "")
    except Exception as exc:  # the verifier's own words: what it could not read
        raise BadRequest(f"label {label[:60]!r}: the verifier cannot use it ({type(exc).__name__}: {exc})") from None


Groups = list[tuple[PromptRecord, list[str]]]
Scorer = Callable[[Groups], list[list[float]]]


@dataclass
class _Pending:
    record: PromptRecord
    texts: list[str] = field(default_factory=list)
    waiters: list[asyncio.Future] = field(default_factory=list)  # one per sample, in order
    since: float = field(default_factory=time.monotonic)

    def live(self) -> _Pending:
        """The group without the samples whose request is gone (a client that disconnected or gave up)."""
        keep = [i for i, f in enumerate(self.waiters) if not f.cancelled()]
        if len(keep) == len(self.waiters):
            return self
        return _Pending(self.record, [self.texts[i] for i in keep], [self.waiters[i] for i in keep], self.since)


class GroupGatherer:
    """Gathers samples into their prompt's group and scores complete groups, a batch at a time (`scorer` runs in
    a worker thread: the labeler pool and the RM block). `submit` returns each sample's reward and its group's size.
    """

    def __init__(self, scorer: Scorer, group_size: int, group_wait_s: float, max_groups_per_batch: int = 256):
        self.scorer, self.group_size, self.wait = scorer, group_size, group_wait_s
        self.max_batch = max_groups_per_batch
        self.pending: dict[tuple[str, str], _Pending] = {}
        self.ready: list[_Pending] = []
        self.wake: asyncio.Event | None = None
        self.worker: asyncio.Task | None = None
        self.scored_groups = 0

    async def submit(self, samples: list[tuple[PromptRecord, str]], complete: bool = False) -> list[tuple[float, int]]:
        """(reward, group size) for each (prompt record, response). Samples of one prompt (same id and text) join
        one group; `complete`: each prompt's samples here are its whole group (a trainer that sends a batch), scored
        without waiting for more."""
        if self.worker is None or self.worker.done():  # (a worker that died is replaced; `_run` should not die)
            self.wake = asyncio.Event()
            self.worker = asyncio.get_running_loop().create_task(self._run())
        loop = asyncio.get_running_loop()
        own: dict[tuple[str, str], _Pending] = {}
        futures = []
        for record, text in samples:
            key = (record.id, record.text)
            groups = own if complete else self.pending
            group = groups.get(key)
            if group is None:
                group = groups[key] = _Pending(record)
            group.texts.append(text)
            group.waiters.append(loop.create_future())
            futures.append(group.waiters[-1])
        self.ready.extend(own.values())
        for key in [k for k, g in self.pending.items() if len(g.texts) >= self.group_size]:
            self.ready.append(self.pending.pop(key))
        self.wake.set()
        return list(await asyncio.gather(*futures))

    def _due(self) -> float | None:
        """Seconds until the oldest partial group is due (None: none waits)."""
        if not self.pending:
            return None
        return max(0.0, min(g.since for g in self.pending.values()) + self.wait - time.monotonic())

    async def _run(self) -> None:
        while True:
            due = self._due()
            if not self.ready:
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), timeout=due)
                except TimeoutError:
                    pass
            now = time.monotonic()
            for key in [k for k, g in self.pending.items() if now - g.since >= self.wait]:
                self.ready.append(self.pending.pop(key))
            if not self.ready:
                continue
            batch, self.ready = self.ready[: self.max_batch], self.ready[self.max_batch :]
            batch = [g for g in (g.live() for g in batch) if g.texts]  # (samples whose client left are not scored)
            if not batch:
                continue
            try:
                rewards = await asyncio.to_thread(self.scorer, [(g.record, g.texts) for g in batch])
                if len(rewards) != len(batch) or any(len(r) != len(g.texts) for g, r in zip(batch, rewards)):
                    raise RuntimeError("the reward returned a different number of groups or samples than it was given")
                results = [[(float(r), len(g.texts)) for r in got] for g, got in zip(batch, rewards)]
            except Exception as exc:  # every waiter of the batch gets the error; the gatherer goes on
                for g in batch:
                    for f in g.waiters:
                        if not f.done():
                            f.set_exception(exc)
                continue
            self.scored_groups += len(batch)
            for g, got in zip(batch, results):
                for f, r in zip(g.waiters, got):
                    if not f.done():  # (a client that left: its future was cancelled)
                        f.set_result(r)


def _label(ground_truth: Any) -> str | dict:
    """veRL's ground truth as a label: an object of prompt fields as it is, none as an open question's "", else text."""
    if isinstance(ground_truth, dict):
        return ground_truth
    return "" if ground_truth is None else str(ground_truth)


def _sample_prompt(extra_info: dict | None, index: int) -> str:
    for key in ("prompt", "question", "problem"):
        if extra_info and isinstance(extra_info.get(key), str):
            return extra_info[key]
    raise ValueError(f"extra_info of sample {index} has no 'prompt', 'question' or 'problem': the reward needs it")


def _post(url: str | None, token_env: str, body: dict, timeout_s: float) -> list[float]:
    """POST the body to the server's /reward; its rewards. The token is read from the environment, never logged."""
    import httpx

    url = url or os.environ.get("HRLAIF_REWARD_URL")
    if not url:
        raise ValueError("set HRLAIF_REWARD_URL (or pass url=) to the server `hrlaif serve-reward` printed")
    token = os.environ.get(token_env, "")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.post(url.rstrip("/") + "/reward", json=body, headers=headers, timeout=timeout_s)
    if response.status_code != 200:
        raise RuntimeError(f"serve-reward answered {response.status_code}: {response.text[:300]}")
    return response.json()["rewards"]


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: dict | None = None,
    *,
    url: str | None = None,
    token_env: str = "HRLAIF_REWARD_TOKEN",
    timeout_s: float = 600,
) -> float:
    """veRL's custom reward function (`custom_reward_function.path` this file, `.name` compute_score): one sample
    scored by `hrlaif serve-reward` at `url` (or $HRLAIF_REWARD_URL); the prompt comes from extra_info's
    'prompt', 'question' or 'problem'. The sample joins its prompt's group on the server, so concurrent calls
    (veRL's async reward loop) are labeled together; sequential ones each wait the server's group_wait_s."""
    prompt = _sample_prompt(extra_info, 0)
    body = {"prompts": [prompt], "responses": [solution_str], "labels": [_label(ground_truth)]}
    return _post(url, token_env, body, timeout_s)[0]


def compute_score_batch(
    data_sources: list[str],
    solution_strs: list[str],
    ground_truths: list[Any],
    extra_infos: list[dict | None],
    *,
    url: str | None = None,
    token_env: str = "HRLAIF_REWARD_TOKEN",
    timeout_s: float = 600,
    max_request_bytes: int = 4 * 2**20,
) -> list[float]:
    """veRL's batch reward manager's function (`reward_model.reward_manager=batch`): each prompt's samples one
    group, whole groups sent together in requests of at most `max_request_bytes` of JSON (the server's limit is
    8 MiB; a single group over it is sent alone); the rewards in the batch's order."""
    prompts = [_sample_prompt(info, i) for i, info in enumerate(extra_infos)]
    labels = [_label(g) for g in ground_truths]
    groups: dict[str, list[int]] = {}
    for i, (p, label) in enumerate(zip(prompts, labels)):
        groups.setdefault(json.dumps([p, label]), []).append(i)
    chunks, size = [[]], 0
    for rows in groups.values():
        cost = sum(len(json.dumps([prompts[i], solution_strs[i], labels[i]])) for i in rows)
        if chunks[-1] and size + cost > max_request_bytes:
            chunks.append([])
            size = 0
        chunks[-1] += rows
        size += cost
    rewards = [0.0] * len(prompts)
    for rows in chunks:
        body = {
            "prompts": [prompts[i] for i in rows],
            "responses": [str(solution_strs[i]) for i in rows],
            "labels": [labels[i] for i in rows],
            "complete": True,
        }
        for i, r in zip(rows, _post(url, token_env, body, timeout_s)):
            rewards[i] = r
    return rewards
