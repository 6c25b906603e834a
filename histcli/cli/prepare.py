"""`histcli prepare deepchrome|deepdiff|tracks|simulate`: bring data into the store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from histcli.cli.options import (
    DEFAULT_STORE,
    Aggregate,
    AggregateOption,
    CellsOption,
    DropMissingOption,
    ExpressionColumnOption,
    ExpressionOption,
    FormatOption,
    GenesOption,
    HistcliTyper,
    MarksOption,
    OutputFormat,
    OverwriteOption,
    QuietOption,
    StoreOption,
    TrackOption,
    parse_tracks,
)

app = HistcliTyper(help="Bring data into the dataset store (one sub-command per input layout).",
                  no_args_is_help=True)


def _marks(value: str | None, default: tuple[str, ...]) -> tuple[str, ...]:
    from histcli.marks import parse_marks

    if value is None:
        return default
    marks = parse_marks([name for name in value.split(",") if name.strip()])
    if len(marks) != len(default):
        from histcli.errors import UsageError

        raise UsageError(f"--marks: this layout has {len(default)} mark columns, {len(marks)} names given")
    return marks


def _write(store_path: Path, cells, names: list[str], overwrite: bool, output_format: OutputFormat,
           description: str) -> None:
    """Stage cells one by one behind a progress bar, commit them together, print their summaries."""
    from histcli.cli import console
    from histcli.cli.store_cmd import print_summaries
    from histcli.store import Store

    store = Store(store_path)
    with store.reserve(names), console.progress() as bar:
        # Again, now that no other run can be preparing these cells: one may have just stored them.
        store.check_writable(names, overwrite)
        task = bar.add_task(description, total=len(names))
        written = store.write(cells, overwrite=overwrite, on_staged=lambda name: bar.advance(task))
    print_summaries(store.summaries(written), output_format, title=f"prepared in {store_path}")


@app.command("deepchrome", short_help="DeepChrome CSVs: <cell>/classification/*.csv.")
def deepchrome(
    path: Annotated[Path, typer.Argument(help="Folder of <cell>/classification/{train,valid,test}.csv, "
                                              "or one folder holding train.csv, valid.csv and test.csv.")],
    cells: CellsOption = None,
    marks: MarksOption = None,
    bin_size: Annotated[int, typer.Option("--bin-size", min=1, help="Bin size in bp (DeepChrome: 100).")] = 100,
    expression: ExpressionOption = None,
    expression_column: ExpressionColumnOption = None,
    drop_missing: DropMissingOption = False,
    overwrite: OverwriteOption = False,
    store_path: StoreOption = DEFAULT_STORE,
    output_format: FormatOption = OutputFormat.auto,
    quiet: QuietOption = False,
) -> None:
    """The DeepChrome CSV layout: gene_id,bin,H3K27me3,H3K36me3,H3K4me1,H3K4me3,H3K9me3,label.

    With --expression, each cell's labels must agree with the expression's median rule."""
    from histcli.cli import console
    from histcli.marks import DEEPCHROME_ORDER
    from histcli.sources import deepchrome as layout
    from histcli.store import Store

    console.setup(quiet)
    mark_names = _marks(marks, DEEPCHROME_ORDER)
    found = layout.find_cells(path, cells)
    names = [name for name, _ in found]
    expression_file = _expression_file(expression, expression_column, names)
    Store(store_path).check_writable(names, overwrite)
    notes: list[str] = []
    parsed = (_with_expression(layout.read_cell(name, files, marks=mark_names, bin_size=bin_size), expression_file,
                               expression_column, f"the DeepChrome files of {name}", drop_missing, notes)
              for name, files in found)
    _write(store_path, parsed, names, overwrite, output_format, "preparing DeepChrome cells")
    for message in notes:
        console.note(message)


def _expression_file(expression: Path | None, column: str | None, cells: list[str]):
    """The --expression table (an ExpressionFile, None without one), which every cell takes its column from,
    read once (so it may be a pipe); before reading any data, every cell is checked to have its own column
    (UsageError if not)."""
    from histcli.errors import UsageError

    if expression is None:
        if column is not None:
            raise UsageError("--expression-column needs --expression")
        return None
    from histcli.sources.expression import ExpressionFile

    expression_file = ExpressionFile(expression)
    expression_file.columns(column=column, cells=cells)
    return expression_file


def _with_expression(cell, expression_file, column: str | None, genes_source: str, drop_missing: bool,
                     notes: list[str]):
    """The cell with its column of the --expression ExpressionFile attached (unchanged without one)."""
    if expression_file is None:
        return cell
    from histcli.sources.expression import attach_expression

    table = expression_file.table(column=column, cell=cell.name)
    return attach_expression(cell, table, genes_source=genes_source, drop_missing=drop_missing, notes=notes)


@app.command("deepdiff", short_help="AttentiveChrome/DeepDiff CSVs and expression.")
def deepdiff(
    path: Annotated[Path, typer.Argument(help="Folder holding <cell>.{train,valid,test}.csv and <cell>.expr.csv.")],
    cell: Annotated[str, typer.Option("--cell", "-c", help="File prefix of the cell (e.g. Cell1).")],
    name: Annotated[Optional[str], typer.Option("--name", help="Name in the store (default: the --cell prefix).")] = None,
    marks: MarksOption = None,
    bin_size: Annotated[int, typer.Option("--bin-size", min=1, help="Bin size in bp (DeepDiff: 100).")] = 100,
    expression: ExpressionOption = None,
    expression_column: ExpressionColumnOption = None,
    drop_missing: DropMissingOption = False,
    overwrite: OverwriteOption = False,
    store_path: StoreOption = DEFAULT_STORE,
    output_format: FormatOption = OutputFormat.auto,
    quiet: QuietOption = False,
) -> None:
    """The AttentiveChrome/DeepDiff layout: <ENSG>_<SYMBOL>_<bin>,H3K4me1,H3K4me3,H3K9me3,H3K27me3,H3K36me3.

    Expression comes from <cell>.expr.csv, or from --expression instead."""
    from histcli.cli import console
    from histcli.marks import DEEPDIFF_ORDER
    from histcli.sources import deepdiff as layout
    from histcli.sources.common import shown_name
    from histcli.store import Store, check_cell_name

    console.setup(quiet)
    stored_name = check_cell_name(name or cell)
    mark_names = _marks(marks, DEEPDIFF_ORDER)
    splits, own_expression = layout.find_files(path, cell, need_expression=expression is None)
    expression_file = _expression_file(expression, expression_column, [stored_name])
    Store(store_path).check_writable([stored_name], overwrite)
    notes: list[str] = []
    if expression is not None and own_expression is not None:
        notes.append(f"--expression {shown_name(expression)} replaces {own_expression.name}")
    # A generator, so that parsing runs inside the progress bar.
    parsed = (layout.read_cell(stored_name, splits, own_expression if expression_file is None else expression_file,
                               marks=mark_names, bin_size=bin_size, drop_missing=drop_missing, notes=notes,
                               expression_column=expression_column) for _ in range(1))
    _write(store_path, parsed, [stored_name], overwrite, output_format, "preparing DeepDiff cell")
    for message in notes:
        console.note(message)


@app.command("tracks", short_help="bedGraph or bigWig tracks binned around TSSs.")
def tracks(
    cell: Annotated[str, typer.Option("--cell", "-c", help="Name of the new cell in the store.")],
    track: TrackOption,
    genes: GenesOption,
    bin_size: Annotated[int, typer.Option("--bin-size", min=1, help="Bin size in bp.", rich_help_panel="Tracks")],
    window: Annotated[int, typer.Option("--window", min=1, help="Bp on each side of the TSS.", rich_help_panel="Tracks")],
    expression: ExpressionOption = None,
    expression_column: ExpressionColumnOption = None,
    split_file: Annotated[Optional[Path], typer.Option("--split-file", help="gene_id<TAB>train|valid|test table.",
                                                       rich_help_panel="Split")] = None,
    # The earlier name of --split-file; elsewhere --split names a split, not a file.
    split_file_alias: Annotated[Optional[Path], typer.Option("--split", hidden=True)] = None,
    split_by_chromosome: Annotated[Optional[list[str]], typer.Option(
        "--split-by-chromosome", help="valid=CHROM,... or test=CHROM,... (repeat); other chromosomes are train.",
        rich_help_panel="Split")] = None,
    split_fractions: Annotated[Optional[str], typer.Option(
        "--split-fractions", help="TRAIN,VALID,TEST fractions of a random split, e.g. 0.6,0.2,0.2.",
        rich_help_panel="Split")] = None,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of --split-fractions.", rich_help_panel="Split")] = 0,
    aggregate: AggregateOption = Aggregate.sum,
    drop_missing: DropMissingOption = False,
    overwrite: OverwriteOption = False,
    store_path: StoreOption = DEFAULT_STORE,
    output_format: FormatOption = OutputFormat.auto,
    quiet: QuietOption = False,
) -> None:
    """Genome-wide signal (bedGraph or bigWig per mark) binned around each gene's TSS."""
    from histcli.cli import console
    from histcli.errors import UsageError
    from histcli.sources.tracks import read_tracks_cell
    from histcli.splits import check_split_options, parse_chromosome_split, parse_split_fractions
    from histcli.store import Store, check_cell_name

    console.setup(quiet)
    check_cell_name(cell)
    if split_file is not None and split_file_alias is not None:
        raise UsageError("--split is the earlier name of --split-file: give one of them")
    split_file = split_file or split_file_alias
    by_chromosome = parse_chromosome_split(split_by_chromosome) if split_by_chromosome else None
    fractions = parse_split_fractions(split_fractions) if split_fractions else None
    check_split_options(split_file, by_chromosome, fractions)
    # Before any track is read; read_tracks_cell reads the other inputs, pipes (bash's <(...)) included, once.
    expression_file = _expression_file(expression, expression_column, [cell])
    Store(store_path).check_writable([cell], overwrite)
    notes: list[str] = []
    # A generator, so that reading and binning run inside the progress bar.
    parsed = (read_tracks_cell(
        cell,
        tracks=parse_tracks(track),
        genes=genes,
        expression=expression_file,
        expression_column=expression_column,
        split=split_file,
        split_by_chromosome=by_chromosome,
        split_fractions=fractions,
        seed=seed,
        bin_size=bin_size,
        window=window,
        aggregate=aggregate.value,
        drop_missing=drop_missing,
        notes=notes,
    ) for _ in range(1))
    _write(store_path, parsed, [cell], overwrite, output_format, "preparing tracks")
    for message in notes:
        console.note(message)


