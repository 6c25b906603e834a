"""Per-epoch training time and test AUC of `histcli train` against an ordinary PyTorch loop.

The baseline is what a research script does: TensorDataset + DataLoader, batch
200, Adam, the same module from histcli.models, a validation pass with
torch.no_grad in batches of 200 after each epoch, and the best-validation
weights kept. Both run the same number of epochs on the same data, seed and
thread count (no early stopping), and the test AUC of the kept weights is
reported (goal: histcli's epoch at most 0.6x the baseline's, its AUC no worse).

Data: E116 (10-kb tracks, 20 bins) and a simulated cell of 19,802 genes x 100
bins (6,601 training genes).

Usage: python bench/bench_train.py [--arch crnn] [--epochs-e116 15] [--epochs-sim 4]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MARKS, histcli, run, shared_data  # noqa: E402


def arrays(cell, split):
    from histcli.training import split_arrays

    return split_arrays(cell, split, "log1p")


def baseline(cell, arch: str, epochs: int, seed: int) -> tuple[list[float], float]:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from histcli import models
    from histcli.metrics import roc_auc

    torch.manual_seed(seed)
    train_x, train_y = arrays(cell, "train")
    valid_x, valid_y = arrays(cell, "valid")
    test_x, test_y = arrays(cell, "test")
    architecture = models.get(arch)
    module = architecture.build(train_x.shape[1], train_x.shape[2], {})
    optimizer = torch.optim.Adam(module.parameters(), lr=architecture.training["lr"],
                                 weight_decay=architecture.training["weight_decay"])
    loss_function = torch.nn.BCEWithLogitsLoss()
    train_loader = DataLoader(TensorDataset(torch.from_numpy(train_x), torch.from_numpy(train_y)),
                              batch_size=200, shuffle=True)
    valid_loader = DataLoader(TensorDataset(torch.from_numpy(valid_x)), batch_size=200)
    times, best_auc, best_state = [], -1.0, None
    for _ in range(epochs):
        start = time.perf_counter()
        module.train()
        for inputs, targets in train_loader:
            optimizer.zero_grad()
            loss_function(module(inputs), targets).backward()
            optimizer.step()
        module.eval()
        with torch.no_grad():
            scores = torch.cat([module(inputs) for (inputs,) in valid_loader]).numpy()
        auc = roc_auc(valid_y.astype(int), scores)
        if auc > best_auc:
            best_auc, best_state = auc, {k: v.clone() for k, v in module.state_dict().items()}
        times.append(time.perf_counter() - start)
    module.load_state_dict(best_state)
    module.eval()
    with torch.no_grad():
        test_scores = torch.cat([module(torch.from_numpy(test_x[i : i + 200])) for i in range(0, len(test_x), 200)])
    return times, roc_auc(test_y.astype(int), test_scores.numpy())


def with_histcli(cell, arch: str, epochs: int, seed: int, precision: str) -> tuple[list[float], float]:
    import torch

    from histcli.metrics import roc_auc
    from histcli.training import predict_logits, settings_for, train

    times: list[float] = []
    settings = settings_for(arch, max_epochs=epochs, patience=epochs, seed=seed, precision=precision)
    result = train(cell, settings, on_epoch=lambda report: times.append(report.seconds))
    from histcli import models

    test_x, test_y = arrays(cell, "test")
    module = models.get(arch).build(test_x.shape[1], test_x.shape[2], {})
    module.load_state_dict(result.state)
    scores = predict_logits(module, torch.from_numpy(test_x)).numpy()
    return times, roc_auc(test_y.astype(int), scores)


def compare(label: str, cell, arch: str, epochs: int, seed: int) -> None:
    import torch

    print(f"\n{label}: {arch}, {epochs} epochs, seed {seed}, {torch.get_num_threads()} threads", flush=True)
    base_times, base_auc = baseline(cell, arch, epochs, seed)
    base_epoch = statistics.median(base_times[1:] or base_times)
    print(f"  ordinary loop (DataLoader)    {base_epoch:7.3f} s/epoch   test AUC {base_auc:.4f}", flush=True)
    for precision in ("fp32", "bf16"):
        times, auc = with_histcli(cell, arch, epochs, seed, precision)
        epoch = statistics.median(times[1:] or times)
        print(f"  histcli train --precision {precision:<4} {epoch:7.3f} s/epoch   test AUC {auc:.4f}   "
              f"ratio {epoch / base_epoch:.2f} (goal <= 0.6, AUC >= baseline)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--arch", default="crnn")
    parser.add_argument("--epochs-e116", type=int, default=15)
    parser.add_argument("--epochs-sim", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args()
    from histcli.store import Store

    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "s.h5"
        data = shared_data("e116-10kb")
        run(histcli("prepare", "tracks", "--cell", "E116",
                    *[f"--track={m}={data / f'E116.{m}.bedGraph.gz'}" for m in MARKS],
                    "--genes", data / "genes.hg19.bed", "--expression", data / "E116.expression.tsv",
                    "--split", data / "deepchrome_split.tsv", "--bin-size", 10000, "--window", 100000,
                    "--drop-missing", "--store", store, "-q"))
        run(histcli("prepare", "simulate", "--cells", 1, "--genes", 19802, "--bins", 100, "--seed", 1,
                    "--store", store, "-q"))
        compare("E116 (20 bins)", Store(store).load("E116"), options.arch, options.epochs_e116, options.seed)
        compare("simulated (100 bins)", Store(store).load("sim01"), options.arch, options.epochs_sim, options.seed)


if __name__ == "__main__":
    main()
