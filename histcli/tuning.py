"""Hyperparameter search with Ray Tune: sample configurations, train each, keep the best on validation.

Every trial is the single training run of `histcli train`
(:func:`histcli.training.train`), which reports each epoch's validation AUC
(Pearson r for regression) to Tune; ASHA stops trials that fall behind at its rungs. The objective is
the validation metric only: test genes are never read. The best configuration is
then trained again from its seed (the same run, so the same weights when its
trial was not stopped early) and saved as one registry entry whose metadata
holds the whole search.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from histcli.errors import ConflictError, HistcliError, SettingError
from histcli.store import CellData

# Training settings a search may vary besides the architecture's hyperparameters.
TRAINING_KEYS = ("lr", "weight_decay", "batch_size", "clip_norm")
SPEC_KINDS = ("loguniform", "uniform", "choice", "int")
# ASHA: rungs at grace, grace*3, grace*9, ... epochs; the grace is a ninth of
# the epoch cap, so a search has three rungs whatever the cap.
ASHA_REDUCTION = 3
ASHA_RUNGS = 9


@dataclass(frozen=True)
class SearchSpec:
    key: str
    kind: str  # loguniform, uniform, choice, int
    values: tuple  # (low, high) for ranges, the options for choice
    text: str  # as the user wrote it

    def domain(self):
        from ray import tune

        if self.kind == "loguniform":
            return tune.loguniform(*self.values)
        if self.kind == "uniform":
            return tune.uniform(*self.values)
        if self.kind == "int":
            return tune.randint(self.values[0], self.values[1] + 1)  # randint excludes its upper bound
        return tune.choice(list(self.values))

    def extremes(self) -> list:
        """Values that bound what the search can draw (checked against the architecture before it starts)."""
        return list(self.values)


def _number(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_search(values: list[str]) -> dict[str, SearchSpec]:
    """``KEY=SPEC`` with SPEC ``loguniform:1e-4:1e-2``, ``uniform:0.1:0.6``, ``int:1:3`` (inclusive) or
    ``choice:16,32,64`` (``choice:100,20|50,10`` when the options hold commas)."""
    specs: dict[str, SearchSpec] = {}
    for value in values:
        key, sep, spec = value.partition("=")
        key = key.strip()
        kind, colon, rest = spec.strip().partition(":")
        if not sep or not key or not colon or kind not in SPEC_KINDS:
            raise SettingError("search", value, "expected KEY=SPEC with SPEC one of loguniform:LOW:HIGH, "
                               "uniform:LOW:HIGH, choice:A,B,C, int:LOW:HIGH")
        if key in specs:
            raise SettingError("search", value, f"{key} is given twice")
        if kind == "choice":
            options = [item.strip() for item in rest.split("|" if "|" in rest else ",")]
            if not all(options):
                raise SettingError("search", value, "an empty choice")
            specs[key] = SearchSpec(key, kind, tuple(_number(item) for item in options), spec.strip())
            continue
        bounds = rest.split(":")
        try:
            low, high = (int(b) if kind == "int" else float(b) for b in bounds)
        except ValueError:
            expected = "two integers" if kind == "int" else "two numbers"
            raise SettingError("search", value, f"expected {expected}, {kind}:LOW:HIGH") from None
        if not (math.isfinite(low) and math.isfinite(high)) or high < low or (kind != "int" and high == low):
            raise SettingError("search", value, "the range must run from a lower to a higher value")
        if kind == "loguniform" and low <= 0:
            raise SettingError("search", value, "loguniform needs positive bounds")
        specs[key] = SearchSpec(key, kind, (low, high), spec.strip())
    if not specs:
        raise SettingError("search", "", "name at least one KEY=SPEC to search")
    return specs


def trial_settings(arch: str, base: dict, fixed: dict, config: dict):
    """A trial's TrainSettings: the command's settings with the sampled values in place."""
    from histcli.training import settings_for

    training = {**base, **{key: config[key] for key in TRAINING_KEYS if key in config}}
    overrides = {**fixed, **{key: value for key, value in config.items() if key not in TRAINING_KEYS}}
    return settings_for(arch, overrides=overrides, **training)


def check_space(arch: str, base: dict, fixed: dict, specs: dict[str, SearchSpec]) -> None:
    """Refuse unknown keys and values the architecture cannot take before any trial runs."""
    from histcli import models

    valid = sorted(models.get(arch).hyperparameters) + list(TRAINING_KEYS)
    trial_settings(arch, base, fixed, {})  # --param's own errors, before any searched value is blamed for them
    for spec in specs.values():
        if spec.key not in valid:
            raise SettingError("search", spec.key, f"not a setting of {arch}; searchable: {', '.join(valid)}")
        if spec.key in fixed:
            raise ConflictError(["search", "param"], f"{spec.key} is both searched and fixed")
        if spec.key in TRAINING_KEYS and base.get(spec.key) is not None:  # the search would override it
            raise ConflictError(["search", spec.key], f"{spec.key} is both searched and fixed")
        for value in spec.extremes():
            try:
                trial_settings(arch, base, fixed, {spec.key: value})
            except (HistcliError, ValueError, TypeError) as exc:
                raise SettingError("search", f"{spec.key}={spec.text}", str(exc)) from None


def tune_trial(config: dict, *, cell: CellData, arch: str, base: dict, fixed: dict) -> None:
    """One Tune trial on a worker: train and report every epoch's validation metric (AUC, Pearson r)."""
    from ray import tune

    from histcli.training import resolve_precision, train

    settings = trial_settings(arch, base, fixed, config)
    settings = dataclasses.replace(settings, precision=resolve_precision(settings.precision, settings.device))

    def report(epoch):
        tune.report({"valid_score": epoch.valid_score, "best_valid_score": epoch.best_valid_score,
                     "best_epoch": epoch.best_epoch, "epoch": epoch.epoch, "patience": epoch.patience})

    train(cell, settings, on_epoch=report)


