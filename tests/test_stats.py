"""Tests of histcli.stats against independent computations and published values."""

import dataclasses
import json
import math

import numpy as np
import pytest
from scipy import stats

from histcli.stats import (
    benjamini_hochberg,
    bootstrap_median_ci,
    delong_covariance,
    delong_test,
    holm,
    paired_summary,
    paired_ttest,
    rank_biserial,
    wilcoxon_signed_rank,
    wins_ties_losses,
)

# --------------------------------------------------------------------------
# DeLong
# --------------------------------------------------------------------------


def _slow_delong(labels, scores):
    """DeLong et al. (1988) by explicit pairwise comparisons, O(n_pos * n_neg).

    psi(x, y) = 1 if x > y, 1/2 if x == y, 0 otherwise; V10 averages psi over
    negatives for each positive, V01 over positives for each negative.
    """
    labels = np.asarray(labels)
    k = scores.shape[0]
    n_pos, n_neg = int((labels == 1).sum()), int((labels == 0).sum())
    v10 = np.zeros((k, n_pos))
    v01 = np.zeros((k, n_neg))
    for model in range(k):
        positives = scores[model, labels == 1]
        negatives = scores[model, labels == 0]
        for i, x in enumerate(positives):
            for j, y in enumerate(negatives):
                psi = 1.0 if x > y else 0.5 if x == y else 0.0
                v10[model, i] += psi / n_neg
                v01[model, j] += psi / n_pos
    aucs = v10.mean(axis=1)
    s10 = np.atleast_2d(np.cov(v10, ddof=1))
    s01 = np.atleast_2d(np.cov(v01, ddof=1))
    return aucs, s10 / n_pos + s01 / n_neg


def _correlated_scores(rng, labels, rounding=None):
    n = labels.size
    shared = rng.normal(size=n)
    scores = np.stack(
        [
            labels * 1.0 + shared + rng.normal(size=n),
            labels * 0.6 + shared + rng.normal(size=n),
            labels * 0.3 + rng.normal(size=n),
        ]
    )
    return np.round(scores, rounding) if rounding is not None else scores


@pytest.mark.parametrize("rounding", [None, 1, 0])
@pytest.mark.parametrize("seed", [0, 1])
def test_fast_delong_matches_slow_pairwise_reference(seed, rounding):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 90)
    scores = _correlated_scores(rng, labels, rounding)
    aucs, covariance = delong_covariance(labels, scores)
    expected_aucs, expected_covariance = _slow_delong(labels, scores)
    np.testing.assert_allclose(aucs, expected_aucs, rtol=1e-12)
    np.testing.assert_allclose(covariance, expected_covariance, rtol=1e-9, atol=1e-15)


def test_fast_delong_with_two_positives_matches_slow_reference():
    labels = np.array([1, 0, 0, 1, 0, 0, 0])
    scores = np.array([[0.9, 0.1, 0.5, 0.3, 0.3, 0.2, 0.8]])
    aucs, covariance = delong_covariance(labels, scores)
    expected_aucs, expected_covariance = _slow_delong(labels, scores)
    np.testing.assert_allclose(aucs, expected_aucs)
    np.testing.assert_allclose(covariance, expected_covariance)


def test_delong_test_equals_contrast_of_covariance_matrix():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, 120)
    scores = _correlated_scores(rng, labels, rounding=1)
    aucs, covariance = delong_covariance(labels, scores[:2])
    result = delong_test(labels, scores[0], scores[1], level=0.9)
    variance = covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1]
    assert result.delta == pytest.approx(aucs[0] - aucs[1], rel=1e-12)
    assert result.se == pytest.approx(math.sqrt(variance), rel=1e-9)
    assert result.p == pytest.approx(2 * stats.norm.sf(abs(result.z)), rel=1e-9)
    half_width = stats.norm.ppf(0.95) * result.se
    assert result.ci_low == pytest.approx(result.delta - half_width, rel=1e-9)
    assert result.ci_high == pytest.approx(result.delta + half_width, rel=1e-9)


