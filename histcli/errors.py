"""Exceptions raised by the histcli library, and the one map from them to what users see.

Library code raises these with plain messages (what is wrong, in library terms) and
the facts as fields; the command line turns any of them into a one-line message on
stderr, with a hint in its own words (which option to pass), and an exit code (see
:func:`describe`).
"""

from __future__ import annotations

import errno
import re
from pathlib import Path
from typing import Callable

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_PIPE_CLOSED = 141


def printable(text: str) -> str:
    """``text`` as it is when every character of it prints, else as a Python literal with the others escaped:
    a file's text (a header field) printed raw could recolour or clear the terminal, or break the line."""
    return text if text.isprintable() else repr(text)


class HistcliError(Exception):
    """Base class: a problem with the user's data, models, store or arguments."""

    exit_code = EXIT_ERROR


class InputError(HistcliError):
    """A user file does not hold what was expected; names the file, line and field."""

    def __init__(self, path, problem: str, *, line: int | None = None, field: str | None = None):
        self.path = str(path) if path is not None else None
        self.line = line
        self.field = field
        self.problem = problem
        super().__init__(self._message())

    def _message(self) -> str:
        where = self.path or "input"
        if self.line is not None:
            where += f", line {self.line}"
        if self.field is not None:
            where += f", field {printable(self.field)}"
        return f"{where}: {self.problem}"

    def naming(self, path) -> InputError:
        """The same error (same type and fields) naming ``path``: the user's input, e.g. ``<stdin>``,
        instead of the temporary copy of it that was read."""
        renamed = type(self).__new__(type(self))
        renamed.__dict__.update(self.__dict__, path=str(path))
        renamed.args = (renamed._message(),)
        return renamed


class MissingGenesError(InputError):
    """Genes of a cell lack expression or track signal; a caller may leave them out (``drop_missing``)."""

    def __init__(self, path, problem: str, *, missing: int, total: int, example: str | None = None):
        self.missing = missing
        self.total = total
        self.example = example
        super().__init__(path, problem)


class StoreError(HistcliError):
    """The dataset store is missing, unreadable, or lacks what was asked for."""


class OldStoreFormatError(StoreError):
    """A store in a format that is still read but no longer written (``Store.upgrade`` converts it)."""

    def __init__(self, store, version: str):
        self.store = str(store)
        self.version = version
        super().__init__(f"store {store}: format {version} (one file) is read but no longer written")


class NoStoreError(StoreError):
    """The store asked for does not exist, or names a folder rather than the store's file."""

    def __init__(self, store, problem: str):
        self.store = str(store)
        self.problem = problem
        super().__init__(f"store {store}: {problem}")


class CellExistsError(StoreError):
    """Writing a cell that the store already holds, without ``overwrite``."""

    def __init__(self, store, cell: str):
        self.store = str(store)
        self.cell = cell
        super().__init__(f"{store}: cell {cell!r} already exists")


class CellBusyError(StoreError):
    """Another process is preparing the cell this one was asked to write."""

    def __init__(self, store, cell: str):
        self.store = str(store)
        self.cell = cell
        super().__init__(f"{store}: cell {cell!r} is being prepared by another histcli process right now")


class ModelError(HistcliError):
    """A registry entry is missing, damaged or does not fit the data."""


class DivergedError(ModelError):
    """Training produced a non-finite loss or prediction."""

    def __init__(self, epoch: int, loss: float, during: str = "training"):
        self.epoch = epoch
        self.loss = loss
        super().__init__(f"{during} diverged at epoch {epoch} (loss {loss:.4g})")


class ModelTaskError(ModelError):
    """One model name with entries of two tasks: evaluate, compare and report read a model as one task (its
    metric, its summary across cells). ``cells_by_task``: task name -> cells of the model's entries;
    ``writing``: (task, cell) of an entry refused because of them."""

    def __init__(self, name: str, cells_by_task: dict[str, list[str]], writing: tuple[str, str] | None = None):
        self.name = name
        self.cells_by_task = cells_by_task
        self.writing = writing
        held = " and ".join(f"{task} entries (cells {', '.join(cells)})" for task, cells in cells_by_task.items())
        if writing is not None:
            task, cell = writing
            super().__init__(f"model {name!r} holds {held}; a {task} entry for cell {cell!r} needs another model "
                             "name")
        else:
            super().__init__(f"model {name!r} holds {held}; one model name is one task: train one task's cells "
                             "again under another name")


