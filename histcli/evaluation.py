"""Apply registry models to stored cells: inputs matched by mark name, cached predictions, metrics.

Predictions for a (model entry, cell, split) are cached in the entry folder,
``predictions/<cell>.<split>.npz``, keyed by the SHA-256 of the weights and
the cell's fingerprint. A retrained model or a re-prepared cell misses the
cache, so ``compare`` never reuses stale numbers and never retrains.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from histcli.errors import ChangedDataError, HistcliError, ModelError, StoreError, UnlabelledCellError
from histcli.fsutil import atomic_path
from histcli.metrics import DEFAULT_THRESHOLD
from histcli.registry import Entry
from histcli.splits import check_split_choice, splits_to_load
from histcli.store import CellData, Store, orientation_unknown
from histcli.tasks import TASK_NAMES, every_task

log = logging.getLogger("histcli")

CACHE_FOLDER = "predictions"
# What --allow-changed-data did, after the ChangedDataError it let through.
ALLOWED_CHANGE = "evaluated anyway (--allow-changed-data)"
# The warnings this process has given: report and compare --plot score a model and cell more than once.
_WARNED: set[str] = set()
# Column order of evaluate's metrics (histcli.tasks names which apply to a model).
METRIC_ORDER = ("auc", "auprc", "accuracy", "pearson", "spearman", "r2", "rmse")


@dataclass
class Predictions:
    model: str
    trained_on: str
    cell: str
    split: str
    gene_ids: np.ndarray
    labels: np.ndarray | None
    scores: np.ndarray  # the task's prediction: a probability, or a level on the target scale
    measured: np.ndarray | None = None  # regression: the measured levels on the target scale
    task: object = None  # histcli.tasks task of the model


def check_layout(entry: Entry, marks, n_bins: int, bin_size: int, tss_offset: int, what: str) -> None:
    """An input's marks (by name), bins and TSS position against the model's; ModelError naming ``what``.

    ``predict --track`` checks its tracks and window with it before reading a track."""
    wanted = entry.input
    where = f"model {entry.name!r} (trained on {entry.cell})"
    missing = [mark for mark in wanted.marks if mark not in marks]
    if missing:
        raise ModelError(f"{where} needs mark(s) {', '.join(missing)}, which {what} lacks "
                         f"(it has {', '.join(marks)})")
    if n_bins != wanted.n_bins or bin_size != wanted.bin_size:
        raise ModelError(f"{where} expects {wanted.n_bins} bins of {wanted.bin_size} bp, but {what} has "
                         f"{n_bins} bins of {bin_size} bp")
    if tss_offset != wanted.tss_offset:
        raise ModelError(f"{where} expects the TSS {wanted.tss_offset} bp into the window, but {what} has it "
                         f"at {tss_offset} bp")


def match_inputs(entry: Entry, cell: CellData, *, described: str | None = None) -> np.ndarray:
    """The cell's counts in the model's mark order and transform; shape and names are checked.

    ``described`` names the cell in messages (default "cell NAME"), e.g. "the track input" for genes binned
    from tracks for ``predict``, whose cell is nothing the user named."""
    from histcli.transforms import apply_transform

    wanted = entry.input
    where = f"model {entry.name!r} (trained on {entry.cell})"
    what = described or f"cell {cell.name}"
    check_layout(entry, cell.marks, cell.n_bins, cell.bin_size, cell.tss_offset, what)
    extra = [mark for mark in cell.marks if mark not in wanted.marks]
    if extra:
        log.info("%s: mark(s) %s not used by %s", what, ", ".join(extra), entry.name)
    # Its own cell is what the model was trained on; elsewhere nothing else would say it.
    if not wanted.mirror and orientation_unknown(cell.attrs) and (described is not None or cell.name != entry.cell):
        _warn_once(f"{what}: the genes' orientation is {cell.attrs['orientation']} (no strand), but {where} learnt "
                   "genes read 5' to 3' (trained without --mirror): the bins of its minus-strand genes run backwards "
                   "for it")
    order = [cell.marks.index(mark) for mark in wanted.marks]
    counts = cell.counts_array()
    if order != list(range(len(cell.marks))):
        counts = counts[:, :, order]
    return apply_transform(wanted.transform, counts)


def predict_scores(entry: Entry, inputs: np.ndarray, device: str = "cpu", module=None) -> np.ndarray:
    """The model's predictions for transformed inputs (genes x bins x marks), as its task gives them:
    probabilities, or levels on the target scale."""
    import torch

    from histcli.training import EVAL_BATCH, predict_logits

    module = module if module is not None else entry.build_module(device)
    if len(inputs) == 0:
        return np.zeros(0, dtype=np.float32)
    outputs = predict_logits(module, torch.from_numpy(inputs).to(device), EVAL_BATCH,
                             mirror=entry.input.mirror)
    return entry.task.scores(outputs.float().cpu().numpy())


def check_held_out(entry: Entry, cell: str, split: str) -> None:
    """A model refit on its cell's validation genes cannot be scored on them as if they were unseen."""
    if split == "valid" and cell == entry.cell and entry.refit:
        raise HistcliError(
            f"model {entry.name} was refit on the training and validation genes of {cell}, so its validation "
            f"genes are not held out: score --split test, or read the validation {entry.task.selection_label} "
            f"it was chosen by in 'histcli models show {entry.name} --cell {cell}' (train with --no-refit to "
            "keep them out)")


