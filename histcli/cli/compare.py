"""`histcli compare`: per-cell paired tests (DeLong for AUC, Steiger for correlations) and across-cell tests."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from histcli.cli.options import (
    DEFAULT_MODELS,
    DEFAULT_STORE,
    AllowChangedOption,
    CellsOption,
    Device,
    DeviceOption,
    MetricOption,
    ModelsOption,
    QuietOption,
    SplitOption,
    StoreOption,
    TableFormat,
    TableFormatOption,
    complete_cells,
    complete_model_names,
)


def _print_rich(result, split: str) -> None:
    """One table per pair (a row per cell), then each pair's across-cell summary: fits 80 columns."""
    from rich.panel import Panel
    from rich.text import Text

    from histcli.comparison import CELL_TESTS, METRIC_LABELS, TEST_LABELS
    from histcli.output import Column, console, stdout_is_terminal, write_rich, write_rich_table
    from histcli.splits import split_genes

    metric = result.metric
    label = METRIC_LABELS[metric]
    test = CELL_TESTS[metric]
    for pair in result.pairs:
        columns = [Column("cell", justify="left"), Column("n"),
                   Column(f"{metric}_a", "A", digits=4), Column(f"{metric}_b", "B", digits=4),
                   Column(f"delta_{metric}", "A - B", digits=4), Column("ci", "95% CI"),
                   Column(f"{test}_p", f"{TEST_LABELS[test]} p", digits=3), Column("q", "q (BH)", digits=3)]
        rows = [{**row, "ci": None if row["ci_low"] is None else f"[{row['ci_low']:+.4f}, {row['ci_high']:+.4f}]"}
                for row in pair.cells]
        # Model names head the table, not its columns: long names would push it past 80 columns.
        write_rich_table(rows, columns, title=f"{label}, A = {pair.model_a} vs B = {pair.model_b}, {split_genes(split)}")
    statements = []
    for pair in result.pairs:
        s = pair.summary
        statements.append(pair.verdict())
        if s.n_cells:
            ci = ("n/a" if s.median_delta_ci_low is None
                  else f"[{s.median_delta_ci_low:+.4f}, {s.median_delta_ci_high:+.4f}]")
            method = f"; Wilcoxon {s.wilcoxon_method}" if s.wilcoxon_method else ""
            statements.append(
                f"  higher {label}: {pair.model_a} in {s.wins}, {pair.model_b} in {s.losses}, tied in "
                f"{s.ties}; mean {label} {s.mean_a:.4f} vs {s.mean_b:.4f}; median Δ 95% bootstrap CI "
                f"{ci}; paired t p = {_p(s.ttest_p)}; rank-biserial r = {_num(s.rank_biserial)}{method}"
            )
    statements += [f"note: {note}" for note in result.notes]
    if not stdout_is_terminal():  # one line per statement, for grep
        write_rich(Text("\n".join(statements)))
        return
    inside = console().width - 4  # the panel's border and padding
    lines = [line for statement in statements for line in fold_phrases(statement, inside)]
    write_rich(Panel(Text("\n".join(lines)), title="summary", expand=False))


def fold_phrases(statement: str, width: int) -> list[str]:
    """Lines of at most ``width`` that break only between phrases (after "; ", or after ", " before a word,
    so "p = 0.38" and "[-0.02, +0.01]" stay whole); continuation lines are indented two spaces more. A phrase
    longer than a line (long model names) breaks between its words, indented too, never before a number or "="
    (so "= -0.0481" and "(ties 0)" stay whole)."""
    import re
    import textwrap

    indent = " " * (len(statement) - len(statement.lstrip()) + 2)
    lines = [""]
    for phrase in re.split(r"(?<=;) |(?<=,) (?=[^\W\d])", statement):
        joined = f"{lines[-1]} {phrase}" if lines[-1] else phrase
        if lines[-1].strip() and len(joined) > width:
            lines.append(indent + phrase)
        else:
            lines[-1] = joined
    glue = "\N{NO-BREAK SPACE}"  # not a place to break for textwrap
    folded = []
    for line in lines:
        if len(line) <= width:
            folded.append(line)
            continue
        parts = textwrap.wrap(re.sub(r" (?=[-+=]?\d|=)", glue, line), width, subsequent_indent=indent,
                              break_long_words=False, break_on_hyphens=False)
        folded += [part.replace(glue, " ") for part in parts]
    return folded


