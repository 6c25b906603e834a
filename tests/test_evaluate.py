"""`histcli evaluate`: metrics against an independent computation, caching, transfer and checks."""

from __future__ import annotations

import csv
import io
import json
import shutil

import numpy as np
import pytest
from conftest import assert_one_line_error, copy_store, parse_tsv, run_cli
from scipy import stats

from histcli.registry import Registry
from histcli.store import SPLIT_CODES, CellData, Store


def independent_probabilities(entry, cell: CellData) -> np.ndarray:
    """The model's probabilities computed directly: log1p, forward pass, sigmoid."""
    import torch

    module = entry.build_module("cpu")
    order = [cell.marks.index(mark) for mark in entry.input.marks]
    inputs = torch.from_numpy(np.log1p(cell.counts[:, :, order].astype(np.float32)))
    with torch.no_grad():
        return torch.sigmoid(module(inputs)).numpy()


def test_metrics_match_an_independent_computation(workspace):
    result = workspace.run("evaluate", "logistic", "deepchrome", "-f", "json", "-q")
    assert result.code == 0, result.stderr
    payload = json.loads(result.stdout)
    rows = payload["rows"]
    assert [(r["cell"], r["model"]) for r in rows] == [
        (cell, model) for cell in ("sim01", "sim02", "sim03") for model in ("deepchrome", "logistic")]
    registry, store = Registry(workspace.models), Store(workspace.store)
    for row in rows:
        cell = store.load(row["cell"], splits=["test"])
        probabilities = independent_probabilities(registry.get(row["model"], row["cell"]), cell)
        labels = cell.labels
        positives, negatives = probabilities[labels == 1], probabilities[labels == 0]
        u = stats.mannwhitneyu(positives, negatives).statistic
        assert row["auc"] == pytest.approx(u / (len(positives) * len(negatives)), abs=1e-6)
        assert row["n"] == len(labels) == 300 and row["positives"] == int(labels.sum())
        assert row["accuracy"] == pytest.approx(np.mean((probabilities >= 0.5) == labels), abs=1e-9)
        # Average precision as the mean precision at each positive, ranked by score.
        order = np.argsort(-probabilities, kind="stable")
        hits = labels[order] == 1
        precision_at_hits = np.cumsum(hits)[hits] / (np.flatnonzero(hits) + 1)
        assert row["auprc"] == pytest.approx(precision_at_hits.mean(), abs=1e-4)
    summary = {s["model"]: s for s in payload["summary"]}
    for model in ("deepchrome", "logistic"):
        aucs = [r["auc"] for r in rows if r["model"] == model]
        assert summary[model]["n_cells"] == 3
        assert summary[model]["mean_auc"] == pytest.approx(np.mean(aucs))
        assert summary[model]["median_auc"] == pytest.approx(np.median(aucs))
        assert summary[model]["min_auc"] == min(aucs) and summary[model]["max_auc"] == max(aucs)
        assert summary[model]["mean_auprc"] == pytest.approx(np.mean([r["auprc"] for r in rows if r["model"] == model]))
    tsv = parse_tsv(workspace.run("evaluate", "logistic", "deepchrome", "--summary", "-f", "tsv", "-q").stdout)
    assert [(r["model"], float(r["mean_auc"])) for r in tsv] == [
        (s["model"], pytest.approx(s["mean_auc"])) for s in payload["summary"]]


def test_table_tsv_and_csv_carry_the_same_fields(workspace):
    tsv = parse_tsv(workspace.run("evaluate", "logistic", "-f", "tsv", "-q").stdout)
    rows = list(csv.DictReader(io.StringIO(workspace.run("evaluate", "logistic", "-f", "csv", "-q").stdout)))
    # Columns keep their places (scripts cut by position), a classifier's table has the regression columns too
    # (empty), so that tables of classifiers and regressors stack; task comes last.
    assert list(tsv[0]) == ["model", "cell", "trained_on", "split", "n", "positives", "auc", "auprc", "accuracy",
                            "pearson", "spearman", "r2", "rmse", "task"]
    assert {row[key] for row in tsv for key in ("pearson", "spearman", "r2", "rmse")} == {"NA"}
    assert tsv == rows
    summary = parse_tsv(workspace.run("evaluate", "logistic", "--summary", "-f", "tsv", "-q").stdout)
    assert list(summary[0]) == ["model", "n_cells", "mean_auc", "median_auc", "min_auc", "max_auc", "mean_auprc",
                                "mean_pearson", "median_pearson", "min_pearson", "max_pearson"]
    table = workspace.run("evaluate", "logistic", "-f", "table", "-q").stdout
    # The summary is its own table: one row per model, a column per statistic.
    for label in ("AUC mean", "AUC median", "AUC min", "AUC max", "AUPRC mean"):
        assert label in table
    summary = table.split("summary over cells")[1]
    summary_line = next(line for line in summary.splitlines() if line.split()[:1] == ["logistic"])
    aucs = [float(row["auc"]) for row in tsv]
    assert summary_line.split()[1:6] == ["3", f"{np.mean(aucs):.4f}", f"{np.median(aucs):.4f}", f"{min(aucs):.4f}",
                                         f"{max(aucs):.4f}"]
    assert all(row["model"] == "logistic" for row in tsv) and len(tsv) == 3


