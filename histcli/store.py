"""The HDF5 dataset store: a link file and one HDF5 file per cell type.

Layout (format 2.0)::

    store.h5                the link file: encoding-type=histcli-store, encoding-version=2.0
      /cells/<cell>         an HDF5 external link to the root of that cell's file, with a
                            path relative to the link file's folder
    store.h5.cells/<cell>.<16 hex>.h5
      /                     encoding-type=histcli-cell, encoding-version=2.0
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

Plain h5py reads ``store.h5`` -> ``/cells/<cell>/counts`` through the links.
Format 1.0 kept every cell inside the one file (``/cells/<cell>`` was a group
with the same contents); it is still read, and ``Store.upgrade`` converts it.

A write never touches another cell's file, so its cost does not grow with the
store. Each new cell is compressed into a private staging file beside the store,
outside any lock; the commit, under an exclusive lock, renames the staged files
into the cells folder under names no other version used, writes a new link file
and renames it over the old one. A killed writer therefore leaves the old link
file, which references only complete files, and readers never see a partial
cell. Cell files no link references any more (replaced, removed, or renamed in by
a writer killed before its link file landed) are deleted by the next commit; a
reader that opened the old link file just before may find its cell's file gone
and simply reopens the link file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from histcli import __version__, interrupt
from histcli.errors import (
    CellBusyError,
    CellExistsError,
    NameNotAllowedError,
    NoStoreError,
    OldStoreFormatError,
    StoreError,
)
from histcli.fsutil import (
    copy_permissions,
    ensure_writable_dir,
    exclusive_lock,
    file_sha256,
    fsync_dir,
    fsync_file,
    hold_locks,
    remove_path,
    remove_stale,
    temp_name,
    written_directly,
)
from histcli.locations import NAME_RULE, default_store_path, is_allowed_name

STORE_ENCODING = "histcli-store"
CELL_ENCODING = "histcli-cell"
FORMAT_VERSION = "2.0"
SUPPORTED_MAJOR = 2
# Format 1.0 kept every cell inside the store file; it is read but not written.
SINGLE_FILE_MAJOR = 1

SPLITS = ("none", "train", "valid", "test")
SPLIT_CODES = {name: code for code, name in enumerate(SPLITS)}


_CHUNK_BYTES = 1 << 19
_GZIP_LEVEL = 4
# A committed cell file: <cell>.<16 hex digits>.h5, a fresh name for every version of a cell.
_CELL_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*\.[0-9a-f]{16}\.h5$")
# How often a reader reopens the link file when a writer replaced it under it.
_READ_ATTEMPTS = 20


def check_cell_name(name: str) -> str:
    """Cell names become HDF5 group and folder names: keep them to a safe alphabet."""
    if not is_allowed_name(name):
        raise NameNotAllowedError("cell", name, NAME_RULE)
    return name


@dataclass
class SourceFile:
    path: str
    sha256: str

    @classmethod
    def of(cls, path) -> "SourceFile":
        return cls(str(Path(path).resolve()), file_sha256(path))

    @classmethod
    def hashing(cls, paths) -> Callable[[], list["SourceFile"]]:
        """Hash the regular files of ``paths`` in a thread while the caller parses them (hashlib
        releases the GIL); the returned function waits for every SourceFile. Anything but a regular
        file is hashed when asked (readers copy pipes first: ``fsutil.readable_inputs``)."""
        from concurrent.futures import ThreadPoolExecutor

        paths = list(paths)
        pool = ThreadPoolExecutor(1)
        futures = [pool.submit(cls.of, path) if Path(path).is_file() else None for path in paths]
        pool.shutdown(wait=False)  # the thread ends when the last file is hashed
        return lambda: [cls.of(path) if future is None else future.result()
                        for path, future in zip(paths, futures, strict=True)]


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


# Attributes the store itself writes on every cell group; every other attribute is the
# source's (CellData.attrs: label rule, orientation, expression file, ...) and is kept as it is.
STORE_ATTRS = frozenset({"encoding-type", "encoding-version", "marks", "bin_size", "window", "tss_offset", "sources",
                         "created", "fingerprint", "histcli_version"})


def source_attrs(attrs: dict) -> dict:
    """A stored cell's attributes that came from its source (the store's own left out)."""
    return {key: value for key, value in attrs.items() if key not in STORE_ATTRS}


#: A cell's ``orientation`` attribute when every gene's bins run 5' to 3' (track input with strands; cells
#: of the other sources have no such attribute and are 5' to 3').
FIVE_TO_THREE = "5' to 3'"


def orientation_unknown(attrs: dict) -> bool:
    """Whether some genes' bins may run 3' to 5': track input whose genes file gave no strand for them."""
    return attrs.get("orientation", FIVE_TO_THREE) != FIVE_TO_THREE


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
    clashing = sorted(STORE_ATTRS & set(cell.attrs))
    if clashing:
        raise StoreError(f"cell {cell.name}: attribute {clashing[0]} is the store's own, not a source's")


