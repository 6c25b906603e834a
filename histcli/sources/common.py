"""Helpers shared by the readers in ``histcli.sources``."""

from __future__ import annotations

import gzip
import re
import zlib
from pathlib import Path

import numpy as np

from histcli.errors import InputError

#: Integral counts above this no longer fit int32 and are stored as int64.
_INT32_MAX = np.iinfo(np.int32).max
#: Whole-number counts from here on do not fit int64 (2**63 is the first float64 beyond it).
_INT64_LIMIT = 2.0**63
#: The largest count the store (and a model's float32 input) can hold.
MAX_COUNT = float(np.finfo(np.float32).max)
#: The smallest number float32 rounds to infinity (half a float32 step above MAX_COUNT):
#: counts must stay below it, so that "3.4028235e38", float32's maximum as printed, is one.
COUNT_OVERFLOW = MAX_COUNT + 2.0**103
#: The largest genomic position held (coordinates are int64).
MAX_POSITION = int(np.iinfo(np.int64).max)


def parse_number(text: str) -> float:
    """``float(text)`` for ASCII numbers only: float() also takes "1_000" and other scripts' digits ("٣")."""
    if not text.isascii() or "_" in text:
        raise ValueError(f"{text!r} is not a number")
    return float(text)


def is_number(text: str) -> bool:
    """Whether :func:`parse_number` takes ``text``."""
    try:
        parse_number(text)
    except ValueError:
        return False
    return True


def parse_integer(text: str) -> int:
    """``int(text)`` for ASCII digits only (see :func:`parse_number`)."""
    if not text.isascii() or "_" in text:
        raise ValueError(f"{text!r} is not an integer")
    return int(text)


def too_large(text: str) -> str:
    """The message for a count or track value beyond what float32 holds."""
    return f"{text} is too large: at most {MAX_COUNT:.8g} (float32) can be stored"

# What errors="surrogateescape" makes of a byte that is not part of UTF-8 text.
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


def not_utf8(path: Path, text: str, line: int) -> InputError | None:
    """The error for a line read with errors="surrogateescape" that holds bytes that are not UTF-8 (such as
    Latin-1 text), else None."""
    escaped = _ESCAPED_BYTE.search(text)
    if escaped is None:
        return None
    return InputError(path, f"not UTF-8 text (byte 0x{ord(escaped.group()) - 0xDC00:02x} at character "
                            f"{escaped.start() + 1}); save the file as UTF-8", line=line)


def text_lines(text: str, path=None) -> list[str]:
    """The lines of a file's text, as ``file_line_break`` and the streaming readers count them: split at
    "\n" (a "\r\n" line loses its "\r"), or at "\r" in a file without any "\n" (old Mac files). Unlike
    str.splitlines, a stray "\r", form feed or U+2028 does not end a line, so a line's number is the one
    ``sed -n`` shows. With ``path``, such a control character inside a line is an InputError naming it: it
    would otherwise end up inside a gene or chromosome name."""
    if not text:
        return []
    line_break = "\n" if "\n" in text else "\r"
    lines = text.split(line_break)
    if lines[-1] == "":
        lines.pop()
    if path is not None:
        # The regular expression only where a quick look finds something that is not printable (it took twice
        # as long as the quick look on a GTF file).
        if not text.replace("\t", " ").replace("\r\n", "  ").replace(line_break, " ").isprintable():
            found = (_CONTROL_OR_STRAY_CR if line_break == "\n" else _CONTROL).search(text)
            if found is not None:
                raise _control_error(path, found.group(), text.count(line_break, 0, found.start()) + 1)
    return [line[:-1] if line.endswith("\r") else line for line in lines]


# Control characters (C0 but tab and the line breaks, DEL, C1) and Unicode's line and paragraph separators.
_CONTROL_CHARACTERS = "\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029"
_CONTROL = re.compile(f"[{_CONTROL_CHARACTERS}]")  # in a text whose lines end at "\r"
_CONTROL_OR_STRAY_CR = re.compile(f"[{_CONTROL_CHARACTERS}]|\r(?!\n|\\Z)")  # in a text whose lines end at "\n"
_CONTROL_IN_LINE = re.compile(f"[{_CONTROL_CHARACTERS}\r\n]")  # in a line without its line break, or a field


def control_character(text: str) -> str | None:
    """The first control character other than tab inside ``text``, a line without its line break or a field of
    one, or None."""
    if text.isprintable():  # the fast path: no control character (and no tab)
        return None
    found = _CONTROL_IN_LINE.search(text)
    return None if found is None else found.group()


def _control_error(path, character: str, line: int) -> InputError:
    return InputError(path, f"control character {character!r} inside the line, expected text fields "
                            "(a stray carriage return, or binary data?)", line=line)


