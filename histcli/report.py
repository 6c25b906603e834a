"""One self-contained HTML page of an evaluation and comparison of registry models.

Every number comes from the library functions behind ``evaluate``
(``histcli.evaluation``) and ``compare`` (``histcli.comparison``); this module
only arranges them. Figures are plotly figures drawn by plotly.js, which is
embedded once in the page (the ``report`` extra), with the data as JSON beside
it; a Content-Security-Policy forbids any request to another host, so the page
works offline and cannot leak a request when opened.
"""

from __future__ import annotations

import datetime
import html
import json
import platform
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from histcli.errors import ChoiceError, MissingExtraError
from histcli.registry import Entry, Registry
from histcli.store import Store

if TYPE_CHECKING:
    from histcli.comparison import Comparison

METRICS = (("auc", "AUC"), ("auprc", "AUPRC"), ("accuracy", "accuracy"))
# Curves are drawn from at most this many points each (evenly spaced along the curve,
# both ends kept): 56 cells x 3 models of full curves would weigh tens of megabytes.
CURVE_POINTS = 300
EXPLAIN_METHODS = ("saliency", "integrated-gradients", "deeplift", "gradient-shap", "occlusion")
# plotly's default colours, so a run's line and its best-epoch star share one.
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
# Browsers refuse anything the page does not carry itself.
CONTENT_POLICY = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                  "img-src data:; font-src data:")


def require_plotly():
    """plotly.js as text, or a one-line error saying how to install the extra."""
    try:
        from plotly.offline import get_plotlyjs
    except ImportError:
        raise MissingExtraError("plotly", "report", "histcli report") from None
    return get_plotlyjs()


def check_explain_method(method: str) -> None:
    if method not in EXPLAIN_METHODS:
        raise ChoiceError("explain_method", method, EXPLAIN_METHODS)


def check_output(path: Path) -> None:
    """Fail before any work if the report cannot be written at ``path`` (nothing is created)."""
    from histcli.fsutil import check_output_path

    check_output_path(path, "the report")


@dataclass
class ReportInputs:
    """What the page shows, gathered from the library."""

    title: str
    models: list[str]
    cells: list[str]
    split: str
    store: Store
    registry: Registry
    entries: dict[str, dict[str, Entry]]  # model -> cell -> entry
    rows: list[dict]  # evaluation_rows
    summaries: dict[str, list[dict]]  # metric -> summarise(rows, metric)
    comparison: Comparison | None  # None for one model
    curves: dict[str, dict[str, dict]]  # cell -> model -> {"roc": (fpr, tpr), "pr": (recall, precision)}
    attributions: dict[str, dict[str, dict]] = field(default_factory=dict)  # model -> cell -> heatmap
    explain_method: str | None = None
    notes: list[str] = field(default_factory=list)


def gather(store: Store, registry: Registry, models: list[str], cells: list[str] | None = None, *,
           split: str = "test", title: str | None = None, device: str = "auto", allow_changed: bool = False,
           seed: int = 0, explain: str | None = None, explain_genes: int = 500, on_progress=None) -> ReportInputs:
    """Evaluate and compare ``models`` on their common cells (or ``cells``) through the library.

    ``explain``: an attribution method of ``histcli explain`` whose mean signed attribution over
    at most ``explain_genes`` genes of the split is drawn per model and cell.
    ``on_progress(step)`` is called with a short description before each stage.
    """
    from histcli.comparison import common_cells, compare
    from histcli.evaluation import evaluation_rows, predictions_for, summarise
    from histcli.metrics import precision_recall_curve, roc_curve
    from histcli.splits import check_split_choice

    models = list(dict.fromkeys(models))
    check_split_choice(split)
    if explain is not None:
        check_explain_method(explain)
    progress = on_progress or (lambda step: None)
    chosen, notes = common_cells(registry, models, cells)
    entries = {model: {cell: registry.get(model, cell) for cell in chosen} for model in models}
    progress("evaluating")
    rows = evaluation_rows([entries[m][c] for m in models for c in chosen], store, split, device=device,
                           allow_changed=allow_changed)
    summaries = {metric: summarise(rows, metric) for metric, _ in METRICS}
    comparison = None
    if len(models) > 1:
        progress("comparing")
        comparison = compare(store, registry, models, chosen, metric="auc", split=split, device=device,
                             allow_changed=allow_changed, seed=seed)
        notes += comparison.notes
    curves: dict[str, dict[str, dict]] = {}
    for cell in chosen:
        curves[cell] = {}
        for model in models:
            predictions = predictions_for(entries[model][cell], store, cell, split, device=device,
                                          allow_changed=allow_changed)
            labels = predictions.labels
            if labels is None or len(labels) == 0 or labels.min() == labels.max():
                continue  # no curve without both classes
            fpr, tpr, _ = roc_curve(labels, predictions.scores)
            precision, recall, _ = precision_recall_curve(labels, predictions.scores)
            curves[cell][model] = {"roc": thin(fpr, tpr), "pr": thin(recall, precision)}
    inputs = ReportInputs(
        title=title or f"histcli report: {' vs '.join(models)}", models=models, cells=chosen, split=split,
        store=store, registry=registry, entries=entries, rows=rows, summaries=summaries, comparison=comparison,
        curves=curves, notes=list(dict.fromkeys(notes)), explain_method=explain,
    )
    if explain is not None:
        progress(f"explaining ({explain})")
        inputs.attributions = attribution_maps(store, entries, chosen, explain, split=split,
                                               max_genes=explain_genes, device=device)
    return inputs


