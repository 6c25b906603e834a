"""`histcli evaluate`: per-cell AUC, AUPRC and accuracy of registry models."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from histcli.cli.options import (
    DEFAULT_MODELS,
    DEFAULT_STORE,
    CellsOption,
    Device,
    DeviceOption,
    ModelsOption,
    QuietOption,
    StoreOption,
    TableFormat,
    TableFormatOption,
    complete_cells,
    complete_model_names,
)

SplitOption = Annotated[
    str,
    typer.Option("--split", help="Genes to evaluate on: test, valid, train, none (unsplit) or all."),
]
AllowChangedOption = Annotated[
    bool,
    typer.Option("--allow-changed-data", help="Evaluate even if the model's cell changed since training."),
]


def evaluate_columns():
    from histcli.output import Column

    return [
        Column("model", justify="left"),
        Column("cell", justify="left"),
        Column("trained_on", justify="left"),
        Column("split", justify="left"),
        Column("n"),
        Column("positives"),
        Column("auc", digits=4),
        Column("auprc", digits=4),
        Column("accuracy", digits=4),
    ]


def chosen_entries(registry, names: list[str], cells: list[str] | None):
    """(entry) for every model name and cell asked for; by default every cell of each name."""
    from histcli.errors import ModelError

    entries = []
    for name in names:
        model_cells = cells or registry.cells(name)
        if not model_cells:
            known = registry.names()
            hint = f"; models: {', '.join(known)}" if known else "; the registry is empty"
            raise ModelError(f"no model {name!r} in {registry.root}{hint}")
        entries.extend(registry.get(name, cell) for cell in model_cells)
    return entries


def evaluate(
    names: Annotated[list[str], typer.Argument(help="Model names in the registry.", autocompletion=complete_model_names)],
    cells: CellsOption = None,
    on_cell: Annotated[Optional[str], typer.Option("--on-cell", help="Evaluate on this cell's genes instead of "
                                                   "each model's own cell (transfer).", autocompletion=complete_cells)] = None,
    split: SplitOption = "test",
    threshold: Annotated[float, typer.Option("--threshold", min=0.0, max=1.0, help="Probability cut-off for accuracy.")] = 0.5,
    summary: Annotated[bool, typer.Option("--summary", help="TSV/CSV: print one row per model (mean, median, min "
                                                            "and max AUC over cells) instead of the per-cell rows.")] = False,
    device: DeviceOption = Device.auto,
    allow_changed_data: AllowChangedOption = False,
    store_path: StoreOption = DEFAULT_STORE,
    models_path: ModelsOption = DEFAULT_MODELS,
    output_format: TableFormatOption = TableFormat.auto,
    quiet: QuietOption = False,
) -> None:
    """AUC, AUPRC and accuracy per (model, cell), sorted by cell, with mean/median/min/max rows."""
    from histcli.cli import console
    from histcli.evaluation import evaluation_rows, summarise
    from histcli.output import Column, render_rows, resolve_format
    from histcli.registry import Registry
    from histcli.splits import check_split_choice
    from histcli.store import Store

    console.setup(quiet)
    check_split_choice(split)
    store = Store(store_path)
    entries = chosen_entries(Registry(models_path), list(dict.fromkeys(names)), cells)
    with console.progress() as bar:
        task = bar.add_task("evaluating", total=len(entries))
        rows = evaluation_rows(entries, store, split, on_cell=on_cell, threshold=threshold, device=device.value,
                               allow_changed=allow_changed_data, on_entry=lambda: bar.advance(task))
    summaries = summarise(rows)
    if summary and resolve_format(output_format.value) in ("tsv", "csv"):
        columns = [Column(key) for key in ("model", "n_cells", "mean_auc", "median_auc", "min_auc", "max_auc")]
        render_rows(summaries, columns, output_format.value)
        return
    # In the rich table the summaries sit below the cells, one row per statistic and model.
    footer = [{"model": s["model"], "cell": statistic, "auc": s[f"{statistic}_auc"]}
              for s in summaries for statistic in ("mean", "median", "min", "max")]
    render_rows(rows, evaluate_columns(), output_format.value, title=f"{split} split", footer_rows=footer,
                json_payload={"rows": rows, "summary": summaries})
