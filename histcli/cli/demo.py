"""`histcli demo`: the whole workflow on simulated cells, in one command."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated, Optional

import typer

from histcli.cli.options import (
    Device,
    DeviceOption,
    Mirror,
    OutputFormat,
    Precision,
    TableFormat,
)

DEMO_MODELS = ("logistic", "deepchrome", "crnn")


def demo(
    folder: Annotated[Path, typer.Option("--dir", help="Where the demo keeps its store and models.")] = Path("histcli-demo"),
    cells: Annotated[int, typer.Option("--cells", min=2, help="Simulated cells.")] = 4,
    genes: Annotated[int, typer.Option("--genes", min=30, help="Genes per cell.")] = 1000,
    bins: Annotated[int, typer.Option("--bins", min=14, help="Bins per gene (DeepChrome needs 14).")] = 20,
    epochs: Annotated[Optional[int], typer.Option("--epochs", min=1, help="Most epochs per model "
                                                  "[default: train's, which stops when a model has converged].")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of data and training.")] = 0,
    device: DeviceOption = Device.auto,
) -> None:
    """Simulate cells, prepare them, train logistic/DeepChrome/CRNN, evaluate and compare; print every table.

    The store and models go to --dir (replaced on each run); the commands it shows can be re-run there.
    """
    from histcli.cli import compare, console, evaluate, prepare, store_cmd, train

    console.setup(False)
    store = folder / "store.h5"
    models = folder / "models"
    # A fresh start each time, so that cells and models of an earlier, larger demo do not linger.
    for old in (store, models):
        if old.is_dir():
            shutil.rmtree(old)
        elif old.exists():
            old.unlink()

    def step(command: str) -> None:
        console.note(f"$ histcli {command} --store {store} --models {models}")

    step(f"prepare simulate --cells {cells} --genes {genes} --bins {bins} --seed {seed} --overwrite")
    prepare.simulate(cells=cells, genes=genes, bins=bins, seed=seed, prefix="sim", bin_size=100, overwrite=True,
                     store_path=store, output_format=OutputFormat.auto, quiet=False)
    step("store list")
    store_cmd.list_cells(store_path=store, output_format=OutputFormat.auto)
    for arch in DEMO_MODELS:
        budget = f" --epochs {epochs}" if epochs else ""
        step(f"train --all-cells --arch {arch}{budget} --seed {seed} --overwrite")
        train.train(arch=arch, cells=None, all_cells=True, name=None, epochs=epochs, patience=None,
                    batch_size=None, lr=None, weight_decay=None, clip_norm=None, lr_schedule=None, params=None,
                    seed=seed, seeds=None, device=device,
                    threads=None, mirror=Mirror.auto, precision=Precision.fp32, overwrite=True,
                    store_path=store, models_path=models, output_format=OutputFormat.auto,
                    quiet=False)
    step(f"evaluate {' '.join(DEMO_MODELS)}")
    evaluate.evaluate(names=list(DEMO_MODELS), cells=None, on_cell=None, split="test", threshold=0.5,
                      summary=False, device=device, allow_changed_data=False, store_path=store, models_path=models,
                      output_format=TableFormat.auto, quiet=False)
    step(f"compare {' '.join(DEMO_MODELS)}")
    compare.compare(names=list(DEMO_MODELS), cells=None, split="test", summary=False, plot=None, roc_cell=None,
                    seed=seed, device=device, allow_changed_data=False, store_path=store, models_path=models,
                    output_format=TableFormat.auto, quiet=False)