def test_predictions_are_cached_and_invalidated(workspace, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(workspace.models, models)
    store = tmp_path / "store.h5"
    copy_store(workspace.store, store)
    env = {"HISTCLI_STORE": str(store), "HISTCLI_MODELS": str(models)}
    first = json.loads(run_cli("evaluate", "logistic", "--cell", "sim01", "-f", "json", "-q", env=env).stdout)
    cache = Registry(models).get("logistic", "sim01").path / "predictions" / "sim01.test.npz"
    assert cache.is_file()
    # The cache is what evaluate reads: doctor it and the AUC follows.
    with np.load(cache) as data:
        arrays = {key: data[key] for key in data.files}
    arrays["scores"] = arrays["labels"].astype(np.float32)
    np.savez(cache, **arrays)
    doctored = json.loads(run_cli("evaluate", "logistic", "--cell", "sim01", "-f", "json", "-q", env=env).stdout)
    assert doctored["rows"][0]["auc"] == 1.0 != first["rows"][0]["auc"]
    # A changed cell: evaluation refuses, or recomputes when allowed (the cache key no longer matches).
    result = run_cli("prepare", "simulate", "--cells", 1, "--genes", 900, "--bins", 20, "--seed", 99,
                     "--overwrite", "-q", env=env)
    assert result.code == 0, result.stderr
    refused = run_cli("evaluate", "logistic", "--cell", "sim01", "-q", env=env)
    assert_one_line_error(refused, "sim01", "changed since model 'logistic' was trained", "--allow-changed-data")
    allowed = json.loads(run_cli("evaluate", "logistic", "--cell", "sim01", "--allow-changed-data", "-f", "json",
                                 "-q", env=env).stdout)
    assert allowed["rows"][0]["auc"] not in (1.0, first["rows"][0]["auc"])


def _write_cell(store_path, name, source: CellData, *, order=None, drop=None, labels=None, attrs=None):
    marks = list(source.marks)
    counts = source.counts
    if order is not None:
        counts, marks = counts[:, :, order], [marks[i] for i in order]
    if drop is not None:
        keep = [i for i, mark in enumerate(marks) if mark != drop]
        counts, marks = counts[:, :, keep], [marks[i] for i in keep]
    cell = CellData(name=name, counts=np.ascontiguousarray(counts), gene_ids=source.gene_ids, marks=tuple(marks),
                    bin_size=source.bin_size, window=source.window, tss_offset=source.tss_offset,
                    split=source.split, labels=source.labels if labels is None else labels, attrs=attrs or {})
    Store(store_path).write([cell])


def test_transfer_to_another_cell_matches_marks_by_name(workspace, tmp_path):
    store = tmp_path / "store.h5"
    copy_store(workspace.store, store)
    sim02 = Store(store).load("sim02")
    _write_cell(store, "shuffled", sim02, order=[4, 2, 0, 3, 1])
    _write_cell(store, "fourmarks", sim02, drop="H3K9me3")
    env = {"HISTCLI_STORE": str(store), "HISTCLI_MODELS": str(workspace.models)}
    onto_sim02 = json.loads(run_cli("evaluate", "logistic", "--cell", "sim01", "--on-cell", "sim02", "-f", "json",
                                    "-q", env=env).stdout)["rows"][0]
    onto_shuffled = json.loads(run_cli("evaluate", "logistic", "--cell", "sim01", "--on-cell", "shuffled", "-f",
                                       "json", "-q", env=env).stdout)["rows"][0]
    assert onto_sim02["trained_on"] == "sim01" and onto_sim02["cell"] == "sim02"
    assert onto_sim02["n"] == int((sim02.split == SPLIT_CODES["test"]).sum())
    assert onto_shuffled["auc"] == pytest.approx(onto_sim02["auc"], abs=1e-7)
    missing = run_cli("evaluate", "logistic", "--cell", "sim01", "--on-cell", "fourmarks", env=env)
    assert_one_line_error(missing, "needs mark(s) H3K9me3", "fourmarks lacks")


def test_transfer_of_an_oriented_model_to_genes_of_unknown_orientation_is_warned(workspace, tmp_path):
    store = tmp_path / "store.h5"
    copy_store(workspace.store, store)
    _write_cell(store, "unstranded", Store(store).load("sim02"),
                attrs={"source_format": "tracks", "orientation": "unknown"})
    env = {"HISTCLI_STORE": str(store), "HISTCLI_MODELS": str(workspace.models)}
    warned = run_cli("evaluate", "logistic", "--cell", "sim01", "--on-cell", "unstranded", "-f", "json", env=env)
    assert warned.code == 0, warned.stderr
    lines = [line for line in warned.stderr.splitlines() if "orientation" in line]
    assert len(lines) == 1 and "cell unstranded: the genes' orientation is unknown" in lines[0]
    assert "trained without --mirror" in lines[0]
    assert "orientation" not in run_cli("evaluate", "logistic", "--cell", "sim01", "--on-cell", "sim02", "-f",
                                        "json", env=env).stderr
    # A model that learnt both orientations suits such genes.
    models = tmp_path / "models"
    assert run_cli("train", "--cell", "sim01", "--arch", "logistic", "--epochs", 2, "--mirror", "on", "-q",
                   "--store", store, "--models", models).code == 0
    mirrored = run_cli("evaluate", "logistic", "--cell", "sim01", "--on-cell", "unstranded", "-f", "json",
                       "--store", store, "--models", models)
    assert mirrored.code == 0 and "orientation" not in mirrored.stderr, mirrored.stderr


def test_constant_labels_give_a_defined_value_and_a_warning(workspace, tmp_path):
    store = tmp_path / "store.h5"
    copy_store(workspace.store, store)
    sim03 = Store(store).load("sim03")
    _write_cell(store, "allzero", sim03, labels=np.zeros(sim03.n_genes, dtype=np.int8))
    env = {"HISTCLI_STORE": str(store), "HISTCLI_MODELS": str(workspace.models)}
    result = run_cli("evaluate", "logistic", "--cell", "sim03", "--on-cell", "allzero", "-f", "json", env=env)
    assert result.code == 0, result.stderr
    row = json.loads(result.stdout)["rows"][0]
    assert row["auc"] is None and row["auprc"] is None and row["positives"] == 0
    assert row["accuracy"] is not None
    assert "AUC and AUPRC are undefined" in result.stderr


def test_unknown_model_and_split_are_clear_errors(workspace):
    assert_one_line_error(workspace.run("evaluate", "nosuch"), "no model 'nosuch'", "deepchrome, logistic")
    assert_one_line_error(workspace.run("evaluate", "logistic", "--cell", "sim09"), "no model 'logistic' for cell 'sim09'")
    assert_one_line_error(workspace.run("evaluate", "logistic", "--split", "holdout"), "--split 'holdout'", code=2)


def test_transfer_onto_genes_the_model_was_trained_on_is_flagged(workspace):
    result = workspace.run("evaluate", "logistic", "--cell", "sim01", "--on-cell", "sim02", "--split", "train",
                           "-f", "json")
    assert result.code == 0, result.stderr
    assert "300 of the 300 genes of sim02 scored by logistic were in its training or validation genes" in result.stderr
    clean = workspace.run("evaluate", "logistic", "--cell", "sim01", "--on-cell", "sim02", "-f", "json")
    assert "training or validation genes" not in clean.stderr


def test_a_cell_named_twice_is_evaluated_once(workspace):
    once = json.loads(workspace.run("evaluate", "logistic", "--cell", "sim01", "-f", "json", "-q").stdout)
    twice = workspace.run("evaluate", "logistic", "--cell", "sim01", "--cell", "sim02", "--cell", "sim01",
                          "-f", "json", "-q")
    assert twice.code == 0, twice.stderr
    payload = json.loads(twice.stdout)
    assert [(row["model"], row["cell"]) for row in payload["rows"]] == [("logistic", "sim01"), ("logistic", "sim02")]
    assert payload["rows"][0] == once["rows"][0]
    sim02 = payload["rows"][1]["auc"]
    summary = payload["summary"][0]
    assert summary["n_cells"] == 2
    assert summary["mean_auc"] == pytest.approx((once["rows"][0]["auc"] + sim02) / 2)


def test_a_model_cell_missing_from_the_store_is_named_before_any_work(workspace, tmp_path):
    store = tmp_path / "store.h5"
    copy_store(workspace.store, store)
    assert run_cli("store", "rm", "sim02", "--store", store).code == 0
    env = {"HISTCLI_STORE": str(store), "HISTCLI_MODELS": str(workspace.models)}
    result = run_cli("evaluate", "logistic", "deepchrome", "-f", "tsv", env=env)
    assert_one_line_error(result, f"store {store} lacks the cell(s) the models were trained on",
                          "sim02 (trained on by logistic, deepchrome)", "cells in the store: sim01, sim03", "--cell")
    assert result.stdout == ""
    kept = run_cli("evaluate", "logistic", "--cell", "sim01", "--cell", "sim03", "-f", "json", "-q", env=env)
    assert kept.code == 0, kept.stderr
    full = json.loads(workspace.run("evaluate", "logistic", "-f", "json", "-q").stdout)["rows"]
    assert json.loads(kept.stdout)["rows"] == [row for row in full if row["cell"] != "sim02"]


def test_transfer_summary_says_it_runs_over_training_cells(workspace):
    table = workspace.run("evaluate", "logistic", "--on-cell", "sim02", "-f", "table", "-q").stdout
    rows = json.loads(workspace.run("evaluate", "logistic", "--on-cell", "sim02", "-f", "json", "-q").stdout)["rows"]
    assert sorted(row["trained_on"] for row in rows) == ["sim01", "sim02", "sim03"]
    assert {row["cell"] for row in rows} == {"sim02"}
    assert "classification, summary over training cells" in table
    assert "summary over cells" not in table
    own = workspace.run("evaluate", "logistic", "-f", "table", "-q").stdout
    assert "classification, summary over cells" in own
