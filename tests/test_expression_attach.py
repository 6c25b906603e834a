"""Expression attached at prepare time (histcli.sources.expression and prepare --expression),
checked against values written into hand-made tables and against the real Roadmap matrix."""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, SHARED_DATA, assert_one_line_error, file_digest, run_cli, shared_data

from histcli.errors import InputError, UsageError, describe
from histcli.sources.expression import ExpressionFile, match_expression, read_expression
from histcli.store import Store

ROADMAP = "roadmap-rnaseq/roadmap.rpkm.56cells.tsv.gz"


def _write(path: Path, text: str, *, compress: bool = False) -> Path:
    path.write_bytes(gzip.compress(text.encode()) if compress else text.encode())
    return path


def _summary_attrs(store: Path, cell: str) -> dict:
    return {summary.name: summary for summary in Store(store).summaries()}[cell].attrs


# reading tables -------------------------------------------------------------------------------

MATRIX = (
    "gene_id\tE001\tE002\tT\n"
    "ENSG00000000001.5\t3\t0\t10\n"
    "ENSG00000000002.1\t0\t1.5\t20\n"
    "ENSG00000000003.2\t7\t2\t30\n"
    "ENSG00000000009.1\t1\t4\t40\n"
)


def test_a_matrix_column_is_read_by_cell_name_or_by_option(tmp_path):
    path = _write(tmp_path / "m.tsv.gz", MATRIX, compress=True)
    by_cell = read_expression(path, cell="E002")
    assert by_cell.column == "E002"
    assert by_cell.keys.tolist() == [f"ENSG0000000000{i}" for i in (1, 2, 3, 9)]  # versions dropped
    assert by_cell.values.tolist() == [0, 1.5, 2, 4]
    by_option = read_expression(path, column="T", cell="E002")  # the option wins over the cell name
    assert by_option.values.tolist() == [10, 20, 30, 40]
    assert by_option.source == "column T of m.tsv.gz"
    assert ExpressionFile(path).columns(column=None, cells=["E001", "T"]) == {"E001": "E001", "T": "T"}


def test_a_two_column_table_has_no_column_to_choose(tmp_path):
    path = _write(tmp_path / "e.tsv", "gene_id\trpkm\nENSG00000000001\t5\nENSG00000000002\t0.5\n")
    table = read_expression(path, cell="anything")
    assert table.column is None and table.values.tolist() == [5, 0.5]
    assert read_expression(path, column="rpkm").values.tolist() == [5, 0.5]  # the header's name
    with pytest.raises(UsageError) as caught:
        read_expression(path, column="E116")
    # The library names its parameter; the command line's error map words it as the option.
    assert str(caught.value).startswith("expression_column 'E116': e.tsv has one value column (named 'rpkm')")
    assert describe(caught.value)[0].startswith("--expression-column 'E116': e.tsv has one value column")


def test_a_missing_column_is_a_usage_error_listing_the_columns(tmp_path):
    path = _write(tmp_path / "m.tsv", MATRIX)
    with pytest.raises(UsageError) as caught:
        read_expression(path, cell="E116")
    assert describe(caught.value) == ("--expression 'm.tsv': has 3 columns: E001, E002, T; no column is named "
                                      "like the cell 'E116'; pick one with --expression-column", 2)
    wide = _write(tmp_path / "wide.tsv", "gene_id\t" + "\t".join(f"E{i:03d}" for i in range(20)) + "\n"
                  + "ENSG00000000001\t" + "\t".join(["1"] * 20) + "\n")
    with pytest.raises(UsageError, match=r"20 columns: E000, E001, E002, E003, E004, E005, E006, E007 and 12 more"):
        read_expression(wide, column="E116")


def test_control_characters_of_a_header_are_shown_escaped(tmp_path):
    """A control character is refused where it stands, named escaped: printed raw, an escape sequence would
    recolour or clear the terminal."""
    path = _write(tmp_path / "m.tsv", "gene_id\tE001\tE002\nENSG00000000001\t1\t2\nENSG00000000002\t1\t2\x1b[2K\n")
    with pytest.raises(InputError, match=re.escape(r"m.tsv, line 3: control character '\x1b' inside the line")):
        read_expression(path, cell="E001")
    header = _write(tmp_path / "t.tsv", "gene_id\tE\x0701\tE002\nENSG00000000001\t1\t2\n")
    with pytest.raises(InputError, match=re.escape(r"t.tsv, line 1: control character '\x07' inside the line")):
        read_expression(header, column="E002")


