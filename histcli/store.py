"""The HDF5 dataset store: one file, one group per cell type.

Layout (format 1.0)::

    /                       encoding-type=histcli-store, encoding-version=1.0
    /cells/<cell>           encoding-type=histcli-cell,  encoding-version=1.0
        counts              genes x bins x marks; int32/int64 when the input is
                            integral, float32 otherwise; chunked along genes, gzip
        gene_ids            UTF-8 strings
        split               enum none/train/valid/test
        expression          float64 (only when known)
        labels              int8 0/1 (only when known)
        chrom, tss, strand  gene coordinates (only for genome-wide track input)
      attributes: marks, bin_size, window, tss_offset, sources (JSON: path and
      SHA-256 of every input file), created, fingerprint, source_format and,
      when labels come from expression, label_threshold and label_rule.

Every write builds a complete new file beside the store under an exclusive lock
and renames it over the old one, so a killed writer leaves the old store intact
and readers never see a partial cell. Cells are first staged in a private file
outside the lock (that is where parsing and compression happen), so concurrent
``prepare`` runs overlap all their work but the short final copy.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from histcli import __version__, interrupt
from histcli.errors import CellExistsError, StoreError
from histcli.fsutil import (
    copy_permissions,
    ensure_writable_dir,
    exclusive_lock,
    file_sha256,
    fsync_dir,
    fsync_file,
    remove_path,
    remove_stale,
    temp_name,
)
from histcli.locations import NAME_RULE, default_store_path, is_allowed_name

STORE_ENCODING = "histcli-store"
CELL_ENCODING = "histcli-cell"
FORMAT_VERSION = "1.0"
SUPPORTED_MAJOR = 1

SPLITS = ("none", "train", "valid", "test")
SPLIT_CODES = {name: code for code, name in enumerate(SPLITS)}


_CHUNK_BYTES = 1 << 19


def check_cell_name(name: str) -> str:
    """Cell names become HDF5 group and folder names: keep them to a safe alphabet."""
    if not is_allowed_name(name):
        raise StoreError(f"cell name {name!r} is not allowed: {NAME_RULE}")
    return name


@dataclass
class SourceFile:
    path: str
    sha256: str

    @classmethod
    def of(cls, path) -> "SourceFile":
        return cls(str(Path(path).resolve()), file_sha256(path))


@dataclass
class CellData:
    """One cell's genes in memory, as sources produce it and as ``Store.load`` returns it.

    ``counts`` may be a list of gene blocks (sources build cells that way to keep
    memory bounded); ``Store.load`` always returns one array.
    """

    name: str
    counts: np.ndarray | list[np.ndarray]
    gene_ids: np.ndarray
    marks: tuple[str, ...]
    bin_size: int
    window: int
    tss_offset: int
    split: np.ndarray
    expression: np.ndarray | None = None
    labels: np.ndarray | None = None
    sources: list[SourceFile] = field(default_factory=list)
    attrs: dict = field(default_factory=dict)
    coordinates: dict[str, np.ndarray] = field(default_factory=dict)
    fingerprint: str | None = None
    created: str | None = None

    @property
    def n_genes(self) -> int:
        return len(self.gene_ids)

    @property
    def n_bins(self) -> int:
        return self._blocks()[0].shape[1]

    def _blocks(self) -> list[np.ndarray]:
        return self.counts if isinstance(self.counts, list) else [self.counts]

    def counts_array(self) -> np.ndarray:
        """The counts as one genes x bins x marks array (joining blocks if needed)."""
        return np.concatenate(self.counts) if isinstance(self.counts, list) else self.counts

    def split_mask(self, split: str) -> np.ndarray:
        return self.split == SPLIT_CODES[split]

    def select(self, mask: np.ndarray) -> "CellData":
        """The genes where ``mask`` is true, as a new CellData sharing this cell's attributes."""
        return CellData(
            name=self.name,
            counts=self.counts_array()[mask],
            gene_ids=self.gene_ids[mask],
            marks=self.marks,
            bin_size=self.bin_size,
            window=self.window,
            tss_offset=self.tss_offset,
            split=self.split[mask],
            expression=None if self.expression is None else self.expression[mask],
            labels=None if self.labels is None else self.labels[mask],
            sources=self.sources,
            attrs=self.attrs,
            coordinates={key: value[mask] for key, value in self.coordinates.items()},
            fingerprint=self.fingerprint,
            created=self.created,
        )


