"""Gene annotation (where each gene's TSS lies) from BED, GTF or GFF3 files.

BED (plain or gzip): ``chrom start end name [score strand ...]``, 0-based
half-open; ``#``, ``track`` and ``browser`` lines and blank lines are skipped.

* An interval of width 1 is the TSS base itself: TSS = start.
* A wider interval is a window centred on the TSS (the DeepChrome gene files
  give TSS +/- 10 kb): TSS = start + width // 2.
* The strand comes from column 6 when present. ``.`` (unknown) is treated as
  ``+``, and so is every gene of a file without a strand column;
  ``GeneTable.n_unstranded`` counts such genes so callers can say so.

GTF (plain or gzip): only ``gene`` records are read. GTF is 1-based inclusive,
so the 0-based TSS is start - 1 on ``+`` and end - 1 on ``-``. The gene's name
is its ``gene_id``.

GFF3 (plain or gzip): gene records are those of type ``gene``, ``pseudogene``
or ``*_gene`` (Ensembl's ``ncRNA_gene``); coordinates as in GTF, and strand
``?`` counts as unknown. The gene's name is its ``gene_id`` attribute
(GENCODE, Ensembl), else its ``ID`` without Ensembl's ``gene:`` prefix;
%-escapes are decoded. Reading stops at ``##FASTA``.

The format is taken from the extension (``.bed``, ``.gtf``, ``.gff3``,
optionally ``.gz``), then from a ``##gff-version 3`` line, and otherwise from
the first data line: nine tab-separated columns with a feature type in the
third and coordinates in the fourth and fifth are GTF with ``gene_id "..."``
attributes and GFF3 with ``key=value`` ones; anything else is BED.

Genes are matched to other files by ``ensembl_id(name)`` (``key``). A key
listed again with the same TSS and strand is the same gene under another name
(the DeepChrome gene set lists seven genes twice, e.g. ENSG00000062370_ZFP112
and ENSG00000062370_ZNF285): the first line is kept and ``GeneTable.repeated``
records the pair. A key listed again with another TSS is an error. GENCODE's
second copies of pseudo-autosomal genes (ids ending in ``_PAR_Y``) keep that
suffix in their key so they stay distinct from the chrX copy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from histcli.errors import InputError
from histcli.sources.common import MAX_POSITION, ensembl_id, parse_integer, read_bytes, text_lines, utf8_text

_SKIPPED_PREFIXES = ("#", "track", "browser")
_GTF_ATTRIBUTE = re.compile(r'(\w+)\s+"([^"]*)"')
_GFF3_GENE_TYPES = ("gene", "pseudogene")
_STRANDS = ("+", "-", ".")


@dataclass
class GeneTable:
    """Genes in file order; every field is an array with one entry per gene."""

    path: Path
    name: np.ndarray  # as written in the file
    key: np.ndarray  # ensembl_id(name), used to match other files
    chrom: np.ndarray
    tss: np.ndarray  # int64, 0-based position of the TSS base
    strand: np.ndarray  # "+" or "-"
    line: np.ndarray  # int64, line of the file each gene came from
    n_unstranded: int = 0  # genes whose strand was not given and were taken as "+"
    repeated: list[tuple[str, str]] = field(default_factory=list)  # (kept name, dropped name)

    def __len__(self) -> int:
        return len(self.name)

    def select(self, mask: np.ndarray) -> "GeneTable":
        return GeneTable(
            path=self.path,
            name=self.name[mask],
            key=self.key[mask],
            chrom=self.chrom[mask],
            tss=self.tss[mask],
            strand=self.strand[mask],
            line=self.line[mask],
            n_unstranded=self.n_unstranded,
            repeated=self.repeated,
        )


def gene_key(name: str) -> str:
    """The identifier genes are matched by: the Ensembl id, keeping a ``_PAR_Y`` suffix."""
    key = ensembl_id(name)
    return key + "_PAR_Y" if name.endswith("_PAR_Y") and key != name else key


UCSC = "UCSC"
ENSEMBL = "Ensembl"
MIXED = "mixed"


def chromosome_style(names) -> str:
    """How a file names chromosomes: UCSC (chr1, chrM), Ensembl (1, MT) or mixed, by the ``chr`` prefix."""
    prefixed = {name.startswith("chr") for name in names}
    if prefixed == {True}:
        return UCSC
    return ENSEMBL if prefixed == {False} else MIXED


def in_style(name: str, style: str) -> str:
    """A chromosome's name in ``style``: chr1 <-> 1, chrM <-> MT (M, as in older files, -> chrM)."""
    if style == UCSC:
        if name.startswith("chr"):
            return name
        return "chrM" if name in ("MT", "M") else "chr" + name
    if not name.startswith("chr"):
        return name
    bare = name[3:]
    return "MT" if bare == "M" else bare


