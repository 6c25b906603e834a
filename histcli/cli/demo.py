"""`histcli demo`: the whole workflow on simulated cells, in one command."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path
from typing import Annotated, Optional

import typer

from histcli.cli.options import Device, DeviceOption

DEMO_MODELS = ("logistic", "deepchrome", "crnn")


def demo(
    folder: Annotated[Path, typer.Option("--dir", help="Where the demo keeps its store and models.")] = Path("histcli-demo"),
    cells: Annotated[int, typer.Option("--cells", min=2, help="Simulated cells.")] = 4,
    genes: Annotated[int, typer.Option("--genes", min=30, help="Genes per cell.")] = 1000,
    bins: Annotated[int, typer.Option("--bins", min=14, help="Bins per gene (DeepChrome needs 14).")] = 20,
    epochs: Annotated[Optional[int], typer.Option("--epochs", min=1, help="Most epochs per model "
                                                  "[default: train's, which stops when a model has converged].")] = None,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of data and training.")] = 0,
    device: DeviceOption = Device.auto,
) -> None:
    """Simulate cells, prepare them, train logistic/DeepChrome/CRNN, evaluate and compare; print every table.

    The store and models go to --dir (replaced on each run); the commands it shows can be re-run there.
    """
    from histcli.cli import console
    from histcli.training import resolve_device

    console.setup(False)
    resolve_device(device.value)  # before the earlier demo is removed: --device cuda without CUDA fails here
    store = folder / "store.h5"
    models = folder / "models"
    # A fresh start each time, so that cells and models of an earlier, larger demo do not linger.
    for old in (store, models):
        if old.is_dir():
            shutil.rmtree(old)
        elif old.exists():
            old.unlink()

    def step(command: str, *, with_models: bool = True) -> None:
        """Show a command and run it, in this process, exactly as shown."""
        args = [*shlex.split(command), "--store", str(store)] + (["--models", str(models)] if with_models else [])
        console.note(f"$ histcli {shlex.join(args)}")
        run_command(args)

    device_option = f" --device {device.value}" if device != Device.auto else ""
    step(f"prepare simulate --cells {cells} --genes {genes} --bins {bins} --seed {seed} --overwrite", with_models=False)
    step("store list", with_models=False)
    budget = f" --epochs {epochs}" if epochs else ""
    for arch in DEMO_MODELS:
        step(f"train --all-cells --arch {arch}{budget} --seed {seed}{device_option} --overwrite")
    step(f"evaluate {' '.join(DEMO_MODELS)}{device_option}")
    step(f"compare {' '.join(DEMO_MODELS)} --seed {seed}{device_option}")


def run_command(args: list[str]) -> None:
    """Run ``histcli ARGS`` inside this process, with the command line's own parsing and defaults."""
    import click

    from histcli.cli.app import app

    try:
        code = app(args, prog_name="histcli", standalone_mode=False)
    except click.exceptions.Abort as abort:  # how click reports Ctrl-C when it does not exit itself
        raise KeyboardInterrupt from abort
    if code:  # a command that ended with typer.Exit(code)
        raise SystemExit(code)
