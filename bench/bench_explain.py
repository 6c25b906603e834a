"""Speed of `histcli explain`: seconds per 1,000 genes for each method, next to one forward pass.

E116 is prepared as in bench_quality.py; a `cnn` and an `attentivechrome` are
trained for one epoch (the weights do not change the cost of an attribution).
On the same 1,000 test genes, in one process, each method's attributions are
timed against one forward pass of the model over those genes (what `predict`
pays), both batched on the chosen device. The command itself is timed once
for integrated gradients, to show what reading the store and writing the
long TSV add.

Usage: python bench/bench_explain.py [--device auto|cpu|cuda] [--threads N] [--genes 1000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MARKS, histcli, run, shared_data  # noqa: E402

METHODS = {"cnn": ["integrated-gradients", "deeplift", "gradient-shap", "saliency", "occlusion"],
           "attentivechrome": ["integrated-gradients", "saliency", "attention"]}


def prepare(env: dict, threads: list) -> None:
    e116 = shared_data("e116-10kb")
    run(histcli("prepare", "tracks", "--cell", "E116", *[f"--track={m}={e116 / f'E116.{m}.bedGraph.gz'}" for m in MARKS],
                "--genes", e116 / "genes.hg19.bed", "--expression", e116 / "E116.expression.tsv",
                "--split", e116 / "deepchrome_split.tsv", "--bin-size", 10000, "--window", 100000,
                "--drop-missing", "--overwrite", "-q"), env=env)
    for arch in METHODS:
        run(histcli("train", "--cell", "E116", "--arch", arch, "--epochs", 1, *threads, "--overwrite", "-q"), env=env)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, help="CPU threads for torch")
    parser.add_argument("--genes", type=int, default=1000)
    parser.add_argument("--keep", type=Path, help="keep the store and models in this folder (and reuse them)")
    options = parser.parse_args()
    folder = options.keep or Path(tempfile.mkdtemp(prefix="histcli-bench-explain-"))
    env = {"HISTCLI_STORE": str(folder / "store.h5"), "HISTCLI_MODELS": str(folder / "models")}
    threads = ["--threads", options.threads] if options.threads else []
    if not (folder / "models" / "attentivechrome" / "E116").exists():
        prepare(env, threads)

    import numpy as np
    import torch

    from histcli.evaluation import predict_probabilities
    from histcli.explanation import Explainer, explain_genes, prepare_cell
    from histcli.registry import Registry
    from histcli.store import Store
    from histcli.training import resolve_device

    if options.threads:
        torch.set_num_threads(options.threads)
    device = resolve_device(options.device)
    cell = Store(env["HISTCLI_STORE"]).load("E116")
    genes = list(np.asarray(cell.gene_ids)[cell.split_mask("test")][: options.genes])
    print(f"device {device}, {torch.get_num_threads()} CPU threads, {len(genes)} E116 test genes x 20 bins x 5 marks")
    print(f"{'model':<16} {'method':<21} {'s / 1,000 genes':>15} {'forward (same run)':>19} {'ratio':>7}")
    for arch, methods in METHODS.items():
        entry = Registry(env["HISTCLI_MODELS"]).get(arch, "E116")
        chosen = prepare_cell(entry, cell, "zeros", split=None, genes=genes)
        module = entry.build_module(device)
        for method in methods:
            explainer = Explainer(entry, method, chosen.baseline, device=device, module=module)
            explain_genes(explainer, dataclasses.replace(chosen, inputs=chosen.inputs[:8], labels=None,
                                                         gene_ids=chosen.gene_ids[:8]))  # warm-up
            # The forward pass is short and the machine shared: the median of five.
            forward = statistics.median(
                _timed(lambda entry=entry, chosen=chosen, module=module:
                       predict_probabilities(entry, chosen.inputs, device, module), device) for _ in range(5))
            seconds = _timed(lambda explainer=explainer, chosen=chosen: explain_genes(explainer, chosen), device)
            per_1000 = 1000 / len(genes)
            print(f"{arch:<16} {method:<21} {seconds * per_1000:15.3f} {forward * per_1000:19.4f} "
                  f"{seconds / forward:6.0f}x", flush=True)
    genes_file = folder / "genes.txt"
    genes_file.write_text("\n".join(genes) + "\n")
    wall, _ = run(histcli("explain", "cnn", "--cell", "E116", "--genes", genes_file, "--device", device, *threads,
                          "-o", folder / "explain.tsv", "-q"), env=env)
    print(f"command, cnn, integrated-gradients, long TSV of {len(genes) * 100:,} rows: {wall:.2f} s "
          f"(start-up and loading included)")


def _timed(function, device: str) -> float:
    import torch

    start = time.perf_counter()
    function()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