def style_examples(names, shown: int = 3) -> str:
    """The first few names in natural order (chr2 before chr10): "chr1, chr2, chrM"."""
    def natural(name: str):
        return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]

    ordered = sorted(set(names), key=natural)
    return ", ".join(ordered[:shown]) + (", ..." if len(ordered) > shown else "")


def read_genes(path: Path) -> GeneTable:
    """Read a BED, GTF or GFF3 gene annotation (see the module docstring for the rules)."""
    path = Path(path)
    lines = text_lines(utf8_text(path, read_bytes(path)), path)
    records = {"gtf": _gtf_records, "gff3": _gff3_records, "bed": _bed_records}[_format(path, lines)](path, lines)
    if not records:
        raise InputError(path, "no genes found (expected BED, GTF or GFF3 gene records)")
    records, repeated = _merge_repeats(path, records)
    names, chroms, tss, strands, line_numbers, unstranded = zip(*records, strict=True)
    return GeneTable(
        path=path,
        name=np.asarray(names, dtype=object),
        key=np.asarray([gene_key(name) for name in names], dtype=object),
        chrom=np.asarray(chroms, dtype=object),
        tss=np.asarray(tss, dtype=np.int64),
        strand=np.asarray(strands, dtype=object),
        line=np.asarray(line_numbers, dtype=np.int64),
        n_unstranded=int(sum(unstranded)),
        repeated=repeated,
    )


def _is_data_line(line: str) -> bool:
    return bool(line.strip()) and not line.startswith(_SKIPPED_PREFIXES)


