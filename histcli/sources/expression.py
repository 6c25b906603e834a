"""Expression values attached to a cell at prepare time: one reader and one matcher for every layout.

Tables
    * Two columns, ``gene value`` (separated by whitespace or a comma), with an
      optional header line: one cell's values (``E116.expression.tsv``, the
      DeepDiff ``<cell>.expr.csv``).
    * A matrix: a header ``gene_id NAME NAME ...`` and one column per cell, as
      the Roadmap RNA-seq matrices (``57epigenomes.RPKM.pc``). One column is
      read: the one asked for, else the one named like the cell (E116 for cell
      E116). Only that column's values are checked.
    Plain or gzip. Values are expression levels such as RPKM: finite and >= 0.

Matching
    Genes match by Ensembl id without version (``ENSG00000000003_TSPAN6`` =
    ``ENSG00000000003.12`` = ``ENSG00000000003``; other names match as
    written). A cell whose gene ids are all bare numbers (the DeepChrome CSVs
    write ENSG00000000003 as ``000003``) matches by that number. A gene given
    twice with the same value is used once; with two values it is an error.

Labels
    DeepChrome's rule: 1 where the value is above the median over every row of
    the table's column, whether or not its gene is in the cell. A cell that
    already has labels keeps them only if they all follow that rule.
"""

from __future__ import annotations

import itertools
import math
import operator
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from histcli.errors import ColumnNeededError, InputError, MissingGenesError, SettingError, printable
from histcli.sources.annotation import gene_key
from histcli.sources.common import (
    ValuesByGene,
    decoded_bytes,
    is_number,
    labels_from_expression,
    parse_number,
    read_file_bytes,
    recorded_path,
    shown_name,
    text_lines,
    utf8_text,
)
from histcli.store import CellData, SourceFile

_STARTS_WITH_ENSEMBL_ID = re.compile(r"ENS[A-Z]*G\d{11}")
_HUMAN_ENSEMBL_ID = re.compile(r"ENSG(\d{11})")
# Columns named in an error about a matrix's columns, before "and N more".
_COLUMNS_SHOWN = 8


@dataclass
class ExpressionTable:
    """One cell's expression values as read from a table, one entry per distinct gene key."""

    origin: ExpressionFile = field(repr=False)  # the file read (and hashed) once for every cell
    column: str | None  # the matrix column read; None for a two-column table
    keys: pd.Index
    values: np.ndarray  # float64, one per key
    rows: np.ndarray  # the value of every data row, repeats included (the median runs over them)
    repeated: int  # rows that repeat an earlier row's gene and value

    @property
    def path(self) -> Path:
        return self.origin.path

    @property
    def source(self) -> str:
        """How messages and the cell's attributes name the table (and its column)."""
        return f"column {self.column} of {shown_name(self.path)}" if self.column else shown_name(self.path)


def _fields(line: str) -> list[str]:
    if "\t\t" in line or line.startswith("\t"):
        # An empty field between tabs (a missing value, or R's unnamed gene column) keeps the fields after it
        # in their columns; splitting at any whitespace would move them one column left.
        return [field.strip() for field in line.split("\t")]
    fields = line.split()
    if len(fields) == 1 and "," in line:
        fields = [field.strip() for field in line.split(",")]
    return fields


def _content_lines(lines: list[str]) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of every line that is neither blank nor a comment."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = _fields(line)
        if not fields[0].startswith("#"):
            yield number, fields


def _first_line(path: Path, lines: Iterator[tuple[int, list[str]]]) -> tuple[int, list[str]]:
    first = next(lines, None)
    if first is None:
        raise InputError(path, "no data lines, expected gene ids with expression values")
    return first


def _matrix_columns(first: list[str]) -> list[str] | None:
    """A matrix's value column names, from its first line; None for a two-column table."""
    # A matrix header names three or more columns, none of them a number.
    if len(first) >= 3 and not any(is_number(field) for field in first[1:]):
        return first[1:]
    return None