@pytest.mark.parametrize(("text", "where", "problem"), [
    ("gene_id\tA\tB\nENSG00000000001\t1\t-2\n", "line 2, field B",
     "negative value -2; expected expression >= 0 (such as RPKM)"),
    ("gene_id\tA\tB\nENSG00000000001\t1\tinf\n", "line 2, field B", "'inf' is not a finite number"),
    ("gene_id\tA\tB\nENSG00000000001\t1\t1e400\n", "line 2, field B", "'1e400' is not a finite number"),
    ("gene_id\tA\tB\nENSG00000000001\t1\tNA\n", "line 2, field B", "'NA' is not a number"),
    ("gene_id\tA\tB\nENSG00000000001\t1\n", "line 2", "expected 3 columns as in the header, found 2"),
    ("gene_id\tA\tB\nENSG00000000001\t1\t2\nENSG00000000001.3\t1\t3\n", "line 3, field B",
     "gene ENSG00000000001.3 has expression 3 here but 2.0 on line 2"),
    ("ENSG00000000001\t-0.5\n", "line 1, field expression",
     "negative value -0.5; expected expression >= 0 (such as RPKM)"),
    ("ENSG00000000001\t1\t2\n", "line 1", "expected 2 columns (gene id, expression), found 3"),
])
def test_bad_values_name_the_file_line_and_field(tmp_path, text, where, problem):
    path = _write(tmp_path / "x.tsv", text)
    with pytest.raises(InputError) as caught:
        read_expression(path, column="B" if text.startswith("gene_id\tA") else None)
    assert str(caught.value) == f"{path}, {where}: {problem}"


def test_a_header_without_a_name_for_the_gene_ids_is_pointed_out(tmp_path):
    # R's write.table (row.names = TRUE) names the value columns only: E001 seems to head the gene ids.
    path = _write(tmp_path / "r.tsv", "E001\tE002\tE003\nENSG00000000001\t1\t2\t3\n")
    for settings in ({"cell": "E001"}, {"column": "E001"}):
        with pytest.raises(UsageError, match=r"E001 heads the first column, the gene ids'; a header written by R's "
                                             r"write.table has no name for them: add one \(such as gene_id\)"):
            read_expression(path, **settings)


@pytest.mark.parametrize("sep", ["\t", ","])
def test_an_empty_field_in_another_column_keeps_the_columns_in_place(tmp_path, sep):
    # Missing values written as nothing (pandas' to_csv writes NaN so), in columns T's cell does not read.
    rows = ["gene_id,E001,E002,T", "ENSG00000000001,3,,10", "ENSG00000000002,,1.5,20"]
    path = _write(tmp_path / "m.txt", "\n".join(rows).replace(",", sep) + "\n")
    assert read_expression(path, cell="T").values.tolist() == [10, 20]
    with pytest.raises(InputError, match=r"m\.txt, line 3, field E001: '' is not a number"):
        read_expression(path, cell="E001")
    without_id = _write(tmp_path / "n.txt", "\n".join(rows + [",9,9,9"]).replace(",", sep) + "\n")
    with pytest.raises(InputError, match=r"n\.txt, line 4, field gene_id: empty gene id"):
        read_expression(without_id, cell="T")


@pytest.mark.parametrize("compress", [False, True])
def test_bytes_that_are_not_utf8_are_named_by_line(tmp_path, compress):
    # A damaged gene id would otherwise read as another gene: missing from the table, or dropped.
    text = MATRIX.replace("ENSG00000000003", "ENSG0000000\xe9003").encode("latin-1")
    path = tmp_path / ("m.tsv.gz" if compress else "m.tsv")
    path.write_bytes(gzip.compress(text) if compress else text)
    with pytest.raises(InputError) as caught:
        read_expression(path, cell="E001")
    assert str(caught.value) == f"{path}, line 4: not UTF-8 text (byte 0xe9 at character 12); save the file as UTF-8"


@pytest.mark.parametrize("compress, name", [("bz2", "bzip2"), ("lzma", "xz")])
def test_a_table_compressed_other_than_gzip_says_so(tmp_path, compress, name):
    import importlib

    path = tmp_path / "expr.tsv.x"
    path.write_bytes(importlib.import_module(compress).compress(b"gene_id\trpkm\nENSG00000000003\t1.5\n"))
    with pytest.raises(InputError, match=rf"expr\.tsv\.x: is {name}-compressed; only plain text and gzip are read"):
        read_expression(path)


def test_the_median_counts_every_row_and_repeats_are_noted(tmp_path):
    # ENSG2 twice with one value: used once, but both rows count towards the median (DeepChrome's rule).
    path = _write(tmp_path / "m.tsv", "gene_id\tA\tB\nENSG00000000001\t9\t1\nENSG00000000002\t9\t0\n"
                                      "ENSG00000000002\t8\t0\nENSG00000000003\t9\t5\n")
    table = read_expression(path, column="B")
    assert table.rows.tolist() == [1, 0, 0, 5] and table.repeated == 1
    notes: list[str] = []
    match = match_expression(table, np.array(["ENSG00000000001_X", "ENSG00000000003_Z"]), genes_source="g",
                             drop_missing=False, notes=notes)
    assert match.attrs["label_threshold"] == 0.5  # median(1, 0, 0, 5), not median(1, 0, 5) = 1
    assert match.labels.tolist() == [1, 1]
    assert notes == ["m.tsv: 1 rows repeat a gene with the same expression value; each gene is used once"]