def _format(path: Path, lines: list[str]) -> str:
    """``bed``, ``gtf`` or ``gff3``: from the extension, a GFF version line, or the first data line."""
    suffixes = [suffix.lower() for suffix in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    # .gff alone may be GFF2 (GTF-like): its content decides.
    by_extension = {".gtf": "gtf", ".gff3": "gff3", ".bed": "bed"}
    if suffixes and suffixes[-1] in by_extension:
        return by_extension[suffixes[-1]]
    if any(line.startswith("##gff-version 3") for line in lines[:10]):
        return "gff3"
    first = next((line for line in lines if _is_data_line(line)), "")
    fields = first.split("\t")
    # In GTF and GFF3 the third column is a feature type and the fourth and
    # fifth are coordinates; in BED the third is already a coordinate.
    if len(fields) == 9 and not fields[2].strip().isdigit() and fields[3].isdigit() and fields[4].isdigit():
        if _GTF_ATTRIBUTE.search(fields[8]):
            return "gtf"
        if "=" in fields[8]:
            return "gff3"
    return "bed"


def _integer(path: Path, text: str, number: int, field: str) -> int:
    try:
        value = parse_integer(text)
    except ValueError:
        raise InputError(path, f"{text!r} is not an integer coordinate", line=number, field=field) from None
    if value > MAX_POSITION:
        raise InputError(path, f"coordinate {text} is beyond the largest position {MAX_POSITION}",
                         line=number, field=field)
    return value


def _bed_records(path: Path, lines: list[str]) -> list[tuple]:
    records = []
    for number, line in enumerate(lines, start=1):
        if not _is_data_line(line):
            continue
        fields = line.rstrip("\r\n").split("\t") if "\t" in line else line.split()
        if len(fields) < 4:
            raise InputError(
                path, f"expected at least 4 columns (chrom start end name), found {len(fields)}", line=number
            )
        chrom, name = fields[0].strip(), fields[3].strip()
        if not name:
            raise InputError(path, "empty gene name", line=number, field="name")
        start = _integer(path, fields[1].strip(), number, "start")
        end = _integer(path, fields[2].strip(), number, "end")
        if start < 0:
            raise InputError(path, f"negative start {start}", line=number, field="start")
        if end <= start:
            raise InputError(path, f"end {end} is not after start {start}", line=number, field="end")
        strand = fields[5].strip() if len(fields) >= 6 else "."
        if strand not in _STRANDS:
            raise InputError(path, f"strand {strand!r} is not '+', '-' or '.'", line=number, field="strand")
        width = end - start
        tss = start if width == 1 else start + width // 2
        records.append((name, chrom, tss, "-" if strand == "-" else "+", number, strand == "."))
    return records


def _gtf_records(path: Path, lines: list[str]) -> list[tuple]:
    records = []
    for number, line in enumerate(lines, start=1):
        # Most GTF lines are transcripts and exons: skip them before splitting.
        if "\tgene\t" not in line or not _is_data_line(line):
            continue
        fields = _nine_columns(path, line, number, "GTF")
        if fields[2] != "gene":
            continue
        attributes = dict(_GTF_ATTRIBUTE.findall(fields[8]))
        if "gene_id" not in attributes:
            raise InputError(path, "gene record without a gene_id attribute", line=number, field="attributes")
        records.append(_one_based_gene(path, fields, number, attributes["gene_id"]))
    return records


def _gff3_records(path: Path, lines: list[str]) -> list[tuple]:
    from urllib.parse import unquote

    records = []
    for number, line in enumerate(lines, start=1):
        if line.startswith("##FASTA"):
            break
        # Most GFF3 lines are transcripts and exons: skip them before splitting.
        if "gene\t" not in line or not _is_data_line(line):
            continue
        fields = _nine_columns(path, line, number, "GFF3")
        if not (fields[2] in _GFF3_GENE_TYPES or fields[2].endswith("_gene")):
            continue
        attributes = {}
        for pair in fields[8].split(";"):
            pair = pair.strip()
            if not pair or pair == ".":  # empty pairs and "." (no attributes) are allowed
                continue
            key, sep, value = pair.partition("=")
            if not sep:
                raise InputError(path, f"attribute {pair!r} is not key=value", line=number, field="attributes")
            attributes[key] = unquote(value)
        if fields[6] == "?":  # GFF3's "strand relevant but unknown"
            fields[6] = "."
        name = attributes.get("gene_id") or attributes.get("ID", "").removeprefix("gene:")
        if not name:
            raise InputError(path, f"{fields[2]} record without a gene_id or ID attribute", line=number,
                             field="attributes")
        records.append(_one_based_gene(path, fields, number, name))
    return records


def _nine_columns(path: Path, line: str, number: int, layout: str) -> list[str]:
    fields = line.rstrip("\r\n").split("\t")
    if len(fields) != 9:
        raise InputError(path, f"expected 9 tab-separated {layout} columns, found {len(fields)}", line=number)
    return fields


def _one_based_gene(path: Path, fields: list[str], number: int, name: str) -> tuple:
    """The record of a GTF or GFF3 gene line: 1-based inclusive coordinates, TSS at the 5' end."""
    start = _integer(path, fields[3], number, "start")
    end = _integer(path, fields[4], number, "end")
    if start < 1:
        raise InputError(path, f"start {start} is below 1 (coordinates are 1-based)", line=number, field="start")
    if end < start:
        raise InputError(path, f"end {end} is before start {start}", line=number, field="end")
    strand = fields[6]
    if strand not in _STRANDS:
        raise InputError(path, f"strand {strand!r} is not '+', '-' or '.'", line=number, field="strand")
    tss = end - 1 if strand == "-" else start - 1
    return (name, fields[0], tss, "-" if strand == "-" else "+", number, strand == ".")


def _merge_repeats(path: Path, records: list[tuple]) -> tuple[list[tuple], list[tuple[str, str]]]:
    """Keep the first of several records of one gene at one TSS; other repeats are errors."""
    first_of: dict[str, tuple] = {}
    kept, repeated = [], []
    for record in records:
        name, chrom, tss, strand, number = record[:5]
        first = first_of.setdefault(gene_key(name), record)
        if first is record:
            kept.append(record)
        elif first[1:4] == (chrom, tss, strand):
            repeated.append((first[0], name))
        else:
            what = f"gene {name}" + ("" if name == first[0] else f" (the same gene as {first[0]})")
            raise InputError(
                path,
                f"{what} appears twice with different TSS positions: {chrom}:{tss} ({strand}) here, "
                f"{first[1]}:{first[2]} ({first[3]}) on line {first[4]}",
                line=number,
            )
    return kept, repeated
