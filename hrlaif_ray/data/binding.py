"""Labels and rollouts bound to their prompts.

A prompt id names a prompt only within its file: two prompt mixes made with the same seed and size, but another
category mix, share their ids and not their texts. Each label therefore stores a digest of the prompt it was made
on (`LabelRecord.prompt_digest`: its id, text, answer and choices), and each rollout its prompt's text; the jobs
that join them with a prompts file again (`train-rm`, `dpo`, `label`, `rm-probe`) refuse a mismatch with one line
naming both files and the first prompt that differs, before any work starts. A label folder's `job.yaml` (written
by `hrlaif label`) names the prompts file the labels were made on, for that line.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml

from hrlaif_ray.data.records import LabelRecord, PromptRecord, RolloutRecord
from hrlaif_ray.data.schemas import read_records
from hrlaif_ray.errors import HrlaifError


class BindingError(HrlaifError, ValueError):
    """Labels or rollouts that were made on other prompts than the file they are joined with."""


def prompt_digest(prompt: PromptRecord) -> str:
    """What a label depends on of its prompt (the verifier's answer as much as the text), as 16 hex digits."""
    basis = [prompt.id, prompt.text, prompt.messages, prompt.answer, prompt.choices]
    return hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()[:16]


def read_prompts(path: str | Path) -> dict[str, PromptRecord]:
    return {p.id: p for p in read_records(path, "prompts")}


def made_on(labels_dir: str | Path) -> str | None:
    """The prompts file a label folder's labels were made on, as its `job.yaml` names it (None: not known)."""
    try:
        return (yaml.safe_load((Path(labels_dir) / "job.yaml").read_text()) or {}).get("prompts")
    except (OSError, yaml.YAMLError, AttributeError):
        return None


def _refuse(what: str, source: str, prompts_file: str | Path, bad: list[tuple[str, str]], total: int) -> None:
    first_id, why = bad[0]
    raise BindingError(
        f"{what} {source} do not belong to prompts {prompts_file}: prompt {first_id!r} {why} "
        f"({len(bad)} of {total} differ); pass the prompts file they were made on"
    )


def check_labels(
    labels: list[LabelRecord], prompts: dict[str, PromptRecord], labels_dir: str | Path, prompts_file: str | Path
) -> None:
    """Every label's prompt is in `prompts` with the text it was labeled on (labels of schema 2 and older carry
    no digest: only their ids are checked)."""
    bad = []
    for label in labels:
        prompt = prompts.get(label.prompt_id)
        if prompt is None:
            bad.append((label.prompt_id, "is not in it"))
        elif label.prompt_digest and label.prompt_digest != prompt_digest(prompt):
            bad.append((label.prompt_id, "has another text or answer there than the one labeled"))
    if bad:
        origin = made_on(labels_dir)
        source = f"{labels_dir}" + (f" (made on {origin})" if origin and str(origin) != str(prompts_file) else "")
        _refuse("labels", source, prompts_file, bad, len(labels))


def check_rollouts(
    rollouts: list[RolloutRecord], prompts: dict[str, PromptRecord], rollouts_file: str | Path, prompts_file
) -> None:
    """Every rollout's prompt is in `prompts` with the text it was sampled from."""
    bad = []
    for rollout in rollouts:
        prompt = prompts.get(rollout.prompt_id)
        if prompt is None:
            bad.append((rollout.prompt_id, "is not in it"))
        elif rollout.prompt_text != prompt.text:
            bad.append((rollout.prompt_id, "has another text there than the one sampled"))
    if bad:
        _refuse("rollouts", str(rollouts_file), prompts_file, bad, len(rollouts))


def bound_labels(labels_dir: str | Path, prompts_file: str | Path) -> tuple[list[LabelRecord], dict]:
    """A label folder's labels and the prompts file they are joined with, checked to belong together."""
    from hrlaif_ray.labeling.ledger import LabelLedger

    if not Path(labels_dir).is_dir():
        raise BindingError(f"labels_dir: {labels_dir} is not a folder of labels (`hrlaif label` writes one)")
    prompts = read_prompts(prompts_file)
    labels = LabelLedger(labels_dir).labels()
    check_labels(labels, prompts, labels_dir, prompts_file)
    return labels, prompts


def bound_rollouts(rollouts_file: str | Path, prompts_file: str | Path) -> tuple[list[RolloutRecord], dict]:
    """A rollouts file's records and the prompts file they are joined with, checked to belong together."""
    prompts = read_prompts(prompts_file)
    rollouts = read_records(rollouts_file, "rollouts")
    check_rollouts(rollouts, prompts, rollouts_file, prompts_file)
    return rollouts, prompts