class _CellFileMissing(Exception):
    """A cell's external link points at a file that is not there (see ``Store._read``)."""

    def __init__(self, cell: str, filename: str):
        super().__init__(cell, filename)
        self.cell = cell
        self.filename = filename


def _identity(path: Path):
    """What changes when a writer renames a new link file over ``path``."""
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_ino, info.st_mtime_ns, info.st_size


def _major(handle) -> int:
    return int(str(_decode(handle.attrs["encoding-version"])).split(".")[0])


def _require_current_format(path: Path, handle) -> None:
    """Refuse to write to an open store file of format 1.0 (read, not written; ``Store.upgrade``)."""
    if _major(handle) == SINGLE_FILE_MAJOR:
        raise OldStoreFormatError(path, str(_decode(handle.attrs["encoding-version"])))


def _created(handle) -> str | None:
    """When an open store file was first written (None if it does not say)."""
    return _decode(handle.attrs["created"]) if "created" in handle.attrs else None


class Store:
    """A histcli HDF5 store at ``path``; safe for concurrent readers and writers."""

    def __init__(self, path: Path | str | None = None):
        path = Path(path) if path is not None else default_store_path()
        # A link to a store is that store: its cell folder, lock and renamed link file are beside the real
        # file (beside the link, a write replaced the link and put the cells where the store never looks).
        # A link to a pipe or device (/dev/stdout, bash's <(...)) stays as given, to be refused as such.
        linked_file = path.is_symlink() and (path.is_file() or not path.exists())
        self.path = Path(os.path.realpath(path)) if linked_file else path

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    @property
    def cells_dir(self) -> Path:
        """The folder of the cell files, beside the link file."""
        return self.path.with_name(f"{self.path.name}.cells")

    # reading -----------------------------------------------------------------

    def exists(self) -> bool:
        return self.path.is_file()

    def _check_file_or_nothing(self) -> None:
        if self.path.is_dir():
            raise NoStoreError(self.path, f"is a folder, not a store file (e.g. {self.path / 'store.h5'})")
        if written_directly(self.path):
            # A device or pipe (--store /dev/null): a write would rename a new link file over it.
            raise NoStoreError(self.path, "is a device or pipe, not a store file")

    def require(self) -> None:
        """Raise NoStoreError unless the store's file is there (a folder in its place is named as such)."""
        self._check_file_or_nothing()
        if not self.path.exists():
            raise NoStoreError(self.path, "does not exist")

    def _open(self):
        self.require()
        h5py = _h5py()
        try:
            # Files are never modified in place (see the module docstring), so
            # HDF5's own file locks are not needed; they also fail on some
            # cluster file systems. Cell files opened through the links inherit this.
            handle = h5py.File(self.path, "r", locking=False)
        except OSError as exc:
            raise StoreError(f"store {self.path}: cannot be read as HDF5 ({exc})") from None
        try:
            _check_version(handle, STORE_ENCODING, f"store {self.path}")
        except Exception:
            handle.close()
            raise
        return handle

    def _read(self, function):
        """``function(handle)`` on the open link file, again on a fresh one if a writer replaced it meanwhile.

        A commit deletes the files its new link file no longer references, so a
        reader holding the previous link file may find a cell's file gone.
        """
        for _ in range(_READ_ATTEMPTS):
            before = _identity(self.path)
            with self._open() as handle:
                try:
                    return function(handle)
                except _CellFileMissing as exc:
                    missing = exc
            if _identity(self.path) == before:
                break
        raise StoreError(
            f"store {self.path}: the file of cell {missing.cell!r} ({missing.filename}) is missing; "
            f"keep {self.path.name} and its folder {self.cells_dir.name} together"
        )

    def cell_names(self) -> list[str]:
        """Stored cells, sorted; none while the store does not exist (a first write creates it). A folder
        given for the store is an error: no write can create a store there."""
        if not self.exists():
            self._check_file_or_nothing()
            return []
        with self._open() as handle:
            return sorted(handle["cells"].keys()) if "cells" in handle else []

    def _group(self, handle, cell: str):
        if "cells" not in handle or cell not in handle["cells"]:
            known = sorted(handle["cells"].keys()) if "cells" in handle else []
            hint = f"; cells in the store: {', '.join(known)}" if known else "; the store is empty"
            raise StoreError(f"store {self.path}: no cell {cell!r}{hint}")
        try:
            group = handle["cells"][cell]
        except KeyError as exc:
            filename = getattr(handle["cells"].get(cell, getlink=True), "filename", None)
            if filename is None or (self.path.parent / filename).exists():
                raise StoreError(f"store {self.path}: cell {cell!r} cannot be read ({exc})") from None
            raise _CellFileMissing(cell, filename) from None
        _check_version(group, CELL_ENCODING, f"store {self.path}, cell {cell}")
        return group

    def summary(self, cell: str) -> CellSummary:
        return self._read(lambda handle: self._summary(cell, self._group(handle, cell)))

    def summaries(self, cells: Sequence[str] | None = None) -> list[CellSummary]:
        """Summaries of ``cells`` (default: every cell, sorted by name); NoStoreError without a store."""
        def read(handle):
            names = cells
            if names is None:
                names = sorted(handle["cells"].keys()) if "cells" in handle else []
            return [self._summary(name, self._group(handle, name)) for name in names]

        return self._read(read)

    def readable_summaries(self, on_unreadable: Callable[[StoreError], None]) -> list[CellSummary]:
        """Summaries of every cell that can be read, sorted by name; ``on_unreadable(error)`` for each cell
        whose file is missing or damaged (``remove`` clears it), which is left out; NoStoreError without a
        store."""
        try:
            return self.summaries()  # one pass over the link file, as long as every cell reads
        except NoStoreError:
            raise
        except StoreError:
            pass  # a cell cannot be read: cell by cell, to leave out only it
        found = []
        for name in self.cell_names():
            try:
                found.append(self.summary(name))
            except StoreError as exc:
                if name in self.cell_names():  # not removed by another run meanwhile
                    on_unreadable(exc)
        return found

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
            # source_format has a field of its own above.
            attrs={key: value for key, value in source_attrs(attrs).items() if key != "source_format"},
            encoding_version=str(attrs["encoding-version"]),
            stored_bytes=int(stored),
        )

    def load(self, cell: str, splits: Sequence[str] | None = None) -> CellData:
        """Read one cell (or only the genes of ``splits``) into memory."""
        if splits is not None:
            unknown = set(splits) - set(SPLITS)
            if unknown:
                raise StoreError(f"store {self.path}: unknown split {sorted(unknown)[0]!r}; expected one of "
                                 f"{', '.join(SPLITS)}")
        return self._read(lambda handle: self._load(cell, self._group(handle, cell), splits))

    def _load(self, cell: str, group, splits: Sequence[str] | None) -> CellData:
        attrs = {key: _decode(value) for key, value in group.attrs.items()}
        split = group["split"][()]
        if splits is None:
            rows = slice(None)
        else:
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
            attrs=source_attrs(attrs),
            coordinates=coordinates,
            fingerprint=attrs.get("fingerprint"),
            created=attrs.get("created"),
        )

    def gene_ids(self, cell: str, splits: Sequence[str]) -> np.ndarray:
        """The gene ids of some splits of a cell, without reading its counts."""

        def read(handle):
            group = self._group(handle, cell)
            split = group["split"][()]
            ids = np.asarray(group["gene_ids"].asstr()[()], dtype=object)
            return ids[np.isin(split, [SPLIT_CODES[s] for s in splits])]

        return self._read(read)

    def expression(self, cell: str, splits: Sequence[str] | None = None) -> np.ndarray | None:
        """The expression values of some splits of a cell (every gene by default), without reading its counts;
        None for a cell stored without them."""

        def read(handle):
            group = self._group(handle, cell)
            if "expression" not in group:
                return None
            values = group["expression"][()]
            if splits is None:
                return values
            return values[np.isin(group["split"][()], [SPLIT_CODES[s] for s in splits])]

        return self._read(read)

    def fingerprint(self, cell: str) -> str:
        return self._read(lambda handle: _decode(self._group(handle, cell).attrs["fingerprint"]))

    def format_version(self) -> str:
        """The store format of the link file (``1.0`` for a single-file store)."""
        with self._open() as handle:
            return str(_decode(handle.attrs["encoding-version"]))

    # writing -----------------------------------------------------------------

    def _check_paths(self) -> None:
        self._check_file_or_nothing()
        ensure_writable_dir(self.path.parent.resolve(), "store")
        if self.path.exists():
            if not os.access(self.path, os.R_OK):
                raise StoreError(f"store {self.path}: not readable")
            # Permission bits, not os.access: root may write anywhere, but a
            # read-only store says its owner wants it left alone.
            if not os.access(self.path, os.W_OK) or not self.path.stat().st_mode & 0o222:
                raise StoreError(f"store {self.path}: read-only file; make it writable to change it")

    def _require_current_format(self) -> None:
        if self.exists():
            with self._open() as handle:
                _require_current_format(self.path, handle)

    @contextlib.contextmanager
    def reserve(self, cells: Iterable[str]):
        """Hold these cells for this process until the block ends (released on death, too).

        A run that prepares a cell holds it from before its existence check to
        its commit, so a second run preparing the same cell fails at once
        (:class:`CellBusyError`) instead of reading every input and losing at
        the commit; runs preparing other cells never wait.
        """
        self._check_paths()
        folder = self.path.with_name(f".{self.path.name}.locks")
        locks = {cell: folder / f"{check_cell_name(cell)}.preparing" for cell in cells}
        with hold_locks(locks, lambda cell: CellBusyError(self.path, cell)):
            yield

    def check_writable(self, cells: Iterable[str] = (), overwrite: bool = False) -> None:
        """Fail before any slow work if the store cannot take these cells."""
        for cell in cells:
            check_cell_name(cell)
        self._check_paths()
        self._require_current_format()
        if not overwrite and self.exists():
            existing = set(self.cell_names())
            for cell in cells:
                if cell in existing:
                    raise CellExistsError(self.path, cell)

    def write(self, cells: Iterable[CellData], *, overwrite: bool = False, on_staged=None) -> list[str]:
        """Add cells to the store in one atomic step; returns their names.

        ``cells`` may be a generator: each cell is validated, compressed into its
        own staging file and released before the next one is produced. Nothing
        is visible to readers until every cell has been staged and committed.
        """
        self.check_writable()
        staged: dict[str, Path] = {}
        existing = set() if overwrite else set(self.cell_names())
        try:
            for cell in cells:
                interrupt.check()
                validate_cell(cell)
                if cell.name in staged:
                    raise StoreError(f"cell {cell.name!r} is given twice")
                if cell.name in existing:
                    raise CellExistsError(self.path, cell.name)
                staging = temp_name(self.path, "staging")
                staged[cell.name] = staging
                _write_cell_file(staging, cell)
                if on_staged is not None:
                    on_staged(cell.name)
            interrupt.check()
            if staged:
                self._commit(staged, overwrite=overwrite)
        finally:
            for staging in staged.values():
                remove_path(staging)
        return list(staged)

    def remove(self, cells: Sequence[str]) -> None:
        self.check_writable()
        self._commit({}, remove=set(cells))

    def upgrade(self) -> list[str]:
        """Convert a format-1.0 store (every cell in one file) to the current layout in place.

        Returns the cells converted; an empty list when the store is already current.
        The old file stays in place until the new link file replaces it, so a
        killed upgrade leaves the old store as it was.
        """
        self._open().close()  # a missing or foreign store is reported before anything is locked
        self._check_paths()
        h5py = _h5py()
        staged: dict[str, Path] = {}
        with self._lock():
            self._remove_temporaries()
            try:
                with self._open() as old:
                    if _major(old) > SINGLE_FILE_MAJOR:
                        return []
                    for name in sorted(old["cells"].keys()) if "cells" in old else []:
                        interrupt.check()
                        group = old["cells"][name]
                        _check_version(group, CELL_ENCODING, f"store {self.path}, cell {name}")
                        staging = temp_name(self.path, "staging")
                        staged[name] = staging
                        with h5py.File(staging, "w", locking=False) as new:
                            for key in group:
                                group.copy(group[key], new, name=key)
                            for key in group.attrs:
                                new.attrs.create(key, group.attrs[key], dtype=group.attrs.get_id(key).dtype)
                            new.attrs["encoding-version"] = FORMAT_VERSION
                            _fsync_open_file(new)
                    created = _created(old)
                self._publish({}, staged, created)
            finally:
                for staging in staged.values():
                    remove_path(staging)
        return list(staged)

    def _lock(self):
        return exclusive_lock(self.path.with_name(f".{self.path.name}.lock"))

    def _remove_temporaries(self) -> None:
        """Anything left under our temporary names by a killed writer is garbage (lock held)."""
        remove_stale(self.path, "tmp")
        remove_stale(self.path, "staging")

    def _commit(self, staged: dict[str, Path], *, overwrite: bool = False, remove=()) -> None:
        with self._lock():
            self._remove_temporaries()
            links: dict[str, str] = {}
            created = None
            if self.exists():
                with self._open() as old:
                    _require_current_format(self.path, old)
                    cells = old["cells"] if "cells" in old else {}
                    links = {name: cells.get(name, getlink=True).filename for name in cells}
                    created = _created(old)
            for name in staged:
                if name in links and not overwrite:
                    raise CellExistsError(self.path, name)
            for name in remove:
                if name not in links:
                    raise StoreError(f"store {self.path}: no cell {name!r}")
                del links[name]
            self._publish(links, staged, created)

    def _publish(self, links: dict[str, str], staged: dict[str, Path], created: str | None) -> None:
        """Make the store hold ``links`` (cell -> file, relative to the store's folder) and ``staged``;
        ``created``: when the store was first written (None: now).

        Called with the lock held. Staged files move into the cells folder under
        fresh names, a new link file replaces the old one, and cell files no
        link references any more are deleted.
        """
        h5py = _h5py()
        links = dict(links)
        if staged:
            self.cells_dir.mkdir(exist_ok=True)
            for name, staging in staged.items():
                final = self.cells_dir / f"{name}.{secrets.token_hex(8)}.h5"
                if self.exists():
                    copy_permissions(self.path, staging)  # a shared store stays shared
                os.rename(staging, final)
                links[name] = f"{self.cells_dir.name}/{final.name}"
            fsync_dir(self.cells_dir)
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        temp = temp_name(self.path, "tmp")
        try:
            with h5py.File(temp, "w", locking=False) as new:
                new.attrs["encoding-type"] = STORE_ENCODING
                new.attrs["encoding-version"] = FORMAT_VERSION
                new.attrs["histcli_version"] = __version__
                new.attrs["created"] = created or now
                new.attrs["modified"] = now
                cells = new.create_group("cells")
                for name in sorted(links):
                    cells[name] = h5py.ExternalLink(links[name], "/")
            if self.exists():
                copy_permissions(self.path, temp)
            fsync_file(temp)
            os.replace(temp, self.path)
            fsync_dir(self.path.parent)
        finally:
            remove_path(temp)
        self._remove_unreferenced(links.values())

    def _remove_unreferenced(self, targets: Iterable[str]) -> None:
        if not self.cells_dir.is_dir():
            return
        # By file name alone (each is unique): a renamed cells folder must not lose its files.
        referenced = {Path(target).name for target in targets}
        for path in self.cells_dir.iterdir():
            if _CELL_FILE.match(path.name) and path.name not in referenced:
                remove_path(path)


