"""One self-contained HTML page of an evaluation and comparison of registry models.

Every number comes from the library functions behind ``evaluate``
(``histcli.evaluation``) and ``compare`` (``histcli.comparison``); this module
only arranges them, for classifiers and regression models alike: one metrics
table per task, with that task's metrics, and the paired comparison and its
figures follow compare's metric (AUC, Pearson r or Spearman rho). Figures are
plotly figures drawn by plotly.js, which is embedded once in the page (the
``report`` extra), with the data as JSON beside it; a Content-Security-Policy forbids any request to another host, so the page
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
from histcli.registry import Entry, Registry, model_tasks
from histcli.store import Store

if TYPE_CHECKING:
    from histcli.comparison import Comparison
    from histcli.tasks import Task

# Curves are drawn from at most this many points each (evenly spaced along the curve,
# both ends kept): 56 cells x 3 models of full curves would weigh tens of megabytes.
CURVE_POINTS = 300
# Predicted against measured levels: at most this many genes per model and cell, evenly spaced.
LEVEL_POINTS = 2000
# What each per-cell test of histcli.comparison (CELL_TESTS) compares, in the paired comparison's intro.
TEST_DESCRIPTIONS = {"delong": "DeLong's test for two correlated ROC AUCs (its 95% CI too)",
                     "steiger": "Steiger's test for two correlations that share the measured levels, "
                                "with Zou's 95% CI of their difference"}
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
    """A report explains models of any architecture: explain's methods but attention."""
    from histcli.explanation import ANY_MODEL_METHODS

    if method not in ANY_MODEL_METHODS:
        raise ChoiceError("explain_method", method, ANY_MODEL_METHODS)


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
    # cell -> regression model -> thinned {"gene_ids", "measured", "predicted", "target"}
    levels: dict[str, dict[str, dict]] = field(default_factory=dict)
    attributions: dict[str, dict[str, dict]] = field(default_factory=dict)  # model -> cell -> heatmap
    explain_method: str | None = None
    notes: list[str] = field(default_factory=list)


def gather(store: Store, registry: Registry, models: list[str], cells: list[str] | None = None, *,
           split: str = "test", title: str | None = None, metric: str | None = None, device: str = "auto",
           allow_changed: bool = False, seed: int = 0, explain: str | None = None, explain_genes: int = 500,
           on_progress=None) -> ReportInputs:
    """Evaluate and compare ``models`` on their common cells (or ``cells``) through the library.

    ``metric``: compare's metric (``histcli.comparison.choose_metric``: by default pearson when every
    model is a regressor, else auc).
    ``explain``: an attribution method of ``histcli explain`` whose mean signed attribution over
    at most ``explain_genes`` genes of the split is drawn per model and cell.
    ``on_progress(step)`` is called with a short description before each stage.
    """
    from histcli.comparison import choose_metric, common_cells, compare
    from histcli.evaluation import (
        changed_data_notes,
        evaluation_rows,
        metric_columns,
        predictions_for,
        summarise,
    )
    from histcli.metrics import precision_recall_curve, roc_curve
    from histcli.splits import check_split_choice

    models = list(dict.fromkeys(models))
    check_split_choice(split)
    if explain is not None:
        check_explain_method(explain)
    progress = on_progress or (lambda step: None)
    chosen, notes = common_cells(registry, models, cells)
    entries = {model: {cell: registry.get(model, cell) for cell in chosen} for model in models}
    # Checked before any work (also for one model), on the entries compare checks it on.
    metric = choose_metric(metric, model_tasks(entry for by_cell in entries.values() for entry in by_cell.values()))
    progress("evaluating")
    rows = evaluation_rows([entries[m][c] for m in models for c in chosen], store, split, device=device,
                           allow_changed=allow_changed)  # first names a missing cell with its models
    if allow_changed:  # the page says it, not only the command's stderr
        notes += changed_data_notes([entries[m][c] for m in models for c in chosen], store)
    metrics = metric_columns([entries[m][c].task for m in models for c in chosen])
    summaries = {name: summarise(rows, name) for name in metrics}
    comparison = None
    if len(models) > 1:
        progress("comparing")
        comparison = compare(store, registry, models, chosen, metric=metric, split=split, device=device,
                             allow_changed=allow_changed, seed=seed)
        notes += comparison.notes
    curves: dict[str, dict[str, dict]] = {}
    levels: dict[str, dict[str, dict]] = {}
    for cell in chosen:
        curves[cell], levels[cell] = {}, {}
        for model in models:
            predictions = predictions_for(entries[model][cell], store, cell, split, device=device,
                                          allow_changed=allow_changed)
            if predictions.measured is not None and len(predictions.measured):
                levels[cell][model] = thinned_levels(predictions)
            labels = predictions.labels
            if labels is None or len(labels) == 0 or labels.min() == labels.max():
                continue  # no curve without both classes
            fpr, tpr, _ = roc_curve(labels, predictions.scores)
            precision, recall, _ = precision_recall_curve(labels, predictions.scores)
            curves[cell][model] = {"roc": thin(fpr, tpr), "pr": thin(recall, precision)}
    inputs = ReportInputs(
        title=title or f"histcli report: {' vs '.join(models)}", models=models, cells=chosen, split=split,
        store=store, registry=registry, entries=entries, rows=rows, summaries=summaries,
        comparison=comparison, curves=curves, levels=levels, notes=list(dict.fromkeys(notes)),
        explain_method=explain,
    )
    if explain is not None:
        progress(f"explaining ({explain})")
        inputs.attributions = attribution_maps(store, entries, chosen, explain, split=split,
                                               max_genes=explain_genes, device=device)
    return inputs