@pytest.mark.parametrize(("text", "cells"), [
    (MATRIX, ["E001", "E002", "T"]),
    ("# a comment\n\ngene_id E1 E2 E3\nENSG00000000001.5_A 1 2 3\nENSG00000000001.6_A 1 2 3\nX_1 0 -0.0 1e-300\n",
     ["E1", "E2", "E3"]),
    ("gene,rpkm\nENSG00000000002,4\nENSG00000000001,  5.5\nENSG00000000002,4\n", ["one"]),
    ("ENSG00000000002\t4\nENSG00000000001\t0\n", ["one"]),
])
def test_columns_read_together_equal_columns_read_line_by_line(tmp_path, monkeypatch, text, cells):
    """The columns converted together (prepare's way, here without the line-by-line reading to fall back
    on) equal the line-by-line reading that words the errors."""
    path = _write(tmp_path / "t.tsv", text)
    by_lines = ExpressionFile._read_by_lines
    expression = ExpressionFile(path)
    expression.columns(column=None, cells=cells)
    with monkeypatch.context() as patch:
        patch.setattr(ExpressionFile, "_read_by_lines", lambda *_: pytest.fail("read line by line"))
        together = [expression.table(cell=cell) for cell in cells]
    for table in together:
        expected = by_lines(ExpressionFile(path), table.column)
        assert table.keys.equals(expected.keys) and table.keys.dtype == expected.keys.dtype
        assert table.values.tolist() == expected.values.tolist()
        assert table.rows.tolist() == expected.rows.tolist()
        assert table.repeated == expected.repeated and table.column == expected.column


def test_a_bad_column_stops_only_its_own_cell(tmp_path):
    """The matrix is read once for both cells, but B's bad value is its error alone, said when B is read,
    as when each cell read the file itself; A is read as if B were not there."""
    path = _write(tmp_path / "m.tsv", "gene_id\tA\tB\nENSG00000000001\t1\t2\nENSG00000000002\t3\tx\n"
                                      "ENSG00000000003\t5\t-1\n")
    expression = ExpressionFile(path)
    assert expression.columns(column=None, cells=["A", "B"]) == {"A": "A", "B": "B"}
    assert expression.table(cell="A").values.tolist() == [1, 3, 5]
    with pytest.raises(InputError) as caught:
        expression.table(cell="B")
    assert str(caught.value) == f"{path}, line 3, field B: 'x' is not a number"
    # a row of another width is every column's error, at its line
    wide = _write(tmp_path / "w.tsv", "gene_id\tA\tB\nENSG00000000001\t-1\t2\nENSG00000000002\t3\n")
    for cell, where in (("A", "line 2, field A: negative value -1"), ("B", "line 3: expected 3 columns")):
        with pytest.raises(InputError, match=re.escape(f"{wide}, {where}")):
            ExpressionFile(wide).table(cell=cell)


# matching ---------------------------------------------------------------------------------------


def test_matching_by_ensembl_id_reports_unmatched_genes(tmp_path):
    table = read_expression(_write(tmp_path / "m.tsv", MATRIX), column="E001")
    genes = np.array(["ENSG00000000001_A", "ENSG00000000003.7", "ENSG00000000004_D", "ENSG00000000002"])
    with pytest.raises(InputError) as caught:
        match_expression(table, genes, genes_source="genes.bed", drop_missing=False, notes=[])
    assert str(caught.value) == (f"{tmp_path / 'm.tsv'}: no expression value for 1 of 4 genes of genes.bed "
                                 "(for example ENSG00000000004_D)")
    assert (caught.value.missing, caught.value.total, caught.value.example) == (1, 4, "ENSG00000000004_D")
    assert describe(caught.value)[0].endswith("; pass --drop-missing to leave them out")
    notes: list[str] = []
    match = match_expression(table, genes, genes_source="genes.bed", drop_missing=True, notes=notes)
    assert match.keep.tolist() == [True, True, False, True]
    assert match.values.tolist() == [3, 7, 0]
    # median over the column's four rows (3, 0, 7, 1) is 2
    assert match.labels.tolist() == [1, 1, 0] and match.attrs["label_threshold"] == 2.0
    assert match.attrs["expression_column"] == "E001"
    assert match.attrs["label_rule"] == "label 1 where expression is above 2, the median over all 4 rows of column " \
                                        "E001 of m.tsv"
    assert any("no expression value for 1 of 4 genes" in note and "left out" in note for note in notes)


