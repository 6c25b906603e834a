"""`histcli compare`: numbers cross-checked with scipy and the edge cases."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import assert_one_line_error, assert_plot_covers_every_pair, copy_store, parse_tsv, run_cli
from scipy import stats

from histcli.registry import Registry
from histcli.stats import delong_test
from histcli.store import Store


def _cached(models, model, cell):
    with np.load(Registry(models).get(model, cell).path / "predictions" / f"{cell}.test.npz") as data:
        return data["labels"], data["scores"]


def test_two_models_json_matches_independent_statistics(workspace):
    result = workspace.run("compare", "logistic", "deepchrome", "-f", "json", "-q")
    assert result.code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["models"] == ["logistic", "deepchrome"]
    cells = payload["cells"]
    assert [c["cell"] for c in cells] == ["sim01", "sim02", "sim03"]
    evaluated = {(r["model"], r["cell"]): r["auc"] for r in json.loads(
        workspace.run("evaluate", "logistic", "deepchrome", "-f", "json", "-q").stdout)["rows"]}
    p_values = []
    for c in cells:
        assert set(c) >= {"cell", "auc_logistic", "auc_deepchrome", "delta_auc", "delong_p", "q", "ci_low", "ci_high"}
        assert c["auc_logistic"] == pytest.approx(evaluated[("logistic", c["cell"])])
        assert c["auc_deepchrome"] == pytest.approx(evaluated[("deepchrome", c["cell"])])
        assert c["delta_auc"] == pytest.approx(c["auc_logistic"] - c["auc_deepchrome"])
        labels, a = _cached(workspace.models, "logistic", c["cell"])
        _, b = _cached(workspace.models, "deepchrome", c["cell"])
        test = delong_test(labels, a, b)
        assert c["delong_p"] == pytest.approx(test.p)
        assert c["ci_low"] < c["delta_auc"] < c["ci_high"]
        p_values.append(c["delong_p"])
    assert [c["q"] for c in cells] == pytest.approx(list(stats.false_discovery_control(p_values)))
    a = np.array([c["auc_logistic"] for c in cells])
    b = np.array([c["auc_deepchrome"] for c in cells])
    summary = payload["summary"]
    assert summary["n_cells"] == 3
    assert summary["wilcoxon_p"] == pytest.approx(stats.wilcoxon(a, b).pvalue)
    assert summary["ttest_p"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert summary["median_delta"] == pytest.approx(np.median(a - b))
    assert (summary["wins"], summary["ties"], summary["losses"]) == (int((a > b).sum()), 0, int((a < b).sum()))
    low, high = summary["median_delta_ci"]
    assert low <= summary["median_delta"] <= high


def test_three_models_compare_every_pair_with_holm(workspace, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(workspace.models, models)
    env = {"HISTCLI_STORE": str(workspace.store), "HISTCLI_MODELS": str(models)}
    trained = run_cli("train", "--all-cells", "--arch", "logistic", "--name", "logistic-s2", "--seed", 2,
                      "--epochs", 2, "-q", env=env)
    assert trained.code == 0, trained.stderr
    svg = tmp_path / "three.svg"
    result = run_cli("compare", "logistic", "deepchrome", "logistic-s2", "-f", "json", "--plot", svg, "-q", env=env)
    assert result.code == 0, result.stderr
    payload = json.loads(result.stdout)
    pairs = [(p["model_a"], p["model_b"]) for p in payload["pairs"]]
    # The plot has a row per pair, each with the pair's largest difference, and --plot-cell sets every row's cell.
    assert_plot_covers_every_pair(svg, payload)
    chosen = run_cli("compare", "logistic", "deepchrome", "logistic-s2", "--plot", svg, "--plot-cell", "sim02",
                     "-f", "tsv", "-q", env=env)
    assert chosen.code == 0, chosen.stderr
    assert_plot_covers_every_pair(svg, payload, cell="sim02")
    assert pairs == [("logistic", "deepchrome"), ("logistic", "logistic-s2"), ("deepchrome", "logistic-s2")]
    for test in ("wilcoxon_p", "ttest_p"):
        raw = np.array([p["summary"][test] for p in payload["pairs"]])
        order = np.argsort(raw)
        expected = np.minimum(1, np.maximum.accumulate(raw[order] * (3 - np.arange(3))))
        holm = np.empty(3)
        holm[order] = expected
        assert [p["summary"][f"{test}_holm"] for p in payload["pairs"]] == pytest.approx(list(holm))
    summary_rows = parse_tsv(run_cli("compare", "logistic", "deepchrome", "logistic-s2", "--summary", "-f", "tsv",
                                     "-q", env=env).stdout)
    assert [(r["model_a"], r["model_b"]) for r in summary_rows] == pairs
    cell_rows = parse_tsv(run_cli("compare", "logistic", "deepchrome", "logistic-s2", "-f", "tsv", "-q",
                                  env=env).stdout)
    assert len(cell_rows) == 9 and list(cell_rows[0])[:3] == ["model_a", "model_b", "cell"]


def test_identical_predictions_give_a_defined_result(workspace, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(workspace.models, models)
    for cell in ("sim01", "sim02", "sim03"):
        entry = Registry(models).get("logistic", cell)
        twin = models / "twin" / cell
        shutil.copytree(entry.path, twin)
        config = json.loads((twin / "config.json").read_text())
        config["name"] = "twin"
        (twin / "config.json").write_text(json.dumps(config))
    env = {"HISTCLI_STORE": str(workspace.store), "HISTCLI_MODELS": str(models)}
    result = run_cli("compare", "logistic", "twin", "-f", "json", env=env)
    assert result.code == 0, result.stderr
    payload = json.loads(result.stdout)
    for c in payload["cells"]:
        assert c["delta_auc"] == 0 and c["delong_p"] == 1.0 and c["q"] == 1.0
    summary = payload["summary"]
    assert (summary["wins"], summary["ties"], summary["losses"]) == (0, 3, 0)
    assert summary["wilcoxon_p"] == 1.0 and summary["ttest_p"] == 1.0
    assert "Traceback" not in result.stderr


def test_single_cell_has_no_across_cell_test(workspace):
    result = workspace.run("compare", "logistic", "deepchrome", "--cell", "sim02", "-f", "json")
    assert result.code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert len(payload["cells"]) == 1 and payload["cells"][0]["delong_p"] is not None
    assert payload["summary"]["n_cells"] == 1
    assert payload["summary"]["wilcoxon_p"] is None and payload["summary"]["ttest_p"] is None
    assert any("no across-cell test" in note for note in payload["notes"])
    table = workspace.run("compare", "logistic", "deepchrome", "--cell", "sim02", "-f", "table").stdout
    assert "too few cells for a test" in table
    assert "Wilcoxon None" not in table
    # Who won is said by name, the same way in the verdict and in the counts.
    delta = payload["cells"][0]["delta_auc"]
    winner, loser = ("logistic", "deepchrome") if delta > 0 else ("deepchrome", "logistic")
    assert f"{winner} > {loser} in 1/1 cells" in table
    assert f"higher AUC: logistic in {int(delta > 0)}, deepchrome in {int(delta < 0)}, tied in 0" in table


def test_verdict_and_plot(workspace, tmp_path):
    pytest.importorskip("matplotlib")
    plot = tmp_path / "compare.png"
    result = workspace.run("compare", "logistic", "deepchrome", "-f", "table", "--plot", plot, "--roc-cell", "sim01")
    assert result.code == 0, result.stderr
    assert " cells, Wilcoxon p = " in result.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = tmp_path / "compare.svg"
    result = workspace.run("compare", "logistic", "deepchrome", "--plot", svg, "-f", "json", "-q")
    assert result.code == 0, result.stderr
    assert b"<svg" in svg.read_bytes()[:400]
    payload = json.loads(result.stdout)
    assert_plot_covers_every_pair(svg, payload)
    # The median difference is A's minus B's whoever leads: the verdict says so.
    summary = payload["summary"]
    assert summary["verdict"].endswith(f"median ΔAUC (logistic − deepchrome) = {summary['median_delta']:+.4f}")
    assert_one_line_error(workspace.run("compare", "logistic", "deepchrome", "--plot", tmp_path / "x.gif"),
                          ".png, .svg or .pdf", code=2)


def test_models_on_different_bins_are_refused_clearly(workspace, tmp_path):
    store, models = tmp_path / "store.h5", tmp_path / "models"
    env = {"HISTCLI_STORE": str(store), "HISTCLI_MODELS": str(models)}
    assert run_cli("prepare", "simulate", "--cells", 1, "--genes", 300, "--bins", 20, "-q", env=env).code == 0
    assert run_cli("train", "--cell", "sim01", "--arch", "logistic", "--epochs", 1, "-q", env=env).code == 0
    (models / "ten" / "sim01").mkdir(parents=True)
    shutil.copytree(models / "logistic" / "sim01", models / "ten" / "sim01", dirs_exist_ok=True)
    config = json.loads((models / "ten" / "sim01" / "config.json").read_text())
    config["name"], config["input"]["n_bins"] = "ten", 10
    (models / "ten" / "sim01" / "config.json").write_text(json.dumps(config))
    result = run_cli("compare", "logistic", "ten", env=env)
    assert_one_line_error(result, "expects 10 bins", "sim01 has 20 bins")
    assert_one_line_error(run_cli("compare", "logistic", env=env), "at least two model names", code=2)
    assert_one_line_error(run_cli("compare", "logistic", "logistic", env=env), "each model may be named once", code=2)


def test_constant_labels_and_empty_splits_give_notes_not_crashes(workspace, tmp_path):
    import numpy as np

    from histcli.store import CellData, Store

    store, models = tmp_path / "store.h5", tmp_path / "models"
    copy_store(workspace.store, store)
    shutil.copytree(workspace.models, models)
    sim03 = Store(store).load("sim03")
    flat = CellData(name="sim03", counts=sim03.counts, gene_ids=sim03.gene_ids, marks=sim03.marks,
                    bin_size=sim03.bin_size, window=sim03.window, tss_offset=sim03.tss_offset, split=sim03.split,
                    labels=np.zeros(sim03.n_genes, dtype=np.int8))
    Store(store).write([flat], overwrite=True)
    env = {"HISTCLI_STORE": str(store), "HISTCLI_MODELS": str(models)}
    result = run_cli("compare", "logistic", "deepchrome", "--allow-changed-data", "-f", "json", env=env)
    assert result.code == 0, result.stderr
    payload = json.loads(result.stdout)
    row = {c["cell"]: c for c in payload["cells"]}["sim03"]
    assert row["auc_logistic"] is None and row["delong_p"] is None and row["q"] is None
    assert payload["summary"]["n_cells"] == 2
    assert any("sim03: the test genes all have label 0" in note for note in payload["notes"])
    # The simulated cells have no unsplit genes.
    empty = run_cli("compare", "logistic", "deepchrome", "--split", "none", "--allow-changed-data", "-f", "json",
                    env=env)
    assert empty.code == 0, empty.stderr
    payload = json.loads(empty.stdout)
    assert payload["summary"]["n_cells"] == 0
    assert any("cell sim01: no unsplit genes (split none); cell left out" in note for note in payload["notes"])
    # Nothing to plot: the plot fails before any table is written.
    plot = tmp_path / "nothing.png"
    refused = run_cli("compare", "logistic", "deepchrome", "--split", "none", "--allow-changed-data", "--plot", plot,
                      env=env)
    assert_one_line_error(refused, "plot: no cell has a defined AUC for both models of a pair")
    assert refused.stdout == "" and not plot.exists()


def test_the_terminal_layout_is_one_table_per_pair_within_80_columns(monkeypatch):
    """Long model names and three pairs: every value readable at 80 columns, a row per cell."""
    import io

    from rich.console import Console

    from histcli import output
    from histcli.cli.compare import _print_rich
    from histcli.comparison import Comparison, PairComparison
    from histcli.stats import PairedSummary

    buffer = io.StringIO()
    monkeypatch.setattr(output, "console", lambda stderr=False: Console(file=buffer, width=80, no_color=True,
                                                                         highlight=False))
    monkeypatch.setattr(output, "stdout_is_terminal", lambda: True)
    models, cells = ["attentivechrome", "deepchrome-x5", "logistic"], ["E003", "E004", "E116"]
    values = {cell: {model: 0.85 + 0.01 * i + 0.001 * j for j, model in enumerate(models)}
              for i, cell in enumerate(cells)}
    pairs = []
    for a, b in [(models[0], models[1]), (models[0], models[2]), (models[1], models[2])]:
        pair = PairComparison(a, b, "auc")
        for cell in cells:
            delta = values[cell][a] - values[cell][b]
            pair.cells.append({"cell": cell, "n": 6600, "positives": 3300, "auc_a": values[cell][a],
                               "auc_b": values[cell][b], "delta_auc": delta, "ci_low": delta - 0.004,
                               "ci_high": delta + 0.004, "delong_z": -1.5, "delong_p": 0.1234, "q": 0.1851})
        pair.summary = PairedSummary(n_cells=3, wins=0, ties=0, losses=3, wilcoxon_p=0.25, wilcoxon_method="exact",
                                     median_delta=-0.001, median_delta_ci_low=-0.002, median_delta_ci_high=-0.001,
                                     mean_a=0.86, mean_b=0.861, ttest_p=0.01, rank_biserial=-1.0)
        pairs.append(pair)
    _print_rich(Comparison(models, cells, values, pairs, ["a note"], "auc"), "test")
    text = buffer.getvalue()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    for pair in pairs:
        title = f"AUC, A = {pair.model_a} vs B = {pair.model_b}, test genes"
        assert title in text
        table = text.split(title)[1]
        header = table.splitlines()[1].split()
        assert header[:4] == ["cell", "n", "A", "B"]
        for row in pair.cells:
            line = next(line.split() for line in table.splitlines() if line.split()[:1] == [row["cell"]])
            assert line[:5] == [row["cell"], "6600", f"{row['auc_a']:.4f}", f"{row['auc_b']:.4f}",
                                f"{row['delta_auc']:.4f}"]
    assert "note: a note" in text


def test_unknown_model_or_cell_names_what_the_registry_has(workspace):
    """The models and cells named in the message are the registry's, listed independently here."""
    registry = Registry(workspace.models)
    known_models = ", ".join(sorted(p.name for p in workspace.models.iterdir() if p.is_dir() and p.name[0] != "."))
    assert_one_line_error(workspace.run("compare", "logistic", "nosuch"), "no model 'nosuch'", known_models)
    assert_one_line_error(workspace.run("report", "nosuch", "logistic", "-o", workspace.folder / "never.html"),
                          "no model 'nosuch'", known_models)
    known_cells = ", ".join(sorted(p.name for p in (workspace.models / "deepchrome").iterdir()))
    assert registry.cells("deepchrome") == known_cells.split(", ")
    assert_one_line_error(workspace.run("compare", "logistic", "deepchrome", "--cell", "sim09"),
                          "model 'logistic' has no entry for cell 'sim09'", f"it has {known_cells}")
    assert not (workspace.folder / "never.html").exists()


