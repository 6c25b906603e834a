"""Predictions for new data: TSV tables (streamed), genome-wide tracks, or stored cells.

TSV layouts, told apart by the header:

* long: ``gene_id  bin  <mark>  <mark> ...``, one row per gene and bin (bins 1..N);
* wide: ``gene_id  <mark>_<bin> ...``, one row per gene.

Mark columns are matched to the model's marks by name in any order; extra
marks are ignored (with a note). Rows are read in chunks and predicted as
soon as a chunk's genes are complete, so memory does not grow with the input,
and output lines come in input order. The model scores one chunk in a
background thread while the next is parsed (torch and pandas' parser both
release the GIL); it is built there too, while the first chunks are read.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TextIO

import numpy as np

from histcli import interrupt
from histcli.errors import InputError, StdoutClosed
from histcli.fsutil import readable_inputs
from histcli.marks import canonical_mark
from histcli.metrics import DEFAULT_THRESHOLD
from histcli.registry import Entry
from histcli.sources.common import COUNT_OVERFLOW, is_gzip, not_utf8
from histcli.sources.rows import Field, GeneBlocks, bad_ids, first_bad_line, open_lines, read_chunks
from histcli.transforms import apply_transform

log = logging.getLogger("histcli")

GENES_PER_CHUNK = 2_000


class PredictionWriter:
    """Writes ``gene_id`` and the task's prediction columns (``probability  prediction``, or
    ``log_expression  expression``) as TSV rows or a JSON array, as they come."""

    def __init__(self, stream: TextIO, fmt: str = "tsv", threshold: float = DEFAULT_THRESHOLD, on_written=None, task=None):
        from histcli.tasks import Classification

        self.stream = stream
        self.fmt = fmt
        self.threshold = threshold
        self.task = task or Classification()
        self.columns = self.task.prediction_columns
        self.count = 0
        self.started = False
        self.on_written = on_written  # called with the number of genes written so far

    def _start(self) -> None:
        # The header waits for the first predictions: bad input leaves stdout empty.
        if not self.started:
            self.started = True
            self._write("\t".join(("gene_id", *self.columns)) + "\n" if self.fmt == "tsv" else "[")

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
        except BrokenPipeError:
            raise StdoutClosed() from None

    def add(self, gene_ids, scores: np.ndarray) -> None:
        """``scores``: the model's predictions as its task gives them (histcli.evaluation.predict_scores)."""
        interrupt.check()
        self._start()
        values = self.task.prediction_values(scores, self.threshold)
        columns = [values[name] for name in self.columns]
        if self.fmt == "tsv":
            # Formatted a column at a time (one type check per column, not per value);
            # 9 significant digits read back as the same float32.
            texts = [[f"{v:.9g}" for v in column] if column and isinstance(column[0], float) else list(map(str, column))
                     for column in columns]
            self._write("".join(f"{line}\n" for line in map("\t".join, zip(map(str, gene_ids), *texts, strict=True))))
        else:
            items = [json.dumps({"gene_id": str(gene), **dict(zip(self.columns, row, strict=True))})
                     for gene, *row in zip(gene_ids, *columns, strict=True)]
            if items:
                self._write(("," if self.count else "") + "\n  " + ",\n  ".join(items))
        self.count += len(scores)
        if self.on_written is not None:
            self.on_written(self.count)

    def close(self) -> None:
        self._start()
        if self.fmt == "json":
            self._write("\n]\n" if self.count else "]\n")
        try:
            self.stream.flush()
        except BrokenPipeError:
            raise StdoutClosed() from None


