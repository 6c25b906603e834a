"""`--task regression`: training, evaluate, compare and predict on expression levels.

Expected values are computed independently from what the commands print:
scipy's correlations, numpy's formulas, and the stored expression values.
"""

from __future__ import annotations

import collections
import json
import re
import shutil

import numpy as np
import pytest
from conftest import Workspace, assert_one_line_error, assert_plot_covers_every_pair, copy_store, parse_tsv, run_cli, shared_data
from scipy import stats

from histcli.errors import ModelTaskError
from histcli.registry import Registry
from histcli.store import SPLIT_CODES, CellData, Store
from histcli.tasks import Regression, make_task

TRAIN = ("--threads", "1", "--device", "cpu", "-q")


@pytest.fixture(scope="module")
def reg(tmp_path_factory) -> Workspace:
    """Two simulated cells (600 genes x 16 bins); logistic and deepchrome regressors, a logistic classifier."""
    folder = tmp_path_factory.mktemp("regression")
    ws = Workspace(folder, folder / "store.h5", folder / "models")
    assert ws.run("prepare", "simulate", "--cells", 2, "--genes", 600, "--bins", 16, "--seed", 5, "-q").code == 0
    # The linear model is not refit, so that its weights are those selected on the validation genes.
    for arch, epochs, refit in (("logistic", 40, "--no-refit"), ("deepchrome", 15, "--refit")):
        result = ws.run("train", "--all-cells", "--arch", arch, "--task", "regression", "--name", f"{arch}-reg",
                        "--epochs", epochs, "-f", "tsv", refit, *TRAIN)
        assert result.code == 0, result.stderr
        assert "valid_pearson" in result.stdout.splitlines()[0]
    assert ws.run("train", "--all-cells", "--arch", "logistic", "--epochs", 5, *TRAIN).code == 0
    return ws


def _predicted(ws, name, cell, split="test") -> list[dict]:
    result = ws.run("predict", name, "--cell", cell, "--from-store", cell, "--split", split, "-q")
    assert result.code == 0, result.stderr
    return parse_tsv(result.stdout)


def _measured(ws, cell, split="test"):
    data = Store(ws.store).load(cell, splits=[split])
    return np.log1p(data.expression), data.labels


def test_entry_records_the_task_and_selects_on_validation_pearson(reg):
    entry = Registry(reg.models).get("logistic-reg", "sim01")
    train = Store(reg.store).load("sim01", splits=["train"])
    targets = np.log1p(train.expression)
    assert entry.config["task"]["name"] == "regression"
    assert entry.config["task"]["target"] == "log1p"
    assert entry.config["task"]["target_mean"] == pytest.approx(targets.mean(), rel=1e-6)
    assert entry.config["task"]["target_scale"] == pytest.approx(targets.std(), rel=1e-6)
    assert entry.config["training"]["loss"] == "mean squared error"
    metadata = entry.metadata
    assert metadata["selection_metric"] == "pearson" and "best_valid_auc" not in metadata
    history = [h["valid_pearson"] for h in metadata["history"]]
    assert metadata["best_valid_pearson"] == max(history) == history[metadata["best_epoch"] - 1]
    # The selected weights give that Pearson r on the validation genes, computed by scipy from predict's output.
    rows = _predicted(reg, "logistic-reg", "sim01", "valid")
    measured, _ = _measured(reg, "sim01", "valid")
    r = stats.pearsonr(measured, [float(row["log_expression"]) for row in rows])[0]
    assert r == pytest.approx(metadata["best_valid_pearson"], abs=1e-5)
    listed = parse_tsv(reg.run("models", "list", "--name", "logistic-reg", "-f", "tsv").stdout)
    assert {row["task"] for row in listed} == {"regression"} and {row["valid_auc"] for row in listed} == {"NA"}


def test_predict_writes_the_level_and_rpkm(reg):
    rows = _predicted(reg, "deepchrome-reg", "sim02")
    assert list(rows[0]) == ["gene_id", "log_expression", "expression"]
    levels = np.array([float(row["log_expression"]) for row in rows])
    expression = np.array([float(row["expression"]) for row in rows])
    np.testing.assert_allclose(expression, np.maximum(np.expm1(levels), 0), rtol=1e-7, atol=1e-7)
    as_json = json.loads(reg.run("predict", "deepchrome-reg", "--cell", "sim02", "--from-store", "sim02",
                                 "--format", "json", "-q").stdout)
    assert [item["gene_id"] for item in as_json] == [row["gene_id"] for row in rows]
    np.testing.assert_allclose([item["log_expression"] for item in as_json], levels, rtol=1e-7)