# pROC's aSAH data set (Turck et al. 2010, Intensive Care Med 36:107-115): 113
# patients, outcome Poor (1, 41 patients) or Good (0); wfns is a 1-5 grade, so
# it is full of ties. Reference numbers are the expectations in pROC's own test
# suite (github.com/xrobin/pROC, tests/testthat/test-var.R and
# test-roc.test.R), where r.x <- roc(aSAH$outcome, aSAH$x) and
# t1 <- roc.test(r.wfns, r.s100b), t2 <- roc.test(r.wfns, r.ndka),
# t3 <- roc.test(r.ndka, r.s100b) (paired DeLong, two-sided, 95% CI).
# pROC's documented AUCs are 0.8237 (wfns), 0.6120 (ndka) and 0.7314 (s100b).
ASAH_POOR = [
    0, 0, 0, 0, 1, 1, 0, 1, 0, 0, 1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    1, 0, 0, 1, 1, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 1, 0, 0, 1,
    1, 1, 0, 1, 1, 0, 1, 1, 1, 1, 0, 0, 0, 1, 1, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 0, 0, 0
]  # fmt: skip
ASAH_WFNS = [
    1, 1, 1, 1, 3, 2, 5, 4, 1, 2, 5, 2, 5, 5, 1, 2, 5, 2, 2, 5, 2, 1, 1, 1, 1, 2, 1, 2, 1, 1, 3, 4,
    2, 1, 4, 5, 4, 1, 4, 2, 5, 5, 1, 1, 2, 4, 1, 1, 2, 5, 5, 2, 1, 2, 5, 1, 2, 2, 2, 1, 5, 1, 1, 2,
    5, 2, 1, 4, 5, 2, 4, 4, 1, 4, 1, 2, 1, 4, 2, 1, 2, 3, 2, 4, 2, 1, 4, 5, 1, 1, 5, 4, 2, 2, 1, 1,
    1, 3, 1, 2, 5, 2, 2, 5, 5, 5, 2, 4, 4, 5, 1, 1, 1
]  # fmt: skip
ASAH_S100B = [
    0.13, 0.14, 0.1, 0.04, 0.13, 0.1, 0.47, 0.16, 0.18, 0.1, 0.12, 0.1, 0.44, 0.71, 0.04, 0.08,
    0.49, 0.04, 0.07, 0.33, 0.09, 0.09, 0.07, 0.11, 0.07, 0.17, 0.07, 0.11, 0.13, 0.19, 0.05, 0.16,
    0.41, 0.14, 0.34, 0.35, 0.48, 0.09, 0.96, 0.25, 0.5, 0.46, 0.16, 0.07, 0.43, 0.45, 0.11, 0.08,
    0.09, 0.86, 0.52, 0.08, 0.06, 0.13, 2.07, 0.1, 0.14, 0.15, 0.07, 0.06, 0.77, 0.05, 0.09, 0.3,
    0.03, 0.09, 0.04, 0.23, 0.7, 0.09, 0.27, 0.71, 0.08, 0.26, 0.08, 0.16, 0.09, 0.13, 0.1, 0.08,
    0.11, 0.33, 0.11, 0.28, 0.07, 0.1, 0.32, 0.22, 0.07, 0.05, 0.24, 0.38, 0.1, 0.15, 0.08, 0.14,
    0.1, 0.07, 0.04, 0.19, 0.56, 0.14, 0.58, 0.32, 0.82, 0.74, 0.15, 0.47, 0.17, 0.44, 0.15, 0.5,
    0.48,
]  # fmt: skip
ASAH_NDKA = [
    3.01, 8.54, 8.09, 10.42, 17.4, 12.75, 6.0, 13.2, 15.54, 6.01, 15.96, 17.86, 5.18, 8.9, 13.41,
    20.75, 11.6, 16.11, 32.37, 54.82, 32.41, 49.94, 40.34, 9.47, 6.29, 12.53, 6.54, 6.3, 80.3,
    12.8, 9.8, 9.81, 9.85, 18.21, 5.03, 14.04, 21.93, 8.02, 7.42, 8.38, 6.59, 9.63, 13.12, 7.96,
    14.34, 41.43, 7.63, 7.06, 12.59, 13.56, 3.87, 9.44, 7.66, 12.98, 419.19, 27.19, 22.27, 9.95,
    21.22, 11.73, 10.4, 58.83, 6.39, 11.09, 12.22, 13.67, 17.21, 22.63, 12.9, 9.7, 21.57, 8.23,
    72.57, 15.54, 10.51, 10.6, 14.57, 5.19, 9.63, 4.61, 21.48, 17.3, 12.71, 9.44, 11.07, 19.46,
    10.83, 5.37, 11.97, 7.75, 9.83, 10.55, 28.49, 8.53, 12.57, 12.9, 46.83, 11.68, 12.67, 9.01,
    9.57, 34.06, 11.72, 14.26, 47.61, 11.67, 24.58, 10.33, 13.87, 15.89, 22.43, 6.79, 13.45,
]  # fmt: skip


