"""Canonical histone mark names; every consumer maps marks by these names."""

from __future__ import annotations

import re

#: The five core REMC marks, in the order histcli uses when it chooses one.
CORE_MARKS = ("H3K4me3", "H3K4me1", "H3K36me3", "H3K9me3", "H3K27me3")

#: Column order of the DeepChrome CSV layout (after gene_id and bin).
DEEPCHROME_ORDER = ("H3K27me3", "H3K36me3", "H3K4me1", "H3K4me3", "H3K9me3")

#: Column order of the AttentiveChrome / DeepDiff CSV layout.
DEEPDIFF_ORDER = ("H3K4me1", "H3K4me3", "H3K9me3", "H3K27me3", "H3K36me3")

# Files spell marks with varying case ("h3k4me3", "H3K4ME3"); the canonical
# form is H<histone>K<residue><modification> with a lower-case modification.
_MARK_RE = re.compile(r"^H(2A|2B|3|4)K(\d+)(ME[123]|AC|UB1?)$")
_VARIANTS = {"H2A.Z": "H2A.Z", "H2AZ": "H2A.Z"}


def canonical_mark(name: str) -> str | None:
    """Return the canonical spelling of a histone mark, or None if it is not one."""
    upper = name.strip().upper()
    if upper in _VARIANTS:
        return _VARIANTS[upper]
    match = _MARK_RE.match(upper)
    if match is None:
        return None
    histone, residue, modification = match.groups()
    return f"H{histone}K{residue}{modification.lower()}"


def parse_marks(names, *, source: str = "--marks") -> tuple[str, ...]:
    """Canonicalise mark names given by the user (``source`` says where); unknown or repeated
    names are usage errors. The one owner of that rule, for --marks, --track and library callers."""
    from histcli.errors import UsageError

    result = []
    for name in names:
        mark = canonical_mark(name)
        if mark is None:
            raise UsageError(
                f"{source}: {name!r} is not a histone mark name (expected names like "
                f"{', '.join(CORE_MARKS)})"
            )
        if mark in result:
            raise UsageError(f"{source}: mark {mark} is given twice")
        result.append(mark)
    if not result:
        raise UsageError(f"{source}: no mark names given")
    return tuple(result)
