"""Regression metrics (histcli.metrics) and dependent-correlation tests (histcli.stats)
against independent computations and published values."""

import math

import numpy as np
import pytest
from scipy import stats

from histcli.metrics import pearson, r_squared, rmse, spearman
from histcli.stats import compare_dependent_correlations, steiger_test, zou_interval

# --------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------


def _pair(seed, n=500, decimals=None):
    rng = np.random.default_rng(seed)
    y = rng.normal(size=n)
    yhat = 0.6 * y + rng.normal(size=n)
    if decimals is not None:  # coarse values: many ties in both vectors
        y, yhat = np.round(y, decimals), np.round(yhat, decimals)
    return y, yhat


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("decimals", [None, 1, 0])
def test_correlations_match_scipy(seed, decimals):
    y, yhat = _pair(seed, decimals=decimals)
    assert pearson(y, yhat) == pytest.approx(stats.pearsonr(y, yhat)[0], abs=1e-14)
    assert spearman(y, yhat) == pytest.approx(stats.spearmanr(y, yhat)[0], abs=1e-14)


def test_spearman_ties_hand_worked():
    # y ranks 1, 2.5, 2.5, 4; yhat ranks 1, 2, 3, 4 -> Pearson of the ranks:
    # deviations (-1.5, 0, 0, 1.5) and (-1.5, -0.5, 0.5, 1.5): 4.5 / sqrt(4.5 * 5)
    assert spearman([1, 2, 2, 3], [10, 20, 30, 40]) == pytest.approx(4.5 / math.sqrt(4.5 * 5.0), abs=1e-15)


def test_pearson_is_exact_for_affine_maps_and_large_values():
    x = np.arange(10.0)
    assert pearson(x, 3 * x + 7) == 1.0
    assert pearson(x, -2 * x) == -1.0
    # squares of 1e200 overflow float64; the scaled computation does not
    assert pearson(x * 1e200, (x + np.sin(x)) * 1e200) == pytest.approx(pearson(x, x + np.sin(x)), abs=1e-14)
    # an offset of 1e9 with unit-scale variation keeps full precision (two-pass centring)
    y, yhat = _pair(7)
    assert pearson(y + 1e9, yhat) == pytest.approx(stats.pearsonr(y, yhat)[0], abs=1e-7)


def test_r_squared_and_rmse_hand_checked():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    yhat = np.array([1.5, 2.0, 2.0, 5.0])
    # SS_res = 0.25 + 0 + 1 + 1 = 2.25; mean(y) = 2.5, SS_tot = 2.25 + 0.25 + 0.25 + 2.25 = 5
    assert r_squared(y, yhat) == pytest.approx(1 - 2.25 / 5, abs=1e-15)
    assert rmse(y, yhat) == pytest.approx(math.sqrt(2.25 / 4), abs=1e-15)
    assert r_squared(y, y) == 1.0 and rmse(y, y) == 0.0
    assert r_squared(y, np.full(4, 2.5)) == 0.0  # predicting the mean
    # not the squared correlation: a perfectly correlated but shifted prediction scores below 0
    shifted = y + 10
    assert pearson(y, shifted) == 1.0
    assert r_squared(y, shifted) == pytest.approx(1 - 4 * 100 / 5)


def test_r_squared_and_rmse_against_numpy_on_random_data():
    y, yhat = _pair(3)
    residuals = y - yhat
    expected_r2 = 1 - np.sum(residuals**2) / np.sum((y - y.mean()) ** 2)
    assert r_squared(y, yhat) == pytest.approx(expected_r2, rel=1e-13)
    assert rmse(y, yhat) == pytest.approx(np.sqrt(np.mean(residuals**2)), rel=1e-13)
    big = 1e200  # the squared errors overflow without scaling
    assert rmse(y * big, yhat * big) == pytest.approx(rmse(y, yhat) * big, rel=1e-13)
    assert r_squared(y * big, yhat * big) == pytest.approx(expected_r2, rel=1e-12)


def test_constant_vectors_give_nan():
    constant = np.full(5, 0.1)  # its float mean differs from 0.1 by rounding
    varying = np.arange(5.0)
    assert math.isnan(pearson(constant, varying))
    assert math.isnan(pearson(varying, constant))
    assert math.isnan(spearman(varying, constant))
    assert math.isnan(r_squared(constant, varying))
    assert r_squared(varying, constant) == pytest.approx(1 - np.sum((varying - 0.1) ** 2) / 10.0)
    assert math.isnan(pearson([2.0], [3.0]))  # one sample
    assert rmse([2.0], [3.0]) == 1.0


