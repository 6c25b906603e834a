"""Helpers shared by the readers in ``histcli.sources``."""

from __future__ import annotations

import gzip
import io
import re
import zlib
from pathlib import Path

import numpy as np

from histcli.errors import InputError

#: Integral counts above this no longer fit int32 and are stored as int64.
_INT32_MAX = np.iinfo(np.int32).max

_ENSEMBL = re.compile(r"(ENS[A-Z]*G\d{11})(?:\.\d+)?")


def ensembl_id(name: str) -> str:
    """The Ensembl gene id inside a name ("ENSG00000000003_TSPAN6", "ENSG00000000003.12").

    Names without an Ensembl id are returned unchanged, so other identifiers
    still match when both files use them.
    """
    match = _ENSEMBL.search(name)
    return match.group(1) if match else name


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def read_bytes(path: Path) -> bytes:
    """The whole (possibly gzip-compressed) file; empty or truncated gzip is an InputError."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except IsADirectoryError:
        raise InputError(path, "is a folder, expected a file") from None
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    if raw[:2] != b"\x1f\x8b":
        if path.suffix == ".gz":
            raise InputError(path, "empty file, expected gzip data" if not raw else "not gzip data despite the .gz name")
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(path, f"truncated or corrupt gzip data ({exc})") from None


def open_text(path: Path) -> io.TextIOBase:
    """A text stream over a plain or gzip file, with gzip damage reported as InputError."""
    return io.StringIO(read_bytes(path).decode("utf-8", errors="replace"))


class CountBlocks:
    """Collects float64 count blocks in their final storage type as they arrive.

    Integral input is kept as int32 (int64 if a value needs it), anything else
    as float32, so a cell never sits in memory at float64 size. A non-integral
    block arriving late converts the earlier blocks one at a time.
    """

    def __init__(self) -> None:
        self.blocks: list[np.ndarray] = []
        self.dtype = np.dtype(np.int32)

    def add(self, block: np.ndarray) -> None:
        if self.dtype != np.float32:
            if not np.array_equal(block, np.floor(block)):
                self._convert(np.dtype(np.float32))
            elif block.size and block.max() > _INT32_MAX and self.dtype == np.int32:
                self._convert(np.dtype(np.int64))
        self.blocks.append(block.astype(self.dtype))

    def _convert(self, dtype: np.dtype) -> None:
        self.dtype = dtype
        for index, block in enumerate(self.blocks):
            self.blocks[index] = block.astype(dtype)

    @property
    def n_genes(self) -> int:
        return sum(len(block) for block in self.blocks)


def finalize_counts(blocks: list[np.ndarray]) -> list[np.ndarray]:
    """Give float64 count blocks one storage type: int32/int64 when integral, else float32.

    NaN, infinite and negative values must have been rejected before.
    """
    collected = CountBlocks()
    for block in blocks:
        collected.add(block)
    return collected.blocks


def labels_from_expression(values: np.ndarray) -> tuple[np.ndarray, float]:
    """DeepChrome's labels: 1 where expression is above the median of all genes given."""
    threshold = float(np.median(values))
    return (values > threshold).astype(np.int8), threshold


def read_two_column_table(path: Path, *, value_name: str, numeric: bool, sep: str | None = None):
    """Read ``gene<sep>value`` lines (an optional header is detected) into two arrays.

    Returns (ids, values). Numeric values must parse and be finite; a
    duplicate id is an error naming both lines.
    """
    text = read_bytes(path).decode("utf-8", errors="replace")
    lines = text.splitlines()
    if not lines:
        raise InputError(path, f"empty file, expected gene ids with {value_name}")
    ids: list[str] = []
    values: list = []
    line_numbers: list[int] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split(sep) if sep else line.split()
        if len(fields) != 2:
            raise InputError(path, f"expected 2 columns (gene id, {value_name}), found {len(fields)}", line=number)
        gene, value = fields[0].strip(), fields[1].strip()
        if numeric:
            try:
                number_value = float(value)
            except ValueError:
                if not ids:
                    continue  # a header line
                raise InputError(path, f"{value!r} is not a number", line=number, field=value_name) from None
            if not np.isfinite(number_value):
                raise InputError(path, f"{value!r} is not a finite number", line=number, field=value_name)
            values.append(number_value)
        else:
            if not ids and value.lower() in (value_name.lower(), "split", "fold", "set"):
                continue  # a header line
            values.append(value)
        ids.append(gene)
        line_numbers.append(number)
    if not ids:
        raise InputError(path, f"no data lines, expected gene ids with {value_name}")
    id_array = np.asarray(ids, dtype=object)
    unique, counts = np.unique(id_array, return_counts=True)
    if (counts > 1).any():
        dup = unique[counts > 1][0]
        first, second = [line_numbers[i] for i, gene in enumerate(ids) if gene == dup][:2]
        raise InputError(path, f"gene {dup} appears twice (also on line {first})", line=second)
    return id_array, (np.asarray(values, dtype=np.float64) if numeric else np.asarray(values, dtype=object))
