"""Store writes that do not grow with the store, measured in one run.

56 DeepChrome-size simulated cells (19,802 genes split 6,601/6,601/6,600, 100
bins, 5 marks) prepared into one store by one `histcli prepare simulate`
command each, the way a bash loop over cells does it, against one command
preparing all 56 into another store (run before and after the loop, the
better of the two counts). Two ratios:

- the loop's total time over the single command's (goal: at most 1.1x);
- the last write's time over the first's (goal: at most 1.1x): a write must
  not cost more because the store already holds many cells. Single commands
  vary by several percent on a shared machine, so the medians of the first
  and last five writes are printed beside it.

Usage: python bench/bench_store_writes.py [--small] [--cells N] [--genes N] [--bins N]
(--small: 12 cells of 3,000 genes x 50 bins, for a quick check).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import histcli, report, run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="12 cells of 3,000 genes x 50 bins")
    parser.add_argument("--cells", type=int)
    parser.add_argument("--genes", type=int)
    parser.add_argument("--bins", type=int)
    args = parser.parse_args()
    n_cells = args.cells or (12 if args.small else 56)
    n_genes = args.genes or (3000 if args.small else 19802)
    n_bins = args.bins or (50 if args.small else 100)
    size = ["--genes", n_genes, "--bins", n_bins]
    print(f"{n_cells} cells of {n_genes:,} genes x {n_bins} bins x 5 marks", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        def prepare_all(store: Path) -> float:
            return run(histcli("prepare", "simulate", "--cells", n_cells, *size, "--prefix", "c",
                               "--store", store, "-q"))[0]

        # The single command before and after the loop (best of the two): the load of a shared
        # machine drifts over the minutes the loop takes.
        singles = [prepare_all(tmp / "all-before.h5")]
        each = []
        for index in range(1, n_cells + 1):
            wall, _ = run(histcli("prepare", "simulate", "--cells", 1, *size, "--seed", index,
                                  "--prefix", f"c{index:03d}-", "--store", tmp / "each.h5", "-q"))
            each.append(wall)
            print(f"  write {index:3d}: {wall:.3f} s", flush=True)
        singles.append(prepare_all(tmp / "all-after.h5"))
        single = min(singles)
        # What every command pays whatever it writes: interpreter, imports, a 3-gene cell.
        startup = statistics.median(
            run(histcli("prepare", "simulate", "--cells", 1, "--genes", 3, "--bins", 1, "--prefix", f"t{i}-",
                        "--store", tmp / "tiny.h5", "-q"))[0] for i in range(5))
        # What any Python command that writes HDF5 pays before its first line of work.
        floor = statistics.median(run([sys.executable, "-c", "import numpy, h5py"])[0] for _ in range(5))

    report(f"{n_cells} commands of one cell each (total)", sum(each), single, goal="<= 1.1x")
    report("  the same without start-up (a 3-gene command)", sum(each) - n_cells * startup, single - startup)
    report(f"  floor: the single command + {n_cells} x (Python, numpy, h5py)", single + n_cells * floor, single)
    report("  start-up: a 3-gene command against Python + numpy + h5py", startup, floor)
    report(f"write {n_cells} against write 1", each[-1], each[0], goal="<= 1.1x")
    head, tail = each[:5], each[-5:]
    report(f"median of the last {len(tail)} writes against the first {len(head)}",
           statistics.median(tail), statistics.median(head))


if __name__ == "__main__":
    main()