def file_line_break(path: Path) -> str:
    """What ends the lines of a (possibly gzip-compressed) text file, for readers that stream it: "\n" (also
    for "\r\n" files, whose "\r" is whitespace to a number and trailing text to a header) if it holds one,
    else "\r" if it holds that, else "\n", as ``text_lines`` decides for a whole text. Read up to the first
    "\n": a MiB for most files, all of a file whose lines end at "\r"."""
    opener = gzip.open if is_gzip(path) else open
    carriage_return = False
    with opener(path, "rb") as handle:
        while block := handle.read(1 << 20):
            if b"\n" in block:
                return "\n"
            carriage_return = carriage_return or b"\r" in block
    return "\r" if carriage_return else "\n"


def utf8_text(path: Path, data: bytes) -> str:
    """``data``, the bytes of ``path``, as text; bytes that are not UTF-8 are an InputError naming the first line
    holding one (replacing them would turn a damaged gene id into another gene)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass  # the error path: find the line
    lines = enumerate(text_lines(data.decode("utf-8", errors="surrogateescape")), start=1)
    raise next(error for error in (not_utf8(path, text, number) for number, text in lines) if error is not None)


_ENSEMBL = re.compile(r"(ENS[A-Z]*G\d{11})(?:\.\d+)?")


def ensembl_id(name: str) -> str:
    """The Ensembl gene id inside a name ("ENSG00000000003_TSPAN6", "ENSG00000000003.12").

    Names without an Ensembl id are returned unchanged, so other identifiers
    still match when both files use them.
    """
    match = _ENSEMBL.search(name)
    return match.group(1) if match else name


def shown_name(path: Path) -> str:
    """How a message names an input: a file by its name, a pipe (bash's ``<(...)``: /dev/fd/63) as given."""
    return path.name if path.is_file() else str(path)


def recorded_path(path: Path) -> str:
    """How a cell records an input: a file by its absolute path, a pipe as given (its resolved name would be
    the kernel's pipe:[inode])."""
    return str(path.resolve() if path.is_file() else path)


def sources_as_given(cell, given: dict[str, str]):
    """The cell with the sources it read from copies (``fsutil.ReadableInputs``) named as the caller gave
    them, in its sources (a copy's digest is that of what was read) and as the expression table its labels
    came from."""
    import dataclasses

    named = {str(Path(copy).resolve()): path for copy, path in given.items()}
    attrs = dict(cell.attrs)
    for copy, path in given.items():
        if attrs.get("expression_file") == str(Path(copy).resolve()):
            attrs["expression_file"] = path
            # The rule ends with the table as messages name it: the copy's file name.
            rule, name = attrs["label_rule"], Path(copy).name
            attrs["label_rule"] = rule.removesuffix(name) + shown_name(Path(path)) if rule.endswith(name) else rule
    return dataclasses.replace(cell, attrs=attrs,
                               sources=[dataclasses.replace(source, path=named.get(source.path, source.path))
                                        for source in cell.sources])


def reads_inputs_once(*arguments: str):
    """Decorate a reader that returns a cell and may open its ``arguments`` (each a path, or a dict of paths)
    more than once: a pipe among them (bash's ``<(...)``, a FIFO) is read once into a temporary copy
    (``fsutil.readable_inputs``), and errors and the cell's sources name it as given."""
    import functools
    import inspect
    import os

    from histcli.fsutil import readable_inputs

    def decorate(read):
        signature = inspect.signature(read)

        @functools.wraps(read)
        def read_once(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            with readable_inputs() as readable:

                def copied(value):
                    return readable(value) if isinstance(value, str | os.PathLike) else value

                for name in arguments:
                    value = bound.arguments.get(name)
                    bound.arguments[name] = ({key: copied(path) for key, path in value.items()}
                                             if isinstance(value, dict) else copied(value))
                return sources_as_given(read(*bound.args, **bound.kwargs), readable.given)

        return read_once

    return decorate


# Compressed formats that are not read, by their magic bytes: (name, the tool that decompresses them).
_OTHER_COMPRESSION = {b"BZh": ("bzip2", "bunzip2"), b"\xfd7zXZ\x00": ("xz", "unxz"),
                      b"PK\x03\x04": ("zip", "unzip"), b"\x28\xb5\x2f\xfd": ("zstd", "unzstd")}


def refuse_other_compression(path, head: bytes) -> None:
    """An InputError when ``head``, the first bytes of ``path``, start a compressed format other than gzip:
    read as text, it would give errors about binary garbage."""
    for magic, (name, tool) in _OTHER_COMPRESSION.items():
        # bzip2: "BZh", the block size 1-9, then the block magic (pi in BCD), so that text starting "BZh" is text.
        if head.startswith(magic) and (name != "bzip2" or head[3:4].isdigit() and head[4:10] == b"1AY&SY"):
            raise InputError(path, f"is {name}-compressed; only plain text and gzip are read "
                                   f"(decompress it first, e.g. with {tool})")


def is_gzip(path: Path, shown=None) -> bool:
    """Whether the file is gzip-compressed; another compression is an InputError naming ``shown`` (default:
    the path), from the same read of the file's first bytes."""
    with open(path, "rb") as handle:
        head = handle.read(10)
    refuse_other_compression(shown or path, head)
    return head[:2] == b"\x1f\x8b"


_BOM = b"\xef\xbb\xbf"


def read_bytes(path: Path) -> bytes:
    """The whole (possibly gzip-compressed) file without a leading UTF-8 byte-order mark;
    empty or truncated gzip is an InputError."""
    return decoded_bytes(path, read_file_bytes(path))


def read_file_bytes(path: Path) -> bytes:
    """The file's bytes as stored (a pipe can be read once: hash and decode these)."""
    path = Path(path)
    try:
        return path.read_bytes()
    except IsADirectoryError:
        raise InputError(path, "is a folder, expected a file") from None
    except FileNotFoundError:
        raise InputError(path, "no such file") from None


def decoded_bytes(path: Path, raw: bytes) -> bytes:
    """``raw``, the bytes of ``path``, gunzipped if gzip and without a leading UTF-8 byte-order mark."""
    path = Path(path)
    refuse_other_compression(path, raw[:10])
    if raw[:2] != b"\x1f\x8b":
        if path.suffix == ".gz":
            raise InputError(path, "empty file, expected gzip data" if not raw else "not gzip data despite the .gz name")
        return raw.removeprefix(_BOM)
    try:
        return gzip.decompress(raw).removeprefix(_BOM)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(path, f"truncated or corrupt gzip data ({exc})") from None


class CountBlocks:
    """Collects float64 count blocks in their final storage type as they arrive.

    Integral input is kept as int32 (int64 if a value needs it), anything else
    as float32, so a cell never sits in memory at float64 size. A non-integral
    block (or a whole number beyond int64) arriving late converts the earlier
    blocks one at a time. Callers check that values stay below ``COUNT_OVERFLOW``.
    """

    def __init__(self) -> None:
        self.blocks: list[np.ndarray] = []
        self.dtype = np.dtype(np.int32)

    def add(self, block: np.ndarray) -> None:
        if self.dtype != np.float32:
            largest = block.max() if block.size else 0.0
            if largest >= _INT64_LIMIT or not np.array_equal(block, np.floor(block)):
                self._convert(np.dtype(np.float32))
            elif largest > _INT32_MAX and self.dtype == np.int32:
                self._convert(np.dtype(np.int64))
        self.blocks.append(block.astype(self.dtype))

    def _convert(self, dtype: np.dtype) -> None:
        self.dtype = dtype
        for index, block in enumerate(self.blocks):
            self.blocks[index] = block.astype(dtype)

    @property
    def n_genes(self) -> int:
        return sum(len(block) for block in self.blocks)


def labels_from_expression(values: np.ndarray) -> tuple[np.ndarray, float]:
    """DeepChrome's labels: 1 where expression is above the median of all genes given."""
    with np.errstate(over="ignore"):
        threshold = float(np.median(values))
    if not np.isfinite(threshold):
        # The mean of the two middle values overflowed (both near the float64 limit): halve them first.
        threshold = float(np.median(np.asarray(values) / 2) * 2)
    return (values > threshold).astype(np.int8), threshold


class ValuesByGene:
    """Values of a gene table in file order, one per distinct gene key.

    A gene given twice with the same value is kept once (the DeepChrome tables
    repeat seven genes); with two values it is an error naming both lines.
    ``rows`` keeps every row's value, repeats included.
    """

    def __init__(self, path: Path, value_name: str):
        self.path = path
        self.value_name = value_name
        self.keys: list[str] = []
        self.values: list = []
        self.rows: list = []
        self._lines: list[int] = []
        self._first: dict[str, int] = {}

    def add(self, key: str, gene: str, value, value_text: str, line: int, field: str) -> None:
        self.rows.append(value)
        first = self._first.setdefault(key, len(self.keys))
        if first == len(self.keys):
            self.keys.append(key)
            self.values.append(value)
            self._lines.append(line)
        elif self.values[first] != value:
            raise InputError(self.path, f"gene {gene} has {self.value_name} {value_text} here but "
                                        f"{self.values[first]} on line {self._lines[first]}", line=line, field=field)

    @property
    def repeated(self) -> int:
        """Rows that repeat an earlier row's gene and value."""
        return len(self.rows) - len(self.keys)