def thin(x: np.ndarray, y: np.ndarray, points: int = CURVE_POINTS) -> tuple[list, list]:
    """At most ``points`` points of a curve, evenly spaced by index, both ends kept, 5 decimals."""
    if len(x) > points:
        keep = np.unique(np.linspace(0, len(x) - 1, points).round().astype(int))
        x, y = x[keep], y[keep]
    return np.round(x, 5).tolist(), np.round(y, 5).tolist()


def attribution_maps(store: Store, entries: dict[str, dict[str, Entry]], cells: list[str], method: str, *,
                     split: str, max_genes: int, device: str) -> dict[str, dict[str, dict]]:
    """Per model and cell: the mean signed attribution (marks x bins) of ``histcli explain --summary``
    over at most ``max_genes`` genes of the split (evenly spaced through the cell), against zero reads."""
    from histcli.explanation import Explainer, Summary, explain_genes, prepare_cell, require_captum
    from histcli.training import resolve_device

    require_captum()
    resolved = resolve_device(device)
    maps: dict[str, dict[str, dict]] = {model: {} for model in entries}
    for cell in cells:
        data = store.load(cell)
        for model, by_cell in entries.items():
            entry = by_cell[cell]
            chosen = prepare_cell(entry, data, "zeros", split=None if split == "all" else split)
            if len(chosen.gene_ids) > max_genes:
                keep = np.unique(np.linspace(0, len(chosen.gene_ids) - 1, max_genes).round().astype(int))
                chosen = replace(chosen, inputs=chosen.inputs[keep], counts=chosen.counts[keep],
                                 gene_ids=chosen.gene_ids[keep],
                                 labels=None if chosen.labels is None else chosen.labels[keep])
            summary = Summary(chosen.marks, chosen.positions, ["all"])
            explain_genes(Explainer(entry, method, chosen.baseline, device=resolved), chosen, summary=summary)
            maps[model][cell] = {"marks": chosen.marks, "positions": chosen.positions.tolist(),
                                 "mean": summary.mean("all").T.tolist(), "n_genes": summary.counts["all"]}
    return maps


# ---------------------------------------------------------------- figures (plotly JSON)

def _layout(title: str, x: str, y: str, **extra) -> dict:
    layout = {"title": {"text": title, "font": {"size": 14}}, "xaxis": {"title": {"text": x}},
              "yaxis": {"title": {"text": y}}, "margin": {"l": 60, "r": 20, "t": 40, "b": 50},
              "height": 380, "hovermode": "closest"}
    layout.update(extra)
    return layout


