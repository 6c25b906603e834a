"""`histcli models list|show|rm`: what the model registry holds."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from histcli.cli.options import (
    DEFAULT_MODELS,
    FormatOption,
    HistcliTyper,
    ModelsOption,
    OutputFormat,
    complete_cells,
    complete_model_names,
    seed_column,
)

app = HistcliTyper(help="Inspect the model registry.", no_args_is_help=True)

ModelName = Annotated[str, typer.Argument(help="Model name.", autocompletion=complete_model_names)]


def entry_row(entry) -> dict:
    config, metadata = entry.config, entry.metadata
    return {
        "model": entry.name,
        "cell": entry.cell,
        "arch": config["architecture"],
        "task": entry.task.name,
        "marks": ",".join(entry.input.marks),
        "bins": entry.input.n_bins,
        "bin_size": entry.input.bin_size,
        "seeds": list(entry.seeds),  # TSV's seed column shows them as text, "0-4" (seed_column)
        "members": len(entry.seeds),
        "best_epoch": metadata["best_epoch"],
        # The validation metric that selected the weights: AUC for classifiers, Pearson r for regressors.
        "valid_auc": metadata.get("best_valid_auc"),
        "valid_pearson": metadata.get("best_valid_pearson"),
        "converged": metadata.get("converged"),  # None: trained before histcli recorded it
        "interrupted": metadata["interrupted"],
        "created": metadata["created"],
        "refit": entry.refit,  # the weights learnt from the validation genes too (train --refit)
    }


def people_row(entry) -> dict:
    """entry_row and, for people, the selection metric's value with its name, e.g. "0.9012 AUC" or "0.7704 r",
    and "interrupted" for converged where Ctrl-C stopped the training (the table has no interrupted column)."""
    row = entry_row(entry)
    return {**row, "valid": f"{entry.best_valid_score:.4f} {entry.task.selection_header}",
            "converged": "interrupted" if row["interrupted"] else row["converged"]}


def people_columns():
    """The columns a terminal shows: one line per entry within 80 columns (machine formats have every field)."""
    from histcli.output import Column

    return [Column("model", justify="left"), Column("cell", justify="left"), Column("arch", justify="left"),
            seed_column(justify="left"), Column("best_epoch", "best"), Column("valid", "valid"),
            Column("converged")]


def entry_columns():
    from histcli.output import Column

    return [Column("model", justify="left"), Column("cell", justify="left"), Column("arch", justify="left"),
            Column("task", justify="left"), Column("marks", justify="left"), Column("bins"), Column("bin_size"),
            seed_column(justify="left"), Column("members"), Column("best_epoch"), Column("valid_auc", digits=4),
            Column("valid_pearson", digits=4), Column("converged"),
            Column("interrupted"),
            Column("created", justify="left"), Column("refit")]


@app.command("list", short_help="One row per entry (model name x cell).")
def list_models(
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="Only this model name.",
                                                autocompletion=complete_model_names)] = None,
    cell: Annotated[Optional[str], typer.Option("--cell", "-c", help="Only this cell.",
                                                autocompletion=complete_cells)] = None,
    models_path: ModelsOption = DEFAULT_MODELS,
    output_format: FormatOption = OutputFormat.auto,
) -> None:
    """One row per registry entry (model name x cell)."""
    from histcli.cli import console
    from histcli.output import render_rows, resolve_format
    from histcli.registry import Registry

    fmt = resolve_format(output_format.value)
    registry = Registry(models_path)
    damaged = []

    def left_out(exc) -> None:
        damaged.append(exc)
        console.note(f"left out a damaged entry: {exc}")

    entries = registry.entries(name, cell, on_unreadable=left_out)
    # A damaged entry that matched is already named: "no entry ... exists for <its cell>" would contradict itself.
    if not entries and not damaged and (name or cell):
        # An empty list stays a valid answer for scripts; people learn what the registry has instead.
        if name:
            console.note(f"no entry for model {name!r}" + (f" and cell {cell!r}" if cell else "")
                         + registry.known_hint(name))
        else:
            cells = sorted({found for model in registry.names() for found in registry.cells(model)})
            console.note(f"no entry for cell {cell!r} in {models_path}; "
                         + (f"cells with entries: {', '.join(cells)}" if cells else "the registry is empty"))
    if fmt == "table":
        render_rows([people_row(entry) for entry in entries], people_columns(), fmt, title=f"models in {models_path}")
    else:
        render_rows([entry_row(entry) for entry in entries], entry_columns(), fmt)


@app.command("show", short_help="One entry: configuration, training and history.")
def show_model(
    name: ModelName,
    cell: Annotated[str, typer.Option("--cell", "-c", help="Cell of the entry.", autocompletion=complete_cells)],
    models_path: ModelsOption = DEFAULT_MODELS,
    output_format: FormatOption = OutputFormat.auto,
) -> None:
    """One entry in detail: architecture, hyperparameters, training settings, data and results."""
    from histcli.output import field_value_columns, render_rows, resolve_format
    from histcli.registry import Registry

    entry = Registry(models_path).get(name, cell)
    full = resolve_format(output_format.value) != "table"
    fields = {"path": str(entry.path)}
    for section in ("architecture", "hyperparameters", "training", "input", "data"):
        value = entry.config[section]
        if isinstance(value, dict):
            fields.update({f"{section}.{key}": item for key, item in value.items()})
        else:
            fields[section] = value
    fields.update({key: value for key, value in entry.metadata.items() if key not in ("history", "members")})
    fields["history"] = _history(entry.metadata["history"], f"valid_{entry.selection_metric}", full)
    for member in entry.members:
        fields.update({f"member.seed{member['seed']}.{key}": value for key, value in member.items()
                       if key not in ("seed", "history")})
        fields[f"member.seed{member['seed']}.history"] = _history(member["history"], f"valid_{entry.selection_metric}",
                                                                  full)
    rows = [{"field": key, "value": _flat(value)} for key, value in fields.items()]
    render_rows(rows, field_value_columns(), output_format.value,
                title=f"{name} for {cell}",
                json_payload={"path": str(entry.path), "config": entry.config, "metadata": entry.metadata})


def _history(history: list[dict], key: str, full: bool) -> str:
    """epoch:value pairs of the validation metric ``key`` (valid_auc, valid_pearson); 4 decimals for people,
    full precision (``full``) for machines."""
    from histcli.output import machine_text

    return " ".join(f"{h['epoch']}:{machine_text(h[key]) if full else format(h[key], '.4f')}" for h in history)


def _flat(value):
    if isinstance(value, dict):
        return ",".join(f"{key}={item}" for key, item in value.items())
    return value


@app.command("rm", short_help="Remove a model's entries, for one cell or all.")
def remove_model(
    name: ModelName,
    cell: Annotated[Optional[str], typer.Option("--cell", "-c", help="Only this cell (default: every cell).",
                                                autocompletion=complete_cells)] = None,
    models_path: ModelsOption = DEFAULT_MODELS,
    output_format: FormatOption = OutputFormat.auto,
) -> None:
    """Remove a model's entries (one cell, or all of them); prints what was removed."""
    from histcli.output import render_rows
    from histcli.registry import Registry

    registry = Registry(models_path)
    cells = [cell] if cell else registry.require_cells(name)
    rows = [_removal_row(registry, name, entry_cell) for entry_cell in cells]
    registry.remove(name, cell)
    render_rows(rows, entry_columns(), output_format.value, title=f"removed from {models_path}")


def _removal_row(registry, name: str, cell: str) -> dict:
    """entry_row of an entry about to be removed; a damaged entry, which rm is the way to clear, gives its model
    and cell only (with a note)."""
    from histcli.cli import console
    from histcli.errors import ModelError

    try:
        return entry_row(registry.get(name, cell))
    except ModelError as exc:
        if not registry.entry_path(name, cell).is_dir():
            raise
        console.note(f"removing a damaged entry: {exc}")
        return {"model": name, "cell": cell}
