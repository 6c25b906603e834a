"""What drives the CNN's predictions on E116: the README's explain table and heatmap.

E116 is prepared as in bench_quality.py and `cnn` is trained with its defaults
(seed 0, `--threads 1`, a few minutes). `histcli explain` then attributes the
test genes' logits by integrated gradients against an empty (zero-read)
baseline; the per-mark table and the heatmap (docs/explain-e116.png) go to the
README. The signed gradient (`--method saliency`) is printed beside it: it
says which way a little more of a mark moves the prediction, whatever the
baseline. Finally each expectation from the literature is checked against
both: H3K4me3 at the TSS and H3K36me3 drive predictions up, H3K27me3 and
H3K9me3 down; and, without any model, how each mark's reads correlate with
the label.

Usage: python bench/explain_e116.py [--keep DIR] [--plot docs/explain-e116.png]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MARKS, REPO, histcli, run, shared_data  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keep", type=Path, help="keep the store and models in this folder (and reuse them)")
    parser.add_argument("--plot", type=Path, default=REPO / "docs" / "explain-e116.png")
    options = parser.parse_args()
    folder = options.keep or Path(tempfile.mkdtemp(prefix="histcli-explain-e116-"))
    env = {"HISTCLI_STORE": str(folder / "store.h5"), "HISTCLI_MODELS": str(folder / "models")}
    if not (folder / "models" / "cnn" / "E116").exists():
        e116 = shared_data("e116-10kb")
        run(histcli("prepare", "tracks", "--cell", "E116",
                    *[f"--track={m}={e116 / f'E116.{m}.bedGraph.gz'}" for m in MARKS],
                    "--genes", e116 / "genes.hg19.bed", "--expression", e116 / "E116.expression.tsv",
                    "--split", e116 / "deepchrome_split.tsv", "--bin-size", 10000, "--window", 100000,
                    "--drop-missing", "--overwrite", "-q"), env=env)
        run(histcli("train", "--cell", "E116", "--arch", "cnn", "--threads", 1, "--overwrite", "-q"), env=env)
    options.plot.parent.mkdir(parents=True, exist_ok=True)
    _, text = run(histcli("explain", "cnn", "--cell", "E116", "--summary", "-f", "json", "--threads", 1,
                          "--plot", options.plot, "-q"), env=env)
    ig = json.loads(text)
    _, text = run(histcli("explain", "cnn", "--cell", "E116", "--method", "saliency", "--summary", "-f", "json",
                          "--threads", 1, "-q"), env=env)
    gradient = json.loads(text)

    print("cnn on E116 test genes; integrated gradients against zero reads (IG), and the mean signed gradient")
    print(f"{'group':<6} {'mark':<9} {'IG total':>9} {'IG |total|':>10} {'rank':>4} {'gradient':>9}")
    gradient_totals = {(r["group"], r["mark"]): r["total_attribution"] for r in gradient["marks"]}
    for row in ig["marks"]:
        print(f"{row['group']:<6} {row['mark']:<9} {row['total_attribution']:9.3f} "
              f"{row['total_abs_attribution']:10.3f} {row['rank']:4d} "
              f"{gradient_totals[(row['group'], row['mark'])]:9.3f}")

    def total(summary, mark, group="all"):
        return next(r["total_attribution"] for r in summary["marks"] if r["group"] == group and r["mark"] == mark)

    def around_tss(summary, mark, group="all"):
        return sum(r["mean_attribution"] for r in summary["bins"]
                   if r["group"] == group and r["mark"] == mark and abs(r["position"]) <= 10000)

    print("\nexpectation                              IG      gradient  agrees")
    checks = [("H3K4me3 within 10 kb of the TSS: up", around_tss(ig, "H3K4me3"), around_tss(gradient, "H3K4me3"), 1),
              ("H3K36me3 over the window: up", total(ig, "H3K36me3"), total(gradient, "H3K36me3"), 1),
              ("H3K27me3 over the window: down", total(ig, "H3K27me3"), total(gradient, "H3K27me3"), -1),
              ("H3K9me3 over the window: down", total(ig, "H3K9me3"), total(gradient, "H3K9me3"), -1)]
    for label, by_ig, by_gradient, sign in checks:
        agrees = "yes" if by_ig * sign > 0 and by_gradient * sign > 0 else "NO"
        print(f"{label:<38} {by_ig:8.3f} {by_gradient:9.3f}  {agrees}")
    # The data without a model: Spearman correlation of each mark's log reads over the window with the label.
    import numpy as np
    from scipy.stats import spearmanr

    from histcli.store import Store

    cell = Store(env["HISTCLI_STORE"]).load("E116", splits=["test"])
    reads = np.log1p(cell.counts_array().astype(np.float64)).sum(1)
    print("\nSpearman correlation with the label of log1p reads summed over the window (test genes):")
    print("  " + ", ".join(f"{mark} {spearmanr(reads[:, m], cell.labels)[0]:+.3f}" for m, mark in enumerate(cell.marks)))
    print(f"\nheatmap: {options.plot}")


if __name__ == "__main__":
    main()
