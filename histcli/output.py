"""Tables for people (rich) and for machines (TSV, CSV, JSON), written to stdout.

Machine formats carry stable column names, full precision and ``NA`` (TSV/CSV)
or ``null`` (JSON) for undefined values; they never contain colour codes.
The rich table is drawn without box characters or colour when stdout is not
a terminal.
"""

from __future__ import annotations

import json
import math
import os
import sys
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from histcli.errors import StdoutClosed


@dataclass(frozen=True)
class Column:
    key: str
    header: str | None = None
    digits: int | None = None  # decimals shown in the rich table for floats
    percent: bool = False
    justify: str = "right"
    # Long free text (a path, a history): in the rich table it folds over lines, at spaces where it
    # has them, rather than making the table too wide for one line per row.
    fold: bool = False
    # Fixed-point however small (a duration: 0.0, not 3.1e-02); other columns with ``digits`` show a
    # value too small for them (a p-value) in scientific notation rather than as 0.
    fixed: bool = False
    # A value every row has alike (store list's marks) is said once above the rich table, not repeated in
    # a column of each row; machine formats keep the column.
    shared: bool = False
    # A comma-separated list (marks): in the rich table its items are separated by ", ", so that a folding
    # column breaks between items, never inside one.
    items: bool = False
    # The row's key of the value where it is not the column's name, and the value's text where JSON keeps it as it
    # is: an entry's seeds are a list in JSON (``seeds``: [0, 1, 2]) and short text under TSV's ``seed`` ("0-2").
    field: str | None = None
    text: Callable[[Any], str] | None = None

    @property
    def title(self) -> str:
        return self.header or self.key

    def machine(self, row: dict) -> str:
        """The row's value as TSV and CSV write it."""
        value = row.get(self.field or self.key)
        return self.text(value) if self.text and value is not None else machine_text(value)

    def human(self, row: dict) -> str:
        """The row's value as the rich table shows it."""
        value = row.get(self.field or self.key)
        return self.text(value) if self.text and value is not None else human_text(value, self)


def field_value_columns() -> list[Column]:
    """The columns of one thing's fields (`store show`, `models show`): long values fold, one line per field."""
    return [Column("field", justify="left"), Column("value", justify="left", fold=True)]


def counted(count: int, noun: str) -> str:
    """``count`` and ``noun``, plural unless the count is 1: "1 epoch", "3 trained trials"."""
    return f"{count} {noun}" + ("" if count == 1 else "s")


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def resolve_format(fmt: str) -> str:
    """``auto`` is a rich table on a terminal and TSV in a pipe or file."""
    if fmt == "auto":
        return "table" if stdout_is_terminal() else "tsv"
    return fmt


def clean(value: Any) -> Any:
    """JSON-ready value: NaN and infinities become None, numpy scalars plain Python."""
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: clean(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(item) for item in value]
    return value


def machine_text(value: Any) -> str:
    """Full precision (the shortest text that reads back as the same float); NA for undefined."""
    value = clean(value)
    if value is None:
        return "NA"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return ",".join(machine_text(item) for item in value)
    return str(value)


def human_text(value: Any, column: Column) -> str:
    value = clean(value)
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if column.percent:
            return f"{100 * value:.1f}%"
        if column.digits is not None:
            if value != 0 and abs(value) < 10 ** (-column.digits) and not column.fixed:
                return f"{value:.1e}"
            return f"{value:.{column.digits}f}"
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ",".join(str(item) for item in value)
    return str(value)


def write(text: str, stream=None) -> None:
    """Write to stdout; a reader that went away becomes StdoutClosed (handled in main)."""
    stream = stream or sys.stdout
    try:
        stream.write(text)
        stream.flush()
    except BrokenPipeError:
        raise StdoutClosed() from None


def render_rows(rows: Sequence[dict], columns: Sequence[Column], fmt: str, *, title: str | None = None,
                json_payload: Any = None) -> None:
    """Print rows in ``fmt``; JSON prints ``json_payload`` when given, else the rows."""
    fmt = resolve_format(fmt)
    if fmt == "json":
        write(json.dumps(clean(json_payload if json_payload is not None else list(rows)), indent=2) + "\n")
    elif fmt in ("tsv", "csv"):
        write(delimited(rows, columns, "\t" if fmt == "tsv" else ","))
    else:
        write_rich_table(rows, columns, title=title)