class ModelExistsError(ModelError):
    """Saving a model entry that the registry already holds, without ``overwrite``.

    ``differs``: the settings in which the stored entry differs from the one asked for, if known.
    """

    def __init__(self, registry, name: str, cell: str, *, differs: tuple[str, ...] = ()):
        self.registry = str(registry)
        self.name = name
        self.cell = cell
        self.differs = tuple(differs)
        other = f" with other settings ({', '.join(self.differs)})" if self.differs else ""
        super().__init__(f"model {name!r} for cell {cell!r} already exists in {registry}{other}")


class ChangedDataError(ModelError):
    """A model's own cell no longer holds the data it was trained on (its test genes may have been seen)."""

    def __init__(self, store, cell: str, model: str, *, trained: str, current: str, what: str = "fingerprint"):
        self.store = str(store)
        self.cell = cell
        self.model = model
        self.trained = trained
        self.current = current
        self.what = what  # "fingerprint", or "expression values" (digests) for a regression model
        super().__init__(f"cell {cell} in {store} changed since model {model!r} was trained on it "
                         f"({what} {trained[:12]} then, {current[:12]} now)")


class NoExpressionError(HistcliError):
    """A regression model asked to learn from, or be scored on, a cell that has labels only."""

    def __init__(self, cell: str):
        self.cell = cell
        super().__init__(f"cell {cell} has no expression values, only labels; a regression model needs them")


class UnlabelledCellError(HistcliError):
    """Metrics asked for on a cell prepared without expression."""

    def __init__(self, cell: str):
        self.cell = cell
        super().__init__(f"cell {cell} has no labels (prepared without expression)")


class EmptySplitError(HistcliError):
    """A cell has no genes in the split asked for."""

    def __init__(self, cell: str, split: str | None, purpose: str):
        self.cell = cell
        self.split = split
        from histcli.splits import split_genes  # splits imports this module

        super().__init__(f"cell {cell} has no {split_genes(split)} to {purpose}")


class UsageError(HistcliError):
    """Arguments that cannot work together; exit code 2 like other usage errors."""

    exit_code = EXIT_USAGE
    about_an_option = True  # the command line's message points to the command's help


class EnvironmentVariableError(UsageError):
    """A histcli environment variable's value cannot work (no option of any command's help sets it)."""

    about_an_option = False


class SettingError(UsageError):
    """One setting's value cannot work. ``setting`` is the library's parameter name; the command
    line names its option instead (see :func:`describe`)."""

    def __init__(self, setting: str, value, problem: str):
        self.setting = setting
        self.value = value
        self.problem = problem
        super().__init__(f"{_setting_said(setting, value)}: {problem}")


def _setting_said(setting: str, value) -> str:
    """A setting and its value as a message gives them; a setting left out (None) is "not given"."""
    return f"{setting} not given" if value is None else f"{setting} {value!r}"


class ColumnNeededError(SettingError):
    """A table of several value columns was given (``setting``) without naming the one to read
    (``column_setting``)."""

    def __init__(self, setting: str, path, problem: str, *, column_setting: str):
        self.column_setting = column_setting
        super().__init__(setting, str(path), problem)


class ChoiceError(SettingError):
    def __init__(self, setting: str, value, choices):
        self.choices = tuple(choices)
        super().__init__(setting, value, f"expected one of {', '.join(self.choices)}")


class ModelBusyError(ModelError):
    """Another process is training (or tuning) the entry this one was asked to write."""

    def __init__(self, registry, name: str, cell: str):
        self.registry = str(registry)
        self.name = name
        self.cell = cell
        super().__init__(f"model {name!r} for cell {cell!r} is being trained into {registry} by another "
                         f"histcli process right now")


class ConflictError(UsageError):
    """Settings that cannot be combined; ``settings`` are library parameter names."""

    def __init__(self, settings, reason: str):
        self.settings = tuple(settings)
        self.reason = reason
        super().__init__(f"{' and '.join(self.settings)} cannot be combined: {reason}")


class NameNotAllowedError(UsageError):
    """A cell or model name outside the one name rule (``histcli.locations.NAME_RULE``); ``kind`` is
    ``cell`` or ``model``."""

    def __init__(self, kind: str, name: str, rule: str):
        self.kind = kind
        self.name = name
        self.rule = rule
        super().__init__(f"{kind} name {name!r} is not allowed: {rule}")


class HyperparameterError(UsageError, ModelError):
    """A hyperparameter an architecture does not have, or a value it cannot take: a usage error (exit
    code 2) that is also a ModelError, as the architecture's own checks are."""


class MissingExtraError(HistcliError):
    def __init__(self, package: str, extra: str, purpose: str):
        super().__init__(
            f"{purpose} needs the optional package {package}; "
            f"install it with: pip install 'histcli[{extra}]'"
        )


