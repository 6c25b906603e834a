"""`histcli report`: the page is opened in headless Chromium and checked as rendered."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, Workspace, assert_one_line_error, copy_store, parse_tsv, run_cli

from histcli.registry import Registry
from histcli.store import Store

pytest.importorskip("plotly")

MODELS = ("logistic", "cnn", "logistic-s1")
METRICS = ("auc", "auprc", "accuracy")


@pytest.fixture(scope="module")
def space(tmp_path_factory) -> Workspace:
    """Three simulated cells; logistic, a 2-seed cnn ensemble and a second logistic; a report."""
    folder = tmp_path_factory.mktemp("report")
    ws = Workspace(folder, folder / "store.h5", folder / "models")
    assert ws.run("prepare", "simulate", "--cells", 3, "--genes", 300, "--bins", 20, "--seed", 5, "-q").code == 0
    for args in (("--arch", "logistic"), ("--arch", "cnn", "--seeds", "0-1"),
                 ("--arch", "logistic", "--name", "logistic-s1", "--seed", 1, "--patience", 1)):
        result = ws.run("train", "--all-cells", *args, "--epochs", 3, "--threads", 1, "--device", "cpu", "-q")
        assert result.code == 0, result.stderr
    # An entry written before training recorded convergence.
    old = ws.models / "logistic-s1" / "sim02" / "metadata.json"
    metadata = json.loads(old.read_text())
    metadata.pop("converged")
    old.write_text(json.dumps(metadata))
    return ws


@pytest.fixture(scope="module")
def page(space) -> Path:
    path = space.folder / "report.html"
    result = space.run("report", *MODELS, "-o", path, "--title", "three models", "--explain", "--device", "cpu")
    assert result.code == 0, result.stderr
    assert result.stdout == f"{path}\n"
    return path


@pytest.fixture(scope="module")
def browser():
    pytest.importorskip("websocket", reason="websocket-client (the test extra) drives Chromium")
    from chromium import Browser, chromium_binary

    chromium_binary()
    opened = Browser()
    yield opened
    opened.close()


def table(browser, selector: str) -> list[list[dict]]:
    """Rows of a rendered table body: per cell its text and data-value."""
    return browser.evaluate(
        f"Array.from(document.querySelectorAll('{selector} tbody tr')).map(r => Array.from(r.cells).map("
        "c => ({text: c.textContent, value: c.getAttribute('data-value')})))")


def header_texts(browser, selector: str) -> list[str]:
    return browser.evaluate(f"Array.from(document.querySelectorAll('{selector} thead th')).map(h => h.textContent)")


def metrics_columns(browser, selector: str = "#metrics") -> list[str]:
    """The metrics table's column labels in body order: 'cell', 'n', 'positives', then '<metric> <model>'
    from a metric's header and the model heading the group above it (read from what is shown)."""
    return browser.evaluate(
        f"(() => {{ const table = document.querySelector('{selector} table') || document.querySelector('{selector}');"
        "const groups = []; table.tHead.rows[0].querySelectorAll('th[colspan]').forEach(h => {"
        "  for (let i = 0; i < h.colSpan; i++) groups.push(h.textContent); });"
        "const fixed = Array.from(table.tHead.rows[0].querySelectorAll('th[rowspan]')).map(h => h.textContent);"
        "const metrics = Array.from(table.tHead.rows[1].cells).map((h, i) => h.textContent + ' ' + groups[i]);"
        "return fixed.concat(metrics); })()")




def hover_text(browser, figure: str) -> list[str]:
    """Hover the first point of a figure's first trace; the label plotly shows."""
    browser.hover(f"#{figure} .scatterlayer .trace:first-child path.point")
    hover = f"Array.from(document.querySelectorAll('#{figure} .hoverlayer .hovertext')).map(e => e.textContent)"
    for _ in range(50):  # plotly draws the label on the next animation frame
        if browser.evaluate(hover):
            break
        time.sleep(0.1)
    return browser.evaluate(hover)

def assert_footer(browser, headers: list[str], summaries: list[dict], label: str, metric: str) -> None:
    """The metrics table's mean and median rows hold evaluate's summary of ``metric`` per model."""
    footer = browser.evaluate("Array.from(document.querySelectorAll('#metrics tfoot tr')).map("
                              "r => Array.from(r.cells).map(c => c.getAttribute('data-value')))")
    for summary in summaries:
        column = headers.index(f"{label} {summary['model']}")
        assert float(footer[0][column]) == summary[f"mean_{metric}"]
        assert float(footer[1][column]) == summary[f"median_{metric}"]

