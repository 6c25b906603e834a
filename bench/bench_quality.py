"""Test AUC with default settings on real data: E116 with the DeepChrome split, and DeepDiff's Cell1.

Reproduces the README's quality tables. Every model is trained with the
command's defaults (no flags but the seed): its epoch chosen on validation AUC,
then refit on the training and validation genes; it is scored on the test genes,
which nothing here looks at before the end:

- E116 (`prepare tracks`, 10-kb bins, 100 kb each side of the TSS): every
  architecture with its defaults (seeds 0-2 for `crnn`), with the old defaults
  (batch 200, 100 epochs, patience 10, constant learning rate, no clipping, no refit) and
  with a long budget (1,000 epochs, patience 100); then a 5-seed ensemble
  (`--seeds 0-4`) of the architecture with the best mean validation AUC,
  compared with `logistic` by `histcli compare` (DeLong).
- Cell1 (`prepare deepdiff`, 200 genes per split): every deep architecture
  with defaults, seeds 0-4, and with the old defaults.

Trainings run as separate `histcli train` commands, ``--jobs`` at a time with
``--threads`` torch threads each; wall times are those of the commands. With
``--keep DIR`` finished trainings are kept there and skipped when the script
is run again.

Usage: python bench/bench_quality.py [--jobs 2] [--threads 1] [--keep DIR] [--parts e116,cell1]
(about four hours of one core)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MARKS, histcli, run, shared_data  # noqa: E402

DEEP = ("crnn", "cnn", "rnn", "deepchrome", "attentivechrome")
OLD_DEFAULTS = ["--batch-size", 200, "--epochs", 100, "--patience", 10, "--lr-schedule", "constant",
                "--clip-norm", 0, "--no-refit"]
LONG_BUDGET = ["--epochs", 1000, "--patience", 100]
BUDGETS = {"default": [], "old": OLD_DEFAULTS, "long": LONG_BUDGET}


def prepare(env: dict) -> None:
    e116 = shared_data("e116-10kb")
    run(histcli("prepare", "tracks", "--cell", "E116", *[f"--track={m}={e116 / f'E116.{m}.bedGraph.gz'}" for m in MARKS],
                "--genes", e116 / "genes.hg19.bed", "--expression", e116 / "E116.expression.tsv",
                "--split", e116 / "deepchrome_split.tsv", "--bin-size", 10000, "--window", 100000,
                "--drop-missing", "--overwrite", "-q"), env=env)
    run(histcli("prepare", "deepdiff", shared_data("deepdiff-cell1"), "--cell", "Cell1", "--overwrite", "-q"), env=env)


class Runner:
    """Trains and evaluates one registry entry per job, remembering finished ones in results.jsonl."""

    def __init__(self, folder: Path, threads: int, log_name: str = "results.jsonl", device: str = "auto"):
        self.env = {"HISTCLI_STORE": str(folder / "store.h5"), "HISTCLI_MODELS": str(folder / "models")}
        self.log = folder / log_name
        self.threads = threads
        self.device = device
        self.done = {}
        if self.log.exists():
            for line in self.log.read_text().splitlines():
                row = json.loads(line)
                self.done[row["name"], row["cell"]] = row

    def __call__(self, job: tuple) -> dict:
        cell, arch, budget, seeds = job
        seed_option = ["--seeds", seeds] if "-" in seeds else ["--seed", seeds]
        name = f"{arch}-{budget}-s{seeds}"
        if (name, cell) in self.done:
            return self.done[name, cell]
        wall, trained = run(histcli("train", "--cell", cell, "--arch", arch, "--name", name, *seed_option,
                                    *BUDGETS[budget], "--threads", self.threads, "--device", self.device, "--overwrite",
                                    "-f", "json", "-q"),
                            env=self.env)
        (trained_row,) = json.loads(trained)
        _, evaluated = run(histcli("evaluate", name, "--cell", cell, "-f", "json", "-q"), env=self.env)
        test = json.loads(evaluated)["rows"][0]
        row = {"name": name, "cell": cell, "arch": arch, "budget": budget, "seeds": seeds,
               "best_epoch": trained_row["best_epoch"], "epochs": trained_row["epochs_run"],
               "converged": trained_row["converged"], "valid_auc": trained_row["valid_auc"],
               "test_auc": test["auc"], "test_auprc": test["auprc"], "seconds": wall}
        with open(self.log, "a") as handle:
            handle.write(json.dumps(row) + "\n")
        print(f"{cell:<6} {name:<32} best {row['best_epoch']:>4}/{row['epochs']:<4} valid {row['valid_auc']:.4f} "
              f"test {row['test_auc']:.4f} {wall:7.1f} s", flush=True)
        return row


def mean(rows, key):
    return statistics.fmean(row[key] for row in rows)


def aucs(rows, digits: int) -> str:
    return ", ".join(f"{row['test_auc']:.{digits}f}" for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2, help="trainings at a time")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per training")
    parser.add_argument("--keep", type=Path, help="keep the store, models and results here (and resume)")
    parser.add_argument("--parts", default="e116,cell1")
    options = parser.parse_args()
    folder = options.keep or Path(tempfile.mkdtemp(prefix="histcli-quality-"))
    folder.mkdir(parents=True, exist_ok=True)
    runner = Runner(folder, options.threads)
    if not (folder / "store.h5").exists():
        prepare(runner.env)
    parts = options.parts.split(",")

    # Defaults first: the ensemble's architecture is chosen from them.
    defaults, others = [], []
    if "e116" in parts:
        defaults += [("E116", arch, "default", seed) for arch in ("logistic", *DEEP)
                     for seed in (("0", "1", "2") if arch == "crnn" else ("0",))]
        others += [("E116", arch, budget, "0") for arch in ("logistic", *DEEP) for budget in ("old", "long")]
    if "cell1" in parts:
        defaults += [("Cell1", arch, "default", str(seed)) for arch in DEEP for seed in range(5)]
        others += [("Cell1", arch, "old", str(seed)) for arch in DEEP for seed in range(5)]
    with ThreadPoolExecutor(options.jobs) as pool:
        rows = list(pool.map(runner, defaults))
        if "e116" in parts:
            # Chosen on validation AUC, never on test AUC.
            best = max(DEEP, key=lambda arch: mean([r for r in rows if r["cell"] == "E116" and r["arch"] == arch],
                                                    "valid_auc"))
            others.insert(0, ("E116", best, "default", "0-4"))
        rows += pool.map(runner, others)

    if "e116" in parts:
        e116 = [row for row in rows if row["cell"] == "E116"]
        ensemble = runner(("E116", best, "default", "0-4"))
        _, compared = run(histcli("compare", ensemble["name"], "logistic-default-s0", "--cell", "E116", "-f", "json",
                                  "-q"), env=runner.env)
        cell = json.loads(compared)["cells"][0]
        print("\nE116 (seed 0; crnn default: mean of seeds 0-2)")
        print("| model | default: test AUC | best epoch / epochs | long budget: test AUC | old defaults: test AUC "
              "| default s | old s |")
        print("|---|---|---|---|---|---|---|")
        for arch in ("logistic", *DEEP):
            by = {r["budget"]: r for r in e116 if r["arch"] == arch and r["seeds"] == "0"}
            seeds = [r for r in e116 if r["arch"] == arch and r["budget"] == "default" and "-" not in r["seeds"]]
            default = f"{mean(seeds, 'test_auc'):.4f}" + (f" (seeds {aucs(seeds, 4)})" if len(seeds) > 1 else "")
            print(f"| `{arch}` | {default} | {by['default']['best_epoch']} / {by['default']['epochs']} | "
                  f"{by['long']['test_auc']:.4f} | {by['old']['test_auc']:.4f} | {by['default']['seconds']:.0f} | "
                  f"{by['old']['seconds']:.0f} |")
        print(f"\nensemble of 5 seeds of {best} (best mean validation AUC): valid {ensemble['valid_auc']:.4f}, "
              f"test {ensemble['test_auc']:.4f}; against logistic: delta {cell['delta_auc']:.4f} "
              f"(95% CI {cell['ci_low']:.4f} to {cell['ci_high']:.4f}), DeLong p = {cell['delong_p']:.2g}")
    if "cell1" in parts:
        cell1 = [row for row in rows if row["cell"] == "Cell1"]
        print("\nCell1 (seeds 0-4)")
        print("| model | default: mean test AUC | test AUC per seed | converged | old defaults: mean test AUC "
              "| default s (mean) | old s (mean) |")
        print("|---|---|---|---|---|---|---|")
        for arch in DEEP:
            default = [r for r in cell1 if r["arch"] == arch and r["budget"] == "default"]
            old = [r for r in cell1 if r["arch"] == arch and r["budget"] == "old"]
            print(f"| `{arch}` | {mean(default, 'test_auc'):.4f} | "
                  f"{aucs(default, 3)} | "
                  f"{sum(r['converged'] for r in default)}/5 | {mean(old, 'test_auc'):.4f} | "
                  f"{mean(default, 'seconds'):.0f} | {mean(old, 'seconds'):.0f} |")
    print(f"\n(store, models and results in {folder})")


if __name__ == "__main__":
    main()
