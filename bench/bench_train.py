"""Per-epoch training time and test AUC of `histcli train` against an ordinary PyTorch loop.

The baseline is what a research script does: TensorDataset + DataLoader, batch
200, Adam, the same module from histcli.models, a validation pass with
torch.no_grad in batches of 200 after each epoch, and the best-validation
weights kept. Both run the same number of epochs on the same data, seeds and
thread count (no early stopping), and the test AUC of the kept weights is
reported, averaged over the seeds (goal: histcli's epoch at most 0.6x the
baseline's, its AUC no worse).
Also timed: one epoch of training steps alone on in-memory batches, the
floor below which no loop calling the same module in float32 can go.

Data: E116 (10-kb tracks, 20 bins) and a simulated cell of 19,802 genes x 100
bins (6,601 training genes).

With --device cuda, both loops train on the GPU: the ordinary loop moves each
batch there as a research script does, histcli keeps the cell there.

Usage: python bench/bench_train.py [--arch crnn] [--epochs-e116 15] [--epochs-sim 4] [--seeds 0 1 2]
                                   [--device cpu|cuda]
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
    from histcli.tasks import Classification
    from histcli.training import split_arrays

    return split_arrays(cell, split, "log1p", Classification())


def synchronize(device: str) -> None:
    """Wait for the GPU's queued work, so that a timer read after it counts that work."""
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def model_and_optimizer(arch: str, seed: int, train_x, device: str):
    """The same freshly built module, Adam optimizer and loss for every loop timed here."""
    import torch

    from histcli import models

    torch.manual_seed(seed)
    architecture = models.get(arch)
    module = architecture.build(train_x.shape[1], train_x.shape[2], {}).to(device)
    optimizer = torch.optim.Adam(module.parameters(), lr=architecture.training["lr"],
                                 weight_decay=architecture.training["weight_decay"])
    return module, optimizer, torch.nn.BCEWithLogitsLoss()


def baseline(cell, arch: str, epochs: int, seed: int, device: str) -> tuple[list[float], float]:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from histcli.metrics import roc_auc

    train_x, train_y = arrays(cell, "train")
    valid_x, valid_y = arrays(cell, "valid")
    test_x, test_y = arrays(cell, "test")
    module, optimizer, loss_function = model_and_optimizer(arch, seed, train_x, device)
    train_loader = DataLoader(TensorDataset(torch.from_numpy(train_x), torch.from_numpy(train_y)),
                              batch_size=200, shuffle=True)
    valid_loader = DataLoader(TensorDataset(torch.from_numpy(valid_x)), batch_size=200)
    times, best_auc, best_state = [], -1.0, None
    for _ in range(epochs):
        start = time.perf_counter()
        module.train()
        for inputs, targets in train_loader:
            inputs, targets = inputs.to(device), targets.to(device)
            optimizer.zero_grad()
            loss_function(module(inputs), targets).backward()
            optimizer.step()
        module.eval()
        with torch.no_grad():
            scores = torch.cat([module(inputs.to(device)) for (inputs,) in valid_loader]).cpu().numpy()
        auc = roc_auc(valid_y.astype(int), scores)
        if auc > best_auc:
            best_auc, best_state = auc, {k: v.clone() for k, v in module.state_dict().items()}
        times.append(time.perf_counter() - start)
    module.load_state_dict(best_state)
    module.eval()
    with torch.no_grad():
        test_scores = torch.cat([module(torch.from_numpy(test_x[i : i + 200]).to(device))
                                 for i in range(0, len(test_x), 200)])
    return times, roc_auc(test_y.astype(int), test_scores.cpu().numpy())


def step_floor(cell, arch: str, seed: int, device: str, repeats: int = 3) -> float:
    """Seconds of one epoch's training steps alone (forward, backward, Adam) on in-memory batches.

    No data loading, validation or bookkeeping: what any loop that calls the
    module as it is must spend per epoch, in float32.
    """
    import torch

    train_x, train_y = arrays(cell, "train")
    inputs, targets = torch.from_numpy(train_x).to(device), torch.from_numpy(train_y).to(device)
    module, optimizer, loss_function = model_and_optimizer(arch, seed, train_x, device)
    module.train()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for first in range(0, len(inputs), 200):
            optimizer.zero_grad()
            loss_function(module(inputs[first : first + 200]), targets[first : first + 200]).backward()
            optimizer.step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times)


def with_histcli(cell, arch: str, epochs: int, seed: int, precision: str, device: str) -> tuple[list[float], float]:
    import torch

    from histcli.metrics import roc_auc
    from histcli.training import predict_logits, settings_for, train

    times: list[float] = []
    settings = settings_for(arch, max_epochs=epochs, patience=epochs, seed=seed, precision=precision, device=device)
    result = train(cell, settings, on_epoch=lambda report: times.append(report.seconds))
    from histcli import models

    test_x, test_y = arrays(cell, "test")
    module = models.get(arch).build(test_x.shape[1], test_x.shape[2], {})
    module.load_state_dict(result.state)
    scores = predict_logits(module, torch.from_numpy(test_x)).numpy()
    return times, roc_auc(test_y.astype(int), scores)


def compare(label: str, cell, arch: str, epochs: int, seeds: list[int], device: str) -> None:
    """Epoch times (median over epochs after the first, and over seeds) and mean test AUC over seeds."""
    import torch

    where = torch.cuda.get_device_name() if device == "cuda" else f"{torch.get_num_threads()} CPU threads"
    print(f"\n{label}: {arch}, {epochs} epochs, seeds {seeds}, {where}", flush=True)
    runs = {"baseline": [], "fp32": [], "bf16": []}
    for seed in seeds:
        runs["baseline"].append(baseline(cell, arch, epochs, seed, device))
        for precision in ("fp32", "bf16"):
            runs[precision].append(with_histcli(cell, arch, epochs, seed, precision, device))

    def summary(name):
        epoch = statistics.median(t for times, _ in runs[name] for t in (times[1:] or times))
        aucs = [auc for _, auc in runs[name]]
        return epoch, statistics.mean(aucs), " ".join(f"{auc:.4f}" for auc in aucs)

    base_epoch, base_auc, base_aucs = summary("baseline")
    print(f"  ordinary loop (DataLoader)     {base_epoch:7.3f} s/epoch   mean test AUC {base_auc:.4f} ({base_aucs})",
          flush=True)
    floor = step_floor(cell, arch, seeds[0], device)
    print(f"  training steps alone (fp32)    {floor:7.3f} s/epoch   ratio {floor / base_epoch:.2f} "
          "(the floor for any loop over this module in fp32)", flush=True)
    for precision in ("fp32", "bf16"):
        epoch, auc, aucs = summary(precision)
        print(f"  histcli train --precision {precision:<4} {epoch:7.3f} s/epoch   mean test AUC {auc:.4f} ({aucs})   "
              f"ratio {epoch / base_epoch:.2f} (goal <= 0.6, AUC >= baseline)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--arch", default="crnn")
    parser.add_argument("--epochs-e116", type=int, default=15)
    parser.add_argument("--epochs-sim", type=int, default=4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
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
        compare("E116 (20 bins)", Store(store).load("E116"), options.arch, options.epochs_e116, options.seeds,
                options.device)
        compare("simulated (100 bins)", Store(store).load("sim01"), options.arch, options.epochs_sim, options.seeds,
                options.device)


if __name__ == "__main__":
    main()