def test_rendered_page_holds_evaluate_and_compare_numbers(space, page, browser):
    browser.open(page.resolve().as_uri())
    evaluation = json.loads(space.run("evaluate", *MODELS, "-f", "json").stdout)
    comparison = json.loads(space.run("compare", *MODELS, "-f", "json").stdout)
    assert browser.evaluate("document.title") == "three models"

    # One row per cell, every metric equal to evaluate's to full precision and shown to 4 digits.
    headers = metrics_columns(browser)
    rows = table(browser, "#metrics")
    cells = sorted({row["cell"] for row in evaluation["rows"]})
    assert [row[0]["text"] for row in rows] == cells == ["sim01", "sim02", "sim03"]
    labels = {"auc": "AUC", "auprc": "AUPRC", "accuracy": "accuracy"}
    for expected in evaluation["rows"]:
        row = rows[cells.index(expected["cell"])]
        assert row[headers.index("n")]["text"] == str(expected["n"])
        for metric in METRICS:
            shown = row[headers.index(f"{labels[metric]} {expected['model']}")]
            assert float(shown["value"]) == expected[metric]
            assert shown["text"] == f"{expected[metric]:.4f}"
    assert_footer(browser, headers, evaluation["summary"], "AUC", "auc")
    # One task: one table, under no task heading.
    assert browser.evaluate("document.querySelectorAll('#metrics table').length") == 1
    assert browser.evaluate("document.querySelectorAll('#metrics h3').length") == 0

    # Every pair, with compare's per-cell numbers and verdict (Holm-adjusted over three pairs).
    verdicts = browser.evaluate("Array.from(document.querySelectorAll('p.verdict')).map(p => p.textContent)")
    assert len(comparison["pairs"]) == 3
    for index, pair in enumerate(comparison["pairs"]):
        assert verdicts[index] == pair["summary"]["verdict"]
        assert "Holm-adjusted p" in verdicts[index]
        shown = table(browser, f"#pair-{index}")
        for expected, row in zip(pair["cells"], shown, strict=True):
            assert row[0]["text"] == expected["cell"]
            got = [None if c["value"] == "" else float(c["value"]) for c in row[2:]]
            assert got == [expected[f"auc_{pair['model_a']}"], expected[f"auc_{pair['model_b']}"],
                           expected["delta_auc"], expected["ci_low"], expected["ci_high"], expected["delong_p"],
                           expected["q"]]

    # Training runs: the ensemble's members each, convergence as recorded (or not recorded).
    runs = browser.evaluate("Array.from(document.querySelectorAll('#training-runs tbody tr')).map("
                            "r => Array.from(r.cells).map(c => c.textContent))")
    assert len(runs) == 3 * (1 + 2 + 1)
    for model, cell, member, best, _, _, converged, _ in runs:
        metadata = json.loads((space.models / model / cell / "metadata.json").read_text())
        run = next(m for m in metadata["members"] if f"seed {m['seed']}" == member) if member != "-" else metadata
        assert best == str(run["best_epoch"])
        assert converged == {True: "yes", False: "NO", None: "not recorded"}[run.get("converged")]
    assert ["logistic-s1", "sim02"] in [r[:2] for r in runs if r[6] == "not recorded"]

    assert browser.console_errors() == []
    # The page itself and images it draws as data: URLs (the heatmaps), nothing from a host.
    requests = browser.requests()
    assert requests[0] == page.resolve().as_uri()
    assert [url for url in requests[1:] if not url.startswith("data:")] == []


def test_sorting_a_column_reorders_the_rows(space, page, browser):
    browser.open(page.resolve().as_uri())
    evaluation = json.loads(space.run("evaluate", "cnn", "-f", "json").stdout)
    auc = {row["cell"]: row["auc"] for row in evaluation["rows"]}
    assert "AUC cnn" in metrics_columns(browser)
    selector = '#metrics thead th[data-model="cnn"][data-metric="auc"]'
    browser.click(selector)
    ascending = [row[0]["text"] for row in table(browser, "#metrics")]
    assert ascending == sorted(auc, key=auc.get)
    browser.click(selector)
    descending = [row[0]["text"] for row in table(browser, "#metrics")]
    assert descending == sorted(auc, key=auc.get, reverse=True)
    assert ascending != sorted(auc) or descending != sorted(auc)  # the order did change
    # Summary rows stay below the cells.
    assert browser.evaluate("document.querySelectorAll('#metrics tfoot tr').length") == 2
    browser.click("#metrics thead th:nth-child(1)")
    assert [row[0]["text"] for row in table(browser, "#metrics")] == ["sim01", "sim02", "sim03"]
    assert browser.console_errors() == []


