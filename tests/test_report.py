"""`histcli report`: the page is opened in headless Chromium and checked as rendered."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, Workspace, assert_one_line_error, run_cli

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


def test_rendered_page_holds_evaluate_and_compare_numbers(space, page, browser):
    browser.open(page.resolve().as_uri())
    evaluation = json.loads(space.run("evaluate", *MODELS, "-f", "json").stdout)
    comparison = json.loads(space.run("compare", *MODELS, "-f", "json").stdout)
    assert browser.evaluate("document.title") == "three models"

    # One row per cell, every metric equal to evaluate's to full precision and shown to 4 digits.
    headers = header_texts(browser, "#metrics")
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
    footer = browser.evaluate("Array.from(document.querySelectorAll('#metrics tfoot tr')).map("
                              "r => Array.from(r.cells).map(c => c.getAttribute('data-value')))")
    for summary in evaluation["summary"]:
        column = headers.index(f"AUC {summary['model']}")
        assert float(footer[0][column]) == summary["mean_auc"]
        assert float(footer[1][column]) == summary["median_auc"]

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
    column = header_texts(browser, "#metrics").index("AUC cnn")
    selector = f"#metrics thead th:nth-child({column + 1})"
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
    browser.hover("#fig-scatter-0 .scatterlayer .trace:first-child path.point")
    hover = "Array.from(document.querySelectorAll('#fig-scatter-0 .hoverlayer .hovertext')).map(e => e.textContent)"
    for _ in range(50):  # plotly draws the label on the next animation frame
        if browser.evaluate(hover):
            break
        time.sleep(0.1)
    assert browser.evaluate(hover) == [f"{cell['cell']}{b} {cell[f'auc_{b}']:.4f}{a} {cell[f'auc_{a}']:.4f}"]
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


def test_readme_example_runs(space, tmp_path):
    readme = (REPO / "README.md").read_text()
    section = re.search(r"^### `histcli report`.*?```bash\n(.*?)```", readme, flags=re.S | re.M).group(1)
    env = {**os.environ, "HISTCLI_STORE": str(space.store), "HISTCLI_MODELS": str(space.models),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    script = "set -euo pipefail\n" + section.replace("crnn", "cnn").replace("deepchrome", "logistic") \
        .replace("E116", "sim01") + "\n"
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "report.html").stat().st_size > 1e6
