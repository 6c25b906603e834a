"""Metrics for predicted expression: classification (high/low against 0/1 labels)
and regression (predicted against measured values, e.g. log expression).

Pure numpy and vectorised: every function sorts once (O(n log n)) and never
loops over samples in Python, so scoring ~7000 genes in each of dozens of
cells is cheap. Labels are any integer, boolean or float array holding only
0 and 1; scores are finite floats where larger means "more likely 1".

Regression metrics take measured values ``y`` and predictions ``yhat``: 1-D,
equally long, finite, at least one sample (ValueError otherwise), computed in
float64. Where a metric is undefined because a vector is constant (a
correlation of a constant; R² of a constant ``y``) it returns ``math.nan``
rather than raising, so one degenerate cell does not stop a table of many.
"""

from __future__ import annotations

import math

import numpy as np


def binary_labels(labels) -> np.ndarray:
    """Labels as a 1-D bool array (True = positive); ValueError unless all are 0 or 1."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D; got shape {labels.shape}")
    if labels.dtype.kind not in "biuf" or not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must hold only 0 and 1")
    return labels.astype(bool)


def _check_binary_inputs(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """Return (labels as bool, scores as float), both 1-D; ValueError if unusable."""
    positive = binary_labels(labels)
    scores = np.asarray(scores, dtype=float)
    if scores.ndim != 1:
        raise ValueError(f"scores must be 1-D; got shape {scores.shape}")
    if positive.shape != scores.shape:
        raise ValueError(f"labels ({positive.size}) and scores ({scores.size}) differ in length")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite (found NaN or infinity)")
    return positive, scores


def midranks(values) -> np.ndarray:
    """Ranks 1..n along the last axis, tied values sharing the mean of their ranks.

    Equivalent to ``scipy.stats.rankdata(values, method="average", axis=-1)``;
    works on a (k, n) array row by row without a Python loop over rows.
    """
    values = np.asarray(values, dtype=float)
    n = values.shape[-1]
    order = np.argsort(values, axis=-1, kind="stable")
    ordered = np.take_along_axis(values, order, axis=-1)
    positions = np.broadcast_to(np.arange(n), values.shape)

    starts_group = np.ones(values.shape, dtype=bool)
    starts_group[..., 1:] = ordered[..., 1:] != ordered[..., :-1]
    ends_group = np.ones(values.shape, dtype=bool)
    ends_group[..., :-1] = starts_group[..., 1:]
    # Carry each tie group's first position forward and its last position
    # backward, so every member knows the span it shares.
    group_first = np.maximum.accumulate(np.where(starts_group, positions, 0), axis=-1)
    group_last = np.flip(
        np.minimum.accumulate(np.flip(np.where(ends_group, positions, n - 1), -1), axis=-1), -1
    )
    ordered_ranks = (group_first + group_last) / 2.0 + 1.0

    ranks = np.empty_like(ordered_ranks)
    np.put_along_axis(ranks, order, ordered_ranks, axis=-1)
    return ranks


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve: P(score of a random 1 > score of a random 0).

    Computed from midranks (the Mann-Whitney U statistic divided by
    n_pos * n_neg), so a tie between a positive and a negative counts 1/2.
    Returns ``math.nan`` when labels hold only one class (AUC is undefined).
    """
    positive, scores = _check_binary_inputs(labels, scores)
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    rank_sum = float(midranks(scores)[positive].sum())
    u_statistic = rank_sum - n_pos * (n_pos + 1) / 2.0
    return u_statistic / (n_pos * n_neg)


def _counts_at_thresholds(positive: np.ndarray, scores: np.ndarray):
    """True and false positive counts when predicting 1 for ``score >= t``.

    One entry per distinct score t, from the highest to the lowest score;
    equal scores always move together, as in scikit-learn.
    Returns (true_positives, false_positives, thresholds).
    """
    order = np.argsort(scores, kind="stable")[::-1]
    ordered_scores = scores[order]
    ordered_positive = positive[order]
    # The last index of each run of equal scores closes one threshold.
    closes_threshold = np.ones(scores.size, dtype=bool)
    closes_threshold[:-1] = ordered_scores[1:] != ordered_scores[:-1]
    last_index = np.flatnonzero(closes_threshold)
    true_positives = np.cumsum(ordered_positive)[last_index]
    false_positives = last_index + 1 - true_positives
    return true_positives, false_positives, ordered_scores[last_index]


def average_precision(labels, scores) -> float:
    """Average precision, defined exactly as scikit-learn's ``average_precision_score``.

    AP = sum over distinct score thresholds (highest first) of
    (R_n - R_{n-1}) * P_n, with R_0 = 0; samples with equal scores enter
    together at one threshold. No interpolation. Returns ``math.nan`` when
    there are no positives (recall is undefined).
    """
    positive, scores = _check_binary_inputs(labels, scores)
    n_pos = int(positive.sum())
    if n_pos == 0:
        return math.nan
    true_positives, false_positives, _ = _counts_at_thresholds(positive, scores)
    precision = true_positives / (true_positives + false_positives)
    recall_gain = np.diff(true_positives, prepend=0) / n_pos
    return float(np.sum(recall_gain * precision))


# Probability cut-off of a classifier's yes/no prediction (predict) and accuracy (evaluate).
DEFAULT_THRESHOLD = 0.5


def accuracy(labels, scores, threshold: float = DEFAULT_THRESHOLD) -> float:
    """Share of samples whose prediction ``score >= threshold`` equals the label.

    A score exactly at the threshold predicts 1. Returns ``math.nan`` for
    empty input.
    """
    positive, scores = _check_binary_inputs(labels, scores)
    if positive.size == 0:
        return math.nan
    return float(np.mean((scores >= threshold) == positive))