def test_delong_variances_match_proc_on_asah():
    assert (len(ASAH_POOR), sum(ASAH_POOR)) == (113, 41)
    scores = np.array([ASAH_WFNS, ASAH_NDKA, ASAH_S100B], dtype=float)
    aucs, covariance = delong_covariance(ASAH_POOR, scores)
    np.testing.assert_allclose(aucs, [0.8237, 0.6120, 0.7314], atol=5e-5)
    # var(r.wfns), var(r.ndka), var(r.s100b) from test-var.R
    np.testing.assert_allclose(
        np.diag(covariance),
        [0.00146991470882363, 0.0031908105493913, 0.00266868245717244],
        rtol=1e-10,
    )


@pytest.mark.parametrize(
    "scores_a, scores_b, z, p, ci_low, ci_high",
    [
        (ASAH_WFNS, ASAH_S100B, 2.20898359144091, 0.0271757822291882,
         0.0104061769564846, 0.174214419249478),
        (ASAH_WFNS, ASAH_NDKA, 2.79777591868904, 0.00514557970691098,
         0.0634011709339876, 0.3600405634833566),
        (ASAH_NDKA, ASAH_S100B, -1.39077002573558, 0.164295175223054,
         -0.2876917446341914, 0.0488706064228094),
    ],
)  # fmt: skip
def test_delong_test_matches_proc_roc_test_on_asah(scores_a, scores_b, z, p, ci_low, ci_high):
    result = delong_test(ASAH_POOR, scores_a, scores_b)
    assert result.z == pytest.approx(z, rel=1e-10)
    assert result.p == pytest.approx(p, rel=1e-9)
    assert result.ci_low == pytest.approx(ci_low, rel=1e-9)
    assert result.ci_high == pytest.approx(ci_high, rel=1e-9)
    assert result.note is None
    # Swapping the models flips the sign of z and keeps p.
    swapped = delong_test(ASAH_POOR, scores_b, scores_a)
    assert swapped.z == pytest.approx(-z, rel=1e-10)
    assert swapped.p == pytest.approx(p, rel=1e-9)


def test_delong_p_values_are_uniform_under_the_null():
    # Two models with the same signal and independent noise: equal true AUCs.
    rng = np.random.default_rng(20240611)
    n_datasets, n_samples = 400, 200
    p_values = np.empty(n_datasets)
    for i in range(n_datasets):
        labels = rng.integers(0, 2, n_samples)
        scores_a = labels + rng.normal(size=n_samples)
        scores_b = labels + rng.normal(size=n_samples)
        p_values[i] = delong_test(labels, scores_a, scores_b).p
    assert stats.kstest(p_values, "uniform").pvalue > 0.01
    rejections = int(np.sum(p_values < 0.05))
    low, high = stats.binom.interval(0.999, n_datasets, 0.05)
    assert low <= rejections <= high


def test_delong_identical_and_rank_equivalent_scores_give_p_one():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 60)
    scores = labels + rng.normal(size=60)
    for other in (scores, np.exp(scores)):  # exp keeps the ranking
        result = delong_test(labels, scores, other)
        assert (result.delta, result.se, result.z, result.p) == (0.0, 0.0, 0.0, 1.0)
        assert (result.ci_low, result.ci_high) == (0.0, 0.0)
        assert result.note is not None


