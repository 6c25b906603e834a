"""The AttentiveChrome / DeepDiff CSV layout.

``<cell>.{train,valid,test}.csv``: no header, rows ``<ENSG>_<SYMBOL>_<bin>,``
followed by five marks in the order H3K4me1, H3K4me3, H3K9me3, H3K27me3,
H3K36me3. ``<cell>.expr.csv`` holds ``ENSG,value``; a gene's label is 1 when
its value is above the median over every gene in that file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from histcli.errors import InputError, MissingGenesError
from histcli.marks import DEEPDIFF_ORDER
from histcli.sources.common import (
    CountBlocks,
    ensembl_id,
    labels_from_expression,
    read_expression_table,
)
from histcli.sources.rows import Field, GeneBlocks, check_unique_genes, read_chunks
from histcli.store import SPLIT_CODES, CellData, SourceFile, check_cell_name

SPLIT_NAMES = ("train", "valid", "test")
DEFAULT_BIN_SIZE = 100


def find_files(folder: Path, prefix: str) -> tuple[dict[str, Path], Path]:
    """The split files and the expression file of cell ``prefix`` in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "no such folder" if not folder.exists() else "expected a folder")
    splits = {}
    for split in SPLIT_NAMES:
        for name in (f"{prefix}.{split}.csv", f"{prefix}.{split}.csv.gz"):
            if (folder / name).is_file():
                splits[split] = folder / name
                break
    expression = next(
        (folder / name for name in (f"{prefix}.expr.csv", f"{prefix}.expr.csv.gz") if (folder / name).is_file()),
        None,
    )
    if not splits:
        others = sorted({p.name.split(".")[0] for p in folder.glob("*.train.csv*")})
        hint = f" (cells there: {', '.join(others)})" if others else ""
        raise InputError(folder, f"no {prefix}.train.csv, {prefix}.valid.csv or {prefix}.test.csv{hint}")
    missing = [split for split in SPLIT_NAMES if split not in splits]
    if missing:
        raise InputError(folder / f"{prefix}.{missing[0]}.csv",
                         f"no such file; the layout has {prefix}.train.csv, .valid.csv and .test.csv")
    if expression is None:
        raise InputError(folder / f"{prefix}.expr.csv", "no such file; the labels come from it")
    return splits, expression


def read_cell(name: str, splits: dict[str, Path], expression_path: Path, *,
              marks: tuple[str, ...] = DEEPDIFF_ORDER, bin_size: int = DEFAULT_BIN_SIZE,
              drop_missing: bool = False, notes: list[str] | None = None) -> CellData:
    check_cell_name(name)
    schema = [Field("gene_bin", "id_bin")] + [Field(mark, "count") for mark in marks]
    mark_columns = list(marks)
    counts = CountBlocks()
    n_bins = None
    parts = []
    for split, path in splits.items():
        blocks = GeneBlocks(path, schema, counts=counts)
        for first_line, chunk in read_chunks(path, schema):
            gene_bin = chunk["gene_bin"].str.rpartition("_")
            valid = (gene_bin[2].str.fullmatch("[0-9]+") & (gene_bin[0] != "")).to_numpy()
            if not valid.all():
                blocks.fail_at(first_line + int(np.argmax(~valid)))
            bins = gene_bin[2].astype(np.float64).to_numpy()
            blocks.add(gene_bin[0].to_numpy(dtype=object), bins, chunk[mark_columns].to_numpy(), None, first_line)
        blocks.finish()
        if n_bins is None:
            n_bins = blocks.n_bins
        elif blocks.n_bins != n_bins:
            raise InputError(path, f"genes have {blocks.n_bins} bins here but {n_bins} in the earlier split files")
        parts.append((split, path, blocks.result()))
    check_unique_genes([(path, genes, lines) for _, path, (genes, _, lines) in parts])

    gene_ids = np.concatenate([genes for _, _, (genes, _, _) in parts])
    split = np.concatenate(
        [np.full(len(genes), SPLIT_CODES[s], dtype=np.uint8) for s, _, (genes, _, _) in parts]
    )
    expr_ids, expr_values = read_expression_table(expression_path, sep=",")
    labels_all, threshold = labels_from_expression(expr_values)
    expr_index = {ensembl_id(gene): position for position, gene in enumerate(expr_ids)}
    positions = np.array([expr_index.get(ensembl_id(gene), -1) for gene in gene_ids])
    missing = positions < 0
    blocks = counts.blocks
    if missing.any():
        message = (
            f"{int(missing.sum())} of {len(gene_ids)} genes have no expression value "
            f"(for example {gene_ids[missing][0]})"
        )
        if not drop_missing:
            raise MissingGenesError(expression_path, message, missing=int(missing.sum()), total=len(gene_ids),
                                    example=str(gene_ids[missing][0]))
        if notes is not None:
            notes.append(f"{expression_path}: {message}; left out")
        keep = ~missing
        blocks = [np.concatenate(blocks)[keep]]
        gene_ids, split, positions = gene_ids[keep], split[keep], positions[keep]
    return CellData(
        name=name,
        counts=blocks,
        gene_ids=gene_ids,
        marks=tuple(marks),
        bin_size=bin_size,
        window=n_bins * bin_size // 2,
        tss_offset=n_bins * bin_size // 2,
        split=split,
        expression=expr_values[positions],
        labels=labels_all[positions],
        sources=[SourceFile.of(path) for _, path, _ in parts] + [SourceFile.of(expression_path)],
        attrs={
            "source_format": "deepdiff",
            "label_threshold": threshold,
            "label_rule": f"expression > median of all {len(expr_ids)} genes in {Path(expression_path).name}",
        },
    )
