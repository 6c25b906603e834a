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
