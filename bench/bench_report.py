"""`histcli report`: the README's screenshot on real data, and the size of a 56-cell page.

1. E116 and Cell1 are prepared as in bench_quality.py, `logistic` and `cnn` are
   trained on both (`--epochs 20 --threads 1`, seed 0: a quick look, not the
   README's results), and `histcli report logistic cnn --explain` is written and
   photographed by headless Chromium (docs/report-e116-cell1.png, scaled to
   half size).
2. 56 simulated cells (1,000 genes, so ~330 test genes and full 300-point
   curves) with three logistic models (one epoch each: the page's size depends
   on cells x models, not on how well they learned): the size of the report
   with --explain against the 10 MB goal, and of plotly.js, the baseline every
   page carries.

Usage: python bench/bench_report.py [--keep DIR] [--screenshot docs/report-e116-cell1.png]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quality import prepare  # noqa: E402
from common import REPO, histcli, run  # noqa: E402


def screenshot(page: Path, png: Path, width: int = 1280, height: int = 3400) -> None:
    """Headless Chromium's picture of the rendered page, then halved (PIL) to keep docs/ small."""
    from PIL import Image

    chromium = shutil.which("chromium") or sys.exit("skipped: chromium not found (apt-get install -y chromium)")
    with tempfile.TemporaryDirectory(prefix="histcli-chromium-") as profile:
        full = Path(profile) / "full.png"
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--user-data-dir={profile}", f"--window-size={width},{height}", "--virtual-time-budget=10000",
                        f"--screenshot={full}", page.resolve().as_uri()], check=True, capture_output=True, timeout=180)
        image = Image.open(full).convert("RGB")
        image = image.resize((width // 2, height // 2), Image.LANCZOS)
        image = image.quantize(colors=256, method=Image.MEDIANCUT)
        png.parent.mkdir(parents=True, exist_ok=True)
        image.save(png, optimize=True)


def real_data(folder: Path, png: Path) -> None:
    env = {"HISTCLI_STORE": str(folder / "store.h5"), "HISTCLI_MODELS": str(folder / "models")}
    prepare(env)
    for cell in ("E116", "Cell1"):
        for arch in ("logistic", "cnn"):
            seconds, _ = run(histcli("train", "--cell", cell, "--arch", arch, "--epochs", 20, "--threads", 1,
                                     "--overwrite", "-q"), env=env)
            print(f"trained {arch} on {cell} (20 epochs): {seconds:.0f} s")
    page = folder / "report-e116-cell1.html"
    seconds, _ = run(histcli("report", "logistic", "cnn", "--explain", "--title", "logistic vs cnn on E116 and Cell1",
                             "-o", page, "--device", "cpu", "-q"), env={**env, "OMP_NUM_THREADS": "1"})
    print(f"report with --explain (saliency, 500 genes a cell): {seconds:.1f} s, {page.stat().st_size / 1e6:.2f} MB")
    screenshot(page, png)
    print(f"screenshot: {png} ({png.stat().st_size / 1e3:.0f} kB)")


def size_at_scale(folder: Path) -> None:
    from plotly.offline import get_plotlyjs

    env = {"HISTCLI_STORE": str(folder / "sim.h5"), "HISTCLI_MODELS": str(folder / "sim-models")}
    run(histcli("prepare", "simulate", "--cells", 56, "--genes", 1000, "--bins", 20, "--seed", 1, "-q"), env=env)
    names = ("logistic", "logistic-s1", "logistic-s2")
    for seed, name in enumerate(names):
        run(histcli("train", "--all-cells", "--arch", "logistic", "--name", name, "--seed", seed, "--epochs", 1,
                    "--threads", 1, "-q"), env=env)
    page = folder / "report-56.html"
    start = time.perf_counter()
    run(histcli("report", *names, "--explain", "-o", page, "--device", "cpu", "-q"), env=env)
    seconds = time.perf_counter() - start
    size, baseline = page.stat().st_size / 1e6, len(get_plotlyjs().encode()) / 1e6
    print(f"56 cells x 3 models, --explain: {size:.2f} MB in {seconds:.1f} s; plotly.js alone {baseline:.2f} MB "
          f"({size / baseline:.2f}x); goal < 10 MB: {'met' if size < 10 else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keep", type=Path, help="Keep the stores, models and pages in this folder.")
    parser.add_argument("--screenshot", type=Path, default=REPO / "docs" / "report-e116-cell1.png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        folder = args.keep or Path(temp)
        folder.mkdir(parents=True, exist_ok=True)
        real_data(folder, args.screenshot)
        size_at_scale(folder)


if __name__ == "__main__":
    main()