def delimited(rows: Iterable[dict], columns: Sequence[Column], sep: str) -> str:
    """TSV (tabs, no quoting: values never hold tabs) or RFC 4180 CSV."""
    import csv
    import io

    buffer = io.StringIO()
    if sep == ",":
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow([column.key for column in columns])
        writer.writerows([column.machine(row) for column in columns] for row in rows)
        return buffer.getvalue()
    lines = [sep.join(column.key for column in columns)]
    lines += [sep.join(column.machine(row) for column in columns) for row in rows]
    return "\n".join(lines) + "\n"


def console(stderr: bool = False):
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    terminal = stream.isatty()
    # Piped, a table is as wide as its values need (up to 200 columns), unless COLUMNS says how wide to fit it
    # (`COLUMNS=80 histcli ... -f table | less`); rich reads COLUMNS when the width is left to it.
    columns = os.environ.get("COLUMNS", "")
    sized = terminal or (columns.isdigit() and int(columns) > 0)
    return Console(file=stream, force_terminal=terminal, no_color=not terminal, highlight=False,
                   soft_wrap=not sized, width=None if sized else 200)


# Streams that a table was written to: the next table on one of them starts after a blank line.
_streams_with_tables: weakref.WeakSet = weakref.WeakSet()


def write_rich_table(rows, columns, *, title=None) -> None:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    terminal = stdout_is_terminal()
    alike = [column for column in columns if column.shared and len(rows) > 1
             and len({column.human(row) for row in rows}) == 1]
    if alike:
        columns = [column for column in columns if column not in alike]
        # key=value words: a narrow terminal wraps the line between them, never inside one.
        said_once = " ".join(f"{column.title}={column.human(rows[0])}" for column in alike)
        extra_heading = f"every row: {said_once}"
    else:
        extra_heading = None
    # Two spaces between columns and none at the edges: tables stay within 80 columns longer.
    table = Table(box=box.SIMPLE_HEAD if terminal else None, header_style="bold" if terminal else None,
                  show_edge=False, collapse_padding=True, pad_edge=False)
    for column in columns:
        table.add_column(column.title, justify=column.justify, no_wrap=not column.fold,
                         overflow="fold" if column.fold else "ellipsis")
    for row in rows:
        table.add_row(*(c.human(row).replace(",", ", ") if c.items else c.human(row) for c in columns))
    out = console()
    if rows and not fits(out, table, columns):
        # Too wide for the terminal: one key-value block per row, so that no value is cut.
        blocks = [(f"{title} ({index} of {len(rows)})" if title else None, record_table(row, columns, terminal))
                  for index, row in enumerate(rows, start=1)]
    else:
        blocks = [(title, table)]
    try:
        for index, (block_title, block) in enumerate(blocks):
            if index or out.file in _streams_with_tables:
                out.print()
            _streams_with_tables.add(out.file)
            if block_title:
                out.print(heading(block_title, terminal))
            if extra_heading and index == 0:
                out.print(Text(extra_heading))
            if terminal:
                out.print(block)
            else:  # rich pads every cell to its column's width, the last too: no trailing blanks in a file
                with out.capture() as captured:
                    out.print(block)
                out.file.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))
    except BrokenPipeError:
        raise StdoutClosed() from None


def heading(title: str, terminal: bool):
    """A table's title on a line of its own: as wide as the terminal allows, not as the table below it."""
    from rich.text import Text

    return Text(title, style="bold" if terminal else "")


def write_rich(renderable) -> None:
    """Print any rich renderable (a panel, text) on stdout like the tables."""
    try:
        console().print(renderable)
    except BrokenPipeError:
        raise StdoutClosed() from None


# Narrowest a folding column may become before the table gives way to one block per row.
FOLD_MIN_WIDTH = 24


def fits(out, table, columns) -> bool:
    """Whether the table shows every cell on one line per row, folding columns at least FOLD_MIN_WIDTH wide."""
    folding = [table.columns[index] for index, column in enumerate(columns) if column.fold]
    for column in folding:
        column.max_width = FOLD_MIN_WIDTH
    try:
        return natural_width(out, table) <= out.width
    finally:
        for column in folding:
            column.max_width = None


def natural_width(out, table) -> int:
    """Columns the table needs to show every cell without cutting it."""
    from rich.measure import Measurement

    # Measured without the console's own width limit, which would clamp the answer to it.
    return Measurement.get(out, out.options.update_width(1_000_000), table).maximum


def record_table(row: dict, columns: Sequence[Column], terminal: bool):
    """One row as a two-column table of field and value; long values fold rather than being cut."""
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD if terminal else None, show_header=False, show_edge=False)
    table.add_column("field", style="bold" if terminal else None, no_wrap=True)
    table.add_column("value", overflow="fold")
    for column in columns:
        table.add_row(column.title, column.human(row))
    return table
