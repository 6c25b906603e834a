"""The model registry: one folder per (model name, cell).

    <models>/<name>/<cell>/
        weights.safetensors    the module's parameters (never pickle); a seed
                               ensemble holds weights-seed<S>.safetensors per
                               member instead, listed in metadata "members"
        config.json            everything needed to rebuild and feed the model:
                               architecture, hyperparameters, training settings,
                               input description (marks, bins, bin size,
                               transform) and the data it was trained on
        metadata.json          results and provenance: best epoch, validation
                               metric (best_valid_auc, or best_valid_pearson
                               for regression), history, timings, versions, weights SHA-256
        predictions/           cached predictions (see histcli.evaluation)

An entry is built in a hidden temporary folder and moved into place in one
rename (an atomic swap when it replaces an older entry), so readers and
parallel trainers never see a half-written entry.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from histcli.errors import (
    HyperparameterError,
    ModelBusyError,
    ModelError,
    ModelExistsError,
    ModelTaskError,
    NameNotAllowedError,
)
from histcli.fsutil import (
    ensure_writable_dir,
    exclusive_lock,
    file_sha256,
    fsync_file,
    hold_locks,
    remove_path,
    remove_stale,
    replace_dir,
    temp_name,
)
from histcli.locations import NAME_RULE, default_models_path, is_allowed_name

ENTRY_FORMAT = "histcli-model"
ENTRY_VERSION = "1.0"
WEIGHTS = "weights.safetensors"
CONFIG = "config.json"
METADATA = "metadata.json"

def check_model_name(name: str) -> str:
    if not is_allowed_name(name):
        raise NameNotAllowedError("model", name, NAME_RULE)
    return name


@dataclass(frozen=True)
class InputSpec:
    """How a model's inputs were made from a cell: what ``evaluate``, ``predict`` and ``explain`` reproduce.

    ``config.json`` holds it under ``input``; this is its one definition.
    """

    marks: tuple[str, ...]
    n_bins: int
    bin_size: int
    window: int
    tss_offset: int
    transform: str
    mirror: bool = False  # genes of unknown orientation: predictions average both orientations
    source_format: str | None = None  # how track values became bin values, so that predict --track does the same
    aggregate: str | None = None

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "marks": list(self.marks)}

    @classmethod
    def from_json(cls, values: dict, where) -> InputSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        missing = [key for key in required if key not in values]
        if missing:
            raise ModelError(f"{where}: damaged, input.{', input.'.join(missing)} missing")
        chosen = {key: value for key, value in values.items() if key in known}
        return cls(**{**chosen, "marks": tuple(values["marks"])})


@dataclass(frozen=True)
class DataSpec:
    """The cell a model learnt from, as ``config.json`` holds it under ``data``."""

    store: str
    cell: str
    fingerprint: str  # of the cell when trained (histcli.store.fingerprint_cell)
    split_sizes: dict
    expression_sha256: str | None = None  # regression: the expression values learnt from

    def to_json(self) -> dict:
        values = dataclasses.asdict(self)
        return values if self.expression_sha256 is not None else {k: v for k, v in values.items()
                                                                   if k != "expression_sha256"}

    @classmethod
    def from_json(cls, values: dict) -> DataSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{"fingerprint": "", "split_sizes": {}, "store": "", "cell": "",
                      **{key: value for key, value in values.items() if key in known}})


@dataclass
class Entry:
    """A registry entry on disk: its folder, configuration and metadata."""

    path: Path
    config: dict
    metadata: dict

    @property
    def name(self) -> str:
        return self.config["name"]

    @property
    def cell(self) -> str:
        return self.config["cell"]

    @property
    def weights_path(self) -> Path:
        return self.path / WEIGHTS

    # Parsed once per entry: predictions, explanations and evaluation read them per batch.
    @functools.cached_property
    def input(self) -> InputSpec:
        return InputSpec.from_json(self.config["input"], self.path / CONFIG)

    @functools.cached_property
    def data(self) -> DataSpec:
        return DataSpec.from_json(self.config["data"])

    @functools.cached_property
    def task(self):
        """What the model predicts (histcli.tasks): labels, or expression levels."""
        from histcli.tasks import task_from_config

        return task_from_config(self.config)

    @property
    def selection_metric(self) -> str:
        return self.metadata.get("selection_metric", "auc")

    @property
    def best_valid_score(self) -> float:
        """The validation metric that selected the weights (AUC, or Pearson r for regression)."""
        return self.metadata[f"best_valid_{self.selection_metric}"]

    @property
    def refit(self) -> bool:
        """Whether the weights learnt from the validation genes too (refit on train + valid)."""
        return bool(self.metadata.get("refit", False))

    @property
    def members(self) -> list[dict]:
        """The members of a seed ensemble (seed, weights file, results); empty for a single model."""
        return self.metadata.get("members", [])

    @property
    def seeds(self) -> list[int]:
        """The training seed, or each ensemble member's."""
        if self.members:
            return [member["seed"] for member in self.members]
        return [self.config["training"]["seed"]]

    def weight_files(self) -> list[Path]:
        """The weights file of a single model, or of each ensemble member."""
        if self.members:
            return [self.path / member["weights"] for member in self.members]
        return [self.weights_path]

    def load_state(self, device: str = "cpu", path: Path | None = None) -> dict:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = path or self.weights_path
        try:
            return load_file(path, device=device)
        except SafetensorError as exc:
            raise ModelError(f"{path}: damaged weights file ({exc})") from None
        except OSError as exc:
            # safetensors' errors carry no file name (an entry removed by `models rm` while being read):
            # give it, so that the one-line message names the file (histcli.errors.describe).
            raise type(exc)(exc.errno, exc.strerror or str(exc), str(path)) from None

    def build_module(self, device: str = "cpu"):
        """The trained torch module, in eval mode, on ``device``.

        A seed ensemble becomes one module combining its members as the task
        says: the logit of the mean of their probabilities, or the mean of
        their outputs (histcli.models._ensemble).
        """
        from histcli import models

        arch = models.get(self.config["architecture"])
        modules = []
        for path in self.weight_files():
            try:
                module = arch.build(self.input.n_bins, len(self.input.marks), self.config["hyperparameters"])
            except HyperparameterError as exc:  # the stored entry's, not a --param the user gave
                raise ModelError(f"{self.path / CONFIG}: {exc}") from None
            try:
                module.load_state_dict(self.load_state(device, path))
            except RuntimeError as exc:
                raise ModelError(f"{path}: weights do not fit the {arch.name} architecture ({exc})") from None
            modules.append(module)
        if self.members:
            from histcli.models._ensemble import Ensemble

            return Ensemble(modules, self.task.ensemble_combine).to(device).eval()
        return modules[0].to(device).eval()


