"""Compare models on the same genes: a paired test per cell, paired tests across cells.

For each pair of models and each cell, both models' predictions on the chosen
split (test by default; cached by ``histcli.evaluation``) are scored on
identical genes with one metric:

* ``auc`` (any models, regressors by their predicted level): AUCs against the
  high/low labels, their difference with a 95% DeLong confidence interval and
  p-value;
* ``pearson`` or ``spearman`` (regression models): correlations with the
  measured levels, their difference with Zou's 95% confidence interval and
  Steiger's test for two correlations sharing the measured values;

and Benjamini-Hochberg q-values across cells. Across cells: Wilcoxon
signed-rank and paired t-tests on the per-cell values, wins/ties/losses, the
median difference with a bootstrap CI and the rank-biserial effect size. With
more than two models every pair is compared and the across-cell p-values are
Holm-corrected over the pairs.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from dataclasses import dataclass, field

import numpy as np

from histcli.errors import ChoiceError, HistcliError, SettingError, UsageError
from histcli.evaluation import Predictions, check_cells_stored, check_held_out, predictions_for
from histcli.registry import Registry, model_tasks
from histcli.splits import split_genes
from histcli.stats import PairedSummary
from histcli.store import Store

log = logging.getLogger("histcli")

METRICS = ("auc", "pearson", "spearman")
# How people read each metric, and the per-cell test that compares two models on it.
METRIC_LABELS = {"auc": "AUC", "pearson": "Pearson r", "spearman": "Spearman rho"}
# The value of each metric that says nothing: per-cell scatters of two models always reach it.
METRIC_CHANCE = {"auc": 0.5, "pearson": 0.0, "spearman": 0.0}
CELL_TESTS = {"auc": "delong", "pearson": "steiger", "spearman": "steiger"}
# Per-cell test: how people name it, and whose 95% confidence interval of the difference comes with it.
TEST_LABELS = {"delong": "DeLong", "steiger": "Steiger"}
CI_LABELS = {"delong": "DeLong", "steiger": "Zou"}


@dataclass
class PairComparison:
    model_a: str
    model_b: str
    metric: str = "auc"
    cells: list[dict] = field(default_factory=list)
    summary: PairedSummary | None = None

    def verdict(self) -> str:
        """One sentence for people, e.g. "crnn > deepchrome in 51/56 cells, Wilcoxon p = 2e-09"."""
        s = self.summary
        n = s.n_cells
        label = METRIC_LABELS[self.metric]
        if n == 0:
            return f"{self.model_a} vs {self.model_b}: no cell with a defined {label} for both"
        wins, losses = s.wins, s.losses
        if wins > losses:
            head = f"{self.model_a} > {self.model_b} in {wins}/{n} cells"
        elif losses > wins:
            head = f"{self.model_b} > {self.model_a} in {losses}/{n} cells"
        else:
            head = f"{self.model_a} and {self.model_b} each ahead in {wins}/{n} cells (ties {s.ties})"
        if s.wilcoxon_p is None:
            return f"{head} (too few cells for a test)"
        holm = f", Holm-adjusted p = {s.wilcoxon_p_holm:.2g}" if s.wilcoxon_p_holm is not None else ""
        # The difference's sign is A's minus B's whoever leads, so the sentence names its order.
        return (f"{head}, Wilcoxon p = {s.wilcoxon_p:.2g}{holm}; median Δ{label} ({self.model_a} − {self.model_b}) = "
                f"{s.median_delta:+.4f}")

    def defined_rows(self) -> list[dict]:
        """The per-cell rows where the metric is defined for both models: those the across-cell tests use."""
        a, b = f"{self.metric}_a", f"{self.metric}_b"
        return [row for row in self.cells if row[a] is not None and row[b] is not None]

    def largest_difference_cell(self) -> str | None:
        """The cell of the largest absolute difference among the defined rows (the first such in cell order;
        a row without a per-cell test counts as no difference); None when no row is defined."""
        delta = f"delta_{self.metric}"
        rows = self.defined_rows()
        return max(rows, key=lambda row: abs(row[delta] or 0.0))["cell"] if rows else None

    def scatter_floor(self) -> float:
        """The low end of a per-cell scatter's axes and diagonal: below every defined value and chance level."""
        values = [row[key] for row in self.defined_rows() for key in (f"{self.metric}_a", f"{self.metric}_b")]
        return min(values + [METRIC_CHANCE[self.metric]]) - 0.01


@dataclass
class Comparison:
    models: list[str]
    cells: list[str]
    values: dict[str, dict[str, float | None]]  # cell -> model -> value of the metric
    pairs: list[PairComparison]
    notes: list[str] = field(default_factory=list)
    metric: str = "auc"


