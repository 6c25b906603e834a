"""`histcli store list|show|rm|upgrade`: what the dataset store holds."""

from __future__ import annotations

from typing import Annotated

import typer

from histcli.cli.options import (
    DEFAULT_STORE,
    FormatOption,
    HistcliTyper,
    OutputFormat,
    QuietOption,
    StoreOption,
    complete_cells,
)

app = HistcliTyper(help="Inspect the dataset store.", no_args_is_help=True)


def summary_columns():
    from histcli.output import Column

    return [
        Column("cell", justify="left"),
        Column("genes"),
        Column("train"),
        Column("valid"),
        Column("test"),
        Column("unsplit"),
        Column("bins", shared=True),
        Column("bin_size", shared=True),
        Column("marks", justify="left", shared=True, fold=True, items=True),
        Column("positive_fraction", "positive", percent=True),
    ]


def summary_row(summary) -> dict:
    sizes = summary.split_sizes
    return {
        "cell": summary.name,
        "genes": summary.n_genes,
        "train": sizes["train"],
        "valid": sizes["valid"],
        "test": sizes["test"],
        "unsplit": sizes["none"],
        "bins": summary.n_bins,
        "bin_size": summary.bin_size,
        "marks": ",".join(summary.marks),
        "positive_fraction": summary.positive_fraction,
    }


def print_summaries(summaries, fmt: OutputFormat, title: str) -> None:
    from histcli.output import render_rows

    render_rows([summary_row(s) for s in summaries], summary_columns(), fmt.value, title=title)


@app.command("list", short_help="One row per cell: genes per split, marks, bins.")
def list_cells(store_path: StoreOption = DEFAULT_STORE, output_format: FormatOption = OutputFormat.auto) -> None:
    """One row per cell: genes per split, bins, bin size, marks and the fraction of positive labels."""
    from histcli.cli import console
    from histcli.store import Store

    # The store names a missing store, or a folder given for its file (histcli.errors.NoStoreError).
    summaries = Store(store_path).readable_summaries(
        lambda exc: console.note(f"left out an unreadable cell: {exc}; 'histcli store rm' removes it"))
    print_summaries(summaries, output_format, title=f"{store_path}")


@app.command("show", short_help="One cell: shape, splits, labels and sources.")
def show_cell(
    cell: Annotated[str, typer.Argument(help="Cell name.", autocompletion=complete_cells)],
    store_path: StoreOption = DEFAULT_STORE,
    output_format: FormatOption = OutputFormat.auto,
) -> None:
    """One cell in detail: shape, splits, labels, attributes and source files with SHA-256."""
    from histcli.output import field_value_columns, render_rows
    from histcli.store import Store

    summary = Store(store_path).summary(cell)
    fields = {
        "cell": summary.name,
        "genes": summary.n_genes,
        **{f"genes_{split}": count for split, count in summary.split_sizes.items()},
        "bins": summary.n_bins,
        "bin_size": summary.bin_size,
        "window": summary.window,
        "tss_offset": summary.tss_offset,
        "marks": ",".join(summary.marks),
        "counts_dtype": summary.counts_dtype,
        "positive_fraction": summary.positive_fraction,
        "expression": summary.has_expression,
        "source_format": summary.source_format,
        **{key: value for key, value in summary.attrs.items()},
        "created": summary.created,
        "fingerprint": summary.fingerprint,
        "encoding_version": summary.encoding_version,
        "stored_bytes": summary.stored_bytes,
    }
    sources = {}
    for index, source in enumerate(summary.sources, start=1):
        sources[f"source_{index}"] = source["path"]
        sources[f"source_{index}_sha256"] = source["sha256"]
    rows = [{"field": key, "value": value} for key, value in {**fields, **sources}.items()]
    # JSON: the TSV's fields under the same names, with the sources as a list rather than numbered fields.
    render_rows(rows, field_value_columns(), output_format.value, title=f"{cell} in {store_path}",
                json_payload={**fields, "sources": summary.sources})


@app.command("rm", short_help="Remove cells (atomically; the others stay).")
def remove_cells(
    cells: Annotated[list[str], typer.Argument(help="Cells to remove.", autocompletion=complete_cells)],
    store_path: StoreOption = DEFAULT_STORE,
    output_format: FormatOption = OutputFormat.auto,
) -> None:
    """Remove cells from the store (atomically; other cells are untouched); prints what was removed."""
    from histcli.output import render_rows
    from histcli.store import Store

    store = Store(store_path)
    cells = list(dict.fromkeys(cells))  # a cell named twice is removed, and listed, once
    removed = [_removal_row(store, cell) for cell in cells]
    store.remove(cells)
    render_rows(removed, summary_columns(), output_format.value, title=f"removed from {store_path}")


def _removal_row(store, cell: str) -> dict:
    """summary_row of a cell about to be removed; a cell whose file is missing or damaged, which rm is the way to
    clear, gives its name only (with a note)."""
    from histcli.cli import console
    from histcli.errors import StoreError

    try:
        return summary_row(store.summary(cell))
    except StoreError as exc:
        if cell not in store.cell_names():
            raise
        console.note(f"removing an unreadable cell: {exc}")
        return {"cell": cell}


@app.command("upgrade", short_help="Convert a store from before format 2.0.")
def upgrade_store(
    store_path: StoreOption = DEFAULT_STORE,
    output_format: FormatOption = OutputFormat.auto,
    quiet: QuietOption = False,
) -> None:
    """Convert a store from before format 2.0 (every cell in one file) to one file per cell, in place."""
    from histcli.cli import console
    from histcli.store import FORMAT_VERSION, Store

    console.setup(quiet)
    store = Store(store_path)
    converted = store.upgrade()
    if not converted:
        console.note(f"{store_path} is already in store format {FORMAT_VERSION}; nothing to do")
    print_summaries(store.summaries(converted), output_format,
                    title=f"upgraded in {store_path} to store format {FORMAT_VERSION}")
