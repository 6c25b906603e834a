"""Valid input files, mutated at random, through every parser and a few times through the command line.

Every mutated file must give either the values a plain reading of that file
gives (a second, line-by-line reader written here) or one InputError on one
line naming the file; never another exception. Mutations known to break a
file (a bad value in a number field, a field dropped or added in a
fixed-column layout) must give the error; mutations that keep a file valid
(a byte-order mark, CRLF line ends) must give the original values.
"""

from __future__ import annotations

import io
import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from conftest import file_digest, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from histcli.errors import InputError
from histcli.store import SPLIT_CODES, Store

FLOAT32_MAX = float(np.finfo(np.float32).max)
# Text no number field takes (expression values are float64: huge ones are valid).
NOT_NUMBERS = ["x", "", "1,5", "1_5", "nan", "NaN", "inf", "-inf", "1e400", "0x10", "\u0663"]
# ... nor an expression value (such as RPKM: not negative).
NOT_EXPRESSION = NOT_NUMBERS + ["-3"]
# ... and what no count or coordinate field takes either (beyond float32, negative).
BAD_COUNTS = NOT_NUMBERS + ["-3", "1e40", "3.5e38"]
# Text that may land anywhere: the outcome depends on where.
ODD_TEXT = BAD_COUNTS + ["1e30", "99999999999999999999999", "007", " 5", "\x00", "\ufffd", "é"]

BENIGN = ("bom", "crlf")
LINE_MUTATIONS = ("drop_field", "add_field", "replace_field", "blank_line", "duplicate_line", "truncate",
                  "binary", "stray_cr")

