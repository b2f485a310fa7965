"""Errors that name what was wrong: the file and line of a record, the key of a config."""

from __future__ import annotations


class HrlaifError(Exception):
    """Base class of the project's own errors."""


class DataError(HrlaifError, ValueError):
    """A malformed record: names the file, the line (or row) and the field."""

    def __init__(self, path: object, line: int | None, field: str | None, message: str, record: int | None = None):
        """`line` is a 1-based line of a text file; `record` a 0-based index into a JSON array or table."""
        self.path, self.line, self.field, self.record = str(path), line, field, record
        where = self.path if line is None else f"{self.path}:{line}"
        where += "" if record is None else f" record {record}"
        what = f"field {field!r}: " if field else ""
        super().__init__(f"{where}: {what}{message}")


class ConfigError(HrlaifError, ValueError):
    """An invalid config: names every offending key."""
