"""Classification metrics for predicted expression (high/low) against 0/1 labels.

Pure numpy and vectorised: every function sorts once (O(n log n)) and never
loops over samples in Python, so scoring ~7000 genes in each of dozens of
cells is cheap. Labels are any integer, boolean or float array holding only
0 and 1; scores are finite floats where larger means "more likely 1".
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


def accuracy(labels, scores, threshold: float = 0.5) -> float:
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