def scatter_figures(inputs: ReportInputs) -> list[dict]:
    """Per pair: AUC of model A against model B, one point per cell (hover names the cell)."""
    figures = []
    if inputs.comparison is None:
        return figures
    for index, pair in enumerate(inputs.comparison.pairs):
        usable = [row for row in pair.cells if row["auc_a"] is not None]
        values = [r["auc_a"] for r in usable] + [r["auc_b"] for r in usable]
        low = min(values + [0.5]) - 0.01
        traces = [
            {"type": "scatter", "mode": "markers", "name": "cells", "x": [r["auc_b"] for r in usable],
             "y": [r["auc_a"] for r in usable], "text": [r["cell"] for r in usable],
             "hovertemplate": f"%{{text}}<br>{pair.model_b} %{{x:.4f}}<br>{pair.model_a} %{{y:.4f}}<extra></extra>",
             "marker": {"size": 8}},
            {"type": "scatter", "mode": "lines", "name": "equal AUC", "x": [low, 1], "y": [low, 1],
             "hoverinfo": "skip", "line": {"dash": "dash", "color": "grey", "width": 1}},
        ]
        figures.append({"id": f"fig-scatter-{index}", "kind": "scatter", "data": traces,
                        "layout": _layout(f"AUC per cell: {pair.model_a} vs {pair.model_b}", f"AUC {pair.model_b}",
                                          f"AUC {pair.model_a}", showlegend=False, width=460, height=420)})
    return figures


def delta_figure(inputs: ReportInputs) -> dict | None:
    """Per-cell ΔAUC with its DeLong 95% CI, one trace per pair."""
    if inputs.comparison is None:
        return None
    traces = []
    for pair in inputs.comparison.pairs:
        usable = [row for row in pair.cells if row["delta_auc"] is not None]
        traces.append({
            "type": "scatter", "mode": "markers", "name": f"{pair.model_a} − {pair.model_b}",
            "x": [r["cell"] for r in usable], "y": [r["delta_auc"] for r in usable],
            "error_y": {"type": "data", "symmetric": False, "array": [r["ci_high"] - r["delta_auc"] for r in usable],
                        "arrayminus": [r["delta_auc"] - r["ci_low"] for r in usable]},
            "customdata": [[r["ci_low"], r["ci_high"], r["q"]] for r in usable],
            "hovertemplate": "%{x}<br>ΔAUC %{y:+.4f}<br>95% CI [%{customdata[0]:+.4f}, %{customdata[1]:+.4f}]"
                             "<br>q %{customdata[2]:.3g}<extra>%{fullData.name}</extra>",
        })
    layout = _layout("ΔAUC per cell with DeLong 95% CI", "cell", "ΔAUC",
                     shapes=[{"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": 0, "y1": 0,
                              "line": {"color": "grey", "dash": "dash", "width": 1}}])
    return {"id": "fig-delta", "kind": "delta", "data": traces, "layout": layout}


def curve_figures(inputs: ReportInputs) -> list[dict]:
    """ROC and precision-recall curves, one figure per cell shown by the cell selector."""
    roc, pr = {}, {}
    for cell in inputs.cells:
        auc = {row["model"]: row for row in inputs.rows if row["cell"] == cell}
        roc_traces, pr_traces = [], []
        for model, curve in inputs.curves[cell].items():
            roc_traces.append({"type": "scatter", "mode": "lines", "x": curve["roc"][0], "y": curve["roc"][1],
                               "name": f"{model} (AUC {auc[model]['auc']:.3f})"})
            pr_traces.append({"type": "scatter", "mode": "lines", "x": curve["pr"][0], "y": curve["pr"][1],
                              "name": f"{model} (AUPRC {auc[model]['auprc']:.3f})"})
        roc_traces.append({"type": "scatter", "mode": "lines", "x": [0, 1], "y": [0, 1], "name": "chance",
                           "hoverinfo": "skip", "line": {"dash": "dash", "color": "grey", "width": 1}})
        legend = {"x": 0.98, "xanchor": "right", "y": 0.02, "yanchor": "bottom"}
        roc[cell] = {"data": roc_traces, "layout": _layout(f"ROC, {cell}", "false positive rate",
                                                           "true positive rate", legend=legend, width=460)}
        pr[cell] = {"data": pr_traces, "layout": _layout(f"precision-recall, {cell}", "recall", "precision",
                                                         legend={**legend, "y": 0.02}, width=460)}
    return [{"id": "fig-roc", "kind": "roc", "by_cell": roc}, {"id": "fig-pr", "kind": "pr", "by_cell": pr}]


def training_runs(entry: Entry) -> list[dict]:
    """The training runs of an entry: itself, or each member of a seed ensemble."""
    if entry.members:
        return [{"label": f"seed {m.get('seed')}", **m} for m in entry.members]
    return [{"label": "", **entry.metadata}]


