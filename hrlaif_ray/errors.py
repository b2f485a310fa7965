"""Errors that name what was wrong: the file and line of a record, the key of a config."""

from __future__ import annotations

import argparse
import sys


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


class RunFailure(HrlaifError):
    """A run that failed after its input was accepted (a role that died for good): one line, exit status 1."""


class ConfigError(HrlaifError, ValueError):
    """An invalid config: names every offending key."""


class OneLineParser(argparse.ArgumentParser):
    """argparse with the project's error shape: a usage mistake is one line on stderr (`prog: error: what`) and
    exit status 2, as every other bad input is (`hrlaif --help` still prints the usage)."""

    def error(self, message: str):
        print(f"{self.prog}: error: {' '.join(message.split())}", file=sys.stderr)
        sys.exit(2)