class Predictor:
    """A registry model ready to score count arrays in its own mark order.

    The module is built on first use, so that reading a table's first rows
    can go on meanwhile.
    """

    def __init__(self, entry: Entry, device: str = "cpu"):
        self.entry = entry
        self.device = device
        self.module = None
        self.marks = list(entry.input.marks)
        self.n_bins = entry.input.n_bins

    def load(self):
        if self.module is None:
            self.module = self.entry.build_module(self.device)
        return self.module

    def scores(self, counts: np.ndarray) -> np.ndarray:
        """Predictions (probabilities, or levels) for ``counts``: genes x bins x model marks, untransformed."""
        from histcli.evaluation import predict_scores

        inputs = apply_transform(self.entry.input.transform, counts)
        return predict_scores(self.entry, inputs, self.device, self.load())

    def cell_scores(self, cell, *, described: str | None = None) -> np.ndarray:
        """Predictions for every gene of a cell (from the store or tracks), marks matched by name;
        ``described`` names the cell in errors (see ``histcli.evaluation.match_inputs``)."""
        from histcli.evaluation import match_inputs, predict_scores

        inputs = match_inputs(self.entry, cell, described=described)
        return predict_scores(self.entry, inputs, self.device, self.load())


class ScoringPipeline:
    """Scores chunks of genes in one background thread, in order, while the caller parses the next.

    At most ``depth`` chunks wait, so memory stays bounded; an error in the
    thread is raised in the caller at its next :meth:`submit` or at :meth:`finish`.
    """

    def __init__(self, predictor: Predictor, writer: PredictionWriter, depth: int = 2):
        self.predictor = predictor
        self.writer = writer
        self.depth = depth
        self.failed = False
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="histcli-predict")
        self.waiting: deque = deque([self.executor.submit(self._run, predictor.load)])

    def submit(self, gene_ids, counts: np.ndarray) -> None:
        while len(self.waiting) >= self.depth:
            self.waiting.popleft().result()
        self.waiting.append(self.executor.submit(self._run, self._score, gene_ids, counts))

    def _score(self, gene_ids, counts: np.ndarray) -> None:
        self.writer.add(gene_ids, self.predictor.scores(counts))

    def _run(self, job, *args) -> None:
        # After a failure the chunks already queued are skipped: the output stays a prefix of the input.
        if self.failed:
            return
        try:
            job(*args)
        except BaseException:
            self.failed = True
            raise

    def finish(self) -> None:
        while self.waiting:
            self.waiting.popleft().result()

    def __enter__(self) -> ScoringPipeline:
        return self

    def __exit__(self, *exc_info) -> None:
        # On an error, chunks not yet started are dropped; the one running ends first.
        self.executor.shutdown(wait=True, cancel_futures=True)


def _header(path: Path, shown: str) -> list[str]:
    import gzip
    import zlib

    if path.stat().st_size == 0:
        raise InputError(shown, "empty file, expected a header line")
    try:
        with open_lines(path, shown=shown) as handle:
            line = handle.readline()
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(shown, f"truncated or corrupt gzip data ({exc})") from None
    if not line:  # an empty plain file is caught above: gzip framing around nothing, or a byte-order mark alone
        raise InputError(shown, f"{'gzip data' if is_gzip(path) else 'a byte-order mark'} with no content, "
                                "expected a header line")
    undecodable = not_utf8(shown, line, 1)
    if undecodable is not None:
        raise undecodable
    fields = line.rstrip("\r\n").split("\t")
    if len(fields) < 2:
        raise InputError(shown, "expected a tab-separated header: gene_id, bin, <marks>... "
                                "or gene_id, <mark>_<bin>...", line=1)
    return fields


def _mark_of(name: str, shown: str, column: str) -> str:
    mark = canonical_mark(name)
    if mark is None:
        raise InputError(shown, f"unknown mark name {name!r} in the header", line=1, field=column)
    return mark


def _check_marks(found: list[str], predictor: Predictor, shown: str) -> None:
    missing = [mark for mark in predictor.marks if mark not in found]
    if missing:
        raise InputError(shown, f"mark(s) {', '.join(missing)} needed by the model are missing from the header "
                                f"(found {', '.join(dict.fromkeys(found)) or 'none'})", line=1)
    extra = sorted(set(found) - set(predictor.marks))
    if extra:
        log.info("%s: ignoring mark(s) %s, which the model does not use", shown, ", ".join(extra))