def test_a_cell_missing_from_the_store_is_named_before_any_work(workspace, tmp_path):
    store = tmp_path / "store.h5"
    copy_store(workspace.store, store)
    assert run_cli("store", "rm", "sim03", "--store", store).code == 0
    env = {"HISTCLI_STORE": str(store), "HISTCLI_MODELS": str(workspace.models)}
    for command in (("compare", "logistic", "deepchrome"), ("report", "logistic", "deepchrome", "-o", tmp_path / "r.html")):
        result = run_cli(*command, env=env)
        assert_one_line_error(result, "lacks the cell(s) the models were trained on",
                              "sim03 (trained on by logistic, deepchrome)", "cells in the store: sim01, sim02")
        assert result.stdout == ""
    assert not (tmp_path / "r.html").exists()


def test_plot_cell_without_plot_is_refused(workspace):
    result = workspace.run("compare", "logistic", "deepchrome", "--plot-cell", "sim01")
    assert_one_line_error(result, "--plot-cell goes with --plot", code=2)
    assert result.stdout == ""


def test_a_plot_is_never_written_over_the_store_or_into_a_compared_models_folder(workspace):
    weights = workspace.models / "logistic" / "sim01" / "weights.safetensors"
    for target, said in ((workspace.models / "logistic" / "plot.png", "is inside model 'logistic''s folder"),
                         (workspace.store.parent / f"{workspace.store.name}.cells" / "plot.png",
                          "is inside the store's cell folder")):
        result = workspace.run("compare", "logistic", "deepchrome", "--plot", target)
        assert_one_line_error(result, f"--plot {target}", said, "the plot would replace part of it", code=2)
        assert result.stdout == "" and not target.exists()
    assert weights.is_file()


