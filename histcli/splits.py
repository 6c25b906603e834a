"""Gene splits: which splits a command can be asked for, and the ways to split a new cell.

Each rule has its one owner here; the command line and the library call the same functions.
Only the standard library is imported at module level.
"""

from __future__ import annotations

from histcli.errors import ChoiceError, ConflictError, SettingError

#: Splits evaluate, compare, predict, explain and report accept: a stored split, or all genes.
SPLIT_CHOICES = ("test", "valid", "train", "none", "all")
#: Splits a chromosome split assigns; genes on every other chromosome are train.
CHROMOSOME_SPLITS = ("valid", "test")


def split_genes(split: str | None) -> str:
    """How messages name a split's genes: "test genes", or "unsplit genes (split none)" for the genes
    outside train, valid and test."""
    return {None: "genes", "all": "genes", "none": "unsplit genes (split none)"}.get(split, f"{split} genes")


def check_split_choice(split: str) -> str:
    if split not in SPLIT_CHOICES:
        raise ChoiceError("split", split, SPLIT_CHOICES)
    return split


def splits_to_load(split: str) -> list[str] | None:
    """The ``splits`` argument of ``Store.load`` for a split choice (None: every gene)."""
    return None if check_split_choice(split) == "all" else [split]


def parse_chromosome_split(values: list[str]) -> dict[str, list[str]]:
    """``valid=CHROM[,CHROM...]`` / ``test=CHROM[,CHROM...]`` texts as {split: chromosomes}."""
    result: dict[str, list[str]] = {}
    for value in values:
        split, sep, chroms = value.partition("=")
        if not sep or split not in CHROMOSOME_SPLITS or not chroms:
            raise SettingError("split_by_chromosome", value, "expected valid=CHROM[,CHROM...] or "
                               "test=CHROM[,CHROM...]; every other chromosome is train")
        result.setdefault(split, []).extend(c for c in chroms.split(",") if c)
    return result


def parse_split_fractions(text: str) -> tuple[float, float, float]:
    """``TRAIN,VALID,TEST`` fractions, e.g. ``0.6,0.2,0.2``."""
    try:
        fractions = tuple(float(part) for part in text.split(","))
    except ValueError:
        fractions = ()
    if len(fractions) != 3:
        raise SettingError("split_fractions", text, "expected three fractions summing to 1, e.g. 0.6,0.2,0.2")
    check_split_fractions(fractions)
    return fractions


def check_split_fractions(fractions: tuple[float, ...]) -> None:
    if len(fractions) != 3 or any(not 0 <= f <= 1 for f in fractions):
        raise SettingError("split_fractions", fractions, "expected three numbers between 0 and 1")
    if abs(sum(fractions) - 1) > 1e-6:
        raise SettingError("split_fractions", fractions, f"train, valid and test must sum to 1, not {sum(fractions):g}")


def check_split_options(split_file, by_chromosome: dict[str, list[str]] | None,
                        fractions: tuple[float, ...] | None) -> None:
    """At most one way to split a new cell, and a valid one."""
    chosen = [setting for setting, value in (("split_file", split_file), ("split_by_chromosome", by_chromosome),
                                             ("split_fractions", fractions)) if value is not None]
    if len(chosen) > 1:
        raise ConflictError(chosen, "give at most one way to split")
    if by_chromosome is not None:
        unknown = set(by_chromosome) - set(CHROMOSOME_SPLITS)
        if unknown:
            raise SettingError("split_by_chromosome", sorted(unknown)[0],
                               "a chromosome split names chromosomes for 'valid' and 'test' only")
        seen: set[str] = set()
        for chroms in by_chromosome.values():
            for chrom in chroms:
                if chrom in seen:
                    raise SettingError("split_by_chromosome", chrom, "chromosome listed twice")
                seen.add(chrom)
    if fractions is not None:
        check_split_fractions(tuple(fractions))
