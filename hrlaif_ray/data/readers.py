"""Readers that turn the public data files into prompt records and human preference pairs.

Each reader takes the file (or folder) itself; `load_source("gsm8k/test", data_dir)` finds it under a data
folder laid out as `../shared/data` is. The data folder comes from a flag, else `HRLAIF_DATA_DIR`, else
`../shared/data` beside the working directory or beside this checkout. A malformed record raises `DataError`
naming the file, the line (or record) and the field. Standard answers are normalised on reading: GSM8K's
final number without thousands separators, multiple choice as the letter of the option's position.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hrlaif_ray.categories import CHOICE_LETTERS, Category
from hrlaif_ray.data.records import HumanPair, PromptRecord
from hrlaif_ray.errors import DataError

csv.field_size_limit(1 << 24)


# ---------------------------------------------------------------------------------------------------------
# Low-level iteration with positions, and field checks that name what is wrong.


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line."""
    try:
        with _open_text(path) as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(path, lineno, None, f"not valid JSON ({exc.msg} at column {exc.colno})") from None
                if not isinstance(obj, dict):
                    raise DataError(path, lineno, None, f"expected a JSON object, got {type(obj).__name__}")
                yield lineno, obj
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise DataError(path, None, None, "file not found") from None
        raise DataError(path, None, None, f"cannot read ({exc})") from None


