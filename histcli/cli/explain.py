"""`histcli explain`: which marks, at which positions, drive a model's predictions."""

from __future__ import annotations

import logging
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from histcli.cli.options import (
    DEFAULT_MODELS,
    DEFAULT_STORE,
    Device,
    DeviceOption,
    FormatOption,
    ModelsOption,
    OutputFormat,
    QuietOption,
    StoreOption,
    complete_cells,
    complete_model_names,
    dash_means_stdout,
    fixed_name,
)


class Method(str, Enum):
    integrated_gradients = "integrated-gradients"
    deeplift = "deeplift"
    gradient_shap = "gradient-shap"
    saliency = "saliency"
    occlusion = "occlusion"
    attention = "attention"


class Baseline(str, Enum):
    zeros = "zeros"
    cell_mean = "cell-mean"


def mark_columns():
    from histcli.output import Column

    return [Column("group", justify="left"), Column("mark", justify="left"), Column("n_genes"),
            Column("total_attribution", "total", digits=4), Column("total_abs_attribution", "total |attr|", digits=4),
            Column("rank")]


def bin_columns(groups: list[str]):
    """The terminal's per-bin table: signed and absolute means of all genes, signed means by label
    (80 columns)."""
    from histcli.output import Column

    columns = [Column("mark", justify="left"), Column("bin"), Column("position", "bp"),
               Column("mean_all", "all", digits=4), Column("abs_all", "|all|", digits=4)]
    return columns + [Column(f"mean_{group}", group, digits=4) for group in groups if group != "all"]


def explain(
    name: Annotated[str, typer.Argument(help="Model name in the registry.", autocompletion=complete_model_names)],
    cell: Annotated[str, typer.Option("--cell", "-c", help="Cell the model was trained on.",
                                      autocompletion=complete_cells)],
    on_cell: Annotated[Optional[str], typer.Option("--on-cell", help="Explain on this cell's genes instead "
                                                   "(transfer).", autocompletion=complete_cells)] = None,
    split: Annotated[Optional[str], typer.Option("--split", callback=fixed_name,
                                                 help="Genes: test, valid, train, none or all (default: test; "
                                                 "all with --genes).")] = None,
    genes: Annotated[Optional[str], typer.Option("--genes", help="File of gene ids, one a line ('-' for stdin); "
                                                 "explained in this order.")] = None,
    method: Annotated[Method, typer.Option("--method", "-m", case_sensitive=False,
                                           help="Attribution method (attention: attentivechrome only).")
                      ] = Method.integrated_gradients,
    baseline: Annotated[Baseline, typer.Option("--baseline", case_sensitive=False,
                                               help="Reference input: zeros (no reads) or the cell's mean input.")
                        ] = Baseline.zeros,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Integration points (integrated-gradients) or "
                                       "samples (gradient-shap).")] = 50,
    summary: Annotated[bool, typer.Option("--summary", help="Per mark x bin means and per-mark totals over the "
                                          "genes (by label when known) instead of one row per gene, bin and mark.")
                       ] = False,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Write a mark x position heatmap (PNG/SVG/PDF).")
                    ] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", callback=dash_means_stdout,
                                                   help="Output file (written atomically; default or '-': "
                                                   "stdout).")] = None,
    output_format: FormatOption = OutputFormat.auto,
    device: DeviceOption = Device.auto,
    threads: Annotated[Optional[int], typer.Option("--threads", min=1, help="CPU threads for torch (default: "
                                                   "torch's choice).")] = None,
    store_path: StoreOption = DEFAULT_STORE,
    models_path: ModelsOption = DEFAULT_MODELS,
    quiet: QuietOption = False,
) -> None:
    """Attributions of the model's logit to each mark and bin of each gene (Captum)."""
    import contextlib
    import sys
    import time

    from histcli.cli import console
    from histcli.errors import UsageError
    from histcli.explanation import check_method, read_gene_list, require_captum
    from histcli.fsutil import atomic_open, check_output_path, check_outputs_spare
    from histcli.output import counted, resolve_format
    from histcli.plots import plotting_backend
    from histcli.registry import Registry
    from histcli.splits import check_split_choice
    from histcli.store import Store

    console.setup(quiet)
    if split is not None:
        check_split_choice(split)
    if output is not None:
        check_output_path(output, "the attributions")
    # auto: the summary is a table on a terminal; rows per gene, bin and mark are always TSV.
    if output_format == OutputFormat.auto:
        fmt = resolve_format("auto") if summary and output is None else "tsv"
    else:
        fmt = output_format.value
    if fmt == "table" and output is not None:
        raise UsageError("--format table is for the terminal; write --output files as tsv or json")
    if fmt == "table" and not summary:
        raise UsageError("--format table needs --summary (one row per gene, bin and mark is for machines: tsv or json)")
    pyplot = plotting_backend(plot) if plot is not None else None
    entry = Registry(models_path).get(name, cell)
    check_outputs_spare([("-o", output, "the attributions"), ("--plot", plot, "the plot")], [genes, store_path],
                        {"the model's folder": entry.path, "the store's cell folder": Store(store_path).cells_dir})
    check_method(entry, method.value)
    if method != Method.attention:
        require_captum()
    gene_list = read_gene_list(genes) if genes is not None else None
    chosen_split = split or ("all" if gene_list is not None else "test")

    from histcli.errors import ChangedDataError
    from histcli.evaluation import check_trained_data
    from histcli.explanation import (
        COMPLETENESS_TOLERANCE,
        MAX_STEP_DOUBLINGS,
        Explainer,
        LongWriter,
        Summary,
        explain_genes,
        plot_summary,
        prepare_cell,
        summary_groups,
    )
    from histcli.training import resolve_device

    target_cell = on_cell or cell
    store = Store(store_path)
    data = store.load(target_cell)
    try:
        check_trained_data(entry, store, target_cell, data.fingerprint, allow_changed=False)
    except ChangedDataError as exc:  # attributions of the data as they are now still explain the model
        logging.getLogger("histcli").warning("%s; explained as it is stored now", exc)
    chosen = prepare_cell(entry, data, baseline.value, split=None if chosen_split == "all" else chosen_split,
                          genes=gene_list, genes_source="<stdin>" if genes == "-" else f"--genes {genes}")
    resolved_device = resolve_device(device.value)
    if threads:
        import torch

        torch.set_num_threads(threads)
    explainer = Explainer(entry, method.value, chosen.baseline, steps=steps, device=resolved_device)
    totals = Summary(chosen.marks, chosen.positions, summary_groups(chosen.labels)) if (summary or plot) else None
    started = time.perf_counter()
    stream_target = atomic_open(output, "w", encoding="utf-8") if output else contextlib.nullcontext(sys.stdout)
    with contextlib.ExitStack() as stack:
        writer = None
        if not summary:
            writer = LongWriter(stack.enter_context(stream_target), fmt, chosen.marks, chosen.positions,
                                attention=method == Method.attention)
        bar = stack.enter_context(console.progress())
        task = bar.add_task(f"explaining ({method.value})", total=len(chosen.gene_ids))
        explain_genes(explainer, chosen, writer=writer, summary=totals,
                      on_batch=lambda done: bar.update(task, completed=done))
        if writer is not None:
            writer.close()
    seconds = time.perf_counter() - started
    if explainer.incomplete:
        console.note(f"{explainer.incomplete} gene orientation(s) still miss completeness by more than "
                     f"{COMPLETENESS_TOLERANCE:.0%} at {steps * 2 ** MAX_STEP_DOUBLINGS} integration points")
    n = len(chosen.gene_ids)
    console.note(f"explained {counted(n, 'gene')} of {target_cell} with {entry.name} ({entry.cell}), {method.value}, "
                 f"{resolved_device}: {seconds:.2f} s" + (f", {1000 * seconds / n:.2f} s per 1,000 genes" if n else ""))
    if summary:
        _print_summary(totals, fmt, output, title=f"{entry.name} ({entry.cell}) on {target_cell}, {method.value}")
    if pyplot is not None:
        where = f"{entry.name} ({entry.cell})" + (f" on {target_cell}" if target_cell != entry.cell else "")
        plot_summary(pyplot, totals, plot, f"{where}: {method.value}, {chosen_split} genes")
        console.note(f"wrote {plot}")


