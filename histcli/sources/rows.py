"""Row-per-bin CSV layouts (DeepChrome, DeepDiff): parse in chunks, check, and group into genes.

Both layouts hold one row per (gene, bin). Rows are read with pandas' C
parser in chunks, so memory stays near the size of the final counts, and are
grouped into genes x bins x marks blocks with vectorised checks. When a check
fails, the offending line is read again as text to say exactly what is wrong.
"""

from __future__ import annotations

import csv
import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from histcli import interrupt
from histcli.errors import InputError, printable
from histcli.sources.common import (
    COUNT_OVERFLOW,
    CountBlocks,
    control_character,
    file_line_break,
    is_gzip,
    is_number,
    not_utf8,
    parse_number,
    too_large,
)

CHUNK_ROWS = 200_000


@dataclass(frozen=True)
class Field:
    name: str
    kind: str  # "id", "bin", "count", "label", "id_bin" (ENSG_SYMBOL_bin)


# Not stripped: "000003 " would be another gene than the 000003 of every other file.
_SPACED_ID = "gene id has leading or trailing spaces"


def _id_problem(gene: str) -> str | None:
    # A carriage return or other control character is damage (a stray "\r" of a line break, say), and would
    # break the lines of every table the id is written to; named as such even at the id's ends.
    if control_character(gene) is not None:
        return f"gene id {gene!r} holds a control character"
    if '"' in gene:
        return f"gene id {gene} holds a double quote; fields are read as written, without CSV quoting " \
               "(in R: write.table(..., quote = FALSE))"
    return _SPACED_ID if gene != gene.strip() else None


def _problem(text: str, field: Field) -> str | None:
    """What is wrong with one field's text, or None."""
    if field.kind == "id":
        return "empty gene id" if not text.strip() else _id_problem(text)
    if field.kind == "id_bin":
        gene, sep, bin_text = text.rpartition("_")
        if not sep or not gene.strip():
            return f"{text!r} is not <gene>_<bin>"
        problem = _id_problem(gene) or _problem(bin_text, Field(field.name, "bin"))
        if problem is None and not (bin_text.isascii() and bin_text.isdigit()):
            # parse_number takes "1e2" and " 3"; the bin of a gene_bin field is plain digits.
            problem = f"bin {bin_text!r} is not a positive whole number"
        return problem
    try:
        value = parse_number(text)
    except ValueError:
        return f"{text!r} is not a number"
    if value != value:
        return "NaN is not allowed; expected a count"
    if value in (float("inf"), float("-inf")):
        return f"{text!r} is not a finite number"
    if field.kind == "bin":
        if value != int(value) or value < 1:
            return f"bin {text!r} is not a positive whole number"
    elif field.kind == "label":
        if value not in (0.0, 1.0):
            return f"label {text!r} is not 0 or 1"
    elif value < 0:
        return f"negative value {text}; expected a non-negative count"
    elif value >= COUNT_OVERFLOW:
        return too_large(text)
    return None


def diagnose_line(path: Path, text: str, line: int, schema: list[Field], sep: str = ",") -> InputError | None:
    """An exact error for one raw line (read with errors="surrogateescape"), or None if the line is valid."""
    undecodable = not_utf8(path, text, line)
    if undecodable is not None:
        return undecodable
    fields = text.rstrip("\r\n").split(sep)
    if len(fields) != len(schema):
        names = ", ".join(printable(f.name) for f in schema)
        if len(names) > 80:
            names = names[:77] + "..."
        kind = "comma" if sep == "," else "tab"
        found = "a blank line" if not text.strip() else len(fields)
        return InputError(path, f"expected {len(schema)} {kind}-separated fields ({names}), found {found}", line=line)
    for value, field in zip(fields, schema, strict=True):
        problem = _problem(value, field)
        if problem is not None:
            return InputError(path, problem, line=line, field=field.name)
    return None


def _pointing_out_a_header(error: InputError, text: str, schema: list[Field], sep: str) -> InputError:
    """``error`` about the first line of a layout without a header, saying so when the line is a header: none of
    its number fields (bin, counts, label) holds a number."""
    # Fields as far as both go: a header may also have another number of fields.
    numbers = [value for value, field in zip(text.rstrip("\r\n").split(sep), schema, strict=False)
               if field.kind in ("bin", "count", "label")]
    if not numbers or any(is_number(value) for value in numbers):
        return error
    return InputError(error.path, f"{error.problem}; line 1 looks like a header, which this layout does not have: "
                                  "remove it", line=error.line, field=error.field)