_REQUIRED = {
    CONFIG: ("architecture", "hyperparameters", "training", "input", "data", "name", "cell"),
    METADATA: ("best_epoch", "epochs_run", "interrupted", "created", "history", "weights_sha256"),
}


def model_folders(root, names) -> dict[str, Path]:
    """The folders of models ``names`` in the registry at ``root``, by how a message names them."""
    return {f"model {name!r}'s folder": Path(root) / name for name in names}


def cells_by_task(entries) -> dict[str, list[str]]:
    """Task name -> the cells of ``entries`` that do it."""
    found: dict[str, list[str]] = {}
    for entry in entries:
        found.setdefault(entry.task.name, []).append(entry.cell)
    return found


def model_tasks(entries) -> dict:
    """Model name -> its task, from ``entries``; a ModelTaskError for a model whose entries do two tasks
    (written before `train` refused that)."""
    by_model: dict[str, list[Entry]] = {}
    for entry in entries:
        by_model.setdefault(entry.name, []).append(entry)
    for name, named in by_model.items():
        if len(found := cells_by_task(named)) > 1:
            raise ModelTaskError(name, found)
    return {name: named[0].task for name, named in by_model.items()}


def read_entry(path: Path) -> Entry:
    """Open an entry folder (from the registry or copied elsewhere) and check it is complete."""
    path = Path(path)
    if not path.is_dir():
        raise ModelError(f"{path}: no such model folder")
    try:
        config = json.loads((path / CONFIG).read_text())
        metadata = json.loads((path / METADATA).read_text())
    except FileNotFoundError as exc:
        raise ModelError(f"{path}: not a histcli model ({Path(exc.filename).name} is missing)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: damaged model configuration ({exc})") from None
    if not isinstance(config, dict) or config.get("format") != ENTRY_FORMAT or not isinstance(metadata, dict):
        raise ModelError(f"{path}: not a histcli model folder")
    version = str(config.get("format_version", ""))
    if not version.split(".")[0].isdigit():
        raise ModelError(f"{path}: unreadable model format version {version!r}")
    if int(version.split(".")[0]) > int(ENTRY_VERSION.split(".")[0]):
        raise ModelError(f"{path}: written by a newer histcli (model format {version}); upgrade")
    for filename, content in ((CONFIG, config), (METADATA, metadata)):
        missing = [key for key in _REQUIRED[filename] if key not in content]
        if missing:
            raise ModelError(f"{path / filename}: damaged, {', '.join(missing)} missing")
    selection = f"best_valid_{metadata.get('selection_metric', 'auc')}"
    if selection not in metadata:
        raise ModelError(f"{path / METADATA}: damaged, {selection} missing")
    InputSpec.from_json(config["input"], path / CONFIG)
    entry = Entry(path, config, metadata)
    for weights in entry.weight_files():
        if not weights.is_file():
            raise ModelError(f"{path}: {weights.name} is missing")
    return entry