def test_evaluate_reports_correlations_errors_and_auc_against_scipy(reg):
    result = reg.run("evaluate", "logistic-reg", "logistic", "-f", "json", "-q")
    assert result.code == 0, result.stderr
    payload = json.loads(result.stdout)
    rows = {(r["model"], r["cell"]): r for r in payload["rows"]}
    summary = {s["model"]: s for s in payload["summary"]}
    pearsons = [rows[("logistic-reg", cell)]["pearson"] for cell in ("sim01", "sim02")]
    assert summary["logistic-reg"]["mean_pearson"] == pytest.approx(np.mean(pearsons))
    assert summary["logistic-reg"]["max_pearson"] == max(pearsons)
    assert summary["logistic"]["mean_pearson"] is None and summary["logistic"]["mean_auc"] is not None
    for cell in ("sim01", "sim02"):
        measured, labels = _measured(reg, cell)
        predicted = np.array([float(row["log_expression"]) for row in _predicted(reg, "logistic-reg", cell)])
        row = rows[("logistic-reg", cell)]
        assert row["task"] == "regression" and row["n"] == len(measured)
        assert row["pearson"] == pytest.approx(stats.pearsonr(measured, predicted)[0], abs=1e-6)
        assert row["spearman"] == pytest.approx(stats.spearmanr(measured, predicted)[0], abs=1e-6)
        residual = measured - predicted
        assert row["r2"] == pytest.approx(1 - residual @ residual / ((measured - measured.mean()) ** 2).sum(), abs=1e-5)
        assert row["rmse"] == pytest.approx(np.sqrt(np.mean(residual**2)), rel=1e-5)
        # AUC of the predicted level against the high/low labels, by the Mann-Whitney U statistic.
        u = stats.mannwhitneyu(predicted[labels == 1], predicted[labels == 0]).statistic
        assert row["auc"] == pytest.approx(u / (labels.sum() * (len(labels) - labels.sum())), abs=1e-9)
        # The classifier in the same table: AUC, no correlations.
        classifier = rows[("logistic", cell)]
        assert classifier["task"] == "classification" and classifier["pearson"] is None
        assert classifier["auc"] is not None


def test_evaluate_summary_columns_keep_their_places_whatever_the_order_of_models(reg):
    """`evaluate --summary -f tsv` is cut by position: AUC's statistics come first (like the per-cell
    metrics), whichever model is named first; a classifier alone gives the same header."""
    expected = ["model", "n_cells", "mean_auc", "median_auc", "min_auc", "max_auc", "mean_auprc",
                "mean_pearson", "median_pearson", "min_pearson", "max_pearson"]
    for names in (("logistic-reg", "logistic"), ("logistic", "logistic-reg")):
        result = reg.run("evaluate", *names, "--summary", "-f", "tsv", "-q")
        assert result.code == 0, result.stderr
        assert result.stdout.splitlines()[0].split("\t") == expected, names
    alone = reg.run("evaluate", "logistic", "--summary", "-f", "tsv", "-q").stdout.splitlines()[0].split("\t")
    assert alone == expected
    # The per-cell rows too: a regressor's table and a classifier's have one header, so that they stack.
    headers = {reg.run("evaluate", name, "-f", "tsv", "-q").stdout.splitlines()[0] for name in ("logistic-reg", "logistic")}
    assert len(headers) == 1 and headers.pop().split("\t")[6:] == ["auc", "auprc", "accuracy", "pearson", "spearman",
                                                                   "r2", "rmse", "task"]


