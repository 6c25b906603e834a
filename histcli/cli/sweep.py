"""`histcli sweep`: train every cell x architecture x seed x grid point on Ray."""

from __future__ import annotations

import logging
import sys
from typing import Annotated, Optional

import typer

from histcli.cli.options import (
    DEFAULT_MODELS,
    DEFAULT_STORE,
    AddressOption,
    BatchSizeOption,
    CellsOption,
    ClipNormOption,
    CpusPerTrialOption,
    EpochsOption,
    FormatOption,
    GpusPerTrialOption,
    LrOption,
    LrScheduleOption,
    Mirror,
    MirrorOption,
    ModelsOption,
    OutputFormat,
    OverwriteOption,
    PatienceOption,
    Precision,
    PrecisionOption,
    QuietOption,
    RefitOption,
    RetriesOption,
    StoreOption,
    TargetOption,
    TaskName,
    TaskOption,
    WeightDecayOption,
    budget_choices,
    chosen_cells,
    complete_architectures,
    fixed_name,
    parse_seeds,
)


def sweep_columns(fmt: str, task):
    """Every column for machines; people get the name (which holds arch, seed and grid) and the results.
    The validation column is named after the task's metric (valid_auc, valid_pearson)."""
    from histcli.output import Column, resolve_format

    valid = f"valid_{task.selection_metric}"
    if resolve_format(fmt) == "table":
        return [Column("name", justify="left"), Column("cell", justify="left"), Column("status", justify="left"),
                Column(valid, task.selection_header, digits=4), Column("best_epoch", "best"),
                Column("seconds", "s", digits=1, fixed=True), Column("node", justify="left")]
    return [Column(key) for key in ("name", "cell", "arch", "seed", "params", "status", valid, "best_epoch",
                                    "seconds", "node", "error")]


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def progress_text(progress) -> str:
    return (f"{progress.done} done, {progress.running} running, {progress.failed} failed, "
            f"ETA {duration(progress.eta_seconds)}")


def sweep(
    archs: Annotated[list[str], typer.Option("--arch", "-a", callback=fixed_name, help="Architecture (repeat for several).",
                                             autocompletion=complete_architectures)],
    cells: CellsOption = None,
    all_cells: Annotated[bool, typer.Option("--all-cells", help="Every cell in the store.")] = False,
    seeds: Annotated[str, typer.Option("--seeds", help="One trial per seed: a range 0-4 or a list 0,2,7.")] = "0",
    params: Annotated[Optional[list[str]], typer.Option(
        "--param", "-p", help="Architecture hyperparameter KEY=VALUE (repeat); a key given more than once is a "
                              "grid axis (--param units=32 --param units=64).")] = None,
    name: Annotated[Optional[str], typer.Option(
        "--name", "-n", help="Entry name template over {arch}, {seed} and the grid keys [default: the "
                             "architecture, -s{seed} with several seeds, -KEYVALUE per grid axis].")] = None,
    epochs: EpochsOption = None,
    patience: PatienceOption = None,
    batch_size: BatchSizeOption = None,
    lr: LrOption = None,
    weight_decay: WeightDecayOption = None,
    clip_norm: ClipNormOption = None,
    lr_schedule: LrScheduleOption = None,
    refit: RefitOption = True,
    task: TaskOption = TaskName.classification,
    target: TargetOption = None,
    mirror: MirrorOption = Mirror.auto,
    precision: PrecisionOption = Precision.fp32,
    address: AddressOption = None,
    cpus_per_trial: CpusPerTrialOption = 1,
    gpus_per_trial: GpusPerTrialOption = 0.0,
    retries: RetriesOption = 2,
    overwrite: OverwriteOption = False,
    store_path: StoreOption = DEFAULT_STORE,
    models_path: ModelsOption = DEFAULT_MODELS,
    output_format: FormatOption = OutputFormat.auto,
    quiet: QuietOption = False,
) -> None:
    """Train many models at once on Ray: each cell x architecture x seed x grid point is a trial and an entry.

    Entries already trained with the same settings are skipped, so an interrupted sweep resumes where it
    stopped. Ray runs on this machine unless --address (or RAY_ADDRESS) names a cluster.
    """
    from histcli.cli import console
    from histcli.distributed import import_ray, plan_sweep, run_sweep, trial_device
    from histcli.errors import EXIT_ERROR, EXIT_INTERRUPTED
    from histcli.output import counted, render_rows
    from histcli.registry import Registry
    from histcli.store import Store
    from histcli.training import settings_for

    console.setup(quiet)
    import_ray("histcli sweep")  # before any work: without the extra, one line says how to install it
    store = Store(store_path)
    chosen = chosen_cells(store, cells, all_cells)
    device = trial_device(gpus_per_trial)

    budget = budget_choices(task=task, target=target, epochs=epochs, patience=patience, batch_size=batch_size, lr=lr,
                            weight_decay=weight_decay, clip_norm=clip_norm, lr_schedule=lr_schedule,
                            refit=refit)

    def make_settings(arch, overrides, seed):
        return settings_for(arch, overrides=overrides, seed=seed, device=device, threads=cpus_per_trial,
                            precision=precision.value, **budget)

    trials = plan_sweep(chosen, list(dict.fromkeys(archs)), parse_seeds(seeds), params or [], name, make_settings)
    registry = Registry(models_path)
    terminal = sys.stderr.isatty()
    with console.progress("status") as bar:
        bar_task = None

        def report(progress, outcome):
            nonlocal bar_task
            if bar_task is None:
                bar_task = bar.add_task("sweep", total=progress.total, status="")
            bar.update(bar_task, completed=progress.done + progress.failed, status=progress_text(progress))
            if outcome is not None and outcome.status == "failed":
                logging.getLogger("histcli").warning("%s %s failed: %s", outcome.trial.name, outcome.trial.cell,
                                                     outcome.error)
            elif outcome is not None and not terminal:
                console.note(f"{outcome.trial.name} {outcome.trial.cell}: valid {budget['task'].selection_label} "
                             f"{outcome.valid_score:.4f} "
                             f"({progress.done + progress.failed}/{progress.total}; {progress_text(progress)})")

        outcomes, interrupted = run_sweep(
            trials, store=store, registry=registry, overwrite=overwrite, mirror=mirror.value, retries=retries,
            cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial, address=address, on_progress=report)
    unconverged = sum(outcome.converged is False for outcome in outcomes)
    if unconverged:
        logging.getLogger("histcli").warning(
            "%s did not converge (the best epoch within the patience at the cap of epochs); raise --epochs",
            counted(unconverged, "trained trial"))
    skipped = sum(outcome.status == "skipped" for outcome in outcomes)
    if skipped:
        console.note(f"{skipped} of {len(outcomes)} trials skipped: their entries exist with the same settings "
                     "(--overwrite trains them again)")
    render_rows([outcome.row() for outcome in outcomes], sweep_columns(output_format.value, budget["task"]),
                output_format.value, title=f"sweep into {models_path}")
    if interrupted:
        console.note("interrupted: finished trials are saved; run the same command again to resume")
        raise typer.Exit(EXIT_INTERRUPTED)
    failed = [outcome for outcome in outcomes if outcome.status == "failed"]
    if failed:
        console.note(f"{len(failed)} of {len(outcomes)} trials failed; the others are saved")
        raise typer.Exit(EXIT_ERROR)
