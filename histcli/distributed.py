"""Many training runs on Ray: `histcli sweep` (a grid of trials) and the Ray side of `histcli tune`.

The driver (the command's process) reads each cell from the store once and
puts it in Ray's object store as plain numpy arrays, so workers need neither
the store file nor a shared file system. A worker trains with the same
function as ``histcli train`` (:func:`histcli.training.train_entry`) and
returns weights, config and metadata; the driver writes the entry with the
registry's atomic save. Ray is an optional extra, imported only here and
only when a command runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from histcli.errors import (
    HistcliError,
    MissingExtraError,
    ModelBusyError,
    ModelExistsError,
    NameNotAllowedError,
    SettingError,
    describe,
)
from histcli.fsutil import ensure_writable_dir
from histcli.locations import name_part
from histcli.store import CellData


def import_ray(purpose: str, tune: bool = False):
    """The ray module, or a one-line error saying how to install the extra."""
    try:
        import ray

        if tune:
            import ray.tune  # noqa: F401 - ray[tune]'s extra packages
    except ImportError:
        raise MissingExtraError("ray[tune]", "ray", purpose) from None
    return ray


@contextlib.contextmanager
def ray_session(address: str | None, purpose: str, tune: bool = False):
    """Join the cluster at ``address`` (or $RAY_ADDRESS), else run Ray embedded for the command's duration.

    The embedded instance is sized to this machine and has no dashboard. A
    session already open in this process (a library caller's) is used as is.
    Within the session, stdout is redirected to stderr.
    """
    ray = import_ray(purpose, tune)
    if ray.is_initialized():
        yield ray
        return
    # Workers' output and Ray's own notices stay out of the command's stderr;
    # trial errors come back as exceptions and are reported by the command.
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
    address = address or os.environ.get("RAY_ADDRESS")
    try:
        if address:
            ray.init(address=address, **quiet)
        else:
            ray.init(include_dashboard=False, **quiet)
    except ConnectionError as exc:
        raise HistcliError(f"cannot join the Ray cluster at {address} ({exc})") from None
    try:
        # Ray's driver prints what workers and raylets report (a worker that
        # died, Tune's progress) on stdout, which belongs to the command's table.
        with contextlib.redirect_stdout(sys.stderr):
            yield ray
    finally:
        ray.shutdown()


def trial_device(gpus_per_trial: float) -> str:
    """Where sweep's and tune's trials train: on CUDA when each reserves a share of a GPU, else on the CPU."""
    return "cuda" if gpus_per_trial > 0 else "cpu"


def trial_slots(ray, cpus_per_trial: float, gpus_per_trial: float) -> int:
    """How many trials the cluster runs at once; an impossible request is a usage error, not a hang."""
    resources = ray.cluster_resources()
    cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    if cpus_per_trial > cpus:
        raise SettingError("cpus_per_trial", cpus_per_trial, f"the Ray cluster has {cpus:g} CPUs")
    slots = int(cpus // cpus_per_trial) if cpus_per_trial > 0 else int(cpus) or 1
    if gpus_per_trial > 0:
        if gpus < gpus_per_trial:
            raise SettingError("gpus_per_trial", gpus_per_trial, f"the Ray cluster has {gpus:g} GPUs")
        slots = min(slots, int(gpus // gpus_per_trial + 1e-9))
    return max(1, slots)


def plain_cell(cell: CellData) -> CellData:
    """The cell with every array as an in-memory numpy array (nothing backed by an open HDF5 file)."""
    return dataclasses.replace(
        cell,
        counts=np.ascontiguousarray(cell.counts_array()),
        gene_ids=np.asarray(cell.gene_ids),
        split=np.asarray(cell.split),
        expression=None if cell.expression is None else np.asarray(cell.expression),
        labels=None if cell.labels is None else np.asarray(cell.labels),
        coordinates={key: np.asarray(value) for key, value in cell.coordinates.items()},
    )


def run_trial(cell: CellData, settings, store_path: str, mirror: str) -> dict:
    """One trial on a Ray worker: train like `histcli train` and return what the registry needs."""
    from histcli.training import resolve_precision, train_entry

    # bf16 "auto" depends on the worker's hardware, so it is resolved here.
    settings = dataclasses.replace(settings, precision=resolve_precision(settings.precision, settings.device))
    states, config, metadata, outcome = train_entry(cell, settings, store_path=store_path, mirror=mirror)
    return {"states": states, "config": config, "metadata": metadata, "node": socket.gethostname(),
            "valid_score": outcome.valid_score, "best_epoch": outcome.best_epoch, "seconds": outcome.seconds,
            "converged": outcome.converged}


# ---------------------------------------------------------------- sweep plan


def parse_grid(values: list[str]) -> dict[str, list[str]]:
    """``KEY=VALUE`` options; a key given more than once is a grid axis. Values keep train's syntax."""
    grid: dict[str, list[str]] = {}
    for value in values:
        key, sep, setting = value.partition("=")
        key, setting = key.strip(), setting.strip()
        if not sep or not key:
            raise SettingError("param", value, "expected KEY=VALUE, e.g. dropout=0.3")
        if setting in grid.setdefault(key, []):
            raise SettingError("param", value, "given twice")
        grid[key].append(setting)
    return grid


def grid_points(grid: dict[str, list[str]]) -> list[dict[str, str]]:
    """Every combination of the grid's values, the first key varying slowest."""
    points = [{}]
    for key, values in grid.items():
        points = [{**point, key: value} for point in points for value in values]
    return points


@dataclass
class Trial:
    name: str
    cell: str
    arch: str
    seed: int
    params: dict[str, str]  # the grid point (values of the axes only)
    settings: object  # TrainSettings
    replaces: bool = False  # an entry of this name is there and is replaced

    @property
    def params_text(self) -> str:
        return " ".join(f"{key}={value}" for key, value in self.params.items())


def entry_name(template: str | None, arch: str, seed: int, several_seeds: bool, point: dict[str, str]) -> str:
    """The trial's entry name: the template filled in, or arch[-sSEED][-KEYVALUE...]."""
    safe = {key: name_part(value) for key, value in point.items()}
    if template is None:
        return arch + (f"-s{seed}" if several_seeds else "") + "".join(f"-{k}{v}" for k, v in safe.items())
    try:
        return template.format(arch=arch, seed=seed, **safe)
    except (KeyError, IndexError, ValueError) as exc:
        fields = ", ".join(["{arch}", "{seed}"] + [f"{{{key}}}" for key in point])
        raise SettingError("name", template, f"cannot fill in {exc} (available: {fields})") from None


def plan_sweep(cells: list[str], archs: list[str], seeds: list[int], params: list[str], template: str | None,
               make_settings: Callable[[str, dict, int], object]) -> list[Trial]:
    """Trials for every cell x architecture x seed x grid point, cell by cell.

    ``make_settings(arch, overrides, seed)`` gives a trial's TrainSettings (and
    rejects unknown hyperparameters before anything runs).
    """
    from histcli.registry import check_model_name

    grid = parse_grid(params)
    fixed = {key: values[0] for key, values in grid.items() if len(values) == 1}
    axes = {key: values for key, values in grid.items() if len(values) > 1}
    points = grid_points(axes)
    settings = {(arch, seed, i): make_settings(arch, {**fixed, **point}, seed)
                for arch in archs for seed in seeds for i, point in enumerate(points)}
    for arch in archs:  # values spelled differently (0.3, 0.30) would train one model twice under two names
        for i, point in enumerate(points):
            same = next((j for j in range(i) if settings[arch, seeds[0], j] == settings[arch, seeds[0], i]), None)
            if same is not None:
                twins = " and ".join(" ".join(f"{k}={v}" for k, v in p.items()) for p in (points[same], point))
                raise SettingError("param", twins, f"these grid points train the same {arch} model; give each value once")
    trials, names = [], {}
    for arch in archs:
        for seed in seeds:
            for i, point in enumerate(points):
                name = entry_name(template, arch, seed, len(seeds) > 1, point)
                try:
                    check_model_name(name)
                except NameNotAllowedError as exc:
                    raise SettingError("name", name, str(exc)) from None
                label = f"{arch} seed {seed}" + (f" {' '.join(f'{k}={v}' for k, v in point.items())}" if point else "")
                if name in names:
                    raise SettingError("name", template, f"{names[name]} and {label} would both be saved as {name!r}; "
                                       "put {seed} or the grid keys in the template")
                names[name] = label
                trials += [(name, arch, seed, point, settings[arch, seed, i])]
    return [Trial(name, cell, arch, seed, point, s) for cell in cells for name, arch, seed, point, s in trials]


def _json(value):
    return json.loads(json.dumps(value))


def _task_choice(task) -> dict:
    """What the user chose of a task (its name and regression target), not what training fitted."""
    return {"name": task.name, "target": getattr(task, "target", None)}


def expected_config(trial: Trial, n_train: int, fingerprint: str, mirror: bool,
                    expression_sha256: str | None = None) -> dict:
    """The parts of an entry's config that decide its training, as this trial would write them
    (``expression_sha256``: the cell's expression values, which a regression trial learns from)."""
    from histcli import models
    from histcli.training import resolve_budget

    settings = resolve_budget(dataclasses.replace(trial.settings, mirror=mirror), n_train)
    return _json({"task": _task_choice(settings.task),
                  "architecture": settings.architecture,
                  "architecture_revision": models.get(settings.architecture).revision,
                  "hyperparameters": settings.hyperparameters,
                  "training": settings.as_config(), "transform": settings.transform, "mirror": settings.mirror,
                  "fingerprint": fingerprint,
                  "expression": expression_sha256 if settings.task.uses_expression else None})


def config_of_entry(entry) -> dict:
    """What decides a stored entry's training, in the shape of the planned trial's."""
    config = entry.config
    return {"task": _task_choice(entry.task), "architecture": config["architecture"],
            # entries written before revisions were recorded hold revision 1 of their architecture
            "architecture_revision": config.get("architecture_revision", 1),
            "hyperparameters": config["hyperparameters"],
            # entries written before refits existed saved the chosen run
            "training": {"refit": False, **config["training"]}, "transform": entry.input.transform,
            "mirror": entry.input.mirror,
            "fingerprint": entry.data.fingerprint, "expression": entry.data.expression_sha256}


# ---------------------------------------------------------------- sweep run


@dataclass
class TrialOutcome:
    trial: Trial
    status: str  # trained, skipped, failed, cancelled
    valid_score: float = math.nan  # the task's validation metric (AUC, Pearson r)
    best_epoch: int | None = None
    seconds: float | None = None
    node: str | None = None
    error: str | None = None
    converged: bool | None = None

    def row(self) -> dict:
        t = self.trial
        return {"name": t.name, "cell": t.cell, "arch": t.arch, "seed": t.seed, "params": t.params_text,
                "status": self.status, f"valid_{t.settings.task.selection_metric}": self.valid_score,
                "best_epoch": self.best_epoch,
                "seconds": self.seconds, "node": self.node, "error": self.error}


@dataclass
class SweepProgress:
    total: int
    done: int = 0
    running: int = 0
    failed: int = 0
    started: float = field(default_factory=time.perf_counter)

    @property
    def eta_seconds(self) -> float | None:
        finished = self.done + self.failed
        if not finished:
            return None
        return (time.perf_counter() - self.started) / finished * (self.total - finished)


def _differing(key: str, wanted, found) -> list[str]:
    """A differing part of a config by name; training's named down to its setting (e.g. training.refit, for
    an entry of an older histcli)."""
    if key == "training" and isinstance(found, dict):
        return [f"{key}.{setting}" for setting in wanted if wanted[setting] != found.get(setting)] or [key]
    return [key]


def trials_by_name(trials: list[Trial]) -> dict[str, list[Trial]]:
    """The trials of each entry name (one per cell the name is trained on), in trial order."""
    found: dict[str, list[Trial]] = {}
    for trial in trials:
        found.setdefault(trial.name, []).append(trial)
    return found


def check_existing(trials: list[Trial], store, registry, overwrite: bool,
                   mirror: str) -> tuple[set[int], dict[str, bool]]:
    """Find the trials whose entry exists with the same resolved config (to skip); refuse other clashes.

    Returns the indices of the trials to skip and the mirror setting resolved
    per cell. Reads the store's summaries (and the expression values of cells
    with regression entries to compare); no counts are loaded here. An entry
    saved as interrupted is trained again.
    """
    from histcli.store import expression_digest
    from histcli.training import resolve_mirror

    summaries = {summary.name: summary for summary in store.summaries()}
    mirrors = {}
    for cell in dict.fromkeys(t.cell for t in trials):
        summary = summaries[cell]
        attrs = {"source_format": summary.source_format, **summary.attrs}
        mirrors[cell] = resolve_mirror(mirror, attrs, f"cell {cell}")
    skip = set()
    digests: dict[str, str | None] = {}  # cell: its expression values' digest, read when first needed
    for name, named in trials_by_name(trials).items():
        registry.check_task(name, [trial.cell for trial in named], named[0].settings.task.name)
    for index, trial in enumerate(trials):
        if not registry.exists(trial.name, trial.cell):
            continue
        trial.replaces = True
        if overwrite:
            continue
        summary = summaries[trial.cell]
        entry = registry.get(trial.name, trial.cell)
        if trial.settings.task.uses_expression and trial.cell not in digests:
            digests[trial.cell] = expression_digest(store.expression(trial.cell))
        wanted = expected_config(trial, summary.split_sizes["train"], summary.fingerprint, mirrors[trial.cell],
                                 digests.get(trial.cell))
        found = config_of_entry(entry)
        if trial.settings.precision == "auto":  # resolved on the worker: either result is this request
            wanted["training"]["precision"] = found["training"].get("precision")
        if found == wanted and not entry.metadata.get("interrupted"):
            skip.add(index)
        elif found != wanted:
            differs = sorted(name for key in wanted if wanted[key] != found.get(key)
                             for name in _differing(key, wanted[key], found.get(key)))
            raise ModelExistsError(registry.root, trial.name, trial.cell, differs=differs)
    return skip, mirrors


def run_sweep(trials: list[Trial], *, store, registry, overwrite: bool, mirror: str, retries: int,
              cpus_per_trial: float, gpus_per_trial: float, address: str | None,
              on_progress: Callable[[SweepProgress, TrialOutcome | None], None] | None = None,
              ) -> tuple[list[TrialOutcome], bool]:
    """Run the trials on Ray; returns one outcome per trial (in trial order) and whether Ctrl-C ended it.

    Finished entries are written as they arrive, so an interrupted or partly
    failed sweep keeps them. A worker that dies is retried ``retries`` times;
    an exception raised by training is not retried (it would fail again).
    """
    ensure_writable_dir(registry.root.resolve(), "model registry")
    skip, mirrors = check_existing(trials, store, registry, overwrite, mirror)
    outcomes: dict[int, TrialOutcome] = {}
    for index in skip:
        entry = registry.get(trials[index].name, trials[index].cell)
        outcomes[index] = TrialOutcome(trials[index], "skipped", entry.best_valid_score,
                                       entry.metadata["best_epoch"], entry.metadata.get("train_seconds"))
    queue = deque(index for index in range(len(trials)) if index not in outcomes)
    # Per entry name, the cells this sweep writes (see Registry.save).
    run_cells = {name: [trial.cell for trial in named] for name, named in trials_by_name(trials).items()}
    progress = SweepProgress(total=len(queue))
    if not queue:
        return [outcomes[i] for i in range(len(trials))], False

    with ray_session(address, "histcli sweep") as ray:
        slots = trial_slots(ray, cpus_per_trial, gpus_per_trial)
        remote = ray.remote(run_trial).options(num_cpus=cpus_per_trial, num_gpus=gpus_per_trial,
                                               max_retries=retries, retry_exceptions=False)
        # Cells go to the object store when their first trial is submitted and
        # leave it after their last; submitting at most two rounds of trials
        # ahead bounds the memory to a few cells.
        remaining = {}
        for index in queue:
            remaining[trials[index].cell] = remaining.get(trials[index].cell, 0) + 1
        cell_refs, pending = {}, {}
        # Each trial holds its entry while it trains (Registry.reserve), as train and tune do.
        holds: dict[int, contextlib.ExitStack] = {}
        store_path = str(Path(store.path).resolve())
        interrupted = False

        def submit():
            while queue and len(pending) < 2 * slots:
                index = queue.popleft()
                trial = trials[index]
                hold = contextlib.ExitStack()
                try:
                    hold.enter_context(registry.reserve([(trial.name, trial.cell)]))
                    if not (overwrite or trial.replaces) and registry.exists(trial.name, trial.cell):
                        raise ModelExistsError(registry.root, trial.name, trial.cell)  # saved since check_existing
                except (ModelBusyError, ModelExistsError) as exc:
                    hold.close()
                    finished(index, TrialOutcome(trial, "failed", error=describe(exc)[0]))
                    continue
                holds[index] = hold
                if trial.cell not in cell_refs:
                    cell_refs[trial.cell] = ray.put(plain_cell(store.load(trial.cell)))
                mode = "on" if mirrors[trial.cell] else "off"
                pending[remote.remote(cell_refs[trial.cell], trial.settings, store_path, mode)] = index

        def finished(index, outcome):
            outcomes[index] = outcome
            if index in holds:
                holds.pop(index).close()
            cell = trials[index].cell
            remaining[cell] -= 1
            if not remaining[cell]:
                cell_refs.pop(cell, None)  # absent when no trial of the cell was submitted
            if outcome.status == "failed":
                progress.failed += 1
            else:
                progress.done += 1
            progress.running = min(len(pending), slots)
            if on_progress is not None:
                on_progress(progress, outcome)

        try:
            submit()
            progress.running = min(len(pending), slots)
            if on_progress is not None:
                on_progress(progress, None)
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                for ref in ready:
                    index = pending.pop(ref)
                    trial = trials[index]
                    try:
                        result = ray.get(ref)
                    except Exception as exc:  # noqa: BLE001 - any trial failure is reported, the rest go on
                        finished(index, TrialOutcome(trial, "failed", error=describe_failure(exc)))
                        continue
                    registry.save(trial.name, trial.cell, result["states"], result["config"], result["metadata"],
                                  overwrite=overwrite or trial.replaces, run_cells=run_cells[trial.name])
                    finished(index, TrialOutcome(trial, "trained", result["valid_score"], result["best_epoch"],
                                                 result["seconds"], result["node"],
                                                 converged=result["converged"]))
                submit()
                progress.running = min(len(pending), slots)
                if not ready and on_progress is not None:
                    on_progress(progress, None)
        except KeyboardInterrupt:
            interrupted = True
            for ref in pending:
                ray.cancel(ref, force=True)
            for index in [*pending.values(), *queue]:
                outcomes[index] = TrialOutcome(trials[index], "cancelled")
        finally:
            for hold in holds.values():
                hold.close()
    return [outcomes[i] for i in range(len(trials))], interrupted


def describe_failure(exc: BaseException) -> str:
    """One line for a failed trial: the training error's own message, or what happened to the worker."""
    import ray.exceptions

    if isinstance(exc, ray.exceptions.RayTaskError):
        cause = exc.cause if exc.cause is not None else exc
        if isinstance(cause, HistcliError):
            return str(cause)
        return f"{type(cause).__name__}: {str(cause).strip().splitlines()[-1] if str(cause).strip() else ''}"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
