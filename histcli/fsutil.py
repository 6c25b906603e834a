"""Atomic writes and inter-process locks shared by the store and the model registry.

Everything histcli keeps (store files, registry entries, prediction caches,
output files) is first written under a temporary name in the destination's
folder and then renamed into place, so a killed process never leaves a
half-written file behind and readers always see a complete old or new version.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import secrets
import shutil
import socket
import sys
import tempfile
from pathlib import Path

from histcli.errors import InputError, StoreError


def _host() -> str:
    return socket.gethostname().split(".")[0] or "host"


def temp_name(final: Path, kind: str) -> Path:
    """A unique hidden sibling of ``final``; host and pid let a cleaner tell stale ones."""
    return final.with_name(f".{final.name}.{kind}-{_host()}-{os.getpid()}-{secrets.token_hex(4)}")


def remove_stale(final: Path, kind: str) -> None:
    """Remove temporaries of ``final`` left by processes of this host that have died."""
    prefix = f".{final.name}.{kind}-{_host()}-"
    for temp in final.parent.glob(f".{final.name}.{kind}-*"):
        pid_text = temp.name[len(prefix):].split("-")[0]
        if not temp.name.startswith(prefix) or not pid_text.isdigit():
            continue
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            remove_path(temp)
        except PermissionError:
            pass


def remove_path(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink()


def fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def copy_permissions(source: Path, target: Path) -> None:
    """Give ``target`` the mode (and, where allowed, the group) of ``source``, which it replaces."""
    import stat

    info = source.stat()
    os.chmod(target, stat.S_IMODE(info.st_mode))
    with contextlib.suppress(PermissionError):
        os.chown(target, -1, info.st_gid)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_output_path(path: Path, what: str) -> None:
    """Fail before any work if ``what`` (e.g. "the report") cannot be written at ``path``; creates nothing."""
    path = Path(path)
    if path.is_dir():
        raise InputError(path, f"is a folder, expected the name of {what} to write")
    if written_directly(path):
        if not os.access(path, os.W_OK):
            raise InputError(path, f"cannot write {what}: permission denied")
        return
    # A symlink's file is replaced where it lies (atomic_path).
    parent = Path(os.path.realpath(path)).parent if path.is_symlink() else path.parent
    if not parent.is_dir():
        problem = f"{parent} is not a folder" if parent.exists() else f"folder {parent} does not exist"
        raise InputError(path, f"cannot write {what}: {problem}")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise InputError(path, f"cannot write {what}: permission denied")


def check_outputs_spare(outputs: list[tuple[str, Path | None, str]], inputs: list, folders: dict[str, Path]
                        ) -> None:
    """Refuse before any work (a usage error) an output that would replace what the command reads or keeps.

    ``outputs``: (option, path or None, what it holds), e.g. ("-o", path, "the predictions"). An output may
    not be one of the ``inputs`` (files as given; "-" and None skipped) or a link to one, lie inside one of
    the ``folders`` (description -> folder: the model's, the store's cell files), or be another output.
    """
    from histcli.errors import UsageError

    given = [(option, Path(path), what) for option, path, what in outputs if path is not None]
    for index, (option, path, what) in enumerate(given):
        if path.exists():
            for source in inputs:
                if source is not None and str(source) != "-" and os.path.exists(source) and \
                        os.path.samefile(source, path):
                    raise UsageError(f"{option} {path} is the input file {source}: {what} would replace it; "
                                     "give another file")
        for description, folder in folders.items():
            if path.resolve().is_relative_to(Path(folder).resolve()):
                raise UsageError(f"{option} {path} is inside {description} {folder}: {what} would replace part "
                                 "of it; give another file")
        for other_option, other, other_what in given[:index]:
            if path.resolve() == other.resolve():
                raise UsageError(f"{option} {path} is also {other_option}: {what} would replace {other_what}; "
                                 "give each its own file")


def written_directly(path: Path) -> bool:
    """Whether an output path holds something other than a file (a device or pipe: /dev/stdout, a FIFO), which is
    written in place, not replaced (check_output_path refuses a folder before this)."""
    return path.exists() and not path.is_file()


@contextlib.contextmanager
def atomic_path(final: Path):
    """Yield a temporary path beside ``final``; on success it replaces ``final`` atomically.

    A symlink keeps pointing at its file, which is the one replaced. A device or pipe (/dev/stdout, a FIFO) is
    yielded itself, to be written directly: nothing there can be replaced atomically, and a rename would put a
    plain file in the device's place."""
    final = Path(final)
    if written_directly(final):
        yield final
        return
    final = Path(os.path.realpath(final))
    temp = temp_name(final, "tmp")
    try:
        yield temp
        fsync_file(temp)
        os.replace(temp, final)
        fsync_dir(final.parent)
    finally:
        remove_path(temp)