class _DuplicateCheck:
    """Finds a gene id given twice, in memory that stays small for millions of genes.

    Only 64-bit hashes and line numbers are kept; a repeated hash is confirmed
    by reading both lines again, so a hash collision never reports a false duplicate.
    """

    def __init__(self, path: Path, shown: str):
        self.path = path
        self.shown = shown
        # Sorted runs of (hashes, lines), each at most half the size of the one
        # before: a new chunk costs a search in log(N) runs, and merging keeps
        # the total work at N log N however small the chunks are.
        self.runs: list[tuple[np.ndarray, np.ndarray]] = []
        self.count = 0

    def add(self, gene_ids, lines) -> None:
        hashes = np.fromiter((hash(gene) for gene in gene_ids), dtype=np.int64, count=len(gene_ids))
        lines = np.asarray(lines, dtype=np.int64)
        order = np.argsort(hashes, kind="stable")
        hashes, lines = hashes[order], lines[order]
        repeated_within = np.flatnonzero(hashes[1:] == hashes[:-1])
        for index in repeated_within:
            self._confirm(int(lines[index]), int(lines[index + 1]))
        for run_hashes, run_lines in self.runs:
            positions = np.searchsorted(run_hashes, hashes)
            found = positions < len(run_hashes)
            found[found] = run_hashes[positions[found]] == hashes[found]
            for index in np.flatnonzero(found):
                self._confirm(int(run_lines[positions[index]]), int(lines[index]))
        self.runs.append((hashes, lines))
        while len(self.runs) > 1 and 2 * len(self.runs[-1][0]) > len(self.runs[-2][0]):
            (newer_hashes, newer_lines), (older_hashes, older_lines) = self.runs.pop(), self.runs.pop()
            merged_hashes = np.concatenate([older_hashes, newer_hashes])
            order = np.argsort(merged_hashes, kind="stable")
            self.runs.append((merged_hashes[order], np.concatenate([older_lines, newer_lines])[order]))
        self.count += len(gene_ids)

    def _confirm(self, first: int, second: int) -> None:
        first, second = sorted((first, second))
        wanted = {first, second}
        texts = {}
        with open_lines(self.path) as handle:
            for number, text in enumerate(handle, start=1):
                if number in wanted:
                    texts[number] = text.split("\t", 1)[0]
                    if number == second:
                        break
        if texts.get(first) == texts.get(second):
            raise InputError(self.shown, f"gene {texts[second]} appears again (first at line {first})", line=second)


def predict_table(predictor: Predictor, source: str, writer: PredictionWriter,
                  genes_per_chunk: int = GENES_PER_CHUNK) -> int:
    """Stream a long or wide TSV through the model; returns the number of genes."""
    # An InputError naming the copy of stdin or a pipe leaves this block naming the input as given.
    with readable_inputs() as inputs:
        path = inputs(source, "a TSV file")
        shown = "<stdin>" if source == "-" else source
        header = _header(path, shown)
        if header[1].strip().lower() == "bin":
            return _predict_long(predictor, path, shown, header, writer, genes_per_chunk)
        return _predict_wide(predictor, path, shown, header, writer, genes_per_chunk)


def _predict_long(predictor, path, shown, header, writer, genes_per_chunk) -> int:
    marks = [_mark_of(name, shown, name) for name in header[2:]]
    for index, mark in enumerate(marks):
        if mark in marks[:index]:
            first, second = header[2 + marks.index(mark)], header[2 + index]
            raise InputError(shown, f"columns {first!r} and {second!r} are both mark {mark}", line=1, field=second)
    _check_marks(marks, predictor, shown)
    order = [marks.index(mark) for mark in predictor.marks]
    schema = [Field(header[0] or "gene_id", "id"), Field("bin", "bin")] + [Field(m, "count") for m in marks]
    duplicates = _DuplicateCheck(path, shown)
    columns = [field.name for field in schema]
    with ScoringPipeline(predictor, writer) as pipeline:

        def score(gene_ids, counts, lines):
            duplicates.add(gene_ids, lines)
            pipeline.submit(gene_ids, counts[:, :, order])

        blocks = GeneBlocks(path, schema, predictor.n_bins, sep="\t", sink=score)
        for first_line, chunk in read_chunks(path, schema, sep="\t", skip_lines=1,
                                             chunk_rows=genes_per_chunk * predictor.n_bins):
            blocks.add(chunk[columns[0]].to_numpy(dtype=object), chunk["bin"].to_numpy(),
                       chunk[columns[2:]].to_numpy(), None, first_line)
        blocks.finish()
        pipeline.finish()
    return duplicates.count