def test_figures_have_drawn_one_point_per_cell(space, page, browser):
    browser.open(page.resolve().as_uri())
    count = "document.querySelectorAll({!r}).length".format
    for index in range(3):  # AUC scatter per pair: one marker per cell, hover text names it
        points = f"#fig-scatter-{index} .scatterlayer .trace:first-child path.point"
        assert browser.evaluate(count(points)) == 3
        assert browser.evaluate(f"document.getElementById('fig-scatter-{index}').data[0].text") == \
            ["sim01", "sim02", "sim03"]
    # Hovering a point names its cell and both AUCs (compare's numbers).
    comparison = json.loads(space.run("compare", *MODELS, "-f", "json").stdout)
    first = comparison["pairs"][0]
    a, b, cell = first["model_a"], first["model_b"], first["cells"][0]
    assert hover_text(browser, "fig-scatter-0") == [
        f"{cell['cell']}{b} {cell[f'auc_{b}']:.4f}{a} {cell[f'auc_{a}']:.4f}"]
    # ΔAUC with CIs: per pair one marker and one error bar per cell.
    assert browser.evaluate(count("#fig-delta .scatterlayer .trace")) == 3
    assert browser.evaluate(count("#fig-delta .scatterlayer path.point")) == 3 * 3
    assert browser.evaluate(count("#fig-delta .errorbar")) == 3 * 3
    # One cell at a time: ROC (3 models + chance), PR and training curves, attribution heatmaps.
    assert browser.evaluate(count("#fig-roc .scatterlayer .trace path.js-line")) == 4
    assert browser.evaluate(count("#fig-pr .scatterlayer .trace path.js-line")) == 3
    lines = browser.evaluate(count("#fig-training .scatterlayer .trace path.js-line"))
    assert lines == 4  # logistic, cnn seeds 0 and 1, logistic-s1
    assert browser.evaluate(count("#fig-training .scatterlayer path.point")) == 4  # best-epoch stars
    for index in range(3):
        assert browser.evaluate(count(f"#fig-explain-{index} .hm image")) == 1
    shown = browser.evaluate("document.querySelector('#fig-roc .gtitle').textContent")
    other = next(cell for cell in ("sim01", "sim02", "sim03") if not shown.endswith(cell))
    browser.evaluate(f"(function () {{ var s = document.getElementById('cell-select'); s.value = '{other}'; "
                     "s.dispatchEvent(new Event('change')); })()")
    assert browser.evaluate("document.querySelector('#fig-roc .gtitle').textContent") == f"ROC, {other}"
    assert browser.evaluate("document.querySelector('#fig-training .gtitle').textContent").startswith(
        f"validation AUC per epoch, {other}")
    assert browser.console_errors() == []


def test_page_curves_and_heatmap_come_from_the_library(space, page):
    """The embedded ROC points are the library's curve (thinned), and the heatmap the summary of
    `histcli explain --summary --method saliency` on the same genes."""
    from histcli.evaluation import predictions_for
    from histcli.metrics import average_precision, precision_recall_curve, roc_curve
    from histcli.registry import Registry
    from histcli.store import Store

    text = page.read_text()
    data = json.loads(re.search(r'<script type="application/json" id="report-data">(.*?)</script>', text,
                                flags=re.S).group(1).replace("<\\/", "</"))
    roc = {f["id"]: f for f in data["by_cell"]}["fig-roc"]["by_cell"]["sim02"]["data"][1]
    entry = Registry(space.models).get("cnn", "sim02")
    predictions = predictions_for(entry, Store(space.store), "sim02", device="cpu")
    fpr, tpr, _ = roc_curve(predictions.labels, predictions.scores)
    assert len(fpr) <= 300  # 100 test genes: the whole curve, rounded to 5 decimals
    assert roc["x"] == np.round(fpr, 5).tolist() and roc["y"] == np.round(tpr, 5).tolist()
    precision, recall, _ = precision_recall_curve(predictions.labels, predictions.scores)
    assert np.sum(np.diff(recall) * precision[1:]) == pytest.approx(
        average_precision(predictions.labels, predictions.scores))

    result = space.run("explain", "logistic", "--cell", "sim01", "--method", "saliency", "--summary", "-f", "json",
                       "--device", "cpu")
    assert result.code == 0, result.stderr
    bins = [r for r in json.loads(result.stdout)["bins"] if r["group"] == "all"]
    heat = {f["id"]: f for f in data["by_cell"]}["fig-explain-0"]["by_cell"]["sim01"]["data"][0]
    marks = heat["y"]
    for row in bins:  # 100 test genes: under the cap, so the same genes as explain's
        assert heat["z"][marks.index(row["mark"])][row["bin"] - 1] == pytest.approx(row["mean_attribution"],
                                                                                    abs=1e-6)


def test_long_curves_are_thinned_keeping_both_ends():
    from histcli.report import thin

    x = np.linspace(0, 1, 1001) ** 2
    xs, ys = thin(x, 2 * x, points=300)
    assert len(xs) == 300 and xs[0] == 0 and xs[-1] == 1 and ys[-1] == 2
    assert np.all(np.diff(xs) > 0) and np.allclose(2 * np.array(xs), ys, atol=3e-5)  # pairs stay together
    assert thin(x[:50], x[:50]) == (np.round(x[:50], 5).tolist(), np.round(x[:50], 5).tolist())


def test_embedded_numbers_are_those_of_evaluate_and_compare(space, page):
    text = page.read_text()
    numbers = json.loads(re.search(r'<script type="application/json" id="report-numbers">(.*?)</script>', text,
                                   flags=re.S).group(1).replace("<\\/", "</"))
    assert numbers["evaluate"] == json.loads(space.run("evaluate", *MODELS, "-f", "json").stdout)
    assert numbers["compare"] == json.loads(space.run("compare", *MODELS, "-f", "json").stdout)


def test_one_model_report(space, tmp_path):
    path = tmp_path / "one.html"
    result = space.run("report", "cnn", "--cell", "sim03", "-o", path)
    assert result.code == 0, result.stderr
    text = path.read_text()
    assert text.count("<script>") == 2  # plotly.js once, the page's own script once
    assert "Paired comparison" not in text and 'id="fig-roc"' in text
    assert path.stat().st_size < 10e6


