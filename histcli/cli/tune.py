"""`histcli tune`: search an architecture's hyperparameters on one cell with Ray Tune."""

from __future__ import annotations

import logging
from enum import Enum
from typing import Annotated, Optional

import typer

from histcli.cli.options import (
    DEFAULT_MODELS,
    DEFAULT_STORE,
    AddressOption,
    BatchSizeOption,
    CellOption,
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
    complete_architectures,
    fixed_name,
    parse_params,
)


class Scheduler(str, Enum):
    asha = "asha"
    fifo = "fifo"


def tune_columns(keys: list[str], task):
    """The validation column is named after the task's metric (valid_auc, valid_pearson)."""
    from histcli.output import Column

    # Short headers for people (the machine formats keep the keys): three searched keys fit 80 columns.
    return [Column("trial"), *(Column(key) for key in keys),
            Column(f"valid_{task.selection_metric}", task.selection_header, digits=4), Column("best_epoch", "best"),
            Column("epochs"), Column("status", justify="left"), Column("best", "chosen")]


def tune(
    cell: CellOption,
    arch: Annotated[str, typer.Option("--arch", "-a", callback=fixed_name, help="Architecture.",
                                      autocompletion=complete_architectures)],
    search: Annotated[list[str], typer.Option(
        "--search", "-s", help="KEY=SPEC to search (repeat): loguniform:1e-4:1e-2, uniform:0.1:0.6, "
                               "choice:16,32,64 (choice:100,20|50,10 for tuples), int:1:3. Keys: the "
                               "architecture's hyperparameters, lr, weight_decay, batch_size, clip_norm.")],
    samples: Annotated[int, typer.Option("--samples", min=1, help="Configurations to try.")] = 10,
    scheduler: Annotated[Scheduler, typer.Option(
        "--scheduler", case_sensitive=False, help="asha stops trials that fall behind at rungs of a ninth, a third "
                                                   "and all of --epochs; fifo runs every trial to the end.")]
    = Scheduler.asha,
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="Registry name of the best configuration "
                                                                     "[default: ARCH-tuned].")] = None,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of the sampling and of every trial's training.")] = 0,
    params: Annotated[Optional[list[str]], typer.Option(
        "--param", "-p", help="Hyperparameter KEY=VALUE held fixed (repeat).")] = None,
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
    max_concurrent: Annotated[Optional[int], typer.Option(
        "--max-concurrent", min=1, help="Trials at a time [default: as many as fit]. ASHA's stops depend on the "
                                        "order trials reach its rungs: 1 makes an asha search repeat exactly.",
        rich_help_panel="Ray")] = None,
    retries: RetriesOption = 2,
    overwrite: OverwriteOption = False,
    store_path: StoreOption = DEFAULT_STORE,
    models_path: ModelsOption = DEFAULT_MODELS,
    output_format: FormatOption = OutputFormat.auto,
    quiet: QuietOption = False,
) -> None:
    """Search hyperparameters by validation AUC or Pearson r (never test), then save the best configuration's model.

    Prints one row per trial; the saved entry's metadata holds the whole search.
    """
    from histcli.cli import console
    from histcli.distributed import import_ray, trial_device
    from histcli.errors import EXIT_INTERRUPTED
    from histcli.output import counted, render_rows
    from histcli.registry import Registry, check_model_name
    from histcli.store import Store
    from histcli.tuning import parse_search, tune_and_save

    console.setup(quiet)
    import_ray("histcli tune", tune=True)
    specs = parse_search(search)
    model_name = check_model_name(name or f"{arch}-tuned")
    base = {**budget_choices(task=task, target=target, epochs=epochs, patience=patience, batch_size=batch_size,
                             lr=lr, weight_decay=weight_decay, clip_norm=clip_norm, lr_schedule=lr_schedule,
                             refit=refit),
            "device": trial_device(gpus_per_trial), "threads": cpus_per_trial,
            "precision": precision.value}

    def searched(trials):
        for trial in trials:
            if trial.status == "failed":
                logging.getLogger("histcli").warning("trial %d (%s) failed: %s", trial.number,
                                                     " ".join(f"{k}={v}" for k, v in trial.params.items()),
                                                     trial.error)
        console.note(f"search done: {counted(sum(t.status == 'completed' for t in trials), 'trial')} completed, "
                     f"{sum(t.status == 'stopped' for t in trials)} stopped early, "
                     f"{sum(t.status == 'failed' for t in trials)} failed; training the best configuration")

    def starting():
        console.note(f"searching {arch} on {cell}: {counted(samples, 'configuration')}, {scheduler.value} scheduler")

    try:
        entry, trials, best = tune_and_save(
            Store(store_path), cell, arch, Registry(models_path), model_name, base=base,
            fixed=parse_params(params or []), specs=specs, samples=samples, scheduler=scheduler.value, seed=seed,
            mirror=mirror.value, cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial, retries=retries,
            address=address, overwrite=overwrite, max_concurrent=max_concurrent, on_start=starting,
            on_searched=searched)
    except KeyboardInterrupt:
        console.note("interrupted: the search is abandoned and nothing is saved")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    chosen_task = base["task"]
    rows = [{"trial": t.number, **t.params, f"valid_{chosen_task.selection_metric}": t.valid_score,
             "best_epoch": t.best_epoch,
             "epochs": t.epochs, "status": t.status, "best": t is best} for t in trials]
    render_rows(rows, tune_columns(list(specs), chosen_task), output_format.value, title=f"search of {arch} on {cell}")
    console.note(f"saved trial {best.number}'s configuration as {model_name} for {cell}: "
                 f"valid {chosen_task.selection_label} {entry.best_valid_score:.4f} "
                 f"(in the search {best.valid_score:.4f})")