def _bin_list(mark: str, bins: list[int]) -> str:
    """Column names of a mark's bins, the first three and how many more: H3K9me3_4, H3K9me3_7 (and 5 more)."""
    shown = ", ".join(f"{mark}_{b}" for b in bins[:3])
    return shown + (f" (and {len(bins) - 3} more)" if len(bins) > 3 else "")


def _predict_wide(predictor, path, shown, header, writer, genes_per_chunk) -> int:
    positions: dict[tuple[str, int], int] = {}
    found = []
    for index, column in enumerate(header[1:], start=1):
        name, sep, bin_text = column.rpartition("_")
        if not sep or not (bin_text.isascii() and bin_text.isdigit()):
            raise InputError(shown, f"column {column!r} is neither 'bin' (long layout) nor <mark>_<bin> "
                                    "(wide layout)", line=1, field=column)
        mark = _mark_of(name, shown, column)
        if (mark, int(bin_text)) in positions:
            raise InputError(shown, f"column {column!r} appears twice", line=1, field=column)
        positions[(mark, int(bin_text))] = index
        found.append(mark)
    _check_marks(found, predictor, shown)
    for mark in predictor.marks:
        bins = sorted(b for (m, b) in positions if m == mark)
        if bins != list(range(1, predictor.n_bins + 1)):
            missing = [b for b in range(1, predictor.n_bins + 1) if b not in bins]
            extra = [b for b in bins if not 1 <= b <= predictor.n_bins]
            problems = ([f"no column {_bin_list(mark, missing)}"] if missing else []) + \
                       ([f"columns outside the model's bins: {_bin_list(mark, extra)}"] if extra else [])
            raise InputError(shown, f"mark {mark} has {len(bins)} bin columns, {'; '.join(problems)}; the model "
                                    f"expects {mark}_1..{mark}_{predictor.n_bins}", line=1)
    # Value columns in the model's order: bin-major, then mark, matching (genes, bins, marks).
    take = np.array([[positions[(mark, b)] for mark in predictor.marks]
                     for b in range(1, predictor.n_bins + 1)]).ravel()
    schema = [Field(header[0] or "gene_id", "id")] + [Field(column, "count") for column in header[1:]]
    duplicates = _DuplicateCheck(path, shown)
    with ScoringPipeline(predictor, writer) as pipeline:
        for first_line, chunk in read_chunks(path, schema, sep="\t", skip_lines=1, chunk_rows=genes_per_chunk):
            values = chunk.iloc[:, 1:].to_numpy(np.float64)
            gene_ids = chunk.iloc[:, 0].to_numpy(dtype=object)
            bad = ~np.isfinite(values).all(axis=1) | (values < 0).any(axis=1)
            bad |= (values >= COUNT_OVERFLOW).any(axis=1) | bad_ids(gene_ids)
            if bad.any():
                line = first_line + int(np.argmax(bad))
                raise (first_bad_line(path, schema, start=line, sep="\t")
                       or InputError(path, "invalid value", line=line))
            duplicates.add(gene_ids, first_line + np.arange(len(gene_ids)))
            pipeline.submit(gene_ids, values[:, take - 1].reshape(len(values), predictor.n_bins,
                                                                   len(predictor.marks)))
        pipeline.finish()
    return duplicates.count
