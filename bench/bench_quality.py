"""Test AUC on real data: E116 with the DeepChrome split, and DeepDiff's Cell1.

Reproduces the README's quality table. E116 is prepared from its 10-kb tracks
with 100 kb on each side of the TSS; every architecture is trained with its
defaults and the given seed, early stopping on validation AUC, and scored on
the test genes. The logistic baseline is the bar every deep model must clear.

E116's BED has no strands, so `train --mirror auto` trains every model on both
orientations of its genes; Cell1 comes 5' to 3' and is trained as it is.
`cnn-wd` is the CNN with weight decay 1e-3 instead of its default 1e-4.

Usage: python bench/bench_quality.py [--archs logistic,crnn,...] [--seed 0] [--epochs 500] [--patience 40]
       [--threads N]
(the defaults take about an hour on two cores, most of it CRNN and AttentiveChrome)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MARKS, histcli, run, shared_data  # noqa: E402

ARCHITECTURES = "logistic,crnn,cnn,cnn-wd,rnn,deepchrome,attentivechrome"
# Named settings beyond an architecture's defaults: registry name -> (architecture, extra train options).
VARIANTS = {"cnn-wd": ("cnn", ["--weight-decay", "0.001"])}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--archs", default=ARCHITECTURES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=500)
    parser.add_argument("--patience", type=int, default=40)
    parser.add_argument("--threads", type=int, help="CPU threads for torch")
    parser.add_argument("--keep", type=Path, help="keep the store and models in this folder")
    options = parser.parse_args()
    archs = options.archs.split(",")
    folder = options.keep or Path(tempfile.mkdtemp(prefix="histcli-quality-"))
    env = {"HISTCLI_STORE": str(folder / "store.h5"), "HISTCLI_MODELS": str(folder / "models")}

    e116 = shared_data("e116-10kb")
    run(histcli("prepare", "tracks", "--cell", "E116", *[f"--track={m}={e116 / f'E116.{m}.bedGraph.gz'}" for m in MARKS],
                "--genes", e116 / "genes.hg19.bed", "--expression", e116 / "E116.expression.tsv",
                "--split", e116 / "deepchrome_split.tsv", "--bin-size", 10000, "--window", 100000,
                "--drop-missing", "--overwrite", "-q"), env=env)
    run(histcli("prepare", "deepdiff", shared_data("deepdiff-cell1"), "--cell", "Cell1", "--overwrite", "-q"), env=env)

    threads = ["--threads", options.threads] if options.threads else []
    print(f"{'data':<8} {'model':<16} {'seed':>4} {'best epoch':>10} {'valid AUC':>9} {'test AUC':>8}", flush=True)
    for cell, patience in (("E116", options.patience), ("Cell1", 15)):
        for name in archs:
            if cell == "Cell1" and name == "logistic":
                continue
            arch, extra = VARIANTS.get(name, (name, []))
            _, trained = run(histcli("train", "--cell", cell, "--arch", arch, "--name", name, *extra, *threads,
                                     "--seed", options.seed, "--epochs", options.epochs, "--patience", patience,
                                     "--overwrite", "-f", "json", "-q"), env=env)
            (row,) = json.loads(trained)
            _, evaluated = run(histcli("evaluate", name, "--cell", cell, "-f", "json", "-q"), env=env)
            test = json.loads(evaluated)["rows"][0]["auc"]
            print(f"{cell:<8} {name:<16} {options.seed:>4} {row['best_epoch']:>10} {row['valid_auc']:>9.4f} "
                  f"{test:>8.4f}", flush=True)
    if not options.keep:
        print(f"(store and models in {folder})")


if __name__ == "__main__":
    main()
