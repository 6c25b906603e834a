"""Genome-wide signal tracks (bedGraph, bigWig) binned around each gene's TSS.

Reading
    bedGraph (plain or gzip): ``chrom start end value``, 0-based half-open,
    separated by tabs or spaces; ``track``/``browser`` lines, blank lines and
    anything after ``#`` are skipped. bigWig is read with pyBigWig (the
    ``bigwig`` extra). Values must be finite and non-negative and the
    intervals of one chromosome must not overlap.

Bins
    ``window`` bp on each side of the TSS are cut into ``2 * window / bin_size``
    bins (the division must be exact). Bins run 5' to 3', so bin 0 is the most
    upstream one and the TSS lies ``tss_offset = window`` bp from its 5' end:

    * ``+`` strand: bin k covers [tss - window + k*bin_size, tss - window + (k+1)*bin_size).
    * ``-`` strand: the same bins mirrored around the TSS base, so bin k covers
      [tss + 1 + window - (k+1)*bin_size, tss + 1 + window - k*bin_size).

Aggregation
    * ``sum`` (read counts, the default): an interval's value is spread evenly
      over its bases, so a bin gets sum(value_i * overlap_i / length_i). A track
      coarser than the bins is split in proportion to the overlap; bins that
      coincide with the track's intervals reproduce their values exactly.
    * ``mean`` (signal such as fold enrichment): sum(value_i * overlap_i) / bin_size.

Missing data
    Bases of a chromosome that no interval covers count as 0 (bedGraph files
    leave out bins without reads), and so do bin positions before the
    chromosome start. A chromosome is present in a bedGraph when it has at
    least one line, in a bigWig when its header lists it. Genes on a
    chromosome missing from a track are never zeroed: ``bin_tracks`` refuses
    them and ``read_tracks_cell`` refuses them or, with ``drop_missing``,
    leaves them out with a note.

Genes, expression, splits
    Gene files are read by :mod:`histcli.sources.annotation`; genes keep the
    order of that file. Expression (a two-column table or a matrix column) is
    read and matched by :mod:`histcli.sources.expression`, with labels by
    DeepChrome's median rule. Split tables hold ``gene split`` rows
    (whitespace or comma separated, an optional header line) and are matched
    to genes by Ensembl id (``ENSG00000000003_TSPAN6`` = ``ENSG00000000003.12``
    = ``ENSG00000000003``). A gene repeated with the same split is used once;
    with another it is an error.

The binning is vectorised: per chromosome and track, one ``np.searchsorted``
finds the interval at every bin edge of every gene, and a bin adds the parts
of the intervals at its edges to the whole intervals between them (one
``np.add.reduceat``); it never subtracts running totals, so a huge value does
not swamp small ones elsewhere on the chromosome. Genes are processed in
blocks of consecutive genes to bound memory.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from histcli.errors import InputError, MissingExtraError, MissingGenesError, UsageError
from histcli.marks import parse_marks
from histcli.sources.annotation import (
    MIXED,
    GeneTable,
    chromosome_style,
    gene_key,
    in_style,
    read_genes,
    style_examples,
)
from histcli.sources.common import (
    COUNT_OVERFLOW,
    MAX_COUNT,
    MAX_POSITION,
    CountBlocks,
    ValuesByGene,
    control_character,
    not_utf8,
    parse_integer,
    parse_number,
    read_bytes,
    reads_inputs_once,
    text_lines,
    too_large,
    utf8_text,
)
from histcli.sources.expression import ExpressionFile, match_expression
from histcli.splits import check_split_options
from histcli.store import FIVE_TO_THREE, SPLIT_CODES, SPLITS, CellData, SourceFile

AGGREGATES = ("sum", "mean")

_BIGWIG_MAGIC = (b"\x26\xfc\x8f\x88", b"\x88\x8f\xfc\x26")  # little- and big-endian
_BIGWIG_SUFFIXES = (".bw", ".bigwig")
_HEADER_LINE = re.compile(rb"^(?=(?:track|browser)\b)", re.MULTILINE)
# Genes are binned in blocks of about this many float64 values (32 MiB).
_BLOCK_VALUES = 1 << 22
_STARTS_WITH_ENSEMBL_ID = re.compile(r"ENS[A-Z]*G\d{11}")


@dataclass
class Intervals:
    """One chromosome of a track: sorted, non-overlapping [start, end) intervals."""

    starts: np.ndarray  # int64
    ends: np.ndarray  # int64
    values: np.ndarray  # float64


@dataclass
class Track:
    path: Path
    format: str  # "bedGraph" or "bigWig"
    chroms: dict[str, Intervals]


# reading tracks ----------------------------------------------------------------


def read_track(path: Path) -> Track:
    """Read a bedGraph (plain or gzip) or bigWig track, checking every interval."""
    path = Path(path)
    if _is_bigwig(path):
        return Track(path, "bigWig", _read_bigwig(path))
    return Track(path, "bedGraph", _read_bedgraph(path))


def _is_bigwig(path: Path) -> bool:
    if path.suffix.lower() in _BIGWIG_SUFFIXES:
        return True
    try:
        with open(path, "rb") as handle:
            return handle.read(4) in _BIGWIG_MAGIC
    except OSError:
        return False  # read_bytes reports missing files and folders


def _read_bigwig(path: Path) -> dict[str, Intervals]:
    try:
        import pyBigWig
    except ImportError:
        raise MissingExtraError("pyBigWig", "bigwig", "reading bigWig tracks") from None
    if not path.is_file():
        read_bytes(path)  # raises the usual "no such file" / "is a folder" error
    try:
        handle = pyBigWig.open(str(path))
    except RuntimeError:
        handle = None
    if handle is None:
        raise InputError(path, "cannot be read as bigWig")
    try:
        if not handle.isBigWig():
            raise InputError(path, "is a bigBed file, expected bigWig")
        return {chrom: _bigwig_intervals(path, chrom, handle.intervals(chrom)) for chrom in handle.chroms()}
    finally:
        handle.close()


def _bigwig_intervals(path: Path, chrom: str, found) -> Intervals:
    """Check one chromosome's (start, end, value) tuples; None means a listed chromosome without data."""
    table = np.array(found or (), dtype=np.float64).reshape(-1, 3)
    order = np.argsort(table[:, 0], kind="stable")
    starts, ends, values = table[order, 0].astype(np.int64), table[order, 1].astype(np.int64), table[order, 2]
    bad = np.flatnonzero(~np.isfinite(values) | (values < 0))
    if len(bad):
        i = bad[0]
        raise InputError(
            path, f"{chrom}:{starts[i]}-{ends[i]}: value {values[i]} is not a finite non-negative number"
        )
    overlap = np.flatnonzero(starts[1:] < ends[:-1])
    if len(overlap):
        i = overlap[0]
        raise InputError(
            path, f"intervals {chrom}:{starts[i]}-{ends[i]} and {chrom}:{starts[i + 1]}-{ends[i + 1]} overlap"
        )
    return Intervals(starts, ends, values)


