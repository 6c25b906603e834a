"""Options shared by several commands, defined once (like deepTools' parserCommon).

Only typer and the standard library are imported here: ``histcli --help`` and
shell completion load this module and must stay fast.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperCommand

from histcli.locations import DEFAULT_MODELS as DEFAULT_MODELS  # re-exported: the commands' defaults
from histcli.locations import DEFAULT_STORE as DEFAULT_STORE
from histcli.locations import MODELS_ENV, STORE_ENV, default_models_path, default_store_path


class OnceCommand(TyperCommand):
    """A command whose one-value options may be given once, and never empty.

    click keeps the last of ``--arch cnn --arch crnn`` and drops the first without a word, which in a loop's
    command line trains, evaluates or deletes something else than asked. Options that repeat (``--cell``,
    ``--track``) are declared so and stay repeatable. An empty value (``--name "$unset"``) would otherwise
    stand for the default (``--name ''`` with ``--overwrite`` replaced the entry named after the
    architecture) or for the current folder (``--models ''``)."""

    def make_parser(self, ctx):
        parser = super().make_parser(ctx)
        parse = parser.parse_args

        def parse_once(args):
            opts, rest, order = parse(args=args)
            # Shell completion parses partial command lines; --help shows the help whatever else is given.
            if not ctx.resilient_parsing and not opts.get("help"):
                from histcli.cli.main import click_exceptions

                seen = set()
                for param in order:
                    values = opts.get(param.name)
                    if values == "" or (isinstance(values, (list, tuple)) and "" in values):
                        raise click_exceptions().UsageError(
                            f"{_shown_name(param)} is empty (an unset shell variable?); give a value"
                            + (" or leave the option out" if param.param_type_name == "option" else ""), ctx)
                    if param.param_type_name != "option" or param.multiple or param.count:
                        continue
                    if param in seen:
                        problem = "give it once" if param.is_flag else "it takes one value"
                        raise click_exceptions().UsageError(f"{_shown_name(param)} given twice; {problem}", ctx)
                    seen.add(param)
            return opts, rest, order

        parser.parse_args = parse_once
        return parser


def _shown_name(param) -> str:
    """How a message names an option (its long names: ``--refit/--no-refit``) or an argument (``NAME``)."""
    if param.param_type_name != "option":
        return f"argument {param.human_readable_name}"
    return "/".join([max(param.opts, key=len), *param.secondary_opts])


def dash_means_stdout(value: Optional[Path]) -> Optional[Path]:
    """An output option's ``-`` (as ``--input -`` is stdin): stdout, not a file named ``-``."""
    return None if value is not None and str(value) == "-" else value


class HistcliTyper(typer.Typer):
    """The Typer of histcli and its command groups: every command is a :class:`OnceCommand`."""

    def command(self, *args, cls=OnceCommand, **kwargs):
        return super().command(*args, cls=cls, **kwargs)


class OutputFormat(str, Enum):
    auto = "auto"
    table = "table"
    tsv = "tsv"
    json = "json"


class PredictionFormat(str, Enum):
    tsv = "tsv"
    json = "json"


class TableFormat(str, Enum):
    auto = "auto"
    table = "table"
    tsv = "tsv"
    csv = "csv"
    json = "json"


class Aggregate(str, Enum):
    sum = "sum"
    mean = "mean"


class Precision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"


class Mirror(str, Enum):
    auto = "auto"
    on = "on"
    off = "off"


class TaskName(str, Enum):
    classification = "classification"
    regression = "regression"


class Target(str, Enum):
    log1p = "log1p"
    log2p1 = "log2p1"
    log10p1 = "log10p1"


class LrSchedule(str, Enum):
    plateau = "plateau"
    constant = "constant"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


def _store_from_context(ctx: typer.Context) -> Path:
    value = ctx.params.get("store_path") if ctx is not None else None
    return Path(value) if value else default_store_path()


def _models_from_context(ctx: typer.Context) -> Path:
    value = ctx.params.get("models_path") if ctx is not None else None
    return Path(value) if value else default_models_path()


def complete_cells(ctx: typer.Context, incomplete: str) -> list[str]:
    """Cell names in the store; completion must never print or fail."""
    try:
        from histcli.store import Store

        names = Store(_store_from_context(ctx)).cell_names()
    except Exception:
        return []
    return [name for name in names if name.startswith(incomplete)]


def complete_model_names(ctx: typer.Context, incomplete: str) -> list[str]:
    try:
        from histcli.registry import Registry

        names = Registry(_models_from_context(ctx)).names()
    except Exception:
        return []
    return [name for name in names if name.startswith(incomplete)]