def choose_metric(metric: str | None, tasks: dict) -> str:
    """``metric``, checked against the models' tasks (model -> task); by default Pearson r for
    regression models only, else AUC (which ranks classifiers and regressors alike)."""
    regressors = all(task.name == "regression" for task in tasks.values())
    if metric is None:
        return "pearson" if regressors else "auc"
    if metric not in METRICS:
        raise ChoiceError("metric", metric, METRICS)
    if metric != "auc" and not regressors:
        classifiers = [model for model, task in tasks.items() if task.name != "regression"]
        raise SettingError("metric", metric, f"compares regression models, but {', '.join(classifiers)} "
                           f"{'is a classifier' if len(classifiers) == 1 else 'are classifiers'}; "
                           "auc ranks classifiers and regressors together")
    return metric


def common_cells(registry: Registry, models: list[str], cells: list[str] | None) -> tuple[list[str], list[str]]:
    """Cells every model has an entry for, and a note per cell left out."""
    available = [set(registry.require_cells(model)) for model in models]
    if cells:
        for cell in cells:
            for model, found in zip(models, available, strict=True):
                if cell not in found:
                    raise HistcliError(f"model {model!r} has no entry for cell {cell!r}; it has "
                                       f"{', '.join(sorted(found))}")
        return list(dict.fromkeys(cells)), []
    everywhere = sorted(set.intersection(*available))
    skipped = sorted(set.union(*available) - set(everywhere))
    notes = [f"cell {cell} left out: not every model has an entry for it" for cell in skipped]
    if not everywhere:
        raise HistcliError(f"models {', '.join(models)} have no cell in common")
    return everywhere, notes


def _same_genes(first: Predictions, other: Predictions, metric: str) -> None:
    if metric == "auc" and first.labels is None:
        raise HistcliError(f"cell {first.cell} has no labels; models cannot be compared on it by AUC")
    if len(first.gene_ids) != len(other.gene_ids) or not np.array_equal(first.gene_ids, other.gene_ids):
        raise HistcliError(f"cell {first.cell}: {first.model} and {other.model} were scored on different genes")


def _metric_value(predictions: Predictions, metric: str, split: str, notes: list[str]) -> float | None:
    """The metric of one model's predictions on one cell; None (with a note) where undefined."""
    from histcli.metrics import pearson, roc_auc, spearman

    cell = predictions.cell
    if metric == "auc":
        labels = predictions.labels
        if not len(labels):
            notes.append(f"cell {cell}: no {split_genes(split)}; cell left out of the tests")
        elif labels.min() == labels.max():
            notes.append(f"cell {cell}: the {split_genes(split)} all have label {int(labels[0])}; AUC undefined, "
                         "cell left out of the tests")
        else:
            return roc_auc(labels, predictions.scores)
        return None
    measured = predictions.measured
    if measured is None or len(measured) < 4:
        notes.append(f"cell {cell}: fewer than 4 {split_genes(split)} with expression; cell left out of the tests")
        return None
    value = (pearson if metric == "pearson" else spearman)(measured, predictions.scores)
    if np.isnan(value):
        notes.append(f"cell {cell}: {METRIC_LABELS[metric]} of {predictions.model} undefined (constant values); "
                     "cell left out of its tests")
        return None
    return value


def _cell_test(metric: str, a: Predictions, b: Predictions):
    """(difference, ci_low, ci_high, z, p, note) of the per-cell test; ValueError where it cannot run."""
    from histcli import stats

    if metric == "auc":
        test = stats.delong_test(a.labels, a.scores, b.scores)
        return test.delta, test.ci_low, test.ci_high, test.z, test.p, test.note
    test = stats.compare_dependent_correlations(a.measured, a.scores, b.scores, method=metric)
    return test.difference, test.ci_low, test.ci_high, test.z, test.p, test.note


def cell_keys(metric: str) -> list[str]:
    """Column order of compare's per-cell rows (TSV/CSV) for a metric."""
    test = CELL_TESTS[metric]
    return ["cell", "n", "positives", f"{metric}_a", f"{metric}_b", f"delta_{metric}", "ci_low", "ci_high",
            f"{test}_z", f"{test}_p", "q"]