def iter_csv(path: Path, columns: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number where the row starts, row) for each data row; the header must hold `columns`."""
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(path, 1, missing[0], f"missing column in header {reader.fieldnames}")
            start = reader.line_num + 1
            for row in reader:
                if None in row or any(v is None for v in row.values()):
                    n = sum(v is not None for k, v in row.items() if k is not None) + len(row.get(None) or [])
                    raise DataError(path, start, None, f"row has {n} fields, header has {len(reader.fieldnames)}")
                yield start, row
                start = reader.line_num + 1
    except FileNotFoundError:
        raise DataError(path, None, None, "file not found") from None
    except csv.Error as exc:
        raise DataError(path, None, None, f"malformed CSV ({exc})") from None
    except UnicodeDecodeError as exc:
        raise DataError(path, None, None, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def load_json_array(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(path, None, None, "file not found") from None
    except json.JSONDecodeError as exc:
        raise DataError(path, exc.lineno, None, f"not valid JSON ({exc.msg})") from None
    except UnicodeDecodeError as exc:
        raise DataError(path, None, None, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not isinstance(data, list):
        raise DataError(path, None, None, f"expected a JSON array of records, got {type(data).__name__}")
    return data


def _text(
    obj: Any, key: str, path: Path, line: int | None, record: int | None = None, allow_empty: bool = False
) -> str:
    if not isinstance(obj, dict) or key not in obj:
        raise DataError(path, line, key, "missing", record=record)
    value = obj[key]
    if not isinstance(value, str):
        raise DataError(path, line, key, f"expected a string, got {type(value).__name__}", record=record)
    if not allow_empty and not value.strip():
        raise DataError(path, line, key, "is empty", record=record)
    return value


def _letter_of(label: str, labels: list[str], path: Path, line: int, field: str) -> str:
    """The letter (A, B, ...) of the option whose label is `label`, by position."""
    if label not in labels:
        raise DataError(path, line, field, f"{label!r} is not one of the option labels {labels}")
    return CHOICE_LETTERS[labels.index(label)]


def _check_choices(texts: Any, path: Path, line: int, field: str) -> list[str]:
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise DataError(path, line, field, "expected a list of option texts")
    if not 2 <= len(texts) <= len(CHOICE_LETTERS):
        raise DataError(path, line, field, f"expected 2-{len(CHOICE_LETTERS)} options, got {len(texts)}")
    return texts


# ---------------------------------------------------------------------------------------------------------
# Verifiable prompts: math, multiple choice, code.

_GSM8K_FINAL = re.compile(r"####\s*(.+?)\s*$")


def read_gsm8k(path: Path, split: str = "test") -> list[PromptRecord]:
    """GSM8K jsonl: {"question", "answer"} with the final answer after '####'."""
    path = Path(path)
    out = []
    for lineno, obj in iter_jsonl(path):
        question = _text(obj, "question", path, lineno)
        solution = _text(obj, "answer", path, lineno)
        match = _GSM8K_FINAL.search(solution)
        if not match:
            raise DataError(path, lineno, "answer", "no final answer after '####'")
        final = match.group(1).replace(",", "").strip()
        if not re.fullmatch(r"-?\d+(\.\d+)?", final):
            raise DataError(path, lineno, "answer", f"final answer {match.group(1)!r} is not a number")
        out.append(
            PromptRecord(
                id=f"gsm8k/{split}/{len(out)}",
                category=Category.MATH.value,
                text=question,
                source=f"gsm8k/{split}",
                answer=final,
                metadata={"solution": solution},
            )
        )
    return out


def read_mmlu(path: Path, split: str = "test") -> list[PromptRecord]:
    """MMLU csv (a folder of `<subject>_<split>.csv`, or one file): question, choice0-3, answer 0-3."""
    path = Path(path)
    files = sorted(path.glob(f"*_{split}.csv")) if path.is_dir() else [path]
    if not files:
        raise DataError(path, None, None, f"no *_{split}.csv files")
    columns = ("question", "choice0", "choice1", "choice2", "choice3", "answer")
    out = []
    for file in files:
        subject = file.name.removesuffix(f"_{split}.csv")
        for lineno, row in iter_csv(file, columns):
            question = _text(row, "question", file, lineno)
            answer = row["answer"].strip()
            if answer not in ("0", "1", "2", "3"):
                raise DataError(file, lineno, "answer", f"expected 0-3, got {answer!r}")
            choices = [row[f"choice{i}"] for i in range(4)]
            out.append(
                PromptRecord(
                    id=f"mmlu/{split}/{subject}/{lineno}",
                    category=Category.MULTIPLE_CHOICE.value,
                    text=question,
                    source=f"mmlu/{split}",
                    answer=CHOICE_LETTERS[int(answer)],
                    choices=choices,
                    metadata={"subject": subject},
                )
            )
    return out


def read_arc(path: Path, split: str = "ARC-Challenge-Test") -> list[PromptRecord]:
    """AI2 ARC jsonl: {"id", "question": {"stem", "choices": [{"text", "label"}]}, "answerKey"}."""
    path = Path(path)
    out = []
    for lineno, obj in iter_jsonl(path):
        q = obj.get("question")
        if not isinstance(q, dict):
            raise DataError(path, lineno, "question", "missing or not an object")
        stem = _text(q, "stem", path, lineno)
        raw = q.get("choices")
        if not isinstance(raw, list) or not all(isinstance(c, dict) for c in raw):
            raise DataError(path, lineno, "question.choices", "expected a list of {text, label}")
        texts = _check_choices([c.get("text") for c in raw], path, lineno, "question.choices")
        labels = [str(c.get("label")) for c in raw]
        key = _text(obj, "answerKey", path, lineno)
        out.append(
            PromptRecord(
                id=f"arc/{_text(obj, 'id', path, lineno)}",
                category=Category.MULTIPLE_CHOICE.value,
                text=stem,
                source=f"arc/{split}",
                answer=_letter_of(key, labels, path, lineno, "answerKey"),
                choices=texts,
                metadata={"labels": labels} if labels != list(CHOICE_LETTERS[: len(labels)]) else {},
            )
        )
    return out


def read_commonsenseqa(path: Path, split: str = "validation") -> list[PromptRecord]:
    """CommonsenseQA jsonl (HF-flattened): {"id", "question", "choices": {"label", "text"}, "answerKey"}."""
    path = Path(path)
    out = []
    for lineno, obj in iter_jsonl(path):
        question = _text(obj, "question", path, lineno)
        choices = obj.get("choices")
        if not isinstance(choices, dict):
            raise DataError(path, lineno, "choices", "missing or not an object")
        texts = _check_choices(choices.get("text"), path, lineno, "choices.text")
        labels = choices.get("label")
        if not isinstance(labels, list) or len(labels) != len(texts):
            raise DataError(path, lineno, "choices.label", "expected one label per option")
        out.append(
            PromptRecord(
                id=f"commonsenseqa/{_text(obj, 'id', path, lineno)}",
                category=Category.MULTIPLE_CHOICE.value,
                text=question,
                source=f"commonsenseqa/{split}",
                answer=_letter_of(
                    _text(obj, "answerKey", path, lineno), [str(x) for x in labels], path, lineno, "answerKey"
                ),
                choices=texts,
                metadata={"concept": obj.get("question_concept", "")},
            )
        )
    return out


def read_humaneval(path: Path, split: str = "test") -> list[PromptRecord]:
    """HumanEval jsonl(.gz): {"task_id", "prompt", "entry_point", "canonical_solution", "test"}."""
    path = Path(path)
    out = []
    for lineno, obj in iter_jsonl(path):
        task_id = _text(obj, "task_id", path, lineno)
        test = _text(obj, "test", path, lineno)
        entry = _text(obj, "entry_point", path, lineno)
        if "def check(" not in test:
            raise DataError(path, lineno, "test", "has no `def check(candidate)`")
        out.append(
            PromptRecord(
                id=task_id,
                category=Category.CODE.value,
                text=_text(obj, "prompt", path, lineno),
                source="humaneval",
                answer=_text(obj, "canonical_solution", path, lineno),
                tests=test,
                entry_point=entry,
            )
        )
    return out


# ---------------------------------------------------------------------------------------------------------
# Harmful prompts: red-teaming requests and ToxiGen's few-shot statement lists.

_TOXIGEN_NAME = re.compile(r"^(hate|neutral)_(.+?)_1k\.txt$")


def read_toxigen(path: Path, split: str = "prompts") -> list[PromptRecord]:
    """ToxiGen prompts folder: each line of `<hate|neutral>_<group>_1k.txt` is a list of '- statement' lines
    joined by a literal backslash-n and ending with '-'; the model continues the list."""
    path = Path(path)
    files = sorted(path.glob("*.txt")) if path.is_dir() else [path]
    if not files:
        raise DataError(path, None, None, "no ToxiGen prompt files (*.txt)")
    out = []
    for file in files:
        match = _TOXIGEN_NAME.match(file.name)
        if not match:
            raise DataError(file, None, None, "file name is not <hate|neutral>_<group>_1k.txt")
        label, group = match.groups()
        with open(file, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                line = line.rstrip("\n")
                if not line.strip():
                    continue
                text = line.replace("\\n", "\n")
                if not text.lstrip().startswith("-"):
                    raise DataError(file, lineno, "prompt", "expected a '- statement' list")
                out.append(
                    PromptRecord(
                        id=f"toxigen/{label}_{group}/{lineno}",
                        category=Category.HARMFUL.value,
                        text=text,
                        source="toxigen",
                        metadata={"label": label, "group": group, "task": "continue"},
                    )
                )
    return out


def read_harmbench(path: Path, split: str = "all") -> list[PromptRecord]:
    """HarmBench behaviours csv: Behavior, FunctionalCategory, SemanticCategory, Tags, ContextString, BehaviorID.
    Contextual behaviours are prompted as HarmBench does: the context, a separator, then the request."""
    path = Path(path)
    cols = ("Behavior", "FunctionalCategory", "SemanticCategory", "ContextString", "BehaviorID")
    out = []
    for lineno, row in iter_csv(path, cols):
        behavior = _text(row, "Behavior", path, lineno)
        context = row["ContextString"].strip()
        out.append(
            PromptRecord(
                id=f"harmbench/{_text(row, 'BehaviorID', path, lineno)}",
                category=Category.HARMFUL.value,
                text=f"{context}\n\n---\n\n{behavior}" if context else behavior,
                source=f"harmbench/{split}",
                metadata={"functional": row["FunctionalCategory"], "semantic": row["SemanticCategory"]},
            )
        )
    return out


def read_advbench(path: Path, split: str = "behaviors") -> list[PromptRecord]:
    """AdvBench harmful behaviours csv: goal, target."""
    path = Path(path)
    return [
        PromptRecord(
            id=f"advbench/{lineno}",
            category=Category.HARMFUL.value,
            text=_text(row, "goal", path, lineno),
            source="advbench",
            metadata={"target": row["target"]},
        )
        for lineno, row in iter_csv(path, ("goal", "target"))
    ]


def read_strongreject(path: Path, split: str = "all") -> list[PromptRecord]:
    """StrongREJECT csv: category, source, forbidden_prompt."""
    path = Path(path)
    return [
        PromptRecord(
            id=f"strongreject/{lineno}",
            category=Category.HARMFUL.value,
            text=_text(row, "forbidden_prompt", path, lineno),
            source="strongreject",
            metadata={"category": _text(row, "category", path, lineno), "origin": row["source"]},
        )
        for lineno, row in iter_csv(path, ("category", "source", "forbidden_prompt"))
    ]


# ---------------------------------------------------------------------------------------------------------
# Human preference pairs for the audit sets.

_ASSISTANT = "\n\nAssistant:"


def split_hh_pair(chosen: str, rejected: str) -> tuple[str, str, str]:
    """Two HH-RLHF transcripts into (shared conversation up to the last common 'Assistant:', chosen reply,
    rejected reply). The cut is the last 'Assistant:' turn inside the common prefix, not the last one of each
    transcript: a few upstream replies themselves contain a spurious '\\n\\nAssistant:'."""
    common = os.path.commonprefix([chosen, rejected])
    cut = common.rfind(_ASSISTANT)
    if cut < 0:
        raise ValueError("the two transcripts share no conversation ending in '\\n\\nAssistant:'")
    cut += len(_ASSISTANT)
    return chosen[:cut].strip(), chosen[cut:].strip(), rejected[cut:].strip()


def read_hh_rlhf(path: Path, split: str = "harmless-base-test") -> list[HumanPair]:
    """HH-RLHF jsonl.gz: {"chosen", "rejected"} transcripts sharing the conversation before the last reply."""
    path = Path(path)
    out = []
    for lineno, obj in iter_jsonl(path):
        chosen, rejected = _text(obj, "chosen", path, lineno), _text(obj, "rejected", path, lineno)
        try:
            prompt, chosen_reply, rejected_reply = split_hh_pair(chosen, rejected)
        except ValueError as exc:
            raise DataError(path, lineno, "chosen", str(exc)) from None
        out.append(
            HumanPair(
                f"hh-rlhf/{split}/{lineno}",
                prompt,
                chosen_reply,
                rejected_reply,
                f"hh-rlhf/{split}",
                Category.HARMFUL.value,
            )
        )
    return out


def read_llmbar(path: Path, split: str = "llmbar/natural") -> list[HumanPair]:
    """LLMBar-format json array: {"input", "output_1", "output_2", "label": 1|2} (LLMBar, MT-Bench, FairEval...)."""
    path = Path(path)
    out = []
    for i, obj in enumerate(load_json_array(path)):
        prompt = _text(obj, "input", path, None, record=i)
        outputs = [_text(obj, f"output_{k}", path, None, record=i, allow_empty=True) for k in (1, 2)]
        label = obj.get("label")
        if label not in (1, 2) or isinstance(label, bool):
            raise DataError(path, None, "label", f"expected 1 or 2, got {label!r}", record=i)
        chosen, rejected = (outputs[0], outputs[1]) if label == 1 else (outputs[1], outputs[0])
        out.append(HumanPair(f"{split}/{i}", prompt, chosen, rejected, split, Category.OPEN_QA.value))
    return out


HUMAN_PAIR_CATEGORIES = (Category.HARMFUL.value, Category.OPEN_QA.value)


def read_human_pairs_jsonl(path: Path) -> list[HumanPair]:
    """Any file of human preference pairs in the documented JSONL form (`hrlaif audit-labels --human-pairs`): one
    object a line, {"prompt", "chosen", "rejected", "category": "harmful" (harmlessness) | "open_qa"
    (helpfulness)}, optionally "id" (default <file name>/<line>, unique) and "source" (default the file name);
    other keys are ignored."""
    path = Path(path)
    out, ids = [], set()
    for lineno, obj in iter_jsonl(path):
        prompt, chosen, rejected = (_text(obj, key, path, lineno) for key in ("prompt", "chosen", "rejected"))
        category = _text(obj, "category", path, lineno)
        if category not in HUMAN_PAIR_CATEGORIES:
            raise DataError(
                path,
                lineno,
                "category",
                f"expected 'harmful' (harmlessness) or 'open_qa' (helpfulness), got {category!r}",
            )
        pid = _text(obj, "id", path, lineno) if "id" in obj else f"{path.name}/{lineno}"
        if pid in ids:
            raise DataError(path, lineno, "id", f"duplicate id {pid!r}")
        ids.add(pid)
        source = _text(obj, "source", path, lineno) if "source" in obj else path.name
        out.append(HumanPair(pid, prompt, chosen, rejected, source, category))
    if not out:
        raise DataError(path, None, None, "no human pairs")
    return out


# ---------------------------------------------------------------------------------------------------------
# The catalogue: source name -> (reader, path under the data folder, expected rows in the shared copy).

Reader = Callable[..., list]
SOURCES: dict[str, tuple[Reader, str, int]] = {  # the source name is also the id prefix of its records
    "gsm8k/test": (read_gsm8k, "gsm8k/test.jsonl", 1319),
    "gsm8k/train": (read_gsm8k, "gsm8k/train.jsonl", 7473),
    "gsm8k/test_socratic": (read_gsm8k, "gsm8k/test_socratic.jsonl", 1319),
    "mmlu/test": (read_mmlu, "mmlu/test", 14042),
    "mmlu/dev": (read_mmlu, "mmlu/dev", 285),
    "arc/challenge-test": (read_arc, "arc/ARC-Challenge-Test.jsonl", 1172),
    "arc/challenge-dev": (read_arc, "arc/ARC-Challenge-Dev.jsonl", 299),
    "arc/easy-test": (read_arc, "arc/ARC-Easy-Test.jsonl", 2376),
    "commonsenseqa/validation": (read_commonsenseqa, "commonsenseqa/validation.jsonl", 1221),
    "humaneval": (read_humaneval, "humaneval/HumanEval.jsonl.gz", 164),
    "toxigen": (read_toxigen, "toxigen/prompts", 6200),
    "harmbench/all": (read_harmbench, "harmbench/harmbench_behaviors_text_all.csv", 400),
    "harmbench/test": (read_harmbench, "harmbench/harmbench_behaviors_text_test.csv", 320),
    "harmbench/val": (read_harmbench, "harmbench/harmbench_behaviors_text_val.csv", 80),
    "advbench": (read_advbench, "advbench/harmful_behaviors.csv", 520),
    "strongreject": (read_strongreject, "strongreject/strongreject_dataset.csv", 313),
    "hh-rlhf/harmless-base-test": (read_hh_rlhf, "hh-rlhf/harmless-base-test.jsonl.gz", 2312),
    "llmbar/natural": (read_llmbar, "llmbar/LLMBar/Natural/dataset.json", 100),
    "llmbar/adversarial-gptinst": (read_llmbar, "llmbar/LLMBar/Adversarial/GPTInst/dataset.json", 92),
    "llmbar/adversarial-gptout": (read_llmbar, "llmbar/LLMBar/Adversarial/GPTOut/dataset.json", 47),
    "llmbar/adversarial-manual": (read_llmbar, "llmbar/LLMBar/Adversarial/Manual/dataset.json", 46),
    "llmbar/adversarial-neighbor": (read_llmbar, "llmbar/LLMBar/Adversarial/Neighbor/dataset.json", 134),
    "mt-bench": (read_llmbar, "llmbar/Processed/MT-Bench/dataset.json", 200),
    "faireval": (read_llmbar, "llmbar/Processed/FairEval/dataset.json", 66),
    "llmeval2": (read_llmbar, "llmbar/Processed/LLMEval^2/dataset.json", 200),
}
HUMAN_PAIR_SOURCES = {name for name, (reader, _, _) in SOURCES.items() if reader in (read_hh_rlhf, read_llmbar)}
DATA_DIR_ENV = "HRLAIF_DATA_DIR"


def resolve_data_dir(flag: str | Path | None = None) -> Path | None:
    """The data folder: the flag, else $HRLAIF_DATA_DIR, else ../shared/data (beside cwd or this checkout)."""
    if flag:
        return Path(flag)
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV])
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        candidate = base.parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return None


def load_source(name: str, data_dir: str | Path | None = None) -> list:
    """Records of a named source (see SOURCES) read from the data folder."""
    if name not in SOURCES:
        raise KeyError(f"unknown data source {name!r}; known: {', '.join(SOURCES)}")
    root = resolve_data_dir(data_dir)
    if root is None:
        raise DataError(
            f"../shared/data (or ${DATA_DIR_ENV})", None, None, "no data folder: pass --data-dir or set the variable"
        )
    reader, rel, _ = SOURCES[name]
    # LLMBar-format files have no split of their own: the source name names them (llmbar/natural, mt-bench).
    split = name if reader is read_llmbar else name.split("/", 1)[-1]
    return reader(root / rel, split=split)