def test_bad_input_gives_one_line_errors_and_no_file(space, tmp_path):
    path = tmp_path / "report.html"
    assert_one_line_error(space.run("report", "logistic", "nosuch", "-o", path), "nosuch")
    assert_one_line_error(space.run("report", "logistic", "cnn", "--cell", "sim09", "-o", path), "sim09")
    # Models without a cell in common.
    for name, cell in (("lonely-a", "sim01"), ("lonely-b", "sim02")):
        result = space.run("train", "--cell", cell, "--arch", "logistic", "--name", name, "--epochs", 1, "-q")
        assert result.code == 0, result.stderr
    assert_one_line_error(space.run("report", "lonely-a", "lonely-b", "-o", path), "no cell in common")
    assert_one_line_error(space.run("report", "logistic", "-o", tmp_path / "missing" / "r.html"),
                          "does not exist")
    assert_one_line_error(space.run("report", "logistic", "-o", tmp_path), "is a folder")
    assert_one_line_error(space.run("report", "logistic", "--explain", "--explain-method", "attention", "-o", path),
                          "--explain-method", code=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    # Nor over what the report reads: the store, its cell files, the registry.
    store = space.store.read_bytes()
    for target, said in ((space.store, f"-o {space.store} is the input file"),
                         (space.models / "logistic" / "sim01" / "config.json", "is inside model 'logistic''s folder"),
                         (space.store.parent / f"{space.store.name}.cells" / "r.html", "is inside the store's cell folder")):
        assert_one_line_error(space.run("report", "logistic", "-o", target), said, "the report would replace", code=2)
    assert space.store.read_bytes() == store
    assert Registry(space.models).get("logistic", "sim01").config["architecture"] == "logistic"
    # Without plotly: one line saying how to install the extra.
    fake = tmp_path.parent / f"{tmp_path.name}-fake"
    (fake / "plotly").mkdir(parents=True)
    (fake / "plotly" / "__init__.py").write_text("raise ImportError('plotly is not installed')\n")
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(fake), os.environ.get("PYTHONPATH")])),
           "HISTCLI_STORE": str(space.store), "HISTCLI_MODELS": str(space.models)}
    missing = run_cli("report", "logistic", "cnn", "-o", path, env=env)
    assert_one_line_error(missing, "pip install 'histcli[report]'")
    assert not path.exists() and missing.stdout == ""


