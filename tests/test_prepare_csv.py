"""`histcli prepare deepchrome|deepdiff|simulate`: real files, exact values and bad input."""

from __future__ import annotations

import gzip
import shutil
import statistics
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, file_digest, parse_tsv, run_cli, shared_data

from histcli.store import SPLIT_CODES, Store


def test_deepchrome_toy_values_match_the_csv(tmp_path):
    toy = shared_data("deepchrome-toy")
    store = tmp_path / "s.h5"
    result = run_cli("prepare", "deepchrome", toy, "--cell", "toy", "--store", store, "--format", "tsv")
    assert result.code == 0, result.stderr
    (row,) = parse_tsv(result.stdout)
    assert row == {"cell": "toy", "genes": "30", "train": "10", "valid": "10", "test": "10", "unsplit": "0",
                   "bins": "100", "bin_size": "100", "marks": "H3K27me3,H3K36me3,H3K4me1,H3K4me3,H3K9me3",
                   "positive_fraction": row["positive_fraction"]}
    cell = Store(store).load("toy")
    # Independent reading of the CSV with the standard library.
    rows = [line.split(",") for line in (toy / "test.csv").read_text().splitlines()]
    first_gene = rows[0][0]
    gene_rows = [r for r in rows if r[0] == first_gene]
    expected = np.array([[int(v) for v in r[2:7]] for r in sorted(gene_rows, key=lambda r: int(r[1]))])
    index = list(cell.gene_ids).index(first_gene)
    np.testing.assert_array_equal(cell.counts[index], expected)
    assert cell.labels[index] == int(gene_rows[0][7])
    assert cell.split[index] == SPLIT_CODES["test"]
    labels = {r[0]: int(r[7]) for split in ("train", "valid", "test")
              for r in (line.split(",") for line in (toy / f"{split}.csv").read_text().splitlines())}
    assert float(row["positive_fraction"]) == pytest.approx(sum(labels.values()) / len(labels))
    assert cell.counts.dtype == np.int32
    summary = Store(store).summary("toy")
    assert [s["sha256"] for s in summary.sources] == [file_digest(toy / f"{s}.csv") for s in ("train", "valid", "test")]


def _cells_folder(tmp_path: Path, names) -> Path:
    toy = shared_data("deepchrome-toy")
    root = tmp_path / "cells"
    for name in names:
        folder = root / name / "classification"
        folder.mkdir(parents=True)
        for split in ("train", "valid", "test"):
            shutil.copy(toy / f"{split}.csv", folder / f"{split}.csv")
    return root


def test_deepchrome_folder_of_cells_prepares_all_or_chosen(tmp_path):
    root = _cells_folder(tmp_path, ["E003", "E004", "E005"])
    store = tmp_path / "s.h5"
    result = run_cli("prepare", "deepchrome", root, "--cell", "E005", "--cell", "E003", "--store", store)
    assert result.code == 0, result.stderr
    assert Store(store).cell_names() == ["E003", "E005"]
    result = run_cli("prepare", "deepchrome", root, "--store", store)
    assert_one_line_error(result, "E003", "--overwrite")
    result = run_cli("prepare", "deepchrome", root, "--store", store, "--overwrite", "-f", "json")
    assert result.code == 0, result.stderr
    assert Store(store).cell_names() == ["E003", "E004", "E005"]
    assert "preparing" not in result.stderr  # no progress bar in a log
    result = run_cli("prepare", "deepchrome", root, "--cell", "E999", "--store", store)
    assert_one_line_error(result, "E999", "E003, E004, E005", code=2)


def test_gzip_split_files_are_read(tmp_path):
    toy = shared_data("deepchrome-toy")
    folder = tmp_path / "gz"
    folder.mkdir()
    for split in ("train", "valid", "test"):
        (folder / f"{split}.csv.gz").write_bytes(gzip.compress((toy / f"{split}.csv").read_bytes()))
    result = run_cli("prepare", "deepchrome", folder, "--cell", "toy", "--store", tmp_path / "s.h5")
    assert result.code == 0, result.stderr
    assert Store(tmp_path / "s.h5").load("toy").n_genes == 30