def test_compare_two_regressors_by_steiger_and_zou(reg):
    from histcli.stats import compare_dependent_correlations

    result = reg.run("compare", "logistic-reg", "deepchrome-reg", "-f", "json", "-q")
    assert result.code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["metric"] == "pearson"  # the default when every model is a regressor
    evaluated = {(r["model"], r["cell"]): r for r in json.loads(
        reg.run("evaluate", "logistic-reg", "deepchrome-reg", "-f", "json", "-q").stdout)["rows"]}
    for row in payload["cells"]:
        cell = row["cell"]
        measured, _ = _measured(reg, cell)
        a = [float(r["log_expression"]) for r in _predicted(reg, "logistic-reg", cell)]
        b = [float(r["log_expression"]) for r in _predicted(reg, "deepchrome-reg", cell)]
        expected = compare_dependent_correlations(measured, a, b)
        assert row["pearson_logistic-reg"] == pytest.approx(evaluated[("logistic-reg", cell)]["pearson"], abs=1e-9)
        assert row["delta_pearson"] == pytest.approx(expected.difference, abs=1e-6)
        assert row["steiger_p"] == pytest.approx(expected.p, rel=1e-4, abs=1e-9)
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((expected.ci_low, expected.ci_high), abs=1e-6)
    tsv = parse_tsv(reg.run("compare", "logistic-reg", "deepchrome-reg", "--metric", "spearman", "-f", "tsv",
                            "-q").stdout)
    assert {"spearman_a", "spearman_b", "delta_spearman", "steiger_p"} <= set(tsv[0])
    # A regressor and a classifier rank together on AUC only.
    mixed = reg.run("compare", "logistic-reg", "logistic", "-f", "json", "-q")
    assert mixed.code == 0 and json.loads(mixed.stdout)["metric"] == "auc"
    refused = reg.run("compare", "logistic-reg", "logistic", "--metric", "pearson", "-q")
    assert_one_line_error(refused, "--metric 'pearson'", "logistic is a classifier", code=2)


def test_compare_plot_draws_the_correlations_and_one_cells_levels(reg):
    pytest.importorskip("matplotlib")
    svg = reg.folder / "levels.svg"
    result = reg.run("compare", "logistic-reg", "deepchrome-reg", "--plot", svg, "--plot-cell", "sim02", "-f", "tsv",
                     "-q")
    assert result.code == 0, result.stderr
    # matplotlib draws each point of a scatter as a <use> of the scatter's marker: one marker drawn twice
    # on the left (the two cells), and one per model drawn once per test gene of sim02 on the right.
    uses = collections.Counter(re.findall(r'<use xlink:href="#(m[0-9a-f]+)"', svg.read_text()))
    n_genes = len(_measured(reg, "sim02")[0])
    assert list(uses.values()).count(n_genes) == 2 and 2 in uses.values()
    wrong = reg.run("compare", "logistic-reg", "deepchrome-reg", "--plot", reg.folder / "x.png", "--plot-cell",
                    "nope", "-f", "tsv", "-q")
    assert_one_line_error(wrong, "--plot-cell 'nope'", "not among the compared cells (sim01, sim02)", code=2)
    assert wrong.stdout == "" and not (reg.folder / "x.png").exists()  # refused before any work


def test_compare_plot_draws_every_pair_of_three_regressors(reg, tmp_path):
    pytest.importorskip("matplotlib")
    models = tmp_path / "models"
    shutil.copytree(reg.models, models)
    for cell in ("sim01", "sim02"):  # a third regressor: deepchrome-reg's entries under another name
        twin = models / "twin" / cell
        shutil.copytree(models / "deepchrome-reg" / cell, twin)
        config = json.loads((twin / "config.json").read_text())
        config["name"] = "twin"
        (twin / "config.json").write_text(json.dumps(config))
    env = {"HISTCLI_STORE": str(reg.store), "HISTCLI_MODELS": str(models)}
    svg = tmp_path / "levels.svg"
    result = run_cli("compare", "logistic-reg", "deepchrome-reg", "twin", "--plot", svg, "--plot-cell", "sim02",
                     "-f", "json", "-q", env=env)
    assert result.code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert [(p["model_a"], p["model_b"]) for p in payload["pairs"]] == [
        ("logistic-reg", "deepchrome-reg"), ("logistic-reg", "twin"), ("deepchrome-reg", "twin")]
    assert_plot_covers_every_pair(svg, payload, cell="sim02", genes=len(_measured(reg, "sim02")[0]))