def test_browser_check_sees_requests_and_errors(tmp_path, browser):
    """The harness itself: a page that asks another host and logs an error is caught."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><body><img src="http://127.0.0.1:9/x.png">'
                   "<script>console.error('boom')</script></body></html>")
    browser.open(bad.resolve().as_uri())
    assert "http://127.0.0.1:9/x.png" in browser.requests()
    assert "boom" in browser.console_errors()


def test_readme_example_runs(space, regressors, tmp_path):
    readme = (REPO / "README.md").read_text()
    section = re.search(r"^### `histcli report`.*?```bash\n(.*?)```", readme, flags=re.S | re.M).group(1)
    env = {**os.environ, "HISTCLI_STORE": str(space.store), "HISTCLI_MODELS": str(space.models),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    script = "set -euo pipefail\n" + section.replace("crnn", "cnn").replace("deepchrome", "logistic") \
        .replace("E116", "sim01") + "\n"
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "report.html").stat().st_size > 1e6


# ---------------------------------------------------------------- regression models

REGRESSORS = ("logistic-reg", "cnn-reg")
# The metrics of a regression entry (histcli.tasks.Regression) as the metrics table heads them.
REGRESSION_HEADERS = ("AUC", "AUPRC", "Pearson r", "Spearman rho", "R²", "RMSE")


@pytest.fixture(scope="module")
def regressors(space) -> Workspace:
    """Regression models beside the classifiers, on the same simulated cells (which carry expression)."""
    for arch, epochs in (("logistic", 10), ("cnn", 3)):
        result = space.run("train", "--all-cells", "--arch", arch, "--task", "regression", "--name", f"{arch}-reg",
                           "--epochs", epochs, "--threads", 1, "--device", "cpu", "-q")
        assert result.code == 0, result.stderr
    return space


def report_of(ws: Workspace, name: str, *args) -> Path:
    path = ws.folder / name
    result = ws.run("report", *args, "-o", path, "--device", "cpu", "-q")
    assert result.code == 0, result.stderr
    return path


@pytest.fixture(scope="module")
def reg_page(regressors) -> Path:
    return report_of(regressors, "regression.html", *REGRESSORS)  # the default metric: Pearson r


@pytest.fixture(scope="module")
def mixed_page(regressors) -> Path:
    return report_of(regressors, "mixed.html", "logistic-reg", "logistic")  # the default metric: AUC


def embedded(page: Path, name: str) -> dict:
    text = page.read_text()
    return json.loads(re.search(rf'<script type="application/json" id="{name}">(.*?)</script>', text,
                                flags=re.S).group(1).replace("<\\/", "</"))


def predicted_levels(ws: Workspace, model: str, cell: str) -> dict[str, float]:
    result = ws.run("predict", model, "--cell", cell, "--from-store", cell, "-q")
    assert result.code == 0, result.stderr
    return {row["gene_id"]: float(row["log_expression"]) for row in parse_tsv(result.stdout)}


def measured_levels(ws: Workspace, cell: str) -> dict[str, float]:
    data = Store(ws.store).load(cell, splits=["test"])
    return dict(zip(data.gene_ids.tolist(), np.log1p(data.expression).tolist(), strict=True))


def test_regression_report_shows_correlations_and_steiger_tests(regressors, reg_page, browser):
    from scipy import stats

    browser.open(reg_page.resolve().as_uri())
    evaluation = json.loads(regressors.run("evaluate", *REGRESSORS, "-f", "json").stdout)
    comparison = json.loads(regressors.run("compare", *REGRESSORS, "--metric", "pearson", "-f", "json").stdout)

    # The metrics of the regression task, for each model; Pearson r as evaluate computes it, and as scipy
    # does from predict's output and the stored expression.
    headers = metrics_columns(browser)
    assert headers == ["cell", "n", "positives"] + [f"{h} {m}" for m in REGRESSORS for h in REGRESSION_HEADERS]
    rows = {row[0]["text"]: row for row in table(browser, "#metrics")}
    for expected in evaluation["rows"]:
        shown = rows[expected["cell"]][headers.index(f"Pearson r {expected['model']}")]
        assert float(shown["value"]) == expected["pearson"] and shown["text"] == f"{expected['pearson']:.4f}"
        rmse = rows[expected["cell"]][headers.index(f"RMSE {expected['model']}")]
        assert float(rmse["value"]) == expected["rmse"]
    for model, cell in (("logistic-reg", "sim01"), ("cnn-reg", "sim03")):
        predicted, measured = predicted_levels(regressors, model, cell), measured_levels(regressors, cell)
        genes = list(measured)
        r = stats.pearsonr([measured[g] for g in genes], [predicted[g] for g in genes])[0]
        assert float(rows[cell][headers.index(f"Pearson r {model}")]["value"]) == pytest.approx(r, abs=1e-6)
    assert_footer(browser, headers, evaluation["summary"], "Pearson r", "pearson")

    # The pair in Pearson r: compare's difference, Zou's CI, Steiger's p and q, cell by cell.
    assert comparison["metric"] == "pearson"
    assert header_texts(browser, "#pair-0")[2:] == ["Pearson r logistic-reg", "Pearson r cnn-reg", "ΔPearson r",
                                                    "CI low", "CI high", "Steiger p", "q (BH)"]
    for expected, row in zip(comparison["cells"], table(browser, "#pair-0"), strict=True):
        assert row[0]["text"] == expected["cell"]
        got = [None if c["value"] == "" else float(c["value"]) for c in row[2:]]
        assert got == [expected["pearson_logistic-reg"], expected["pearson_cnn-reg"], expected["delta_pearson"],
                       expected["ci_low"], expected["ci_high"], expected["steiger_p"], expected["q"]]
    assert browser.evaluate("document.querySelector('p.verdict').textContent") == comparison["summary"]["verdict"]
    intro = browser.evaluate("document.querySelector('h2 + p').parentNode.innerText")
    assert "Paired comparison (Pearson r)" in intro and "Steiger's test" in intro and "Zou's 95% CI" in intro
    assert "DeLong" not in intro and "ΔAUC" not in intro
    assert browser.evaluate("document.getElementById('fig-delta').layout.yaxis.title.text") == "ΔPearson r"
    assert browser.evaluate("document.getElementById('fig-scatter-0').layout.xaxis.title.text") == \
        "Pearson r cnn-reg"

    # The cell shown first differs most between the pair; its predicted-vs-measured figure has a marker per
    # test gene and model.
    largest = max(comparison["cells"], key=lambda row: abs(row["delta_pearson"]))["cell"]
    assert browser.evaluate("document.getElementById('cell-select').value") == largest
    assert browser.evaluate("document.querySelector('#fig-levels .gtitle').textContent") == \
        f"predicted vs measured, {largest}"
    points = "document.querySelectorAll('#fig-levels .scatterlayer .trace path.point').length"
    assert browser.evaluate(points) == 2 * 100
    assert browser.evaluate("document.getElementById('fig-levels').layout.xaxis.title.text") == \
        "measured ln(RPKM + 1)"
    # Hovering a point names its gene, with its measured and predicted levels.
    shown = hover_text(browser, "fig-levels")
    assert len(shown) == 1
    model, gene, x, y = re.fullmatch(r"(.+)(SIMG\d+)measured (\S+)predicted (\S+)", shown[0]).groups()
    assert model in REGRESSORS
    # Shown to 3 decimals (of the page's value, rounded to 5).
    assert float(x) == pytest.approx(measured_levels(regressors, largest)[gene], abs=5.1e-4)
    assert float(y) == pytest.approx(predicted_levels(regressors, model, largest)[gene], abs=5.1e-4)
    # Regressors rank by their predicted level on the labels too: ROC curves for both.
    assert browser.evaluate("document.querySelectorAll('#fig-roc .scatterlayer .trace path.js-line').length") == 3

    # Training: selected on validation Pearson r, and said so.
    assert header_texts(browser, "#training-runs")[5] == "valid Pearson r"
    runs = browser.evaluate("Array.from(document.querySelectorAll('#training-runs tbody tr')).map("
                            "r => Array.from(r.cells).map(c => c.textContent))")
    for model, cell, _, _, _, valid, _, _ in runs:
        metadata = json.loads((regressors.models / model / cell / "metadata.json").read_text())
        assert valid == f"{metadata['best_valid_pearson']:.4f}"
    assert browser.evaluate("document.getElementById('fig-training').layout.yaxis.title.text") == \
        "validation Pearson r"
    assert browser.console_errors() == []


def test_regression_page_numbers_and_levels_come_from_the_library(regressors, reg_page):
    numbers = embedded(reg_page, "report-numbers")
    assert numbers["evaluate"] == json.loads(regressors.run("evaluate", *REGRESSORS, "-f", "json").stdout)
    assert numbers["compare"] == json.loads(regressors.run("compare", *REGRESSORS, "--metric", "pearson",
                                                           "-f", "json").stdout)
    # Predicted vs measured: the points are predict's levels against the stored expression (100 test genes,
    # under the 2,000-point cap: all of them), hover naming the gene.
    figure = {f["id"]: f for f in embedded(reg_page, "report-data")["by_cell"]}["fig-levels"]
    for model, cell in (("cnn-reg", "sim02"), ("logistic-reg", "sim03")):
        trace = next(t for t in figure["by_cell"][cell]["data"] if t["name"].startswith(f"{model} "))
        predicted, measured = predicted_levels(regressors, model, cell), measured_levels(regressors, cell)
        assert sorted(trace["text"]) == sorted(predicted) == sorted(measured)
        for gene, x, y in list(zip(trace["text"], trace["x"], trace["y"], strict=True))[::17]:
            assert x == pytest.approx(measured[gene], abs=1e-5) and y == pytest.approx(predicted[gene], abs=1e-5)

    # --metric spearman: the pair sections follow it, and the numbers are compare's.
    spearman = report_of(regressors, "spearman.html", *REGRESSORS, "--metric", "spearman")
    assert embedded(spearman, "report-numbers")["compare"] == json.loads(regressors.run(
        "compare", *REGRESSORS, "--metric", "spearman", "-f", "json").stdout)
    text = spearman.read_text()
    assert "<th>ΔSpearman rho</th>" in text and "<th>Steiger p</th>" in text and "ΔPearson" not in text


def test_levels_are_thinned_evenly_keeping_genes_with_their_values():
    from histcli.evaluation import Predictions
    from histcli.report import thinned_levels
    from histcli.tasks import Regression

    n = 5001
    genes = np.array([f"G{i}" for i in range(n)])
    predictions = Predictions("m", "c", "c", "test", genes, None, np.arange(n, dtype=np.float32) / 8,
                              measured=np.arange(n, dtype=np.float64) / 4, task=Regression("log2p1"))
    levels = thinned_levels(predictions, points=2000)
    assert len(levels["gene_ids"]) == 2000 and levels["gene_ids"][0] == "G0" and levels["gene_ids"][-1] == "G5000"
    index = np.array([int(g[1:]) for g in levels["gene_ids"]])
    assert np.all(np.diff(index) >= 2) and np.all(np.diff(index) <= 3)  # evenly spaced through the genes
    assert levels["predicted"] == (index / 8).tolist() and levels["measured"] == (index / 4).tolist()
    assert levels["target"] == "log2(RPKM + 1)"


def test_mixed_classifier_and_regressor_report_compares_on_auc(regressors, mixed_page, browser):
    numbers = embedded(mixed_page, "report-numbers")
    comparison = json.loads(regressors.run("compare", "logistic-reg", "logistic", "-f", "json").stdout)
    assert numbers["compare"] == comparison and comparison["metric"] == "auc"
    assert numbers["evaluate"] == json.loads(regressors.run("evaluate", "logistic-reg", "logistic", "-f",
                                                            "json").stdout)
    browser.open(mixed_page.resolve().as_uri())
    for expected, row in zip(comparison["cells"], table(browser, "#pair-0"), strict=True):
        assert [float(c["value"]) for c in row[2:5]] == [expected["auc_logistic-reg"], expected["auc_logistic"],
                                                         expected["delta_auc"]]
    assert "DeLong p" in header_texts(browser, "#pair-0")
    # Training: each run's value says which metric selected it.
    assert header_texts(browser, "#training-runs")[5] == "valid metric"
    runs = browser.evaluate("Array.from(document.querySelectorAll('#training-runs tbody tr')).map("
                            "r => [r.cells[0].textContent, r.cells[5].textContent])")
    assert {model: text.split(" ", 1)[1] for model, text in runs} == {"logistic-reg": "(Pearson r)",
                                                                      "logistic": "(AUC)"}
    assert browser.evaluate("document.getElementById('fig-training').layout.yaxis.title.text") == \
        "validation metric"
    # Predicted vs measured for the regressor only; ROC for both.
    assert browser.evaluate("document.getElementById('fig-levels').data.map(t => t.name)")[0].startswith(
        "logistic-reg (r ")
    assert len(browser.evaluate("document.getElementById('fig-levels').data")) == 2  # and the diagonal
    assert browser.evaluate("document.querySelectorAll('#fig-roc .scatterlayer .trace path.js-line').length") == 3
    assert browser.console_errors() == []


def test_two_regressors_metrics_fit_1000_px_under_one_heading_per_model(reg_page, browser):
    """Two regressors have 12 metric columns; with each model named once over its metrics (not under every
    metric) the table fits its box in a 1000 px window (it was 1017 px in a 953 px box), and a model's
    heading spans exactly its metrics."""
    browser.set_viewport(1000)
    try:
        browser.open(reg_page.resolve().as_uri())
        box = browser.evaluate("(() => { const div = document.querySelector('#metrics .scroll');"
                               "return [div.scrollWidth, div.clientWidth]; })()")
        spans = browser.evaluate("Array.from(document.querySelectorAll('#metrics thead th.model')).map("
                                 "h => [h.textContent, h.colSpan, h.getBoundingClientRect().left,"
                                 " h.getBoundingClientRect().right])")
        metric_edges = browser.evaluate("Array.from(document.querySelectorAll('#metrics thead th[data-metric]')).map("
                                        "h => [h.dataset.model, h.getBoundingClientRect().left,"
                                        " h.getBoundingClientRect().right])")
    finally:
        browser.set_viewport(None)
    assert 900 < box[1] < 1000 and box[0] <= box[1]
    assert [(name, span) for name, span, _, _ in spans] == [(model, len(REGRESSION_HEADERS)) for model in REGRESSORS]
    for name, _, left, right in spans:
        under = [(start, end) for model, start, end in metric_edges if model == name]
        assert left == pytest.approx(min(start for start, _ in under), abs=1)
        assert right == pytest.approx(max(end for _, end in under), abs=1)


def test_mixed_report_has_one_metrics_table_per_task_that_fits_1000_px(regressors, mixed_page, browser):
    """Classifiers and regressors each get a table of their own task's metrics (histcli.tasks), headed by
    the task and its selection metric, with evaluate's values, and neither table is wider than its box in a
    1000 px window (one table of both tasks' metrics for both models was 1312 px in a 953 px box)."""
    from histcli.tasks import Classification, Regression

    evaluation = json.loads(regressors.run("evaluate", "logistic-reg", "logistic", "-f", "json").stdout)
    by_key = {(row["model"], row["cell"]): row for row in evaluation["rows"]}
    summary = {row["model"]: row for row in evaluation["summary"]}
    browser.set_viewport(1000)
    try:
        browser.open(mixed_page.resolve().as_uri())
        tables = browser.evaluate("Array.from(document.querySelectorAll('#metrics table')).map(t => ["
                                  "t.id, t.dataset.task, t.parentNode.scrollWidth, t.parentNode.clientWidth])")
        headings = browser.evaluate("Array.from(document.querySelectorAll('#metrics h3')).map(h => h.textContent)")
        page_width = browser.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    finally:
        browser.set_viewport(None)
    assert [task for _, task, _, _ in tables] == ["regression", "classification"]  # the models' order
    for _, task, scroll_width, client_width in tables:
        assert 900 < client_width < 1000 and scroll_width <= client_width, task
    assert page_width[0] <= page_width[1]
    assert headings == ["Regression: logistic-reg (best epoch selected on validation Pearson r)",
                        "Classification: logistic (best epoch selected on validation AUC)"]
    for table_id, model, task in (("metrics-regression", "logistic-reg", Regression()),
                                  ("metrics-classification", "logistic", Classification())):
        columns = browser.evaluate(f"Array.from(document.querySelectorAll('#{table_id} thead th[data-column]')).map("
                                   "h => [h.dataset.model || null, h.dataset.metric || null])")
        assert columns[:3] == [[None, None]] * 3  # cell, n, positives
        assert {metric for _, metric in columns[3:]} == set(task.metric_columns)
        assert len(columns[3:]) == len(task.metric_columns) and {m for m, _ in columns[3:]} == {model}
        for row in table(browser, f"#{table_id}"):
            expected = by_key[(model, row[0]["text"])]
            assert row[1]["text"] == str(expected["n"]) and row[2]["text"] == str(expected["positives"])
            for (_, metric), shown in zip(columns[3:], row[3:], strict=True):
                assert float(shown["value"]) == expected[metric]  # every value defined: no empty columns
        footer = browser.evaluate(f"Array.from(document.querySelectorAll('#{table_id} tfoot tr')).map("
                                  "r => Array.from(r.cells).map(c => c.getAttribute('data-value')))")
        metric = task.selection_metric
        column = columns.index([model, metric])
        assert float(footer[0][column]) == summary[model][f"mean_{metric}"]
        assert float(footer[1][column]) == summary[model][f"median_{metric}"]
    assert browser.console_errors() == []


def test_correlation_metric_with_a_classifier_is_a_usage_error(regressors, tmp_path):
    path = tmp_path / "report.html"
    refused = regressors.run("report", "logistic-reg", "logistic", "--metric", "pearson", "-o", path)
    assert_one_line_error(refused, "--metric 'pearson'", "logistic is a classifier", code=2)
    assert_one_line_error(regressors.run("report", *REGRESSORS, "--metric", "kendall", "-o", path),
                          "--metric 'kendall'", "auc, pearson, spearman", code=2)
    assert not path.exists()


def test_an_interrupted_run_is_called_interrupted(workspace, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(workspace.models, models, ignore=shutil.ignore_patterns(".locks"))
    marked = models / "logistic" / "sim02" / "metadata.json"
    metadata = json.loads(marked.read_text())
    marked.write_text(json.dumps({**metadata, "converged": False, "interrupted": True}))
    path = tmp_path / "r.html"
    result = run_cli("report", "logistic", "deepchrome", "-o", path, "-q",
                     env={"HISTCLI_STORE": str(workspace.store), "HISTCLI_MODELS": str(models)})
    assert result.code == 0, result.stderr
    body = re.search(r'<table id="training-runs">.*?<tbody>(.*?)</tbody>', path.read_text(), flags=re.S).group(1)
    flags = {tuple(re.findall(r"<td[^>]*>(.*?)</td>", row)[:2]): re.findall(r"<td[^>]*>(.*?)</td>", row)[6]
             for row in re.findall(r"<tr.*?</tr>", body)}
    recorded = {(model, cell): json.loads((models / model / cell / "metadata.json").read_text())
                for model in ("logistic", "deepchrome") for cell in ("sim01", "sim02", "sim03")}
    expected = {key: "NO (interrupted)" if m["interrupted"] else "yes" if m["converged"] else "NO"
                for key, m in recorded.items()}
    assert flags == expected and flags[("logistic", "sim02")] == "NO (interrupted)"
    training = json.dumps(embedded(path, "report-data"))
    assert '"name": "logistic (interrupted)"' in training


def test_output_through_a_symlink_or_into_a_pipe_keeps_them(workspace, tmp_path):
    """-o names a symlink: the file it points at is replaced, the link stays; a FIFO (like /dev/stdout) is
    written into, not replaced by a plain file."""
    import stat
    import threading

    env = {"HISTCLI_STORE": str(workspace.store), "HISTCLI_MODELS": str(workspace.models)}
    real, link = tmp_path / "real.html", tmp_path / "link.html"
    real.write_text("old")
    link.symlink_to(real.name)
    result = run_cli("report", "logistic", "deepchrome", "--cell", "sim01", "-o", link, "-q", env=env)
    assert result.code == 0, result.stderr
    assert link.is_symlink() and os.readlink(link) == real.name
    page = real.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()), daemon=True)
    reader.start()
    result = run_cli("report", "logistic", "deepchrome", "--cell", "sim01", "-o", fifo, "-q", env=env)
    reader.join(timeout=60)
    assert result.code == 0, result.stderr
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    # The same page but for the time it was written.
    written = re.compile(r"<dt>written</dt><dd>[^<]*</dd>")
    assert written.sub("", received[0]) == written.sub("", page)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.html", "pipe", "real.html"]  # no temporaries
    # -o - is stdout (as --input - is stdin), not a file named '-': the page alone, no path line after it.
    result = run_cli("report", "logistic", "deepchrome", "--cell", "sim01", "-o", "-", "-q", env=env, cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert written.sub("", result.stdout) == written.sub("", page)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.html", "pipe", "real.html"]


def test_a_report_on_data_changed_since_training_says_so_on_the_page(workspace, tmp_path):
    store = tmp_path / "store.h5"
    copy_store(workspace.store, store)
    env = {"HISTCLI_STORE": str(store), "HISTCLI_MODELS": str(workspace.models)}
    changed = run_cli("prepare", "simulate", "--cells", 1, "--genes", 900, "--bins", 20, "--seed", 99,
                      "--overwrite", "-q", env=env)  # sim01, other genes' counts
    assert changed.code == 0, changed.stderr
    path = tmp_path / "r.html"
    result = run_cli("report", "logistic", "deepchrome", "-o", path, "--allow-changed-data", "-q", env=env)
    assert result.code == 0, result.stderr
    from html import unescape

    notes = [unescape(note) for note in re.findall(r"<li>(.*?)</li>", re.search(
        r'<ul class="notes">(.*?)</ul>', path.read_text(), flags=re.S).group(1))]
    changed_notes = sorted(note for note in notes if "changed since" in note)
    # One per model trained on sim01; sim02 and sim03 are as they were.
    assert [note.split(" was trained")[0] for note in changed_notes] == [
        f"cell sim01 in {store} changed since model 'deepchrome'", f"cell sim01 in {store} changed since model 'logistic'"]
    assert all(note.endswith("evaluated anyway (--allow-changed-data)") for note in changed_notes)


def test_a_cell_missing_from_the_store_is_named_with_its_models_also_with_allow_changed_data(workspace, tmp_path):
    """--allow-changed-data reads each entry's own cell for the page's notes: a cell the store lacks must still
    get the message naming the models trained on it, as without the option."""
    store = tmp_path / "store.h5"
    copy_store(workspace.store, store)
    assert run_cli("store", "rm", "sim03", "--store", store).code == 0
    env = {"HISTCLI_STORE": str(store), "HISTCLI_MODELS": str(workspace.models)}
    for extra in ((), ("--allow-changed-data",)):
        result = run_cli("report", "logistic", "deepchrome", "-o", tmp_path / "r.html", *extra, env=env)
        assert_one_line_error(result, "lacks the cell(s) the models were trained on",
                              "sim03 (trained on by logistic, deepchrome)", "cells in the store: sim01, sim02")
    assert not (tmp_path / "r.html").exists()