def test_given_labels_must_follow_the_median_rule(tmp_path):
    table = read_expression(_write(tmp_path / "m.tsv", MATRIX), column="E001")
    genes = np.array(["ENSG00000000001", "ENSG00000000002", "ENSG00000000003"])
    match = match_expression(table, genes, genes_source="cell files", drop_missing=False, notes=[],
                             labels=np.array([1, 0, 1]))
    assert match.labels.tolist() == [1, 0, 1]
    assert match.attrs["label_rule"].startswith("labels as given in cell files; they agree with label 1 where ")
    with pytest.raises(InputError, match=r"the labels of 2 of 3 genes of cell files disagree with label 1 where "
                                         r"expression is above 2, .* \(for example ENSG00000000001: label 0, "
                                         r"expression 3\)"):
        match_expression(table, genes, genes_source="cell files", drop_missing=False, notes=[],
                         labels=np.array([0, 1, 1]))


# the command line: tracks ---------------------------------------------------------------------


@pytest.fixture
def track_files(tmp_path):
    """Two marks on chr1 and three genes, one of which (ENSG00000000004) the matrix lacks."""
    for mark in ("H3K4me3", "H3K27me3"):
        _write(tmp_path / f"{mark}.bedGraph", "chr1\t0\t1000\t5\nchr1\t1000\t2000\t7\n")
    _write(tmp_path / "genes.bed", "chr1\t500\t501\tENSG00000000001_A\t0\t+\n"
                                   "chr1\t1500\t1501\tENSG00000000003_C\t0\t-\n"
                                   "chr1\t900\t901\tENSG00000000004_D\t0\t+\n")
    _write(tmp_path / "m.tsv.gz", MATRIX, compress=True)
    return tmp_path


def _prepare_tracks(files: Path, store: Path, *extra):
    return run_cli("prepare", "tracks", "--cell", "T", f"--track=H3K4me3={files / 'H3K4me3.bedGraph'}",
                   f"--track=H3K27me3={files / 'H3K27me3.bedGraph'}", "--genes", files / "genes.bed",
                   "--bin-size", 100, "--window", 200, "--store", store, "-f", "tsv", *extra)


def test_prepare_tracks_reads_the_cells_column_of_a_matrix(track_files, tmp_path):
    store = tmp_path / "s.h5"
    result = _prepare_tracks(track_files, store, "--expression", track_files / "m.tsv.gz")
    assert_one_line_error(result, "m.tsv.gz", "no expression value for 1 of 3 genes of genes.bed",
                          "ENSG00000000004_D", "--drop-missing")
    assert not store.exists()
    result = _prepare_tracks(track_files, store, "--expression", track_files / "m.tsv.gz", "--drop-missing")
    assert result.code == 0, result.stderr
    cell = Store(store).load("T")
    assert cell.gene_ids.tolist() == ["ENSG00000000001_A", "ENSG00000000003_C"]
    assert cell.expression.tolist() == [10, 30]  # column T, named like the cell
    assert cell.attrs["label_threshold"] == 25.0  # median of 10, 20, 30, 40
    assert cell.labels.tolist() == [0, 1]
    assert _summary_attrs(store, "T")["expression_column"] == "T"
    assert "no expression value for 1 of 3 genes" in result.stderr and "2 of 4 genes are not in genes.bed" in \
        result.stderr

    result = _prepare_tracks(track_files, store, "--expression", track_files / "m.tsv.gz", "--drop-missing",
                             "--expression-column", "E002", "--overwrite")
    assert result.code == 0, result.stderr
    assert Store(store).load("T").expression.tolist() == [0, 2]


def test_prepare_tracks_column_errors_are_usage_errors_before_anything_is_read(track_files, tmp_path):
    store = tmp_path / "s.h5"
    result = _prepare_tracks(track_files, store, "--expression", track_files / "m.tsv.gz",
                             "--expression-column", "E116")
    assert_one_line_error(result, "--expression-column 'E116'", "3 columns: E001, E002, T", code=2)
    result = run_cli("prepare", "tracks", "--cell", "T", f"--track=H3K4me3={track_files / 'H3K4me3.bedGraph'}",
                     "--genes", track_files / "genes.bed", "--bin-size", 100, "--window", 200, "--store", store,
                     "--expression-column", "E001")
    assert_one_line_error(result, "--expression-column needs --expression", code=2)
    assert not store.exists()


# the command line: DeepChrome ------------------------------------------------------------------


def _toy_labels(toy: Path) -> pd.Series:
    """Label of every toy gene, in file order: the toy ids are Ensembl numbers (000003 = ENSG00000000003)."""
    rows = pd.concat([pd.read_csv(toy / f"{split}.csv", header=None, dtype={0: str})
                      for split in ("train", "valid", "test")])
    return rows.groupby(0, sort=False)[7].first()


