"""`histcli evaluate` and `histcli compare` at DeepChrome scale: 56 cells x 6,600 test genes.

* evaluate of one model over 56 cells (nothing cached) against the model's
  pure forward time on the same test genes, measured in the same run: the ratio
  shows how much is inference and how much everything else.
* compare of two models over the 56 cells with cached predictions, against the
  interpreter's start-up with histcli's command modules imported (goal: at
  most 1 s beyond start-up).

Simulated cells of 19,800 genes x 20 bins (E116's shape); the models are a
CRNN and a logistic baseline trained for one epoch (their quality does not
matter here).

Usage: python bench/bench_evaluate_compare.py [--cells 56]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import histcli, report, run  # noqa: E402


def pure_forward_seconds(store_path: Path, models: Path, name: str) -> float:
    """The forward passes alone, inputs already transformed and in memory."""
    import torch

    from histcli.registry import Registry
    from histcli.store import Store
    from histcli.training import EVAL_BATCH, predict_logits

    store, registry = Store(store_path), Registry(models)
    total = 0.0
    for cell_name in registry.cells(name):
        entry = registry.get(name, cell_name)
        module = entry.build_module("cpu")
        cell = store.load(cell_name, splits=["test"])
        inputs = torch.from_numpy(np.log1p(cell.counts.astype(np.float32)))
        start = time.perf_counter()
        predict_logits(module, inputs, EVAL_BATCH)
        total += time.perf_counter() - start
    return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cells", type=int, default=56)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = {"HISTCLI_STORE": str(tmp / "s.h5"), "HISTCLI_MODELS": str(tmp / "models")}
        print(f"setting up {options.cells} cells and two models ...", flush=True)
        run(histcli("prepare", "simulate", "--cells", options.cells, "--genes", 19800, "--bins", 20, "-q"), env=env)
        for arch in ("crnn", "logistic"):
            run(histcli("train", "--all-cells", "--arch", arch, "--epochs", 1, "-q"), env=env)

        forward = pure_forward_seconds(tmp / "s.h5", tmp / "models", "crnn")
        walls = []
        for _ in range(2):
            for cache in (tmp / "models" / "crnn").glob("*/predictions"):
                shutil.rmtree(cache)
            walls.append(run(histcli("evaluate", "crnn", "-q"), env=env)[0])
        # The command skips the interpreter's teardown once done, so the start-up measured here does too.
        startup, _ = run([sys.executable, "-c", "import os, torch, histcli.cli.app, histcli.evaluation; os._exit(0)"])
        report(f"evaluate crnn, {options.cells} cells, uncached", min(walls), forward, goal="close to 1x forward")
        report("  the same without interpreter start-up", min(walls) - startup, forward)

        run(histcli("evaluate", "logistic", "-q"), env=env)  # fills the second model's cache
        run(histcli("compare", "crnn", "logistic", "-q"), env=env)
        compare = min(run(histcli("compare", "crnn", "logistic", "-f", "tsv", "-q"), env=env)[0] for _ in range(3))
        startup = min(run([sys.executable, "-c", "import histcli.cli.app"])[0] for _ in range(3))
        report(f"compare 2 models, {options.cells} cells, cached", compare, startup,
               goal=f"<= start-up + 1 s = {startup + 1:.2f} s")
        print(f"  beyond start-up: {compare - startup:.3f} s", flush=True)


if __name__ == "__main__":
    main()
