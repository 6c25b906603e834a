"""`histcli predict`: probabilities for new genes from TSV, genome-wide tracks or the store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from histcli.cli.options import (
    DEFAULT_MODELS,
    DEFAULT_STORE,
    Aggregate,
    Device,
    DeviceOption,
    DropMissingOption,
    ModelsOption,
    PredictionFormat,
    QuietOption,
    StoreOption,
    complete_cells,
    complete_model_names,
    parse_tracks,
)


def predict(
    arguments: Annotated[Optional[list[str]], typer.Argument(
        help="NAME INPUT: the registry model and a TSV file (gzip allowed, '-' for stdin). "
             "With --model, only INPUT. With --track or --from-store, no INPUT.",
        autocompletion=complete_model_names, metavar="[NAME] [INPUT]")] = None,
    cell: Annotated[Optional[str], typer.Option("--cell", "-c", help="Cell the model was trained on.",
                                                autocompletion=complete_cells)] = None,
    model: Annotated[Optional[Path], typer.Option("--model", help="A model entry folder (e.g. copied from the registry).",
                                                  rich_help_panel="Model")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o",
                                                   help="Output TSV (written atomically; default stdout).")] = None,
    threshold: Annotated[float, typer.Option("--threshold", min=0.0, max=1.0,
                                             help="prediction = probability >= threshold.")] = 0.5,
    output_format: Annotated[PredictionFormat, typer.Option("--format", "-f", case_sensitive=False,
                                                            help="Output format.")] = PredictionFormat.tsv,
    track: Annotated[Optional[list[str]], typer.Option("--track", "-t", help="MARK=FILE bedGraph/bigWig (repeat per mark).",
                                                       rich_help_panel="Tracks")] = None,
    genes: Annotated[Optional[Path], typer.Option("--genes", help="BED, GTF or GFF3 genes for --track.",
                                                  rich_help_panel="Tracks")] = None,
    bin_size: Annotated[Optional[int], typer.Option("--bin-size", min=1, help="Default: the model's.",
                                                    rich_help_panel="Tracks")] = None,
    window: Annotated[Optional[int], typer.Option("--window", min=1, help="Bp each side of the TSS; default: the model's.",
                                                  rich_help_panel="Tracks")] = None,
    aggregate: Annotated[Optional[Aggregate], typer.Option(
        "--aggregate", case_sensitive=False, rich_help_panel="Tracks",
        help="sum (read counts) or mean (signal); default: what the model's training cell used.")] = None,
    drop_missing: DropMissingOption = False,
    from_store: Annotated[Optional[str], typer.Option("--from-store", help="Predict on a stored cell's genes.",
                                                      autocompletion=complete_cells, rich_help_panel="Store")] = None,
    split: Annotated[str, typer.Option("--split", help="With --from-store: test, valid, train, none or all.",
                                       rich_help_panel="Store")] = "test",
    device: DeviceOption = Device.auto,
    store_path: StoreOption = DEFAULT_STORE,
    models_path: ModelsOption = DEFAULT_MODELS,
    quiet: QuietOption = False,
) -> None:
    """Predict expression (probability above the cell's median) for every gene of the input, in input order."""
    import contextlib
    import sys

    from histcli.cli import console
    from histcli.errors import UsageError
    from histcli.fsutil import atomic_open, check_output_path
    from histcli.prediction import PredictionWriter, Predictor, predict_table
    from histcli.registry import Registry, read_entry
    from histcli.training import resolve_device

    console.setup(quiet)
    arguments = list(arguments or [])
    if model is not None:
        if cell is not None:
            raise UsageError("--model and --cell cannot be combined: --model names the entry folder itself")
        model_args, input_args = [], arguments
    else:
        if not arguments or cell is None:
            raise UsageError("name the model: NAME --cell CELL, or --model DIR")
        model_args, input_args = arguments[:1], arguments[1:]
    if len(input_args) > 1:
        raise UsageError(f"expected one INPUT, got {len(input_args)}: {' '.join(input_args)}")
    given = [name for name, used in (("an INPUT file", input_args), ("--track", track), ("--from-store", from_store))
             if used]
    if len(given) != 1:
        raise UsageError("give exactly one input: an INPUT TSV, --track ... --genes FILE, or --from-store CELL"
                         + (f" (got {' and '.join(given)})" if given else ""))
    if track and genes is None:
        raise UsageError("--track needs --genes FILE (BED, GTF or GFF3)")
    if output is not None:
        check_output_path(output, "the predictions")
    entry = read_entry(model) if model is not None else Registry(models_path).get(model_args[0], cell)
    predictor = Predictor(entry, resolve_device(device.value))

    target = atomic_open(output, "w", encoding="utf-8") if output else contextlib.nullcontext(sys.stdout)
    with target as stream, console.progress() as bar:
        task = bar.add_task("predicting genes", total=None)
        writer = PredictionWriter(stream, output_format.value, threshold,
                                  on_written=lambda count: bar.update(task, completed=count))
        if input_args:
            count = predict_table(predictor, input_args[0], writer)
        else:
            genes_cell = _cell_for(entry, track, genes, bin_size, window, aggregate, drop_missing,
                                   from_store, split, store_path)
            writer.add(genes_cell.gene_ids, predictor.cell_probabilities(genes_cell))
            count = genes_cell.n_genes
        writer.close()
    console.note(f"predicted {count} genes with {entry.name} ({entry.cell})" + (f" into {output}" if output else ""))


def _cell_for(entry, track, genes, bin_size, window, aggregate, drop_missing, from_store, split, store_path):
    """The genes to predict on, as a cell: from tracks (no expression needed) or from the store."""
    from histcli.cli import console

    if from_store:
        from histcli.splits import splits_to_load
        from histcli.store import Store

        return Store(store_path).load(from_store, splits=splits_to_load(split))
    from histcli.sources.tracks import read_tracks_cell

    trained_with = entry.input.get("aggregate")
    if aggregate is None:
        aggregate = trained_with or "sum"
    else:
        aggregate = aggregate.value
        if trained_with and aggregate != trained_with:
            console.note(f"--aggregate {aggregate}, but the model was trained on tracks binned with {trained_with}")
    notes: list[str] = []
    cell = read_tracks_cell(
        "predict",
        tracks=parse_tracks(track),
        genes=genes,
        bin_size=bin_size or entry.input["bin_size"],
        window=window or entry.input["window"],
        aggregate=aggregate,
        drop_missing=drop_missing,
        notes=notes,
    )
    for message in notes:
        console.note(message)
    return cell