def test_delong_zero_variance_with_a_difference_is_documented_limit():
    # A perfect model against a constant one: every positive's placement is 1
    # versus 1/2, every negative's likewise, so Var(delta) = 0 while delta = 0.5.
    labels = [0, 0, 0, 1, 1, 1]
    perfect = [0.1, 0.2, 0.3, 0.7, 0.8, 0.9]
    constant = [0.5] * 6
    result = delong_test(labels, perfect, constant)
    assert (result.auc_a, result.auc_b, result.delta, result.se) == (1.0, 0.5, 0.5, 0.0)
    assert result.z == math.inf and result.p == 0.0
    assert (result.ci_low, result.ci_high) == (0.5, 0.5)
    assert "not an exact probability" in result.note
    assert delong_test(labels, constant, perfect).z == -math.inf


@pytest.mark.parametrize(
    "labels, message",
    [([1, 1, 1, 1], "only one class"), ([0, 0, 0, 0], "only one class"),
     ([1, 0, 0, 0], "at least 2 positives"), ([1, 1, 1, 0], "at least 2 positives")],
)  # fmt: skip
def test_delong_rejects_labels_without_two_of_each_class(labels, message):
    with pytest.raises(ValueError, match=message):
        delong_test(labels, [0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1])


# --------------------------------------------------------------------------
# Multiple testing
# --------------------------------------------------------------------------


def test_benjamini_hochberg_hand_worked():
    # Sorted p: 0.01, 0.02, 0.025, 0.5 with m = 4 (NaNs do not count).
    # m p_(i) / i: 0.04, 0.04, 0.0333.., 0.5; running minimum from the top:
    # 0.0333.., 0.0333.., 0.0333.., 0.5.
    p = [np.nan, 0.02, 0.01, 0.5, np.nan, 0.025]
    q = benjamini_hochberg(p)
    np.testing.assert_allclose(q, [np.nan, 0.1 / 3, 0.1 / 3, 0.5, np.nan, 0.1 / 3])
    assert np.isnan(benjamini_hochberg([np.nan, np.nan])).all()


def test_benjamini_hochberg_matches_scipy():
    rng = np.random.default_rng(11)
    p = np.concatenate([rng.uniform(size=80), rng.uniform(0, 0.01, size=20)])
    np.testing.assert_allclose(benjamini_hochberg(p), stats.false_discovery_control(p))
    with_missing = p.copy()
    with_missing[::7] = np.nan
    present = ~np.isnan(with_missing)
    q = benjamini_hochberg(with_missing)
    assert np.isnan(q[~present]).all()
    np.testing.assert_allclose(q[present], stats.false_discovery_control(with_missing[present]))


def test_holm_hand_worked():
    # Sorted p: 0.01, 0.04, 0.03 -> 0.01, 0.03, 0.04 with m = 3.
    # (m - i + 1) p_(i): 0.03, 0.06, 0.04; running maximum: 0.03, 0.06, 0.06.
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    # Capped at 1: 2 * 0.6 = 1.2 -> 1, and 0.7 is raised to 1 by monotonicity.
    np.testing.assert_allclose(holm([0.7, np.nan, 0.6]), [1.0, np.nan, 1.0])


def test_holm_matches_slow_definition():
    rng = np.random.default_rng(12)
    p = np.round(rng.uniform(0, 0.2, size=30), 2)  # rounded: tied p-values
    m = p.size
    order = np.argsort(p, kind="stable")
    expected = np.empty(m)
    running_max = 0.0
    for rank, index in enumerate(order, start=1):
        running_max = max(running_max, min(1.0, (m - rank + 1) * p[index]))
        expected[index] = running_max
    np.testing.assert_allclose(holm(p), expected)


@pytest.mark.parametrize("adjust", [benjamini_hochberg, holm])
def test_adjustment_rejects_values_outside_unit_interval(adjust):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        adjust([0.1, 1.5])


# --------------------------------------------------------------------------
# Across-cell paired statistics
# --------------------------------------------------------------------------


def _cell_aucs(seed, n, rounding=None):
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.6, 0.9, n)
    b = a - rng.normal(0.01, 0.02, n)
    if rounding is not None:
        a, b = np.round(a, rounding), np.round(b, rounding)
    return a, b