@pytest.mark.parametrize("function", [pearson, spearman, r_squared, rmse])
def test_invalid_inputs_raise(function):
    with pytest.raises(ValueError, match="differ in length"):
        function([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        function([1.0, np.nan, 3.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="1-D"):
        function(np.ones((2, 2)), np.ones((2, 2)))
    with pytest.raises(ValueError, match="empty"):
        function([], [])


# --------------------------------------------------------------------------
# Steiger (1980) and Zou (2007)
# --------------------------------------------------------------------------
# Published values as checked in the tests of the R package cocor
# (github.com/cran/cocor, tests/testthat/tests.r, "Test steiger1980" and
# "Test zou2007" for cocor.dep.groups.overlap):
#   * Steiger (1980), Psychological Bulletin 87:245, Case A p. 249: r.jk = .4,
#     r.jh = .5, r.kh = .1, n = 103 -> z = -0.8887185 (the paper prints -.8913;
#     cocor's note: from rounded intermediate values).
#   * DEPCOR (Silver, Hittner & May 2006, Applied Psychological Measurement
#     30:152): .3, .4, .5, n = 100 -> z = -1.0718, p = 0.2838.
#   * Zou (2007), Psychological Methods 12:399, example 2 (p. 409): r.jk = .396,
#     r.jh = .179, r.kh = .088, n = 66 -> 95% CI (-.093, .517).


def test_steiger_published_values():
    z, _ = steiger_test(0.4, 0.5, 0.1, 103)
    assert round(z, 7) == -0.8887185
    z, p = steiger_test(0.3, 0.4, 0.5, 100)
    assert round(z, 4) == -1.0718
    assert round(p, 4) == 0.2838


def test_steiger_by_hand_with_the_paper_covariance():
    # Steiger's Case A by hand: pooled r = .45, c = (.1 (1 - 2(.2025)) - .5 (.2025)(1 - .405 - .01)) / (1 - .2025)^2
    pooled2 = 0.45**2
    c = (0.1 * (1 - 2 * pooled2) - 0.5 * pooled2 * (1 - 2 * pooled2 - 0.01)) / (1 - pooled2) ** 2
    z_expected = (math.atanh(0.4) - math.atanh(0.5)) * math.sqrt(100) / math.sqrt(2 - 2 * c)
    assert steiger_test(0.4, 0.5, 0.1, 103)[0] == pytest.approx(z_expected, abs=1e-12)


def test_zou_published_example():
    low, high = zou_interval(0.396, 0.179, 0.088, 66)
    assert (round(low, 3), round(high, 3)) == (-0.093, 0.517)


def _correlations(samples):
    """Pearson correlations r(y, a), r(y, b), r(a, b) of each (n, 3) sample in a (k, n, 3) array."""
    centred = samples - samples.mean(axis=1, keepdims=True)
    cov = np.einsum("kni,knj->kij", centred, centred)
    sd = np.sqrt(np.einsum("kii->ki", cov))
    corr = cov / sd[:, :, None] / sd[:, None, :]
    return corr[:, 0, 1], corr[:, 0, 2], corr[:, 1, 2]


def test_fisher_z_covariance_by_monte_carlo():
    """A second computation of the variance behind Steiger's z: simulate trivariate normal
    samples and compare the variance of (atanh r1 - atanh r2) * sqrt(n - 3) with 2 - 2c."""
    rho1, rho2, rho12, n = 0.45, 0.45, 0.3, 80
    corr = np.array([[1, rho1, rho2], [rho1, 1, rho12], [rho2, rho12, 1]])
    rng = np.random.default_rng(11)
    samples = rng.multivariate_normal(np.zeros(3), corr, size=(20000, n))
    r1, r2, _ = _correlations(samples)
    observed = np.var((np.arctanh(r1) - np.arctanh(r2)) * math.sqrt(n - 3), ddof=1)
    pooled2 = rho1 * rho2
    c = (rho12 * (1 - 2 * pooled2) - 0.5 * pooled2 * (1 - 2 * pooled2 - rho12**2)) / (1 - pooled2) ** 2
    # the standard error of a variance estimated from 20000 normal draws is about 1%
    assert observed == pytest.approx(2 - 2 * c, rel=0.04)


def test_zou_interval_coverage_by_simulation():
    """Zou's interval covers the true difference about 95% of the time when rho1 != rho2."""
    rho1, rho2, rho12, n = 0.6, 0.3, 0.4, 100
    corr = np.array([[1, rho1, rho2], [rho1, 1, rho12], [rho2, rho12, 1]])
    rng = np.random.default_rng(5)
    samples = rng.multivariate_normal(np.zeros(3), corr, size=(2000, n))
    covered = 0
    for r1, r2, r12 in zip(*_correlations(samples), strict=True):
        low, high = zou_interval(float(r1), float(r2), float(r12), n)
        covered += low <= rho1 - rho2 <= high
    # binomial standard error at 0.95 over 2000 draws: 0.005
    assert 0.93 <= covered / 2000 <= 0.97


def test_identical_predictors_give_p_one():
    y, a = _pair(0)
    for method in ("pearson", "spearman"):
        result = compare_dependent_correlations(y, a, a.copy(), method=method)
        assert (result.z, result.p) == (0.0, 1.0)
        assert result.difference == 0.0 and result.r12 == 1.0
        assert result.ci_low <= 0.0 <= result.ci_high
    # a positive affine map of a predictor: the same correlation, up to rounding
    result = compare_dependent_correlations(y, a, 3 * a + 1)
    assert result.p == 1.0


def test_result_fields_against_direct_computation():
    rng = np.random.default_rng(2)
    y = rng.normal(size=300)
    a = y + rng.normal(size=300)
    b = y + 2 * rng.normal(size=300)
    result = compare_dependent_correlations(y, a, b, level=0.9)
    r1, r2, r12 = stats.pearsonr(y, a)[0], stats.pearsonr(y, b)[0], stats.pearsonr(a, b)[0]
    assert (result.r1, result.r2, result.r12) == pytest.approx((r1, r2, r12), abs=1e-14)
    assert result.n == 300 and result.method == "pearson" and result.level == 0.9
    assert result.difference == pytest.approx(r1 - r2, abs=1e-14)
    assert (result.z, result.p) == pytest.approx(steiger_test(r1, r2, r12, 300), abs=1e-12)
    assert (result.ci_low, result.ci_high) == pytest.approx(zou_interval(r1, r2, r12, 300, 0.9), abs=1e-12)
    assert result.z > 0 and result.p < 1e-6  # a is clearly the better predictor
    assert 0 < result.ci_low < result.difference < result.ci_high

    ranked = compare_dependent_correlations(y, a, b, method="spearman")
    s1, s2, s12 = stats.spearmanr(y, a)[0], stats.spearmanr(y, b)[0], stats.spearmanr(a, b)[0]
    assert (ranked.r1, ranked.r2, ranked.r12) == pytest.approx((s1, s2, s12), abs=1e-14)
    assert (ranked.z, ranked.p) == pytest.approx(steiger_test(s1, s2, s12, 300), abs=1e-12)


def test_swapping_predictors_mirrors_the_result():
    y, a = _pair(4)
    b = a + np.random.default_rng(9).normal(size=a.size)
    forward = compare_dependent_correlations(y, a, b)
    backward = compare_dependent_correlations(y, b, a)
    assert backward.z == pytest.approx(-forward.z, abs=1e-12)
    assert backward.p == pytest.approx(forward.p, abs=1e-12)
    assert (backward.ci_low, backward.ci_high) == pytest.approx((-forward.ci_high, -forward.ci_low), abs=1e-12)


def test_p_values_are_uniform_under_the_null():
    """Two predictors equally good by construction: p-values are close to uniform."""
    rng = np.random.default_rng(2024)
    n, simulations = 200, 400
    signal = rng.normal(size=(simulations, n))
    y = signal + rng.normal(size=(simulations, n))
    a = signal + rng.normal(size=(simulations, n))
    b = signal + rng.normal(size=(simulations, n))
    p_values = [compare_dependent_correlations(y[i], a[i], b[i]).p for i in range(simulations)]
    assert stats.kstest(p_values, "uniform").pvalue > 0.01


def test_perfect_and_constant_cases():
    x = np.arange(20.0)
    noisy = x + np.random.default_rng(1).normal(size=20) * 3
    perfect = compare_dependent_correlations(x, 2 * x, noisy)
    assert perfect.r1 == 1.0 and math.isinf(perfect.z) and perfect.z > 0 and perfect.p == 0.0
    assert "limit" in perfect.note
    assert perfect.ci_low < perfect.difference < perfect.ci_high

    constant = compare_dependent_correlations(x, np.ones(20), noisy)
    assert math.isnan(constant.z) and math.isnan(constant.p) and math.isnan(constant.ci_low)
    assert constant.note == "a is constant: correlations undefined"


def test_invalid_arguments():
    with pytest.raises(ValueError, match="more than 3"):
        compare_dependent_correlations([1, 2, 3], [1, 3, 2], [2, 1, 3])
    with pytest.raises(ValueError, match="method"):
        compare_dependent_correlations(np.arange(5), np.arange(5), np.arange(5), method="kendall")
    with pytest.raises(ValueError, match="differ in length"):
        compare_dependent_correlations(np.arange(5), np.arange(5), np.arange(4))
    with pytest.raises(ValueError, match="correlation"):
        steiger_test(1.2, 0.1, 0.1, 50)
    with pytest.raises(ValueError, match="n must exceed 3"):
        zou_interval(0.2, 0.1, 0.1, 3)
    with pytest.raises(ValueError, match="level"):
        zou_interval(0.2, 0.1, 0.1, 30, level=1.0)