def test_regression_ensemble_predicts_the_mean_of_its_members(reg):
    for name, seeds in (("ens", ("--seeds", "0-1")), ("m0", ("--seed", "0")), ("m1", ("--seed", "1"))):
        result = reg.run("train", "--cell", "sim01", "--arch", "logistic", "--task", "regression", "--name", name,
                         "--epochs", 8, *seeds, *TRAIN)
        assert result.code == 0, result.stderr
    ensemble = np.array([float(r["log_expression"]) for r in _predicted(reg, "ens", "sim01")])
    members = [np.array([float(r["log_expression"]) for r in _predicted(reg, name, "sim01")]) for name in ("m0", "m1")]
    assert not np.allclose(members[0], members[1])
    np.testing.assert_allclose(ensemble, np.mean(members, axis=0), atol=1e-5)


def _linear_cell(n_genes=900, n_bins=5, seed=3) -> CellData:
    """log2(RPKM + 1) is a fixed linear function of log1p(counts) plus small noise."""
    rng = np.random.default_rng(seed)
    counts = rng.poisson(rng.gamma(2.0, 3.0, size=(n_genes, n_bins, 3))).astype(np.int32)
    weights = rng.normal(0, 1, size=(n_bins, 3))
    level = np.einsum("gbm,bm->g", np.log1p(counts), weights)
    level = level - level.min() + 0.5
    expression = np.exp2(level + rng.normal(0, 0.1 * level.std(), n_genes)) - 1
    return CellData(name="linear", counts=counts, gene_ids=np.array([f"G{i}" for i in range(n_genes)], dtype=object),
                    marks=("H3K4me3", "H3K36me3", "H3K27me3"), bin_size=100, window=250, tss_offset=250,
                    split=np.array([SPLIT_CODES[("train", "valid", "test")[i % 3]] for i in range(n_genes)],
                                   dtype=np.uint8),
                    expression=expression, labels=(expression > np.median(expression)).astype(np.int8))


def test_a_linear_model_recovers_a_known_linear_signal(tmp_path):
    Store(tmp_path / "s.h5").write([_linear_cell()])
    env = {"HISTCLI_STORE": str(tmp_path / "s.h5"), "HISTCLI_MODELS": str(tmp_path / "models")}
    result = run_cli("train", "--cell", "linear", "--arch", "logistic", "--task", "regression", "--target", "log2p1",
                     "--lr", "0.01", *TRAIN, env=env)
    assert result.code == 0, result.stderr
    row = json.loads(run_cli("evaluate", "logistic", "-f", "json", "-q", env=env).stdout)["rows"][0]
    assert row["pearson"] > 0.9
    predicted = parse_tsv(run_cli("predict", "logistic", "--cell", "linear", "--from-store", "linear", "-q",
                                  env=env).stdout)
    levels = np.array([float(r["log_expression"]) for r in predicted])
    np.testing.assert_allclose([float(r["expression"]) for r in predicted], np.maximum(np.exp2(levels) - 1, 0),
                               rtol=1e-6, atol=1e-6)
    measured = np.log2(Store(tmp_path / "s.h5").load("linear", splits=["test"]).expression + 1)
    assert stats.pearsonr(measured, levels)[0] == pytest.approx(row["pearson"], abs=1e-6)


def test_a_cell_without_expression_is_refused_by_name(tmp_path):
    env = {"HISTCLI_STORE": str(tmp_path / "s.h5"), "HISTCLI_MODELS": str(tmp_path / "models")}
    assert run_cli("prepare", "deepchrome", shared_data("deepchrome-toy"), "--cell", "toy", "-q", env=env).code == 0
    result = run_cli("train", "--cell", "toy", "--arch", "logistic", "--task", "regression", *TRAIN, env=env)
    assert_one_line_error(result, "cell toy has no expression values")
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").rglob("config.json"))
    usage = run_cli("train", "--cell", "toy", "--arch", "logistic", "--target", "log2p1", *TRAIN, env=env)
    assert_one_line_error(usage, "--task and --target cannot be combined", code=2)


