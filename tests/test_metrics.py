"""Tests of histcli.metrics against independent computations."""

import math

import numpy as np
import pytest
from scipy import stats

from histcli.metrics import accuracy, average_precision, midranks, roc_auc, roc_curve


def _random_problem(seed, n=300, rounding=None):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    scores = labels * 0.8 + rng.normal(size=n)
    if rounding is not None:
        scores = np.round(scores, rounding)  # coarse scores: many ties within and across classes
    return labels, scores


def _slow_average_precision(labels, scores):
    """Step-wise AP by an explicit loop over distinct thresholds, highest first."""
    labels = np.asarray(labels)
    n_pos = labels.sum()
    total, previous_recall = 0.0, 0.0
    for threshold in sorted(set(scores.tolist()), reverse=True):
        predicted = scores >= threshold
        true_positives = np.sum(predicted & (labels == 1))
        precision = true_positives / predicted.sum()
        recall = true_positives / n_pos
        total += (recall - previous_recall) * precision
        previous_recall = recall
    return total


@pytest.mark.parametrize("rounding", [None, 1, 0])
@pytest.mark.parametrize("seed", [0, 1])
def test_roc_auc_equals_mann_whitney_u_over_pair_count(seed, rounding):
    labels, scores = _random_problem(seed, rounding=rounding)
    positives, negatives = scores[labels == 1], scores[labels == 0]
    u_statistic = stats.mannwhitneyu(positives, negatives).statistic
    expected = u_statistic / (positives.size * negatives.size)
    assert roc_auc(labels, scores) == pytest.approx(expected, rel=1e-12)


def test_roc_auc_hand_worked():
    # Positives 0.35, 0.8; negatives 0.1, 0.4. Pairs won by the positive:
    # (0.35 > 0.1), (0.8 > 0.1), (0.8 > 0.4); lost: (0.35 < 0.4). AUC = 3/4.
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    # Positives 0.2, 0.3; negatives 0.2, 0.1. 0.2 vs 0.2 is a tie (1/2),
    # 0.2 > 0.1, 0.3 > 0.2, 0.3 > 0.1: (0.5 + 1 + 1 + 1) / 4 = 0.875.
    assert roc_auc([0, 1, 0, 1], [0.2, 0.2, 0.1, 0.3]) == 0.875
    # Boolean labels work; all scores tied gives chance level.
    assert roc_auc(np.array([True, False, True]), [1.0, 1.0, 1.0]) == 0.5


def test_average_precision_hand_worked():
    # Scores high to low: 0.8 (pos), 0.4 (neg), 0.35 (pos), 0.1 (neg); 2 positives.
    #   t=0.8:  TP=1 FP=0  P=1    R=0.5  -> 0.5 * 1
    #   t=0.4:  TP=1 FP=1  P=1/2  R=0.5  -> 0
    #   t=0.35: TP=2 FP=1  P=2/3  R=1    -> 0.5 * 2/3
    #   t=0.1:  R stays 1               -> 0
    # AP = 0.5 + 1/3 = 5/6
    assert average_precision([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(5 / 6)
    # Tie at the top: 0.9 holds one positive and one negative and enters as one step.
    #   t=0.9: TP=1 FP=1 P=1/2 R=1/2 -> 0.25
    #   t=0.5: TP=2 FP=1 P=2/3 R=1   -> 1/3
    # AP = 0.25 + 1/3 = 7/12
    assert average_precision([1, 0, 1, 0], [0.9, 0.9, 0.5, 0.1]) == pytest.approx(7 / 12)


@pytest.mark.parametrize("rounding", [None, 1, 0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_average_precision_matches_slow_threshold_loop(seed, rounding):
    labels, scores = _random_problem(seed, n=200, rounding=rounding)
    expected = _slow_average_precision(labels, scores)
    assert average_precision(labels, scores) == pytest.approx(expected, rel=1e-12)


def test_accuracy_predicts_one_at_the_threshold():
    # Predictions with score >= 0.5: [1, 0, 1, 0]; labels [1, 0, 0, 0]: 3 of 4 right.
    assert accuracy([1, 0, 0, 0], [0.5, 0.49, 0.7, 0.2]) == 0.75
    assert accuracy([1, 0, 0, 0], [0.5, 0.49, 0.7, 0.2], threshold=0.6) == 0.5


@pytest.mark.parametrize("rounding", [None, 1])
def test_roc_curve_matches_explicit_thresholds(rounding):
    labels, scores = _random_problem(3, n=150, rounding=rounding)
    fpr, tpr, thresholds = roc_curve(labels, scores)
    expected_thresholds = np.concatenate([[np.inf], np.unique(scores)[::-1]])
    np.testing.assert_array_equal(thresholds, expected_thresholds)
    for rate_fp, rate_tp, threshold in zip(fpr, tpr, thresholds, strict=True):
        predicted = scores >= threshold
        assert rate_fp == pytest.approx(predicted[labels == 0].mean())
        assert rate_tp == pytest.approx(predicted[labels == 1].mean())
    # The trapezoid area under the curve counts tied pairs as 1/2, like the AUC.
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc(labels, scores), rel=1e-12)


def test_midranks_match_scipy_rankdata_row_by_row():
    rng = np.random.default_rng(5)
    values = rng.integers(0, 6, size=(4, 40)).astype(float)
    np.testing.assert_array_equal(midranks(values), stats.rankdata(values, axis=1))
    np.testing.assert_array_equal(midranks(values[0]), stats.rankdata(values[0]))


def test_one_class_gives_nan():
    assert math.isnan(roc_auc([1, 1, 1], [0.1, 0.2, 0.3]))
    assert math.isnan(roc_auc([0, 0], [0.1, 0.2]))
    assert math.isnan(average_precision([0, 0, 0], [0.1, 0.2, 0.3]))
    assert average_precision([1, 1], [0.1, 0.2]) == 1.0
    fpr, tpr, _ = roc_curve([1, 1], [0.1, 0.2])
    assert np.isnan(fpr).all()
    np.testing.assert_array_equal(tpr, [0.0, 0.5, 1.0])


@pytest.mark.parametrize(
    "labels, scores, message",
    [
        ([0, 2, 1], [0.1, 0.2, 0.3], "0 and 1"),
        ([0, 1, 1], [0.1, np.nan, 0.3], "finite"),
        ([0, 1], [0.1, 0.2, 0.3], "length"),
    ],
)
def test_invalid_input_is_rejected(labels, scores, message):
    with pytest.raises(ValueError, match=message):
        roc_auc(labels, scores)
