"""Training: mini-batch Adam, model selection by the task's validation metric.

The task (histcli.tasks) gives the targets, the loss and the metric: binary
cross-entropy and AUC for classification, mean squared error on standardised
log expression and Pearson r for regression.

The data go to the device once as tensors; batches are index slices of them
(no DataLoader, no per-sample Python). Validation runs in inference mode in
large batches, and its AUC is computed by ranks. The weights of the best
validation epoch are kept; training stops after ``patience`` epochs without
improvement. Runs are deterministic on the CPU for a given seed and thread
count.

Once the epoch count is chosen, the model is refit by default: a fresh model
of the same seed learns from the training and validation genes together for
that many epochs, with the chosen run's learning rate each epoch, and its last
epoch is kept (see :func:`refit`). The entry's validation score stays the
chosen run's, measured on genes it had not seen.

The budget adapts to the cell (see :func:`resolve_budget`): a cell of 200
training genes gives one optimizer step per epoch at the paper's batch of 200,
a DeepChrome cell 33, so the batch size is chosen from the number of training
genes, and patience is at least a number of optimizer steps as well as of
epochs. The cap is 1,000 epochs; a run that reaches it while still
improving is reported as not converged.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from histcli import interrupt
from histcli.errors import ChoiceError, DivergedError, HistcliError, ModelError, SettingError
from histcli.store import CellData, expression_digest, orientation_unknown
from histcli.tasks import Classification, Task

# Inference runs fastest in batches of a few hundred genes on the CPU: larger
# batches make the CRNN's convolution outputs fall out of the caches.
EVAL_BATCH = 256

# The automatic budget (resolve_budget). The paper's batch of 200 is kept where
# it still gives AUTO_BATCH_STEPS optimizer steps per epoch; smaller cells get
# smaller batches, down to MIN_AUTO_BATCH genes.
MAX_AUTO_BATCH = 200
MIN_AUTO_BATCH = 32
AUTO_BATCH_STEPS = 20
# Patience: at least PATIENCE_EPOCHS epochs and PATIENCE_STEPS optimizer steps.
PATIENCE_EPOCHS = 50
PATIENCE_STEPS = 300
# --lr-schedule plateau: after more than patience / PLATEAU_FRACTION epochs without a
# better validation AUC the learning rate is multiplied by LR_FACTOR, at most
# LR_REDUCTIONS times. Off by default: it lowered validation AUC on E116 and Cell1.
LR_SCHEDULES = ("constant", "plateau")
REFIT_DIVERGED = "the refit on train + valid (--no-refit saves the chosen run)"
PLATEAU_FRACTION = 4
LR_FACTOR = 0.5
LR_REDUCTIONS = 4


@dataclass
class TrainSettings:
    """Everything that decides a training run besides the data."""

    architecture: str
    hyperparameters: dict
    lr: float
    batch_size: int | None  # None: chosen from the cell's training genes (resolve_budget)
    weight_decay: float
    max_epochs: int
    patience: int | None  # None: chosen from the optimizer steps per epoch (resolve_budget)
    clip_norm: float = 0.0  # gradient-norm clipping; 0 is off
    lr_schedule: str = "constant"  # or plateau: halve the learning rate when the selection metric stalls
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    transform: str = "log1p"
    precision: str = "fp32"
    mirror: bool = False  # genes of unknown orientation: train on both, predict the average
    task: Task = field(default_factory=Classification)
    refit: bool = True  # after choosing the epoch count on validation, train on train + valid (see refit)

    def __post_init__(self):
        """Refuse values no run can train with (the command line's option ranges; tune's searched values
        and Python callers come here too)."""
        checks = [
            ("lr", self.lr, 1e-9 <= self.lr <= 10.0, "expected a learning rate from 1e-9 to 10"),
            ("batch_size", self.batch_size, self.batch_size is None or self.batch_size >= 1, "expected at least 1"),
            ("weight_decay", self.weight_decay, 0.0 <= self.weight_decay < math.inf, "expected 0 or more"),
            ("max_epochs", self.max_epochs, self.max_epochs >= 1, "expected at least 1"),
            ("patience", self.patience, self.patience is None or self.patience >= 1, "expected at least 1"),
            ("clip_norm", self.clip_norm, 0.0 <= self.clip_norm < math.inf, "expected 0 (off) or more"),
        ]
        for setting, value, valid, expected in checks:
            if not valid:
                raise SettingError(setting, value, expected)
        if self.lr_schedule not in LR_SCHEDULES:
            raise ChoiceError("lr_schedule", self.lr_schedule, LR_SCHEDULES)

    def as_config(self) -> dict:
        return {
            "lr": self.lr,
            "batch_size": self.batch_size,
            "weight_decay": self.weight_decay,
            "max_epochs": self.max_epochs,
            "patience": self.patience,
            "clip_norm": self.clip_norm,
            "lr_schedule": self.lr_schedule,
            "seed": self.seed,
            "device": self.device,
            "threads": self.threads,
            "precision": self.precision,
            "mirror": self.mirror,
            "refit": self.refit,
            "optimizer": "Adam",
            "loss": self.task.loss_name,
            "selection": f"best validation {self.task.selection_label}",
        }


@dataclass
class EpochReport:
    epoch: int
    loss: float
    valid_score: float  # the task's selection metric (AUC, Pearson r) this epoch
    best_epoch: int
    best_valid_score: float
    seconds: float
    patience: int
    lr: float
    refit: bool = False  # an epoch of the refit on train + valid: nothing is scored (valid_score is nan)


@dataclass
class TrainResult:
    state: dict | None  # weights of the best epoch; None if no epoch finished
    best_epoch: int
    best_valid_score: float  # the task's selection metric at the best epoch
    epochs_run: int
    history: list[dict] = field(default_factory=list)
    interrupted: bool = False
    seconds: float = 0.0
    n_parameters: int = 0
    settings: TrainSettings | None = None  # as resolved for the cell (batch size, patience, task scaling)
    best_valid_outputs: np.ndarray | None = None  # the module's validation outputs at the best epoch
    refit: RefitRecord | None = None  # set when ``state`` holds the weights refit on train + valid

    @property
    def converged(self) -> bool:
        """Stopped by patience: the best epoch is not among the last ``patience`` epochs run.

        A selection cut short by Ctrl-C or the epoch cap never gets there; a chosen run whose refit was
        interrupted did (it is saved as chosen, marked interrupted).
        """
        return self.epochs_run - self.best_epoch >= self.settings.patience


@dataclass
class RefitRecord:
    """How a chosen run's weights were refit on its cell's training and validation genes."""

    genes: int
    epochs: int
    seconds: float
    final_loss: float

    def metadata(self) -> dict:
        return {"refit_genes": self.genes, "refit_epochs": self.epochs, "refit_seconds": round(self.seconds, 3),
                "refit_loss": self.final_loss}


def resolve_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise SettingError("device", "cuda", "no CUDA device is available; use --device auto or cpu")
    return requested


def resolve_precision(requested: str, device: str) -> str:
    """``auto`` trains in bfloat16 autocast where the hardware computes it natively, else fp32."""
    if requested != "auto":
        return requested
    import torch

    if device == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    native = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
    return "bf16" if native else "fp32"


def settings_for(architecture: str, *, overrides: dict | None = None, **training) -> TrainSettings:
    """Resolve an architecture's defaults with the user's choices (None keeps a default)."""
    from histcli import models

    if architecture not in models.names():  # the user's choice; a stored entry's unknown one is a ModelError
        raise ChoiceError("arch", architecture, models.names())
    arch = models.get(architecture)
    defaults = arch.training
    chosen = {key: value for key, value in training.items() if value is not None}
    unknown = set(chosen) - set(defaults) - {"seed", "device", "threads", "transform", "precision", "mirror", "task",
                                             "refit"}
    if unknown:
        raise ModelError(f"unknown training setting(s): {', '.join(sorted(unknown))}")
    setting = {**defaults, **chosen}
    return TrainSettings(
        architecture=architecture,
        hyperparameters=models.resolve_hyperparameters(arch, overrides or {}),
        lr=float(setting["lr"]),
        batch_size=None if setting["batch_size"] is None else int(setting["batch_size"]),
        weight_decay=float(setting["weight_decay"]),
        max_epochs=int(setting["max_epochs"]),
        patience=None if setting["patience"] is None else int(setting["patience"]),
        clip_norm=float(setting["clip_norm"]),
        lr_schedule=str(setting["lr_schedule"]),
        seed=int(chosen.get("seed", 0)),
        device=chosen.get("device", "cpu"),
        threads=chosen.get("threads"),
        transform=chosen.get("transform", arch.transform),
        precision=chosen.get("precision", "fp32"),
        mirror=bool(chosen.get("mirror", False)),
        task=chosen.get("task", Classification()),
        refit=bool(chosen.get("refit", True)),
    )


def resolve_budget(settings: TrainSettings, n_train: int) -> TrainSettings:
    """Fill in the batch size and patience left to the cell (None), from its number of training genes.

    Batch: the paper's 200 where that gives at least AUTO_BATCH_STEPS steps an
    epoch, else ``n_train // AUTO_BATCH_STEPS`` but at least MIN_AUTO_BATCH.
    A batch, chosen or given, larger than the split is the whole split, and is
    recorded as such: the entry's configuration says what ran.
    Patience: PATIENCE_EPOCHS epochs, more where they would be fewer than
    PATIENCE_STEPS optimizer steps.
    """
    batch_size = settings.batch_size
    if batch_size is None:
        batch_size = max(MIN_AUTO_BATCH, min(MAX_AUTO_BATCH, n_train // AUTO_BATCH_STEPS))
    batch_size = max(1, min(batch_size, n_train))
    patience = settings.patience
    if patience is None:
        steps_per_epoch = math.ceil(n_train / batch_size)
        patience = max(PATIENCE_EPOCHS, math.ceil(PATIENCE_STEPS / steps_per_epoch))
    return dataclasses.replace(settings, batch_size=batch_size, patience=patience)


def resolve_mirror(requested: str, cell_attrs: dict, cell_name: str = "this cell") -> bool:
    """``auto`` mirrors genes whose orientation the data do not give (track input without strands)."""
    if requested != "auto":
        return requested == "on"
    if cell_attrs.get("source_format") == "tracks" and "orientation" not in cell_attrs:
        # Stores from before the attribute existed: unstranded genes were stored as '+'.
        logging.getLogger("histcli").warning(
            "%s was prepared from tracks before histcli recorded gene orientation; its genes are taken as "
            "5' to 3' (pass --mirror on if the genes file had no strands, or prepare the cell again)", cell_name)
    return orientation_unknown(cell_attrs)


def split_targets(cell: CellData, split: str, task: Task) -> np.ndarray:
    """The task's targets of one split, checked to be usable for training (no counts are read)."""
    if not cell.split_mask(split).any():
        raise HistcliError(f"cell {cell.name} has no {split} genes; prepare it with a split")
    return task.targets(cell, split)