def test_allowed_changed_data_is_warned_once_per_model_and_cell(workspace, tmp_path):
    store = tmp_path / "store.h5"
    copy_store(workspace.store, store)
    env = {"HISTCLI_STORE": str(store), "HISTCLI_MODELS": str(workspace.models)}
    result = run_cli("prepare", "simulate", "--cells", 1, "--genes", 900, "--bins", 20, "--seed", 99,
                     "--overwrite", "-q", env=env)
    assert result.code == 0, result.stderr
    now = Store(store).fingerprint("sim01")[:12]
    registry = Registry(workspace.models)
    # --plot scores the cell a second time: still one warning each.
    result = run_cli("compare", "logistic", "deepchrome", "--cell", "sim01", "--cell", "sim02", "--allow-changed-data",
                     "--plot", tmp_path / "plot.svg", "-f", "json", env=env)
    assert result.code == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("histcli: warning:")]
    assert warnings == [
        f"histcli: warning: cell sim01 in {store} changed since model {model!r} was trained on it (fingerprint "
        f"{registry.get(model, 'sim01').data.fingerprint[:12]} then, {now} now); evaluated anyway "
        "(--allow-changed-data)" for model in ("logistic", "deepchrome")]


def test_one_models_constant_predictions_leave_the_cell_out_of_its_pairs_only(monkeypatch):
    """Three regressors, one predicting a constant: its Pearson r is undefined, but the other two still compare
    on every cell (each model's value is its own), and the note names the model whose r is undefined."""
    from types import SimpleNamespace

    from histcli import comparison
    from histcli.evaluation import Predictions
    from histcli.tasks import make_task

    rng = np.random.default_rng(3)
    cells = ["c1", "c2", "c3", "c4", "c5"]
    measured = {cell: rng.normal(size=40) for cell in cells}
    scores = {(model, cell): measured[cell] + rng.normal(scale=noise, size=40)
              for cell in cells for model, noise in (("a", 0.5), ("b", 1.0))}
    scores.update({("flat", cell): np.full(40, 1.5) for cell in cells})
    task = make_task("regression", None)
    registry = SimpleNamespace(require_cells=lambda model: cells,
                               get=lambda model, cell: SimpleNamespace(model=model, name=model, cell=cell, task=task))
    monkeypatch.setattr(comparison, "check_cells_stored", lambda store, entries: None)
    monkeypatch.setattr(comparison, "predictions_for", lambda entry, store, cell, split, **_: Predictions(
        entry.model, cell, cell, split, np.arange(40).astype(str), None, scores[(entry.model, cell)], measured[cell],
        task))

    result = comparison.compare(None, registry, ["flat", "a", "b"], metric="pearson")
    pair = {(p.model_a, p.model_b): p for p in result.pairs}[("a", "b")]
    assert pair.summary.n_cells == 5
    for row in pair.cells:
        assert row["pearson_a"] == pytest.approx(stats.pearsonr(measured[row["cell"]], scores[("a", row["cell"])])[0])
        assert row["pearson_b"] == pytest.approx(stats.pearsonr(measured[row["cell"]], scores[("b", row["cell"])])[0])
        assert row["steiger_p"] is not None
    assert {(p.model_a, p.model_b): p.summary.n_cells for p in result.pairs} == {
        ("flat", "a"): 0, ("flat", "b"): 0, ("a", "b"): 5}
    # Named as the second model too (its note was dropped before).
    second = comparison.compare(None, registry, ["a", "flat"], metric="pearson")
    assert "cell c1: Pearson r of flat undefined (constant values); cell left out of its tests" in second.notes


