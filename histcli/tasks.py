"""What a model learns from a cell: high/low labels (classification) or expression levels (regression).

A task owns everything that differs between the two: the training targets and
loss, the validation metric that selects the best epoch, how an ensemble
combines its members, how a model's raw outputs become predictions, the
metrics of ``evaluate`` and the columns of ``predict``. Training, evaluation,
comparison and prediction ask the entry's task and never branch on its name.

A regression entry records its target transform (``log1p`` is log(RPKM + 1))
and the mean and standard deviation of its training targets: models learn the
standardised targets, and :meth:`Regression.scores` maps their outputs back to
the target scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from histcli.errors import ChoiceError, ConflictError, HistcliError, NoExpressionError, UnlabelledCellError

TASK_NAMES = ("classification", "regression")

# name: (formula for people, forward, inverse); all map RPKM >= 0 to >= 0 and back.
TARGETS = {
    "log1p": ("ln(RPKM + 1)", np.log1p, np.expm1),
    "log2p1": ("log2(RPKM + 1)", lambda x: np.log2(x + 1.0), lambda y: np.exp2(y) - 1.0),
    "log10p1": ("log10(RPKM + 1)", lambda x: np.log10(x + 1.0), lambda y: np.power(10.0, y) - 1.0),
}
DEFAULT_TARGET = "log1p"


@dataclass(frozen=True)
class Classification:
    """Expression above the cell's median (label 1) or not: the DeepChrome task."""

    name: str = field(default="classification", init=False)

    selection_metric = "auc"
    selection_label = "AUC"
    selection_header = "AUC"  # a narrow column's header in tables for people
    loss_name = "binary cross-entropy"
    # An ensemble predicts the mean of its members' probabilities (histcli.models._ensemble).
    ensemble_combine = "probability"
    uses_expression = False
    prediction_columns = ("probability", "prediction")
    metric_columns = ("auc", "auprc", "accuracy")
    # The metrics a person sees in evaluate's table (machine formats carry every metric column).
    metric_headers = {"positives": "positives", "auc": "AUC", "auprc": "AUPRC", "accuracy": "accuracy"}
    # evaluate's summary over cells: which statistics (histcli.evaluation.summarise) of which metric.
    summary_statistics = (("auc", ("mean", "median", "min", "max")), ("auprc", ("mean",)))

    def config(self) -> dict:
        return {"name": self.name}

    def targets(self, cell, split: str) -> np.ndarray:
        """The split's labels, checked to hold both classes (float32 for the loss)."""
        if cell.labels is None:
            raise UnlabelledCellError(cell.name)
        labels = cell.labels[cell.split_mask(split)]
        if labels.min() == labels.max():
            raise HistcliError(f"cell {cell.name}: every {split} gene has label {int(labels[0])}; AUC is undefined")
        return labels.astype(np.float32)

    def fitted(self, train_targets: np.ndarray) -> Classification:
        return self

    def training_targets(self, targets: np.ndarray) -> np.ndarray:
        return targets

    def loss(self):
        import torch

        return torch.nn.BCEWithLogitsLoss()

    def ensemble_outputs(self, outputs: np.ndarray) -> np.ndarray:
        """Members' logits (members x genes) combined as the ensemble module does: mean probability."""
        return np.mean(_sigmoid(outputs), axis=0)

    def selection_score(self, targets: np.ndarray, outputs: np.ndarray) -> float:
        """Validation AUC of raw outputs (logits) against 0/1 targets."""
        from histcli.metrics import roc_auc

        return roc_auc(targets.astype(np.int8), outputs)

    def scores(self, outputs: np.ndarray) -> np.ndarray:
        """Probabilities from logits."""
        return _sigmoid(outputs).astype(np.float32)

    def measured(self, expression: np.ndarray | None, cell_name: str) -> np.ndarray | None:
        """What the predictions are scored against besides the labels: nothing for classification."""
        return None

    def prediction_values(self, scores: np.ndarray, threshold: float) -> dict[str, list]:
        return {"probability": scores.tolist(), "prediction": (scores >= threshold).astype(int).tolist()}

    def metrics(self, labels: np.ndarray | None, measured: np.ndarray | None, scores: np.ndarray,
                threshold: float) -> dict:
        from histcli.metrics import accuracy

        row = _label_metrics(labels, scores)
        if labels is not None and len(labels):
            row["accuracy"] = accuracy(labels, scores, threshold)
        return row