def _read_rows(dataset, rows: np.ndarray) -> np.ndarray:
    """Read sorted rows, in contiguous runs (h5py fancy indexing is slow for many rows)."""
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = np.concatenate(([0], breaks))
    ends = np.concatenate((breaks, [len(rows)]))
    out = np.empty((len(rows),) + dataset.shape[1:], dtype=dataset.dtype)
    for start, end in zip(starts, ends, strict=True):
        out[start:end] = dataset[rows[start] : rows[end - 1] + 1]
    return out


def _fsync_open_file(handle) -> None:
    """Flush an open HDF5 file to disk, so that renaming it into place publishes complete data."""
    handle.flush()
    os.fsync(handle.id.get_vfd_handle())


def _write_cell_file(path: Path, cell: CellData) -> None:
    """Write one cell as the root group of a new HDF5 file at ``path``, flushed to disk."""
    with _h5py().File(path, "w", locking=False) as handle:
        _write_cell(handle, cell)
        _fsync_open_file(handle)


def _chunks(blocks: list[np.ndarray], chunk_genes: int):
    """(first gene, genes x bins x marks array) of each stored chunk, the last one padded with zeros."""
    pending: list[np.ndarray] = []
    held = 0
    start = 0
    for block in blocks:
        while len(block):
            take = block[: chunk_genes - held]
            block = block[len(take):]
            pending.append(take)
            held += len(take)
            if held == chunk_genes:
                yield start, np.concatenate(pending) if len(pending) > 1 else pending[0]
                start, pending, held = start + chunk_genes, [], 0
    if held:
        last = np.zeros((chunk_genes,) + blocks[0].shape[1:], dtype=blocks[0].dtype)
        last[:held] = np.concatenate(pending)
        yield start, last