def split_arrays(cell: CellData, split: str, transform: str, task: Task) -> tuple[np.ndarray, np.ndarray]:
    """Transformed inputs and the task's targets of one split, checked to be usable for training."""
    from histcli.transforms import apply_transform

    targets = split_targets(cell, split, task)
    return apply_transform(transform, cell.counts[cell.split_mask(split)]), targets


def predict_logits(module, inputs, batch_size: int = EVAL_BATCH, mirror: bool = False):
    """Logits of a module in eval mode over an input tensor already on its device.

    With ``mirror`` the logits are averaged over both orientations of the bins,
    as for models trained with mirrored genes.
    """
    import torch

    module.eval()
    with torch.inference_mode():
        batches = []
        for start in range(0, len(inputs), batch_size):
            batch = inputs[start : start + batch_size]
            logits = module(batch)
            if mirror:
                logits = (logits + module(batch.flip(1))) / 2
            batches.append(logits)
        return torch.cat(batches)


def train(cell: CellData, settings: TrainSettings, *,
          on_epoch: Callable[[EpochReport], None] | None = None) -> TrainResult:
    """Train on the cell's train split, select on its valid split.

    Ctrl-C ends training early: the result then holds the best weights so far
    (``interrupted`` is set), or no weights if no epoch finished.
    """
    train_x, train_targets = split_arrays(cell, "train", settings.transform, settings.task)
    valid_x, valid_targets = split_arrays(cell, "valid", settings.transform, settings.task)
    return _fit(settings, train_x, train_targets, valid_x, valid_targets, on_epoch=on_epoch)


