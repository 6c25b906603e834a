"""What a small `histcli tune` search buys per architecture, on E116 and Cell1 (validation AUC only).

Each architecture is trained once with its defaults (`histcli train`, seed 0)
and searched with `histcli tune` (random search, ASHA, seed 0) under the same
epoch cap and patience; the table compares the validation AUC of the default
model and of the saved best configuration. Test genes are never scored here:
they stay untouched for the comparison of the tuned models afterwards.

Usage: python bench/study_tune.py [--archs crnn,...] [--samples 6] [--epochs 20] [--patience 5] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MARKS, histcli, run, shared_data  # noqa: E402

ARCHITECTURES = "logistic,crnn,cnn,rnn,deepchrome,attentivechrome"
# Learning rate for every architecture, and dropout where the architecture has it.
SEARCHES = {
    "logistic": ["lr=loguniform:1e-3:1e-1", "weight_decay=loguniform:1e-6:1e-2"],
    "default": ["lr=loguniform:2e-4:5e-3", "dropout=uniform:0.1:0.6"],
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--archs", default=ARCHITECTURES)
    parser.add_argument("--cells", default="E116,Cell1")
    parser.add_argument("--samples", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="keep the store and models in this folder")
    options = parser.parse_args()
    folder = options.keep or Path(tempfile.mkdtemp(prefix="histcli-tune-study-"))
    folder.mkdir(parents=True, exist_ok=True)
    env = {"HISTCLI_STORE": str(folder / "store.h5"), "HISTCLI_MODELS": str(folder / "models")}
    cells = options.cells.split(",")
    if "E116" in cells:
        e116 = shared_data("e116-10kb")
        run(histcli("prepare", "tracks", "--cell", "E116",
                    *[f"--track={m}={e116 / f'E116.{m}.bedGraph.gz'}" for m in MARKS],
                    "--genes", e116 / "genes.hg19.bed", "--expression", e116 / "E116.expression.tsv",
                    "--split", e116 / "deepchrome_split.tsv", "--bin-size", 10000, "--window", 100000,
                    "--drop-missing", "--overwrite", "-q"), env=env)
    if "Cell1" in cells:
        run(histcli("prepare", "deepdiff", shared_data("deepdiff-cell1"), "--cell", "Cell1", "--overwrite", "-q"),
            env=env)

    budget = ["--epochs", options.epochs, "--patience", options.patience, "--seed", 0]
    print(f"{'cell':<6} {'arch':<16} {'default':>8} {'tuned':>8} {'gain':>7} {'trials':>14} {'seconds':>8}  best",
          flush=True)
    for cell in cells:
        for arch in options.archs.split(","):
            _, trained = run(histcli("train", "--cell", cell, "--arch", arch, "--threads", 1, *budget,
                                     "--overwrite", "-q", "-f", "json"), env=env)
            default = json.loads(trained)[0]["valid_auc"]
            search = SEARCHES.get(arch, SEARCHES["default"])
            started = time.perf_counter()
            _, tuned = run(histcli("tune", "--cell", cell, "--arch", arch, *[f"--search={s}" for s in search],
                                   "--samples", options.samples, *budget, "--overwrite", "-q", "-f", "json"), env=env)
            seconds = time.perf_counter() - started
            try:
                trials = json.loads(tuned)
            except json.JSONDecodeError:
                sys.exit(f"histcli tune for {arch} on {cell} printed no JSON table:\n{tuned[-3000:]}")
            best = next(trial for trial in trials if trial["best"])
            stopped = sum(trial["status"] == "stopped" for trial in trials)
            settings = " ".join(f"{key}={best[key]:.3g}" for key in (s.split("=")[0] for s in search))
            print(f"{cell:<6} {arch:<16} {default:8.4f} {best['valid_auc']:8.4f} {best['valid_auc'] - default:+7.4f} "
                  f"{len(trials):>4} ({stopped} ASHA) {seconds:8.0f}  {settings}", flush=True)


if __name__ == "__main__":
    main()