def _matrix_for_toy(labels: pd.Series, path: Path, *, flip: int = 0) -> Path:
    """Column A agrees with the toy labels (label 1: 10 + i, label 0: 0.5; 20 rows of 1 and 20 of 5
    not in the cell put the median in between); column B also, except ``flip`` genes."""
    lines = ["gene_id\tA\tB"]
    flipped = 0
    for i, (gene, label) in enumerate(labels.items()):
        value = 10.0 + i if label else 0.5
        other = value
        if flipped < flip and label == 0:
            other, flipped = 50.0, flipped + 1
        lines.append(f"ENSG{int(gene):011d}.3\t{value}\t{other}")
    lines += [f"ENSG{90000000000 + i:011d}\t1\t1" for i in range(20)]
    lines += [f"ENSG{90000000100 + i:011d}\t5\t5" for i in range(20)]
    return _write(path, "\n".join(lines) + "\n")


def test_prepare_deepchrome_checks_its_labels_against_the_expression(tmp_path):
    toy = shared_data("deepchrome-toy")
    labels = _toy_labels(toy)
    matrix = _matrix_for_toy(labels, tmp_path / "m.tsv", flip=2)
    store = tmp_path / "s.h5"
    assert run_cli("prepare", "simulate", "--cells", 1, "--genes", 30, "--bins", 5, "-q", "--store", store).code == 0
    digest = file_digest(store)

    result = run_cli("prepare", "deepchrome", toy, "--cell", "toy", "--expression", matrix, "--store", store)
    assert_one_line_error(result, "--expression 'm.tsv': has 2 columns: A, B", "no column is named like the cell 'toy'",
                          "pick one with --expression-column", code=2)
    result = run_cli("prepare", "deepchrome", toy, "--cell", "toy", "--expression", matrix,
                     "--expression-column", "B", "--store", store)
    assert_one_line_error(result, "m.tsv", "the labels of 2 of 30 genes of the DeepChrome files of toy disagree",
                          "label 0, expression 50")
    assert file_digest(store) == digest  # refused: nothing written

    result = run_cli("prepare", "deepchrome", toy, "--cell", "toy", "--expression", matrix,
                     "--expression-column", "A", "--store", store)
    assert result.code == 0, result.stderr
    assert "matched them to Ensembl ids by number" in result.stderr
    cell = Store(store).load("toy")
    assert cell.gene_ids.tolist() == labels.index.tolist()
    assert cell.labels.tolist() == labels.tolist()
    assert cell.expression.tolist() == [10.0 + i if label else 0.5 for i, label in enumerate(labels)]
    assert cell.attrs["label_threshold"] == statistics.median([10.0 + i if label else 0.5
                                                               for i, label in enumerate(labels)] + [1] * 20 + [5] * 20)
    assert cell.attrs["label_rule"].startswith("labels as given in the DeepChrome files of toy; they agree")
    assert _summary_attrs(store, "toy")["expression_column"] == "A"


def test_prepare_deepchrome_gives_each_cell_its_own_column(tmp_path):
    toy = shared_data("deepchrome-toy")
    labels = _toy_labels(toy)
    matrix = _matrix_for_toy(labels, tmp_path / "m.tsv")
    for cell in ("A", "B"):
        folder = tmp_path / "cells" / cell / "classification"
        folder.mkdir(parents=True)
        for split in ("train", "valid", "test"):
            (folder / f"{split}.csv").symlink_to(toy / f"{split}.csv")
    store = tmp_path / "s.h5"
    result = run_cli("prepare", "deepchrome", tmp_path / "cells", "--expression", matrix, "--store", store, "-q")
    assert result.code == 0, result.stderr
    assert {cell: _summary_attrs(store, cell)["expression_column"] for cell in ("A", "B")} == {"A": "A", "B": "B"}
    # one column for several cells cannot be right
    result = run_cli("prepare", "deepchrome", tmp_path / "cells", "--expression", matrix, "--expression-column",
                     "A", "--store", store, "--overwrite")
    assert_one_line_error(result, "--expression 'column A': holds one cell's values, but 2 cells are prepared",
                          code=2)


# the command line: DeepDiff ---------------------------------------------------------------------


def test_prepare_deepdiff_expression_replaces_its_expr_csv(tmp_path):
    data = shared_data("deepdiff-cell1")
    table = _write(tmp_path / "cell1.tsv", "gene\tvalue\n" + "".join(
        f"{line.split(',')[0]}.1\t{float(line.split(',')[1]) / 2}\n"
        for line in (data / "Cell1.expr.csv").read_text().splitlines()))
    store = tmp_path / "s.h5"
    result = run_cli("prepare", "deepdiff", data, "--cell", "Cell1", "--expression", table, "--store", store)
    assert result.code == 0, result.stderr
    assert "--expression cell1.tsv replaces Cell1.expr.csv" in result.stderr
    own = {line.split(",")[0]: float(line.split(",")[1]) for line in (data / "Cell1.expr.csv").read_text().split()}
    cell = Store(store).load("Cell1")
    assert cell.expression.tolist() == [own[gene.split("_")[0]] / 2 for gene in cell.gene_ids]
    assert cell.attrs["label_threshold"] == statistics.median(own.values()) / 2
    assert cell.labels.tolist() == [int(value > cell.attrs["label_threshold"]) for value in cell.expression]


