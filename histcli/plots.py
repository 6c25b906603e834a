"""Figures: a comparison's per-cell metric and one cell's ROC curves or levels, and the matplotlib backend every
--plot uses."""

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
    """Left: the first pair's metric per cell (A against B). Right, for one cell (default: the largest
    difference): ROC curves when comparing AUC, predicted against measured levels for a correlation."""
    from histcli.comparison import METRIC_CHANCE, METRIC_LABELS
    from histcli.errors import HistcliError, SettingError
    from histcli.evaluation import predictions_for
    from histcli.fsutil import atomic_path
    from histcli.metrics import roc_curve

    pair, metric = result.pairs[0], result.metric
    label = METRIC_LABELS[metric]
    usable = [r for r in pair.cells if r[f"{metric}_a"] is not None and r[f"{metric}_b"] is not None]
    if not usable:
        raise HistcliError(f"plot: no cell has a defined {label} for both models")
    cell = plot_cell or max(usable, key=lambda r: abs(r[f"delta_{metric}"] or 0))["cell"]
    if cell not in [r["cell"] for r in usable]:
        raise SettingError("plot_cell", cell, f"not among the compared cells with a defined {label}")
    figure, (scatter, detail) = pyplot.subplots(1, 2, figsize=(10, 4.8))
    a = [r[f"{metric}_a"] for r in usable]
    b = [r[f"{metric}_b"] for r in usable]
    scatter.scatter(b, a, s=18)
    low = min(a + b + [METRIC_CHANCE[metric]]) - 0.01
    scatter.plot([low, 1], [low, 1], color="grey", linewidth=1, linestyle="--")
    scatter.set_xlabel(f"{label} {pair.model_b}")
    scatter.set_ylabel(f"{label} {pair.model_a}")
    scatter.set_title(pair.verdict().split(";")[0], fontsize=9)
    predictions = {model: predictions_for(registry.get(model, cell), store, cell, **options) for model in result.models}
    if metric == "auc":
        for model, p in predictions.items():
            fpr, tpr, _ = roc_curve(p.labels, p.scores)
            detail.plot(fpr, tpr, label=f"{model} (AUC {result.values[cell][model]:.3f})")
        detail.plot([0, 1], [0, 1], color="grey", linewidth=1, linestyle="--")
        detail.set_xlabel("false positive rate")
        detail.set_ylabel("true positive rate")
        detail.set_title(f"ROC, {cell}", fontsize=9)
        detail.legend(loc="lower right", fontsize=8)
    else:
        targets = {p.task.target_formula for p in predictions.values()}
        for model, p in predictions.items():
            detail.scatter(p.measured, p.scores, s=3, alpha=0.3, linewidths=0,
                           label=f"{model} ({label} {result.values[cell][model]:.3f})")
        levels = [value for p in predictions.values() for value in (p.measured.min(), p.measured.max())]
        detail.plot([min(levels), max(levels)], [min(levels), max(levels)], color="grey", linewidth=1,
                    linestyle="--")
        target = targets.pop() if len(targets) == 1 else "level (each model's target)"
        detail.set_xlabel(f"measured {target}")
        detail.set_ylabel(f"predicted {target}")
        detail.set_title(f"predicted vs measured, {cell}", fontsize=9)
        detail.legend(loc="upper left", fontsize=8, markerscale=3)
    figure.tight_layout()
    with atomic_path(path) as temp:
        figure.savefig(temp, format=path.suffix.lstrip(".").lower())
    pyplot.close(figure)
