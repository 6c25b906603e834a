"""`histcli predict`: predictions for new genes (probabilities, or expression levels) from TSV, tracks or the store."""

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
    dash_means_stdout,
    fixed_name,
    parse_tracks,
)

#: Earlier spellings put the input TSV after NAME (`predict NAME INPUT --cell C`, `predict --model DIR
#: INPUT`); it still arrives there, as an extra argument that the help does not show.
CONTEXT_SETTINGS = {"allow_extra_args": True}
# How messages name genes binned from --track (their cell is named 'predict', nothing the user named).
TRACK_INPUT = "the track input"


def predict(
    ctx: typer.Context,
    name: Annotated[Optional[str], typer.Argument(
        help="Registry model name, with --cell (or give --model DIR instead).",
        autocompletion=complete_model_names, metavar="NAME", show_default=False)] = None,
    cell: Annotated[Optional[str], typer.Option("--cell", "-c", help="Cell the model was trained on.",
                                                autocompletion=complete_cells, rich_help_panel="Model")] = None,
    model: Annotated[Optional[Path], typer.Option("--model", help="A model entry folder (e.g. copied from the registry), "
                                                  "instead of NAME --cell.", rich_help_panel="Model")] = None,
    input_file: Annotated[Optional[str], typer.Option(
        "--input", "-i", help="Genes as a TSV of marks x bins (long or wide, gzip allowed, '-' for stdin).",
        rich_help_panel="Input: one of")] = None,
    track: Annotated[Optional[list[str]], typer.Option("--track", "-t", help="MARK=FILE bedGraph/bigWig (repeat per "
                                                       "mark), binned around the TSS of the --genes.",
                                                       rich_help_panel="Input: one of")] = None,
    from_store: Annotated[Optional[str], typer.Option("--from-store", help="A stored cell's genes.",
                                                      autocompletion=complete_cells,
                                                      rich_help_panel="Input: one of")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", callback=dash_means_stdout,
                                                   help="Output TSV (written atomically; default or '-': stdout).")
                      ] = None,
    threshold: Annotated[Optional[float], typer.Option(
        "--threshold", min=0.0, max=1.0, help="Classifiers: prediction = probability >= threshold [default: 0.5]."
    )] = None,
    output_format: Annotated[PredictionFormat, typer.Option("--format", "-f", case_sensitive=False,
                                                            help="Output format.")] = PredictionFormat.tsv,
    genes: Annotated[Optional[Path], typer.Option("--genes", help="BED, GTF or GFF3 genes for --track.",
                                                  rich_help_panel="With --track")] = None,
    bin_size: Annotated[Optional[int], typer.Option("--bin-size", min=1, help="Default: the model's.",
                                                    rich_help_panel="With --track")] = None,
    window: Annotated[Optional[int], typer.Option("--window", min=1, help="Bp each side of the TSS; default: the model's.",
                                                  rich_help_panel="With --track")] = None,
    aggregate: Annotated[Optional[Aggregate], typer.Option(
        "--aggregate", case_sensitive=False, rich_help_panel="With --track",
        help="sum (read counts) or mean (signal); default: what the model's training cell used.")] = None,
    drop_missing: DropMissingOption = False,
    split: Annotated[Optional[str], typer.Option("--split", callback=fixed_name,
                                                 help="test, valid, train, none or all [default: test].",
                                                 rich_help_panel="With --from-store")] = None,
    device: DeviceOption = Device.auto,
    store_path: StoreOption = DEFAULT_STORE,
    models_path: ModelsOption = DEFAULT_MODELS,
    quiet: QuietOption = False,
) -> None:
    """Predict expression for every gene of the input, in input order: the probability of expression above the
    cell's median (classifiers), or the level, log_expression and expression in RPKM (regression models).

    The model: NAME --cell CELL, or --model DIR. The input: --input FILE, --track MARK=FILE ... --genes FILE,
    or --from-store CELL.
    """
    import contextlib
    import sys

    from histcli.cli import console
    from histcli.cli.options import check_threshold
    from histcli.fsutil import atomic_open, check_output_path, check_outputs_spare
    from histcli.metrics import DEFAULT_THRESHOLD
    from histcli.output import counted
    from histcli.prediction import PredictionWriter, Predictor, predict_table
    from histcli.registry import Registry, read_entry
    from histcli.store import Store
    from histcli.training import resolve_device

    console.setup(quiet)
    name, input_file = _old_spellings(name, input_file, list(ctx.args), model, track or from_store)
    _check_choices(name, cell, model, input_file, track, from_store, genes, bin_size, window, aggregate,
                   drop_missing, split)
    if output is not None:
        check_output_path(output, "the predictions")
    entry = read_entry(model) if model is not None else Registry(models_path).get(name, cell)
    check_outputs_spare([("-o", output, "the predictions")],
                        [input_file, genes, store_path, *(value.partition("=")[2] for value in track or [])],
                        {"the model's folder": entry.path, "the store's cell folder": Store(store_path).cells_dir})
    check_threshold(threshold, [entry])
    predictor = Predictor(entry, resolve_device(device.value))

    target = atomic_open(output, "w", encoding="utf-8") if output else contextlib.nullcontext(sys.stdout)
    with target as stream, console.progress() as bar:
        task = bar.add_task("predicting genes", total=None)
        writer = PredictionWriter(stream, output_format.value, DEFAULT_THRESHOLD if threshold is None else threshold,
                                  task=entry.task,
                                  on_written=lambda count: bar.update(task, completed=count))
        if input_file is not None:
            count = predict_table(predictor, input_file, writer)
        else:
            genes_cell = _cell_for(entry, track, genes, bin_size, window, aggregate, drop_missing,
                                   from_store, split or "test", store_path)
            bar.update(task, total=genes_cell.n_genes)  # known here, unlike for a streamed --input
            described = TRACK_INPUT if track else None
            writer.add(genes_cell.gene_ids, predictor.cell_scores(genes_cell, described=described))
            count = genes_cell.n_genes
        writer.close()
    console.note(f"predicted {counted(count, 'gene')} with {entry.name} ({entry.cell})" + (f" into {output}" if output else ""))