@dataclass
class TuneTrial:
    number: int
    params: dict
    valid_score: float  # best validation metric (the task's: AUC, Pearson r) over the epochs it ran
    best_epoch: int | None
    epochs: int
    status: str  # completed (ran until patience or the epoch cap), stopped (by ASHA), failed
    error: str | None = None
    trial_id: str = ""  # Tune's, ending in the index of the sample

    def record(self, metric: str) -> dict:
        """The trial as the entry's metadata keeps it, its result named after the metric (valid_auc, ...)."""
        return {"trial": self.number, "params": self.params, f"valid_{metric}": self.valid_score,
                "best_epoch": self.best_epoch, "epochs": self.epochs, "status": self.status, "error": self.error}


def run_search(cell: CellData, arch: str, *, base: dict, fixed: dict, specs: dict[str, SearchSpec], samples: int,
               scheduler: str, seed: int, cpus_per_trial: int, gpus_per_trial: float,
               retries: int, max_concurrent: int | None = None) -> list[TuneTrial]:
    """Run the search in the current Ray session; returns the trials in the order they were sampled."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from histcli.distributed import describe_failure

    max_epochs = trial_settings(arch, base, fixed, {}).max_epochs
    if scheduler == "asha":
        chosen = ASHAScheduler(time_attr="training_iteration", max_t=max_epochs,
                               grace_period=max(1, max_epochs // ASHA_RUNGS), reduction_factor=ASHA_REDUCTION)
    else:
        chosen = FIFOScheduler()
    trainable = tune.with_resources(tune.with_parameters(tune_trial, cell=cell, arch=arch, base=base, fixed=fixed),
                                    {"cpu": cpus_per_trial, "gpu": gpus_per_trial})
    storage = tempfile.mkdtemp(prefix="histcli-tune-")
    # The classic reporter is the one that stays silent at verbose=0 (the new
    # one still prints a banner): the command prints its own table.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Ctrl-C raises KeyboardInterrupt here, as everywhere in histcli, rather
    # than making Tune return a partial result as if the search had ended.
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    try:
        tuner = tune.Tuner(
            trainable,
            param_space={key: spec.domain() for key, spec in specs.items()},
            tune_config=tune.TuneConfig(metric="best_valid_score", mode="max", num_samples=samples, scheduler=chosen,
                                        search_alg=BasicVariantGenerator(random_state=seed),
                                        max_concurrent_trials=max_concurrent),
            run_config=tune.RunConfig(name="search", storage_path=storage, verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=retries)),
        )
        # Tune logs each failed trial with its worker's traceback; failures come back in the results and the
        # command reports them in one line each.
        tune_logger = logging.getLogger("ray.tune")
        level = tune_logger.level
        tune_logger.setLevel(logging.CRITICAL)
        try:
            grid = tuner.fit()
        finally:
            tune_logger.setLevel(level)
        results = [grid[i] for i in range(len(grid))]
    finally:
        shutil.rmtree(storage, ignore_errors=True)
    trials = []
    for result in results:
        metrics = result.metrics or {}
        params = {key: (result.config or {}).get(key) for key in specs}  # no config: the trial never started
        if result.error is not None or "best_valid_score" not in metrics:
            message = describe_failure(result.error) if result.error is not None else "no epoch finished"
            trials.append(TuneTrial(0, params, math.nan, None, int(metrics.get("epoch", 0)), "failed", message,
                                    metrics.get("trial_id", "")))
            continue
        epochs, best_epoch, patience = int(metrics["epoch"]), int(metrics["best_epoch"]), int(metrics["patience"])
        finished = epochs >= max_epochs or epochs - best_epoch >= patience
        trials.append(TuneTrial(0, params, float(metrics["best_valid_score"]), best_epoch, epochs,
                                "completed" if finished else "stopped", trial_id=metrics.get("trial_id", "")))
    # Trial ids end in the index of the sample (…_00003): number trials in sampling order.
    trials.sort(key=lambda trial: int(trial.trial_id.rsplit("_", 1)[-1]) if trial.trial_id else 0)
    for number, trial in enumerate(trials, start=1):
        trial.number = number
    return trials


def best_trial(trials: list[TuneTrial]) -> TuneTrial:
    finished = [trial for trial in trials if trial.status != "failed"]
    if not finished:
        raise HistcliError(f"every trial of the search failed; the first: {trials[0].error}")
    return max(finished, key=lambda trial: (trial.valid_score, -trial.number))


def tune_and_save(store, cell_name: str, arch: str, registry, name: str, *, base: dict, fixed: dict,
                  specs: dict[str, SearchSpec], samples: int, scheduler: str, seed: int, mirror: str,
                  cpus_per_trial: int, gpus_per_trial: float, retries: int, address: str | None,
                  overwrite: bool, max_concurrent: int | None = None,
                  on_start: Callable[[], None] | None = None,
                  on_searched: Callable[[list[TuneTrial]], None] | None = None):
    """Search, train the best configuration again and save it under ``name``.

    Returns (entry, trials, best trial). ``on_start`` is called once the
    settings, the cell and the registry entry have been checked, before the
    search starts; ``on_searched`` with the trials when the search ends,
    before the best is retrained.
    """
    from histcli.distributed import plain_cell, ray_session, run_trial
    from histcli.training import resolve_mirror, split_targets

    with registry.reserve([(name, cell_name)]):
        registry.check_writable(name, [cell_name], overwrite, base["task"].name)
        cell = plain_cell(store.load(cell_name))
        base = {**base, "seed": seed, "mirror": resolve_mirror(mirror, cell.attrs, f"cell {cell_name}")}
        check_space(arch, base, fixed, specs)
        task = trial_settings(arch, base, fixed, {}).task
        for split in ("train", "valid"):  # a cell no trial can train on fails here, not in every trial
            split_targets(cell, split, task)
        if on_start is not None:
            on_start()
        with ray_session(address, "histcli tune", tune=True) as ray:
            trials = run_search(cell, arch, base=base, fixed=fixed, specs=specs, samples=samples,
                                scheduler=scheduler, seed=seed, cpus_per_trial=cpus_per_trial,
                                gpus_per_trial=gpus_per_trial, retries=retries, max_concurrent=max_concurrent)
            best = best_trial(trials)
            if on_searched is not None:
                on_searched(trials)
            settings = trial_settings(arch, base, fixed, best.params)
            remote = ray.remote(run_trial).options(num_cpus=cpus_per_trial, num_gpus=gpus_per_trial,
                                                   max_retries=retries)
            store_path = str(Path(store.path).resolve())
            result = ray.get(remote.remote(cell, settings, store_path, "on" if base["mirror"] else "off"))
        metadata = {**result["metadata"], "search": {
            "objective": f"validation {settings.task.selection_label} (best epoch)",
            "space": {key: spec.text for key, spec in specs.items()},
            "fixed": fixed,
            "samples": samples,
            "scheduler": scheduler,
            "seed": seed,
            "max_concurrent": max_concurrent,
            "best_trial": best.number,
            "trials": [trial.record(settings.task.selection_metric) for trial in trials],
        }}
        entry = registry.save(name, cell.name, result["states"], result["config"], metadata, overwrite=overwrite)
    return entry, trials, best