def _is_two_column_header(fields: list[str]) -> bool:
    """Whether a two-column table's first line is its header rather than a gene with a bad value."""
    return len(fields) == 2 and not _STARTS_WITH_ENSEMBL_ID.match(fields[0]) and not is_number(fields[1])


def _describe_columns(columns: list[str]) -> str:
    shown = ", ".join(map(printable, columns[:_COLUMNS_SHOWN]))
    more = f" and {len(columns) - _COLUMNS_SHOWN} more" if len(columns) > _COLUMNS_SHOWN else ""
    return f"{len(columns)} columns: {shown}{more}"


def _choose_column(path: Path, first: list[str], column: str | None, cell: str | None) -> str | None:
    """The matrix column to read (None for a two-column table); SettingError when none fits."""
    columns = _matrix_columns(first)
    if columns is None:
        if column is not None:
            header = first[1] if len(first) == 2 and not is_number(first[1]) else None
            if header != column:
                named = f"named {header!r}" if header else "without a header"
                raise SettingError("expression_column", column, f"{shown_name(path)} has one value column ({named}); a "
                                   "column is picked from a matrix with one column per cell")
        return None
    wanted = column if column is not None else cell
    # The name of the gene-id column asked for: likely a header from R, one name short (not guessed around).
    unnamed_ids = (f"; {wanted} heads the first column, the gene ids'; a header written by R's write.table has no "
                   "name for them: add one (such as gene_id)" if wanted == first[0] else "")
    if column is not None:
        if column not in columns:
            raise SettingError("expression_column", column,
                               f"no such column in {shown_name(path)} ({_describe_columns(columns)}){unnamed_ids}")
        return column
    if cell is not None and cell in columns:
        return cell
    unnamed = f"; no column is named like the cell {cell!r}" if cell is not None else ""
    raise ColumnNeededError("expression", shown_name(path), f"has {_describe_columns(columns)}{unnamed}{unnamed_ids}",
                            column_setting="expression_column")