def training_figure(inputs: ReportInputs) -> dict:
    """Validation AUC per epoch for the selected cell, best epochs starred, non-converged runs dotted."""
    by_cell = {}
    for cell in inputs.cells:
        traces = []
        runs = [(model, run) for model in inputs.models for run in training_runs(inputs.entries[model][cell])]
        for index, (model, run) in enumerate(runs):
            colour = COLOURS[index % len(COLOURS)]
            history = run.get("history") or []
            # Regression models are selected on Pearson r: their curve shows it, and says so.
            metric = inputs.entries[model][cell].selection_metric
            key = f"valid_{metric}"
            name = f"{model} {run['label']}".strip() + ("" if metric == "auc" else f" ({metric})")
            if run.get("converged") is False:
                name += " (not converged)"
            traces.append({"type": "scatter", "mode": "lines", "name": name, "legendgroup": name,
                           "x": [h["epoch"] for h in history], "y": [h.get(key) for h in history],
                           "line": {"dash": "dot" if run.get("converged") is False else "solid", "color": colour}})
            best = next((h for h in history if h["epoch"] == run.get("best_epoch")), None)
            if best is not None:
                traces.append({"type": "scatter", "mode": "markers", "name": f"{name}: best epoch",
                               "legendgroup": name, "showlegend": False, "x": [best["epoch"]],
                               "y": [best.get(key)], "marker": {"symbol": "star", "size": 12, "color": colour},
                               "hovertemplate": f"{name}<br>best epoch %{{x}}<br>valid {metric} %{{y:.4f}}"
                                                "<extra></extra>"})
        by_cell[cell] = {"data": traces, "layout": _layout(f"validation AUC per epoch, {cell} (★ best epoch)",
                                                           "epoch", "validation AUC")}
    return {"id": "fig-training", "kind": "training", "by_cell": by_cell}


def attribution_figures(inputs: ReportInputs) -> list[dict]:
    """Per model, the mark x position heatmap of the mean signed attribution for the selected cell."""
    figures = []
    for index, (model, by_cell) in enumerate(inputs.attributions.items()):
        cells = {}
        for cell, heat in by_cell.items():
            limit = float(np.nanmax(np.abs(heat["mean"]))) or 1.0
            cells[cell] = {
                "data": [{"type": "heatmap", "z": np.round(heat["mean"], 6).tolist(), "x": heat["positions"],
                          "y": heat["marks"], "zmid": 0, "zmin": -limit, "zmax": limit,
                          # plotly's RdBu runs blue to red: positive attributions red, as in explain --plot.
                          "colorscale": "RdBu", "colorbar": {"title": {"text": "logit"}},
                          "hovertemplate": "%{y} at %{x} bp<br>mean attribution %{z:.4g}<extra></extra>"}],
                "layout": _layout(f"{model} on {cell}: mean {inputs.explain_method} attribution, "
                                  f"{heat['n_genes']} {inputs.split} genes", "position relative to the TSS (bp)",
                                  "", height=300, yaxis={"autorange": "reversed"},
                                  margin={"l": 90, "r": 20, "t": 40, "b": 50}),
            }
        figures.append({"id": f"fig-explain-{index}", "kind": "explain", "by_cell": cells})
    return figures


# ---------------------------------------------------------------- HTML

def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "NA"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) >= 10 ** -digits or value == 0 else f"{value:.2g}"
    return str(value)


def _cell_td(value, digits: int = 4) -> str:
    """A table cell holding the full-precision value in data-value (sorting and tests read it)."""
    raw = "" if value is None else repr(float(value)) if isinstance(value, float) else str(value)
    return f'<td data-value="{_e(raw)}">{_e(_fmt(value, digits))}</td>'