# the real Roadmap matrix ------------------------------------------------------------------------


def test_the_roadmap_e116_column_equals_the_e116_table():
    shared_data("roadmap-rnaseq")
    folder = shared_data("e116-10kb")
    matrix = read_expression(SHARED_DATA / ROADMAP, cell="E116")
    table = read_expression(folder / "E116.expression.tsv")
    assert matrix.column == "E116" and len(matrix.rows) == 19802
    assert matrix.keys.tolist() == table.keys.tolist()
    assert np.array_equal(matrix.values, table.values)
    assert np.array_equal(matrix.rows, table.rows)


def test_prepare_tracks_on_real_e116_with_the_roadmap_matrix(tmp_path):
    """chr21 of two E116 tracks (to stay quick), expression from the matrix and from E116.expression.tsv."""
    shared_data("roadmap-rnaseq")
    folder = shared_data("e116-10kb")
    tracks = []
    for mark in ("H3K4me3", "H3K27me3"):
        with gzip.open(folder / f"E116.{mark}.bedGraph.gz", "rt") as handle:
            lines = [line for line in handle if line.startswith("chr21\t")]
        tracks.append(f"--track={mark}={_write(tmp_path / f'{mark}.bedGraph', ''.join(lines))}")
    genes = [line for line in (folder / "genes.hg19.bed").read_text().splitlines(keepends=True)
             if line.startswith("chr21\t")]
    bed = _write(tmp_path / "chr21.bed", "".join(genes))
    store = tmp_path / "s.h5"
    common = ("prepare", "tracks", *tracks, "--genes", bed, "--bin-size", 10000, "--window", 20000, "--store", store,
              "-q")
    assert run_cli(*common, "--cell", "E116", "--expression", SHARED_DATA / ROADMAP).code == 0
    assert run_cli(*common, "--cell", "table", "--expression", folder / "E116.expression.tsv").code == 0
    from_matrix, from_table = Store(store).load("E116"), Store(store).load("table")
    assert from_matrix.n_genes == len(genes) > 200
    assert from_matrix.expression.tolist() == from_table.expression.tolist()
    assert from_matrix.labels.tolist() == from_table.labels.tolist()
    rows = [line.split() for line in (folder / "E116.expression.tsv").read_text().splitlines()[1:]]
    threshold = statistics.median(float(value) for _, value in rows)
    assert from_matrix.attrs["label_threshold"] == from_table.attrs["label_threshold"] == threshold
    by_gene = dict((gene, float(value)) for gene, value in rows)
    assert from_matrix.expression.tolist() == [by_gene[gene.split("_")[0]] for gene in from_matrix.gene_ids]
    assert _summary_attrs(store, "E116")["expression_column"] == "E116"
    assert "expression_column" not in _summary_attrs(store, "table")


def _toy_cells_following(roadmap: pd.DataFrame, cells: list[str], folder: Path) -> Path:
    """DeepChrome cells named like Roadmap columns: the toy's genes and counts, each cell's labels by the
    median rule of its own column (as the published cells were labelled)."""
    toy = shared_data("deepchrome-toy")
    for cell in cells:
        above = (roadmap[cell] > roadmap[cell].median()).groupby(level=0).first()
        split_folder = folder / cell / "classification"
        split_folder.mkdir(parents=True)
        for split in ("train", "valid", "test"):
            rows = pd.read_csv(toy / f"{split}.csv", header=None, dtype={0: str})
            rows[7] = [int(above[f"ENSG{int(gene):011d}"]) for gene in rows[0]]
            rows.to_csv(split_folder / f"{split}.csv", header=False, index=False)
    return folder


ROADMAP_CELLS = ["E003", "E017", "E116", "E128"]  # E017 is not a column: left out below


def test_prepare_deepchrome_gives_many_cells_their_roadmap_columns(tmp_path):
    """Several cells from one matrix: each stores its own column, as pandas reads it."""
    shared_data("roadmap-rnaseq")
    roadmap = pd.read_csv(SHARED_DATA / ROADMAP, sep="\t", index_col=0)
    cells = [cell for cell in ROADMAP_CELLS if cell in roadmap.columns]
    assert len(cells) == 3
    folder = _toy_cells_following(roadmap, cells, tmp_path / "cells")
    store = tmp_path / "s.h5"
    result = run_cli("prepare", "deepchrome", folder, "--expression", SHARED_DATA / ROADMAP, "--store", store, "-q")
    assert result.code == 0, result.stderr
    assert sorted(Store(store).cell_names()) == cells
    for cell in cells:
        stored = Store(store).load(cell)
        column = roadmap[cell].groupby(level=0).first()  # the 7 repeated ids repeat their values
        assert stored.expression.tolist() == [column[f"ENSG{int(gene):011d}"] for gene in stored.gene_ids]
        assert stored.attrs["label_threshold"] == roadmap[cell].median()
        assert stored.labels.tolist() == [int(value > roadmap[cell].median()) for value in stored.expression]
        assert _summary_attrs(store, cell)["expression_column"] == cell
    # the cells differ, so no cell was given another's column
    assert len({tuple(Store(store).load(cell).expression) for cell in cells}) == 3


