"""Notes, logging and progress bars on stderr for the commands."""

from __future__ import annotations

import contextlib
import logging
import sys

_quiet = False


class _NoteHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        level = "note" if record.levelno < logging.WARNING else "warning"
        print(f"histcli: {level}: {record.getMessage()}", file=sys.stderr)


def setup(quiet: bool = False) -> None:
    """Route the library's ``histcli`` logger to stderr; --quiet keeps only warnings."""
    global _quiet
    _quiet = quiet
    logger = logging.getLogger("histcli")
    logger.handlers[:] = [_NoteHandler()]
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False


def note(message: str) -> None:
    if not _quiet:
        print(f"histcli: note: {message}", file=sys.stderr)


class _NoProgress:
    def add_task(self, *args, **kwargs):
        return 0

    def update(self, *args, **kwargs):
        pass

    def advance(self, *args, **kwargs):
        pass


@contextlib.contextmanager
def progress(*fields: str):
    """A rich progress bar on a terminal's stderr; nothing with --quiet or in logs.

    ``fields`` are extra task columns.
    """
    if _quiet or not sys.stderr.isatty():
        yield _NoProgress()
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from histcli.output import console

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
    columns += [TextColumn(f"{{task.fields[{name}]}}") for name in fields]
    columns.append(TimeElapsedColumn())
    with Progress(*columns, console=console(stderr=True), transient=False) as bar:
        yield bar