def test_regression_scaling_round_trips():
    """Models learn standardised targets; scores() maps outputs back to the target scale."""
    targets = np.array([0.0, 1.0, 2.5, 7.0], dtype=np.float32)
    task = Regression("log1p").fitted(targets)
    assert task.mean == pytest.approx(2.625) and task.scale == pytest.approx(np.std(targets))
    np.testing.assert_allclose(task.scores(task.training_targets(targets)), targets, rtol=1e-6, atol=1e-6)
    assert task.prediction_values(np.array([np.log1p(3.0)]), 0.5)["expression"] == pytest.approx([3.0])
    assert make_task("regression").target == "log1p"



def test_changed_expression_is_noticed_although_the_fingerprint_is_the_same(reg, tmp_path):
    """Regression entries record a digest of the expression they learnt; the cell's fingerprint ignores it."""
    import dataclasses
    import shutil

    store, models = tmp_path / "store.h5", tmp_path / "models"
    copy_store(reg.store, store)
    shutil.copytree(reg.models, models)
    cell = Store(store).load("sim01")
    changed = dataclasses.replace(cell, expression=cell.expression * 2 + 1)  # same genes, counts and labels
    Store(store).write([changed], overwrite=True)
    assert Store(store).fingerprint("sim01") == Store(reg.store).fingerprint("sim01")
    env = {"HISTCLI_STORE": str(store), "HISTCLI_MODELS": str(models)}
    refused = run_cli("evaluate", "logistic-reg", "--cell", "sim01", "-q", env=env)
    assert_one_line_error(refused, "cell sim01", "expression values", "--allow-changed-data")
    allowed = run_cli("evaluate", "logistic-reg", "--cell", "sim01", "--allow-changed-data", "-f", "json", "-q",
                      env=env)
    row = json.loads(allowed.stdout)["rows"][0]
    predicted = [float(r["log_expression"]) for r in _predicted(reg, "logistic-reg", "sim01")]
    measured = np.log1p(Store(store).load("sim01", splits=["test"]).expression)
    assert row["pearson"] == pytest.approx(stats.pearsonr(measured, predicted)[0], abs=1e-6)
    # The classifier on the same cell is unaffected: labels, counts and genes are unchanged.
    assert run_cli("evaluate", "logistic", "--cell", "sim01", "-q", env=env).code == 0


def test_threshold_is_refused_for_regression_models_only(reg):
    for command in (("predict", "logistic-reg", "--cell", "sim01", "--from-store", "sim01"),
                    ("evaluate", "logistic-reg", "deepchrome-reg")):
        result = reg.run(*command, "--threshold", "0.3")
        assert_one_line_error(result, "--threshold applies to classifiers", "regression model", code=2)
        assert result.stdout == ""
    # With a classifier among the models it applies to the classifier: accuracy at 0.3 from its probabilities.
    mixed = reg.run("evaluate", "logistic-reg", "logistic", "--cell", "sim01", "--threshold", "0.3", "-f", "json", "-q")
    assert mixed.code == 0, mixed.stderr
    rows = {row["model"]: row for row in json.loads(mixed.stdout)["rows"]}
    predicted = _predicted(reg, "logistic", "sim01")
    probability = np.array([float(row["probability"]) for row in predicted])
    labels = _measured(reg, "sim01")[1]
    assert rows["logistic"]["accuracy"] == pytest.approx(np.mean((probability >= 0.3) == labels), abs=1e-9)
    assert rows["logistic-reg"]["accuracy"] is None


