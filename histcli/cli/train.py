"""`histcli train`: fit a model per cell and save it in the registry."""

from __future__ import annotations

import logging
from typing import Annotated, Optional

import typer

from histcli.cli.options import (
    DEFAULT_MODELS,
    DEFAULT_STORE,
    MAX_SEED,
    BatchSizeOption,
    CellsOption,
    ClipNormOption,
    Device,
    DeviceOption,
    EpochsOption,
    FormatOption,
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
    StoreOption,
    TargetOption,
    TaskName,
    TaskOption,
    WeightDecayOption,
    budget_choices,
    chosen_cells,
    complete_architectures,
    fixed_name,
    parse_params,
    parse_seeds,
    seed_column,
    seeds_text,
)


def _architecture_help() -> str:
    from histcli.models import names

    return f"Architecture: {', '.join(names())}."


def train_columns(task, fmt: str = "tsv"):
    """Columns of train's summary; the validation column is named after the task's metric (valid_auc,
    valid_pearson). A terminal gets one line per cell within 80 columns (the architecture is --arch,
    genes per split are `store list`'s, an interruption has its note); machine formats every column."""
    from histcli.output import Column, resolve_format

    metric = task.selection_metric
    valid = Column(f"valid_{metric}", task.selection_header, digits=4)
    if resolve_format(fmt) == "table":
        return [Column("model", justify="left"), Column("cell", justify="left"), seed_column(),
                Column("best_epoch", "best"), Column("epochs_run", "epochs"), valid,
                Column("seconds", "s", digits=1, fixed=True),
                Column("converged")]
    return [
        Column("model", justify="left"),
        Column("cell", justify="left"),
        Column("arch", justify="left"),
        seed_column(),
        Column("best_epoch"),
        Column("epochs_run", "epochs"),
        Column(f"valid_{metric}", digits=4),
        Column("train_genes"),
        Column("valid_genes"),
        Column("seconds", digits=1, fixed=True),
        Column("converged"),
        Column("interrupted"),
    ]