def complete_architectures(incomplete: str) -> list[str]:
    from histcli.models import names

    return [name for name in names() if name.startswith(incomplete)]


StoreOption = Annotated[
    Path,
    typer.Option(
        "--store",
        envvar=STORE_ENV,
        help=f"HDF5 dataset store (default: {DEFAULT_STORE}).",
        show_default=False,
        rich_help_panel="Locations",
    ),
]
ModelsOption = Annotated[
    Path,
    typer.Option(
        "--models",
        envvar=MODELS_ENV,
        help=f"Model registry folder (default: {DEFAULT_MODELS}).",
        show_default=False,
        rich_help_panel="Locations",
    ),
]
FormatOption = Annotated[
    OutputFormat,
    typer.Option(
        "--format",
        "-f",
        help="Output format: auto is a table on a terminal and TSV in a pipe.",
        case_sensitive=False,
        rich_help_panel="Output",
    ),
]
TableFormatOption = Annotated[
    TableFormat,
    typer.Option(
        "--format",
        "-f",
        help="Output format: auto is a table on a terminal and TSV in a pipe.",
        case_sensitive=False,
        rich_help_panel="Output",
    ),
]
QuietOption = Annotated[
    bool,
    typer.Option("--quiet", "-q", help="No progress bars or notes on stderr.", rich_help_panel="Output"),
]
OverwriteOption = Annotated[
    bool, typer.Option("--overwrite", help="Replace what is already stored under this name.")
]
CellsOption = Annotated[
    Optional[list[str]],
    typer.Option("--cell", "-c", help="Cell type (repeat for several).", autocompletion=complete_cells),
]
CellOption = Annotated[
    str, typer.Option("--cell", "-c", help="Cell type.", autocompletion=complete_cells)
]


def fixed_name(value):
    """The callback of options whose values are fixed lowercase names that the library checks (--arch, --split,
    --metric, --explain-method): any case is taken, and the canonical name is used and recorded, as click does for
    the Enum options (case_sensitive=False). Cell and model names are the user's and keep their case."""
    if isinstance(value, list):
        return [item.lower() for item in value]
    return value.lower() if isinstance(value, str) else value


DeviceOption = Annotated[
    Device,
    typer.Option("--device", help="auto uses CUDA when available.", case_sensitive=False),
]
SplitOption = Annotated[
    str,
    typer.Option("--split", callback=fixed_name,
                 help="Genes to evaluate on: test, valid, train, none (unsplit) or all."),
]
AllowChangedOption = Annotated[
    bool,
    typer.Option("--allow-changed-data", help="Evaluate even if the model's cell changed since training."),
]
# The metric of compare and report (checked against the models' tasks by histcli.comparison.choose_metric).
MetricOption = Annotated[
    Optional[str],
    typer.Option("--metric", callback=fixed_name, help="auc (any models; regressors by their predicted level), "
                 "pearson or spearman (regression models). Default: pearson when every model is a regressor, else auc."),
]
MarksOption = Annotated[
    Optional[str],
    typer.Option("--marks", help="Mark names of the value columns, in file order, comma-separated."),
]
DropMissingOption = Annotated[
    bool,
    typer.Option("--drop-missing", help="Leave out genes without expression or tracks (reported), instead of failing."),
]
ExpressionOption = Annotated[
    Optional[Path],
    typer.Option("--expression", help="Expression per gene: gene_id<TAB>value, or a matrix with one column per "
                                      "cell (gene_id E003 E004 ...); labels are value > median of all its rows.",
                 rich_help_panel="Expression"),
]
ExpressionColumnOption = Annotated[
    Optional[str],
    typer.Option("--expression-column", help="Matrix column to read (default: the one named like the cell).",
                 rich_help_panel="Expression"),
]


def parse_tracks(values: list[str]) -> dict[str, Path]:
    """``MARK=FILE`` pairs, keyed by canonical mark name."""
    from histcli.errors import UsageError
    from histcli.marks import parse_marks

    pairs = []
    for value in values:
        mark, sep, file = value.partition("=")
        if not sep or not mark or not file:
            raise UsageError(f"--track {value!r}: expected MARK=FILE, e.g. H3K4me3=E116.H3K4me3.bedGraph.gz")
        pairs.append((mark, Path(file)))
    marks = parse_marks([mark for mark, _ in pairs], source="--track")
    return {mark: file for mark, (_, file) in zip(marks, pairs, strict=True)}