def evenly_spaced(n: int, at_most: int) -> np.ndarray:
    """Indices of at most ``at_most`` of ``n`` items, evenly spaced, first and last kept."""
    if n <= at_most:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, at_most).round().astype(int))


def thin(x: np.ndarray, y: np.ndarray, points: int = CURVE_POINTS) -> tuple[list, list]:
    """At most ``points`` points of a curve, evenly spaced by index, both ends kept, 5 decimals."""
    keep = evenly_spaced(len(x), points)
    return np.round(x[keep], 5).tolist(), np.round(y[keep], 5).tolist()


def thinned_levels(predictions, points: int = LEVEL_POINTS) -> dict:
    """A regression model's predicted and measured levels of at most ``points`` genes (evenly spaced
    through the split), on its target scale, 5 decimals."""
    keep = evenly_spaced(len(predictions.scores), points)
    return {"gene_ids": predictions.gene_ids[keep].tolist(),
            "measured": np.round(predictions.measured[keep].astype(np.float64), 5).tolist(),
            "predicted": np.round(predictions.scores[keep].astype(np.float64), 5).tolist(),
            "target": predictions.task.target_formula}


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
                keep = evenly_spaced(len(chosen.gene_ids), max_genes)
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
    """Per pair: compare's metric of model A against model B, one point per cell (hover names the cell)."""
    from histcli.comparison import METRIC_LABELS, cell_keys

    figures = []
    if inputs.comparison is None:
        return figures
    metric = inputs.comparison.metric
    label = METRIC_LABELS[metric]
    key_a, key_b = cell_keys(metric)[3:5]
    for index, pair in enumerate(inputs.comparison.pairs):
        usable = pair.defined_rows()
        low = pair.scatter_floor()
        traces = [
            {"type": "scatter", "mode": "markers", "name": "cells", "x": [r[key_b] for r in usable],
             "y": [r[key_a] for r in usable], "text": [r["cell"] for r in usable],
             "hovertemplate": f"%{{text}}<br>{pair.model_b} %{{x:.4f}}<br>{pair.model_a} %{{y:.4f}}<extra></extra>",
             "marker": {"size": 8}},
            {"type": "scatter", "mode": "lines", "name": f"equal {label}", "x": [low, 1], "y": [low, 1],
             "hoverinfo": "skip", "line": {"dash": "dash", "color": "grey", "width": 1}},
        ]
        figures.append({"id": f"fig-scatter-{index}", "kind": "scatter", "data": traces,
                        "layout": _layout(f"{label} per cell: {pair.model_a} vs {pair.model_b}",
                                          f"{label} {pair.model_b}", f"{label} {pair.model_a}", showlegend=False,
                                          width=460, height=420)})
    return figures


