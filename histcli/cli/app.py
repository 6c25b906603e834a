"""The `histcli` Typer application: one module per command under histcli/cli/."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from histcli import __version__
from histcli.cli import (
    compare,
    demo,
    evaluate,
    explain,
    models_cmd,
    predict,
    prepare,
    report,
    store_cmd,
    sweep,
    train,
    tune,
)
from histcli.cli.options import HistcliTyper

app = HistcliTyper(
    name="histcli",
    help="Predict gene expression from histone modification signals: prepare data, train CRNN, "
    "DeepChrome and AttentiveChrome models, evaluate and compare them across cell types.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Rich help panels on a terminal; plain text (no box drawing) in pipes and files.
    rich_markup_mode="rich" if sys.stdout.isatty() else None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"histcli {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
) -> None:
    """Predict gene expression from histone modification signals."""


# Short help for the command list: one line within 80 columns (the docstrings' first lines are longer).
app.command("demo", short_help="Simulate four cells and run the whole pipeline on them.")(demo.demo)
app.add_typer(prepare.app, name="prepare", short_help="Bring data into the dataset store.")
app.command("train", short_help="Train an architecture; keep the best validation epoch.")(train.train)
app.command("sweep", short_help="Train cells x architectures x seeds at once on Ray.")(sweep.sweep)
app.command("tune", short_help="Search hyperparameters on validation data (Ray Tune).")(tune.tune)
app.command("evaluate", short_help="Metrics per model and cell: AUC, or r for levels.")(evaluate.evaluate)
app.command("compare", short_help="Paired tests of two or more models across cells.")(compare.compare)
app.command("predict", context_settings=predict.CONTEXT_SETTINGS,
            short_help="Predict expression of the genes of a TSV, tracks or a cell.")(predict.predict)
app.command("explain", short_help="Attributions of marks and positions (Captum).")(explain.explain)
app.command("report", short_help="One self-contained HTML page of a study.")(report.report)
app.add_typer(store_cmd.app, name="store", short_help="Inspect the dataset store.")
app.add_typer(models_cmd.app, name="models", short_help="Inspect the model registry.")