# Runs histcli with a count of the times the file in argv[1] is opened (an audit hook sees every open,
# whoever calls it) and of the lines split by the expression reader.
_COUNTING_RUN = """
import atexit, os, runpy, sys
matrix, counts = os.path.realpath(sys.argv[1]), {"opens": 0, "lines": 0}
def hook(event, args):
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)) and os.path.realpath(args[0]) == matrix:
        counts["opens"] += 1
sys.addaudithook(hook)
import histcli.sources.expression as expression
content_lines = expression._content_lines
def counted(*args):
    for line in content_lines(*args):
        counts["lines"] += 1
        yield line
expression._content_lines = counted
atexit.register(lambda: print("COUNTS", counts["opens"], counts["lines"], file=sys.stderr))
sys.argv = ["histcli", *sys.argv[2:]]
runpy.run_module("histcli", run_name="__main__")
"""


def test_prepare_deepchrome_reads_the_matrix_once_for_all_cells(tmp_path):
    """The matrix is opened and split into fields as often for three cells as for one: once to read
    it (and once to hash it), not once per cell."""
    shared_data("roadmap-rnaseq")
    roadmap = pd.read_csv(SHARED_DATA / ROADMAP, sep="\t", index_col=0)
    cells = [cell for cell in ROADMAP_CELLS if cell in roadmap.columns]
    folder = _toy_cells_following(roadmap, cells, tmp_path / "cells")
    counts = {}
    for chosen in (cells[:1], cells):
        process = subprocess.run(
            [sys.executable, "-c", _COUNTING_RUN, SHARED_DATA / ROADMAP, "prepare", "deepchrome", folder,
             *[f"--cell={cell}" for cell in chosen], "--expression", SHARED_DATA / ROADMAP,
             "--store", tmp_path / f"{len(chosen)}.h5", "-q"],
            cwd=REPO, capture_output=True, text=True, timeout=300)
        assert process.returncode == 0, process.stderr
        assert Store(tmp_path / f"{len(chosen)}.h5").cell_names() == chosen
        opens, lines = map(int, re.search(r"^COUNTS (\d+) (\d+)$", process.stderr, flags=re.M).groups())
        counts[len(chosen)] = opens, lines
    matrix_lines = len(roadmap) + 1
    assert counts[1] == counts[3], counts
    opens, lines = counts[3]
    assert opens <= 2  # read, and hashed for the cells' sources
    assert matrix_lines <= lines < 2 * matrix_lines  # every line split once (the header twice)


# README --------------------------------------------------------------------------------------------