@pytest.mark.parametrize(
    "n, rounding, method",
    [(12, None, "exact"), (50, None, "exact"), (60, None, "normal approximation"),
     (10, 2, "exact permutation"), (40, 2, "normal approximation"), (2, None, "exact"),
     (5, None, "exact"), (13, 2, "exact permutation"), (13, 1, "exact permutation"),
     (14, 1, "normal approximation"), (200, 3, "normal approximation")],
)  # fmt: skip
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wilcoxon_matches_scipy_default(n, rounding, method, seed):
    a, b = _cell_aucs(n + 1000 * seed, n, rounding)
    expected = stats.wilcoxon(a, b)
    result = wilcoxon_signed_rank(a, b)
    assert result.method == method
    assert result.statistic == pytest.approx(expected.statistic)
    assert result.p == pytest.approx(expected.pvalue, rel=1e-10)
    assert (result.note is None) == (rounding is None)


def test_wilcoxon_with_zero_differences_says_so():
    a = np.array([0.5, 0.75, 0.625, 0.875, 0.25, 0.5, 0.375, 0.125, 0.75, 0.5, 0.25, 0.875, 0.625,
                  0.375, 0.5])  # fmt: skip
    b = a - np.array([0, 0.125, 0.25, -0.0625, 0.375, 0.5, 0.0, 0.1875, 0.3125, -0.4375, 0.5625,
                      0.6875, 0.75, 0.8125, 0.9375])  # fmt: skip
    result = wilcoxon_signed_rank(a, b)
    assert result.method == "normal approximation"
    assert "2 zero differences dropped" in result.note
    assert result.p == pytest.approx(stats.wilcoxon(a, b).pvalue, rel=1e-10)


def test_wilcoxon_edge_cases():
    same = np.array([0.7, 0.8, 0.75])
    assert wilcoxon_signed_rank(same, same) == wilcoxon_signed_rank(same, same.copy())
    all_zero = wilcoxon_signed_rank(same, same)
    assert (all_zero.statistic, all_zero.p) == (0.0, 1.0)
    assert all_zero.note == "all differences are zero"
    for n in (0, 1):
        result = wilcoxon_signed_rank(same[:n], same[:n] - 0.1)
        assert math.isnan(result.statistic) and math.isnan(result.p)
        assert "no across-cell test" in result.note


@pytest.mark.parametrize("n", [2, 3, 7, 25, 56, 400])
@pytest.mark.parametrize("shift", [0.0, 0.01, 0.05])
def test_paired_ttest_matches_scipy(n, shift):
    a, b = _cell_aucs(4 + n, n)
    b = b - shift  # from p near 1 to p far below 1e-30
    expected = stats.ttest_rel(a, b)
    result = paired_ttest(a, b)
    assert result.statistic == pytest.approx(expected.statistic, rel=1e-12)
    assert result.p == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-300)
    assert result.note is None


def test_paired_ttest_edge_cases():
    a = np.array([0.5, 0.75, 0.625, 0.875])
    zero = paired_ttest(a, a)
    assert (zero.statistic, zero.p, zero.note) == (0.0, 1.0, "all differences are zero")
    shifted = paired_ttest(a, a - 0.125)  # exact in binary: every difference is 0.125
    assert (shifted.statistic, shifted.p) == (math.inf, 0.0)
    assert "not an exact probability" in shifted.note
    assert paired_ttest(a - 0.125, a).statistic == -math.inf
    single = paired_ttest(a[:1], a[:1] - 0.125)
    assert math.isnan(single.p) and "1 cell" in single.note


def test_rank_biserial_hand_worked():
    # a - b = [0.5, -0.25, 0.25, 0, 0.25]; the zero is dropped.
    # |d| = 0.5, 0.25, 0.25, 0.25: the three 0.25s share ranks 1-3 (midrank 2), 0.5 has rank 4.
    # Positive ranks 4 + 2 + 2 = 8, negative ranks 2, total 10: r = (8 - 2) / 10 = 0.6.
    a = [1.0, 0.25, 0.75, 0.5, 0.75]
    b = [0.5, 0.5, 0.5, 0.5, 0.5]
    assert rank_biserial(a, b) == pytest.approx(0.6)
    assert rank_biserial(b, a) == pytest.approx(-0.6)
    assert rank_biserial(a, a) == 0.0
    assert math.isnan(rank_biserial([], []))


