"""The AttentiveChrome / DeepDiff CSV layout.

``<cell>.{train,valid,test}.csv``: no header, rows ``<ENSG>_<SYMBOL>_<bin>,``
followed by five marks in the order H3K4me1, H3K4me3, H3K9me3, H3K27me3,
H3K36me3. ``<cell>.expr.csv`` holds ``ENSG,value``; a gene's label is 1 when
its value is above the median over every gene in that file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from histcli.errors import InputError
from histcli.marks import DEEPDIFF_ORDER
from histcli.sources.common import CountBlocks, reads_inputs_once
from histcli.sources.expression import ExpressionFile, attach_expression
from histcli.sources.rows import Field, GeneBlocks, check_unique_genes, read_chunks
from histcli.store import SPLIT_CODES, CellData, SourceFile, check_cell_name

SPLIT_NAMES = ("train", "valid", "test")
DEFAULT_BIN_SIZE = 100


def find_files(folder: Path, prefix: str, *, need_expression: bool = True) -> tuple[dict[str, Path], Path | None]:
    """The split files and the expression file of cell ``prefix`` in ``folder`` (None when
    absent and not ``need_expression``: expression then comes from elsewhere)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "no such folder" if not folder.exists() else "expected a folder")
    # Found when they exist at all: reading a folder in their place names it as a folder.
    splits = {}
    for split in SPLIT_NAMES:
        for name in (f"{prefix}.{split}.csv", f"{prefix}.{split}.csv.gz"):
            if (folder / name).exists():
                splits[split] = folder / name
                break
    expression = next(
        (folder / name for name in (f"{prefix}.expr.csv", f"{prefix}.expr.csv.gz") if (folder / name).exists()),
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
    if expression is None and need_expression:
        raise InputError(folder / f"{prefix}.expr.csv", "no such file; the labels come from it")
    return splits, expression


@reads_inputs_once("splits", "expression")
def read_cell(name: str, splits: dict[str, Path], expression: Path | ExpressionFile, *,
              marks: tuple[str, ...] = DEEPDIFF_ORDER, bin_size: int = DEFAULT_BIN_SIZE,
              drop_missing: bool = False, notes: list[str] | None = None,
              expression_column: str | None = None) -> CellData:
    """Parse one cell's split files and attach expression from ``expression`` (its ``<cell>.expr.csv``,
    or any table :class:`histcli.sources.expression.ExpressionFile` reads, as a path or an ExpressionFile that
    several cells share). A file may be a pipe: it is read once (see ``histcli.sources.common.reads_inputs_once``)."""
    check_cell_name(name)
    schema = [Field("gene_bin", "id_bin")] + [Field(mark, "count") for mark in marks]
    mark_columns = list(marks)
    counts = CountBlocks()
    n_bins = None
    parts = []
    sources = SourceFile.hashing(splits.values())
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
    cell = CellData(
        name=name,
        counts=counts.blocks,
        gene_ids=gene_ids,
        marks=tuple(marks),
        bin_size=bin_size,
        window=n_bins * bin_size // 2,
        tss_offset=n_bins * bin_size // 2,
        split=split,
        sources=sources(),
        attrs={"source_format": "deepdiff"},
    )
    table = ExpressionFile.of(expression).table(column=expression_column, cell=name)
    return attach_expression(cell, table, genes_source=f"the split files of {name}", drop_missing=drop_missing,
                             notes=[] if notes is None else notes)
