"""The DeepChrome CSV layout (Singh et al. 2016), as published for 56 REMC cells.

``<cell>/classification/{train,valid,test}.csv``, or one folder holding the
three files; no header; rows ``gene_id,bin,H3K27me3,H3K36me3,H3K4me1,H3K4me3,
H3K9me3,label`` with one row per bin (100 bins of 100 bp around the TSS).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from histcli.errors import InputError, SettingError, UsageError
from histcli.marks import DEEPCHROME_ORDER
from histcli.sources.common import CountBlocks, reads_inputs_once
from histcli.sources.rows import Field, GeneBlocks, check_unique_genes, read_chunks
from histcli.store import SPLIT_CODES, CellData, SourceFile, check_cell_name

SPLIT_NAMES = ("train", "valid", "test")
DEFAULT_BIN_SIZE = 100


def _split_files(folder: Path) -> dict[str, Path]:
    found = {}
    for split in SPLIT_NAMES:
        for name in (f"{split}.csv", f"{split}.csv.gz"):
            if (folder / name).exists():  # a folder in its place is found, and named as a folder when read
                found[split] = folder / name
                break
    return found


def _complete(folder: Path, found: dict[str, Path]) -> dict[str, Path]:
    """The layout has all three splits; a missing one is an error rather than an empty split."""
    missing = [split for split in SPLIT_NAMES if split not in found]
    if missing:
        raise InputError(folder / f"{missing[0]}.csv",
                         f"no such file; the DeepChrome layout has train.csv, valid.csv and test.csv "
                         f"(missing: {', '.join(f'{m}.csv' for m in missing)})")
    return found


def find_cells(path: Path, cells: list[str] | None) -> list[tuple[str, dict[str, Path]]]:
    """Locate the split files of each cell: (cell name, {split: file})."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(path, "no such folder" if not path.exists() else "expected a folder")
    direct = _split_files(path)
    if direct:
        if not cells or len(cells) != 1:
            raise SettingError("cell", ",".join(cells or []) or None,
                               f"{path} holds one cell's train/valid/test files: name exactly one cell for it")
        return [(check_cell_name(cells[0]), _complete(path, direct))]
    available = {
        sub.name: _split_files(sub / "classification")
        for sub in sorted(path.iterdir())
        if sub.is_dir() and _split_files(sub / "classification")
    }
    if not available:
        raise InputError(
            path,
            "found neither train.csv/valid.csv/test.csv nor <cell>/classification/{train,valid,test}.csv",
        )
    if cells:
        missing = [cell for cell in cells if cell not in available]
        if missing:
            raise UsageError(
                f"{path}: no cell {missing[0]!r} (cells there: {', '.join(sorted(available))})"
            )
        names = list(dict.fromkeys(cells))
    else:
        names = sorted(available)
    return [(check_cell_name(name), _complete(path / name / "classification", available[name])) for name in names]


@reads_inputs_once("files")
def read_cell(name: str, files: dict[str, Path], *, marks: tuple[str, ...] = DEEPCHROME_ORDER,
              bin_size: int = DEFAULT_BIN_SIZE) -> CellData:
    """Parse and check one cell's split files into a CellData. A file may be a pipe: it is read once (see
    ``histcli.sources.common.reads_inputs_once``)."""
    schema = [Field("gene_id", "id"), Field("bin", "bin")]
    schema += [Field(mark, "count") for mark in marks] + [Field("label", "label")]
    mark_columns = list(marks)
    n_bins = None
    counts = CountBlocks()
    parts = []
    sources = SourceFile.hashing(files.values())
    for split, path in files.items():
        blocks = GeneBlocks(path, schema, counts=counts)
        for first_line, chunk in read_chunks(path, schema):
            blocks.add(
                chunk["gene_id"].to_numpy(dtype=object),
                chunk["bin"].to_numpy(),
                chunk[mark_columns].to_numpy(),
                chunk["label"].to_numpy(),
                first_line,
            )
        blocks.finish()
        if n_bins is None:
            n_bins = blocks.n_bins
        elif blocks.n_bins != n_bins:
            raise InputError(path, f"genes have {blocks.n_bins} bins here but {n_bins} in the earlier split files")
        parts.append((split, path, blocks.result()))
    check_unique_genes([(path, genes, lines) for _, path, (genes, _, lines) in parts])
    return CellData(
        name=name,
        counts=counts.blocks,
        gene_ids=np.concatenate([genes for _, _, (genes, _, _) in parts]),
        marks=tuple(marks),
        bin_size=bin_size,
        window=n_bins * bin_size // 2,
        tss_offset=n_bins * bin_size // 2,
        split=np.concatenate(
            [np.full(len(genes), SPLIT_CODES[split], dtype=np.uint8) for split, _, (genes, _, _) in parts]
        ),
        labels=np.concatenate([labels for _, _, (_, labels, _) in parts]),
        sources=sources(),
        attrs={"source_format": "deepchrome", "label_rule": "labels as given in the DeepChrome files"},
    )