def check_trained_data(entry: Entry, store: Store, cell: str, fingerprint: str, allow_changed: bool) -> None:
    """The model's own cell must still hold the data it was trained on (its test genes unseen), and for a
    regression model the same expression values; ``allow_changed`` turns the error into a warning."""
    from histcli.store import expression_digest

    if cell != entry.cell:
        return
    data = entry.data
    changed = None
    if data.fingerprint != fingerprint:
        changed = ("fingerprint", data.fingerprint, fingerprint)
    elif entry.task.uses_expression and data.expression_sha256 is not None:
        now = expression_digest(store.expression(cell)) or "none"
        if now != data.expression_sha256:
            changed = ("expression values", data.expression_sha256, now)
    if changed:
        what, then, now = changed
        error = ChangedDataError(store.path, cell, entry.name, trained=then, current=now, what=what)
        if not allow_changed:
            raise error
        _warn_once(f"{error}; {ALLOWED_CHANGE}")


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        log.warning("%s", message)


def changed_data_notes(entries: list[Entry], store: Store) -> list[str]:
    """One note per entry whose own cell changed since it was trained (what --allow-changed-data lets through)."""
    notes = []
    for entry in entries:
        try:
            check_trained_data(entry, store, entry.cell, store.fingerprint(entry.cell), allow_changed=False)
        except ChangedDataError as exc:
            notes.append(f"{exc}; {ALLOWED_CHANGE}")
    return notes


def check_cells_stored(store: Store, entries: list[Entry]) -> None:
    """Every entry's own cell must be in the store; checked before any work, naming the models, since a
    registry can outlive a store's cells (removed, or another store)."""
    if not store.exists():
        return  # loading then says so
    stored = store.cell_names()
    missing: dict[str, dict[str, None]] = {}  # cell -> its models, in order, once each
    for entry in entries:
        if entry.cell not in stored:
            missing.setdefault(entry.cell, {})[entry.name] = None
    if missing:
        lost = ", ".join(f"{cell} (trained on by {', '.join(names)})" for cell, names in missing.items())
        held = f"cells in the store: {', '.join(stored)}" if stored else "the store is empty"
        raise StoreError(f"store {store.path} lacks the cell(s) the models were trained on: {lost}; {held}; "
                         "name the cells to use with --cell")


def warn_overlap(entry: Entry, store: Store, cell: str, gene_ids: np.ndarray) -> None:
    """Transfer to another cell: say if the genes scored were among the model's training genes."""
    if cell == entry.cell or entry.cell not in store.cell_names():
        return
    seen = store.gene_ids(entry.cell, splits=["train", "valid"])
    overlap = int(np.isin(gene_ids, seen).sum())
    if overlap:
        log.warning("%d of the %d genes of %s scored by %s were in its training or validation genes (cell %s)",
                    overlap, len(gene_ids), cell, entry.name, entry.cell)