class StdoutClosed(Exception):
    """The reader of stdout went away (``histcli ... | head -1``)."""


# The command line's one map from exceptions to what users see (after huggingface_hub's
# cli/_errors.py): library messages name settings and state facts; the hints below say
# which option changes the outcome, in the command line's words.

def option_name(setting: str) -> str:
    """The command line's option for a library setting (``split_file``: ``--split-file``)."""
    return "--" + setting.replace("_", "-")


_HINTS: list[tuple[type, Callable[[BaseException], str]]] = [
    (OldStoreFormatError, lambda exc: f"{exc}; convert it once with 'histcli store upgrade --store {exc.store}'"),
    (NoStoreError, lambda exc: f"{exc}; create it with 'histcli prepare', or point --store / HISTCLI_STORE at one"),
    (DivergedError, lambda exc: f"{exc}; try a smaller --lr"),
    (CellExistsError, lambda exc: f"{exc}; pass --overwrite to replace it"),
    (CellBusyError, lambda exc: f"{exc}; wait for it to end"),
    (ModelExistsError, lambda exc: f"{exc}; pass --overwrite to replace it"),
    (ModelBusyError, lambda exc: f"{exc}; wait for it to end, or choose another --name"),
    (MissingGenesError, lambda exc: f"{exc}; pass --drop-missing to leave them out"),
    (ChangedDataError, lambda exc: f"{exc}; retrain it, or pass --allow-changed-data to evaluate anyway"),
    (UnlabelledCellError, lambda exc: f"{exc}; use 'histcli predict --from-store' for predictions without evaluation"),
    (NoExpressionError, lambda exc: f"{exc} (attach them with 'histcli prepare ... --expression FILE')"),
    (EmptySplitError, lambda exc: f"{exc}; choose another --split"),
    (ColumnNeededError, lambda exc: f"{option_name(exc.setting)} {exc.value!r}: {exc.problem}; "
                                    f"pick one with {option_name(exc.column_setting)}"),
    (SettingError, lambda exc: f"{_setting_said(option_name(exc.setting), exc.value)}: {exc.problem}"),
    # Hyperparameters come from --param (tune's searched ones are reported as --search settings).
    (HyperparameterError, lambda exc: f"--param: {exc}"),
    (ConflictError, lambda exc: f"{' and '.join(map(option_name, exc.settings))} cannot be combined: {exc.reason}"),
]


def describe(exc: BaseException) -> tuple[str, int]:
    """Map an exception to a one-line user message and an exit code; (``""``, -1) for a bug."""
    if isinstance(exc, HistcliError):
        for kind, word in _HINTS:
            if isinstance(exc, kind):
                return word(exc), exc.exit_code
        return str(exc), exc.exit_code
    if _out_of_memory(exc):
        if "cuda" in str(exc).lower():
            return "out of memory on the GPU; try a smaller --batch-size, or --device cpu", EXIT_ERROR
        return "out of memory; try a smaller --batch-size, or fewer cells or genes at a time", EXIT_ERROR
    if _errno(exc) == errno.ENOSPC:
        return f"{_name(exc)}no space left on device; free some space or write elsewhere", EXIT_ERROR
    if _errno(exc) == errno.EROFS:
        return f"{_name(exc)}read-only file system; write elsewhere", EXIT_ERROR
    if isinstance(exc, PermissionError) or _errno(exc) == errno.EACCES:
        return f"{_name(exc)}permission denied", EXIT_ERROR
    if isinstance(exc, FileNotFoundError):
        return f"{_name(exc)}no such file or directory", EXIT_ERROR
    if isinstance(exc, IsADirectoryError):
        return f"{_name(exc)}is a directory, expected a file", EXIT_ERROR
    return "", -1


def _out_of_memory(exc: BaseException) -> bool:
    """Python's and numpy's MemoryError, and torch's (torch.OutOfMemoryError, a RuntimeError, on CUDA
    and on CPU; older torch raises a plain RuntimeError from its CPU allocator)."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    return isinstance(exc, RuntimeError) and "DefaultCPUAllocator: can't allocate memory" in str(exc)


def _errno(exc: BaseException) -> int | None:
    """An OSError's errno; h5py's errors carry it only in their text (``errno = 28``)."""
    if not isinstance(exc, OSError):
        return None
    if exc.errno is not None:
        return exc.errno
    found = re.search(r"errno = (\d+)", str(exc))
    return int(found.group(1)) if found else None


def _name(exc: OSError) -> str:
    """The file an OS error names, as a message's prefix; a write to stdout (or by h5py) names none."""
    return f"{Path(exc.filename)}: " if exc.filename else ""