def delta_figure(inputs: ReportInputs) -> dict | None:
    """Per-cell difference of compare's metric with the 95% CI of its per-cell test, one trace per pair."""
    from histcli.comparison import CELL_TESTS, CI_LABELS, METRIC_LABELS

    if inputs.comparison is None:
        return None
    metric = inputs.comparison.metric
    delta, label = f"delta_{metric}", f"Δ{METRIC_LABELS[metric]}"
    traces = []
    for pair in inputs.comparison.pairs:
        usable = [row for row in pair.cells if row[delta] is not None]
        traces.append({
            "type": "scatter", "mode": "markers", "name": f"{pair.model_a} − {pair.model_b}",
            "x": [r["cell"] for r in usable], "y": [r[delta] for r in usable],
            "error_y": {"type": "data", "symmetric": False, "array": [r["ci_high"] - r[delta] for r in usable],
                        "arrayminus": [r[delta] - r["ci_low"] for r in usable]},
            "customdata": [[r["ci_low"], r["ci_high"], r["q"]] for r in usable],
            "hovertemplate": f"%{{x}}<br>{label} %{{y:+.4f}}<br>95% CI [%{{customdata[0]:+.4f}}, "
                             "%{customdata[1]:+.4f}]<br>q %{customdata[2]:.3g}<extra>%{fullData.name}</extra>",
        })
    layout = _layout(f"{label} per cell with {CI_LABELS[CELL_TESTS[metric]]} 95% CI", "cell", label,
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


def levels_figure(inputs: ReportInputs) -> dict | None:
    """Regression models: predicted against measured level per gene of the selected cell (hover names the
    gene), one trace per model; None without regression models."""
    if not any(inputs.levels.values()):
        return None
    by_cell = {}
    for cell in inputs.cells:
        pearson = {row["model"]: row.get("pearson") for row in inputs.rows if row["cell"] == cell}
        traces, values = [], []
        for model, level in inputs.levels[cell].items():
            r = pearson.get(model)
            traces.append({"type": "scatter", "mode": "markers", "name": model + ("" if r is None else f" (r {r:.3f})"),
                           "x": level["measured"], "y": level["predicted"], "text": level["gene_ids"],
                           "marker": {"size": 4, "opacity": 0.5},
                           "hovertemplate": f"%{{text}}<br>measured %{{x:.3f}}<br>predicted %{{y:.3f}}"
                                            f"<extra>{model}</extra>"})
            values += level["measured"] + level["predicted"]
        if values:
            traces.append({"type": "scatter", "mode": "lines", "name": "predicted = measured", "hoverinfo": "skip",
                           "x": [min(values), max(values)], "y": [min(values), max(values)],
                           "line": {"dash": "dash", "color": "grey", "width": 1}})
        # Models of different targets (ln, log2, log10) share the axes, each on its own scale.
        targets = {level["target"] for level in inputs.levels[cell].values()}
        scale = targets.pop() if len(targets) == 1 else "level (each model's target)"
        by_cell[cell] = {"data": traces, "layout": _layout(f"predicted vs measured, {cell}", f"measured {scale}",
                                                           f"predicted {scale}", width=460,
                                                           legend={"x": 0.02, "y": 0.98})}
    return {"id": "fig-levels", "kind": "levels", "by_cell": by_cell}


def training_runs(entry: Entry) -> list[dict]:
    """The training runs of an entry: itself, or each member of a seed ensemble."""
    if entry.members:
        return [{"label": f"seed {m.get('seed')}", **m} for m in entry.members]
    return [{"label": "", **entry.metadata}]


def common_selection_label(inputs: ReportInputs) -> str | None:
    """How people read the validation metric that chose every entry's best epoch (its task's: AUC,
    Pearson r), or None when classifiers and regressors are mixed."""
    labels = {entry.task.selection_label for by_cell in inputs.entries.values() for entry in by_cell.values()}
    return labels.pop() if len(labels) == 1 else None


def training_figure(inputs: ReportInputs) -> dict:
    """Validation metric (the one that selected the best epoch) per epoch for the selected cell, best epochs
    starred, non-converged runs dotted."""
    common = common_selection_label(inputs)
    axis = f"validation {common or 'metric'}"
    by_cell = {}
    for cell in inputs.cells:
        traces = []
        runs = [(model, run) for model in inputs.models for run in training_runs(inputs.entries[model][cell])]
        for index, (model, run) in enumerate(runs):
            colour = COLOURS[index % len(COLOURS)]
            history = run.get("history") or []
            # Classifiers are selected on AUC, regressors on Pearson r: a mixed figure names each curve's.
            entry = inputs.entries[model][cell]
            key, label = f"valid_{entry.selection_metric}", entry.task.selection_label
            name = f"{model} {run['label']}".strip() + ("" if common else f" ({label})")
            if run.get("interrupted"):
                name += " (interrupted)"
            elif run.get("converged") is False:
                name += " (not converged)"
            traces.append({"type": "scatter", "mode": "lines", "name": name, "legendgroup": name,
                           "x": [h["epoch"] for h in history], "y": [h.get(key) for h in history],
                           "line": {"dash": "dot" if run.get("converged") is False else "solid", "color": colour}})
            best = next((h for h in history if h["epoch"] == run.get("best_epoch")), None)
            if best is not None:
                traces.append({"type": "scatter", "mode": "markers", "name": f"{name}: best epoch",
                               "legendgroup": name, "showlegend": False, "x": [best["epoch"]],
                               "y": [best.get(key)], "marker": {"symbol": "star", "size": 12, "color": colour},
                               "hovertemplate": f"{name}<br>best epoch %{{x}}<br>valid {label} %{{y:.4f}}"
                                                "<extra></extra>"})
        by_cell[cell] = {"data": traces, "layout": _layout(f"{axis} per epoch, {cell} (★ best epoch)", "epoch", axis)}
    return {"id": "fig-training", "kind": "training", "by_cell": by_cell}


def attribution_figures(inputs: ReportInputs) -> list[dict]:
    """Per model, the mark x position heatmap of the mean signed attribution for the selected cell."""
    figures = []
    for index, (model, by_cell) in enumerate(inputs.attributions.items()):
        cells = {}
        for cell, heat in by_cell.items():
            limit = float(np.nanmax(np.abs(heat["mean"]))) or 1.0
            # What explain attributes: a classifier's logit, a regressor's raw output (histcli.explanation).
            output = "logit" if inputs.entries[model][cell].task.name == "classification" else "standardised level"
            cells[cell] = {
                "data": [{"type": "heatmap", "z": np.round(heat["mean"], 6).tolist(), "x": heat["positions"],
                          "y": heat["marks"], "zmid": 0, "zmin": -limit, "zmax": limit,
                          # plotly's RdBu runs blue to red: positive attributions red, as in explain --plot.
                          "colorscale": "RdBu", "colorbar": {"title": {"text": output}},
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


def metric_header(metric: str) -> str:
    """How people read a metric: compare's label (Pearson r), else a task's header in evaluate's tables."""
    from histcli.comparison import METRIC_LABELS
    from histcli.tasks import TASK_NAMES, make_task

    headers = {key: header for name in TASK_NAMES for key, header in make_task(name).metric_headers.items()}
    return METRIC_LABELS.get(metric) or headers.get(metric, metric)


def task_groups(inputs: ReportInputs) -> list[tuple[Task, list[str], list[str]]]:
    """(task, its models, its metrics) per task of the models, in the models' order: the metrics are the
    task's own (``evaluation.metric_columns`` of that task alone, in evaluate's column order)."""
    from histcli.evaluation import metric_columns

    groups: dict[str, tuple[Task, list[str]]] = {}
    for model in inputs.models:
        task = inputs.entries[model][inputs.cells[0]].task
        groups.setdefault(task.name, (task, []))[1].append(model)
    return [(task, models, metric_columns([task])) for task, models in groups.values()]


def metrics_table(inputs: ReportInputs, task: Task, models: list[str], metrics: list[str]) -> str:
    """Per cell, the task's metrics for each of its models, as ``evaluate`` computes them; mean and median
    over cells below. A metric the model's task has but cannot compute (a single class, constant levels)
    is NA; one its task lacks on a cell (a name trained for another task there) an empty cell."""
    by_key = {(row["model"], row["cell"]): row for row in inputs.rows}
    # Two header rows: each model's name once over its metrics keeps the columns as narrow as their
    # values, so two models' six regression metrics fit a 1000 px window. Sortable headers name their
    # column (data-column), as the second row's indexes are not the body's.
    fixed = ['<th rowspan="2" data-column="0" data-type="text">cell</th>', '<th rowspan="2" data-column="1">n</th>',
             '<th rowspan="2" data-column="2">positives</th>']
    groups = [f'<th colspan="{len(metrics)}" class="model" scope="colgroup">{_e(model)}</th>' for model in models]
    columns = [f'<th data-column="{3 + index}" data-model="{_e(model)}" data-metric="{_e(metric)}">'
               f'{_e(metric_header(metric))}</th>'
               for index, (model, metric) in enumerate((model, metric) for model in models for metric in metrics)]

    def value_td(model: str, cells: list[str], metric: str, value) -> str:
        if all(metric not in inputs.entries[model][cell].task.metric_columns for cell in cells):
            return '<td data-value=""></td>'
        return _cell_td(value)

    body = []
    for cell in inputs.cells:
        first = by_key[(models[0], cell)]
        tds = [f'<td data-value="{_e(cell)}">{_e(cell)}</td>', _cell_td(first["n"]), _cell_td(first["positives"])]
        tds += [value_td(model, [cell], metric, by_key[(model, cell)][metric]) for model in models
                for metric in metrics]
        body.append(f'<tr data-cell="{_e(cell)}">{"".join(tds)}</tr>')
    foot = []
    for statistic in ("mean", "median"):
        tds = [f"<th>{statistic}</th>", "<td></td>", "<td></td>"]
        for model in models:
            for metric in metrics:
                summary = next(s for s in inputs.summaries[metric] if s["model"] == model)
                tds.append(value_td(model, inputs.cells, metric, summary[f"{statistic}_{metric}"]))
        foot.append(f'<tr class="summary" data-statistic="{statistic}">{"".join(tds)}</tr>')
    return (f'<table id="metrics-{_e(task.name)}" class="sortable metrics" data-task="{_e(task.name)}">'
            f'<thead><tr>{"".join(fixed + groups)}</tr><tr>{"".join(columns)}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody><tfoot>{"".join(foot)}</tfoot></table>')


def metrics_section(inputs: ReportInputs) -> str:
    """One metrics table per task (classifiers and regressors have different metrics), each headed by the
    task and the validation metric that selected its models' epochs when the tasks are mixed."""
    groups = task_groups(inputs)
    parts = []
    for task, models, metrics in groups:
        if len(groups) > 1:
            parts.append(f"<h3>{_e(task.name.capitalize())}: {_e(', '.join(models))} (best epoch selected on "
                         f"validation {_e(task.selection_label)})</h3>")
        parts.append(f'<div class="scroll">{metrics_table(inputs, task, models, metrics)}</div>')
    return f'<div id="metrics">{"".join(parts)}</div>'


def pair_section(block: dict, index: int) -> str:
    """One pair of ``histcli.comparison.pair_payload``: verdict, across-cell tests, per-cell table, all in
    the pair's metric."""
    from histcli.comparison import CELL_TESTS, METRIC_LABELS, TEST_LABELS, cell_keys

    s, model_a, model_b, metric = block["summary"], block["model_a"], block["model_b"], block["metric"]
    label, test = METRIC_LABELS[metric], CELL_TESTS[metric]
    ci = ("n/a" if s["median_delta_ci_low"] is None
          else f"[{s['median_delta_ci_low']:+.4f}, {s['median_delta_ci_high']:+.4f}]")
    facts = [
        ("cells tested", s["n_cells"]),
        (f"higher {label}: {model_a} / {model_b} / tied", f"{s['wins']} / {s['losses']} / {s['ties']}"),
        (f"mean {label}", f"{_fmt(s['mean_a'])} vs {_fmt(s['mean_b'])}"),
        (f"median Δ{label} (95% bootstrap CI)", f"{_fmt(s['median_delta'])} {ci}"),
        ("Wilcoxon signed-rank p", _fmt(s["wilcoxon_p"], 3) + (f" ({s['wilcoxon_method']})" if s["wilcoxon_method"] else "")),
        ("Wilcoxon p, Holm-adjusted over pairs", _fmt(s["wilcoxon_p_holm"], 3)),
        ("paired t-test p", _fmt(s["ttest_p"], 3)),
        ("paired t-test p, Holm-adjusted", _fmt(s["ttest_p_holm"], 3)),
        ("rank-biserial r", _fmt(s["rank_biserial"], 3)),
    ]
    dl = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts)
    # pair_payload's per-cell keys (compare's cell_keys with the model names in), less the test's z.
    keys = [f"{metric}_{model_a}", f"{metric}_{model_b}", *(k for k in cell_keys(metric)[5:] if k != f"{test}_z")]
    head = ['<th data-type="text">cell</th>', "<th>n</th>", f"<th>{_e(label)} {_e(model_a)}</th>",
            f"<th>{_e(label)} {_e(model_b)}</th>", f"<th>Δ{_e(label)}</th>", "<th>CI low</th>", "<th>CI high</th>",
            f"<th>{TEST_LABELS[test]} p</th>", "<th>q (BH)</th>"]
    body = []
    for row in block["cells"]:
        tds = [f'<td data-value="{_e(row["cell"])}">{_e(row["cell"])}</td>', _cell_td(row["n"])]
        tds += [_cell_td(row[key], 3 if key in (f"{test}_p", "q") else 4) for key in keys]
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
    # Classifiers are selected on validation AUC, regressors on Pearson r: a mixed table names each value's.
    common = common_selection_label(inputs)
    rows = []
    for model in inputs.models:
        for cell in inputs.cells:
            entry = inputs.entries[model][cell]
            for run in training_runs(entry):
                converged = run.get("converged")
                # Ctrl-C, not the epoch cap, stopped an interrupted run: its best epoch is the best so far.
                flag = "NO (interrupted)" if run.get("interrupted") else {True: "yes", False: "NO",
                                                                          None: "not recorded"}[converged]
                rows.append(
                    f'<tr class="{"warn" if converged is False else ""}"><td>{_e(model)}</td><td>{_e(cell)}</td>'
                    f'<td>{_e(run["label"] or "-")}</td><td>{_e(run.get("best_epoch"))}</td>'
                    f'<td>{_e(run.get("epochs_run", len(run.get("history") or [])))}</td>'
                    f'<td>{_e(_fmt(run.get(f"best_valid_{entry.selection_metric}")))}'
                    f'{"" if common else f" ({_e(entry.task.selection_label)})"}</td><td>{flag}</td>'
                    f'<td class="mono">{_e(entry.data.fingerprint[:16])}</td></tr>')
    parts.append('<table id="training-runs"><thead><tr><th>model</th><th>cell</th><th>member</th><th>best epoch</th>'
                 f'<th>epochs run</th><th>valid {_e(common or "metric")}</th><th>converged</th>'
                 '<th>data fingerprint</th></tr></thead>'
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
table.metrics{font-size:.8em}table.metrics th{vertical-align:bottom}table.metrics :is(th,td){padding:.2em .3em}
table.metrics thead tr+tr th:first-child{text-align:right}
table.metrics th.model{text-align:center;border-bottom:1px solid #bbb;cursor:default}
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
    var headers = table.querySelectorAll('thead th');
    var columned = table.querySelector('thead th[data-column]') !== null;
    headers.forEach(function (th, index) {
      if (columned && !th.hasAttribute('data-column')) { return; }  // a group's heading sorts nothing
      var column = columned ? parseInt(th.getAttribute('data-column'), 10) : index;
      th.addEventListener('click', function () {
        var ascending = th.getAttribute('aria-sort') !== 'ascending';
        headers.forEach(function (other) { other.removeAttribute('aria-sort'); });
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
    from histcli.comparison import CELL_TESTS, METRIC_LABELS, json_payload, pair_payload
    from histcli.evaluation import evaluation_payload
    from histcli.output import clean

    figures = scatter_figures(inputs)
    delta = delta_figure(inputs)
    if delta is not None:
        figures.append(delta)
    levels = levels_figure(inputs)
    by_cell = (curve_figures(inputs) + ([levels] if levels is not None else []) + [training_figure(inputs)]
               + attribution_figures(inputs))
    payload = {"figures": figures, "by_cell": by_cell, "models": inputs.models, "cells": inputs.cells}
    data = json.dumps(clean(payload), separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    # The numbers as `evaluate -f json` and `compare -f json` give them, for anyone who reads the page's source.
    numbers = {"evaluate": evaluation_payload(inputs.rows),
               "compare": json_payload(inputs.comparison) if inputs.comparison is not None else None}
    numbers_text = json.dumps(clean(numbers), indent=1, allow_nan=False).replace("</", "<\\/")
    default_cell, first_shown = inputs.cells[0], ""
    if inputs.comparison is not None:
        # The cell where the first pair differs most in compare's metric.
        pair = inputs.comparison.pairs[0]
        default_cell = pair.largest_difference_cell() or default_cell
        first_shown = (f" (first the cell with the largest |Δ{METRIC_LABELS[inputs.comparison.metric]}| of "
                       f"{pair.model_a} and {pair.model_b})")
    options = "".join(f'<option value="{_e(c)}"{" selected" if c == default_cell else ""}>{_e(c)}</option>'
                      for c in inputs.cells)
    sections = [f"<h1>{_e(inputs.title)}</h1>", "<h2>The run</h2>", run_section(inputs)]
    if inputs.notes:
        sections.append('<ul class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in inputs.notes) + "</ul>")
    sections += [f"<h2>Per-cell metrics ({_e(inputs.split)} genes)</h2>",
                 "<p>Click a column header to sort; mean and median rows stay below.</p>",
                 metrics_section(inputs)]
    if inputs.comparison is not None:
        metric = inputs.comparison.metric
        sections.append(f"<h2>Paired comparison ({_e(METRIC_LABELS[metric])})</h2><p>Per cell: "
                        f"Δ{_e(METRIC_LABELS[metric])} by {_e(TEST_DESCRIPTIONS[CELL_TESTS[metric]])}, and "
                        "Benjamini-Hochberg q across cells. Across cells: Wilcoxon signed-rank and paired t-tests"
                        + (", Holm-corrected over the pairs" if len(inputs.comparison.pairs) > 1 else "") + ".</p>")
        sections += [pair_section(pair_payload(pair), i) for i, pair in enumerate(inputs.comparison.pairs)]
        sections.append('<h2>Across cells</h2><div class="figures">'
                        + "".join(f'<div class="figure" id="{f["id"]}"></div>' for f in figures) + "</div>")
    sections.append(f'<h2>One cell</h2><p><label>cell <select id="cell-select">{options}</select></label>'
                    f"{_e(first_shown)}</p>"
                    '<div class="figures">' + "".join(f'<div class="figure" id="{f["id"]}"></div>'
                                                      for f in by_cell if f["kind"] in ("roc", "pr", "levels"))
                    + "</div>"
                    '<h3>Training</h3><div id="fig-training"></div>'
                    "<p>Dotted: runs that did not converge (stopped at the epoch cap while still improving, or "
                    "interrupted).</p>")
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