def _read_bedgraph(path: Path) -> dict[str, Intervals]:
    data = read_bytes(path)
    if data.startswith((b"track", b"browser")) or b"\ntrack" in data or b"\nbrowser" in data:
        data = _HEADER_LINE.sub(b"#", data)  # the C parser then skips them as comments
    parsed = _parse_bedgraph_fast(data)
    if parsed is None:
        # Something is wrong: find the exact line (slow, but only on the error path).
        raise _bedgraph_problem(path, data)
    if not parsed:
        raise InputError(path, "no intervals found (empty bedGraph)")
    return parsed


def _parse_bedgraph_fast(data: bytes) -> dict[str, Intervals] | None:
    """Parse well-formed bedGraph data with pandas; None when any line is bad."""
    try:
        frame = pd.read_csv(
            io.BytesIO(data),
            sep=r"\s+",
            header=None,
            comment="#",
            engine="c",
            lineterminator="\n" if b"\n" in data else "\r",  # text_lines' line breaks, not any "\r"
            dtype={0: object},
            keep_default_na=False,  # "NA" could be a contig; "nan" values must fail below
        )
    except pd.errors.EmptyDataError:
        return {}
    except (pd.errors.ParserError, ValueError):
        return None
    if frame.shape[1] != 4:
        return None
    # uint64 or object columns hold coordinates beyond int64.
    if not all(frame[column].dtype == np.int64 for column in (1, 2)):
        return None
    if not pd.api.types.is_numeric_dtype(frame[3]) or pd.api.types.is_bool_dtype(frame[3]):
        return None
    starts = frame[1].to_numpy(np.int64)
    ends = frame[2].to_numpy(np.int64)
    values = frame[3].to_numpy(np.float64)
    if (starts < 0).any() or (ends <= starts).any() or not np.isfinite(values).all() or (values < 0).any():
        return None
    if (values >= COUNT_OVERFLOW).any():
        return None
    codes, names = pd.factorize(frame[0], sort=False)
    if any(control_character(str(name)) for name in names):  # a stray "\r" inside a line, say
        return None
    order = np.lexsort((starts, codes))
    codes, starts, ends, values = codes[order], starts[order], ends[order], values[order]
    if (starts[1:] < ends[:-1])[codes[1:] == codes[:-1]].any():
        return None
    bounds = np.searchsorted(codes, np.arange(len(names) + 1))
    return {
        str(name): Intervals(starts[lo:hi], ends[lo:hi], values[lo:hi])
        for name, lo, hi in zip(names, bounds[:-1], bounds[1:], strict=True)
    }


