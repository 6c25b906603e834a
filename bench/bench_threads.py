"""torch's OpenMP threads when histcli commands run side by side (xargs -P, `&` in a bash loop).

Each `histcli train` uses torch's default threads (one per core). GNU libgomp's
waiting threads spin for 300,000 rounds before they sleep, so two processes on
the same cores burn each other's time slices. The command line sets a short
spin (GOMP_SPINCOUNT=1000) unless the user set one; the baseline, in the same
run, is libgomp's own default, passed explicitly.

1. Two `train --arch crnn` on Cell1 side by side (as the README's `xargs -P 2`
   recipe runs them), default threads: wall time of the pair.
2. One `train` alone (E116 cnn and crnn, Cell1 crnn, and the CRNN of `histcli
   demo`: a simulated 1,000-gene cell, 20 bins, batches of 32): what the short
   spin costs a single process. Small batches pay most: their many tiny
   operations wake sleeping threads more often.

Usage: python bench/bench_threads.py [--epochs N]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quality import prepare  # noqa: E402
from common import _environment, histcli, report, run  # noqa: E402

LIBGOMP_DEFAULT = {"GOMP_SPINCOUNT": "300000"}


def side_by_side(env: dict, folder: Path, epochs: int, spin: dict) -> float:
    """Wall seconds of two crnn trainings of Cell1 started together, each into its own registry."""
    start = time.perf_counter()
    processes = [subprocess.Popen([str(a) for a in histcli("train", "--cell", "Cell1", "--arch", "crnn", "--epochs",
                                                           epochs, "--overwrite", "-q")],
                                  env=_environment({**env, "HISTCLI_MODELS": str(folder / f"models-{index}"), **spin}),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for index in range(2)]
    for process in processes:
        _, stderr = process.communicate()
        if process.returncode != 0:
            sys.exit(stderr)
    return time.perf_counter() - start


def alone(env: dict, cell: str, arch: str, epochs: int, spin: dict) -> float:
    seconds, _ = run(histcli("train", "--cell", cell, "--arch", arch, "--epochs", epochs, "--overwrite", "-q"),
                     env={**env, **spin})
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="histcli-bench-threads-") as temp:
        folder = Path(temp)
        env = {"HISTCLI_STORE": str(folder / "store.h5"), "HISTCLI_MODELS": str(folder / "models")}
        prepare(env)
        run(histcli("prepare", "simulate", "--cells", 1, "--genes", 1000, "--bins", 20, "--prefix", "demo", "-q"),
            env=env)
        # Interleaved, so that a slow spell of the machine falls on both.
        ours, baseline = [], []
        for _ in range(2):
            ours.append(side_by_side(env, folder, args.epochs, {}))
            baseline.append(side_by_side(env, folder, args.epochs, LIBGOMP_DEFAULT))
        report(f"two crnn trainings side by side, {args.epochs} epochs", min(ours), min(baseline),
               goal="well below 1")
        for cell, arch, epochs in (("E116", "cnn", 3), ("E116", "crnn", 3), ("Cell1", "crnn", 3), ("demo01", "crnn", 60)):
            ours, baseline = [], []
            for _ in range(3):
                ours.append(alone(env, cell, arch, epochs, {}))
                baseline.append(alone(env, cell, arch, epochs, LIBGOMP_DEFAULT))
            report(f"one {arch} training alone, {cell}, {epochs} epochs", min(ours), min(baseline), goal="about 1")


if __name__ == "__main__":
    main()
