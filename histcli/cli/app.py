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

app = typer.Typer(
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


app.command("demo")(demo.demo)
app.add_typer(prepare.app, name="prepare")
app.command("train")(train.train)
app.command("sweep")(sweep.sweep)
app.command("tune")(tune.tune)
app.command("evaluate")(evaluate.evaluate)
app.command("compare")(compare.compare)
app.command("predict", context_settings=predict.CONTEXT_SETTINGS)(predict.predict)
app.command("explain")(explain.explain)
app.command("report")(report.report)
app.add_typer(store_cmd.app, name="store")
app.add_typer(models_cmd.app, name="models")