def _old_spellings(name, input_file, extra: list[str], model, other_input):
    """(NAME, input) from the earlier spellings: the input after NAME, or alone with --model."""
    from histcli.errors import UsageError

    if model is not None and name is not None and not extra and input_file is None and not other_input:
        name, extra = None, [name]  # `predict --model DIR INPUT`
    if len(extra) > 1:
        raise UsageError(f"expected one INPUT, got {len(extra)}: {' '.join(extra)}")
    if extra:
        if input_file is not None:
            raise UsageError(f"--input {input_file} and {extra[0]}: give the input once")
        input_file = extra[0]
    return name, input_file


def _check_choices(name, cell, model, input_file, track, from_store, genes, bin_size, window, aggregate,
                   drop_missing, split) -> None:
    """One model (NAME --cell or --model), one input, and only the options that go with it."""
    from histcli.errors import UsageError

    if model is not None and (cell is not None or name is not None):
        raise UsageError("--model names the entry folder itself: give --model DIR or NAME --cell CELL, not both")
    if model is None and (name is None or cell is None):
        raise UsageError("name the model: NAME --cell CELL, or --model DIR")
    given = [option for option, used in (("--input", input_file), ("--track", track), ("--from-store", from_store))
             if used]
    if len(given) != 1:
        raise UsageError("give exactly one input: --input FILE, --track MARK=FILE ... --genes FILE, or --from-store CELL"
                         + (f" (got {' and '.join(given)})" if given else ""))
    if track and genes is None:
        raise UsageError("--track needs --genes FILE (BED, GTF or GFF3)")
    with_track = [option for option, value in (("--genes", genes), ("--bin-size", bin_size), ("--window", window),
                                              ("--aggregate", aggregate), ("--drop-missing", drop_missing)) if value]
    if with_track and not track:
        raise UsageError(f"{with_track[0]} goes with --track")
    if split is not None and not from_store:
        raise UsageError("--split goes with --from-store (the genes of a stored cell's split)")


def _cell_for(entry, track, genes, bin_size, window, aggregate, drop_missing, from_store, split, store_path):
    """The genes to predict on, as a cell: from tracks (no expression needed) or from the store."""
    from histcli.cli import console

    if from_store:
        from histcli.splits import splits_to_load
        from histcli.store import Store

        return Store(store_path).load(from_store, splits=splits_to_load(split))
    from histcli.evaluation import check_layout
    from histcli.sources.tracks import read_tracks_cell

    trained_with = entry.input.aggregate
    if aggregate is None:
        aggregate = trained_with or "sum"
    else:
        aggregate = aggregate.value
        if trained_with and aggregate != trained_with:
            console.note(f"--aggregate {aggregate}, but the model was trained on tracks binned with {trained_with}")
    tracks = parse_tracks(track)
    bin_size, window = bin_size or entry.input.bin_size, window or entry.input.window
    if 2 * window % bin_size == 0:  # else read_tracks_cell says why; a mismatch is said before reading a track
        check_layout(entry, list(tracks), 2 * window // bin_size, bin_size, window, TRACK_INPUT)
    notes: list[str] = []
    cell = read_tracks_cell(
        "predict",
        tracks=tracks,
        genes=genes,
        bin_size=bin_size,
        window=window,
        aggregate=aggregate,
        drop_missing=drop_missing,
        notes=notes,
    )
    for message in notes:
        console.note(message)
    return cell