@dataclass
class CellSummary:
    """What ``store list`` and ``store show`` print; read without loading the counts."""

    name: str
    n_genes: int
    split_sizes: dict[str, int]
    n_bins: int
    bin_size: int
    window: int
    tss_offset: int
    marks: tuple[str, ...]
    positive_fraction: float | None
    counts_dtype: str
    has_expression: bool
    created: str
    fingerprint: str
    source_format: str
    sources: list[dict]
    attrs: dict
    encoding_version: str
    stored_bytes: int


def _h5py():
    import h5py

    return h5py


def _split_dtype():
    return _h5py().enum_dtype(SPLIT_CODES, basetype="u1")


def _decode(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return [_decode(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _check_version(obj, expected_type: str, where: str) -> str:
    encoding = _decode(obj.attrs.get("encoding-type"))
    version = _decode(obj.attrs.get("encoding-version"))
    if encoding != expected_type or version is None:
        raise StoreError(f"{where}: not a histcli store (encoding-type {encoding!r})")
    try:
        major = int(str(version).split(".")[0])
    except ValueError:
        raise StoreError(f"{where}: unreadable format version {version!r}") from None
    if major > SUPPORTED_MAJOR:
        raise StoreError(
            f"{where}: written in store format {version}, newer than this histcli "
            f"({__version__}) reads; upgrade histcli"
        )
    return str(version)


def fingerprint_cell(cell: CellData) -> str:
    """SHA-256 over everything a model depends on, so changed data are detected."""
    digest = hashlib.sha256()
    header = {
        "marks": list(cell.marks),
        "bin_size": int(cell.bin_size),
        "window": int(cell.window),
        "tss_offset": int(cell.tss_offset),
        "n_genes": cell.n_genes,
    }
    digest.update(json.dumps(header, sort_keys=True).encode())
    digest.update("\n".join(cell.gene_ids.tolist()).encode())
    digest.update(np.ascontiguousarray(cell.split, dtype=np.uint8).tobytes())
    if cell.labels is not None:
        digest.update(np.ascontiguousarray(cell.labels, dtype=np.int8).tobytes())
    blocks = cell._blocks()
    # The bytes of all blocks in a row: how a cell is cut into blocks must not change its fingerprint.
    digest.update(blocks[0].dtype.str.encode())
    for block in blocks:
        digest.update(np.ascontiguousarray(block).tobytes())
    return digest.hexdigest()


def expression_digest(expression: np.ndarray | None) -> str | None:
    """SHA-256 of a cell's expression values (float64), which regression models learn from.

    Kept apart from the cell's fingerprint, whose algorithm must not change
    (registries hold fingerprints of cells stored long ago).
    """
    if expression is None:
        return None
    return hashlib.sha256(np.ascontiguousarray(expression, dtype=np.float64).tobytes()).hexdigest()


def validate_cell(cell: CellData) -> None:
    """Shape and value checks shared by every source, before anything is written."""
    check_cell_name(cell.name)
    blocks = cell._blocks()
    n = cell.n_genes
    shapes = {block.shape[1:] for block in blocks}
    dtypes = {block.dtype for block in blocks}
    if len(shapes) != 1 or len(dtypes) != 1:
        raise StoreError(f"cell {cell.name}: count blocks disagree in shape or type")
    if sum(len(block) for block in blocks) != n:
        raise StoreError(f"cell {cell.name}: {n} gene ids for a different number of count rows")
    (n_bins, n_marks), = shapes
    if n_marks != len(cell.marks):
        raise StoreError(f"cell {cell.name}: {len(cell.marks)} mark names for {n_marks} columns")
    if dtypes.pop() not in (np.dtype(np.int32), np.dtype(np.int64), np.dtype(np.float32)):
        raise StoreError(f"cell {cell.name}: counts must be int32, int64 or float32")
    if n == 0:
        raise StoreError(f"cell {cell.name}: no genes")
    if len(np.unique(cell.gene_ids)) != n:
        raise StoreError(f"cell {cell.name}: gene ids are not unique")
    for name, values in (("split", cell.split), ("expression", cell.expression), ("labels", cell.labels)):
        if values is not None and len(values) != n:
            raise StoreError(f"cell {cell.name}: {name} has {len(values)} values for {n} genes")
    if cell.labels is not None and not np.isin(cell.labels, (0, 1)).all():
        raise StoreError(f"cell {cell.name}: labels must be 0 or 1")


class Store:
    """A histcli HDF5 store at ``path``; safe for concurrent readers and writers."""

    def __init__(self, path: Path | str | None = None):
        self.path = Path(path) if path is not None else default_store_path()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    # reading -----------------------------------------------------------------

    def exists(self) -> bool:
        return self.path.is_file()

    def _check_not_folder(self) -> None:
        if self.path.is_dir():
            raise StoreError(f"store {self.path}: is a folder; --store names the HDF5 file (e.g. {self.path / 'store.h5'})")

    def _open(self):
        self._check_not_folder()
        if not self.path.exists():
            raise StoreError(
                f"store {self.path} does not exist; create it with 'histcli prepare' "
                "or point --store / HISTCLI_STORE at one"
            )
        h5py = _h5py()
        try:
            # Files are never modified in place (see the module docstring), so
            # HDF5's own file locks are not needed; they also fail on some
            # cluster file systems.
            handle = h5py.File(self.path, "r", locking=False)
        except OSError as exc:
            raise StoreError(f"store {self.path}: cannot be read as HDF5 ({exc})") from None
        try:
            _check_version(handle, STORE_ENCODING, f"store {self.path}")
        except Exception:
            handle.close()
            raise
        return handle

    def cell_names(self) -> list[str]:
        if not self.exists():
            return []
        with self._open() as handle:
            return sorted(handle["cells"].keys()) if "cells" in handle else []

    def _group(self, handle, cell: str):
        if "cells" not in handle or cell not in handle["cells"]:
            known = sorted(handle["cells"].keys()) if "cells" in handle else []
            hint = f"; cells in the store: {', '.join(known)}" if known else "; the store is empty"
            raise StoreError(f"store {self.path}: no cell {cell!r}{hint}")
        group = handle["cells"][cell]
        _check_version(group, CELL_ENCODING, f"store {self.path}, cell {cell}")
        return group

    def summary(self, cell: str) -> CellSummary:
        with self._open() as handle:
            return self._summary(cell, self._group(handle, cell))

    def summaries(self) -> list[CellSummary]:
        if not self.exists():
            return []
        with self._open() as handle:
            names = sorted(handle["cells"].keys()) if "cells" in handle else []
            return [self._summary(name, self._group(handle, name)) for name in names]

    def _summary(self, name: str, group) -> CellSummary:
        attrs = {key: _decode(value) for key, value in group.attrs.items()}
        counts = group["counts"]
        split = group["split"][()]
        sizes = {split_name: int((split == code).sum()) for split_name, code in SPLIT_CODES.items()}
        positive = None
        if "labels" in group:
            labels = group["labels"][()]
            positive = float(labels.mean()) if len(labels) else None
        stored = sum(group[key].id.get_storage_size() for key in group.keys())
        known = {
            "encoding-type", "encoding-version", "marks", "bin_size", "window", "tss_offset",
            "sources", "created", "fingerprint", "source_format",
        }
        return CellSummary(
            name=name,
            n_genes=int(counts.shape[0]),
            split_sizes=sizes,
            n_bins=int(counts.shape[1]),
            bin_size=int(attrs["bin_size"]),
            window=int(attrs["window"]),
            tss_offset=int(attrs["tss_offset"]),
            marks=tuple(attrs["marks"]),
            positive_fraction=positive,
            counts_dtype=str(counts.dtype),
            has_expression="expression" in group,
            created=attrs.get("created", ""),
            fingerprint=attrs.get("fingerprint", ""),
            source_format=attrs.get("source_format", ""),
            sources=json.loads(attrs.get("sources", "[]")),
            attrs={key: value for key, value in attrs.items() if key not in known},
            encoding_version=str(attrs["encoding-version"]),
            stored_bytes=int(stored),
        )

    def load(self, cell: str, splits: Sequence[str] | None = None) -> CellData:
        """Read one cell (or only the genes of ``splits``) into memory."""
        with self._open() as handle:
            group = self._group(handle, cell)
            attrs = {key: _decode(value) for key, value in group.attrs.items()}
            split = group["split"][()]
            if splits is None:
                rows = slice(None)
            else:
                unknown = set(splits) - set(SPLITS)
                if unknown:
                    raise StoreError(f"unknown split {sorted(unknown)[0]!r}; expected one of {SPLITS}")
                rows = np.flatnonzero(np.isin(split, [SPLIT_CODES[s] for s in splits]))

            def read(name):
                if name not in group:
                    return None
                dataset = group[name]
                if isinstance(rows, slice):
                    return dataset[()]
                if len(rows) == 0:
                    return np.empty((0,) + dataset.shape[1:], dtype=dataset.dtype)
                return _read_rows(dataset, rows)

            gene_ids = np.asarray(group["gene_ids"].asstr()[()], dtype=object)
            coordinates = {}
            for key in ("chrom", "tss", "strand"):
                if key in group:
                    values = group[key].asstr()[()] if key != "tss" else group[key][()]
                    coordinates[key] = np.asarray(values)[rows]
            return CellData(
                name=cell,
                counts=read("counts"),
                gene_ids=gene_ids[rows],
                marks=tuple(attrs["marks"]),
                bin_size=int(attrs["bin_size"]),
                window=int(attrs["window"]),
                tss_offset=int(attrs["tss_offset"]),
                split=split[rows],
                expression=read("expression"),
                labels=read("labels"),
                sources=[SourceFile(**s) for s in json.loads(attrs.get("sources", "[]"))],
                attrs={k: v for k, v in attrs.items()
                       if k in ("label_threshold", "label_rule", "source_format", "aggregate", "orientation")},
                coordinates=coordinates,
                fingerprint=attrs.get("fingerprint"),
                created=attrs.get("created"),
            )

    def gene_ids(self, cell: str, splits: Sequence[str]) -> np.ndarray:
        """The gene ids of some splits of a cell, without reading its counts."""
        with self._open() as handle:
            group = self._group(handle, cell)
            split = group["split"][()]
            ids = np.asarray(group["gene_ids"].asstr()[()], dtype=object)
            return ids[np.isin(split, [SPLIT_CODES[s] for s in splits])]

    def expression(self, cell: str, splits: Sequence[str] | None = None) -> np.ndarray | None:
        """The expression values of some splits of a cell (every gene by default), without reading its counts;
        None for a cell stored without them."""

        with self._open() as handle:
            group = self._group(handle, cell)
            if "expression" not in group:
                return None
            values = group["expression"][()]
            if splits is None:
                return values
            return values[np.isin(group["split"][()], [SPLIT_CODES[s] for s in splits])]

    def fingerprint(self, cell: str) -> str:
        with self._open() as handle:
            return _decode(self._group(handle, cell).attrs["fingerprint"])

    # writing -----------------------------------------------------------------

    def check_writable(self, cells: Iterable[str] = (), overwrite: bool = False) -> None:
        """Fail before any slow work if the store cannot take these cells."""
        for cell in cells:
            check_cell_name(cell)
        self._check_not_folder()
        ensure_writable_dir(self.path.parent.resolve(), "store")
        if self.path.exists():
            if not os.access(self.path, os.R_OK):
                raise StoreError(f"store {self.path}: not readable")
            # Permission bits, not os.access: root may write anywhere, but a
            # read-only store says its owner wants it left alone.
            if not os.access(self.path, os.W_OK) or not self.path.stat().st_mode & 0o222:
                raise StoreError(f"store {self.path}: read-only file; make it writable to change it")
        if not overwrite and self.exists():
            existing = set(self.cell_names())
            for cell in cells:
                if cell in existing:
                    raise CellExistsError(self.path, cell)

    def write(self, cells: Iterable[CellData], *, overwrite: bool = False, on_staged=None) -> list[str]:
        """Add cells to the store in one atomic step; returns their names.

        ``cells`` may be a generator: each cell is validated, compressed into a
        private staging file and released before the next one is produced.
        Nothing is visible to readers until every cell has been staged.
        """
        self.check_writable()
        staging = temp_name(self.path, "staging")
        names: list[str] = []
        existing = set() if overwrite else set(self.cell_names())
        try:
            h5py = _h5py()
            with h5py.File(staging, "w", locking=False) as stage:
                cells_group = stage.create_group("cells")
                for cell in cells:
                    interrupt.check()
                    validate_cell(cell)
                    if cell.name in names:
                        raise StoreError(f"cell {cell.name!r} is given twice")
                    if cell.name in existing:
                        raise CellExistsError(self.path, cell.name)
                    _write_cell(cells_group, cell)
                    names.append(cell.name)
                    if on_staged is not None:
                        on_staged(cell.name)
            interrupt.check()
            if names:
                self._commit(staging, names, overwrite=overwrite)
        finally:
            remove_path(staging)
        return names

    def remove(self, cells: Sequence[str]) -> None:
        self.check_writable()
        existing = set(self.cell_names())
        for cell in cells:
            if cell not in existing:
                raise StoreError(f"store {self.path}: no cell {cell!r}")
        self._commit(None, [], remove=set(cells))

    def _commit(self, staging: Path | None, names: list[str], *, overwrite: bool = False, remove=()) -> None:
        h5py = _h5py()
        with exclusive_lock(self.path.with_name(f".{self.path.name}.lock")):
            # Anything left under our temporary names by a killed writer is garbage now.
            remove_stale(self.path, "tmp")
            remove_stale(self.path, "staging")
            temp = temp_name(self.path, "tmp")
            try:
                with h5py.File(temp, "w", locking=False) as new:
                    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
                    new.attrs["encoding-type"] = STORE_ENCODING
                    new.attrs["encoding-version"] = FORMAT_VERSION
                    new.attrs["histcli_version"] = __version__
                    new.attrs["modified"] = created
                    new_cells = new.create_group("cells")
                    if self.exists():
                        with self._open() as old:
                            if "created" in old.attrs:
                                created = _decode(old.attrs["created"])
                            for name in old.get("cells", {}):
                                if name in names and not overwrite:
                                    raise CellExistsError(self.path, name)
                                if name in names or name in remove:
                                    continue
                                old.copy(old["cells"][name], new_cells, name=name)
                    new.attrs["created"] = created
                    if staging is not None:
                        with h5py.File(staging, "r", locking=False) as stage:
                            for name in names:
                                stage.copy(stage["cells"][name], new_cells, name=name)
                if self.exists():
                    copy_permissions(self.path, temp)
                fsync_file(temp)
                os.replace(temp, self.path)
                fsync_dir(self.path.parent)
            finally:
                remove_path(temp)


def _read_rows(dataset, rows: np.ndarray) -> np.ndarray:
    """Read sorted rows, in contiguous runs (h5py fancy indexing is slow for many rows)."""
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = np.concatenate(([0], breaks))
    ends = np.concatenate((breaks, [len(rows)]))
    out = np.empty((len(rows),) + dataset.shape[1:], dtype=dataset.dtype)
    for start, end in zip(starts, ends, strict=True):
        out[start:end] = dataset[rows[start] : rows[end - 1] + 1]
    return out


def _write_cell(parent, cell: CellData) -> None:
    h5py = _h5py()
    blocks = cell._blocks()
    n_bins, n_marks = blocks[0].shape[1:]
    dtype = blocks[0].dtype
    group = parent.create_group(cell.name)
    group.attrs["encoding-type"] = CELL_ENCODING
    group.attrs["encoding-version"] = FORMAT_VERSION
    chunk_genes = max(1, min(cell.n_genes, _CHUNK_BYTES // (n_bins * n_marks * dtype.itemsize)))
    counts = group.create_dataset(
        "counts",
        shape=(cell.n_genes, n_bins, n_marks),
        dtype=dtype,
        chunks=(chunk_genes, n_bins, n_marks),
        compression="gzip",
        compression_opts=4,
        shuffle=True,
    )
    counts.attrs["encoding-type"] = "array"
    start = 0
    for block in blocks:
        counts[start : start + len(block)] = block
        start += len(block)
    ids = group.create_dataset(
        "gene_ids", data=np.asarray(cell.gene_ids, dtype=object), dtype=h5py.string_dtype("utf-8")
    )
    ids.attrs["encoding-type"] = "string-array"
    split = group.create_dataset("split", data=np.asarray(cell.split, dtype=np.uint8), dtype=_split_dtype())
    split.attrs["encoding-type"] = "enum-array"
    if cell.expression is not None:
        group.create_dataset("expression", data=np.asarray(cell.expression, dtype=np.float64))
        group["expression"].attrs["encoding-type"] = "array"
    if cell.labels is not None:
        group.create_dataset("labels", data=np.asarray(cell.labels, dtype=np.int8))
        group["labels"].attrs["encoding-type"] = "array"
    for key, values in cell.coordinates.items():
        if key == "tss":
            data = group.create_dataset(key, data=np.asarray(values, dtype=np.int64))
            data.attrs["encoding-type"] = "array"
        else:
            data = group.create_dataset(
                key, data=np.asarray(values, dtype=object), dtype=h5py.string_dtype("utf-8")
            )
            data.attrs["encoding-type"] = "string-array"
    group.attrs["marks"] = list(cell.marks)
    group.attrs["bin_size"] = int(cell.bin_size)
    group.attrs["window"] = int(cell.window)
    group.attrs["tss_offset"] = int(cell.tss_offset)
    group.attrs["sources"] = json.dumps([vars(source) for source in cell.sources])
    group.attrs["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    group.attrs["fingerprint"] = fingerprint_cell(cell)
    group.attrs["histcli_version"] = __version__
    for key, value in cell.attrs.items():
        group.attrs[key] = value