def precision_recall_curve(labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision-recall points: (precision, recall, thresholds), one point per distinct score,
    highest first (the points ``average_precision`` sums over), after a first point (recall 0,
    precision 1, threshold +inf). Recall is all NaN without positives."""
    positive, scores = _check_binary_inputs(labels, scores)
    true_positives, false_positives, thresholds = _counts_at_thresholds(positive, scores)
    n_pos = int(positive.sum())
    precision = true_positives / (true_positives + false_positives)
    recall = true_positives / n_pos if n_pos else np.full(true_positives.shape, np.nan)
    return (np.concatenate([[1.0], precision]), np.concatenate([[0.0], recall]),
            np.concatenate([[np.inf], thresholds]))


def roc_curve(labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve points, like scikit-learn's ``roc_curve(drop_intermediate=False)``.

    Returns (fpr, tpr, thresholds): one point per distinct score, highest
    first, where point i predicts 1 for ``score >= thresholds[i]``; a first
    point (0, 0) with threshold +inf is prepended. If a class is absent, the
    rate that divides by it (fpr without negatives, tpr without positives) is
    all NaN, as in scikit-learn.
    """
    positive, scores = _check_binary_inputs(labels, scores)
    true_positives, false_positives, thresholds = _counts_at_thresholds(positive, scores)
    true_positives = np.concatenate([[0], true_positives]).astype(float)
    false_positives = np.concatenate([[0], false_positives]).astype(float)
    thresholds = np.concatenate([[np.inf], thresholds])
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    fpr = false_positives / n_neg if n_neg else np.full(false_positives.shape, np.nan)
    tpr = true_positives / n_pos if n_pos else np.full(true_positives.shape, np.nan)
    return fpr, tpr, thresholds


# --------------------------------------------------------------------------
# Regression
# --------------------------------------------------------------------------


def check_regression_inputs(y, yhat) -> tuple[np.ndarray, np.ndarray]:
    """Return (y, yhat) as 1-D float64; ValueError if unusable."""
    y = np.asarray(y, dtype=np.float64)
    yhat = np.asarray(yhat, dtype=np.float64)
    if y.ndim != 1 or yhat.ndim != 1:
        raise ValueError(f"y and yhat must be 1-D; got shapes {y.shape} and {yhat.shape}")
    if y.size != yhat.size:
        raise ValueError(f"y ({y.size}) and yhat ({yhat.size}) differ in length")
    if y.size == 0:
        raise ValueError("y and yhat are empty")
    if not (np.isfinite(y).all() and np.isfinite(yhat).all()):
        raise ValueError("y and yhat must be finite (found NaN or infinity)")
    return y, yhat


def _is_constant(values: np.ndarray) -> bool:
    # Compared exactly: the mean of a constant vector may differ from its value
    # by rounding, which would leave tiny non-zero deviations behind.
    return bool((values == values[0]).all())


def _scaled_deviations(values: np.ndarray) -> np.ndarray:
    """Deviations from the mean divided by their largest magnitude, so squares cannot overflow."""
    deviations = values - values.mean()
    return deviations / np.abs(deviations).max()


def _pearson_of_checked(x: np.ndarray, y: np.ndarray) -> float:
    if _is_constant(x) or _is_constant(y):
        return math.nan
    dx, dy = _scaled_deviations(x), _scaled_deviations(y)
    r = float(np.dot(dx, dy) / math.sqrt(float(np.dot(dx, dx)) * float(np.dot(dy, dy))))
    return min(1.0, max(-1.0, r))  # rounding can step just past +/-1


def pearson(y, yhat) -> float:
    """Pearson's correlation of ``y`` and ``yhat``; ``math.nan`` when either is constant
    (including a single sample), as the correlation is then 0/0."""
    y, yhat = check_regression_inputs(y, yhat)
    return _pearson_of_checked(y, yhat)


def spearman(y, yhat) -> float:
    """Spearman's rank correlation: Pearson's correlation of the midranks (ties share the
    mean of their ranks, as ``scipy.stats.spearmanr``); ``math.nan`` when either is constant."""
    y, yhat = check_regression_inputs(y, yhat)
    return _pearson_of_checked(midranks(y), midranks(yhat))


def r_squared(y, yhat) -> float:
    """The coefficient of determination of the predictions as given: 1 - SS_res / SS_tot.

    SS_res = sum((y - yhat)^2), SS_tot = sum((y - mean(y))^2). No refitting, so
    it is not the squared correlation: it is 1 only for exact predictions, 0 for
    predicting mean(y) everywhere and negative for predictions worse than that.
    ``math.nan`` when ``y`` is constant (SS_tot = 0).
    """
    y, yhat = check_regression_inputs(y, yhat)
    if _is_constant(y):
        return math.nan
    deviations = y - y.mean()
    scale = np.abs(deviations).max()  # both sums divided by scale**2, so neither overflows
    residuals = (y - yhat) / scale
    deviations = deviations / scale
    return 1.0 - float(np.dot(residuals, residuals)) / float(np.dot(deviations, deviations))


def rmse(y, yhat) -> float:
    """Root mean squared error sqrt(mean((y - yhat)^2)), in the units of ``y``."""
    y, yhat = check_regression_inputs(y, yhat)
    errors = y - yhat
    scale = float(np.abs(errors).max())
    if scale == 0.0:
        return 0.0
    errors = errors / scale
    return scale * math.sqrt(float(np.dot(errors, errors)) / errors.size)