TrackOption = Annotated[
    list[str],
    typer.Option("--track", "-t", help="MARK=FILE: a bedGraph(.gz) or bigWig track (repeat per mark).",
                 rich_help_panel="Tracks"),
]
GenesOption = Annotated[
    Path,
    typer.Option("--genes", help="Genes: BED (TSS-centred windows or TSS positions, strand in column 6), GTF or GFF3.",
                 rich_help_panel="Tracks"),
]
AggregateOption = Annotated[
    Aggregate,
    typer.Option("--aggregate", case_sensitive=False, help="sum: values are read counts spread over their interval; "
                 "mean: values are signal averaged over the bin.",
                 rich_help_panel="Tracks"),
]


# The largest seed torch's generators take (numpy's take any non-negative integer).
MAX_SEED = 2**64 - 1
# More seeds than any ensemble or sweep needs: a range past it is a typo (0-100000000000 filled memory).
MAX_SEEDS = 10_000


def parse_seeds(text: str) -> list[int]:
    """``0-4`` or ``0,2,7`` (or a mix, ``0-2,9``) as a list of distinct seeds in the given order."""
    from histcli.errors import UsageError

    seeds: list[int] = []
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        try:
            low, high = int(first), int(last if dash else first)
        except ValueError:
            raise UsageError(f"--seeds {text!r}: expected a range or a comma list of integers, e.g. 0-4 or 0,2,7") from None
        if high < low:
            raise UsageError(f"--seeds {text!r}: the range {part.strip()} runs backwards")
        if high > MAX_SEED:
            raise UsageError(f"--seeds {text!r}: {high} is above the largest seed, {MAX_SEED}")
        if len(seeds) + high - low + 1 > MAX_SEEDS:
            raise UsageError(f"--seeds {text!r}: more than {MAX_SEEDS} seeds")
        seeds += range(low, high + 1)
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds {text!r}: a seed is named twice")
    return seeds


def seeds_text(seeds: list[int]) -> str:
    """The inverse of parse_seeds for display: ``0-4`` for a run of seeds, else a comma list."""
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(map(str, seeds))


def seed_column(justify: str = "right"):
    """The column of an entry's seeds (train, models list): TSV's and the table's ``seed`` is short text ("3",
    "0-4"); JSON's ``seeds`` a list of integers, one for a single model, for an ensemble one per member."""
    from histcli.output import Column

    return Column("seed", justify=justify, field="seeds", text=seeds_text)


# Training options of train, sweep and tune.
TaskOption = Annotated[
    TaskName,
    typer.Option("--task", case_sensitive=False, help="classification: expression above the cell's median (labels); "
                 "regression: the expression level (needs expression values), selected on validation Pearson r.",
                 rich_help_panel="Training"),
]
TargetOption = Annotated[
    Optional[Target],
    typer.Option("--target", case_sensitive=False, help="Regression target: log1p = ln(RPKM + 1), log2p1, log10p1 "
                 "[default: log1p]; predict writes it and RPKM back.", rich_help_panel="Training"),
]
EpochsOption = Annotated[
    Optional[int],
    typer.Option("--epochs", min=1, help="Most epochs; early stopping usually ends sooner [default: 1000].",
                 rich_help_panel="Training"),
]
PatienceOption = Annotated[
    Optional[int],
    typer.Option("--patience", min=1, help="Stop after this many epochs without a better validation metric "
                 "[default: 50, more where that is under 300 optimizer steps].", rich_help_panel="Training"),
]
BatchSizeOption = Annotated[
    Optional[int],
    typer.Option("--batch-size", min=1, help="Genes per batch [default: the paper's 200, smaller for cells too "
                 "small to give 20 batches an epoch, at least 32].", rich_help_panel="Training"),
]
LrOption = Annotated[
    Optional[float],
    typer.Option("--lr", min=1e-9, max=10.0, help="Adam learning rate.", rich_help_panel="Training"),
]
WeightDecayOption = Annotated[
    Optional[float],
    typer.Option("--weight-decay", min=0.0, help="L2 penalty of Adam.", rich_help_panel="Training"),
]
ClipNormOption = Annotated[
    Optional[float],
    typer.Option("--clip-norm", min=0.0, help="Clip the gradient norm to this (0: off) [default: 1 for rnn and "
                 "attentivechrome, else 0].", rich_help_panel="Training"),
]
LrScheduleOption = Annotated[
    Optional[LrSchedule],
    typer.Option("--lr-schedule", case_sensitive=False, help="plateau: halve the learning rate when the validation "
                 "metric (AUC, or Pearson r) stalls for more than a quarter of the patience [default: constant].",
                 rich_help_panel="Training"),
]
RefitOption = Annotated[
    bool,
    typer.Option("--refit/--no-refit", help="Once the best epoch is chosen on the validation genes, train the "
                 "model again on the training and validation genes together for that many epochs and save that "
                 "(the validation score shown stays the chosen run's). --no-refit saves the chosen run itself.",
                 rich_help_panel="Training"),
]
MirrorOption = Annotated[
    Mirror,
    typer.Option("--mirror", case_sensitive=False, help="Train on genes in both orientations and predict the "
                 "average: for genes whose strand the data do not give (auto: then).", rich_help_panel="Training"),
]
PrecisionOption = Annotated[
    Precision,
    typer.Option("--precision", case_sensitive=False, help="Training arithmetic: bf16 autocast is faster where the "
                 "hardware has it; auto picks it then.", rich_help_panel="Training"),
]