def test_summary_lines_fold_long_model_names_within_the_panel():
    """A phrase longer than the panel (two long model names) was left to rich, which wrapped it flush left,
    splitting "= -0.0481" and "(ties 0)"; now it breaks between words, indented, at most the panel's width."""
    from histcli.cli.compare import fold_phrases

    a, b = "crnn-dropout0.3-units64-lr3e-4-seedsweep", "logistic-with-a-rather-long-descriptive-name"
    verdict = (f"{a} and {b} each ahead in 1/2 cells (ties 0), Wilcoxon p = 1, Holm-adjusted p = 1; "
               f"median ΔAUC ({a} − {b}) = -0.0481")
    assert fold_phrases(verdict, 76) == [
        f"{a} and",
        f"  {b} each ahead in 1/2 cells",
        "  (ties 0),",
        "  Wilcoxon p = 1, Holm-adjusted p = 1;",
        f"  median ΔAUC ({a} −",
        f"  {b}) = -0.0481",
    ]
    short = "logistic > crnn in 2/2 cells, Wilcoxon p = 0.5; median ΔAUC (logistic − crnn) = +0.0511"
    assert fold_phrases(short, 76) == ["logistic > crnn in 2/2 cells, Wilcoxon p = 0.5;",
                                       "  median ΔAUC (logistic − crnn) = +0.0511"]