def refit(cell: CellData, chosen: TrainResult, *,
          on_epoch: Callable[[EpochReport], None] | None = None) -> TrainResult:
    """The chosen run refit on the cell's training and validation genes together.

    A fresh model of the same seed and resolved settings (batch size, patience) trains
    for the chosen run's best epoch count, each epoch at the learning rate the chosen
    run had then, and its last epoch is kept: nothing is selected, so no gene scores
    it. The result is the chosen run with the refit weights and a ``refit`` record;
    its validation score, outputs, best epoch and history stay the chosen run's
    (measured on genes it had not seen). For regression the targets are standardised
    by the training and validation genes' mean and scale.

    Ctrl-C returns the chosen run as it was, marked ``interrupted``.
    """
    settings = chosen.settings
    both = cell.split_mask("train") | cell.split_mask("valid")
    # Labels or levels of both splits, checked as each split's are for training.
    targets = np.empty(len(both), dtype=np.float32)
    for split in ("train", "valid"):
        targets[cell.split_mask(split)] = split_targets(cell, split, settings.task)
    from histcli.transforms import apply_transform

    inputs = apply_transform(settings.transform, cell.counts[both])
    fitted = _fit(settings, inputs, targets[both], on_epoch=on_epoch,
                  learning_rates=[record["lr"] for record in chosen.history[:chosen.best_epoch]])
    if fitted.interrupted:
        return dataclasses.replace(chosen, interrupted=True)
    record = RefitRecord(genes=int(both.sum()), epochs=fitted.epochs_run, seconds=fitted.seconds,
                         final_loss=fitted.history[-1]["loss"])
    return dataclasses.replace(chosen, state=fitted.state, settings=fitted.settings, refit=record,
                               seconds=chosen.seconds + fitted.seconds)


