"""Write the store-format fixture of the current format version.

Run once per store format version and commit the output; test_store.py reads
the committed files with hard-coded expectations, so later format changes must
keep old stores readable. Do not regenerate an existing version's files.
Format 1.0 was one file, tests/data/golden_store_v1.0.h5; from 2.0 on a store is
a link file and a folder of cell files, so the fixture is the folder
tests/data/golden_store_v<version>/ holding store.h5 and store.h5.cells/.
"""

from pathlib import Path

import numpy as np

from histcli.store import FORMAT_VERSION, SPLIT_CODES, CellData, SourceFile, Store


def main() -> None:
    folder = Path(__file__).with_name(f"golden_store_v{FORMAT_VERSION}")
    out = folder / "store.h5"
    counts = np.arange(4 * 3 * 2, dtype=np.int32).reshape(4, 3, 2)
    labelled = CellData(
        name="E000",
        counts=counts,
        gene_ids=np.array(["ENSG00000000003_TSPAN6", "ENSG00000000005_TNMD", "g3", "g4"], dtype=object),
        marks=("H3K4me3", "H3K27me3"),
        bin_size=100,
        window=150,
        tss_offset=150,
        split=np.array([SPLIT_CODES[s] for s in ("train", "valid", "test", "none")], dtype=np.uint8),
        expression=np.array([0.5, 7.25, 3.0, 0.0]),
        labels=np.array([0, 1, 1, 0], dtype=np.int8),
        sources=[SourceFile("/data/E000.csv", "0" * 64)],
        attrs={"source_format": "golden", "label_threshold": 1.75, "label_rule": "expression > 1.75"},
        coordinates={
            "chrom": np.array(["chr1", "chr1", "chr2", "chrX"], dtype=object),
            "tss": np.array([1000, 5000, 42, 7], dtype=np.int64),
            "strand": np.array(["+", "-", "+", "-"], dtype=object),
        },
    )
    unlabelled = CellData(
        name="float-cell",
        counts=np.array([[[0.5], [1.25]], [[2.0], [0.0]]], dtype=np.float32),
        gene_ids=np.array(["a", "b"], dtype=object),
        marks=("H3K36me3",),
        bin_size=10000,
        window=10000,
        tss_offset=10000,
        split=np.zeros(2, dtype=np.uint8),
        attrs={"source_format": "golden"},
    )
    if folder.exists():
        raise SystemExit(f"{folder} exists; golden files are never regenerated")
    Store(out).write([labelled, unlabelled])


if __name__ == "__main__":
    main()