def train(
    arch: Annotated[str, typer.Option("--arch", "-a", callback=fixed_name, help=_architecture_help(),
                                      autocompletion=complete_architectures)],
    cells: CellsOption = None,
    all_cells: Annotated[bool, typer.Option("--all-cells", help="Train on every cell in the store.")] = False,
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="Registry name (default: the architecture).")] = None,
    task: TaskOption = TaskName.classification,
    target: TargetOption = None,
    epochs: EpochsOption = None,
    patience: PatienceOption = None,
    batch_size: BatchSizeOption = None,
    lr: LrOption = None,
    weight_decay: WeightDecayOption = None,
    clip_norm: ClipNormOption = None,
    lr_schedule: LrScheduleOption = None,
    refit: RefitOption = True,
    params: Annotated[Optional[list[str]], typer.Option("--param", "-p", help="Architecture hyperparameter KEY=VALUE "
                                                                             "(repeat), e.g. dropout=0.3.")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", min=0, max=MAX_SEED, help="Seed of initialisation, "
                                                "dropout and batch order [default: 0].")] = None,
    seeds: Annotated[Optional[str], typer.Option("--seeds", help="Train one model per seed (a range 0-4 or a list "
                                                 "0,2,7) and store them as one ensemble entry that predicts the "
                                                 "mean of their probabilities (regression: of their levels).")] = None,
    device: DeviceOption = Device.auto,
    threads: Annotated[Optional[int], typer.Option("--threads", min=1,
                                                   help="CPU threads for torch (default: torch's choice).")] = None,
    mirror: MirrorOption = Mirror.auto,
    precision: PrecisionOption = Precision.fp32,
    overwrite: OverwriteOption = False,
    store_path: StoreOption = DEFAULT_STORE,
    models_path: ModelsOption = DEFAULT_MODELS,
    output_format: FormatOption = OutputFormat.auto,
    quiet: QuietOption = False,
) -> None:
    """Train an architecture on each cell: choose the best validation epoch (AUC, or Pearson r for --task
    regression), refit that many epochs on the training and validation genes (unless --no-refit), save it in the
    registry."""
    from histcli.cli import console
    from histcli.errors import EXIT_INTERRUPTED, HistcliError, UsageError, describe
    from histcli.output import counted, render_rows
    from histcli.registry import Registry, check_model_name
    from histcli.store import Store
    from histcli.training import (
        resolve_device,
        resolve_precision,
        settings_for,
        train_and_save,
    )

    console.setup(quiet)
    if seed is not None and seeds is not None:
        raise UsageError("--seed and --seeds cannot be combined: --seeds trains an ensemble, one member per seed")
    seed_list = parse_seeds(seeds) if seeds is not None else [0 if seed is None else seed]
    store = Store(store_path)
    chosen = chosen_cells(store, cells, all_cells)
    model_name = check_model_name(name or arch)
    registry = Registry(models_path)
    settings = settings_for(
        arch,
        overrides=parse_params(params or []),
        **budget_choices(task=task, target=target, epochs=epochs, patience=patience, batch_size=batch_size, lr=lr,
                         weight_decay=weight_decay, clip_norm=clip_norm, lr_schedule=lr_schedule,
                         refit=refit),
        seed=seed_list[0],
        device=(resolved := resolve_device(device.value)),
        threads=threads,
        precision=resolve_precision(precision.value, resolved),
    )
    # Held from the existence check to the last save: a second run of this --name and cell fails at once.
    with registry.reserve((model_name, cell) for cell in chosen):
        registry.check_writable(model_name, chosen, overwrite, settings.task.name)
        rows = []
        failed: list[str] = []
        interrupted = False
        metric, metric_label = settings.task.selection_metric, settings.task.selection_label
        with console.progress("status") as bar:
            task = None
            for cell in chosen:
                def start_member(member_seed, cell=cell, total=settings.max_epochs):
                    nonlocal task
                    label = f"{model_name} {cell}" + (f" seed {member_seed}" if len(seed_list) > 1 else "")
                    task = bar.add_task(label, total=total, status="")

                def start_refit(member_seed, epochs):
                    start_member(member_seed, total=epochs)
                    bar.update(task, status="refit: train + valid")

                def report(epoch):
                    if epoch.refit:
                        bar.update(task, completed=epoch.epoch, status=f"refit: loss {epoch.loss:.4f}, train + valid")
                        return
                    bar.update(task, completed=epoch.epoch,
                               # Short enough for an 80-column terminal next to the bar.
                               status=f"loss {epoch.loss:.4f} {metric_label} {epoch.valid_score:.4f} "
                                      f"best {epoch.best_valid_score:.4f}@{epoch.best_epoch}")
                    if epoch.epoch - epoch.best_epoch >= epoch.patience:  # the run stops here
                        bar.update(task, total=epoch.epoch)

                try:
                    entry, result = train_and_save(store, cell, settings, registry, model_name, seeds=seed_list,
                                                   overwrite=overwrite, mirror=mirror.value, run_cells=chosen,
                                                   on_member=start_member, on_refit=start_refit,
                                                   on_epoch=report)
                except HistcliError as exc:
                    if len(chosen) == 1 or isinstance(exc, UsageError):  # a bad option fails every cell alike
                        raise
                    # One cell's data must not cost the others their training (as in sweep).
                    failed.append(cell)
                    logging.getLogger("histcli").warning("%s %s failed, nothing saved: %s", model_name, cell,
                                                         describe(exc)[0])
                    continue
                if entry is None:
                    console.note(f"{model_name} {cell}: interrupted before the first epoch ended; nothing saved")
                else:
                    sizes = entry.data.split_sizes
                    rows.append({
                        "model": model_name, "cell": cell, "arch": arch,
                        # What the entry holds: Ctrl-C leaves an ensemble without the seeds after it.
                        "seeds": list(entry.seeds),
                        "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
                        f"valid_{metric}": result.valid_score, "train_genes": sizes["train"],
                        "valid_genes": sizes["valid"], "seconds": result.seconds,
                        "converged": result.converged, "interrupted": result.interrupted,
                    })
                    for member in result.members:
                        if not member.converged and not member.interrupted:
                            which = f" seed {member.settings.seed}" if len(seed_list) > 1 else ""
                            logging.getLogger("histcli").warning(
                                "%s %s%s did not converge: it reached the cap of %s with its best epoch (%d) "
                                "within the last %d (the patience); raise --epochs", model_name, cell, which,
                                counted(member.epochs_run, "epoch"), member.best_epoch, member.settings.patience)
                if result.interrupted:
                    interrupted = True
                    if entry is not None and len(seed_list) > 1:
                        kept = ("only members whose refit finished" if entry.refit
                                else "a member stopped by Ctrl-C keeps its best epoch so far")
                        console.note(f"{model_name} {cell}: interrupted; saved seed(s) {seeds_text(entry.seeds)} "
                                     f"of {seeds_text(seed_list)} marked as interrupted ({kept})")
                    elif entry is not None:
                        console.note(f"{model_name} {cell}: interrupted; saved the best epoch so far "
                                     f"({result.best_epoch}) marked as interrupted")
                    break
    if rows:
        render_rows(rows, train_columns(settings.task, output_format.value), output_format.value,
                    title=f"trained into {models_path}")
    if interrupted:
        raise typer.Exit(EXIT_INTERRUPTED)
    if failed:
        outcome = "nothing saved for them; the other cells are trained and saved" if rows else "nothing is saved"
        raise HistcliError(f"{len(failed)} of {len(chosen)} cells failed ({', '.join(failed)}; see the warnings "
                           f"above): {outcome}")