def _cache_path(entry: Entry, cell: str, split: str) -> Path:
    return entry.path / CACHE_FOLDER / f"{cell}.{split}.npz"


def _read_cache(path: Path, weights: str, fingerprint: str) -> dict | None:
    try:
        with np.load(path, allow_pickle=False) as cached:
            if str(cached["weights_sha256"]) != weights or str(cached["fingerprint"]) != fingerprint:
                return None
            return {key: cached[key] for key in ("gene_ids", "labels", "scores")}
    except (OSError, KeyError, ValueError):
        return None


def predictions_for(entry: Entry, store: Store, cell: str, split: str = "test", *, device: str = "auto",
                    allow_changed: bool = False) -> Predictions:
    """Predictions of a registry model for one stored cell and split, from the cache when valid.

    torch is imported only on a cache miss, so comparing cached models stays fast.
    """
    check_split_choice(split)
    check_held_out(entry, cell, split)
    weights = entry.metadata["weights_sha256"]
    path = _cache_path(entry, cell, split)
    fingerprint = store.fingerprint(cell)
    check_trained_data(entry, store, cell, fingerprint, allow_changed)
    cached = _read_cache(path, weights, fingerprint)
    if cached is None:
        # The fingerprint of the data actually loaded keys the cache, even if
        # another process replaced the cell a moment ago.
        data = store.load(cell, splits=splits_to_load(split))
        if data.fingerprint != fingerprint:  # not checked yet (a warning is given once)
            check_trained_data(entry, store, cell, data.fingerprint, allow_changed)
        from histcli.training import resolve_device

        entry.task.measured(data.expression, cell)  # a regression model on a cell without expression: refused
        scores = predict_scores(entry, match_inputs(entry, data), resolve_device(device))
        labels = data.labels if data.labels is not None else np.zeros(0, dtype=np.int8)
        cached = {"gene_ids": np.asarray(data.gene_ids, dtype=str), "labels": labels, "scores": scores}
        _write_cache(path, cached, weights, data.fingerprint)
    warn_overlap(entry, store, cell, cached["gene_ids"])
    n = len(cached["scores"])
    labels = cached["labels"]
    # Measured levels come from the store, not the cache: they may change while counts and labels do not.
    measured = None
    if entry.task.uses_expression:
        measured = entry.task.measured(store.expression(cell, None if split == "all" else [split]), cell)
    return Predictions(
        model=entry.name,
        trained_on=entry.cell,
        cell=cell,
        split=split,
        gene_ids=cached["gene_ids"],
        labels=labels if len(labels) == n else None,
        scores=cached["scores"],
        measured=measured if measured is not None and len(measured) == n else None,
        task=entry.task,
    )


def _write_cache(path: Path, arrays: dict, weights: str, fingerprint: str) -> None:
    try:
        path.parent.mkdir(exist_ok=True)
        with atomic_path(path) as temp:
            with open(temp, "wb") as handle:
                np.savez(handle, weights_sha256=np.array(weights), fingerprint=np.array(fingerprint), **arrays)
    except OSError as exc:
        # A read-only registry still evaluates; it only cannot remember the result.
        log.info("could not cache predictions in %s (%s)", path.parent, exc.strerror)


def metric_columns(tasks) -> list[str]:
    """The metrics of every task among ``tasks``, in one fixed order: AUC and AUPRC first, so that their
    columns keep their places whichever models are evaluated (scripts cut and awk by position)."""
    present = {metric for task in tasks for metric in task.metric_columns}
    return [metric for metric in METRIC_ORDER if metric in present]