def metrics_table(inputs: ReportInputs) -> str:
    by_key = {(row["model"], row["cell"]): row for row in inputs.rows}
    head = ['<th data-type="text">cell</th>', '<th>n</th>', '<th>positives</th>']
    head += [f"<th>{_e(label)} {_e(model)}</th>" for model in inputs.models for _, label in METRICS]
    body = []
    for cell in inputs.cells:
        first = by_key[(inputs.models[0], cell)]
        tds = [f'<td data-value="{_e(cell)}">{_e(cell)}</td>', _cell_td(first["n"]), _cell_td(first["positives"])]
        tds += [_cell_td(by_key[(model, cell)][metric]) for model in inputs.models for metric, _ in METRICS]
        body.append(f'<tr data-cell="{_e(cell)}">{"".join(tds)}</tr>')
    foot = []
    for statistic in ("mean", "median"):
        tds = [f"<th>{statistic}</th>", "<td></td>", "<td></td>"]
        for model in inputs.models:
            for metric, _ in METRICS:
                summary = next(s for s in inputs.summaries[metric] if s["model"] == model)
                tds.append(_cell_td(summary[f"{statistic}_{metric}"]))
        foot.append(f'<tr class="summary" data-statistic="{statistic}">{"".join(tds)}</tr>')
    return (f'<table id="metrics" class="sortable"><thead><tr>{"".join(head)}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody><tfoot>{"".join(foot)}</tfoot></table>')


def pair_section(block: dict, index: int) -> str:
    """One pair of ``histcli.comparison.pair_payload``: verdict, across-cell tests, per-cell table."""
    s, model_a, model_b = block["summary"], block["model_a"], block["model_b"]
    ci = ("n/a" if s["median_delta_ci_low"] is None
          else f"[{s['median_delta_ci_low']:+.4f}, {s['median_delta_ci_high']:+.4f}]")
    facts = [
        ("cells tested", s["n_cells"]),
        (f"higher AUC: {model_a} / {model_b} / tied", f"{s['wins']} / {s['losses']} / {s['ties']}"),
        ("mean AUC", f"{_fmt(s['mean_a'])} vs {_fmt(s['mean_b'])}"),
        ("median ΔAUC (95% bootstrap CI)", f"{_fmt(s['median_delta'])} {ci}"),
        ("Wilcoxon signed-rank p", _fmt(s["wilcoxon_p"], 3) + (f" ({s['wilcoxon_method']})" if s["wilcoxon_method"] else "")),
        ("Wilcoxon p, Holm-adjusted over pairs", _fmt(s["wilcoxon_p_holm"], 3)),
        ("paired t-test p", _fmt(s["ttest_p"], 3)),
        ("paired t-test p, Holm-adjusted", _fmt(s["ttest_p_holm"], 3)),
        ("rank-biserial r", _fmt(s["rank_biserial"], 3)),
    ]
    dl = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts)
    keys = [f"auc_{model_a}", f"auc_{model_b}", "delta_auc", "ci_low", "ci_high", "delong_p", "q"]
    head = ['<th data-type="text">cell</th>', "<th>n</th>", f"<th>AUC {_e(model_a)}</th>",
            f"<th>AUC {_e(model_b)}</th>", "<th>ΔAUC</th>", "<th>CI low</th>", "<th>CI high</th>",
            "<th>DeLong p</th>", "<th>q (BH)</th>"]
    body = []
    for row in block["cells"]:
        tds = [f'<td data-value="{_e(row["cell"])}">{_e(row["cell"])}</td>', _cell_td(row["n"])]
        tds += [_cell_td(row[key], 3 if key in ("delong_p", "q") else 4) for key in keys]
        body.append(f'<tr data-cell="{_e(row["cell"])}">{"".join(tds)}</tr>')
    return (f'<h3>{_e(model_a)} vs {_e(model_b)}</h3><p class="verdict">{_e(s["verdict"])}</p>'
            f'<dl class="facts">{dl}</dl><table id="pair-{index}" class="sortable"><thead><tr>{"".join(head)}</tr>'
            f'</thead><tbody>{"".join(body)}</tbody></table>')