def test_readme_expression_example_runs(tmp_path):
    """The README's --expression example, on DeepChrome cells built from the toy data with labels
    that follow the median rule of their Roadmap columns (E003 and E004)."""
    shared_data("roadmap-rnaseq")
    shared_data("deepdiff-cell1")
    toy = shared_data("deepchrome-toy")
    readme = (REPO / "README.md").read_text()
    block = re.search(r"^\*\*Expression from a table or a matrix\*\*.*?```bash\n(.*?)```", readme,
                      flags=re.S | re.M).group(1)
    roadmap = pd.read_csv(SHARED_DATA / ROADMAP, sep="\t", index_col=0)
    for cell in ("E003", "E004"):
        column = roadmap[cell]
        above = (column > column.median()).groupby(level=0).first()
        folder = tmp_path / "deepchrome-data" / cell / "classification"
        folder.mkdir(parents=True)
        for split in ("train", "valid", "test"):
            rows = pd.read_csv(toy / f"{split}.csv", header=None, dtype={0: str})
            rows[7] = [int(above[f"ENSG{int(gene):011d}"]) for gene in rows[0]]
            rows.to_csv(folder / f"{split}.csv", header=False, index=False)
    env = {**os.environ, "HISTCLI_STORE": str(tmp_path / "store.h5"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    script = "set -euo pipefail\n" + block.replace("../shared/data", str(SHARED_DATA))
    result = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    store = Store(tmp_path / "store.h5")
    assert sorted(store.cell_names()) == ["E003", "E004", "E123", "K562"]
    by_gene = roadmap["E123"].groupby(level=0).first()
    for name in ("E123", "K562"):
        cell = store.load(name)
        assert cell.n_genes == 600
        assert cell.expression.tolist() == [by_gene[gene.split("_")[0]] for gene in cell.gene_ids]
    assert store.load("E003").labels.tolist() == [
        int(roadmap["E003"].groupby(level=0).first()[f"ENSG{int(gene):011d}"] > roadmap["E003"].median())
        for gene in store.load("E003").gene_ids]
    assert _summary_attrs(tmp_path / "store.h5", "E004")["expression_column"] == "E004"



def _prepare_in_bash(arguments: str, store: Path) -> subprocess.CompletedProcess:
    """`histcli prepare tracks ARGUMENTS` run by bash, so that <(...) in them hands histcli pipes."""
    command = (f"{shlex.quote(sys.executable)} -m histcli prepare tracks --cell T {arguments} --bin-size 100 "
               f"--window 200 --store {shlex.quote(str(store))}")
    return subprocess.run(["bash", "-c", command], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_prepare_tracks_reads_process_substitutions_like_files(track_files, tmp_path):
    """bash's <(...) hands histcli pipes, which can be read once: the cell is the one the files give."""
    by_files, by_pipes = tmp_path / "files.h5", tmp_path / "pipes.h5"
    assert _prepare_tracks(track_files, by_files, "--expression", track_files / "m.tsv.gz", "--drop-missing",
                           "-q").code == 0
    quoted = {name: shlex.quote(str(track_files / name)) for name in
              ("H3K4me3.bedGraph", "H3K27me3.bedGraph", "genes.bed", "m.tsv.gz")}
    process = _prepare_in_bash(
        f"--track=H3K4me3=<(cat {quoted['H3K4me3.bedGraph']}) --track=H3K27me3=<(cat {quoted['H3K27me3.bedGraph']}) "
        f"--genes <(cat {quoted['genes.bed']}) --expression <(zcat {quoted['m.tsv.gz']}) --drop-missing -q", by_pipes)
    assert process.returncode == 0, process.stderr
    files_cell, pipes_cell = Store(by_files).load("T"), Store(by_pipes).load("T")
    assert np.array_equal(np.concatenate(pipes_cell.counts), np.concatenate(files_cell.counts))
    assert pipes_cell.gene_ids.tolist() == files_cell.gene_ids.tolist()
    assert pipes_cell.expression.tolist() == files_cell.expression.tolist()
    # Sources are named as given (the pipes), with the digest of what was read through them.
    assert all(re.fullmatch(r"/dev/fd/\d+", source.path) for source in pipes_cell.sources), pipes_cell.sources
    read = [(track_files / name).read_bytes() for name in ("H3K4me3.bedGraph", "H3K27me3.bedGraph", "genes.bed")]
    read.append(gzip.decompress((track_files / "m.tsv.gz").read_bytes()))  # zcat's output
    assert sorted(source.sha256 for source in pipes_cell.sources) == sorted(
        hashlib.sha256(data).hexdigest() for data in read)


def test_an_error_in_a_piped_input_names_the_pipe(track_files, tmp_path):
    store = tmp_path / "s.h5"
    process = _prepare_in_bash(
        "--track=H3K4me3=<(printf 'chr1\\t0\\t1000\\t5\\nchr1\\t1000\\tx\\t7\\n') "
        f"--track=H3K27me3={shlex.quote(str(track_files / 'H3K27me3.bedGraph'))} "
        f"--genes {shlex.quote(str(track_files / 'genes.bed'))}", store)
    assert process.returncode == 1
    assert re.fullmatch(r"histcli: error: /dev/fd/\d+, line 2, field end: .+\n", process.stderr), process.stderr
    assert not store.exists()


def test_cells_reading_one_shared_matrix_take_their_columns_from_one_pass(tmp_path, monkeypatch):
    """A reader that checks its own cell's column keeps the batch the caller asked for: two track cells
    sharing one ExpressionFile convert both columns in one pass, and each gets its own."""
    from histcli.sources.tracks import read_tracks_cell

    (tmp_path / "t.bedGraph").write_text("chr1\t0\t1000\t5\nchr1\t1000\t2000\t7\n")
    (tmp_path / "genes.bed").write_text("chr1\t500\t501\tENSG00000000001\t0\t+\nchr1\t1500\t1501\tENSG00000000003\t0\t+\n")
    (tmp_path / "m.tsv").write_text("gene_id\tA\tB\nENSG00000000001\t1\t30\nENSG00000000003\t2\t40\n")
    passes = []
    read_at_once = ExpressionFile._read_at_once
    monkeypatch.setattr(ExpressionFile, "_read_at_once", lambda self, wanted: passes.append(wanted) or
                        read_at_once(self, wanted))
    shared = ExpressionFile(tmp_path / "m.tsv")
    shared.columns(column=None, cells=["A", "B"])
    cells = [read_tracks_cell(name, tracks={"H3K4me3": tmp_path / "t.bedGraph"}, genes=tmp_path / "genes.bed",
                              expression=shared, bin_size=100, window=200) for name in ("A", "B")]
    assert [cell.expression.tolist() for cell in cells] == [[1, 2], [30, 40]]
    assert passes == [["A", "B"]]