_BEDGRAPH_FIELD_BREAK = re.compile(r"[ \t]+")


def _bedgraph_problem(path: Path, data: bytes) -> InputError:
    """The first bad line of a bedGraph that the fast parser refused, as an InputError."""
    records = []
    for number, raw in enumerate(text_lines(data.decode("utf-8", errors="surrogateescape")), start=1):
        undecodable = not_utf8(path, raw, number)
        if undecodable is not None:
            return undecodable
        # Fields as the fast parser splits them: at spaces and tabs only (a "\r" next to a number is whitespace
        # to the number's parser, but part of a chromosome name).
        content = raw.split("#", 1)[0].strip(" \t")
        if not content:
            continue
        fields = _BEDGRAPH_FIELD_BREAK.split(content)
        if len(fields) != 4:
            return InputError(path, f"expected 4 columns (chrom start end value), found {len(fields)}", line=number)
        chrom, start_text, end_text, value_text = fields
        character = control_character(chrom)
        if character is not None:
            return InputError(path, f"control character {character!r} in the chromosome name", line=number,
                              field="chrom")
        coordinates = []
        for field, text in (("start", start_text), ("end", end_text)):
            try:
                coordinates.append(parse_integer(text))
            except ValueError:
                return InputError(path, f"{text!r} is not an integer coordinate", line=number, field=field)
            if coordinates[-1] > MAX_POSITION:
                return InputError(path, f"coordinate {text} is beyond the largest position {MAX_POSITION}",
                                  line=number, field=field)
        start, end = coordinates
        if start < 0:
            return InputError(path, f"negative start {start}", line=number, field="start")
        if end <= start:
            return InputError(path, f"end {end} is not after start {start}", line=number, field="end")
        try:
            value = parse_number(value_text)
        except ValueError:
            return InputError(path, f"{value_text!r} is not a number", line=number, field="value")
        if math.isnan(value):
            return InputError(path, "value is NaN", line=number, field="value")
        if math.isinf(value):
            return InputError(path, f"value {value_text} is infinite", line=number, field="value")
        if value < 0:
            return InputError(path, f"negative value {value_text}", line=number, field="value")
        if value >= COUNT_OVERFLOW:
            return InputError(path, too_large(value_text), line=number, field="value")
        records.append((chrom, start, end, number))
    records.sort()
    # Each record with the next: the last one has none, so the pairs stop one short (strict=False).
    pairs = zip(records, records[1:], strict=False)
    for (chrom, start, end, number), (next_chrom, next_start, next_end, next_number) in pairs:
        if chrom == next_chrom and next_start < end:
            first, second = sorted((number, next_number))
            return InputError(
                path,
                f"intervals {chrom}:{start}-{end} and {chrom}:{next_start}-{next_end} overlap "
                f"(lines {first} and {second})",
                line=second,
            )
    return InputError(path, "cannot be parsed as bedGraph (chrom start end value)")