def run_section(inputs: ReportInputs) -> str:
    from importlib.metadata import PackageNotFoundError, version

    from histcli import __version__

    try:
        torch_version = version("torch")
    except PackageNotFoundError:
        torch_version = "not installed"
    facts = [("models", ", ".join(inputs.models)), ("cells", f"{len(inputs.cells)}: {', '.join(inputs.cells)}"),
             ("split", inputs.split), ("store", inputs.store.path), ("registry", inputs.registry.root),
             ("histcli / torch / Python", f"{__version__} / {torch_version} / {platform.python_version()}"),
             ("written", datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat())]
    parts = ['<dl class="facts">' + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts) + "</dl>"]
    rows = []
    for model in inputs.models:
        for cell in inputs.cells:
            entry = inputs.entries[model][cell]
            for run in training_runs(entry):
                converged = run.get("converged")
                flag = {True: "yes", False: "NO", None: "not recorded"}[converged]
                rows.append(
                    f'<tr class="{"warn" if converged is False else ""}"><td>{_e(model)}</td><td>{_e(cell)}</td>'
                    f'<td>{_e(run["label"] or "-")}</td><td>{_e(run.get("best_epoch"))}</td>'
                    f'<td>{_e(run.get("epochs_run", len(run.get("history") or [])))}</td>'
                    f'<td>{_e(_fmt(run.get(f"best_valid_{entry.selection_metric}")))}</td><td>{flag}</td>'
                    f'<td class="mono">{_e((entry.config.get("data") or {}).get("fingerprint", "")[:16])}</td></tr>')
    parts.append('<table id="training-runs"><thead><tr><th>model</th><th>cell</th><th>member</th><th>best epoch</th>'
                 '<th>epochs run</th><th>valid AUC</th><th>converged</th><th>data fingerprint</th></tr></thead>'
                 f'<tbody>{"".join(rows)}</tbody></table>')
    for model in inputs.models:
        entry = inputs.entries[model][inputs.cells[0]]
        config = json.dumps(entry.config, indent=2, sort_keys=False)
        parts.append(f"<details><summary>configuration of {_e(model)} (as resolved for {_e(entry.cell)}; the "
                     f"other cells differ only in cell, store and fingerprint)</summary><pre>{_e(config)}</pre></details>")
    return "".join(parts)


STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:1.5em auto;max-width:1200px;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0}
th,td{padding:.2em .6em;border-bottom:1px solid #e4e4e4;text-align:right}
td:first-child,th:first-child{text-align:left}thead th{background:#f3f3f3;position:sticky;top:0}
table.sortable thead th{cursor:pointer;user-select:none}
th[aria-sort=ascending]::after{content:' ▲'}th[aria-sort=descending]::after{content:' ▼'}
tfoot th,tfoot td{font-weight:600;border-top:2px solid #999}tr.warn td{background:#fff1e6}
dl.facts{display:grid;grid-template-columns:max-content auto;gap:.15em 1em;font-size:.9em}dt{color:#555}dd{margin:0}
.verdict{font-weight:600}.figures{display:flex;flex-wrap:wrap;gap:1em}.figure{min-width:440px;flex:1}
.mono,pre{font-family:ui-monospace,monospace;font-size:.8em}pre{background:#f7f7f7;padding:.6em;overflow:auto;max-height:30em}
.notes{color:#8a4b00;font-size:.9em}.scroll{overflow-x:auto}
"""

SCRIPT = r"""
(function () {
  var report = JSON.parse(document.getElementById('report-data').textContent);
  var config = {displaylogo: false, displayModeBar: false, responsive: true};
  report.figures.forEach(function (f) { Plotly.newPlot(f.id, f.data, f.layout, config); });
  var select = document.getElementById('cell-select');
  function showCell(cell) {
    report.by_cell.forEach(function (f) {
      var spec = f.by_cell[cell];
      if (spec) { Plotly.react(f.id, spec.data, spec.layout, config); }
    });
  }
  if (select) {
    select.addEventListener('change', function () { showCell(select.value); });
    showCell(select.value);
  }
  document.querySelectorAll('table.sortable').forEach(function (table) {
    table.querySelectorAll('thead th').forEach(function (th, column) {
      th.addEventListener('click', function () {
        var ascending = th.getAttribute('aria-sort') !== 'ascending';
        table.querySelectorAll('thead th').forEach(function (other) { other.removeAttribute('aria-sort'); });
        th.setAttribute('aria-sort', ascending ? 'ascending' : 'descending');
        var text = th.getAttribute('data-type') === 'text';
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        function key(row) {
          var raw = row.cells[column].getAttribute('data-value');
          if (text) { return raw; }
          return raw === '' ? null : parseFloat(raw);
        }
        rows.sort(function (a, b) {
          var x = key(a), y = key(b);
          if (x === y) { return 0; }
          if (x === null) { return 1; }  // undefined values last either way
          if (y === null) { return -1; }
          return (x < y ? -1 : 1) * (ascending ? 1 : -1);
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
  });
})();
"""


def render(inputs: ReportInputs, plotly_js: str) -> str:
    """The page: plotly.js once, the figures' JSON, the tables as HTML."""
    from histcli.comparison import json_payload, pair_payload
    from histcli.evaluation import model_summaries
    from histcli.output import clean

    figures = scatter_figures(inputs)
    delta = delta_figure(inputs)
    if delta is not None:
        figures.append(delta)
    by_cell = curve_figures(inputs) + [training_figure(inputs)] + attribution_figures(inputs)
    payload = {"figures": figures, "by_cell": by_cell, "models": inputs.models, "cells": inputs.cells}
    data = json.dumps(clean(payload), separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    # The numbers as `evaluate -f json` and `compare -f json` give them, for anyone who reads the page's source.
    tasks = list({entry.task.name: entry.task for by_cell in inputs.entries.values()
                  for entry in by_cell.values()}.values())
    numbers = {"evaluate": {"rows": inputs.rows, "summary": model_summaries(inputs.rows, tasks)},
               "compare": json_payload(inputs.comparison) if inputs.comparison is not None else None}
    numbers_text = json.dumps(clean(numbers), indent=1, allow_nan=False).replace("</", "<\\/")
    default_cell = max(inputs.cells, key=lambda cell: max(
        (abs(r["delta_auc"]) for r in inputs.comparison.pairs[0].cells if r["cell"] == cell and r["delta_auc"] is not None),
        default=0.0)) if inputs.comparison is not None else inputs.cells[0]
    options = "".join(f'<option value="{_e(c)}"{" selected" if c == default_cell else ""}>{_e(c)}</option>'
                      for c in inputs.cells)
    sections = [f"<h1>{_e(inputs.title)}</h1>", "<h2>The run</h2>", run_section(inputs)]
    if inputs.notes:
        sections.append('<ul class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in inputs.notes) + "</ul>")
    sections += [f"<h2>Per-cell metrics ({_e(inputs.split)} genes)</h2>",
                 "<p>Click a column header to sort; mean and median rows stay below.</p>",
                 f'<div class="scroll">{metrics_table(inputs)}</div>']
    if inputs.comparison is not None:
        sections.append("<h2>Paired comparison</h2><p>Per cell: ΔAUC with its DeLong 95% CI and p, "
                        "Benjamini-Hochberg q across cells. Across cells: Wilcoxon signed-rank and paired t-tests"
                        + (", Holm-corrected over the pairs" if len(inputs.comparison.pairs) > 1 else "") + ".</p>")
        sections += [pair_section(pair_payload(pair), i) for i, pair in enumerate(inputs.comparison.pairs)]
        sections.append('<h2>Across cells</h2><div class="figures">'
                        + "".join(f'<div class="figure" id="{f["id"]}"></div>' for f in figures) + "</div>")
    sections.append(f'<h2>One cell</h2><p><label>cell <select id="cell-select">{options}</select></label> '
                    "(the cell with the largest ΔAUC is shown first)</p>"
                    '<div class="figures">' + "".join(f'<div class="figure" id="{f["id"]}"></div>'
                                                      for f in by_cell if f["kind"] in ("roc", "pr")) + "</div>"
                    '<h3>Training</h3><div id="fig-training"></div>'
                    "<p>Dotted: runs that did not converge (stopped at the epoch cap while still improving).</p>")
    if inputs.attributions:
        sections.append(f"<h3>Attributions ({_e(inputs.explain_method)}, as <code>histcli explain --summary</code>"
                        ")</h3>" + "".join(f'<div id="{f["id"]}"></div>' for f in by_cell if f["kind"] == "explain"))
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_POLICY}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(inputs.title)}</title><style>{STYLE}</style>"
        f"<script>{plotly_js}</script></head><body>{''.join(sections)}"
        f'<script type="application/json" id="report-data">{data}</script>'
        f'<script type="application/json" id="report-numbers">{numbers_text}</script>'
        f"<script>{SCRIPT}</script></body></html>\n"
    )


def write_report(text: str, path: Path) -> None:
    """Write the page atomically: a reader never sees half a file, a failure leaves none."""
    from histcli.errors import InputError
    from histcli.fsutil import atomic_open

    try:
        with atomic_open(Path(path), "w", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as exc:
        raise InputError(path, f"cannot write the report ({exc.strerror})") from None