def _expression_value(text: str) -> float:
    try:
        value = parse_number(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    if value < 0:
        raise ValueError(f"negative value {text}; expected expression >= 0 (such as RPKM)")
    return value


class ExpressionFile:
    """An expression table (either layout) read once, however many cells take a column from it.

    Prepare makes one per ``--expression`` and hands it to every cell: the file
    is read (once, so it may be a pipe), split into fields and hashed once, and the columns the cells need
    (see :meth:`columns`) are converted together when the first cell asks. A
    column with anything wrong in it (a bad value, a row of another width, a
    gene with two values) is read again line by line when its cell asks, so that
    the error names the line and field, and comes when it always did: a bad
    column of a later cell does not stop the cells before it.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._wanted: list[str | None] = []
        self._tables: dict[str | None, ExpressionTable | None] = {}
        self._keys_by_number: tuple[pd.Index, pd.Index | None] | None = None  # the last keys asked for, and theirs

    @classmethod
    def of(cls, table: Path | ExpressionFile) -> ExpressionFile:
        """``table`` if already an ExpressionFile, else one for the path (nothing is read yet)."""
        return table if isinstance(table, ExpressionFile) else cls(table)

    @cached_property
    def _raw(self) -> bytes:
        return read_file_bytes(self.path)

    @cached_property
    def _lines(self) -> list[str]:
        return text_lines(utf8_text(self.path, decoded_bytes(self.path, self._raw)), self.path)

    @cached_property
    def _first(self) -> tuple[int, list[str]]:
        return _first_line(self.path, _content_lines(self._lines))

    @cached_property
    def source(self) -> SourceFile:
        """The file and the digest of the bytes read once, as the cells that read it record it; a pipe is
        named as given (its resolved name would be the kernel's pipe:[inode])."""
        import hashlib

        return SourceFile(recorded_path(self.path), hashlib.sha256(self._raw).hexdigest())

    def keys_by_number(self, keys: pd.Index) -> pd.Index | None:
        """A table's ``keys`` with human Ensembl ids as bare numbers (ENSG00000000003 as "3"), None when none
        is one. Worked out once for the tables that share their keys (the columns read together)."""
        if self._keys_by_number is None or self._keys_by_number[0] is not keys:
            numbered = [_HUMAN_ENSEMBL_ID.fullmatch(key) for key in keys]
            by_number = (pd.Index([str(int(m.group(1))) if m else key for m, key in zip(numbered, keys, strict=True)])
                         if any(numbered) else None)
            self._keys_by_number = (keys, by_number)
        return self._keys_by_number[1]

    def columns(self, *, column: str | None, cells: list[str]) -> dict[str, str | None]:
        """The column :meth:`table` will read for each cell, checked before any data is read.

        SettingError when a cell has no column, or when several cells would read
        the same values (a two-column table, or one ``column`` for all).
        """
        _, first = self._first
        chosen = {cell: _choose_column(self.path, first, column, cell) for cell in cells}
        if len(cells) > 1 and len(set(chosen.values())) == 1:
            what = f"column {column}" if column else shown_name(self.path)
            raise SettingError("expression", what, f"holds one cell's values, but {len(cells)} cells are prepared; "
                               "prepare one cell, or give a matrix with a column named like each cell")
        # Added to, not replaced: a reader checking its own cell keeps the batch its caller asked for.
        self._wanted = list(dict.fromkeys([*self._wanted, *chosen.values()]))
        return chosen

    def table(self, *, column: str | None = None, cell: str | None = None) -> ExpressionTable:
        """One cell's values: the matrix column ``column``, else the one named ``cell``, or
        the table's one value column. Bad values are an InputError naming the file, line and field."""
        first_number, first = self._first
        chosen = _choose_column(self.path, first, column, cell)
        if chosen is not None and first[1:].count(chosen) > 1:
            raise InputError(self.path, f"column {printable(chosen)} appears {first[1:].count(chosen)} times in the header",
                             line=first_number)
        if chosen not in self._tables:
            self._tables.update(self._read_at_once([name for name in dict.fromkeys([*self._wanted, chosen])
                                                    if name not in self._tables]))
        table = self._tables[chosen]
        return self._read_by_lines(chosen) if table is None else table

    def _read_at_once(self, wanted: list[str | None]) -> dict[str | None, ExpressionTable | None]:
        """The ``wanted`` columns from one pass over the file, converted a column at a time; None for a
        column that needs :meth:`_read_by_lines` to say what is wrong with it."""
        lines = (fields for _, fields in _content_lines(self._lines))
        first = next(lines)
        columns = _matrix_columns(first)
        if columns is None:
            width, indices = 2, {None: 1}
            if not _is_two_column_header(first):
                lines = itertools.chain([first], lines)
        else:
            width, indices = len(columns) + 1, {name: columns.index(name) + 1 for name in wanted}
        # The gene id and the wanted texts of each row; only these are kept (keeping every field of a
        # wide matrix costs more time in allocation than the splitting itself).
        pick = operator.itemgetter(0, *indices.values())
        picked = []
        for fields in lines:
            if len(fields) != width:
                return dict.fromkeys(indices)
            picked.append(pick(fields))
        if not picked:
            return dict.fromkeys(indices)
        genes, *texts = zip(*picked, strict=True)  # a tuple per column
        if "" in genes:
            return dict.fromkeys(indices)
        codes, unique_keys = pd.factorize(pd.Index([gene_key(gene) for gene in genes]))
        first_rows = np.unique(codes, return_index=True)[1]  # the row where each key first appears
        tables: dict[str | None, ExpressionTable | None] = {}
        for name, column_texts in zip(indices, texts, strict=True):
            values = _finite_non_negative(column_texts)
            if values is None or np.any(values != values[first_rows][codes]):  # a bad value, or a gene's two values
                tables[name] = None
                continue
            tables[name] = ExpressionTable(origin=self, column=name, keys=unique_keys,
                                           values=values[first_rows], rows=values,
                                           repeated=len(values) - len(first_rows))
        return tables

    def _read_by_lines(self, chosen: str | None) -> ExpressionTable:
        """The column read a line at a time, raising at the first line that is wrong."""
        lines = _content_lines(self._lines)
        first_number, first = next(lines)
        if chosen is None:
            n_fields, index, field_name = 2, 1, "expression"
            width_problem = "expected 2 columns (gene id, expression), found {}"
            lines = itertools.chain([(first_number, first)], lines)
        else:
            columns = first[1:]
            n_fields, index, field_name = len(columns) + 1, columns.index(chosen) + 1, chosen
            width_problem = f"expected {n_fields} columns as in the header, found {{}}"

        path = self.path
        table = ValuesByGene(path, "expression")
        header_possible = chosen is None
        for number, fields in lines:
            if len(fields) != n_fields:
                raise InputError(path, width_problem.format(len(fields)), line=number)
            gene, value_text = fields[0], fields[index]
            try:
                value = _expression_value(value_text)
            except ValueError as exc:
                if header_possible and _is_two_column_header(fields):
                    header_possible = False
                    continue  # the header line of a two-column table
                raise InputError(path, str(exc), line=number, field=field_name) from None
            header_possible = False
            if not gene:
                raise InputError(path, "empty gene id", line=number, field="gene_id")
            table.add(gene_key(gene), gene, value, value_text, number, field_name)
        if not table.keys:
            raise InputError(path, "no data lines, expected gene ids with expression values")
        return ExpressionTable(
            origin=self,
            column=chosen,
            keys=pd.Index(table.keys),
            values=np.asarray(table.values, dtype=np.float64),
            rows=np.asarray(table.rows, dtype=np.float64),
            repeated=table.repeated,
        )


def _finite_non_negative(texts: Sequence[str]) -> np.ndarray | None:
    """The texts as float64 when every one is a number :func:`_expression_value` takes, else None."""
    joined = "".join(texts)
    if not joined.isascii() or "_" in joined:  # what parse_number refuses and float() takes
        return None
    try:
        values = np.fromiter(map(float, texts), dtype=np.float64, count=len(texts))
    except ValueError:
        return None
    if not np.isfinite(values).all() or (values < 0).any():
        return None
    return values


def read_expression(path: Path, *, column: str | None = None, cell: str | None = None) -> ExpressionTable:
    """Read one cell's expression from a two-column table or a matrix column (see the module doc and
    :meth:`ExpressionFile.table`); prepare keeps one ExpressionFile for all its cells instead."""
    return ExpressionFile(path).table(column=column, cell=cell)


@dataclass
class ExpressionMatch:
    """Expression for a cell's genes: ``keep`` marks the genes that have a value (all, unless
    genes were dropped); ``values`` and ``labels`` are those of the kept genes."""

    keep: np.ndarray
    values: np.ndarray
    labels: np.ndarray
    attrs: dict


def _cell_keys(table: ExpressionTable, gene_ids: np.ndarray, notes: list[str]) -> tuple[np.ndarray, pd.Index]:
    """Keys to match the cell's genes and the table's genes by."""
    names = [str(name) for name in gene_ids]
    if names and all(name.isascii() and name.isdigit() for name in names):
        table_keys = table.origin.keys_by_number(table.keys)
        if table_keys is not None:
            notes.append(f"{shown_name(table.path)}: the cell's gene ids are bare numbers (as in the DeepChrome CSVs); "
                         "matched them to Ensembl ids by number (000003 = ENSG00000000003)")
            return np.asarray([str(int(name)) for name in names], dtype=object), table_keys
    return np.asarray([gene_key(name) for name in names], dtype=object), table.keys


def match_expression(
    table: ExpressionTable,
    gene_ids: np.ndarray,
    *,
    genes_source: str,
    drop_missing: bool,
    notes: list[str],
    labels: np.ndarray | None = None,
    listed_ids: np.ndarray | None = None,
) -> ExpressionMatch:
    """Expression values and median-rule labels for ``gene_ids`` (named ``genes_source`` in messages).

    Genes without a value are an InputError unless ``drop_missing`` (then noted
    and left out). With ``labels`` (the cell's own), every label must follow the
    median rule, or the InputError says how many do not. ``listed_ids``: every
    gene of a gene annotation the cell was cut from; table genes absent from it
    are noted (not done for layouts whose files hold a sample of the genes).
    """
    if table.repeated:
        notes.append(f"{shown_name(table.path)}: {table.repeated} rows repeat a gene with the same expression value; "
                     "each gene is used once")
    gene_ids = np.asarray(gene_ids, dtype=object)
    cell_keys, table_keys = _cell_keys(table, gene_ids, notes)
    _, threshold = labels_from_expression(table.rows)
    position = table_keys.get_indexer(cell_keys)
    keep = position >= 0
    if not keep.any():
        raise InputError(table.path, f"none of the {len(gene_ids)} genes of {genes_source} has an expression value "
                                     f"here (for example {gene_ids[0]})")
    if not keep.all():
        summary = (f"no expression value for {int((~keep).sum())} of {len(gene_ids)} genes of {genes_source} "
                   f"(for example {gene_ids[np.argmax(~keep)]})")
        if not drop_missing:
            raise MissingGenesError(table.path, summary, missing=int((~keep).sum()), total=len(gene_ids),
                                    example=str(gene_ids[np.argmax(~keep)]))
        notes.append(f"{shown_name(table.path)}: {summary}; left out")
    if listed_ids is not None:
        extra = int((~table_keys.isin(_cell_keys(table, listed_ids, [])[0])).sum())
        if extra:
            notes.append(f"{shown_name(table.path)}: {extra} of {len(table_keys)} genes are not in {genes_source}")

    values = table.values[position[keep]]
    derived = (values > threshold).astype(np.int8)
    median_rule = f"expression is above {threshold:g}, the median over all {len(table.rows)} rows of {table.source}"
    attrs = {"expression_file": recorded_path(table.path), "label_threshold": threshold}
    if table.column is not None:
        attrs["expression_column"] = table.column
    if labels is None:
        attrs["label_rule"] = f"label 1 where {median_rule}"
        return ExpressionMatch(keep, values, derived, attrs)
    given = np.asarray(labels)[keep]
    disagree = given != derived
    if disagree.any():
        first = int(np.argmax(disagree))
        raise InputError(
            table.path,
            f"the labels of {int(disagree.sum())} of {len(given)} genes of {genes_source} disagree with label 1 where "
            f"{median_rule} (for example {gene_ids[keep][first]}: label {int(given[first])}, expression "
            f"{values[first]:g}); labels and expression must come from the same cell",
        )
    attrs["label_rule"] = f"labels as given in {genes_source}; they agree with label 1 where {median_rule}"
    return ExpressionMatch(keep, values, given.astype(np.int8), attrs)


def attach_expression(cell: CellData, table: ExpressionTable, *, genes_source: str, drop_missing: bool,
                      notes: list[str]) -> CellData:
    """The cell with expression from ``table`` (replacing any it had), its labels checked or
    derived, and genes without a value left out when ``drop_missing`` allows."""
    match = match_expression(table, cell.gene_ids, genes_source=genes_source, drop_missing=drop_missing,
                             notes=notes, labels=cell.labels)
    if not match.keep.all():
        cell = cell.select(match.keep)
    return replace(
        cell,
        expression=match.values,
        labels=match.labels,
        sources=[*cell.sources, table.origin.source],
        attrs={**cell.attrs, **match.attrs},
    )