@app.command("simulate", short_help="Synthetic cells with learnable signal.")
def simulate(
    cells: Annotated[int, typer.Option("--cells", min=1, help="Number of cells.")] = 3,
    genes: Annotated[int, typer.Option("--genes", min=3, help="Genes per cell (split in thirds).")] = 2000,
    bins: Annotated[int, typer.Option("--bins", min=1, help="Bins per gene.")] = 100,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Same seed, same cells.")] = 0,
    prefix: Annotated[str, typer.Option("--prefix", help="Cell names are PREFIX01, PREFIX02, ...")] = "sim",
    bin_size: Annotated[int, typer.Option("--bin-size", min=1, help="Bin size in bp.")] = 100,
    overwrite: OverwriteOption = False,
    store_path: StoreOption = DEFAULT_STORE,
    output_format: FormatOption = OutputFormat.auto,
    quiet: QuietOption = False,
) -> None:
    """Synthetic cells with realistic, learnable signal (for demos, tests and benchmarks)."""
    from histcli.cli import console
    from histcli.sources.simulate import cell_names, simulate_cells
    from histcli.store import Store

    console.setup(quiet)
    names = cell_names(cells, prefix)
    Store(store_path).check_writable(names, overwrite)
    generated = simulate_cells(cells, genes, bins, seed, bin_size=bin_size, prefix=prefix)
    _write(store_path, generated, names, overwrite, output_format, "simulating cells")
