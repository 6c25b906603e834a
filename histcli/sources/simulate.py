"""Synthetic cells that are learnable the way REMC data are.

Each gene has an expression propensity shared by all cells plus a cell-specific
part. Expression is log-normal in it; the label is expression above the cell's
median. Each mark has a characteristic shape around the TSS (H3K4me3 a sharp
peak at the TSS, H3K4me1 flanking peaks, H3K36me3 rising over the gene body,
H3K27me3 and H3K9me3 broad), scaled per gene by the propensity: up for
H3K4me3, H3K36me3 (and weakly H3K4me1), down for H3K27me3 and H3K9me3, with
gene-and-mark noise so that no mark decides alone. Counts are negative
binomial (gamma-Poisson), so they are overdispersed; cells differ in
sequencing depth, dispersion, effect sizes and how closely they follow the
shared propensity.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from histcli import interrupt
from histcli.marks import CORE_MARKS
from histcli.store import SPLIT_CODES, CellData, check_cell_name

# Per-mark effect of the expression propensity on the mark's level.
_EFFECT = {"H3K4me3": 0.8, "H3K4me1": 0.2, "H3K36me3": 0.6, "H3K9me3": -0.3, "H3K27me3": -0.5}
# Mean read count per bin at the profile's top, before depth and gene effects.
_LEVEL = {"H3K4me3": 6.0, "H3K4me1": 2.5, "H3K36me3": 2.0, "H3K9me3": 1.0, "H3K27me3": 1.5}
_GENE_BLOCK = 2048


def mark_profiles(n_bins: int) -> np.ndarray:
    """Shape of each core mark along the bins (bins x marks), 1 at its highest."""
    x = (np.arange(n_bins) + 0.5) / n_bins * 2 - 1  # -1 = 5' end, 0 = TSS, 1 = 3' end
    shapes = {
        "H3K4me3": np.exp(-(((x - 0.02) / 0.08) ** 2)),
        "H3K4me1": np.exp(-(((np.abs(x) - 0.25) / 0.12) ** 2)),
        "H3K36me3": 1 / (1 + np.exp(-(x - 0.15) / 0.08)),
        "H3K9me3": np.ones_like(x),
        "H3K27me3": 0.6 + 0.4 * np.exp(-((x / 0.5) ** 2)),
    }
    profile = np.stack([shapes[mark] for mark in CORE_MARKS], axis=1)
    return profile / profile.max(axis=0)


def split_codes(n_genes: int, rng: np.random.Generator) -> np.ndarray:
    """A random train/valid/test split in thirds, like DeepChrome's 6601/6601/6600."""
    third = -(-n_genes // 3)
    codes = np.full(n_genes, SPLIT_CODES["test"], dtype=np.uint8)
    order = rng.permutation(n_genes)
    codes[order[:third]] = SPLIT_CODES["train"]
    codes[order[third : 2 * third]] = SPLIT_CODES["valid"]
    return codes


def cell_names(n_cells: int, prefix: str = "sim") -> list[str]:
    width = max(2, len(str(n_cells)))
    return [check_cell_name(f"{prefix}{index:0{width}d}") for index in range(1, n_cells + 1)]


def simulate_cells(n_cells: int, n_genes: int, n_bins: int, seed: int = 0, *,
                   bin_size: int = 100, prefix: str = "sim") -> Iterator[CellData]:
    """Yield ``n_cells`` synthetic cells; the same seed gives the same cells."""
    shared = np.random.default_rng([seed, 0])
    propensity = shared.standard_normal(n_genes)
    split = split_codes(n_genes, shared)
    gene_ids = np.array([f"SIMG{index:07d}" for index in range(1, n_genes + 1)], dtype=object)
    profile = mark_profiles(n_bins)
    for index, name in enumerate(cell_names(n_cells, prefix), start=1):
        rng = np.random.default_rng([seed, index])
        follow = rng.uniform(0.75, 0.92)
        activity = follow * propensity + np.sqrt(1 - follow**2) * rng.standard_normal(n_genes)
        expression = np.exp(1.5 + 1.8 * activity + rng.normal(0, 0.3, n_genes))
        threshold = float(np.median(expression))
        effects = np.array([_EFFECT[m] for m in CORE_MARKS]) * rng.uniform(0.7, 1.3, len(CORE_MARKS))
        depth = rng.uniform(0.5, 2.0, len(CORE_MARKS)) * np.array([_LEVEL[m] for m in CORE_MARKS])
        dispersion = rng.uniform(1.0, 5.0, len(CORE_MARKS))
        blocks = []
        for start in range(0, n_genes, _GENE_BLOCK):
            interrupt.check()
            stop = min(n_genes, start + _GENE_BLOCK)
            noise = rng.normal(0, 0.9, (stop - start, len(CORE_MARKS)))
            gene_level = np.exp(activity[start:stop, None] * effects + noise)
            mean = depth * profile[None, :, :] * gene_level[:, None, :]
            rates = rng.gamma(dispersion, mean / dispersion)
            blocks.append(rng.poisson(rates).astype(np.int32))
        yield CellData(
            name=name,
            counts=blocks,
            gene_ids=gene_ids,
            marks=CORE_MARKS,
            bin_size=bin_size,
            window=n_bins * bin_size // 2,
            tss_offset=n_bins * bin_size // 2,
            split=split,
            expression=expression,
            labels=(expression > threshold).astype(np.int8),
            attrs={
                "source_format": "simulated",
                "label_threshold": threshold,
                "label_rule": f"expression > median of all {n_genes} simulated genes",
                "simulation": f"seed={seed} cell={index} genes={n_genes} bins={n_bins}",
            },
        )