def _fit(settings: TrainSettings, train_x: np.ndarray, train_targets: np.ndarray,
         valid_x: np.ndarray | None = None, valid_targets: np.ndarray | None = None, *,
         on_epoch: Callable[[EpochReport], None] | None = None,
         learning_rates: list[float] | None = None) -> TrainResult:
    """The training loop. With validation genes it keeps the best epoch and stops by patience; without,
    it runs one epoch per entry of ``learning_rates`` at that rate and keeps the last (a refit)."""
    import torch

    from histcli import models

    started = time.perf_counter()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    torch.use_deterministic_algorithms(settings.device == "cpu", warn_only=True)
    device = torch.device(settings.device)

    selecting = valid_x is not None
    task = settings.task.fitted(train_targets)
    # The thread count recorded is the one used (torch's choice when none was asked for): results depend on it.
    settings = dataclasses.replace(resolve_budget(settings, len(train_x)), task=task, threads=torch.get_num_threads())
    n_bins, n_marks = train_x.shape[1:]
    module = models.get(settings.architecture).build(n_bins, n_marks, settings.hyperparameters)
    # Channels-last convolution weights train faster on CPU and GPU (only 4-D weights change).
    module = module.to(device=device, memory_format=torch.channels_last)
    n_parameters = sum(p.numel() for p in module.parameters())
    optimizer = torch.optim.Adam(module.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = None
    if settings.lr_schedule == "plateau" and selecting:
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=LR_FACTOR, patience=max(1, settings.patience // PLATEAU_FRACTION),
            threshold=0.0, min_lr=settings.lr * LR_FACTOR**LR_REDUCTIONS)
    loss_function = task.loss()
    train_inputs = torch.from_numpy(train_x).to(device)
    train_targets = torch.from_numpy(task.training_targets(train_targets)).to(device)
    valid_inputs = torch.from_numpy(valid_x).to(device) if selecting else None
    order_generator = torch.Generator().manual_seed(settings.seed)
    # Mixed precision for the training steps only: validation, and so model
    # selection, stays in float32 like evaluation and prediction.
    bf16 = settings.precision == "bf16"

    best_state, best_epoch, best_score, best_outputs = None, 0, -math.inf, None
    metric = task.selection_metric
    history: list[dict] = []
    interrupted = False
    epoch = 0
    max_epochs = settings.max_epochs if selecting else len(learning_rates)
    try:
        for epoch in range(1, max_epochs + 1):
            epoch_start = time.perf_counter()
            if not selecting:
                for group in optimizer.param_groups:
                    group["lr"] = learning_rates[epoch - 1]
            module.train()
            order = torch.randperm(len(train_inputs), generator=order_generator).to(device)
            total_loss = torch.zeros((), device=device)
            for start in range(0, len(order), settings.batch_size):
                interrupt.check()
                batch = order[start : start + settings.batch_size]
                inputs = train_inputs[batch]
                if settings.mirror:
                    # Half of the genes, drawn anew each batch, are seen 3' to 5'.
                    flipped = (torch.rand(len(batch), generator=order_generator) < 0.5).to(device)
                    inputs = torch.where(flipped[:, None, None], inputs.flip(1), inputs)
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    logits = module(inputs)
                loss = loss_function(logits.float(), train_targets[batch])
                loss.backward()
                if settings.clip_norm > 0:
                    torch.nn.utils.clip_grad_norm_(module.parameters(), settings.clip_norm)
                optimizer.step()
                total_loss += loss.detach() * len(batch)
            mean_loss = float(total_loss) / len(order)
            lr = optimizer.param_groups[0]["lr"]
            if not selecting:
                if not math.isfinite(mean_loss):
                    raise DivergedError(epoch, mean_loss, REFIT_DIVERGED)
                history.append({"epoch": epoch, "loss": mean_loss, "lr": lr})
                if on_epoch is not None:
                    on_epoch(EpochReport(epoch, mean_loss, math.nan, epoch, math.nan,
                                         time.perf_counter() - epoch_start, settings.patience, lr, refit=True))
                continue
            valid_outputs = predict_logits(module, valid_inputs, mirror=settings.mirror).float().cpu().numpy()
            if not math.isfinite(mean_loss) or not np.isfinite(valid_outputs).all():
                raise DivergedError(epoch, mean_loss)
            valid_score = task.selection_score(valid_targets, valid_outputs)
            if valid_score > best_score:
                best_score, best_epoch, best_outputs = valid_score, epoch, valid_outputs
                best_state = {key: value.detach().clone() for key, value in module.state_dict().items()}
            history.append({"epoch": epoch, "loss": mean_loss, f"valid_{metric}": valid_score, "lr": lr})
            if scheduler is not None:
                scheduler.step(valid_score)
            if on_epoch is not None:
                on_epoch(EpochReport(epoch, mean_loss, valid_score, best_epoch, best_score,
                                     time.perf_counter() - epoch_start, settings.patience, lr))
            if epoch - best_epoch >= settings.patience:
                break
    except KeyboardInterrupt:
        interrupted = True
        interrupt.clear()  # handled here: the best epoch so far is returned to be saved
    if not selecting and not interrupted:
        best_epoch = len(history)
        best_state = {key: value.detach().clone() for key, value in module.state_dict().items()}
        # The last step's weights are never scored: a step that blew up shows only here.
        if not all(bool(torch.isfinite(value).all()) for value in best_state.values() if value.is_floating_point()):
            raise DivergedError(best_epoch, mean_loss, REFIT_DIVERGED)
    return TrainResult(
        state=best_state,
        best_epoch=best_epoch,
        best_valid_score=best_score if best_state is not None and selecting else math.nan,
        epochs_run=len(history),
        history=history,
        interrupted=interrupted,
        seconds=time.perf_counter() - started,
        n_parameters=n_parameters,
        settings=settings,
        best_valid_outputs=best_outputs,
    )


def versions() -> dict:
    import platform

    import torch

    from histcli import __version__

    return {"histcli": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


@dataclass
class EntryResult:
    """What one registry entry's training gave: one member, or one per seed of an ensemble."""

    members: list[TrainResult]
    valid_score: float  # the selection metric of the entry's prediction (for an ensemble, of the combined members)
    interrupted: bool = False  # Ctrl-C: for an ensemble, members after the interrupted one were not trained

    @property
    def best_epoch(self) -> int:
        """The best epoch; for an ensemble, the latest best epoch of any member."""
        return max(member.best_epoch for member in self.members)

    @property
    def epochs_run(self) -> int:
        return max(member.epochs_run for member in self.members)

    @property
    def converged(self) -> bool:
        return all(member.converged for member in self.members)

    @property
    def seconds(self) -> float:
        return sum(member.seconds for member in self.members)

    @property
    def settings(self) -> TrainSettings:
        return self.members[0].settings


def ensemble_valid_score(cell: CellData, members: list[TrainResult]) -> float:
    """The selection metric of the ensemble's validation predictions: the members' outputs at their best
    epochs combined by the task's ensemble_outputs, or for a mirrored ensemble its own outputs averaged over
    both orientations (mirrored_ensemble_outputs)."""
    task = members[0].settings.task
    if members[0].settings.mirror:
        combined = mirrored_ensemble_outputs(cell, members)
    else:
        combined = task.ensemble_outputs(np.stack([member.best_valid_outputs for member in members]))
    return task.selection_score(task.targets(cell, "valid"), combined)


def mirrored_ensemble_outputs(cell: CellData, members: list[TrainResult]) -> np.ndarray:
    """Validation outputs of a mirrored ensemble as it predicts: the ensemble's output averaged over both
    orientations. For classification this is not the members' mirrored outputs combined (the logit of a mean
    probability is not linear), so the members' weights are run again."""
    import torch

    from histcli import models
    from histcli.models._ensemble import Ensemble

    settings = members[0].settings
    valid_x, _ = split_arrays(cell, "valid", settings.transform, settings.task)
    architecture = models.get(settings.architecture)
    modules = []
    for member in members:
        module = architecture.build(valid_x.shape[1], valid_x.shape[2], settings.hyperparameters)
        module.load_state_dict(member.state)
        modules.append(module)
    device = torch.device(settings.device)
    ensemble = Ensemble(modules, settings.task.ensemble_combine).to(device)
    return predict_logits(ensemble, torch.from_numpy(valid_x).to(device), mirror=True).float().cpu().numpy()


def train_entry(cell: CellData, settings: TrainSettings, *, store_path, seeds: list[int] | None = None,
                mirror: str = "auto", on_member: Callable[[int], None] | None = None,
                on_refit: Callable[[int, int], None] | None = None,
                on_epoch: Callable[[EpochReport], None] | None = None):
    """Train a registry entry's model(s) on a cell in memory, without writing anything.

    Returns (states, config, metadata, EntryResult), ready for ``Registry.save``;
    states, config and metadata are None when training was interrupted before
    the first epoch finished. ``store_path`` is recorded as where the cell came
    from. See :func:`train_and_save` for the other arguments.
    """
    from datetime import datetime, timezone

    from histcli import models
    from histcli.registry import DataSpec, InputSpec

    settings = dataclasses.replace(settings, mirror=resolve_mirror(mirror, cell.attrs, f"cell {cell.name}"))
    seeds = list(seeds) if seeds else [settings.seed]
    runs: list[tuple[TrainResult, TrainResult]] = []  # per member: as chosen on validation, as saved
    for seed in seeds:
        if on_member is not None:
            on_member(seed)
        result = train(cell, dataclasses.replace(settings, seed=seed), on_epoch=on_epoch)
        if result.state is not None:
            chosen = result
            if settings.refit and not result.interrupted:
                try:
                    if on_refit is not None:
                        on_refit(seed, result.best_epoch)
                    result = refit(cell, result, on_epoch=on_epoch)
                except KeyboardInterrupt:  # before the refit's loop (its own Ctrl-C returns the chosen run)
                    interrupt.clear()
                    result = dataclasses.replace(result, interrupted=True)
            runs.append((chosen, result))
        if result.interrupted:
            break
    if any(saved.refit is not None for _, saved in runs):
        # One entry has one target scaling (a regressor's refit is of train + valid genes): members Ctrl-C kept
        # from their refit are left out of an entry whose other members were refit.
        runs = [(chosen, saved) for chosen, saved in runs if saved.refit is not None]
    members = [saved for _, saved in runs]
    if not members:
        return None, None, None, EntryResult([result], math.nan, interrupted=True)
    ensemble = len(seeds) > 1
    outcome = EntryResult(members, ensemble_valid_score(cell, [chosen for chosen, _ in runs]) if ensemble
                          else members[0].best_valid_score, interrupted=result.interrupted)
    training_config = outcome.settings.as_config()
    if ensemble:
        del training_config["seed"]
        training_config["seeds"] = [member.settings.seed for member in members]
    split_sizes = {split: int(cell.split_mask(split).sum()) for split in ("train", "valid", "test")}
    task = outcome.settings.task
    best_key = f"best_valid_{task.selection_metric}"
    config = {
        "task": task.config(),
        "architecture": settings.architecture,
        "architecture_revision": models.get(settings.architecture).revision,
        "hyperparameters": settings.hyperparameters,
        "training": training_config,
        "input": InputSpec(
            marks=tuple(cell.marks), n_bins=cell.n_bins, bin_size=cell.bin_size, window=cell.window,
            tss_offset=cell.tss_offset, transform=settings.transform, mirror=settings.mirror,
            source_format=cell.attrs.get("source_format"), aggregate=cell.attrs.get("aggregate"),
        ).to_json(),
        "data": DataSpec(
            store=str(Path(store_path).resolve()), cell=cell.name, fingerprint=cell.fingerprint,
            split_sizes=split_sizes,
            expression_sha256=expression_digest(cell.expression) if task.uses_expression else None,
        ).to_json(),
    }
    metadata = {
        "best_epoch": outcome.best_epoch,
        "selection_metric": task.selection_metric,
        best_key: outcome.valid_score,
        "epochs_run": outcome.epochs_run,
        "converged": outcome.converged,
        "interrupted": outcome.interrupted,
        "train_seconds": round(outcome.seconds, 3),
        "n_parameters": sum(member.n_parameters for member in members),
        "seed": members[0].settings.seed if not ensemble else [member.settings.seed for member in members],
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
        "history": [] if ensemble else members[0].history,
        # Whether the saved weights were refit on train + valid: all members are, or none (see above).
        "refit": members[0].refit is not None,
        **({} if ensemble else _refit_metadata(members[0])),
    }
    if ensemble:
        from histcli.registry import member_weights_name

        metadata["members"] = [{
            "seed": member.settings.seed,
            "weights": member_weights_name(member.settings.seed),
            "best_epoch": member.best_epoch,
            best_key: member.best_valid_score,
            "epochs_run": member.epochs_run,
            "converged": member.converged,
            "interrupted": member.interrupted,
            "train_seconds": round(member.seconds, 3),
            **_refit_metadata(member),
            "history": member.history,
        } for member in members]
    states = [member.state for member in members] if ensemble else members[0].state
    return states, config, metadata, outcome


def _refit_metadata(member: TrainResult) -> dict:
    if member.refit is None:
        return {"refit_genes": None, "refit_epochs": None, "refit_seconds": None, "refit_loss": None}
    return member.refit.metadata()


def train_and_save(store, cell_name: str, settings: TrainSettings, registry, name: str, *,
                   seeds: list[int] | None = None, overwrite: bool = False, mirror: str = "auto",
                   run_cells=(), on_member: Callable[[int], None] | None = None,
                   on_refit: Callable[[int, int], None] | None = None,
                   on_epoch: Callable[[EpochReport], None] | None = None):
    """Train a model on one stored cell and write its registry entry.

    ``seeds`` of more than one seed train one member per seed (each exactly as
    a single run with that seed) and store them as one ensemble entry; a member
    that fails fails the whole entry, and nothing is written. ``on_member`` is
    called with each seed before its training starts, ``on_refit`` with the seed
    and the epochs to run before its refit on train + valid (``settings.refit``).
    ``mirror`` is auto, on or off (see :func:`resolve_mirror`); ``run_cells`` are the other cells the run
    writes under ``name`` (see :meth:`Registry.save`).
    Returns (entry or None, EntryResult): no entry when training was
    interrupted before the first epoch finished. An interrupted run that has a
    best epoch is saved with ``interrupted: true`` in its metadata (for an
    ensemble, with the members trained so far).
    """
    cell = store.load(cell_name)
    states, config, metadata, outcome = train_entry(cell, settings, store_path=store.path, seeds=seeds,
                                                    mirror=mirror, on_member=on_member, on_refit=on_refit,
                                                    on_epoch=on_epoch)
    if states is None:
        return None, outcome
    entry = registry.save(name, cell.name, states, config, metadata, overwrite=overwrite, run_cells=run_cells)
    return entry, outcome