def _print_summary(totals, fmt: str, output: Path | None, title: str) -> None:
    """Rich tables on a terminal; TSV is one table (per-mark rows have bin 'all'); JSON has both."""
    import contextlib
    import json
    import sys

    from histcli.fsutil import atomic_open
    from histcli.output import Column, clean, delimited, write, write_rich_table

    mark_rows, bin_rows = totals.mark_rows(), totals.bin_rows()
    if fmt == "table":
        write_rich_table(mark_rows, mark_columns(), title=f"per mark: {title}")
        wide: dict[tuple, dict] = {}
        for row in bin_rows:
            line = wide.setdefault((row["mark"], row["bin"]), {"mark": row["mark"], "bin": row["bin"],
                                                              "position": row["position"]})
            line[f"mean_{row['group']}"] = row["mean_attribution"]
            line[f"abs_{row['group']}"] = row["mean_abs_attribution"]
        write_rich_table(list(wide.values()), bin_columns(totals.groups), title="mean attribution per mark and bin")
        return
    if fmt == "json":
        text = json.dumps(clean({"marks": mark_rows, "bins": bin_rows}), indent=2) + "\n"
    else:
        rows = [{**row, "bin": "all", "position": None, "mean_attribution": row["total_attribution"],
                 "mean_abs_attribution": row["total_abs_attribution"]} for row in mark_rows]
        rows += [{**row, "rank": None} for row in bin_rows]
        columns = [Column(key) for key in ("group", "mark", "bin", "position", "n_genes", "mean_attribution",
                                           "mean_abs_attribution", "rank")]
        text = delimited(rows, columns, "\t")
    target = atomic_open(output, "w", encoding="utf-8") if output else contextlib.nullcontext(sys.stdout)
    with target as stream:
        write(text, stream)