# binning -------------------------------------------------------------------------


def bin_count(*, bin_size: int, window: int, aggregate: str = "sum") -> int:
    """The number of bins, after checking that the settings fit together."""
    if aggregate not in AGGREGATES:
        raise UsageError(f"aggregate must be one of {', '.join(AGGREGATES)}, not {aggregate!r}")
    if bin_size <= 0 or window <= 0:
        raise UsageError(f"bin size ({bin_size}) and window ({window}) must be positive")
    if (2 * window) % bin_size:
        raise UsageError(
            f"a window of {window} bp on each side ({2 * window} bp) is not a whole number of "
            f"{bin_size} bp bins"
        )
    return 2 * window // bin_size


def bin_tracks(
    tracks: dict[str, Track], genes: GeneTable, *, bin_size: int, window: int, aggregate: str = "sum"
) -> np.ndarray:
    """Bin every track around every gene's TSS: float64 (genes, bins, marks), marks in dict order.

    Every gene's chromosome must be present in every track (InputError otherwise).
    """
    n_bins = bin_count(bin_size=bin_size, window=window, aggregate=aggregate)
    blocks = list(iter_binned(tracks, genes, bin_size=bin_size, window=window, aggregate=aggregate))
    return np.concatenate(blocks) if blocks else np.zeros((0, n_bins, len(tracks)))


