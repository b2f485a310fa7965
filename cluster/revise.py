"""`hrlaif revise`: Constitutional AI's supervised phase. The policy's responses to harmful prompts are critiqued
against the constitution's principles by the judge, and those that break one are revised by the rewriter; the
result is SFT data that `hrlaif sft data=<output>` trains on.

Every response is critiqued (the critique may find nothing). A response that breaks a principle is replaced by
its revision; one that breaks none is written as it is (`keep_unbroken`, the default: its revision would be
itself, and the SFT set keeps every harmful prompt, as Constitutional AI's does) or left out. Both calls go
through the labeler pool (`LabelerPool.ask`: its actors, concurrency and rate limit; the critique to the judge,
the revision to the rewriter), with the principles of harmful prompts cited in the request's data.

Output: JSONL, one row per response, {"id": "<prompt_id>/<k>", "category": "harmful", "prompt", "response",
"prompt_id", "response_index", "principles" (the ids it broke), "critique", "original", "template_version"},
rewritten atomically after each chunk. Resumable: a rerun skips the rows the file holds (a critique or revision
that failed wrote no row, so it is asked again); a file made under another constitution (another template
version) is an error rather than a mix.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from hrlaif_ray.categories import Category
from hrlaif_ray.config import ReviseJob
from hrlaif_ray.data.readers import iter_jsonl
from hrlaif_ray.data.records import PromptRecord
from hrlaif_ray.data.schemas import read_records
from hrlaif_ray.entry import load_job
from hrlaif_ray.errors import DataError
from hrlaif_ray.labeling.constitution import Constitution, load_constitution, template_version
from hrlaif_ray.labeling.strategies import JudgeRequest


@dataclass
class Todo:
    """One response to critique (and revise when it breaks a principle)."""

    id: str
    prompt: PromptRecord
    index: int
    response: str


def harmful_responses(job: ReviseJob) -> list[Todo]:
    """The first `responses_per_prompt` responses of each harmful prompt (the prompts file's category), in order."""
    prompts = {p.id: p for p in read_records(job.prompts, "prompts")}
    todo, seen = [], set()
    for i, rollout in enumerate(read_records(job.rollouts, "rollouts")):
        prompt = prompts.get(rollout.prompt_id)
        if prompt is None:
            raise DataError(job.rollouts, None, "prompt_id", f"{rollout.prompt_id!r} is not in {job.prompts}", record=i)
        if prompt.category != Category.HARMFUL.value or prompt.id in seen:
            continue
        if job.limit and len(seen) >= job.limit:
            break
        seen.add(prompt.id)
        n = job.responses_per_prompt or len(rollout.responses)
        todo += [Todo(f"{prompt.id}/{k}", prompt, k, r.text) for k, r in enumerate(rollout.responses[:n])]
    return todo


def read_rows(path: Path, template: str) -> list[dict]:
    """The rows an earlier run wrote; each names its id, and all were made under this job's template version."""
    if not path.is_file():
        return []
    rows = []
    for line, row in iter_jsonl(path):
        if not isinstance(row.get("id"), str):
            raise DataError(path, line, "id", "expected the row's id (<prompt_id>/<k>)")
        if row.get("template_version") != template:
            raise DataError(
                path,
                line,
                "template_version",
                f"made under {row.get('template_version')!r}, this job's principles give {template!r}: "
                "write to another output",
            )
        rows.append(row)
    return rows


def write_rows(path: Path, rows: list[dict]) -> None:
    """All rows at once, atomically: a temp file beside `path`, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _revise_chunk(
    pool, constitution: Constitution, chunk: list[Todo], keep_unbroken: bool, counts: Counter
) -> list[dict]:
    """Critique every response of `chunk`, revise those that break a principle: the rows to write."""
    template = template_version(constitution)
    cited = constitution.cite(constitution.for_category(Category.HARMFUL))
    critiques = pool.ask(
        [JudgeRequest("critique", {"question": t.prompt.text, "response": t.response, **cited}) for t in chunk]
    )
    by_id = {p.id: p for p in constitution.principles}
    broken = [i for i, c in enumerate(critiques) if c.answer and c.answer["principles"]]
    revisions = pool.ask(
        [
            JudgeRequest(
                "revise",
                {
                    "question": chunk[i].prompt.text,
                    "response": chunk[i].response,
                    "critique": critiques[i].answer["critique"],
                    **constitution.cite([by_id[p] for p in critiques[i].answer["principles"]]),
                },
            )
            for i in broken
        ]
    )
    revised = dict(zip(broken, revisions))
    rows = []
    for i, (todo, critique) in enumerate(zip(chunk, critiques)):
        for answer in (critique, revised.get(i)):
            if answer is not None:
                counts["tokens_in"] += answer.tokens_in
                counts["tokens_out"] += answer.tokens_out
                counts["cost_usd"] += answer.cost_usd
        if critique.error or (i in revised and revised[i].error):
            counts["failed"] += 1
            continue
        counts["critiqued"] += 1
        principles = critique.answer["principles"]
        if principles:
            counts["revised"] += 1
            counts.update(f"principle:{p}" for p in principles)
            response = revised[i].answer["revision"]
        elif keep_unbroken:
            counts["kept_unbroken"] += 1
            response = todo.response
        else:
            counts["left_out_unbroken"] += 1
            continue
        rows.append(
            {
                "id": todo.id,
                "category": Category.HARMFUL.value,
                "prompt": todo.prompt.text,
                "response": response,
                "prompt_id": todo.prompt.id,
                "response_index": todo.index,
                "principles": principles,
                "critique": critique.answer["critique"],
                "original": todo.response,
                "template_version": template,
            }
        )
    return rows


def run_revise_job(job: ReviseJob, log=print) -> dict:
    """Critique and revise the harmful responses not yet in the output; returns the summary (counts and cost)."""
    start = time.monotonic()
    constitution = load_constitution(job.labeling.constitution)  # here, so a bad file stops the job before Ray
    template = template_version(constitution)
    out = Path(job.output)
    rows = read_rows(out, template)
    done = {r["id"] for r in rows}
    responses = harmful_responses(job)
    todo = [t for t in responses if t.id not in done]
    counts: Counter = Counter()
    if todo:
        import ray

        from actors.labeler import LabelerPool
        from cluster.connect import connect_ray

        started = connect_ray(log_to_driver=False, configure_logging=False)
        pool = LabelerPool(job.labeling, job.pool)
        try:
            for k in range(0, len(todo), job.chunk):
                rows += _revise_chunk(pool, constitution, todo[k : k + job.chunk], job.keep_unbroken, counts)
                write_rows(out, rows)  # atomic: the file holds every finished chunk
                log(json.dumps({"revise": min(k + job.chunk, len(todo)), "of": len(todo)}))
        finally:
            pool.shutdown()
            if started:
                ray.shutdown()
    return {
        "output": str(out),
        "template_version": template,
        "harmful_responses": len(responses),
        "already_written": len(responses) - len(todo),
        "critiqued": counts["critiqued"],
        "revised": counts["revised"],
        "kept_unbroken": counts["kept_unbroken"],
        "left_out_unbroken": counts["left_out_unbroken"],
        "failed": counts["failed"],
        "rows": len(rows),
        "principles_broken": {k.split(":", 1)[1]: n for k, n in sorted(counts.items()) if k.startswith("principle:")},
        "tokens_in": counts["tokens_in"],
        "tokens_out": counts["tokens_out"],
        "cost_usd": round(counts["cost_usd"], 6),
        "seconds": round(time.monotonic() - start, 2),
    }


def main(argv: list[str] | None = None) -> int:
    job = load_job("hrlaif revise", ReviseJob, argv, "labeling.judges='[{base_url: http://127.0.0.1:8000/v1}]'")
    print(json.dumps(run_revise_job(job, log=lambda line: print(line, file=sys.stderr, flush=True))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