def _compress_chunk(chunk: np.ndarray) -> bytes:
    """A chunk as HDF5's shuffle and deflate filters store it: byte planes, then zlib."""
    import zlib

    planes = np.ascontiguousarray(chunk).view(np.uint8).reshape(-1, chunk.dtype.itemsize).T
    return zlib.compress(planes.tobytes(), _GZIP_LEVEL)


def _write_compressed_chunks(dataset, blocks: list[np.ndarray], chunk_genes: int) -> None:
    """Compress the counts' chunks on several threads and store them as they are.

    HDF5 would run its filters on one thread; zlib releases the GIL, so
    compressing here and writing the finished chunks directly is faster on
    several cores and stores exactly what the filters would have.
    """
    from concurrent.futures import ThreadPoolExecutor

    workers = max(1, min(4, os.cpu_count() or 1))
    window: list = []
    with ThreadPoolExecutor(workers) as pool:
        for start, chunk in _chunks(blocks, chunk_genes):
            window.append((start, pool.submit(_compress_chunk, chunk)))
            if len(window) >= 2 * workers:  # bounded, so memory stays at a few chunks
                first, future = window.pop(0)
                dataset.id.write_direct_chunk((first, 0, 0), future.result())
        for first, future in window:
            dataset.id.write_direct_chunk((first, 0, 0), future.result())


def _write_cell(group, cell: CellData) -> None:
    h5py = _h5py()
    blocks = cell._blocks()
    n_bins, n_marks = blocks[0].shape[1:]
    dtype = blocks[0].dtype
    group.attrs["encoding-type"] = CELL_ENCODING
    group.attrs["encoding-version"] = FORMAT_VERSION
    chunk_genes = max(1, min(cell.n_genes, _CHUNK_BYTES // (n_bins * n_marks * dtype.itemsize)))
    counts = group.create_dataset(
        "counts",
        shape=(cell.n_genes, n_bins, n_marks),
        dtype=dtype,
        chunks=(chunk_genes, n_bins, n_marks),
        compression="gzip",
        compression_opts=_GZIP_LEVEL,
        shuffle=True,
    )
    counts.attrs["encoding-type"] = "array"
    _write_compressed_chunks(counts, blocks, chunk_genes)
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
