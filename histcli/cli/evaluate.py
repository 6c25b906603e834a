"""`histcli evaluate`: per-cell metrics of registry models (AUC, AUPRC and accuracy; for regression models
Pearson r, Spearman rho, R², RMSE and the AUC of the predicted level), then a summary per model."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from histcli.cli.options import (
    DEFAULT_MODELS,
    DEFAULT_STORE,
    AllowChangedOption,
    CellsOption,
    Device,
    DeviceOption,
    ModelsOption,
    QuietOption,
    SplitOption,
    StoreOption,
    TableFormat,
    TableFormatOption,
    complete_cells,
    complete_model_names,
)


def evaluate_columns(metrics: list[str]):
    """Per-cell columns: counts, then the metrics of the tasks evaluated (histcli.evaluation.metric_columns)."""
    from histcli.output import Column

    return [
        Column("model", justify="left"),
        Column("cell", justify="left"),
        Column("trained_on", justify="left"),
        Column("split", justify="left"),
        Column("n"),
        Column("positives"),
        *(Column(metric, digits=4) for metric in metrics),
        Column("task", justify="left"),
    ]


def people_tables(rows: list[dict], entries) -> list[tuple[list[dict], list]]:
    """For a terminal: one table per task, with the task's headline metrics, so that each fits 80 columns.
    The split is in the title; trained_on only shows when a model was applied to another cell."""
    from histcli.output import Column

    tables = []
    tasks = {entry.task.name: entry.task for entry in entries}
    transfer = any(row["trained_on"] != row["cell"] for row in rows)
    for name, task in tasks.items():
        task_rows = [row for row in rows if row["task"] == name]
        columns = [Column("model", justify="left"), Column("cell", justify="left")]
        columns += [Column("trained_on", "trained on", justify="left")] if transfer else []
        columns += [Column("n")] + [Column(key, header) if key == "positives" else Column(key, header, digits=4)
                                    for key, header in task.metric_headers.items()]
        tables.append((task_rows, columns))
    return tables


def summary_columns(tasks) -> list:
    """Columns of the summary per model: the statistics the tasks summarise (histcli.tasks)."""
    from histcli.evaluation import summary_statistics
    from histcli.output import Column

    headers = {metric: header for task in tasks for metric, header in task.metric_headers.items()}
    return [Column("model", justify="left"), Column("n_cells", "cells")] + [
        Column(f"{statistic}_{metric}", f"{headers[metric]} {statistic}", digits=4)
        for metric, statistics in summary_statistics(tasks).items() for statistic in statistics]


def chosen_entries(registry, names: list[str], cells: list[str] | None):
    """(entry) for every model name and cell asked for, each once; by default every cell of each name."""
    from histcli.registry import model_tasks

    entries = []
    for name in names:
        # A cell named twice is evaluated once: a repeated row would count twice in the summary over cells.
        model_cells = list(dict.fromkeys(cells)) if cells else registry.require_cells(name)
        entries.extend(registry.get(name, cell) for cell in model_cells)
    model_tasks(entries)  # a model's summary over cells is of one task
    return entries


def evaluate(
    names: Annotated[list[str], typer.Argument(help="Model names in the registry.", autocompletion=complete_model_names)],
    cells: CellsOption = None,
    on_cell: Annotated[Optional[str], typer.Option("--on-cell", help="Evaluate on this cell's genes instead of "
                                                   "each model's own cell (transfer).", autocompletion=complete_cells)] = None,
    split: SplitOption = "test",
    threshold: Annotated[Optional[float], typer.Option("--threshold", min=0.0, max=1.0, help="Probability cut-off "
                                                       "for the accuracy of classifiers [default: 0.5].")] = None,
    summary: Annotated[bool, typer.Option("--summary", help="TSV/CSV: print one row per model (AUC mean, median, "
                                                            "min and max over cells, AUPRC mean; Pearson r for "
                                                            "regression models) instead of the per-cell rows.")] = False,
    device: DeviceOption = Device.auto,
    allow_changed_data: AllowChangedOption = False,
    store_path: StoreOption = DEFAULT_STORE,
    models_path: ModelsOption = DEFAULT_MODELS,
    output_format: TableFormatOption = TableFormat.auto,
    quiet: QuietOption = False,
) -> None:
    """Metrics per (model, cell), sorted by cell: AUC, AUPRC and accuracy; for regression models Pearson r, Spearman
    rho, R², RMSE and the AUC of the predicted level against the high/low labels. Then a summary per model."""
    from histcli.cli import console
    from histcli.cli.options import check_threshold
    from histcli.evaluation import evaluation_payload, evaluation_rows, metric_columns
    from histcli.metrics import DEFAULT_THRESHOLD
    from histcli.output import render_rows, resolve_format, write_rich_table
    from histcli.registry import Registry
    from histcli.splits import check_split_choice, split_genes
    from histcli.store import Store
    from histcli.tasks import every_task

    console.setup(quiet)
    check_split_choice(split)
    store = Store(store_path)
    entries = chosen_entries(Registry(models_path), list(dict.fromkeys(names)), cells)
    check_threshold(threshold, entries)
    with console.progress() as bar:
        task = bar.add_task("evaluating", total=len(entries))
        rows = evaluation_rows(entries, store, split, on_cell=on_cell,
                               threshold=DEFAULT_THRESHOLD if threshold is None else threshold, device=device.value,
                               allow_changed=allow_changed_data, on_entry=lambda: bar.advance(task))
    # Machine formats carry every task's columns, whichever models are evaluated.
    payload = evaluation_payload(rows)
    summaries = payload["summary"]
    fmt = resolve_format(output_format.value)
    if summary and fmt in ("tsv", "csv"):
        render_rows(summaries, summary_columns(every_task()), fmt)
        return
    if fmt != "table":
        render_rows(rows, evaluate_columns(metric_columns(every_task())), fmt, json_payload=payload)
        return
    tasks = list({entry.task.name: entry.task for entry in entries}.values())
    # A terminal: per task, the cells, then the summary over cells; each fits 80 columns.
    for task_rows, columns in people_tables(rows, entries):
        task = next(t for t in tasks if t.name == task_rows[0]["task"])
        models = {row["model"] for row in task_rows}
        write_rich_table(task_rows, columns, title=f"{task.name}, {split_genes(split)}")
        write_rich_table([s for s in summaries if s["model"] in models], summary_columns([task]),
                         # Transfer: one cell, so the summary runs over the cells the models were trained on.
                         title=f"{task.name}, summary over {'training ' if on_cell else ''}cells")