@contextlib.contextmanager
def atomic_open(final: Path, mode: str = "w", **kwargs):
    """Open a temporary file for writing that replaces ``final`` when closed without error."""
    with atomic_path(final) as temp:
        with open(temp, mode, **kwargs) as handle:
            yield handle


class LockHeldError(Exception):
    """Another process (or another open of the same file) holds a lock taken with ``wait=False``."""


@contextlib.contextmanager
def exclusive_lock(lock_path: Path, *, wait: bool = True):
    """Hold the lock file until the block ends; released on exit or on death.

    With ``wait`` the call blocks until the lock is free; without it, a lock
    held elsewhere raises :class:`LockHeldError` at once. Lock files are never
    deleted (a deleted lock could be held twice), and are opened read-only,
    which flock allows, so users sharing a store need no write permission on
    a lock another user created.
    """
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDONLY | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeldError(lock_path) from None
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def hold_locks(locks: dict, busy):
    """Hold every lock file of ``locks`` (key: path) until the block ends, without waiting: the first
    one held elsewhere raises ``busy(key)``, and those taken before it are let go."""
    with contextlib.ExitStack() as held:
        for key, lock_path in locks.items():
            try:
                held.enter_context(exclusive_lock(lock_path, wait=False))
            except LockHeldError:
                raise busy(key) from None
        yield


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def exchange_paths(first: Path, second: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux renameat2); False if unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    result = renameat2(
        _AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE
    )
    if result == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(second))


def replace_dir(new: Path, final: Path) -> None:
    """Put the complete folder ``new`` at ``final``, replacing any folder there.

    With an existing ``final`` the two are swapped atomically where the kernel
    allows it, so readers never see the entry missing; elsewhere the old folder
    is moved aside first.
    """
    if not final.exists():
        os.rename(new, final)
        fsync_dir(final.parent)
        return
    if exchange_paths(new, final):
        remove_path(new)  # now holds the old folder
    else:
        old = temp_name(final, "old")
        os.rename(final, old)
        os.rename(new, final)
        remove_path(old)
    fsync_dir(final.parent)


def ensure_writable_dir(folder: Path, what: str) -> None:
    """Create ``folder`` if needed and fail early, with a clear message, if it is not writable.

    A real probe file is created because permission bits do not tell the whole
    story (root, read-only mounts, special file systems).
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"{what} {folder}: cannot create folder ({exc.strerror})") from None
    probe = temp_name(folder / "probe", "tmp")
    try:
        probe.touch(exist_ok=False)
    except OSError as exc:
        raise StoreError(f"{what} {folder}: folder is not writable ({exc.strerror})") from None
    probe.unlink()


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks (source files and weights alike)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ReadableInputs:
    """Input files that readers may open more than once (to sniff gzip, check the first line, parse).

    stdin (``-``), pipes and bash's process substitution ``<(...)`` can be read only once: calling
    the object with such a source copies it into a temporary file of the same name (so messages that
    quote the file's name still read right, and memory stays bounded) and returns that file; a
    regular file is returned as it is. ``given`` maps each copy to the input as the user gave it.
    Use it through :func:`readable_inputs`.
    """

    def __init__(self, stack: contextlib.ExitStack):
        self._stack = stack
        self.given: dict[str, str] = {}

    def __call__(self, source, expected: str = "a file") -> Path | None:
        if source is None:
            return None
        if source != "-":
            path = Path(source)
            if not path.exists():
                raise InputError(path, "no such file")
            if path.is_dir():
                raise InputError(path, f"is a folder, expected {expected}")
            if path.is_file():
                return path
        copy = Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix="histcli-input-")))
        copy /= "stdin" if source == "-" else Path(source).name
        with open(copy, "wb") as handle:
            if source == "-":
                shutil.copyfileobj(sys.stdin.buffer, handle, length=1 << 20)
            else:
                with open(source, "rb") as stream:
                    shutil.copyfileobj(stream, handle, length=1 << 20)
        self.given[str(copy)] = "<stdin>" if source == "-" else str(source)
        return copy


@contextlib.contextmanager
def readable_inputs():
    """A :class:`ReadableInputs` whose copies live until the block ends; an InputError leaving the
    block that names a copy names the input as given instead."""
    with contextlib.ExitStack() as stack:
        inputs = ReadableInputs(stack)
        try:
            yield inputs
        except InputError as error:
            if error.path not in inputs.given:
                raise
            raise error.naming(inputs.given[error.path]) from None