def parse_params(values: list[str]) -> dict[str, str]:
    """train's and tune's --param KEY=VALUE options: sweep's grid (histcli.distributed.parse_grid) of one value
    per key, so that a later value cannot silently win."""
    from histcli.distributed import parse_grid
    from histcli.errors import UsageError

    grid = parse_grid(values)
    for key, settings in grid.items():
        if len(settings) > 1:
            raise UsageError(f"--param '{key}={settings[1]}': {key} is given twice (also {key}={settings[0]}); "
                             "give each hyperparameter once")
    return {key: settings[0] for key, settings in grid.items()}


def chosen_cells(store, cells: list[str] | None, all_cells: bool) -> list[str]:
    """The cells a training command asked for with --cell (repeatable) or --all-cells, each once, checked to be in
    ``store``; a missing one is the store's own error listing the cells it holds."""
    from histcli.errors import UsageError

    if cells and all_cells:
        raise UsageError("--cell and --all-cells cannot be combined: --all-cells trains every cell of the store")
    if not cells and not all_cells:
        raise UsageError("name the cells with --cell (repeatable) or pass --all-cells")
    known = store.cell_names()
    if all_cells and not known:
        store.require()
        raise UsageError(f"--all-cells: the store {store.path} holds no cells")
    chosen = known if all_cells else list(dict.fromkeys(cells))
    for cell in chosen:
        if cell not in known:
            store.load(cell)  # raises the store's message listing the known cells
    return chosen


def budget_choices(*, task, target, epochs, patience, batch_size, lr, weight_decay, clip_norm, lr_schedule,
                   refit) -> dict:
    """The training options above as histcli.training.settings_for takes them (None keeps a default)."""
    from histcli.tasks import make_task

    return {"task": make_task(task.value, target.value if target else None),
            "max_epochs": epochs, "patience": patience, "batch_size": batch_size, "lr": lr,
            "weight_decay": weight_decay, "clip_norm": clip_norm,
            "lr_schedule": lr_schedule.value if lr_schedule else None, "refit": refit}


# Where trials run (sweep, tune).
AddressOption = Annotated[
    Optional[str],
    typer.Option("--address", envvar="RAY_ADDRESS", help="Join this Ray cluster (e.g. head-node:6379) instead of "
                 "running Ray on this machine for the command's duration.", rich_help_panel="Ray"),
]
CpusPerTrialOption = Annotated[
    int,
    typer.Option("--cpus-per-trial", min=1, help="CPUs Ray reserves per trial, and torch threads per trial.",
                 rich_help_panel="Ray"),
]


def reject_nan(value: float) -> float:
    """A float option's callback: click's range check lets nan through (it compares false with every bound)."""
    if value != value:
        raise typer.BadParameter("nan is not a number")
    return value


GpusPerTrialOption = Annotated[
    float,
    typer.Option("--gpus-per-trial", min=0.0, callback=reject_nan, help="GPUs per trial, e.g. 0.25 packs four trials on a GPU; "
                 "above 0 trials train on CUDA.", rich_help_panel="Ray"),
]
RetriesOption = Annotated[
    int,
    typer.Option("--retries", min=0, help="Times a trial whose worker died is run again.", rich_help_panel="Ray"),
]


def check_threshold(threshold: float | None, entries) -> None:
    """--threshold given for regression models only, whose levels it would not touch: a usage error. So is
    nan, which the option's range lets through and which no probability reaches."""
    from histcli.errors import UsageError

    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise UsageError(f"--threshold {threshold}: expected a probability from 0 to 1")
    if threshold is not None and all(entry.task.name == "regression" for entry in entries):
        names = list(dict.fromkeys(entry.name for entry in entries))
        raise UsageError(f"--threshold applies to classifiers' probabilities; {', '.join(names)} "
                         f"{'is a regression model' if len(names) == 1 else 'are regression models'}")