def open_lines(path: Path, line_break: str | None = None, shown=None):
    """The file as text, its lines ending at ``line_break`` (default: ``file_line_break``'s), with their ends
    kept, so that lines are numbered as pandas reads them with that ``lineterminator``. ``shown``: the name
    errors give the file (default: the path)."""
    # Bytes that are not UTF-8 come through escaped, for diagnose_line to name (see common.not_utf8); a
    # byte-order mark is dropped, as pandas drops it.
    opener = gzip.open if is_gzip(path, shown) else open
    return opener(path, "rt", encoding="utf-8-sig", errors="surrogateescape",
                  newline=line_break or file_line_break(path))


def first_bad_line(path: Path, schema: list[Field], start: int = 1, sep: str = ",") -> InputError | None:
    """Scan the file for the first invalid line at or after ``start`` (error path only)."""
    with open_lines(path) as handle:
        for number, text in enumerate(handle, start=1):
            if number < start:
                continue
            error = diagnose_line(path, text, number, schema, sep)
            if error is not None:
                return error
    return None


def read_chunks(path: Path, schema: list[Field], *, sep: str = ",", skip_lines: int = 0,
                chunk_rows: int = CHUNK_ROWS):
    """Yield (first_line, DataFrame) chunks; any parse failure becomes an exact InputError.

    ``skip_lines`` header lines are skipped; line numbers count them.
    """
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file")
    if path.is_dir():
        raise InputError(path, "is a folder, expected a file")
    if path.stat().st_size == 0:
        raise InputError(path, "empty file, expected gzip data" if path.suffix == ".gz" else "empty file")
    gzipped = is_gzip(path)  # and refuses bzip2, xz, zip and zstd
    # Ids as plain Python strings: building pandas' own string type (pyarrow-backed in
    # pandas 3) took nearly half as long again as parsing, only to be turned back.
    dtypes = {f.name: (object if f.kind in ("id", "id_bin") else np.float64) for f in schema}
    first_line = skip_lines + 1
    reader = None
    try:
        # Lines end where `sed` and `wc -l` see them end: pandas' default would also end one at a stray "\r".
        line_break = file_line_break(path)
        # pandas would take surplus leading fields of the first rows as an index
        # and shift every column silently; the first row is checked exactly instead.
        with open_lines(path, line_break) as handle:
            for number, text in enumerate(handle, start=1):
                if number == first_line:
                    error = diagnose_line(path, text, number, schema, sep)
                    if error is not None:
                        raise _pointing_out_a_header(error, text, schema, sep) if not skip_lines else error
                    break
        reader = pd.read_csv(
            path,
            sep=sep,
            header=None,
            index_col=False,
            skiprows=skip_lines,
            names=[f.name for f in schema],
            dtype=dtypes,
            na_filter=False,
            skip_blank_lines=False,
            chunksize=chunk_rows,
            compression="gzip" if gzipped else None,
            engine="c",
            lineterminator=line_break,
            # Fields are split at every separator, as diagnose_line and `cut` split them: a quote is part of a
            # value, never CSV quoting (which took '"G1"' for G1 past the first line, a quoted tab for part of an
            # id, and a quote left open for the start of a field lines long).
            quoting=csv.QUOTE_NONE,
        )
        for chunk in reader:
            interrupt.check()
            if chunk.empty:  # pandas yields one empty chunk for a file of header lines only
                continue
            yield first_line, chunk
            first_line += len(chunk)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(path, f"truncated or corrupt gzip data ({exc})") from None
    except (ValueError, pd.errors.ParserError) as exc:
        error = first_bad_line(path, schema, start=first_line, sep=sep)
        raise error or InputError(path, f"cannot be parsed ({exc})") from None
    finally:
        if reader is not None:
            reader.close()
    if first_line == skip_lines + 1:
        raise InputError(path, "no data lines")


