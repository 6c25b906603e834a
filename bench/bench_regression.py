"""Test Pearson r of regression models with default settings: E116 (DeepChrome split) and Cell1.

Reproduces the README's regression table. Every model is trained with
`histcli train --task regression` and nothing else but the seed (target
log(RPKM + 1), the epoch chosen on validation Pearson r, then the default refit
on train + valid) and scored on the test genes by `histcli evaluate`, which
nothing here looks at before the end. A yardstick is measured in the same run:
ridge regression on the log1p counts of every bin and mark, its penalty chosen on
the validation genes, also refit on the training and validation genes. Then, on
E116, a 5-seed ensemble (`--seeds 0-4`) of the architecture with the best mean
validation r, chosen before any test gene is scored, is compared with the linear
model's first seed by `histcli compare --metric pearson` (Steiger's Z).

Trainings run as separate commands, ``--jobs`` at a time with ``--threads``
torch threads each. With ``--keep DIR`` finished trainings are kept there and
skipped when the script runs again (a store prepared by bench_quality.py in that
folder is reused).

Usage: python bench/bench_regression.py [--jobs 2] [--threads 1] [--keep DIR] [--seeds 0,1,2]
       [--archs logistic,cnn,...] [--parts e116,cell1] [--ensemble-seeds 0-4]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quality import DEEP, Runner, prepare  # noqa: E402
from common import histcli, run  # noqa: E402

from histcli.metrics import pearson  # noqa: E402
from histcli.store import SPLIT_CODES, Store  # noqa: E402

ALPHAS = (0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)


def ridge_yardstick(store: Store, cell: str) -> dict:
    """Ridge on flattened log1p counts (standardised), alpha chosen by validation Pearson r; refit (as
    `histcli train` does by default) on the training and validation genes with that alpha."""
    data = store.load(cell)

    def split(*names):
        mask = np.isin(data.split, [SPLIT_CODES[name] for name in names])
        return np.log1p(data.counts[mask].reshape(mask.sum(), -1).astype(np.float64)), np.log1p(data.expression[mask])

    def fit(x, y, alpha):
        mean, scale = x.mean(0), x.std(0) + 1e-12
        z = (x - mean) / scale
        weights = np.linalg.solve(z.T @ z + alpha * np.eye(z.shape[1]), z.T @ (y - y.mean()))
        return lambda new: ((new - mean) / scale) @ weights

    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = split("train"), split("valid"), split("test")
    best = max(ALPHAS, key=lambda alpha: pearson(valid_y, fit(train_x, train_y, alpha)(valid_x)))
    chosen = fit(train_x, train_y, best)
    refit = fit(*split("train", "valid"), best)
    return {"alpha": best, "valid_pearson": pearson(valid_y, chosen(valid_x)),
            "test_pearson": pearson(test_y, chosen(test_x)), "refit_test_pearson": pearson(test_y, refit(test_x))}


class RegressionRunner(Runner):
    """Trains and evaluates one regression entry per job, remembering finished ones in regression.jsonl."""

    def __init__(self, folder: Path, threads: int, log_name: str = "regression.jsonl", device: str = "auto"):
        super().__init__(folder, threads, log_name=log_name, device=device)

    def __call__(self, job: tuple) -> dict:
        cell, arch, seeds = job
        seed_option = ["--seeds", seeds] if "-" in seeds or "," in seeds else ["--seed", seeds]
        name = f"{arch}-regression-s{seeds}"
        if (name, cell) in self.done:
            return self.done[name, cell]
        wall, trained = run(histcli("train", "--cell", cell, "--arch", arch, "--task", "regression", "--name", name,
                                    *seed_option, "--threads", self.threads, "--device", self.device, "--overwrite",
                                    "-f", "json", "-q"),
                            env=self.env)
        (trained_row,) = json.loads(trained)
        _, evaluated = run(histcli("evaluate", name, "--cell", cell, "-f", "json", "-q"), env=self.env)
        test = json.loads(evaluated)["rows"][0]
        row = {"name": name, "cell": cell, "arch": arch, "seeds": seeds, "best_epoch": trained_row["best_epoch"],
               "epochs": trained_row["epochs_run"], "converged": trained_row["converged"],
               "valid_pearson": trained_row["valid_pearson"], "seconds": wall,
               **{f"test_{key}": test[key] for key in ("pearson", "spearman", "r2", "rmse", "auc")}}
        with open(self.log, "a") as handle:
            handle.write(json.dumps(row) + "\n")
        print(f"{cell:<6} {name:<36} best {row['best_epoch']:>4}/{row['epochs']:<4} valid r {row['valid_pearson']:.4f} "
              f"test r {row['test_pearson']:.4f} {wall:7.1f} s", flush=True)
        return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2, help="trainings at a time")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per training")
    parser.add_argument("--keep", type=Path, help="keep the store, models and results here (and resume)")
    parser.add_argument("--seeds", default="0,1,2", help="seeds per architecture (each a separate model)")
    parser.add_argument("--archs", default=",".join(("logistic", *DEEP)))
    parser.add_argument("--parts", default="e116,cell1")
    parser.add_argument("--ensemble-seeds", default="0-4",
                        help="seeds of E116's ensemble of the best architecture on validation ('' for none)")
    options = parser.parse_args()
    folder = options.keep or Path(tempfile.mkdtemp(prefix="histcli-regression-"))
    folder.mkdir(parents=True, exist_ok=True)
    runner = RegressionRunner(folder, options.threads)
    if not (folder / "store.h5").exists():
        prepare(runner.env)
    cells = {"e116": "E116", "cell1": "Cell1"}
    archs, seeds = options.archs.split(","), options.seeds.split(",")
    jobs = [(cells[part], arch, seed) for part in options.parts.split(",") for arch in archs for seed in seeds
            if not (part == "cell1" and arch == "logistic")]
    with ThreadPoolExecutor(options.jobs) as pool:
        rows = list(pool.map(runner, jobs))
    ensemble = None
    if "e116" in options.parts.split(",") and options.ensemble_seeds:
        # Chosen on validation r, never on test r.
        best = max(archs, key=lambda arch: statistics.fmean(
            r["valid_pearson"] for r in rows if r["cell"] == "E116" and r["arch"] == arch))
        ensemble = runner(("E116", best, options.ensemble_seeds))

    store = Store(folder / "store.h5")
    for part in options.parts.split(","):
        cell = cells[part]
        ridge = ridge_yardstick(store, cell)
        print(f"\n{cell}: test genes, target ln(RPKM + 1), defaults, seeds {', '.join(seeds)}")
        print("| model | test Pearson r: mean (per seed) | Spearman | R² | RMSE | AUC vs labels | valid r | s (mean) |")
        print("|---|---|---|---|---|---|---|---|")
        print(f"| ridge on log1p counts (alpha {ridge['alpha']:g} by validation) | {ridge['test_pearson']:.4f} | | | | | "
              f"{ridge['valid_pearson']:.4f} | |")
        print(f"| the same ridge refit on train + valid | {ridge['refit_test_pearson']:.4f} | | | | | | |")
        for arch in archs:
            chosen = [r for r in rows if r["cell"] == cell and r["arch"] == arch]
            if not chosen:
                continue

            def mean(key, chosen=chosen):
                return statistics.fmean(r[key] for r in chosen)

            per_seed = ", ".join(f"{r['test_pearson']:.4f}" for r in chosen)
            print(f"| `{arch}` | {mean('test_pearson'):.4f} ({per_seed}) | {mean('test_spearman'):.4f} | "
                  f"{mean('test_r2'):.4f} | {mean('test_rmse'):.4f} | {mean('test_auc'):.4f} | "
                  f"{mean('valid_pearson'):.4f} | {mean('seconds'):.0f} |")
    if ensemble is not None and "logistic" in archs:
        linear = f"logistic-regression-s{seeds[0]}"
        _, compared = run(histcli("compare", ensemble["name"], linear, "--cell", "E116", "--metric", "pearson",
                                  "-f", "json", "-q"), env=runner.env)
        cell = json.loads(compared)["cells"][0]
        print(f"\nE116: ensemble of seeds {options.ensemble_seeds} of {ensemble['arch']} (best mean validation r): "
              f"valid r {ensemble['valid_pearson']:.4f}, test r {ensemble['test_pearson']:.4f}; against {linear}: "
              f"delta r {cell['delta_pearson']:.4f} (95% CI {cell['ci_low']:.4f} to {cell['ci_high']:.4f}), "
              f"Steiger p = {cell['steiger_p']:.2g}")
    print(f"\n(store, models and results in {folder})")


if __name__ == "__main__":
    main()