def test_deepdiff_cell1_labels_follow_the_median_of_the_expression_file(tmp_path):
    data = shared_data("deepdiff-cell1")
    store = tmp_path / "s.h5"
    result = run_cli("prepare", "deepdiff", data, "--cell", "Cell1", "--name", "E123", "--store", store)
    assert result.code == 0, result.stderr
    cell = Store(store).load("E123")
    assert cell.counts.shape == (600, 200, 5)
    assert cell.marks == ("H3K4me1", "H3K4me3", "H3K9me3", "H3K27me3", "H3K36me3")
    expression = {}
    for line in (data / "Cell1.expr.csv").read_text().splitlines():
        gene, value = line.split(",")
        expression[gene] = float(value)
    median = statistics.median(expression.values())
    assert cell.attrs["label_threshold"] == pytest.approx(median)
    for gene, label, value in zip(cell.gene_ids, cell.labels, cell.expression, strict=True):
        ensg = gene.split("_")[0]
        assert value == expression[ensg]
        assert label == int(expression[ensg] > median)
    # First row of the train file: ENSG00000130749_ZC3H4_1,1,1,0,1,0 in H3K4me1..H3K36me3 order.
    first = (data / "Cell1.train.csv").read_text().split("\n", 1)[0].split(",")
    index = list(cell.gene_ids).index(first[0].rsplit("_", 1)[0])
    np.testing.assert_array_equal(cell.counts[index, 0], [int(v) for v in first[1:]])
    assert (cell.split == SPLIT_CODES["train"]).sum() == 200


def test_deepdiff_missing_expression_needs_drop_missing(tmp_path):
    data = shared_data("deepdiff-cell1")
    folder = tmp_path / "dd"
    folder.mkdir()
    for split in ("train", "valid", "test"):
        shutil.copy(data / f"Cell1.{split}.csv", folder)
    lines = (data / "Cell1.expr.csv").read_text().splitlines()
    in_cell = {line.split("_")[0] for line in (data / "Cell1.test.csv").read_text().splitlines()[::200]}
    removed = sorted(in_cell)[:3]
    (folder / "Cell1.expr.csv").write_text("\n".join(line for line in lines if line.split(",")[0] not in removed) + "\n")
    store = tmp_path / "s.h5"
    result = run_cli("prepare", "deepdiff", folder, "--cell", "Cell1", "--store", store)
    assert_one_line_error(result, "Cell1.expr.csv", "no expression value for 3 of 600 genes", "--drop-missing")
    assert not store.exists()
    result = run_cli("prepare", "deepdiff", folder, "--cell", "Cell1", "--store", store, "--drop-missing")
    assert result.code == 0, result.stderr
    assert "3 of 600 genes" in result.stderr
    assert Store(store).load("Cell1").n_genes == 597


def test_simulated_cells_are_learnable_and_differ(tmp_path):
    store = tmp_path / "s.h5"
    result = run_cli("prepare", "simulate", "--cells", 2, "--genes", 3000, "--bins", 40, "--seed", 3,
                     "--store", store, "-f", "json")
    assert result.code == 0, result.stderr
    from histcli.metrics import roc_auc

    cells = [Store(store).load(name) for name in ("sim01", "sim02")]
    for cell in cells:
        assert cell.counts.shape == (3000, 40, 5)
        assert cell.marks == ("H3K4me3", "H3K4me1", "H3K36me3", "H3K9me3", "H3K27me3")
        features = np.log1p(cell.counts).mean(axis=1)
        aucs = {mark: roc_auc(cell.labels, features[:, i]) for i, mark in enumerate(cell.marks)}
        assert aucs["H3K4me3"] > 0.65 and aucs["H3K36me3"] > 0.65  # rise with expression
        assert aucs["H3K27me3"] < 0.35 and aucs["H3K9me3"] < 0.45  # fall with expression
        counts = cell.counts[:, :, 0].astype(float)
        assert counts.var() > 3 * counts.mean()  # overdispersed, unlike Poisson
        assert cell.labels.mean() == pytest.approx(0.5, abs=0.01)
        assert sorted(np.bincount(cell.split)[1:]) == [1000, 1000, 1000]
    assert not np.array_equal(cells[0].counts, cells[1].counts)
    assert cells[0].counts[:, :, 0].mean() != pytest.approx(cells[1].counts[:, :, 0].mean(), rel=0.05)
    # Same seed, same data.
    again = tmp_path / "again.h5"
    run_cli("prepare", "simulate", "--cells", 1, "--genes", 3000, "--bins", 40, "--seed", 3, "--store", again)
    np.testing.assert_array_equal(Store(again).load("sim01").counts, cells[0].counts)


# Bad input ------------------------------------------------------------------


def _gene_rows(gene: str, n_bins: int = 4, label: int = 1, start: int = 0) -> list[str]:
    return [f"{gene},{b},{start + b},1,2,3,4,{label}" for b in range(1, n_bins + 1)]


