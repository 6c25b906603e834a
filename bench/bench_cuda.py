"""`histcli train` with its defaults on a CUDA device: best epoch, validation and test metric, wall time.

The same commands as bench_quality.py and bench_regression.py (nothing but the seed, then `histcli
evaluate` on the test genes), run with `--device cuda`, to set beside the README's CPU tables: training
on a GPU must reach what it reaches on the CPU. Speed against the CPU and against an ordinary PyTorch
loop on the GPU is bench_train.py's (`--device cuda`).

Usage: python bench/bench_cuda.py [--keep DIR] [--jobs E116:crnn,Cell1:crnn,E116:cnn:regression] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quality import Runner, prepare  # noqa: E402
from bench_regression import RegressionRunner  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keep", type=Path, help="keep the store, models and results here (and resume)")
    parser.add_argument("--jobs", default="E116:crnn,Cell1:crnn,E116:cnn:regression",
                        help="CELL:ARCH[:regression], comma-separated, run in this order")
    parser.add_argument("--seed", default="0")
    options = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        sys.exit("skipped: no CUDA device")
    folder = options.keep or Path(tempfile.mkdtemp(prefix="histcli-cuda-"))
    folder.mkdir(parents=True, exist_ok=True)
    classifiers = Runner(folder, threads=1, log_name="cuda.jsonl", device="cuda")
    regressors = RegressionRunner(folder, threads=1, log_name="cuda-regression.jsonl", device="cuda")
    if not (folder / "store.h5").exists():
        prepare(classifiers.env)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, defaults, seed {options.seed}", flush=True)
    for job in options.jobs.split(","):
        cell, arch, *task = job.split(":")
        if task == ["regression"]:
            regressors((cell, arch, options.seed))
        else:
            classifiers((cell, arch, "default", options.seed))


if __name__ == "__main__":
    main()
