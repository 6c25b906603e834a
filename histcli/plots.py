"""Figures: a comparison's per-cell AUC scatter and ROC curves, and the matplotlib backend every --plot uses."""

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


def write_plot(pyplot, result, store, registry, path: Path, roc_cell: str | None, **options) -> None:
    from histcli.comparison import roc_points
    from histcli.errors import ConflictError, HistcliError, SettingError
    from histcli.fsutil import atomic_path

    pair = result.pairs[0]
    if result.metric != "auc":
        raise ConflictError(("plot", "metric"), "the plot draws AUCs and ROC curves; compare on AUC for it")
    usable = [r for r in pair.cells if r["auc_a"] is not None]
    if not usable:
        raise HistcliError("plot: no cell has a defined AUC for both models")
    cell = roc_cell or max(usable, key=lambda r: abs(r["delta_auc"] or 0))["cell"]
    if cell not in [r["cell"] for r in usable]:
        raise SettingError("roc_cell", cell, "not among the compared cells with a defined AUC")
    figure, (scatter, roc) = pyplot.subplots(1, 2, figsize=(10, 4.8))
    a = [r["auc_a"] for r in usable]
    b = [r["auc_b"] for r in usable]
    scatter.scatter(b, a, s=18)
    low = min(a + b + [0.5]) - 0.01
    scatter.plot([low, 1], [low, 1], color="grey", linewidth=1, linestyle="--")
    scatter.set_xlabel(f"AUC {pair.model_b}")
    scatter.set_ylabel(f"AUC {pair.model_a}")
    scatter.set_title(pair.verdict().split(";")[0], fontsize=9)
    for model, fpr, tpr in roc_points(store, registry, result.models, cell, **options):
        roc.plot(fpr, tpr, label=f"{model} (AUC {result.values[cell][model]:.3f})")
    roc.plot([0, 1], [0, 1], color="grey", linewidth=1, linestyle="--")
    roc.set_xlabel("false positive rate")
    roc.set_ylabel("true positive rate")
    roc.set_title(f"ROC, {cell}", fontsize=9)
    roc.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    with atomic_path(path) as temp:
        figure.savefig(temp, format=path.suffix.lstrip(".").lower())
    pyplot.close(figure)
