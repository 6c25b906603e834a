"""Compare models on the same genes: DeLong per cell, paired tests across cells.

For each pair of models and each cell, both models' test predictions (cached
by ``histcli.evaluation``) are scored on identical genes: AUCs, their
difference with a 95% DeLong confidence interval and p-value, and
Benjamini-Hochberg q-values across cells. Across cells: Wilcoxon signed-rank
and paired t-tests on the per-cell AUCs, wins/ties/losses, the median AUC
difference with a bootstrap CI and the rank-biserial effect size. With more
than two models every pair is compared and the across-cell p-values are
Holm-corrected over the pairs.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field

import numpy as np

from histcli.errors import HistcliError
from histcli.evaluation import Predictions, predictions_for
from histcli.registry import Registry
from histcli.store import Store

log = logging.getLogger("histcli")


@dataclass
class PairComparison:
    model_a: str
    model_b: str
    cells: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)

    def verdict(self) -> str:
        """One sentence for people, e.g. "crnn > deepchrome in 51/56 cells, Wilcoxon p = 2e-09"."""
        s = self.summary
        n = s["n_cells"]
        if n == 0:
            return f"{self.model_a} vs {self.model_b}: no cell with a defined AUC for both"
        wins, losses = s["wins"], s["losses"]
        if wins > losses:
            head = f"{self.model_a} > {self.model_b} in {wins}/{n} cells"
        elif losses > wins:
            head = f"{self.model_b} > {self.model_a} in {losses}/{n} cells"
        else:
            head = f"{self.model_a} and {self.model_b} each ahead in {wins}/{n} cells (ties {s['ties']})"
        if s.get("wilcoxon_p") is None:
            return f"{head} (too few cells for a test)"
        holm = f", Holm-adjusted p = {s['wilcoxon_p_holm']:.2g}" if s.get("wilcoxon_p_holm") is not None else ""
        return f"{head}, Wilcoxon p = {s['wilcoxon_p']:.2g}{holm}; median ΔAUC = {s['median_delta']:+.4f}"


@dataclass
class Comparison:
    models: list[str]
    cells: list[str]
    auc: dict[str, dict[str, float | None]]  # cell -> model -> AUC
    pairs: list[PairComparison]
    notes: list[str] = field(default_factory=list)


def common_cells(registry: Registry, models: list[str], cells: list[str] | None) -> tuple[list[str], list[str]]:
    """Cells every model has an entry for, and a note per cell left out."""
    available = [set(registry.cells(model)) for model in models]
    for model, found in zip(models, available, strict=True):
        if not found:
            raise HistcliError(f"no model {model!r} in {registry.root}")
    if cells:
        for cell in cells:
            for model, found in zip(models, available, strict=True):
                if cell not in found:
                    raise HistcliError(f"model {model!r} has no entry for cell {cell!r}")
        return list(dict.fromkeys(cells)), []
    everywhere = sorted(set.intersection(*available))
    skipped = sorted(set.union(*available) - set(everywhere))
    notes = [f"cell {cell} left out: not every model has an entry for it" for cell in skipped]
    if not everywhere:
        raise HistcliError(f"models {', '.join(models)} have no cell in common")
    return everywhere, notes


def _same_genes(first: Predictions, other: Predictions) -> None:
    if first.labels is None:
        raise HistcliError(f"cell {first.cell} has no labels; models cannot be compared on it")
    if len(first.gene_ids) != len(other.gene_ids) or not np.array_equal(first.gene_ids, other.gene_ids):
        raise HistcliError(f"cell {first.cell}: {first.model} and {other.model} were scored on different genes")


def compare(store: Store, registry: Registry, models: list[str], cells: list[str] | None = None, *,
            split: str = "test", device: str = "auto", allow_changed: bool = False, seed: int = 0,
            on_progress=None) -> Comparison:
    """Compare ``models`` on every cell they share (or ``cells``); ``on_progress(done, total)``."""
    from histcli import stats
    from histcli.metrics import roc_auc

    if len(models) < 2:
        raise HistcliError("compare needs at least two model names")
    if len(set(models)) != len(models):
        raise HistcliError("each model may be named once")
    chosen, notes = common_cells(registry, models, cells)
    predictions: dict[str, dict[str, Predictions]] = {}
    auc: dict[str, dict[str, float | None]] = {}
    for done, cell in enumerate(chosen, start=1):
        per_model = {
            model: predictions_for(registry.get(model, cell), store, cell, split, device=device,
                                   allow_changed=allow_changed)
            for model in models
        }
        first = per_model[models[0]]
        for model in models[1:]:
            _same_genes(first, per_model[model])
        predictions[cell] = per_model
        defined = len(first.labels) > 0 and first.labels.min() != first.labels.max()
        if not len(first.labels):
            notes.append(f"cell {cell}: no {split} genes; cell left out of the tests")
        elif not defined:
            notes.append(f"cell {cell}: every {split} gene has label {int(first.labels[0])}; AUC undefined, "
                         "cell left out of the tests")
        auc[cell] = {model: roc_auc(first.labels, p.probabilities) if defined else None
                     for model, p in per_model.items()}
        if on_progress is not None:
            on_progress(done, len(chosen))

    pairs = []
    for model_a, model_b in itertools.combinations(models, 2):
        pair = PairComparison(model_a, model_b)
        for cell in chosen:
            a, b = predictions[cell][model_a], predictions[cell][model_b]
            row = {"cell": cell, "n": len(a.labels), "positives": int(a.labels.sum()),
                   "auc_a": auc[cell][model_a], "auc_b": auc[cell][model_b], "delta_auc": None,
                   "ci_low": None, "ci_high": None, "delong_z": None, "delong_p": None, "q": None}
            if auc[cell][model_a] is not None:
                try:
                    test = stats.delong_test(a.labels, a.probabilities, b.probabilities)
                except ValueError as exc:  # fewer than 2 positives or negatives
                    notes.append(f"cell {cell}: no DeLong test ({exc})")
                else:
                    row.update(delta_auc=test.delta, ci_low=test.ci_low, ci_high=test.ci_high,
                               delong_z=test.z, delong_p=test.p)
                    if test.note:
                        notes.append(f"cell {cell}, {model_a} vs {model_b}: {test.note}")
            pair.cells.append(row)
        p_values = np.array([np.nan if r["delong_p"] is None else r["delong_p"] for r in pair.cells])
        for row, q in zip(pair.cells, stats.benjamini_hochberg(p_values), strict=True):
            row["q"] = None if np.isnan(q) else float(q)
        usable = [r for r in pair.cells if r["auc_a"] is not None]
        pair.summary = stats.paired_summary([r["auc_a"] for r in usable], [r["auc_b"] for r in usable], seed=seed)
        for note in pair.summary.pop("notes", []):
            notes.append(f"{model_a} vs {model_b}: {note}")
        pairs.append(pair)

    if len(pairs) > 1:
        raw = np.array([np.nan if p.summary["wilcoxon_p"] is None else p.summary["wilcoxon_p"] for p in pairs])
        for pair, adjusted in zip(pairs, stats.holm(raw), strict=True):
            pair.summary["wilcoxon_p_holm"] = None if np.isnan(adjusted) else float(adjusted)
        raw_t = np.array([np.nan if p.summary["ttest_p"] is None else p.summary["ttest_p"] for p in pairs])
        for pair, adjusted in zip(pairs, stats.holm(raw_t), strict=True):
            pair.summary["ttest_p_holm"] = None if np.isnan(adjusted) else float(adjusted)
    return Comparison(models, chosen, auc, pairs, list(dict.fromkeys(notes)))


# Column order of compare's per-cell and summary rows (TSV/CSV and JSON).
CELL_KEYS = ["cell", "n", "positives", "auc_a", "auc_b", "delta_auc", "ci_low", "ci_high", "delong_z", "delong_p", "q"]
SUMMARY_KEYS = [
    "n_cells", "mean_a", "mean_b", "median_delta", "median_delta_ci_low", "median_delta_ci_high", "wins", "ties",
    "losses", "wilcoxon_statistic", "wilcoxon_p", "wilcoxon_method", "wilcoxon_p_holm", "ttest_statistic",
    "ttest_p", "ttest_p_holm", "rank_biserial",
]


def _cell_object(pair, row) -> dict:
    """A per-cell JSON object with the model names in the AUC keys."""
    obj = {"cell": row["cell"], "n": row["n"], "positives": row["positives"],
           f"auc_{pair.model_a}": row["auc_a"], f"auc_{pair.model_b}": row["auc_b"]}
    obj.update({key: row[key] for key in ("delta_auc", "ci_low", "ci_high", "delong_z", "delong_p", "q")})
    return obj


def _summary_object(pair) -> dict:
    summary = {key: pair.summary.get(key) for key in SUMMARY_KEYS}
    summary["median_delta_ci"] = [summary["median_delta_ci_low"], summary["median_delta_ci_high"]]
    summary["verdict"] = pair.verdict()
    return summary


def pair_payload(pair: PairComparison) -> dict:
    """One pair as compare's JSON shows it: per-cell objects and the summary with its verdict."""
    return {"model_a": pair.model_a, "model_b": pair.model_b,
            "cells": [_cell_object(pair, row) for row in pair.cells], "summary": _summary_object(pair)}


def json_payload(result: Comparison) -> dict:
    """What `compare -f json` prints (before NaN cleaning): cells and summary, or one block per pair."""
    if len(result.pairs) == 1:
        block = pair_payload(result.pairs[0])
        return {"models": result.models, "cells": block["cells"], "summary": block["summary"], "notes": result.notes}
    return {"models": result.models, "pairs": [pair_payload(pair) for pair in result.pairs], "notes": result.notes}


def roc_points(store: Store, registry: Registry, models: list[str], cell: str, split: str = "test", *,
               device: str = "auto", allow_changed: bool = False):
    """(model, fpr, tpr) for one cell, for plotting; uses the cached predictions."""
    from histcli.metrics import roc_curve

    curves = []
    for model in models:
        p = predictions_for(registry.get(model, cell), store, cell, split, device=device, allow_changed=allow_changed)
        fpr, tpr, _ = roc_curve(p.labels, p.probabilities)
        curves.append((model, fpr, tpr))
    return curves
