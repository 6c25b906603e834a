"""Exceptions raised by the histcli library, and the one map from them to what users see.

Library code raises these; the command line turns any of them into a one-line
message on stderr and an exit code (see :func:`describe`).
"""

from __future__ import annotations

import errno
from pathlib import Path

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_PIPE_CLOSED = 141


class HistcliError(Exception):
    """Base class: a problem with the user's data, models, store or arguments."""

    exit_code = EXIT_ERROR


class InputError(HistcliError):
    """A user file does not hold what was expected; names the file, line and field."""

    def __init__(self, path, problem: str, *, line: int | None = None, field: str | None = None):
        self.path = str(path) if path is not None else None
        self.line = line
        self.field = field
        self.problem = problem
        where = self.path or "input"
        if line is not None:
            where += f", line {line}"
        if field is not None:
            where += f", field {field}"
        super().__init__(f"{where}: {problem}")


class StoreError(HistcliError):
    """The dataset store is missing, unreadable, or lacks what was asked for."""


class CellExistsError(StoreError):
    def __init__(self, store, cell: str):
        super().__init__(f"{store}: cell {cell!r} already exists; pass --overwrite to replace it")


class ModelError(HistcliError):
    """A registry entry is missing, damaged or does not fit the data."""


class UsageError(HistcliError):
    """Arguments that cannot work together; exit code 2 like other usage errors."""

    exit_code = EXIT_USAGE


class MissingExtraError(HistcliError):
    def __init__(self, package: str, extra: str, purpose: str):
        super().__init__(
            f"{purpose} needs the optional package {package}; "
            f"install it with: pip install 'histcli[{extra}]'"
        )


class StdoutClosed(Exception):
    """The reader of stdout went away (``histcli ... | head -1``)."""


def describe(exc: BaseException) -> tuple[str, int]:
    """Map an exception to a one-line user message and an exit code."""
    if isinstance(exc, HistcliError):
        return str(exc), exc.exit_code
    if isinstance(exc, PermissionError):
        return f"{_name(exc)}: permission denied", EXIT_ERROR
    if isinstance(exc, FileNotFoundError):
        return f"{_name(exc)}: no such file or directory", EXIT_ERROR
    if isinstance(exc, IsADirectoryError):
        return f"{_name(exc)}: is a directory, expected a file", EXIT_ERROR
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return f"{_name(exc)}: no space left on device", EXIT_ERROR
    if isinstance(exc, OSError) and exc.errno == errno.EROFS:
        return f"{_name(exc)}: read-only file system", EXIT_ERROR
    if isinstance(exc, MemoryError):
        return "out of memory; try a smaller --batch-size or --chunk-size", EXIT_ERROR
    return "", -1


def _name(exc: OSError) -> str:
    return str(Path(exc.filename)) if exc.filename else (exc.strerror or "file")
