"""Figures: each pair of a comparison's per-cell metric and one cell's ROC curves or levels, and the matplotlib
backend every --plot uses."""

from __future__ import annotations

from pathlib import Path


def plotting_backend(path: Path):
    """matplotlib's pyplot for a checked output path; checked before any comparison work."""
    from histcli.errors import MissingExtraError, SettingError
    from histcli.fsutil import check_output_path

    if path.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise SettingError("plot", str(path), "expected a .png, .svg or .pdf file name")
    check_output_path(path, "the plot")
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError:
        raise MissingExtraError("matplotlib", "plot", "plotting") from None
    return pyplot


def check_plot_cell(plot_cell: str, cells: list[str]) -> None:
    """Fail before any comparison work when --plot's cell is not among the compared cells."""
    from histcli.errors import SettingError

    if plot_cell not in cells:
        raise SettingError("plot_cell", plot_cell, f"not among the compared cells ({', '.join(cells)})")


def write_plot(pyplot, result, store, registry, path: Path, plot_cell: str | None, **options) -> None:
    """One row of panels per pair of the comparison, in the order of compare's tables. Left: the pair's metric
    per cell (A against B). Right, for one cell (``plot_cell``, default the pair's largest difference): the
    pair's ROC curves when comparing AUC, predicted against measured levels for a correlation. Each model
    keeps one colour throughout. In an SVG the points of pair i's cells are the group ``pair<i>-cells`` and
    its models' curves or levels ``pair<i>-a`` and ``pair<i>-b``."""
    import functools
    import textwrap

    from histcli.comparison import METRIC_LABELS
    from histcli.errors import HistcliError, SettingError
    from histcli.evaluation import predictions_for
    from histcli.fsutil import atomic_path

    metric, label = result.metric, METRIC_LABELS[result.metric]
    if not any(pair.defined_rows() for pair in result.pairs):
        raise HistcliError(f"plot: no cell has a defined {label} for both models of a pair")
    if plot_cell is not None:
        for pair in result.pairs:
            if pair.defined_rows() and plot_cell not in [row["cell"] for row in pair.defined_rows()]:
                raise SettingError("plot_cell", plot_cell, f"not among the compared cells with a defined {label} "
                                   f"for {pair.model_a} and {pair.model_b}")

    @functools.cache
    def predictions(model: str, cell: str):
        return predictions_for(registry.get(model, cell), store, cell, **options)

    colours = {model: f"C{index % 10}" for index, model in enumerate(result.models)}
    # One 4.4-inch row per pair: each row stays as legible as the single pair's figure.
    figure, axes = pyplot.subplots(len(result.pairs), 2, figsize=(10, 0.4 + 4.4 * len(result.pairs)),
                                   squeeze=False)
    for index, (pair, (scatter, detail)) in enumerate(zip(result.pairs, axes, strict=True)):
        # Wrapped: with long model names and the Holm-adjusted p the verdict is wider than its panel; no-break
        # spaces keep each "p = 0.25" on one line.
        verdict = pair.verdict().split(";")[0].replace(" = ", "\u00a0=\u00a0")
        scatter.set_title(textwrap.fill(verdict, 64, break_on_hyphens=False), fontsize=9)
        rows = pair.defined_rows()
        if not rows:  # the verdict in the title says so
            scatter.set_axis_off()
            detail.set_axis_off()
            continue
        scatter.scatter([r[f"{metric}_b"] for r in rows], [r[f"{metric}_a"] for r in rows], s=18, color="black",
                        gid=f"pair{index}-cells")
        low = pair.scatter_floor()
        scatter.plot([low, 1], [low, 1], color="grey", linewidth=1, linestyle="--")
        scatter.set_xlabel(f"{label} {pair.model_b}")
        scatter.set_ylabel(f"{label} {pair.model_a}")
        cell = plot_cell or pair.largest_difference_cell()
        models = {f"pair{index}-a": pair.model_a, f"pair{index}-b": pair.model_b}
        _draw_cell(detail, metric, cell, {gid: (model, predictions(model, cell), result.values[cell][model],
                                                colours[model]) for gid, model in models.items()})
    figure.tight_layout()
    with atomic_path(path) as temp:
        figure.savefig(temp, format=path.suffix.lstrip(".").lower())
    pyplot.close(figure)


def _draw_cell(axes, metric: str, cell: str, models: dict) -> None:
    """One cell's ROC curves (AUC) or predicted against measured levels (correlations); ``models``: SVG group
    id -> (model, its predictions, its value of the metric, its colour)."""
    from histcli.comparison import METRIC_LABELS
    from histcli.metrics import roc_curve

    label = METRIC_LABELS[metric]
    if metric == "auc":
        for gid, (model, p, value, colour) in models.items():
            fpr, tpr, _ = roc_curve(p.labels, p.scores)
            axes.plot(fpr, tpr, color=colour, gid=gid, label=f"{model} (AUC {value:.3f})")
        axes.plot([0, 1], [0, 1], color="grey", linewidth=1, linestyle="--")
        axes.set_xlabel("false positive rate")
        axes.set_ylabel("true positive rate")
        axes.set_title(f"ROC, {cell}", fontsize=9)
        axes.legend(loc="lower right", fontsize=8)
        return
    for gid, (model, p, value, colour) in models.items():
        axes.scatter(p.measured, p.scores, s=3, alpha=0.3, linewidths=0, color=colour, gid=gid,
                     label=f"{model} ({label} {value:.3f})")
    levels = [value for _, p, _, _ in models.values() for value in (p.measured.min(), p.measured.max())]
    axes.plot([min(levels), max(levels)], [min(levels), max(levels)], color="grey", linewidth=1, linestyle="--")
    targets = {p.task.target_formula for _, p, _, _ in models.values()}
    target = targets.pop() if len(targets) == 1 else "level (each model's target)"
    axes.set_xlabel(f"measured {target}")
    axes.set_ylabel(f"predicted {target}")
    axes.set_title(f"predicted vs measured, {cell}", fontsize=9)
    axes.legend(loc="upper left", fontsize=8, markerscale=3)
