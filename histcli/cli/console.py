"""Notes, logging and progress bars on stderr for the commands."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time

_quiet = False


class _NoteHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        level = "note" if record.levelno < logging.WARNING else "warning"
        print(f"histcli: {level}: {record.getMessage()}", file=sys.stderr)


def setup(quiet: bool = False) -> None:
    """Route the library's ``histcli`` logger to stderr; --quiet keeps only warnings."""
    global _quiet
    _quiet = quiet
    progress_seconds()  # a bad HISTCLI_PROGRESS_SECONDS is refused before any work starts
    logger = logging.getLogger("histcli")
    logger.handlers[:] = [_NoteHandler()]
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False


def note(message: str) -> None:
    if not _quiet:
        print(f"histcli: note: {message}", file=sys.stderr)


# In a log (stderr not a terminal) a long task writes a plain progress line this often, so that a
# cluster job's log shows it is alive; commands shorter than this write none.
PROGRESS_SECONDS_ENV = "HISTCLI_PROGRESS_SECONDS"
DEFAULT_PROGRESS_SECONDS = 60.0


class _NoProgress:
    def add_task(self, *args, **kwargs):
        return 0

    def update(self, *args, **kwargs):
        pass

    def advance(self, *args, **kwargs):
        pass


class _LogProgress:
    """The progress bar's interface for a log: one line per task at most every ``seconds``, and a last
    line when a task that has written one completes."""

    def __init__(self, seconds: float, fields: tuple[str, ...]):
        self.seconds = seconds
        self.fields = fields
        self.tasks: list[dict] = []

    def add_task(self, description: str, total: float | None = None, **fields) -> int:
        now = time.monotonic()
        self.tasks.append({"description": description, "total": total, "completed": 0, "fields": fields,
                           "started": now, "written": now, "wrote": False})
        return len(self.tasks) - 1

    def update(self, task_id: int, *, completed: float | None = None, total: float | None = None,
               advance: float | None = None, description: str | None = None, **fields) -> None:
        task = self.tasks[task_id]
        if description is not None:
            task["description"] = description
        if total is not None:
            task["total"] = total
        if completed is not None:
            task["completed"] = completed
        if advance is not None:
            task["completed"] += advance
        task["fields"].update(fields)
        now = time.monotonic()
        finished = task["total"] is not None and task["completed"] >= task["total"]
        if now - task["written"] >= self.seconds or (finished and task["wrote"]):
            task["written"] = now
            # After a finished task's last line, a later update starts a new round.
            task["wrote"] = not finished
            print(f"histcli: progress: {self._line(task, now)}", file=sys.stderr, flush=True)

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def _line(self, task: dict, now: float) -> str:
        total = "?" if task["total"] is None else f"{task['total']:g}"
        parts = [task["description"], f"{task['completed']:g}/{total}"]
        parts += [str(task["fields"][name]) for name in self.fields if task["fields"].get(name)]
        elapsed = int(now - task["started"])
        parts.append(f"{elapsed // 3600}:{elapsed // 60 % 60:02d}:{elapsed % 60:02d}")
        return " ".join(parts)


def progress_seconds() -> float:
    """HISTCLI_PROGRESS_SECONDS: seconds between progress lines in a log (0: none)."""
    from histcli.errors import EnvironmentVariableError

    value = os.environ.get(PROGRESS_SECONDS_ENV, "").strip()
    if not value:
        return DEFAULT_PROGRESS_SECONDS
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise EnvironmentVariableError(f"{PROGRESS_SECONDS_ENV}={value!r}: expected seconds between progress lines in a log, "
                         "0 or more (0: none)")
    return seconds


@contextlib.contextmanager
def progress(*fields: str):
    """A rich progress bar on a terminal's stderr; in a log, a plain line now and then (see
    :func:`progress_seconds`); nothing with --quiet.

    ``fields`` are extra task columns.
    """
    if _quiet:
        yield _NoProgress()
        return
    if not sys.stderr.isatty():
        seconds = progress_seconds()
        yield _LogProgress(seconds, fields) if seconds > 0 else _NoProgress()
        return
    from histcli.output import console

    with progress_display(console(stderr=True), *fields) as bar:
        yield bar


# The bar's width when the line has room; it gives way first when the line would not fit.
BAR_WIDTH = 40
BAR_MIN_WIDTH = 5
# Columns left free at the end of the line: the terminal echoes Ctrl-C as "^C" after the last
# line, and on a full line that wraps, so the live display redraws one line too low and leaves
# a stale copy of a bar above the interruption's note.
ECHO_ROOM = 2


def progress_display(out, *fields: str):
    """A rich Progress on ``out`` whose lines cut no text and leave ECHO_ROOM columns free: the bar
    narrows (down to BAR_MIN_WIDTH), then the description wraps; on a line too narrow for the
    fields beside the description's longest word, the fields wrap too. Counts and times stay whole."""
    from rich.cells import cell_len
    from rich.measure import Measurement
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Column

    bar = BarColumn(bar_width=BAR_WIDTH, table_column=Column(no_wrap=True))
    field_columns = [TextColumn(f"{{task.fields[{name}]}}", table_column=Column(no_wrap=True, overflow="fold"))
                     for name in fields]
    columns = [TextColumn("{task.description}", table_column=Column(overflow="fold")), bar,
               MofNCompleteColumn(table_column=Column(no_wrap=True)), *field_columns,
               TimeElapsedColumn(table_column=Column(no_wrap=True))]

    class FittingProgress(Progress):
        def make_tasks_table(self, tasks):
            bar.bar_width = BAR_WIDTH
            for column in field_columns:
                column.get_table_column().no_wrap = True
            table = super().make_tasks_table(tasks)
            options = out.options.update_width(1_000_000)
            natural = Measurement.get(out, options, table).maximum
            room = out.width - ECHO_ROOM
            if natural <= room:
                return table
            bar.bar_width = max(BAR_MIN_WIDTH, BAR_WIDTH - (natural - room))
            table = super().make_tasks_table(tasks)
            # Width with every description folded down to its longest word (rich's minimum would
            # count the unwrapped fields at theirs too).
            longest = max((cell_len(task.description) for task in tasks), default=0)
            narrowest = max((cell_len(word) for task in tasks for word in task.description.split()), default=0)
            if Measurement.get(out, options, table).maximum - longest + narrowest > room:
                for column in field_columns:
                    column.get_table_column().no_wrap = False
                table = super().make_tasks_table(tasks)
            table.width = room  # what still does not fit folds in the description column (and the fields)
            return table

    return FittingProgress(*columns, console=out, transient=False)
