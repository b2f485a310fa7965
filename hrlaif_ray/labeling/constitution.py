"""A constitution: the principles the judge and the rewriter cite, read from a YAML file.

```yaml
principles:
  - id: harmless-dangerous            # letters, digits, '.', '_' or '-'; unique in the file
    text: Do not help anyone hurt people, make weapons or break the law.
    categories: [harmful]             # prompt categories it applies to (hrlaif_ray.categories), or `all`
```

Its `version` is a short hash of the principles' canonical JSON: labels made under a constitution carry the
template version `v2+c<version>` (`template_version`), which is part of their idempotency key, so a change of
any principle's id, text, categories or order makes new keys and a ledger never mixes labels made under two
constitutions. The labeler cites only the principles of the prompt's category (`for_category`): their ids and
texts travel in the request's data under "principles" (`cite`).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hrlaif_ray.categories import Category
from hrlaif_ray.errors import DataError
from hrlaif_ray.labeling.judge_prompts import tagged_version

ROOT = Path(__file__).resolve().parents[2]  # the checkout: where cluster/configs/constitution.yaml ships
DEFAULT_CONSTITUTION = "cluster/configs/constitution.yaml"
ALL = "all"
_ID = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class Principle:
    id: str
    text: str
    categories: tuple[str, ...]  # category names, or ("all",)

    def applies_to(self, category: str | Category) -> bool:
        return ALL in self.categories or Category(category).value in self.categories


@dataclass(frozen=True)
class Constitution:
    principles: tuple[Principle, ...]

    @property
    def version(self) -> str:
        """First 8 hex digits of the sha256 of the principles' canonical JSON (ids, texts, categories, in order)."""
        canonical = [{"id": p.id, "text": p.text, "categories": sorted(p.categories)} for p in self.principles]
        return hashlib.sha256(json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:8]

    def for_category(self, category: str | Category) -> list[Principle]:
        """The principles that apply to prompts of `category`, in the file's order."""
        return [p for p in self.principles if p.applies_to(category)]

    def cite(self, principles: list[Principle]) -> dict[str, Any]:
        """The request-data entries citing `principles`: their ids and texts, and this constitution's version (the
        request's template tag: `judge_prompts.render` takes it out of the data)."""
        return {"principles": [{"id": p.id, "text": p.text} for p in principles], "constitution": self.version}


def template_version(constitution: Constitution | None) -> str:
    """The template version of labels made under `constitution` (None: the plain TEMPLATE_VERSION)."""
    return tagged_version(constitution.version if constitution is not None else None)


def file_template_version(path: str | Path | None) -> str:
    """The template version of labels made under the constitution file `path` (None: none); reads the file."""
    return template_version(load_constitution(path) if path else None)


def resolve_path(path: str | Path) -> Path:
    """`path` as given when it exists (or is absolute), else relative to the checkout: the shipped default
    (`cluster/configs/constitution.yaml`) is found from any working directory, a Ray worker's too."""
    path = Path(path)
    if path.is_absolute() or path.exists() or not (ROOT / path).exists():
        return path
    return ROOT / path


def load_constitution(path: str | Path) -> Constitution:
    """The constitution in the YAML file `path`; a bad file raises DataError naming the file, record and key."""
    path = resolve_path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(path, None, None, "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, None, None, f"cannot read ({exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise DataError(path, line, None, f"not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("principles"), list):
        raise DataError(path, None, "principles", "expected a mapping whose 'principles' is a list of principles")
    if unknown := sorted(set(data) - {"principles"}):
        raise DataError(path, None, unknown[0], "unknown key (the file holds only 'principles')")
    principles: list[Principle] = []
    seen: set[str] = set()
    for i, rec in enumerate(data["principles"]):
        principles.append(_principle(rec, path, i, seen))
    if not principles:
        raise DataError(path, None, "principles", "no principles")
    return Constitution(tuple(principles))


def _principle(rec: Any, path: Path, i: int, seen: set[str]) -> Principle:
    if not isinstance(rec, dict):
        raise DataError(path, None, None, f"expected a mapping (id, text, categories), got {rec!r}", record=i)
    if unknown := sorted(set(rec) - {"id", "text", "categories"}):
        raise DataError(path, None, unknown[0], "unknown key (allowed: id, text, categories)", record=i)
    pid = rec.get("id")
    if not isinstance(pid, str) or not _ID.match(pid):
        raise DataError(path, None, "id", f"expected letters, digits, '.', '_' or '-', got {pid!r}", record=i)
    if pid in seen:
        raise DataError(path, None, "id", f"duplicate id {pid!r}", record=i)
    seen.add(pid)
    text = rec.get("text")
    if not isinstance(text, str) or not text.strip():
        raise DataError(path, None, "text", "expected a non-empty string", record=i)
    categories = rec.get("categories")
    if categories == ALL:
        categories = [ALL]
    if not isinstance(categories, list) or not categories or not all(isinstance(c, str) for c in categories):
        raise DataError(
            path, None, "categories", f"expected a list of categories or 'all', got {categories!r}", record=i
        )
    for c in categories:
        if c != ALL:
            try:
                Category.parse(c)
            except ValueError as exc:
                raise DataError(path, None, "categories", f"{exc} or 'all'", record=i) from None
    return Principle(pid, " ".join(text.split()), tuple(dict.fromkeys(categories)))
