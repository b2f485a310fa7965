"""The judge cache: the same judge question on the same material is asked once, across runs and arms.

Content-addressed: the key is a hash of the task, the model and the rendered request (whose tag carries the
template version, and whose data block carries the material), so a changed template, model, constitution or
response is a different question. The value is the validated answer and the tokens the original call was billed,
which is what a hit saves.

One SQLite file (`judge-cache.sqlite`) in a folder that a config names: WAL journal, so several labeler actors
and processes read and write it at once (SQLite serialises the writes; a busy writer is waited for); every
insert is its own transaction, so a crash leaves whole entries only. A file that is not SQLite, or an SQLite
file that is not a judge cache of this format, is an error naming it, never a silent wrong answer.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hrlaif_ray.errors import HrlaifError

FILE_NAME = "judge-cache.sqlite"
FORMAT = "hrlaif-judge-cache/1"


class CacheError(HrlaifError):
    """The cache file cannot be used: corrupt, or not a judge cache of this format."""


@dataclass(frozen=True)
class CachedAnswer:
    answer: dict[str, Any]
    tokens_in: int
    tokens_out: int


def cache_key(task: str, model: str, messages: list[dict[str, str]]) -> str:
    return hashlib.sha256(json.dumps([task, model, messages], sort_keys=True).encode()).hexdigest()


class JudgeCache:
    def __init__(self, folder: str | Path):
        self.path = Path(folder).expanduser() / FILE_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self.db.execute("INSERT OR IGNORE INTO meta VALUES ('format', ?)", (FORMAT,))
            found = self.db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()[0]
            if found != FORMAT:
                raise CacheError(f"{self.path}: a judge cache of format {found!r}, expected {FORMAT!r}")
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, task TEXT NOT NULL, model TEXT NOT NULL, "
                "answer TEXT NOT NULL, tokens_in INTEGER NOT NULL, tokens_out INTEGER NOT NULL)"
            )
        except sqlite3.DatabaseError as exc:  # not a database, a torn file, a foreign schema
            raise CacheError(f"{self.path}: not a usable judge cache ({exc})") from None

    def get(self, key: str) -> CachedAnswer | None:
        try:
            row = self.db.execute("SELECT answer, tokens_in, tokens_out FROM answers WHERE key = ?", (key,)).fetchone()
            if row is None:
                return None
            answer = json.loads(row[0])
        except (sqlite3.DatabaseError, json.JSONDecodeError) as exc:
            raise CacheError(f"{self.path}: entry {key[:12]} unreadable ({exc})") from None
        if not isinstance(answer, dict):
            raise CacheError(f"{self.path}: entry {key[:12]} is not an answer object")
        return CachedAnswer(answer, row[1], row[2])

    def put(self, key: str, task: str, model: str, answer: dict[str, Any], tokens_in: int, tokens_out: int) -> None:
        try:
            self.db.execute(
                "INSERT OR IGNORE INTO answers VALUES (?, ?, ?, ?, ?, ?)",
                (key, task, model, json.dumps(answer, sort_keys=True), tokens_in, tokens_out),
            )
        except sqlite3.DatabaseError as exc:
            raise CacheError(f"{self.path}: cannot write ({exc})") from None

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        self.db.close()