def iter_binned(
    tracks: dict[str, Track], genes: GeneTable, *, bin_size: int, window: int, aggregate: str = "sum"
):
    """``bin_tracks`` in blocks of consecutive genes, so a big cell never sits in memory as float64."""
    n_bins = bin_count(bin_size=bin_size, window=window, aggregate=aggregate)
    if not tracks:
        raise UsageError("no tracks given")
    for track in tracks.values():
        absent = ~np.isin(genes.chrom, list(track.chroms))
        if absent.any():
            first = int(np.argmax(absent))
            raise InputError(
                genes.path,
                f"gene {genes.name[first]} lies on {genes.chrom[first]}, which track {track.path} "
                f"does not cover ({int(absent.sum())} genes on such chromosomes)",
                line=int(genes.line[first]),
            )
    if len(genes) and int(genes.tss.max()) > MAX_POSITION - window - 1:
        far = int(np.argmax(genes.tss))
        raise InputError(
            genes.path,
            f"gene {genes.name[far]}: TSS {genes.tss[far]} plus the window of {window} bp goes beyond "
            f"the largest position {MAX_POSITION}",
            line=int(genes.line[far]),
        )
    signals = [_Signal(track, aggregate) for track in tracks.values()]
    block_genes = max(1, _BLOCK_VALUES // ((n_bins + 1) * len(tracks)))
    for start in range(0, len(genes), block_genes):
        block = slice(start, start + block_genes)
        binned = _bin_block(
            signals, genes.chrom[block], genes.tss[block], genes.strand[block], n_bins, bin_size, window
        )
        if aggregate == "mean":
            binned /= bin_size
        if binned.size and binned.max() >= COUNT_OVERFLOW:
            raise _bin_too_large(binned, list(tracks.values()), genes.select(block), bin_size, window, aggregate)
        yield binned


def _bin_too_large(binned, tracks: list[Track], genes: GeneTable, bin_size: int, window: int,
                   aggregate: str) -> InputError:
    """Values that each fit float32 can add up to more in one bin: name the first such bin."""
    gene, k, mark = (int(i) for i in np.unravel_index(np.argmax(binned >= COUNT_OVERFLOW), binned.shape))
    tss = int(genes.tss[gene])
    if genes.strand[gene] == "+":
        low = tss - window + k * bin_size
    else:
        low = tss + 1 + window - (k + 1) * bin_size
    return InputError(
        tracks[mark].path,
        f"the {aggregate} over {genes.chrom[gene]}:{low}-{low + bin_size} (bin {k + 1} of gene "
        f"{genes.name[gene]}) is {binned[gene, k, mark]:.8g}, "
        f"beyond the largest count the store holds ({MAX_COUNT:.8g}, float32)",
    )


def _bin_block(signals, chrom, tss, strand, n_bins: int, bin_size: int, window: int) -> np.ndarray:
    plus = strand == "+"
    # Bin edges in ascending position; minus-strand genes take their bins in reverse
    # order below, so that bin 0 is the 5' one (see the module docstring).
    low = np.where(plus, tss - window, tss + 1 - window)
    codes, chrom_names = pd.factorize(chrom, sort=False)
    # Work in chromosome and position order: searchsorted is much faster on ordered keys.
    order = np.lexsort((low, codes))
    edges = low[order, None] + np.arange(n_bins + 1, dtype=np.int64) * bin_size
    bounds = np.searchsorted(codes[order], np.arange(len(chrom_names) + 1))
    by_mark = np.empty((len(signals), len(order), n_bins))
    for code, name in enumerate(chrom_names):
        rows = slice(bounds[code], bounds[code + 1])
        for mark, signal in enumerate(signals):
            by_mark[mark, rows] = signal.bins(name, edges[rows])
    minus = ~plus[order]
    by_mark[:, minus] = by_mark[:, minus, ::-1]
    binned = np.empty((len(order), n_bins, len(signals)))
    binned[order] = by_mark.transpose(1, 2, 0)
    return binned


class _Signal:
    """One track's piecewise-constant signal, summed over bins chromosome by chromosome.

    A bin adds up only the intervals it overlaps: the part of the interval at each
    edge and the whole intervals between. Differences of running totals along the
    chromosome would be simpler, but one huge value would then swamp every small
    bin after it (3.4e38 + 0.125 - 3.4e38 is 0).
    """

    def __init__(self, track: Track, aggregate: str):
        self.track = track
        self.aggregate = aggregate

    def bins(self, chrom: str, edges: np.ndarray) -> np.ndarray:
        """``edges``: genes x (bins + 1) ascending positions; returns genes x bins."""
        intervals = self.track.chroms[chrom]
        starts, values = intervals.starts, intervals.values
        lengths = intervals.ends - starts
        if len(starts) == 0:
            return np.zeros((edges.shape[0], edges.shape[1] - 1))
        # The interval starting at or before each edge (-1: none), and its bases before the
        # edge (0 for an edge before the first interval: the clip sees a negative distance).
        index = np.searchsorted(starts, edges, side="right") - 1
        at = np.maximum(index, 0)
        value, length = values[at], lengths[at]
        covered = np.clip(edges - starts[at], 0, length)
        first, last = index[:, :-1], index[:, 1:]
        # The parts of the edge's interval before it (head) and after it (tail), and, when
        # both edges of a bin lie in one interval or gap, the part between them (within).
        within_bases = covered[:, 1:] - covered[:, :-1]
        if self.aggregate == "sum":
            # Sum mode spreads each value over its bases: a whole interval contributes its
            # value, and value * bases / length (not density * bases) keeps that exact.
            mass = values
            head = value * covered / length
            tail = value * (length - covered) / length
            within = value[:, :-1] * within_bases / length[:, :-1]
        else:
            mass = values * lengths
            head = value * covered
            tail = value * (length - covered)
            within = value[:, :-1] * within_bases
        tail[index < 0] = 0.0
        between = _segment_sums(mass, first + 1, last)
        return np.where(first == last, within, tail[:, :-1] + between + head[:, 1:])


def _segment_sums(values: np.ndarray, first: np.ndarray, stop: np.ndarray) -> np.ndarray:
    """``values[first:stop]`` summed for every pair of entries (0 where empty), each sum on its own."""
    bounds = np.empty(2 * first.size, dtype=np.int64)
    bounds[0::2] = first.ravel()
    bounds[1::2] = stop.ravel()
    np.maximum(bounds, 0, out=bounds)  # a stop of -1 (empty segment) is masked below
    # reduceat sums values[bounds[i]:bounds[i+1]]: the even entries are the segments
    # asked for, the odd ones what lies between them. The zero keeps every bound in range.
    sums = np.add.reduceat(np.append(values, 0.0), bounds)[0::2].reshape(first.shape)
    return np.where(stop > first, sums, 0.0)


# cells ---------------------------------------------------------------------------


@reads_inputs_once("tracks", "genes", "expression", "split")
def read_tracks_cell(
    name: str,
    *,
    tracks: dict[str, Path],
    genes: Path,
    expression: Path | ExpressionFile | None = None,
    expression_column: str | None = None,
    split: Path | None = None,
    split_by_chromosome: dict[str, list[str]] | None = None,
    split_fractions: tuple[float, float, float] | None = None,
    seed: int = 0,
    bin_size: int,
    window: int,
    aggregate: str = "sum",
    drop_missing: bool = False,
    notes: list[str] | None = None,
) -> CellData:
    """Build one cell from genome-wide tracks (one per mark) and a gene annotation.

    Problems the user should hear about but that do not stop the run are
    appended to ``notes``. Any input may be a pipe: it is read once (see
    ``histcli.sources.common.reads_inputs_once``).
    """
    notes = [] if notes is None else notes
    marks = parse_marks(tracks, source="tracks")
    track_paths = [Path(path) for path in tracks.values()]
    genes_path = Path(genes)
    bin_count(bin_size=bin_size, window=window, aggregate=aggregate)
    check_split_options(split, split_by_chromosome, split_fractions)

    expression = None if expression is None else ExpressionFile.of(expression)
    if expression is not None:
        expression.columns(column=expression_column, cells=[name])  # before any track is read
    hashed = SourceFile.hashing([*track_paths, genes_path])

    table = read_genes(genes_path)
    loaded = {mark: read_track(path) for mark, path in zip(marks, track_paths, strict=True)}
    if table.repeated:
        kept, dropped = table.repeated[0]
        notes.append(
            f"{genes_path.name}: {len(table.repeated)} genes are listed twice at the same TSS under "
            f"different names (for example {kept} and {dropped}); the first name is kept"
        )
    if table.n_unstranded:
        notes.append(
            f"{genes_path.name}: no strand for {table.n_unstranded} genes; they are read as '+' "
            "(bins run left to right along the chromosome); train --mirror auto then learns both orientations"
        )
    names_in_genes_file = table.name
    # Without strands the bins of minus-strand genes run 3' to 5'; models can
    # then be trained to ignore orientation (train --mirror).
    if table.n_unstranded == 0:
        orientation = FIVE_TO_THREE
    else:
        orientation = "unknown" if table.n_unstranded == len(table) else "partly unknown"
    matched = _match_chromosome_styles(table, loaded, notes)
    table = _drop_missing_chromosomes(table, matched, drop_missing, notes, as_read=loaded)
    loaded = matched

    expression_values = labels = None
    attrs: dict = {"source_format": "tracks", "aggregate": aggregate, "orientation": orientation}
    if expression is not None:
        match = match_expression(
            expression.table(column=expression_column, cell=name), table.name,
            genes_source=genes_path.name, drop_missing=drop_missing, notes=notes, listed_ids=names_in_genes_file,
        )
        table = table.select(match.keep)
        expression_values, labels = match.values, match.labels
        attrs.update(match.attrs)

    if split is not None:
        split_codes = _split_from_file(table, Path(split), notes)
    elif split_by_chromosome is not None:
        split_codes = _split_by_chromosome(table, split_by_chromosome, notes)
    elif split_fractions is not None:
        split_codes = _split_by_fractions(len(table), split_fractions, seed)
    else:
        split_codes = np.full(len(table), SPLIT_CODES["none"], dtype=np.uint8)

    counts = CountBlocks()
    for block in iter_binned(loaded, table, bin_size=bin_size, window=window, aggregate=aggregate):
        counts.add(block)
    return CellData(
        name=name,
        counts=counts.blocks,
        gene_ids=table.name.copy(),
        marks=marks,
        bin_size=bin_size,
        window=window,
        tss_offset=window,
        split=split_codes,
        expression=expression_values,
        labels=labels,
        # The expression file hashes the bytes it read (it may have been a pipe).
        sources=[*hashed(), *([] if expression is None else [expression.source]),
                 *([] if split is None else [SourceFile.of(split)])],
        attrs=attrs,
        coordinates={"chrom": table.chrom.copy(), "tss": table.tss.copy(), "strand": table.strand.copy()},
    )


def _per_chromosome(chroms: np.ndarray, shown: int = 10) -> str:
    """Gene counts per chromosome, largest first: "chrX 850, chrY 52"."""
    names, counts = np.unique(chroms.astype(str), return_counts=True)
    order = np.lexsort((names, -counts))
    listed = ", ".join(f"{names[i]} {counts[i]}" for i in order[:shown])
    return listed + (f" and {len(order) - shown} more chromosomes" if len(order) > shown else "")


def _match_chromosome_styles(table: GeneTable, tracks: dict[str, Track], notes: list[str]) -> dict[str, Track]:
    """Rename the chromosomes of tracks named in the other style than the genes (1 -> chr1, MT -> chrM).

    Only a track whose names all follow one style, and that the genes' names all
    follow the other, is renamed, and only when no two of its names become one;
    anything else is left for ``_drop_missing_chromosomes`` to report.
    """
    genes_style = chromosome_style(table.chrom)
    if genes_style == MIXED:
        return tracks
    matched, renamed_from = dict(tracks), []
    for mark, track in tracks.items():
        style = chromosome_style(track.chroms)
        if style in (genes_style, MIXED):
            continue
        renamed = {in_style(name, genes_style): intervals for name, intervals in track.chroms.items()}
        if len(renamed) < len(track.chroms):  # e.g. both M and MT
            continue
        matched[mark] = Track(track.path, track.format, renamed)
        renamed_from.append(track)
    if renamed_from:
        names = [name for track in renamed_from for name in track.chroms]
        notes.append(
            f"{', '.join(track.path.name for track in renamed_from)}: chromosomes named "
            f"{chromosome_style(names)}-style ({style_examples(names)}), the genes of {table.path.name} "
            f"{genes_style}-style ({style_examples(table.chrom)}); matched them by name (chr1 = 1, chrM = MT)"
        )
    return matched


def _style_clash(table: GeneTable, tracks: dict[str, Track]) -> str:
    """How each file names chromosomes, when the files do not all agree ("" when they do)."""
    styles = {table.path.name: (chromosome_style(table.chrom), table.chrom)}
    styles.update({track.path.name: (chromosome_style(track.chroms), list(track.chroms)) for track in tracks.values()})
    if len({style for style, _ in styles.values()}) == 1:
        return ""
    described = [
        f"{name} {'mixes both styles' if style == MIXED else f'is {style}-style'} ({style_examples(names)})"
        for name, (style, names) in styles.items()
    ]
    return "; chromosome names: " + ", ".join(described)


def _drop_missing_chromosomes(
    table: GeneTable, tracks: dict[str, Track], drop_missing: bool, notes: list[str], *, as_read: dict[str, Track]
) -> GeneTable:
    """Refuse (or leave out) genes on chromosomes absent from a track; ``as_read``: the tracks before renaming."""
    present = set.intersection(*(set(track.chroms) for track in tracks.values()))
    missing = ~np.isin(table.chrom, list(present))
    if not missing.any():
        return table
    summary = (
        f"{int(missing.sum())} of {len(table)} genes lie on chromosomes absent from the tracks "
        f"({_per_chromosome(table.chrom[missing])})"
    )
    if missing.all():
        shared = sorted(present)
        listed = ", ".join(shared[:3]) + (", ..." if len(shared) > 3 else "")
        raise InputError(
            table.path, f"{summary}; chromosomes in every track: {listed or 'none'}{_style_clash(table, as_read)}"
        )
    if not drop_missing:
        raise MissingGenesError(table.path, f"{summary}{_style_clash(table, as_read)}", missing=int(missing.sum()),
                                total=len(table), example=str(table.name[np.argmax(missing)]))
    notes.append(f"{table.path.name}: {summary}; left out")
    return table.select(~missing)


@dataclass
class _GeneValues:
    """A two-column gene table (a split file), one entry per distinct gene key."""

    path: Path
    keys: pd.Index
    values: np.ndarray
    repeated: int  # rows that repeat an earlier row's gene and value


def _read_gene_values(path: Path, *, value_name: str, parse) -> _GeneValues:
    """Read ``gene value`` rows (separated by whitespace or a comma; an optional header line).

    ``parse`` turns a value's text into a value or raises ValueError. A first
    line whose value does not parse is a header unless it starts with an
    Ensembl id. A gene given twice with the same value is kept once (the
    DeepChrome tables repeat seven genes); with two values it is an error.
    """
    text = utf8_text(path, read_bytes(path))
    table = ValuesByGene(path, value_name)
    header_possible = True
    for number, line in enumerate(text_lines(text, path), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) == 1 and "," in line:
            fields = [field.strip() for field in line.split(",")]
        if len(fields) != 2:
            raise InputError(path, f"expected 2 columns (gene id, {value_name}), found {len(fields)}", line=number)
        gene, value_text = fields
        try:
            value = parse(value_text)
        except ValueError as exc:
            if header_possible and not _STARTS_WITH_ENSEMBL_ID.match(gene):
                header_possible = False
                continue
            raise InputError(path, str(exc), line=number, field=value_name) from None
        header_possible = False
        table.add(gene_key(gene), gene, value, value_text, number, value_name)
    if not table.keys:
        raise InputError(path, f"no data lines, expected gene ids with {value_name}")
    return _GeneValues(
        path=path,
        keys=pd.Index(table.keys),
        values=np.asarray(table.values),
        repeated=table.repeated,
    )


def _split_value(text: str) -> str:
    value = text.lower()
    if value not in SPLITS:
        raise ValueError(f"split {text!r} is not one of {', '.join(SPLITS)}")
    return value


def _repeat_note(table: _GeneValues, what: str) -> list[str]:
    if not table.repeated:
        return []
    return [f"{table.path.name}: {table.repeated} rows repeat a gene with the same {what}; each gene is used once"]


def _split_from_file(table: GeneTable, path: Path, notes: list[str]) -> np.ndarray:
    split = _read_gene_values(path, value_name="split", parse=_split_value)
    notes.extend(_repeat_note(split, "split"))
    codes_in_file = np.asarray([SPLIT_CODES[value] for value in split.values], dtype=np.uint8)
    position = split.keys.get_indexer(table.key)
    unmatched = position < 0
    if unmatched.any():
        notes.append(
            f"{path.name}: {int(unmatched.sum())} of {len(table)} genes are not in the split file "
            f"(for example {table.name[np.argmax(unmatched)]}); their split is 'none'"
        )
    return np.where(unmatched, SPLIT_CODES["none"], codes_in_file[position]).astype(np.uint8)


def _split_by_chromosome(table: GeneTable, by_chromosome: dict[str, list[str]], notes: list[str]) -> np.ndarray:
    codes = np.full(len(table), SPLIT_CODES["train"], dtype=np.uint8)
    genes_style = chromosome_style(table.chrom)
    for split_name, chroms in by_chromosome.items():
        for chrom in chroms:
            on_chrom = table.chrom == chrom
            # chr8 given for genes named 8 (or the other way): the same chromosome.
            if not on_chrom.any() and genes_style != MIXED and in_style(chrom, genes_style) != chrom:
                on_chrom = table.chrom == in_style(chrom, genes_style)
                if on_chrom.any():
                    notes.append(f"chromosome split: {chrom} ({split_name}) taken as {in_style(chrom, genes_style)}, "
                                 f"as {table.path.name} names chromosomes {genes_style}-style")
            if not on_chrom.any():
                notes.append(f"chromosome split: no gene of the cell lies on {chrom} ({split_name})")
            codes[on_chrom] = SPLIT_CODES[split_name]
    return codes


def _split_by_fractions(n_genes: int, fractions: tuple[float, float, float], seed: int) -> np.ndarray:
    n_train = min(n_genes, round(fractions[0] * n_genes))
    n_valid = min(n_genes - n_train, round(fractions[1] * n_genes))
    order = np.random.default_rng(seed).permutation(n_genes)
    codes = np.full(n_genes, SPLIT_CODES["test"], dtype=np.uint8)
    codes[order[:n_train]] = SPLIT_CODES["train"]
    codes[order[n_train : n_train + n_valid]] = SPLIT_CODES["valid"]
    return codes
