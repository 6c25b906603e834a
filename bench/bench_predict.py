"""Throughput of `histcli predict` on a long TSV against the model's pure forward time, same run.

20,000 genes x 100 bins in the long layout (2 M rows); the model is a CRNN.
The baseline is the forward pass alone over the same genes, already in memory
as tensors (goal: predict's wall time at most 2x that).

Usage: python bench/bench_predict.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import histcli, report, run  # noqa: E402

N_GENES = 20_000


def main() -> None:
    import torch

    from histcli.registry import Registry
    from histcli.store import Store
    from histcli.training import EVAL_BATCH, predict_logits

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = {"HISTCLI_STORE": str(tmp / "s.h5"), "HISTCLI_MODELS": str(tmp / "models")}
        run(histcli("prepare", "simulate", "--cells", 1, "--genes", 3000, "--bins", 100, "-q"), env=env)
        run(histcli("train", "--cell", "sim01", "--arch", "crnn", "--epochs", 1, "-q"), env=env)
        run(histcli("prepare", "simulate", "--cells", 1, "--genes", N_GENES, "--bins", 100, "--seed", 5,
                    "--prefix", "new", "-q"), env=env)
        cell = Store(env["HISTCLI_STORE"]).load("new01")
        frame = pd.DataFrame(cell.counts.reshape(-1, len(cell.marks)), columns=list(cell.marks))
        frame.insert(0, "bin", np.tile(np.arange(1, 101), N_GENES))
        frame.insert(0, "gene_id", np.repeat(cell.gene_ids, 100))
        table = tmp / "genes.tsv"
        frame.to_csv(table, sep="\t", index=False)
        print(f"{table.stat().st_size / 2**20:.0f} MiB long TSV, {len(frame):,} rows", flush=True)

        entry = Registry(env["HISTCLI_MODELS"]).get("crnn", "sim01")
        module = entry.build_module("cpu")
        inputs = torch.from_numpy(np.log1p(cell.counts.astype(np.float32)))
        # Timings drift on a shared machine: the three measurements are interleaved, best of three each.
        forward, startups, walls = [], [], []
        for _ in range(3):
            start = time.perf_counter()
            predict_logits(module, inputs, EVAL_BATCH)
            forward.append(time.perf_counter() - start)
            # The command skips the interpreter's teardown once done, so the start-up measured here does too.
            startups.append(run([sys.executable, "-c",
                                 "import os, torch, pandas, histcli.cli.app, histcli.prediction; os._exit(0)"])[0])
            walls.append(run(histcli("predict", "crnn", "--cell", "sim01", "--input", table, "-o", tmp / "out.tsv", "-q"),
                             env=env)[0])
        startup = min(startups)
        report(f"predict {N_GENES} genes x 100 bins (command)", min(walls), min(forward), goal="<= 2x forward")
        report("  the same without interpreter start-up", min(walls) - startup, min(forward))


if __name__ == "__main__":
    main()