@dataclass(frozen=True)
class Regression:
    """The expression level itself, as ``target`` (e.g. log(RPKM + 1)); loss MSE, selection by Pearson r."""

    target: str = DEFAULT_TARGET
    # Of the training targets: models learn (target - mean) / scale.
    mean: float = 0.0
    scale: float = 1.0
    name: str = field(default="regression", init=False)

    selection_metric = "pearson"
    selection_label = "Pearson r"
    selection_header = "r"
    loss_name = "mean squared error"
    ensemble_combine = "mean"
    # Its entries record a digest of the expression they learnt from (see histcli.evaluation).
    uses_expression = True
    prediction_columns = ("log_expression", "expression")
    metric_columns = ("pearson", "spearman", "r2", "rmse", "auc", "auprc")
    metric_headers = {"pearson": "r", "spearman": "rho", "r2": "R²", "rmse": "RMSE", "auc": "AUC"}
    summary_statistics = (("pearson", ("mean", "median", "min", "max")), ("auc", ("mean",)))

    def __post_init__(self):
        if self.target not in TARGETS:
            raise ChoiceError("target", self.target, TARGETS)

    @property
    def target_formula(self) -> str:
        """The target as people read it, e.g. ln(RPKM + 1)."""
        return TARGETS[self.target][0]

    def config(self) -> dict:
        return {"name": self.name, "target": self.target, "target_formula": self.target_formula,
                "target_mean": self.mean, "target_scale": self.scale}

    def transform(self, expression: np.ndarray) -> np.ndarray:
        return TARGETS[self.target][1](np.asarray(expression, dtype=np.float64))

    def measured(self, expression: np.ndarray | None, cell_name: str) -> np.ndarray:
        """A cell's expression values on the target scale; a cell without them cannot be scored."""
        if expression is None:
            raise NoExpressionError(cell_name)
        return self.transform(expression)

    def targets(self, cell, split: str) -> np.ndarray:
        values = self.measured(cell.expression, cell.name)[cell.split_mask(split)]
        if len(values) > 1 and values.min() == values.max():
            raise HistcliError(f"cell {cell.name}: every {split} gene has the same expression; "
                               "Pearson r is undefined")
        return values.astype(np.float32)

    def fitted(self, train_targets: np.ndarray) -> Regression:
        values = train_targets.astype(np.float64)
        return replace(self, mean=float(values.mean()), scale=float(values.std()) or 1.0)

    def training_targets(self, targets: np.ndarray) -> np.ndarray:
        return ((targets.astype(np.float64) - self.mean) / self.scale).astype(np.float32)

    def loss(self):
        import torch

        return torch.nn.MSELoss()

    def ensemble_outputs(self, outputs: np.ndarray) -> np.ndarray:
        """Members' outputs (members x genes) combined as the ensemble module does: their mean."""
        return np.mean(outputs.astype(np.float64), axis=0)

    def selection_score(self, targets: np.ndarray, outputs: np.ndarray) -> float:
        from histcli.metrics import pearson

        return pearson(targets, outputs)

    def scores(self, outputs: np.ndarray) -> np.ndarray:
        """Predicted levels on the target scale."""
        return (outputs.astype(np.float64) * self.scale + self.mean).astype(np.float32)

    def prediction_values(self, scores: np.ndarray, threshold: float) -> dict[str, list]:
        levels = scores.astype(np.float64)
        # A level below 0 would be a negative RPKM: the model extrapolates below "not expressed".
        expression = np.maximum(TARGETS[self.target][2](levels), 0.0)
        return {"log_expression": levels.tolist(), "expression": expression.tolist()}

    def metrics(self, labels: np.ndarray | None, measured: np.ndarray | None, scores: np.ndarray,
                threshold: float) -> dict:
        from histcli.metrics import pearson, r_squared, rmse, spearman

        row = {key: None for key in ("pearson", "spearman", "r2", "rmse")}
        if measured is not None and len(measured) > 1:
            row.update(pearson=_finite(pearson(measured, scores)), spearman=_finite(spearman(measured, scores)),
                       r2=_finite(r_squared(measured, scores)), rmse=float(rmse(measured, scores)))
        row.update(_label_metrics(labels, scores))
        return row


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    """The logistic function in float64, without overflow for logits far from 0."""
    logits = logits.astype(np.float64)
    small = np.exp(-np.abs(logits))  # in (0, 1]: never overflows
    return np.where(logits >= 0, 1.0 / (1.0 + small), small / (1.0 + small))


def _finite(value: float) -> float | None:
    return None if not math.isfinite(value) else float(value)


def _label_metrics(labels: np.ndarray | None, scores: np.ndarray) -> dict:
    """AUC and AUPRC of any score against high/low labels, so both tasks rank in one table."""
    from histcli.metrics import average_precision, roc_auc

    row = {"auc": None, "auprc": None}
    if labels is not None and 0 < int(labels.sum()) < len(labels):
        row.update(auc=roc_auc(labels, scores), auprc=average_precision(labels, scores))
    return row


Task = Classification | Regression


def make_task(name: str, target: str | None = None) -> Task:
    """The task a user asks for (``--task``, ``--target``)."""
    if name == "classification":
        if target is not None:
            raise ConflictError(("task", "target"), "a target applies to regression only")
        return Classification()
    if name == "regression":
        return Regression(target or DEFAULT_TARGET)
    raise ChoiceError("task", name, TASK_NAMES)


def every_task() -> list[Task]:
    """One task of each kind, in TASK_NAMES' order: what machine formats carry the columns of, so that a
    table's columns do not depend on the models in it."""
    return [make_task(name) for name in TASK_NAMES]


def task_from_config(config: dict) -> Task:
    """The task of a registry entry; entries from before tasks existed are classifiers."""
    task = config.get("task") or {"name": "classification"}
    if task["name"] == "regression":
        return Regression(task["target"], float(task["target_mean"]), float(task["target_scale"]))
    return Classification()
