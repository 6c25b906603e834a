"""Speed and memory of `histcli prepare` against plain pandas baselines, measured in the same run.

1. One full DeepChrome cell (19,802 genes x 100 bins, ~2 M CSV rows, simulated
   in that layout): `histcli prepare deepchrome` (goal: at most 2 s) against
   pandas read_csv + reshape + h5py write without any checks, both timed in a
   fresh interpreter after their imports (a first call, as every command is:
   the same pandas code takes about half as long when called again in a warm
   process), and the command with its start-up too.
2. Peak memory of that prepare as a multiple of the cell's final uncompressed
   counts (int32, 38 MiB), in total and above what the interpreter with
   numpy, pandas and h5py imported holds before reading anything (goal: at
   most 3x; the imports alone are about twice the counts).
3. The E116 tracks (five 10-kb bedGraphs, 19,802 genes, 100 kb each side):
   `histcli prepare tracks` (goal: at most 5 s) against pandas read_csv +
   merge_asof lookups of each bin's start (no proportional overlap, no checks),
   in a fresh interpreter after its imports.
4. Many cells, one expression matrix: `histcli prepare deepchrome` of 56 cells
   (the DeepChrome toy's genes, labelled by each Roadmap column's median rule)
   with `--expression` the 56-column Roadmap matrix, which is read once for
   all cells, against reading it once per cell (read_expression and the
   file's digest for each cell, as prepare did before), both in this process;
   and the command against the same command without --expression plus that
   per-cell reading.

Usage: python bench/bench_prepare.py [expression]   (expression: section 4 only)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MARKS, cli_code, cli_seconds, fresh_seconds, histcli, peak_rss_mib, report, run, shared_data, timed  # noqa: E402

DEEPCHROME_COLUMNS = ["gene", "bin", "H3K27me3", "H3K36me3", "H3K4me1", "H3K4me3", "H3K9me3", "label"]


def write_deepchrome_cell(folder: Path, n_genes: int = 19802, n_bins: int = 100) -> int:
    """A simulated cell written in the DeepChrome CSV layout; returns the number of CSV rows."""
    from histcli.sources.simulate import simulate_cells

    (cell,) = simulate_cells(1, n_genes, n_bins, seed=7)
    counts = np.concatenate(cell.counts)
    folder.mkdir(parents=True)
    rows = 0
    for code, split in ((1, "train"), (2, "valid"), (3, "test")):
        genes = np.flatnonzero(cell.split == code)
        frame = pd.DataFrame({"gene": np.repeat([f"{g:06d}" for g in genes], n_bins),
                              "bin": np.tile(np.arange(1, n_bins + 1), len(genes))})
        block = counts[genes].reshape(-1, len(cell.marks))
        for mark in DEEPCHROME_COLUMNS[2:7]:
            frame[mark] = block[:, cell.marks.index(mark)]
        frame["label"] = np.repeat(cell.labels[genes], n_bins)
        frame.to_csv(folder / f"{split}.csv", header=False, index=False)
        rows += len(frame)
    return rows


def pandas_deepchrome(folder: Path, out: Path) -> None:
    frames = [pd.read_csv(folder / f"{s}.csv", header=None, names=DEEPCHROME_COLUMNS, dtype={"gene": str})
              for s in ("train", "valid", "test")]
    frame = pd.concat(frames, ignore_index=True)
    n_bins = int(frame["bin"].max())
    counts = frame[DEEPCHROME_COLUMNS[2:7]].to_numpy().reshape(-1, n_bins, 5)
    labels = frame["label"].to_numpy()[::n_bins]
    with h5py.File(out, "w") as handle:
        handle.create_dataset("counts", data=counts.astype(np.int32), chunks=(256, n_bins, 5),
                              compression="gzip", shuffle=True)
        handle.create_dataset("labels", data=labels)


def pandas_tracks(data: Path, out: Path, bin_size: int = 10000, window: int = 100000) -> None:
    genes = pd.read_csv(data / "genes.hg19.bed", sep="\t", comment="#", header=None,
                        names=["chrom", "start", "end", "name"])
    genes["tss"] = genes["start"] + 10000
    offsets = np.arange(-window, window, bin_size)
    bins = genes.loc[genes.index.repeat(len(offsets)), ["chrom", "tss"]].reset_index(drop=True)
    bins["pos"] = bins["tss"].to_numpy() + np.tile(offsets, len(genes))
    bins = bins.sort_values("pos")
    values = {}
    for mark in MARKS:
        track = pd.read_csv(data / f"E116.{mark}.bedGraph.gz", sep="\t", header=None,
                            names=["chrom", "pos", "end", mark]).sort_values("pos")
        merged = pd.merge_asof(bins, track[["chrom", "pos", mark]], on="pos", by="chrom")
        values[mark] = merged.sort_index()[mark].fillna(0).to_numpy()
    counts = np.stack([values[m] for m in MARKS], axis=1).reshape(len(genes), len(offsets), 5)
    with h5py.File(out, "w") as handle:
        handle.create_dataset("counts", data=counts.astype(np.float32), compression="gzip", shuffle=True)


def write_roadmap_cells(roadmap: pd.DataFrame, toy: Path, folder: Path) -> list[str]:
    """One DeepChrome cell per Roadmap column, each the toy's genes and counts labelled by the median rule
    of its own column (so that prepare --expression accepts its labels); returns the cell names."""
    splits = {split: pd.read_csv(toy / f"{split}.csv", header=None, dtype={0: str})
              for split in ("train", "valid", "test")}
    for cell in roadmap.columns:
        above = (roadmap[cell] > roadmap[cell].median()).groupby(level=0).first()
        (folder / cell / "classification").mkdir(parents=True)
        for split, rows in splits.items():
            rows[7] = [int(above[f"ENSG{int(gene):011d}"]) for gene in rows[0]]
            rows.to_csv(folder / cell / "classification" / f"{split}.csv", header=False, index=False)
    return list(roadmap.columns)


def bench_expression_matrix(tmp: Path) -> None:
    from histcli.sources.expression import ExpressionFile, read_expression
    from histcli.store import SourceFile

    matrix = shared_data("roadmap-rnaseq") / "roadmap.rpkm.56cells.tsv.gz"
    roadmap = pd.read_csv(matrix, sep="\t", index_col=0)
    cells = write_roadmap_cells(roadmap, shared_data("deepchrome-toy"), tmp / "roadmap-cells")
    print(f"{len(cells)} DeepChrome cells, expression from {matrix.name} ({len(roadmap):,} rows)", flush=True)

    def per_cell() -> None:  # what prepare did before: a read and a digest of the matrix for each cell
        for cell in cells:
            read_expression(matrix, cell=cell)
            SourceFile.of(matrix)

    def once() -> None:
        expression = ExpressionFile(matrix)
        expression.columns(column=None, cells=cells)
        for cell in cells:
            expression.table(cell=cell)
            expression.source  # noqa: B018 (its digest, as each cell records it)

    # Interleaved, best of three each: the load of a shared machine changes within seconds.
    per_cell_times, once_times = [], []
    for _ in range(3):
        per_cell_times.append(timed(per_cell, repeat=1)[0])
        once_times.append(timed(once, repeat=1)[0])
    baseline = min(per_cell_times)
    report(f"expression for {len(cells)} cells, one read", min(once_times), baseline, goal="read once")

    walls, without = [], []
    for i in range(3):
        walls.append(run(histcli("prepare", "deepchrome", tmp / "roadmap-cells", "--expression", matrix,
                                 "--store", tmp / f"roadmap{i}.h5", "-q"))[0])
        without.append(run(histcli("prepare", "deepchrome", tmp / "roadmap-cells", "--store",
                                   tmp / f"plain{i}.h5", "-q"))[0])
    report(f"prepare deepchrome, {len(cells)} cells, --expression", min(walls), min(without) + baseline)
    print(f"  (the same without --expression: {min(without):.3f} s; the baseline adds the per-cell reading)",
          flush=True)


def main() -> None:
    if sys.argv[1:] == ["expression"]:
        with tempfile.TemporaryDirectory() as tmp:
            bench_expression_matrix(Path(tmp))
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = tmp / "E000"
        rows = write_deepchrome_cell(folder)
        print(f"DeepChrome layout: {rows:,} CSV rows in {folder}", flush=True)

        # Interleaved, best of five each: the load of a shared machine changes within seconds.
        baselines, walls, works = [], [], []
        for i in range(5):
            baselines.append(fresh_seconds("from pathlib import Path\nfrom bench_prepare import pandas_deepchrome",
                                           f"pandas_deepchrome(Path({str(folder)!r}), Path({str(tmp / f'pandas{i}.h5')!r}))"))
            walls.append(run(histcli("prepare", "deepchrome", folder, "--cell", f"E{i:03d}", "--store",
                                     tmp / f"s{i}.h5", "-q"))[0])
            # The same command timed inside an interpreter that has imported what the baseline has.
            works.append(cli_seconds("prepare", "deepchrome", folder, "--cell", f"W{i:03d}", "--store",
                                     tmp / f"w{i}.h5", "-q", imports="import pandas, h5py"))
        baseline, wall, work = min(baselines), min(walls), min(works)
        report("prepare deepchrome, one cell (command)", wall, baseline, goal="<= 2 s")
        report("  the same without interpreter start-up", work, baseline, goal="<= 1x")

        final_mib = 19802 * 100 * 5 * 4 / 2**20
        imports = peak_rss_mib("import pandas, h5py, numpy, histcli.cli.app, histcli.sources.deepchrome, "
                               "histcli.store")
        peak = peak_rss_mib(cli_code("prepare", "deepchrome", folder, "--cell", "M", "--store", tmp / "m.h5", "-q"))
        print(f"peak memory {peak:.0f} MiB; the interpreter with its imports alone {imports:.0f} MiB; "
              f"final counts {final_mib:.1f} MiB", flush=True)
        report("  peak RSS / final counts", peak / final_mib, 1.0, unit="x")
        report("  peak RSS above the imports / final counts", (peak - imports) / final_mib, 1.0, unit="x",
               goal="<= 3x")

        data = shared_data("e116-10kb")
        tracks = [f"--track={m}={data / f'E116.{m}.bedGraph.gz'}" for m in MARKS]
        baseline = min(fresh_seconds("from pathlib import Path\nfrom bench_prepare import pandas_tracks",
                                     f"pandas_tracks(Path({str(data)!r}), Path({str(tmp / f'tracks{i}.h5')!r}))")
                       for i in range(3))
        wall = min(run(histcli("prepare", "tracks", "--cell", f"E116x{i}", *tracks, "--genes",
                               data / "genes.hg19.bed", "--expression", data / "E116.expression.tsv",
                               "--split", data / "deepchrome_split.tsv", "--bin-size", 10000, "--window", 100000,
                               "--drop-missing", "--store", tmp / f"t{i}.h5", "-q"))[0] for i in range(3))
        report("prepare tracks, E116 (command)", wall, baseline, goal="<= 5 s")

        bench_expression_matrix(tmp)


if __name__ == "__main__":
    main()