def _p(value) -> str:
    return "n/a" if value is None else f"{value:.2g}"


def _num(value) -> str:
    return "n/a" if value is None else f"{value:+.3f}"


def compare(
    names: Annotated[list[str], typer.Argument(help="Two or more model names.", autocompletion=complete_model_names)],
    cells: CellsOption = None,
    metric: MetricOption = None,
    split: SplitOption = "test",
    summary: Annotated[bool, typer.Option("--summary", help="TSV/CSV: print the across-cell summary (one row per "
                                                            "pair) instead of the per-cell rows.")] = False,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Write a PNG/SVG/PDF, a row per pair of models: "
                                                               "their metric per cell, and for one cell their ROC "
                                                               "curves (AUC) or predicted against measured levels "
                                                               "(correlations).")] = None,
    plot_cell: Annotated[Optional[str], typer.Option("--plot-cell", "--roc-cell", help="The cell of --plot's right-hand "
                                                     "panels (default: each pair's largest difference).",
                                                     autocompletion=complete_cells)] = None,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of the bootstrap CI.")] = 0,
    device: DeviceOption = Device.auto,
    allow_changed_data: AllowChangedOption = False,
    store_path: StoreOption = DEFAULT_STORE,
    models_path: ModelsOption = DEFAULT_MODELS,
    output_format: TableFormatOption = TableFormat.auto,
    quiet: QuietOption = False,
) -> None:
    """Per cell: the metric of each model, the difference with its CI and p (DeLong for AUC, Steiger and Zou for
    correlations), BH q. Across cells: Wilcoxon, paired t, wins, median difference."""
    import json

    from histcli.cli import console
    from histcli.comparison import SUMMARY_KEYS, cell_keys, common_cells, json_payload, summary_row
    from histcli.comparison import compare as run_compare
    from histcli.errors import UsageError
    from histcli.fsutil import check_outputs_spare
    from histcli.output import Column, clean, delimited, resolve_format, write
    from histcli.plots import check_plot_cell, plotting_backend, write_plot
    from histcli.registry import Registry, model_folders
    from histcli.store import Store

    console.setup(quiet)
    if plot_cell is not None and plot is None:
        raise UsageError("--plot-cell goes with --plot (the cell of the plot's right-hand panels)")
    pyplot = plotting_backend(plot) if plot is not None else None
    store, registry = Store(store_path), Registry(models_path)
    check_outputs_spare([("--plot", plot, "the plot")], [store_path],
                        {**model_folders(models_path, names), "the store's cell folder": store.cells_dir})
    if plot is not None and plot_cell is not None:
        check_plot_cell(plot_cell, common_cells(registry, list(names), cells)[0])
    with console.progress() as bar:
        task = bar.add_task("comparing", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        result = run_compare(store, registry, list(names), cells, metric=metric, split=split, device=device.value,
                             allow_changed=allow_changed_data, seed=seed, on_progress=advance)
    if plot is not None:  # before any output: a plot that cannot be drawn leaves no table behind
        write_plot(pyplot, result, store, registry, plot, plot_cell, split=split, device=device.value,
                   allow_changed=allow_changed_data)
    fmt = resolve_format(output_format.value)
    if fmt == "json":
        write(json.dumps(clean(json_payload(result)), indent=2) + "\n")
    elif fmt in ("tsv", "csv"):
        sep = "\t" if fmt == "tsv" else ","
        if summary:
            rows = [{"model_a": p.model_a, "model_b": p.model_b, **summary_row(p)} for p in result.pairs]
            columns = [Column(k) for k in ["model_a", "model_b", *SUMMARY_KEYS]]
        else:
            rows = [{"model_a": p.model_a, "model_b": p.model_b, **row} for p in result.pairs for row in p.cells]
            columns = [Column(k) for k in ["model_a", "model_b", *cell_keys(result.metric)]]
        write(delimited(rows, columns, sep))
        for note in result.notes:
            console.note(note)
    else:
        _print_rich(result, split)
    if plot is not None:
        console.note(f"plot written to {plot}")
