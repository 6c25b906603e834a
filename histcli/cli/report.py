"""`histcli report`: one self-contained HTML page of an evaluation and comparison."""

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
    complete_model_names,
    dash_means_stdout,
    fixed_name,
)


def report(
    names: Annotated[list[str], typer.Argument(help="Model names in the registry.", autocompletion=complete_model_names)],
    cells: CellsOption = None,
    split: SplitOption = "test",
    metric: MetricOption = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", callback=dash_means_stdout,
                                                   help="HTML file to write ('-': stdout).")] = Path("report.html"),
    title: Annotated[Optional[str], typer.Option("--title", help="Page title (default: the models compared).")] = None,
    explain: Annotated[bool, typer.Option("--explain", help="Add attribution heatmaps (histcli explain --summary "
                                                            "per model and cell; the explain extra).")] = False,
    explain_method: Annotated[str, typer.Option("--explain-method", callback=fixed_name, help="Attribution method for --explain: "
                                                "saliency, integrated-gradients, deeplift, gradient-shap or "
                                                "occlusion.")] = "saliency",
    explain_genes: Annotated[int, typer.Option("--explain-genes", min=1, help="At most this many genes per cell "
                                               "for --explain, evenly spaced through the split.")] = 500,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of compare's bootstrap CI.")] = 0,
    device: DeviceOption = Device.auto,
    allow_changed_data: AllowChangedOption = False,
    store_path: StoreOption = DEFAULT_STORE,
    models_path: ModelsOption = DEFAULT_MODELS,
    quiet: QuietOption = False,
) -> None:
    """Write one HTML page (offline, self-contained) of evaluate and compare: tables, figures, training.
    Classifiers and regressors alike; the paired comparison uses --metric as compare does."""
    from histcli.cli import console
    from histcli.fsutil import check_outputs_spare
    from histcli.output import write
    from histcli.registry import Registry, model_folders
    from histcli.report import check_explain_method, check_output, gather, render, require_plotly, write_report
    from histcli.store import Store

    console.setup(quiet)
    check_explain_method(explain_method)
    plotly_js = require_plotly()
    if output is not None:
        check_output(output)
    check_outputs_spare([("-o", output, "the report")], [store_path],
                        {**model_folders(models_path, names), "the store's cell folder": Store(store_path).cells_dir})
    if explain:
        from histcli.explanation import require_captum

        require_captum()
    with console.progress() as bar:
        task = bar.add_task("report", total=None)
        inputs = gather(Store(store_path), Registry(models_path), list(names), cells, split=split, title=title,
                        metric=metric, device=device.value, allow_changed=allow_changed_data, seed=seed,
                        explain=explain_method if explain else None, explain_genes=explain_genes,
                        on_progress=lambda step: bar.update(task, description=step))
    page = render(inputs, plotly_js)
    if output is None:
        write(page)
    else:
        write_report(page, output)
    console.note(f"report of {len(inputs.models)} model(s) on {len(inputs.cells)} cell(s): "
                 f"{len(page.encode()) / 1e6:.1f} MB")
    if output is not None:
        write(f"{output}\n")  # where the page is, for a script
