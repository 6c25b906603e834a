"""`histcli sweep` against a bash loop of `histcli train` over the same trials.

12 simulated cells (2,000 genes, 100 bins) x crnn, a fixed number of epochs
(patience as long as the run, so no trial stops early). The loop is what a
study ran before sweep: one process per trial, each paying torch's start-up
and training with torch's default threads. The sweep runs the same trials on
an embedded Ray instance, one thread per trial. Both are timed from the shell
in the same run; the goal is a ratio of at most 0.7 on this 2-core machine.
A second baseline, the loop with one torch thread per run, separates what Ray's
two trials at a time buy from what torch's two threads lose on so small a model.

Usage: python bench/bench_sweep.py [--cells 12] [--genes 2000] [--bins 100] [--epochs 4]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import histcli, report, run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cells", type=int, default=12)
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--bins", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=4)
    options = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="histcli-bench-sweep-"))
    store = folder / "store.h5"
    env = {"HISTCLI_STORE": str(store)}
    run(histcli("prepare", "simulate", "--cells", options.cells, "--genes", options.genes, "--bins", options.bins,
                "--seed", 1, "-q"), env=env)
    budget = f"--epochs {options.epochs} --patience {options.epochs}"
    python = " ".join(histcli())


    def loop(threads: str) -> float:
        script = (f"for cell in $({python} store list -f tsv | cut -f1 | tail -n +2); do "
                  f"{python} train --cell \"$cell\" --arch crnn {budget} {threads} --device cpu -q > /dev/null; done")
        seconds, _ = run(["bash", "-c", script], env={**env, "HISTCLI_MODELS": str(folder / f"loop{threads}")})
        return seconds

    sweep_seconds, out = run(["bash", "-c", f"{python} sweep --all-cells --arch crnn {budget} -q -f json"],
                             env={**env, "HISTCLI_MODELS": str(folder / "sweep")})
    rows = json.loads(out)
    assert len(rows) == options.cells and all(row["status"] == "trained" for row in rows), rows
    loop_seconds = loop("")
    loop_one_thread = loop("--threads 1")
    print(f"{options.cells} cells x crnn, {options.epochs} epochs: sweep {sweep_seconds:.1f} s, bash loop of train "
          f"{loop_seconds:.1f} s (torch's threads), {loop_one_thread:.1f} s (--threads 1)")
    report("sweep vs a bash loop of train", sweep_seconds, loop_seconds, goal="<= 0.7")
    report("sweep vs the loop with --threads 1", sweep_seconds, loop_one_thread)
    print(f"sweep: {sum(row['seconds'] for row in rows):.1f} s of training summed over its trials")


if __name__ == "__main__":
    main()