def test_one_model_name_holds_one_task(reg, tmp_path):
    """A regressor saved under a name whose other cells hold classifiers (the default name is the architecture)
    made compare pick Pearson r and call the classifier's cell one 'without expression', and evaluate's summary
    average both tasks' AUCs. train refuses it, naming the cells, and writes nothing; replacing the model's only
    entry by the other task is still a replacement."""
    ws = Workspace(tmp_path, reg.store, tmp_path / "models")
    shutil.copytree(reg.models / "logistic" / "sim02", ws.models / "logistic" / "sim02")  # a classifier
    refused = ws.run("train", "--cell", "sim01", "--arch", "logistic", "--task", "regression", "--epochs", 2, *TRAIN)
    assert_one_line_error(refused, "model 'logistic' holds classification entries (cells sim02); a regression "
                                   "entry for cell 'sim01' needs another model name", code=1)
    assert Registry(ws.models).cells("logistic") == ["sim02"]
    # The registry's save checks it too, under the model's lock (what parallel trainings of two cells meet).
    regressor = Registry(reg.models).get("logistic-reg", "sim01")
    with pytest.raises(ModelTaskError, match="holds classification entries"):
        Registry(ws.models).save("logistic", "sim01", regressor.load_state(), regressor.config, regressor.metadata,
                                 overwrite=False)
    assert Registry(ws.models).cells("logistic") == ["sim02"]
    # Unless the same run (a sweep, a train of both cells) is about to replace sim02's entry too.
    Registry(tmp_path / "copy").save("logistic", "sim02", *_entry_parts(Registry(ws.models).get("logistic", "sim02")),
                                     overwrite=False)
    Registry(tmp_path / "copy").save("logistic", "sim01", *_entry_parts(regressor), overwrite=False,
                                     run_cells=["sim02"])
    assert [entry.task.name for entry in Registry(tmp_path / "copy").entries("logistic")] == \
        ["regression", "classification"]
    replaced = ws.run("train", "--cell", "sim02", "--arch", "logistic", "--task", "regression", "--epochs", 2,
                      "--overwrite", *TRAIN)
    assert replaced.code == 0, replaced.stderr
    assert Registry(ws.models).get("logistic", "sim02").task.name == "regression"
    # One run replacing every cell's entry by the other task: each save counts the run's other cells as replaced.
    assert ws.run("train", "--cell", "sim01", "--arch", "logistic", "--task", "regression", "--epochs", 2,
                  *TRAIN).code == 0
    back = ws.run("train", "--cell", "sim01", "--cell", "sim02", "--arch", "logistic", "--epochs", 2, "--overwrite",
                  *TRAIN)
    assert back.code == 0, back.stderr
    assert [entry.task.name for entry in Registry(ws.models).entries("logistic")] == ["classification"] * 2


def _entry_parts(entry):
    return entry.load_state(), entry.config, entry.metadata


def test_a_model_of_two_tasks_from_an_older_registry_is_named_by_evaluate_compare_and_report(reg, tmp_path):
    ws = Workspace(tmp_path, reg.store, tmp_path / "models")
    for model, cell in (("logistic", "sim02"), ("logistic-reg", "sim01")):  # as trained under one name
        shutil.copytree(reg.models / model / cell, ws.models / "mixed" / cell)
        config = ws.models / "mixed" / cell / "config.json"
        config.write_text(json.dumps({**json.loads(config.read_text()), "name": "mixed"}))
    shutil.copytree(reg.models / "logistic-reg", ws.models / "logistic-reg")
    message = ("model 'mixed' holds regression entries (cells sim01) and classification entries (cells sim02); "
               "one model name is one task")
    for command in (("evaluate", "mixed"), ("compare", "logistic-reg", "mixed"),
                    ("report", "logistic-reg", "mixed", "-o", str(tmp_path / "r.html"))):
        result = ws.run(*command, "-q")
        assert_one_line_error(result, message, code=1)
        assert result.stdout == ""
    assert not (tmp_path / "r.html").exists()
    # One task's cells alone are one task.
    alone = ws.run("evaluate", "mixed", "--cell", "sim01", "-f", "json", "-q")
    assert alone.code == 0, alone.stderr
    assert json.loads(alone.stdout)["rows"][0]["task"] == "regression"


def test_a_model_folder_copied_within_the_registry_goes_by_its_folder_name(reg, tmp_path):
    """Its config.json keeps the name it was trained under; rows and messages named that model instead."""
    ws = Workspace(tmp_path, reg.store, tmp_path / "models")
    shutil.copytree(reg.models / "logistic-reg", ws.models / "renamed")
    shutil.copytree(reg.models / "logistic-reg", ws.models / "logistic-reg")
    evaluated = ws.run("evaluate", "renamed", "logistic-reg", "--cell", "sim01", "-f", "json", "-q")
    assert evaluated.code == 0, evaluated.stderr
    rows = json.loads(evaluated.stdout)["rows"]
    assert sorted(row["model"] for row in rows) == ["logistic-reg", "renamed"]
    assert rows[0]["pearson"] == rows[1]["pearson"]
    predicted = ws.run("predict", "renamed", "--cell", "sim01", "--from-store", "sim01")
    assert predicted.code == 0 and "with renamed (sim01)" in predicted.stderr, predicted.stderr