# HISTCLI_FUZZ_SCALE=20 runs 20 times as many examples, for a deeper search than the suite's.
_SCALE = int(os.environ.get("HISTCLI_FUZZ_SCALE", "1"))
FUZZ = settings(max_examples=30 * _SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CLI = settings(max_examples=4 * _SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# file layouts: a valid example, a parser, and a second reader -----------------------------


@dataclass
class Layout:
    name: str
    file_name: str
    sep: str
    header: bool  # the first line is a header, left alone by value mutations
    number_fields: list[int]  # fields that must hold a number
    bad_values: list[str]  # text that makes those fields invalid
    fixed_columns: bool  # a field more or less is an error
    valid: Callable  # draw -> list of lines
    parse: Callable  # path -> result (raises InputError)
    check: Callable  # (result, lines) -> asserts the result is what a plain reading of the lines gives


def _counts(draw, n: int) -> list[str]:
    number = st.one_of(st.integers(0, 3000), st.floats(0, 1e6, allow_nan=False).map(lambda v: round(v, 3)),
                       st.sampled_from([FLOAT32_MAX, 1e19]))
    values = draw(st.lists(number, min_size=n, max_size=n))
    return [repr(v) if isinstance(v, float) else str(v) for v in values]


_NUMBER = re.compile(r"\s*[+-]?((\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|inf|infinity|nan)\s*", re.IGNORECASE)
_INTEGER = re.compile(r"\s*[+-]?\d+\s*")


def _number(text: str) -> float:
    """A number as the file formats define it: ASCII digits, no digit separators."""
    if not (text.isascii() and _NUMBER.fullmatch(text)):
        raise ValueError(text)
    return float(text)


def _integer(text: str) -> int:
    if not (text.isascii() and _INTEGER.fullmatch(text)):
        raise ValueError(text)
    return int(text)


def _read_lines(lines: list[str], skip=lambda line: False) -> list[str]:
    return [line for line in lines if line.strip() and not skip(line)]


# DeepChrome CSV: gene,bin,5 marks,label; the other split files stay valid.


def _deepchrome_valid(draw) -> list[str]:
    genes = draw(st.integers(1, 3))
    return [f"g{g},{b}," + ",".join(_counts(draw, 5)) + f",{g % 2}" for g in range(genes) for b in range(1, 5)]


def _other_splits(folder: Path) -> dict[str, Path]:
    """Valid valid.csv and test.csv beside a drawn train.csv."""
    for split in ("valid", "test"):
        (folder / f"{split}.csv").write_text("".join(f"{split}1,{b},1,2,3,4,5,1\n" for b in range(1, 5)))
    return {"train": folder / "train.csv", "valid": folder / "valid.csv", "test": folder / "test.csv"}


def _deepchrome_parse(path: Path):
    from histcli.sources.deepchrome import read_cell

    return _train_genes(read_cell("c", _other_splits(path.parent)))


def _train_genes(cell):
    """gene -> (counts as float64 lists, label, dtype kind) for the genes of the drawn train.csv."""
    counts = cell.counts_array()
    train = cell.split == SPLIT_CODES["train"]
    return {gene: (counts[i].astype(np.float64).tolist(), int(cell.labels[i]), counts.dtype.kind)
            for i, gene in enumerate(cell.gene_ids) if train[i]}


def _deepchrome_expected(lines: list[str]):
    genes: dict = {}
    for line in _read_lines(lines):
        fields = line.split(",")
        row = genes.setdefault(fields[0], ({}, int(_number(fields[7]))))[0]
        row[int(_number(fields[1]))] = [_number(v) for v in fields[2:7]]
    return {gene: ([rows[b] for b in sorted(rows)], label) for gene, (rows, label) in genes.items()}


def _same_counts(stored: list, written: list, kind: str) -> bool:
    """Stored counts equal the written ones, rounded to float32 when the cell is float32."""
    stored, written = np.asarray(stored), np.asarray(written, dtype=np.float64)
    return np.array_equal(stored, written.astype(np.float32) if kind == "f" else written)


def _deepchrome_check(result, lines):
    expected = _deepchrome_expected(lines)
    assert list(result) == list(expected)
    for gene, (counts, label, kind) in result.items():
        assert _same_counts(counts, expected[gene][0], kind), gene
        assert label == expected[gene][1]


# DeepDiff CSV: <ENSG>_<SYMBOL>_<bin>,5 marks; the other split files and the expression file stay valid.


def _deepdiff_valid(draw) -> list[str]:
    return [f"ENSG{g:011d}_G{g}_{b}," + ",".join(_counts(draw, 5)) for g in range(draw(st.integers(1, 3)))
            for b in range(1, 4)]


def _deepdiff_parse(path: Path):
    from histcli.sources.deepdiff import read_cell

    folder = path.parent
    for split, gene in (("valid", 7), ("test", 8)):
        (folder / f"X.{split}.csv").write_text("".join(f"ENSG{gene:011d}_V_{b},1,2,3,4,5\n" for b in range(1, 4)))
    (folder / "X.expr.csv").write_text("".join(f"ENSG{g:011d},{g}\n" for g in range(10)))
    splits = {"train": path, "valid": folder / "X.valid.csv", "test": folder / "X.test.csv"}
    cell = read_cell("X", splits, folder / "X.expr.csv", drop_missing=True)
    counts = cell.counts_array()
    train = cell.split == SPLIT_CODES["train"]
    return {gene: (counts[i].astype(np.float64).tolist(), counts.dtype.kind)
            for i, gene in enumerate(cell.gene_ids) if train[i]}


def _deepdiff_check(result, lines):
    genes: dict = {}
    for line in _read_lines(lines):
        fields = line.split(",")
        gene, _, bin_text = fields[0].rpartition("_")
        genes.setdefault(gene, {})[_integer(bin_text)] = [_number(v) for v in fields[1:]]
    # Genes without an expression value are left out (drop_missing).
    expected = {gene: [rows[b] for b in sorted(rows)] for gene, rows in genes.items()
                if gene[:15] in {f"ENSG{g:011d}" for g in range(10)}}
    assert list(result) == list(expected)
    for gene, (counts, kind) in result.items():
        assert _same_counts(counts, expected[gene], kind), gene


# bedGraph: chrom start end value, whitespace-separated, comments and track lines skipped.


def _bedgraph_valid(draw) -> list[str]:
    lines = ["track type=bedGraph"]
    for chrom in ("chr1", "chr2"):
        position = 0
        for value in _counts(draw, draw(st.integers(1, 4))):
            length = draw(st.integers(1, 50))
            lines.append(f"{chrom}\t{position}\t{position + length}\t{value}")
            position += length + draw(st.integers(0, 20))
    return lines


def _bedgraph_parse(path: Path):
    from histcli.sources.tracks import read_track

    return {chrom: list(zip(i.starts.tolist(), i.ends.tolist(), i.values.tolist(), strict=True))
            for chrom, i in read_track(path).chroms.items()}


def _bedgraph_expected(lines):
    chroms: dict = {}
    for line in _read_lines(lines, skip=lambda line: re.match(r"(track|browser)\b|#", line)):
        chrom, start, end, value = line.split("#")[0].split()
        chroms.setdefault(chrom, []).append((_integer(start), _integer(end), _number(value)))
    return {chrom: sorted(rows) for chrom, rows in chroms.items()}


def _bedgraph_check(result, lines):
    assert result == _bedgraph_expected(lines)


# BED genes: chrom start end name score strand (6 columns here; 4 or more are allowed).


def _bed_valid(draw) -> list[str]:
    lines = []
    for g in range(draw(st.integers(1, 4))):
        start = draw(st.integers(0, 10**6))
        width = draw(st.sampled_from([1, 2, 20001]))
        strand = draw(st.sampled_from("+-."))
        lines.append(f"chr{g % 2 + 1}\t{start}\t{start + width}\tENSG{g:011d}_G{g}\t0\t{strand}")
    return lines


def _bed_parse(path: Path):
    from histcli.sources.annotation import read_genes

    table = read_genes(path)
    return list(zip(table.name.tolist(), table.chrom.tolist(), table.tss.tolist(), table.strand.tolist(), strict=True))


def _bed_expected(lines):
    from histcli.sources.annotation import gene_key

    genes, seen = [], set()
    for line in _read_lines(lines, skip=lambda line: line.startswith(("track", "browser", "#"))):
        fields = line.split("\t") if "\t" in line else line.split()
        chrom, start, end, name = fields[0].strip(), _integer(fields[1]), _integer(fields[2]), fields[3].strip()
        strand = fields[5].strip() if len(fields) >= 6 else "."
        if gene_key(name) in seen:
            continue
        seen.add(gene_key(name))
        genes.append((name, chrom, start if end - start == 1 else start + (end - start) // 2,
                      "-" if strand == "-" else "+"))
    return genes


def _bed_check(result, lines):
    assert result == _bed_expected(lines)


# expression tables: a header line, then gene<TAB>value.


def _expression_valid(draw) -> list[str]:
    values = draw(st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=5))
    return ["gene_id\tvalue"] + [f"ENSG{g:011d}\t{v!r}" for g, v in enumerate(values)]


def _expression_parse(path: Path):
    from histcli.errors import UsageError
    from histcli.sources.expression import read_expression

    try:
        table = read_expression(path)
    except UsageError as error:
        # A header mutated into a matrix header (3+ names): no column to read was named.
        raise InputError(path, str(error)) from None
    return dict(zip(table.keys.tolist(), table.values.tolist(), strict=True))


def _expression_expected(lines):
    values, first = {}, True
    for line in _read_lines(lines, skip=lambda line: line.split()[0].startswith("#")):
        if "\t\t" in line or line.startswith("\t"):  # an empty field keeps its column: "\tvalue" is a header
            gene, value = (field.strip() for field in line.split("\t"))
        else:
            gene, value = line.split() if len(line.split()) > 1 else line.split(",")
        number = _number(value) if _NUMBER.fullmatch(value) and value.isascii() else math.nan
        if math.isfinite(number):
            # Genes are matched by the Ensembl id inside the name.
            ensembl = re.search(r"ENS[A-Z]*G\d{11}", gene)
            values[ensembl.group(0) if ensembl else gene.strip()] = number
        else:
            assert first, line  # only a first line may be a header (here: one without a finite value)
        first = False
    return values


def _expression_check(result, lines):
    assert result == _expression_expected(lines)


# predict TSVs (long and wide) with a stand-in model that records what it was given.

PREDICT_MARKS = ["H3K4me3", "H3K27me3"]


class RecordingModel:
    """What ``predict_table`` needs of a Predictor; it keeps the counts of the last batch it scored."""

    def __init__(self, marks=PREDICT_MARKS, n_bins=3):
        self.marks = list(marks)
        self.n_bins = n_bins
        self.batch = None

    def load(self):
        return None

    def scores(self, counts):
        self.batch = counts
        return np.zeros(len(counts))


def _predict(path: Path, model: RecordingModel | None = None):
    from histcli.prediction import PredictionWriter, predict_table

    model = model or RecordingModel()
    recorded: dict = {}

    class Recorder(PredictionWriter):
        def add(self, gene_ids, probabilities):
            for gene, counts in zip(gene_ids, model.batch, strict=True):
                recorded[gene] = counts.tolist()
            super().add(gene_ids, probabilities)

    writer = Recorder(io.StringIO())
    predict_table(model, str(path), writer)
    writer.close()
    return recorded


def _long_valid(draw, marks=("H3K27me3", "H3K4me3"), n_bins=3) -> list[str]:
    lines = ["gene_id\tbin\t" + "\t".join(marks)]
    for g in range(draw(st.integers(1, 3))):
        lines += [f"g{g}\t{b}\t" + "\t".join(_counts(draw, len(marks))) for b in range(1, n_bins + 1)]
    return lines


def _long_expected(lines):
    genes: dict = {}
    for line in _read_lines(lines[1:]):
        gene, b, k27, k4 = line.split("\t")
        genes.setdefault(gene, {})[int(_number(b))] = [_number(k4), _number(k27)]
    return {gene: [rows[b] for b in sorted(rows)] for gene, rows in genes.items()}


def _wide_valid(draw) -> list[str]:
    header = ["gene_id"] + [f"{m}_{b}" for b in range(1, 4) for m in reversed(PREDICT_MARKS)]
    return ["\t".join(header)] + ["\t".join([f"g{g}"] + _counts(draw, 6)) for g in range(draw(st.integers(1, 3)))]


def _wide_expected(lines):
    genes = {}
    for line in _read_lines(lines[1:]):
        fields = line.split("\t")
        values = [_number(v) for v in fields[1:]]
        genes[fields[0]] = [[values[2 * b + 1], values[2 * b]] for b in range(3)]
    return genes


def _model_input_check(expected):
    def check(result, lines):
        wanted = expected(lines)
        assert list(result) == list(wanted)
        for gene, counts in result.items():
            # The model sees float64 counts here; they are cast to float32 by its transform.
            assert np.array_equal(np.asarray(counts), np.asarray(wanted[gene])), gene
    return check


LAYOUTS = {
    layout.name: layout
    for layout in [
        Layout("deepchrome", "train.csv", ",", False, [1, 2, 3, 4, 5, 6, 7], BAD_COUNTS, True,
               _deepchrome_valid, _deepchrome_parse, _deepchrome_check),
        Layout("deepdiff", "X.train.csv", ",", False, [1, 2, 3, 4, 5], BAD_COUNTS, True,
               _deepdiff_valid, _deepdiff_parse, _deepdiff_check),
        Layout("bedgraph", "t.bedGraph", "\t", True, [1, 2, 3], BAD_COUNTS, True,
               _bedgraph_valid, _bedgraph_parse, _bedgraph_check),
        Layout("bed", "genes.bed", "\t", False, [1, 2], BAD_COUNTS, False, _bed_valid, _bed_parse, _bed_check),
        Layout("expression", "expr.tsv", "\t", True, [1], NOT_EXPRESSION, True,
               _expression_valid, _expression_parse, _expression_check),
        Layout("predict-long", "long.tsv", "\t", True, [1, 2, 3], BAD_COUNTS, True,
               _long_valid, _predict, _model_input_check(_long_expected)),
        Layout("predict-wide", "wide.tsv", "\t", True, [1, 2, 3, 4, 5, 6], BAD_COUNTS, True,
               _wide_valid, _predict, _model_input_check(_wide_expected)),
    ]
}


# mutations --------------------------------------------------------------------------------


def _encode(lines: list[str], benign: set[str]) -> bytes:
    text = ("\r\n" if "crlf" in benign else "\n").join(lines) + ("\r\n" if "crlf" in benign else "\n")
    return ("\ufeff" if "bom" in benign else "").encode() + text.encode("utf-8", errors="surrogatepass")


@st.composite
def broken_value(draw, layout: Layout):
    """A valid file with one number field made invalid: (lines, benign changes, line number)."""
    lines = layout.valid(draw)
    first = 1 if layout.header else 0
    index = draw(st.integers(first, len(lines) - 1))
    field = draw(st.sampled_from(layout.number_fields))
    bad = draw(st.sampled_from(layout.bad_values))
    fields = lines[index].split(layout.sep)
    fields[field] = bad
    lines[index] = layout.sep.join(fields)
    return lines, set(draw(st.sets(st.sampled_from(BENIGN))))


@st.composite
def broken_columns(draw, layout: Layout):
    """A fixed-column file with one field dropped or added on one line."""
    lines = layout.valid(draw)
    index = draw(st.integers(1 if layout.header else 0, len(lines) - 1))
    fields = lines[index].split(layout.sep)
    if draw(st.booleans()):
        fields.insert(draw(st.integers(0, len(fields))), "1")
    else:
        del fields[draw(st.integers(0, len(fields) - 1))]
    lines[index] = layout.sep.join(fields)
    return lines, set(draw(st.sets(st.sampled_from(BENIGN))))


@st.composite
def mutated(draw, layout: Layout):
    """(original lines, mutated bytes, benign changes, whether any change may break the file)."""
    original = layout.valid(draw)
    lines = list(original)
    breaking = False
    cut = binary = None
    for kind in draw(st.lists(st.sampled_from(LINE_MUTATIONS), max_size=3)):
        breaking = True
        index = draw(st.integers(0, len(lines) - 1)) if lines else 0
        if kind in ("drop_field", "add_field", "replace_field") and lines:
            fields = lines[index].split(layout.sep)
            position = draw(st.integers(0, len(fields) - 1))
            if kind == "drop_field":
                del fields[position]
            elif kind == "add_field":
                fields.insert(position, draw(st.sampled_from(ODD_TEXT)))
            else:
                fields[position] = draw(st.sampled_from(ODD_TEXT))
            lines[index] = layout.sep.join(fields)
        elif kind == "blank_line":
            lines.insert(index, draw(st.sampled_from(["", " ", "\t"])))
        elif kind == "duplicate_line" and lines:
            lines.insert(index, lines[index])
        elif kind == "stray_cr" and lines:
            at = draw(st.integers(0, len(lines[index])))
            lines[index] = lines[index][:at] + "\r" + lines[index][at:]
        elif kind == "truncate":
            cut = draw(st.floats(0, 1))
        elif kind == "binary":
            binary = (draw(st.floats(0, 1)), draw(st.binary(min_size=1, max_size=8)))
    benign = set(draw(st.sets(st.sampled_from(BENIGN))))
    data = _encode(lines, benign)
    if binary is not None:
        at = int(binary[0] * len(data))
        data = data[:at] + binary[1] + data[at:]
    if cut is not None:
        data = data[: int(cut * len(data))]
    return original, data, benign, breaking


def _plain_lines(data: bytes, layout: Layout) -> list[str]:
    """The lines a plain reader sees: UTF-8 (bad bytes replaced), without a BOM, split at line ends."""
    text = data.decode("utf-8", errors="replace").removeprefix("\ufeff")
    # Lines end at \n (dropping the \r of \r\n), or at \r in a file without \n: what `sed -n` counts.
    line_break = "\n" if "\n" in text else "\r"
    lines = text.removesuffix(line_break).split(line_break)
    return [line.removesuffix("\r") for line in lines] if line_break == "\n" else lines


def _parse_in(folder: str, layout: Layout, data: bytes):
    path = Path(folder) / layout.file_name
    path.write_bytes(data)
    try:
        return path, layout.parse(path), None
    except InputError as error:
        return path, None, error


def _assert_clean_error(error: InputError, path: Path) -> None:
    """One line naming an input file: the mutated one, or one it no longer agrees with."""
    message = str(error)
    assert "\n" not in message and "\r" not in message, message
    assert message.startswith(str(path.parent)), message


# properties ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(LAYOUTS))
@FUZZ
@given(data=st.data())
def test_a_bad_number_is_refused(name, data):
    layout = LAYOUTS[name]
    lines, benign = data.draw(broken_value(layout))
    with tempfile.TemporaryDirectory() as folder:
        path, result, error = _parse_in(folder, layout, _encode(lines, benign))
        assert error is not None, (lines, result)
        _assert_clean_error(error, path)


@pytest.mark.parametrize("name", sorted(n for n, layout in LAYOUTS.items() if layout.fixed_columns))
@FUZZ
@given(data=st.data())
def test_a_field_more_or_less_is_refused(name, data):
    layout = LAYOUTS[name]
    lines, benign = data.draw(broken_columns(layout))
    with tempfile.TemporaryDirectory() as folder:
        path, result, error = _parse_in(folder, layout, _encode(lines, benign))
        assert error is not None, (lines, result)
        _assert_clean_error(error, path)


@pytest.mark.parametrize("name", sorted(LAYOUTS))
@FUZZ
@given(data=st.data())
def test_mutated_files_give_their_values_or_one_clean_error(name, data):
    layout = LAYOUTS[name]
    original, mutated_bytes, benign, breaking = data.draw(mutated(layout))
    with tempfile.TemporaryDirectory() as folder:
        path, result, error = _parse_in(folder, layout, mutated_bytes)
        if not breaking:
            # A byte-order mark and CRLF line ends change nothing.
            assert error is None, (benign, error)
            layout.check(result, original)
        elif error is not None:
            _assert_clean_error(error, path)
        else:
            layout.check(result, _plain_lines(mutated_bytes, layout))


# through the command line: a few examples each, checking the store and output are untouched ---


@pytest.fixture(scope="module")
def cli_store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz-cli")
    store = folder / "s.h5"
    assert run_cli("prepare", "simulate", "--cells", 1, "--genes", 30, "--bins", 4, "--store", store, "-q").code == 0
    return store


def _assert_cli_outcome(result, store: Path, digest: str) -> None:
    """Exit 0, or exit 1 with one error line and the store as it was; no traceback or warning."""
    assert "Traceback" not in result.stderr and "Warning" not in result.stderr, result.stderr
    assert result.code in (0, 1), result.stderr
    if result.code == 1:
        errors = [line for line in result.stderr.splitlines() if line.startswith("histcli: error:")]
        assert len(errors) == 1, result.stderr
        assert file_digest(store) == digest


@CLI
@given(data=st.data())
def test_prepare_deepchrome_through_the_command_line(cli_store, data):
    layout = LAYOUTS["deepchrome"]
    _, mutated_bytes, _, _ = data.draw(mutated(layout))
    with tempfile.TemporaryDirectory() as folder:
        # The command succeeds exactly when the parser does.
        _, _, error = _parse_in(folder, layout, mutated_bytes)
        expected_ok = error is None
        digest = file_digest(cli_store)
        result = run_cli("prepare", "deepchrome", folder, "--cell", "fuzz", "--store", cli_store, "--overwrite", "-q")
        _assert_cli_outcome(result, cli_store, digest)
        assert (result.code == 0) == expected_ok, result.stderr
        if expected_ok:
            _deepchrome_check(_train_genes(Store(cli_store).load("fuzz")), _plain_lines(mutated_bytes, layout))


@CLI
@given(data=st.data())
def test_prepare_tracks_through_the_command_line(cli_store, data):
    layout = LAYOUTS["bedgraph"]
    original, mutated_bytes, _, _ = data.draw(mutated(layout))
    with tempfile.TemporaryDirectory() as folder:
        track = Path(folder) / "t.bedGraph"
        track.write_bytes(mutated_bytes)
        genes = Path(folder) / "genes.bed"
        genes.write_text("chr1\t20\t21\tENSG00000000001\t0\t+\n")
        digest = file_digest(cli_store)
        result = run_cli("prepare", "tracks", "--cell", "fuzzt", f"--track=H3K4me3={track}", "--genes", genes,
                         "--bin-size", 10, "--window", 20, "--drop-missing", "--store", cli_store, "--overwrite", "-q")
        _assert_cli_outcome(result, cli_store, digest)
        if result.code == 0:
            # The gene's bins [0,10) and [10,20), [20,30), [30,40): sums over the drawn intervals.
            track = _bedgraph_expected(_plain_lines(mutated_bytes, layout)).get("chr1", [])
            expected = [sum(v * max(0, min(e, lo + 10) - max(s, lo)) / (e - s) for s, e, v in track)
                        for lo in (0, 10, 20, 30)]
            stored = Store(cli_store).load("fuzzt").counts_array()[0, :, 0]
            np.testing.assert_allclose(stored, np.asarray(expected, dtype=np.float32), rtol=1e-6)


TINY_MARKS = ("H3K4me3", "H3K4me1", "H3K36me3", "H3K9me3", "H3K27me3")


@CLI
@given(data=st.data())
def test_predict_through_the_command_line(tiny_model, data):
    # The tiny model's five marks and four bins, in another column order.
    layout = Layout("predict-tiny", "in.tsv", "\t", True, [], BAD_COUNTS, True,
                    lambda draw: _long_valid(draw, TINY_MARKS[::-1], 4), None, None)
    _, mutated_bytes, _, _ = data.draw(mutated(layout))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "in.tsv"
        path.write_bytes(mutated_bytes)
        try:
            recorded = _predict(path, RecordingModel(TINY_MARKS, 4))
        except InputError:
            recorded = None
        out = Path(folder) / "out.tsv"
        result = run_cli("predict", "logistic", path, "--cell", "sim01", "-o", out, env=tiny_model)
        assert "Traceback" not in result.stderr and "Warning" not in result.stderr, result.stderr
        if recorded is None:
            assert result.code == 1, result.stderr
            assert len([line for line in result.stderr.splitlines() if line.startswith("histcli: error:")]) == 1
            assert not out.exists()
        else:
            assert result.code == 0, result.stderr
            rows = out.read_text().splitlines()
            assert [row.split("\t")[0] for row in rows[1:]] == list(recorded)