def compare(store: Store, registry: Registry, models: list[str], cells: list[str] | None = None, *,
            metric: str | None = None, split: str = "test", device: str = "auto", allow_changed: bool = False,
            seed: int = 0, on_progress=None) -> Comparison:
    """Compare ``models`` on every cell they share (or ``cells``) by ``metric`` (see :func:`choose_metric`);
    ``on_progress(done, total)``."""
    from histcli import stats

    if len(models) < 2:
        raise UsageError("compare needs at least two model names")
    if len(set(models)) != len(models):
        raise UsageError("each model may be named once")
    chosen, notes = common_cells(registry, models, cells)
    entries = {(model, cell): registry.get(model, cell) for cell in chosen for model in models}
    metric = choose_metric(metric, model_tasks(entries.values()))
    check_cells_stored(store, list(entries.values()))
    for (_, cell), entry in entries.items():  # before any model is run
        check_held_out(entry, cell, split)
    test_name = CELL_TESTS[metric]
    predictions: dict[str, dict[str, Predictions]] = {}
    values: dict[str, dict[str, float | None]] = {}
    for done, cell in enumerate(chosen, start=1):
        per_model = {
            model: predictions_for(entries[model, cell], store, cell, split, device=device,
                                   allow_changed=allow_changed)
            for model in models
        }
        first = per_model[models[0]]
        for model in models[1:]:
            _same_genes(first, per_model[model], metric)
        predictions[cell] = per_model
        # Each model's own value: one model's constant predictions leave the cell out of its pairs only. Notes
        # the models share (the cell's labels or measured values) are said once, below.
        values[cell] = {model: _metric_value(p, metric, split, notes) for model, p in per_model.items()}
        if on_progress is not None:
            on_progress(done, len(chosen))

    pairs = []
    for model_a, model_b in itertools.combinations(models, 2):
        pair = PairComparison(model_a, model_b, metric)
        for cell in chosen:
            a, b = predictions[cell][model_a], predictions[cell][model_b]
            row = {"cell": cell, "n": len(a.scores), "positives": None if a.labels is None else int(a.labels.sum()),
                   f"{metric}_a": values[cell][model_a], f"{metric}_b": values[cell][model_b],
                   f"delta_{metric}": None, "ci_low": None, "ci_high": None, f"{test_name}_z": None,
                   f"{test_name}_p": None, "q": None}
            if values[cell][model_a] is not None and values[cell][model_b] is not None:
                try:
                    delta, low, high, z, p, note = _cell_test(metric, a, b)
                except ValueError as exc:  # e.g. fewer than 2 positives or negatives
                    notes.append(f"cell {cell}: no {TEST_LABELS[test_name]} test ({exc})")
                else:
                    row.update({f"delta_{metric}": delta, "ci_low": low, "ci_high": high,
                                f"{test_name}_z": z, f"{test_name}_p": p})
                    if note:
                        notes.append(f"cell {cell}, {model_a} vs {model_b}: {note}")
            pair.cells.append(row)
        p_values = np.array([np.nan if r[f"{test_name}_p"] is None else r[f"{test_name}_p"] for r in pair.cells])
        for row, q in zip(pair.cells, stats.benjamini_hochberg(p_values), strict=True):
            row["q"] = None if np.isnan(q) else float(q)
        usable = pair.defined_rows()
        pair.summary = stats.paired_summary([r[f"{metric}_a"] for r in usable], [r[f"{metric}_b"] for r in usable],
                                            seed=seed)
        notes += [f"{model_a} vs {model_b}: {note}" for note in pair.summary.notes]
        pairs.append(pair)

    if len(pairs) > 1:
        for test in ("wilcoxon_p", "ttest_p"):  # each test's p-values adjusted over the pairs
            raw = np.array([np.nan if getattr(p.summary, test) is None else getattr(p.summary, test) for p in pairs])
            for pair, adjusted in zip(pairs, stats.holm(raw), strict=True):
                setattr(pair.summary, f"{test}_holm", None if np.isnan(adjusted) else float(adjusted))
    return Comparison(models, chosen, values, pairs, list(dict.fromkeys(notes)), metric)


# Column order of compare's summary rows (TSV/CSV and JSON): PairedSummary's fields but its notes.
SUMMARY_KEYS = [f.name for f in dataclasses.fields(PairedSummary) if f.name != "notes"]


def summary_row(pair: PairComparison) -> dict:
    """A pair's across-cell summary as one row of SUMMARY_KEYS."""
    values = dataclasses.asdict(pair.summary)
    return {key: values[key] for key in SUMMARY_KEYS}


def _cell_object(pair, row) -> dict:
    """A per-cell JSON object with the model names in the metric's keys (e.g. auc_crnn)."""
    m = pair.metric
    obj = {"cell": row["cell"], "n": row["n"], "positives": row["positives"],
           f"{m}_{pair.model_a}": row[f"{m}_a"], f"{m}_{pair.model_b}": row[f"{m}_b"]}
    obj.update({key: row[key] for key in cell_keys(m)[5:]})
    return obj


def _summary_object(pair) -> dict:
    summary = summary_row(pair)
    summary["median_delta_ci"] = [summary["median_delta_ci_low"], summary["median_delta_ci_high"]]
    summary["verdict"] = pair.verdict()
    return summary


def pair_payload(pair: PairComparison) -> dict:
    """One pair as compare's JSON shows it: per-cell objects and the summary with its verdict."""
    return {"model_a": pair.model_a, "model_b": pair.model_b, "metric": pair.metric,
            "cells": [_cell_object(pair, row) for row in pair.cells], "summary": _summary_object(pair)}


def json_payload(result: Comparison) -> dict:
    """What `compare -f json` prints (before NaN cleaning): cells and summary, or one block per pair."""
    if len(result.pairs) == 1:
        block = pair_payload(result.pairs[0])
        return {"models": result.models, "metric": result.metric, "cells": block["cells"],
                "summary": block["summary"], "notes": result.notes}
    return {"models": result.models, "metric": result.metric, "pairs": [pair_payload(pair) for pair in result.pairs],
            "notes": result.notes}