def member_weights_name(seed: int) -> str:
    """The weights file of the ensemble member trained with ``seed``."""
    return f"weights-seed{seed}.safetensors"


class Registry:
    """Model entries under ``root``; safe for parallel writers of different entries."""

    def __init__(self, root: Path | str | None = None):
        self.root = Path(root) if root is not None else default_models_path()

    def entry_path(self, name: str, cell: str) -> Path:
        from histcli.store import check_cell_name

        return self.root / check_model_name(name) / check_cell_name(cell)

    def _check_root(self) -> None:
        # A file given for --models would read as an empty registry and hide the mistake.
        if self.root.exists() and not self.root.is_dir():
            raise ModelError(f"{self.root}: is a file, not a model registry folder")

    def names(self) -> list[str]:
        """Model names with at least one entry."""
        self._check_root()
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and is_allowed_name(p.name) and self.cells(p.name))

    def cells(self, name: str) -> list[str]:
        self._check_root()
        folder = self.root / check_model_name(name)  # '../x' would list a folder outside the registry
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if p.is_dir() and is_allowed_name(p.name))

    def require_cells(self, name: str) -> list[str]:
        """The cells model ``name`` has entries for; a ModelError naming the registry's models if none."""
        cells = self.cells(name)
        if not cells:
            raise ModelError(f"no model {name!r}{self.known_hint(name)}")
        return cells

    def known_hint(self, name: str) -> str:
        """What the registry holds instead, for a message about a model or entry it lacks."""
        known = self.cells(name)
        if known:
            return f"; model {name!r} exists for {', '.join(known)}"
        if self.names():
            return f"; models in {self.root}: {', '.join(self.names())}"
        return f"; the registry {self.root} is empty (train one with 'histcli train')"

    def _lock(self, name: str):
        # Locks live apart from the entries so that removing a model never removes its lock.
        return exclusive_lock(self.root / ".locks" / f"{name}.lock")

    @contextlib.contextmanager
    def reserve(self, entries):
        """Hold the (name, cell) entries for this process until the block ends.

        A run that trains an entry holds it from before its existence check to
        its save, so a second run writing the same entry fails at once
        (:class:`ModelBusyError`) instead of training in full and losing at
        save; runs writing other entries never wait. Released on death, too.
        """
        self._check_root()
        ensure_writable_dir(self.root.resolve(), "model registry")
        locks = {}
        for name, cell in entries:
            self.entry_path(name, cell)  # checks both names before they become a lock file's name
            # '@' is outside the name rule, so no other entry's lock can have this name.
            locks[name, cell] = self.root / ".locks" / f"{name}@{cell}.training"
        with hold_locks(locks, lambda entry: ModelBusyError(self.root, *entry)):
            yield

    def exists(self, name: str, cell: str) -> bool:
        return (self.entry_path(name, cell) / CONFIG).is_file()

    def get(self, name: str, cell: str) -> Entry:
        path = self.entry_path(name, cell)
        if not path.is_dir():
            raise ModelError(f"no model {name!r} for cell {cell!r}{self.known_hint(name)}")
        return self._read(path)

    @staticmethod
    def _read(path: Path) -> Entry:
        """The entry in ``path``, named by its model folder: the name a user gives (a folder copied or
        renamed within the registry keeps the old name in its config.json)."""
        entry = read_entry(path)
        if entry.name != path.parent.name:
            entry = dataclasses.replace(entry, config={**entry.config, "name": path.parent.name})
        return entry

    def entries(self, name: str | None = None, cell: str | None = None, *, on_unreadable=None) -> list[Entry]:
        """The readable entries (of model ``name``, for ``cell``); ``on_unreadable(error)`` is called with the
        ModelError of each folder that is not one (damaged, or foreign), which is left out."""
        found = []
        for model in [name] if name else self.names():
            for entry_cell in self.cells(model):
                if cell is None or entry_cell == cell:
                    try:
                        found.append(self._read(self.root / model / entry_cell))
                    except ModelError as exc:
                        if on_unreadable is not None:
                            on_unreadable(exc)
        return found

    def check_writable(self, name: str, cells, overwrite: bool, task: str) -> None:
        """Before training: the registry can be written, no entry would be replaced without ``overwrite``,
        and the model's other cells do the same ``task``."""
        ensure_writable_dir(self.root.resolve(), "model registry")
        for cell in cells:
            if not overwrite and self.exists(name, cell):
                raise ModelExistsError(self.root, name, cell)
        self.check_task(name, cells, task)

    def check_task(self, name: str, cells, task: str) -> None:
        """A ModelTaskError if model ``name`` has entries for cells other than ``cells`` (the entries about to
        be written, replacing any there) that do another task than ``task``."""
        cells = list(cells)
        others = [entry for entry in self.entries(name) if entry.cell not in cells and entry.task.name != task]
        if others:
            raise ModelTaskError(name, cells_by_task(others), writing=(task, cells[0]))

    def save(self, name: str, cell: str, state: dict | list[dict], config: dict, metadata: dict, *,
             overwrite: bool, run_cells=()) -> Entry:
        """Write an entry atomically; returns it as read back from disk.

        ``run_cells``: the other cells the same run writes under ``name`` (``train --overwrite`` of several
        cells, a sweep), whose entries of another task it is about to replace.

        ``state`` is one module's weights, or a list with one per ensemble
        member in the order of ``metadata["members"]``, each of which names its
        weights file. ``weights_sha256`` is the file's hash, or for an ensemble
        the hash of its members' hashes (the key of cached predictions).
        """
        from safetensors.torch import save

        from histcli.tasks import task_from_config

        members = metadata.get("members", [])
        states = state if members else [state]
        files = [member["weights"] for member in members] if members else [WEIGHTS]
        if len(states) != len(files):
            raise ModelError(f"{len(states)} sets of weights for {len(files)} ensemble members")
        final = self.entry_path(name, cell)
        temp = temp_name(final, "tmp")
        try:
            # With its parents in one call: `models rm` of the model's last entry removes the model's folder.
            temp.mkdir(parents=True)
            hashes = []
            for filename, weights in zip(files, states, strict=True):
                tensors = {key: value.detach().to("cpu").contiguous() for key, value in weights.items()}
                # One metadata key: safetensors writes several in a random order, and then
                # identical weights would not give identical files (and hashes).
                header = json.dumps({"architecture": config["architecture"], "format": ENTRY_FORMAT}, sort_keys=True)
                # Written by Python, not by safetensors' save_file, whose files are owner-only (0600) whatever
                # the umask: a registry shared by a lab must be readable like its JSON files.
                with open(temp / filename, "wb") as handle:
                    handle.write(save(tensors, metadata={"histcli": header}))
                fsync_file(temp / filename)
                hashes.append(file_sha256(temp / filename))
            if members:
                members = [{**member, "weights_sha256": digest} for member, digest in zip(members, hashes, strict=True)]
                combined = hashlib.sha256("".join(f"{f}:{h}\n" for f, h in zip(files, hashes, strict=True)).encode()).hexdigest()
                metadata = {**metadata, "members": members, "weights_sha256": combined}
            else:
                metadata = {**metadata, "weights_sha256": hashes[0]}
            config = {"format": ENTRY_FORMAT, "format_version": ENTRY_VERSION, "name": name, "cell": cell, **config}
            for filename, content in ((CONFIG, config), (METADATA, metadata)):
                with open(temp / filename, "w") as handle:
                    json.dump(content, handle, indent=2, sort_keys=False)
                    handle.write("\n")
                    handle.flush()
                    os.fsync(handle.fileno())
            task = task_from_config(config).name
            with self._lock(name):  # every save of this model waits here: parallel runs cannot mix tasks
                remove_stale(final, "tmp")
                if final.exists() and not overwrite:
                    raise ModelExistsError(self.root, name, cell)
                self.check_task(name, [cell, *run_cells], task)
                replace_dir(temp, final)
        finally:
            remove_path(temp)
        return read_entry(final)

    def remove(self, name: str, cell: str | None = None) -> list[str]:
        """Remove one entry, or every cell of a model; returns the removed cells."""
        with self._lock(check_model_name(name)):
            cells = [cell] if cell else self.require_cells(name)
            if cell and not self.entry_path(name, cell).is_dir():
                raise ModelError(f"no model {name!r} for cell {cell!r}{self.known_hint(name)}")
            for entry_cell in cells:
                path = self.entry_path(name, entry_cell)
                doomed = temp_name(path, "old")
                os.rename(path, doomed)
                remove_path(doomed)
            # The model's folder goes with its last entry (held by the lock, no run of this name is adding one).
            with contextlib.suppress(OSError):  # not empty: other cells' entries remain
                (self.root / name).rmdir()
        return cells