def metrics_row(predictions: Predictions, threshold: float = DEFAULT_THRESHOLD,
                columns: list[str] | None = None) -> dict:
    """The task's metrics and counts, one key per name of ``columns`` (default: the task's own);
    undefined metrics are None with a note."""
    task = predictions.task
    labels = predictions.labels
    if labels is None and predictions.measured is None:
        raise UnlabelledCellError(predictions.cell)
    n = len(predictions.scores)
    row = {
        "model": predictions.model,
        "cell": predictions.cell,
        "trained_on": predictions.trained_on,
        "split": predictions.split,
        "n": n,
        "positives": None if labels is None else int(labels.sum()),
    }
    row.update({key: None for key in columns or task.metric_columns})
    row["task"] = task.name
    if n == 0:
        log.warning("%s on %s: the %s split has no genes", predictions.model, predictions.cell, predictions.split)
        return row
    values = task.metrics(labels, predictions.measured, predictions.scores, threshold)
    row.update({key: value for key, value in values.items() if key in row})
    if labels is not None and values.get("auc") is None:
        log.warning("%s on %s: every %s gene has label %d, so AUC and AUPRC are undefined",
                    predictions.model, predictions.cell, predictions.split, int(labels[0]))
    return row


def evaluation_rows(entries: list[Entry], store: Store, split: str = "test", *, on_cell: str | None = None,
                    threshold: float = DEFAULT_THRESHOLD, device: str = "auto", allow_changed: bool = False,
                    on_entry=None) -> list[dict]:
    """``metrics_row`` of every entry on its own cell (or ``on_cell``), sorted by cell, model and
    training cell; ``on_entry()`` is called after each entry."""
    from histcli import interrupt

    if on_cell is None:
        check_cells_stored(store, entries)
    for entry in entries:  # before any model is run
        check_held_out(entry, on_cell or entry.cell, split)
    rows = []
    columns = metric_columns(every_task())
    for entry in entries:
        interrupt.check()
        predictions = predictions_for(entry, store, on_cell or entry.cell, split, device=device,
                                      allow_changed=allow_changed)
        rows.append(metrics_row(predictions, threshold, columns))
        if on_entry is not None:
            on_entry()
    rows.sort(key=lambda row: (row["cell"], row["model"], row["trained_on"]))
    return rows


def summarise(rows: list[dict], metric: str = "auc") -> list[dict]:
    """Per model: the number of cells where ``metric`` is defined, and its mean, median, min and max."""
    summaries = []
    for model in dict.fromkeys(row["model"] for row in rows):
        values = np.array([row[metric] for row in rows if row["model"] == model and row[metric] is not None])
        summary = {"model": model, "n_cells": len(values)}
        for statistic, function in (("mean", np.mean), ("median", np.median), ("min", np.min), ("max", np.max)):
            summary[f"{statistic}_{metric}"] = float(function(values)) if len(values) else None
        summaries.append(summary)
    return summaries


def summary_statistics(tasks) -> dict[str, list[str]]:
    """Metric -> the statistics (``summarise`` names) that any of ``tasks`` summarises it by, in order.

    Tasks count in TASK_NAMES' order, not in the order given: the summary's columns keep their places
    whichever model is named first, and a classifier's are a prefix of a mixed summary's."""
    wanted: dict[str, list[str]] = {}
    for task in sorted(tasks, key=lambda task: TASK_NAMES.index(task.name)):
        for metric, statistics in task.summary_statistics:
            wanted[metric] = list(dict.fromkeys([*wanted.get(metric, []), *statistics]))
    return wanted


def model_summaries(rows: list[dict], tasks) -> list[dict]:
    """One dict per model: n_cells and, for every metric the ``tasks`` summarise, the statistics they name
    (``mean_auc``, ``median_pearson``, ...; None where a metric does not apply to the model)."""
    by_model: dict[str, dict] = {}
    for metric, statistics in summary_statistics(tasks).items():
        for summary in summarise(rows, metric):
            merged = by_model.setdefault(summary["model"], {"model": summary["model"], "n_cells": 0})
            merged["n_cells"] = max(merged["n_cells"], summary["n_cells"])
            merged.update({f"{statistic}_{metric}": summary[f"{statistic}_{metric}"] for statistic in statistics})
    return list(by_model.values())


def evaluation_payload(rows: list[dict]) -> dict:
    """What ``evaluate -f json`` prints (and the report embeds): the rows and the summary per model, with every
    task's keys whichever models were evaluated."""
    return {"rows": rows, "summary": model_summaries(rows, every_task())}