def test_rank_biserial_agrees_with_scipy_signed_rank_sums():
    # With T = min(R+, R-) from scipy and S = R+ + R-, |r| = (S - 2T) / S.
    a, b = _cell_aucs(8, 30, rounding=2)
    differences = a - b
    nonzero = np.count_nonzero(differences)
    rank_sum = nonzero * (nonzero + 1) / 2
    t_statistic = stats.wilcoxon(a, b).statistic
    r = rank_biserial(a, b)
    assert abs(r) == pytest.approx((rank_sum - 2 * t_statistic) / rank_sum)
    assert -1.0 <= r <= 1.0


def test_wins_ties_losses():
    a = [0.8, 0.7, 0.6, 0.9, 0.5]
    b = [0.7, 0.7, 0.65, 0.895, 0.5]
    assert wins_ties_losses(a, b) == (2, 2, 1)
    assert wins_ties_losses(a, b, tol=0.01) == (1, 3, 1)
    with pytest.raises(ValueError):
        wins_ties_losses(a, b, tol=-0.1)


def test_bootstrap_median_ci_is_deterministic_and_covers_the_median():
    a, b = _cell_aucs(9, 40)
    differences = a - b
    first = bootstrap_median_ci(differences, n_boot=4000, seed=1)
    assert first == bootstrap_median_ci(differences, n_boot=4000, seed=1)
    low, high = first
    assert low <= np.median(differences) <= high
    narrow_low, narrow_high = bootstrap_median_ci(differences, n_boot=4000, level=0.5, seed=1)
    assert low <= narrow_low <= narrow_high <= high
    assert bootstrap_median_ci([0.25]) == (0.25, 0.25)
    assert all(math.isnan(v) for v in bootstrap_median_ci([]))


def test_paired_summary_is_json_ready_and_consistent():
    a, b = _cell_aucs(10, 20)
    summary = paired_summary(a, b, seed=3)
    values = dataclasses.asdict(summary)
    json.dumps(values, allow_nan=False)
    assert summary.n_cells == 20
    assert summary.mean_a == pytest.approx(a.mean())
    assert summary.median_delta == pytest.approx(np.median(a - b))
    assert summary.median_delta_ci_low <= summary.median_delta <= summary.median_delta_ci_high
    assert (summary.wins, summary.ties, summary.losses) == wins_ties_losses(a, b)
    assert summary.wilcoxon_p == pytest.approx(stats.wilcoxon(a, b).pvalue)
    assert summary.wilcoxon_method == "exact"
    assert summary.ttest_p == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert summary.rank_biserial == pytest.approx(rank_biserial(a, b))
    assert summary.notes == [] and summary.wilcoxon_p_holm is None  # Holm is for callers testing several pairs
    for key, value in values.items():
        assert type(value) in (int, float, str, list) or (value is None and key.endswith("_holm")), key
    assert summary == paired_summary(a, b, seed=3)


def test_paired_summary_with_one_cell_uses_none_and_notes():
    summary = paired_summary([0.8], [0.7])
    json.dumps(dataclasses.asdict(summary), allow_nan=False)
    assert summary.n_cells == 1 and summary.wins == 1
    assert summary.median_delta == pytest.approx(0.1)
    for key in ("median_delta_ci_low", "wilcoxon_p", "wilcoxon_method", "ttest_p", "rank_biserial"):
        assert getattr(summary, key) is None
    assert "1 cell: no across-cell test (needs at least 2)" in summary.notes
    assert "1 cell: no bootstrap interval for the median difference and no rank-biserial r" in summary.notes
    empty = paired_summary([], [])
    assert empty.n_cells == 0 and empty.mean_a is None and empty.notes


def test_paired_summary_constant_shift_reports_infinite_t_as_none():
    a = np.array([0.5, 0.75, 0.625, 0.875])
    summary = paired_summary(a, a - 0.125)
    json.dumps(dataclasses.asdict(summary), allow_nan=False)
    assert summary.ttest_statistic is None and summary.ttest_p == 0.0
    assert any(note.startswith("t-test:") for note in summary.notes)
    assert summary.rank_biserial == 1.0


def test_paired_inputs_must_align_and_be_finite():
    with pytest.raises(ValueError, match="equally long"):
        paired_summary([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="finite"):
        wilcoxon_signed_rank([0.1, np.nan], [0.1, 0.2])