def _bins_problem(bins: np.ndarray, n_bins: int) -> tuple[str, int]:
    """What is wrong with a gene's ``bins`` (in file order), and the index of the row that shows it: the bin
    out of range or given again, or the gene's first row for a missing bin."""
    expected = set(range(1, n_bins + 1))
    values = [int(value) for value in bins.tolist()]  # whole numbers (checked), possibly beyond int64
    seen = set()
    for index, value in enumerate(values):
        if value not in expected:
            return f"bin {value} is outside 1..{n_bins}", index
        if value in seen:
            return f"bin {value} appears twice", index
        seen.add(value)
    missing = sorted(expected - seen)
    return f"bin {missing[0]} is missing" + (f" ({len(missing)} bins missing)" if len(missing) > 1 else ""), 0


class GeneBlocks:
    """Group consecutive rows of one gene into a bins x marks matrix, chunk by chunk.

    Every gene must have the same bins 1..N (N is taken from the first chunk,
    or given); rows of a gene may come in any bin order and are placed by bin
    number. A gene's rows must be consecutive: a gene seen again later is a
    duplicate (found by the caller across files).
    """

    def __init__(self, path: Path, schema: list[Field], n_bins: int | None = None,
                 counts: CountBlocks | None = None, *, sep: str = ",", sink=None):
        self.path = Path(path)
        self.schema = schema
        self.n_bins = n_bins
        self.sep = sep
        # Shared across a cell's files so that all of them get one storage type.
        self.counts = counts if counts is not None else CountBlocks()
        # With a sink, finished genes are handed on, (gene ids, float64 counts,
        # first lines), instead of being collected: for streaming predictions.
        self.sink = sink
        self.gene_ids: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.gene_lines: list[np.ndarray] = []
        self._carry: tuple | None = None

    def add(self, genes: np.ndarray, bins: np.ndarray, values: np.ndarray, labels, first_line: int) -> None:
        lines = first_line + np.arange(len(genes))
        self._check_values(bins, values, labels, lines)
        if self._carry is not None:
            c_genes, c_bins, c_values, c_labels, c_lines = self._carry
            genes = np.concatenate([c_genes, genes])
            bins = np.concatenate([c_bins, bins])
            values = np.concatenate([c_values, values])
            labels = None if labels is None else np.concatenate([c_labels, labels])
            lines = np.concatenate([c_lines, lines])
        starts = np.concatenate(([0], np.flatnonzero(genes[1:] != genes[:-1]) + 1))
        if self.n_bins is None:
            # The most common gene length (the larger on a tie), so that one
            # damaged gene is reported as damaged rather than setting N.
            lengths = np.bincount(np.diff(np.append(starts, len(genes))))
            self.n_bins = int(np.flatnonzero(lengths == lengths.max())[-1])
        # The last gene may go on in the next chunk.
        cut = starts[-1]
        self._carry = (genes[cut:], bins[cut:], values[cut:], None if labels is None else labels[cut:], lines[cut:])
        if cut:
            self._group(genes[:cut], bins[:cut], values[:cut], None if labels is None else labels[:cut], lines[:cut], starts[:-1])

    def finish(self) -> None:
        if self._carry is not None and len(self._carry[0]):
            genes, bins, values, labels, lines = self._carry
            self._group(genes, bins, values, labels, lines, np.array([0]))
        self._carry = None

    def _check_values(self, bins, values, labels, lines) -> None:
        bad = ~np.isfinite(bins) | (bins < 1) | (bins != np.floor(bins))
        bad |= ~np.isfinite(values).all(axis=1) | (values < 0).any(axis=1)
        bad |= (values >= COUNT_OVERFLOW).any(axis=1)
        if labels is not None:
            bad |= (labels != 0) & (labels != 1)
        if bad.any():
            self.fail_at(int(lines[np.argmax(bad)]))

    def fail_at(self, line: int):
        error = first_bad_line(self.path, self.schema, start=line, sep=self.sep)
        raise error or InputError(self.path, "invalid values", line=line)

    def _group(self, genes, bins, values, labels, lines, starts) -> None:
        # A row with a bad gene id starts a run of its own: its first row is enough to look at.
        bad = bad_ids(genes[starts])
        if bad.any():
            self.fail_at(int(lines[starts[np.argmax(bad)]]))
        lengths = np.diff(np.append(starts, len(genes)))
        n = self.n_bins
        wrong = np.flatnonzero(lengths != n)
        if len(wrong):
            start = starts[wrong[0]]
            stop = start + lengths[wrong[0]]
            self._check_consecutive(genes, lines, starts)
            problem, row = _bins_problem(bins[start:stop], n)
            raise InputError(self.path, f"gene {genes[start]}: expected bins 1..{n}, {problem}",
                             line=int(lines[start + row]))
        n_genes = len(starts)
        bin_matrix = bins.reshape(n_genes, n)
        values = values.reshape(n_genes, n, -1)
        expected = np.arange(1, n + 1)
        unordered = np.flatnonzero((bin_matrix != expected).any(axis=1))
        if len(unordered):
            order = np.argsort(bin_matrix[unordered], axis=1, kind="stable")
            placed = np.take_along_axis(bin_matrix[unordered], order, axis=1)
            broken = np.flatnonzero((placed != expected).any(axis=1))
            if len(broken):
                self._check_consecutive(genes, lines, starts)
                gene_index = unordered[broken[0]]
                start = gene_index * n
                problem, row = _bins_problem(bin_matrix[gene_index], n)
                raise InputError(self.path, f"gene {genes[start]}: expected bins 1..{n}, {problem}",
                                 line=int(lines[start + row]))
            values[unordered] = np.take_along_axis(values[unordered], order[:, :, None], axis=1)
        if labels is not None:
            label_matrix = labels.reshape(n_genes, n)
            changing = np.flatnonzero(label_matrix.min(axis=1) != label_matrix.max(axis=1))
            if len(changing):
                gene_index = changing[0]
                row = gene_index * n + int(np.argmax(label_matrix[gene_index] != label_matrix[gene_index, 0]))
                raise InputError(
                    self.path,
                    f"gene {genes[gene_index * n]}: label changes within the gene "
                    f"(from {int(label_matrix[gene_index, 0])} to {int(labels[row])})",
                    line=int(lines[row]),
                    field="label",
                )
            self.labels.append(label_matrix[:, 0].astype(np.int8))
        if self.sink is not None:
            self.sink(genes[starts], values, lines[starts])
            return
        self.counts.add(values)
        self.gene_ids.append(genes[starts])
        self.gene_lines.append(lines[starts])

    def _check_consecutive(self, genes, lines, starts) -> None:
        """On the way to a bins error: the first gene whose rows resume after another gene's, as an
        InputError (a file sorted by bin, say), since its bins are then not what is wrong."""
        runs = genes[starts]
        _, first = np.unique(runs, return_index=True)
        again = np.setdiff1d(np.arange(len(runs)), first)
        if len(again):
            gene = runs[again[0]]
            earlier = starts[np.flatnonzero(runs == gene)[0]]
            raise InputError(self.path, f"gene {gene} appears again (first at line {int(lines[earlier])}); "
                                        "the rows of a gene must be consecutive", line=int(lines[starts[again[0]]]))

    def result(self):
        """(gene_ids, labels or None, first line of each gene); the counts are in ``self.counts``."""
        genes = np.concatenate(self.gene_ids) if self.gene_ids else np.array([], dtype=object)
        labels = np.concatenate(self.labels) if self.labels else None
        lines = np.concatenate(self.gene_lines) if self.gene_lines else np.array([], dtype=np.int64)
        return genes.astype(object), labels, lines


def bad_ids(gene_ids: np.ndarray) -> np.ndarray:
    """Where a gene id is empty, has blanks around it, or holds a control character (a stray "\r") or a double
    quote (a CSV-quoted id); :func:`diagnose_line` says which."""
    return np.fromiter((not gene or gene.strip() != gene or '"' in gene or control_character(gene) is not None
                        for gene in gene_ids), dtype=bool, count=len(gene_ids))


def check_unique_genes(parts: list[tuple[Path, np.ndarray, np.ndarray]]) -> None:
    """Genes must not repeat within or across files; parts are (path, gene ids, first lines)."""
    all_ids = np.concatenate([ids for _, ids, _ in parts])
    unique, first_index, counts = np.unique(all_ids, return_index=True, return_counts=True)
    if (counts == 1).all():
        return
    duplicate = unique[np.argmax(counts > 1)]
    where = []
    for path, ids, lines in parts:
        for position in np.flatnonzero(ids == duplicate):
            where.append((path, int(lines[position])))
    (first_path, first_line), (second_path, second_line) = where[:2]
    also = f"line {first_line}" if first_path == second_path else f"{first_path.name} line {first_line}"
    raise InputError(second_path, f"gene {duplicate} appears again (first at {also})", line=second_line)