def _write_layout(folder: Path, splits: dict[str, list[str]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        (folder / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return folder


def _valid_splits() -> dict[str, list[str]]:
    return {
        "train": _gene_rows("g1") + _gene_rows("g2", label=0),
        "valid": _gene_rows("g3") + _gene_rows("g4", label=0),
        "test": _gene_rows("g5") + _gene_rows("g6", label=0),
    }


@pytest.fixture
def existing_store(tmp_path):
    """A store holding one cell; bad input must leave it byte-for-byte unchanged."""
    store = tmp_path / "s.h5"
    result = run_cli("prepare", "deepchrome", _write_layout(tmp_path / "good", _valid_splits()),
                     "--cell", "good", "--store", store)
    assert result.code == 0, result.stderr
    return store


BAD_CASES = {
    "wrong column count": (lambda s: s["train"].__setitem__(2, "g1,3,3,1,2,3,4"), "train.csv", "line 3",
                           "expected 8 comma-separated fields", "found 7"),
    "non-numeric value": (lambda s: s["valid"].__setitem__(1, "g3,2,x,1,2,3,4,1"), "valid.csv", "line 2",
                          "H3K27me3", "'x' is not a number"),
    "NaN value": (lambda s: s["test"].__setitem__(5, "g6,2,nan,1,2,3,4,0"), "test.csv", "line 6", "NaN"),
    "negative value": (lambda s: s["train"].__setitem__(4, "g2,1,1,1,-2,3,4,0"), "train.csv", "line 5",
                       "H3K4me1", "negative"),
    "missing bin": (lambda s: s["train"].pop(2), "train.csv", "gene g1", "bin 3 is missing"),
    "duplicated bin": (lambda s: s["train"].__setitem__(2, "g1,2,3,1,2,3,4,1"), "train.csv", "gene g1",
                       "bin 2 appears twice"),
    "label changes within a gene": (lambda s: s["valid"].__setitem__(2, "g3,3,3,1,2,3,4,0"), "valid.csv",
                                    "line 3", "label changes within the gene"),
    "duplicate gene within a split": (lambda s: s["train"].extend(_gene_rows("g1")), "train.csv", "line 9",
                                      "gene g1 appears again", "line 1"),
    "duplicate gene across splits": (lambda s: s["test"].extend(_gene_rows("g2", label=0)), "test.csv",
                                     "line 9", "gene g2 appears again", "train.csv line 5"),
    "bin count differs between splits": (lambda s: s.__setitem__("test", _gene_rows("g5", 3) + _gene_rows("g6", 3)),
                                         "test.csv", "3 bins here but 4"),
    "bin out of range": (lambda s: s["train"].__setitem__(3, "g1,9,3,1,2,3,4,1"), "train.csv", "bin 9 is outside"),
    "label not 0/1": (lambda s: s["train"].__setitem__(0, "g1,1,3,1,2,3,4,2"), "train.csv", "line 1",
                      "label '2' is not 0 or 1"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_deepchrome_input_is_one_line_error_and_store_unchanged(tmp_path, existing_store, case):
    breaker, *fragments = BAD_CASES[case]
    splits = _valid_splits()
    breaker(splits)
    folder = _write_layout(tmp_path / "bad", splits)
    digest = file_digest(existing_store)
    result = run_cli("prepare", "deepchrome", folder, "--cell", "bad", "--store", existing_store)
    assert_one_line_error(result, str(folder), *fragments)
    assert file_digest(existing_store) == digest


def test_unknown_mark_name_is_refused(tmp_path, existing_store):
    folder = _write_layout(tmp_path / "bad", _valid_splits())
    digest = file_digest(existing_store)
    result = run_cli("prepare", "deepchrome", folder, "--cell", "bad", "--store", existing_store,
                     "--marks", "H3K27me3,H3K36me3,H3K4me1,H3K4me3,H3K99xx")
    assert_one_line_error(result, "--marks", "'H3K99xx' is not a histone mark name", code=2)
    assert file_digest(existing_store) == digest


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_empty_or_truncated_gzip_is_refused(tmp_path, existing_store, damage):
    folder = _write_layout(tmp_path / "bad", _valid_splits())
    data = gzip.compress(((folder / "train.csv").read_text() * 2000).encode())
    (folder / "train.csv").unlink()
    target = folder / "train.csv.gz"
    target.write_bytes(b"" if damage == "empty" else data[: len(data) // 2])
    digest = file_digest(existing_store)
    result = run_cli("prepare", "deepchrome", folder, "--cell", "bad", "--store", existing_store)
    expected = "empty file" if damage == "empty" else "truncated or corrupt gzip"
    assert_one_line_error(result, str(target), expected)
    assert file_digest(existing_store) == digest


@pytest.mark.parametrize("name", ["a/b", "../up", "E 003", "-dash"])
def test_unsafe_cell_name_is_refused(tmp_path, existing_store, name):
    folder = _write_layout(tmp_path / "bad", _valid_splits())
    digest = file_digest(existing_store)
    result = run_cli("prepare", "deepchrome", folder, "--cell", name, "--store", existing_store)
    assert_one_line_error(result, repr(name), "not allowed", code=2)
    assert file_digest(existing_store) == digest


def test_reprepare_needs_overwrite(tmp_path, existing_store):
    folder = _write_layout(tmp_path / "good2", _valid_splits())
    digest = file_digest(existing_store)
    result = run_cli("prepare", "deepchrome", folder, "--cell", "good", "--store", existing_store)
    assert_one_line_error(result, "'good' already exists", "--overwrite")
    assert file_digest(existing_store) == digest
