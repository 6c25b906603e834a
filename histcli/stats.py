"""Statistics for comparing expression models: within a cell and across cells.

* DeLong's test for two correlated ROC curves (same genes, same labels),
  using the O(n log n) midrank algorithm of Sun & Xu (2014).
* Two correlations with the same measured values (two regression models
  scored on the same genes): Steiger's (1980) z test and Zou's (2007)
  confidence interval for dependent, overlapping correlations.
* Benjamini-Hochberg and Holm adjustment of many p-values.
* Paired tests and effect sizes on per-cell AUCs of two models.

Every function returns defined values for degenerate input and documents
them; inputs that make a quantity meaningless raise ``ValueError`` or come
back as NaN together with a reason, never as a silent number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np

from histcli.metrics import binary_labels, check_regression_inputs, midranks, pearson

# Sample-size boundaries of scipy.stats.wilcoxon(method="auto") since scipy 1.15,
# which this module follows: exact null distribution
# without ties or zeros up to 50 pairs; with them, a permutation test that
# enumerates all 2**n sign flips up to 13 pairs.
_WILCOXON_EXACT_MAX_N = 50
_WILCOXON_ENUMERATION_MAX_N = 13


# --------------------------------------------------------------------------
# DeLong's test
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class DeLongResult:
    """DeLong's test of AUC(a) - AUC(b) on one set of labelled samples.

    ``p`` is two-sided; (ci_low, ci_high) is the normal confidence interval
    of ``delta``. ``note`` explains a degenerate case (zero standard error),
    otherwise it is None.
    """

    auc_a: float
    auc_b: float
    delta: float
    se: float
    z: float
    p: float
    ci_low: float
    ci_high: float
    note: str | None = None


def _placement_counts(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample placement counts for k score rows, by Sun & Xu's midranks.

    Returns (positive_counts (k, m), negative_counts (k, n)): for each
    positive, how many negatives score below it; for each negative, how many
    positives score above it; ties count 1/2. Dividing by n and m gives
    DeLong's structural components V10 and V01. The counts are half-integers,
    so they are exact in floating point.
    """
    positive = binary_labels(labels)
    scores = np.asarray(scores, dtype=float)
    if scores.ndim == 1:
        scores = scores[np.newaxis, :]
    if scores.ndim != 2 or scores.shape[1] != positive.size:
        raise ValueError(
            f"scores must have shape (models, {positive.size}) to match the labels; "
            f"got {scores.shape}"
        )
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite (found NaN or infinity)")
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            f"labels hold only one class ({n_pos} positive, {n_neg} negative): "
            "AUC and its DeLong variance are undefined"
        )
    if n_pos < 2 or n_neg < 2:
        raise ValueError(
            f"DeLong's variance needs at least 2 positives and 2 negatives "
            f"(got {n_pos} positive, {n_neg} negative)"
        )

    positive_scores = scores[:, positive]
    negative_scores = scores[:, ~positive]
    combined_ranks = midranks(np.concatenate([positive_scores, negative_scores], axis=1))
    # A sample's rank among all samples minus its rank within its own class
    # is the number of other-class samples below it (ties counting 1/2).
    positive_counts = combined_ranks[:, :n_pos] - midranks(positive_scores)
    negative_counts = n_pos - (combined_ranks[:, n_pos:] - midranks(negative_scores))
    return positive_counts, negative_counts


def _row_covariance(rows: np.ndarray) -> np.ndarray:
    """Sample covariance (denominator count - 1) between the rows of a (k, count) array."""
    centered = rows - rows.mean(axis=1, keepdims=True)
    return centered @ centered.T / (rows.shape[1] - 1)


def delong_covariance(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """AUCs of k models and DeLong's estimate of their covariance matrix.

    ``scores`` has shape (k, n) (a 1-D vector counts as k = 1), one row per
    model over the same n labelled samples. Returns (aucs of shape (k,),
    covariance of shape (k, k)); covariance = S10 / m + S01 / n with S10, S01
    the sample covariances (denominators m - 1 and n - 1) of the structural
    components over the m positives and n negatives.

    Raises ValueError when labels hold one class only, or fewer than 2
    positives or 2 negatives (the n - 1 denominators would be zero).
    """
    positive_counts, negative_counts = _placement_counts(labels, scores)
    n_pos = positive_counts.shape[1]
    n_neg = negative_counts.shape[1]
    aucs = positive_counts.sum(axis=1) / (n_pos * n_neg)
    covariance = _row_covariance(positive_counts) / (n_neg**2 * n_pos) + _row_covariance(
        negative_counts
    ) / (n_pos**2 * n_neg)
    return aucs, covariance


def delong_test(labels, scores_a, scores_b, level: float = 0.95) -> DeLongResult:
    """DeLong's two-sided test that two models scored on the same samples have equal AUC.

    delta = auc_a - auc_b; z = delta / se; p = 2 * (1 - Phi(|z|)); the CI is
    delta -/+ Phi^-1((1 + level) / 2) * se.

    Zero standard error happens when every sample's placement value moves by
    the same amount from model b to model a:
      * delta == 0 too (e.g. identical scores, or scores with the same
        ranking): z = 0, p = 1.0, CI = (0, 0);
      * delta != 0 (e.g. a perfect model against a constant one): the normal
        approximation degenerates; z = +/-inf and p = 0.0, its limit (as R's
        pROC reports), CI = (delta, delta), and ``note`` says that p is not
        an exact probability.

    Raises ValueError for one-class labels, fewer than 2 positives or
    negatives, mismatched lengths, non-finite scores or level outside (0, 1).
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1; got {level}")
    scores_a = np.asarray(scores_a, dtype=float)
    scores_b = np.asarray(scores_b, dtype=float)
    if scores_a.ndim != 1 or scores_a.shape != scores_b.shape:
        raise ValueError(
            f"scores_a and scores_b must be 1-D and equally long; "
            f"got shapes {scores_a.shape} and {scores_b.shape}"
        )
    positive_counts, negative_counts = _placement_counts(labels, np.stack([scores_a, scores_b]))
    n_pos = positive_counts.shape[1]
    n_neg = negative_counts.shape[1]
    auc_a, auc_b = positive_counts.sum(axis=1) / (n_pos * n_neg)
    delta = float(auc_a - auc_b)
    # Var(a - b) from the differences of the exact counts, rather than
    # var_a + var_b - 2 cov_ab: it is never negative and is exactly zero
    # whenever the differences are constant, so degeneracy is detected exactly.
    positive_shift = positive_counts[0] - positive_counts[1]
    negative_shift = negative_counts[0] - negative_counts[1]
    variance = float(
        np.var(positive_shift, ddof=1) / (n_neg**2 * n_pos)
        + np.var(negative_shift, ddof=1) / (n_pos**2 * n_neg)
    )
    se = math.sqrt(variance)
    note = None
    if se > 0.0:
        z = delta / se
        p = math.erfc(abs(z) / math.sqrt(2.0))
    elif delta == 0.0:
        z, p = 0.0, 1.0
        note = "the AUC difference and its standard error are both 0"
    else:
        z, p = math.copysign(math.inf, delta), 0.0
        note = (
            "standard error of the AUC difference is 0 although the AUCs differ "
            "(every sample's placement shifts by the same amount): the normal "
            "approximation degenerates, z is infinite and p = 0 is its limit, "
            "not an exact probability"
        )
    half_width = NormalDist().inv_cdf(0.5 + level / 2.0) * se
    return DeLongResult(
        auc_a=float(auc_a),
        auc_b=float(auc_b),
        delta=delta,
        se=se,
        z=z,
        p=p,
        ci_low=delta - half_width,
        ci_high=delta + half_width,
        note=note,
    )


# --------------------------------------------------------------------------
# Dependent overlapping correlations
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class DependentCorrelationResult:
    """Comparison of r1 = r(y, a) with r2 = r(y, b) on the same n samples.

    ``r12`` = r(a, b); ``difference`` = r1 - r2; ``z`` and ``p`` (two-sided)
    are Steiger's (1980) test; (ci_low, ci_high) is Zou's (2007) interval for
    the difference at ``level``. ``method`` is "pearson" or "spearman".
    Undefined quantities are NaN and ``note`` says why; it also records
    degenerate cases handled by a stated rule.
    """

    r1: float
    r2: float
    r12: float
    n: int
    difference: float
    z: float
    p: float
    ci_low: float
    ci_high: float
    method: str
    level: float
    note: str | None = None


def _fisher_z(r: float) -> float:
    """atanh(r), infinite at r = +/-1 (rather than math.atanh's ValueError)."""
    if abs(r) >= 1.0:
        return math.copysign(math.inf, r)
    return math.atanh(r)


def _check_correlations(r1: float, r2: float, r12: float, n: int) -> None:
    for name, value in (("r1", r1), ("r2", r2), ("r12", r12)):
        if not -1.0 <= value <= 1.0:  # also refuses NaN
            raise ValueError(f"{name} must be a correlation in [-1, 1]; got {value}")
    if n <= 3:
        raise ValueError(f"n must exceed 3 (the Fisher z variance is 1/(n - 3)); got {n}")


def steiger_test(r1: float, r2: float, r12: float, n: int) -> tuple[float, float]:
    """Steiger's (1980) z test of rho(y, a) = rho(y, b) given r12 = r(a, b): (z, two-sided p).

    z = (atanh r1 - atanh r2) * sqrt(n - 3) / sqrt(2 - 2c), with the covariance
    of the two Fisher z values from Dunn & Clark (1969) evaluated at the pooled
    r = (r1 + r2) / 2 (Steiger 1980, Psychological Bulletin 87:245, eqs. 10 and
    14; "steiger1980" in the R package cocor):

        c = (r12 (1 - 2 r^2) - r^2 (1 - 2 r^2 - r12^2) / 2) / (1 - r^2)^2

    Degenerate cases: r1 == r2 gives z = 0, p = 1 (whatever c is, e.g. two
    identical predictors, where 2 - 2c = 0 too); a correlation of +/-1 with
    r1 != r2 gives an infinite z and p = 0, the limit of the test.
    """
    _check_correlations(r1, r2, r12, n)
    if r1 == r2:
        return 0.0, 1.0
    pooled = (r1 + r2) / 2.0
    pooled2 = pooled * pooled
    # pooled2 < 1: r1 != r2 rules out r1 = r2 = +/-1.
    covariance = (r12 * (1.0 - 2.0 * pooled2) - 0.5 * pooled2 * (1.0 - 2.0 * pooled2 - r12 * r12)) / (
        1.0 - pooled2
    ) ** 2
    spread = _fisher_z(r1) - _fisher_z(r2)
    variance = 2.0 - 2.0 * covariance
    if math.isinf(spread) or variance <= 0.0:
        # A perfect correlation, or a variance rounded to 0 although r1 != r2.
        return math.copysign(math.inf, r1 - r2), 0.0
    z = spread * math.sqrt(n - 3) / math.sqrt(variance)
    return z, math.erfc(abs(z) / math.sqrt(2.0))


def zou_interval(r1: float, r2: float, r12: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Zou's (2007) confidence interval for rho(y, a) - rho(y, b) given r12 = r(a, b).

    Each correlation gets its Fisher interval (l_i, u_i) = tanh(atanh r_i -/+
    z_crit / sqrt(n - 3)); the two are combined with the correlation c between
    r1 and r2 (Zou 2007, Psychological Methods 12:399, p. 409; "zou2007" in
    cocor):

        c = ((r12 - r1 r2 / 2)(1 - r1^2 - r2^2 - r12^2) + r12^3) / ((1 - r1^2)(1 - r2^2))
        L = r1 - r2 - sqrt((r1 - l1)^2 + (u2 - r2)^2 - 2c (r1 - l1)(u2 - r2))
        U = r1 - r2 + sqrt((u1 - r1)^2 + (r2 - l2)^2 - 2c (u1 - r1)(r2 - l2))

    A correlation of +/-1 has a zero-width interval of its own, so its terms
    vanish (c is then taken as 0). A negative radicand (rounding, at c near 1)
    counts as 0.
    """
    _check_correlations(r1, r2, r12, n)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1; got {level}")
    half_width = NormalDist().inv_cdf(0.5 + level / 2.0) / math.sqrt(n - 3)

    def bounds(r: float) -> tuple[float, float]:
        if abs(r) == 1.0:
            return r, r
        return math.tanh(math.atanh(r) - half_width), math.tanh(math.atanh(r) + half_width)

    l1, u1 = bounds(r1)
    l2, u2 = bounds(r2)
    denominator = (1.0 - r1 * r1) * (1.0 - r2 * r2)
    c = (
        ((r12 - 0.5 * r1 * r2) * (1.0 - r1 * r1 - r2 * r2 - r12 * r12) + r12**3) / denominator
        if denominator > 0.0
        else 0.0
    )
    difference = r1 - r2
    lower = math.sqrt(max(0.0, (r1 - l1) ** 2 + (u2 - r2) ** 2 - 2.0 * c * (r1 - l1) * (u2 - r2)))
    upper = math.sqrt(max(0.0, (u1 - r1) ** 2 + (r2 - l2) ** 2 - 2.0 * c * (u1 - r1) * (r2 - l2)))
    return difference - lower, difference + upper


def compare_dependent_correlations(y, a, b, *, method: str = "pearson", level: float = 0.95
                                   ) -> DependentCorrelationResult:
    """Is predictor ``a`` more correlated with ``y`` than predictor ``b`` (same samples)?

    r1 = r(y, a), r2 = r(y, b) and r12 = r(a, b) go into :func:`steiger_test`
    and :func:`zou_interval`. ``method="spearman"`` applies both to the midranks
    of y, a and b. That is an approximation: the formulas assume bivariate
    normal data, and the Fisher z of a Spearman correlation has a somewhat
    larger variance (about 1.06 / (n - 3), Fieller et al. 1957) than the
    1 / (n - 3) used, so p-values are a little too small and intervals a
    little too narrow for Spearman.

    A constant y, a or b leaves the correlations undefined: every statistic
    is NaN and ``note`` says which vector is constant. Raises ValueError for
    unequal lengths, non-finite values, n <= 3 or an unknown method.
    """
    if method not in ("pearson", "spearman"):
        raise ValueError(f"method must be 'pearson' or 'spearman'; got {method!r}")
    y, a = check_regression_inputs(y, a)
    y, b = check_regression_inputs(y, b)
    n = y.size
    if n <= 3:
        raise ValueError(f"need more than 3 samples to compare correlations; got {n}")
    if method == "spearman":
        y, a, b = midranks(np.stack([y, a, b]))
    r1, r2, r12 = pearson(y, a), pearson(y, b), pearson(a, b)
    if math.isnan(r1) or math.isnan(r2) or math.isnan(r12):
        constant = [name for name, values in (("y", y), ("a", a), ("b", b)) if (values == values[0]).all()]
        nan = math.nan
        return DependentCorrelationResult(
            r1, r2, r12, n, r1 - r2, nan, nan, nan, nan, method, level,
            note=f"{' and '.join(constant)} {'is' if len(constant) == 1 else 'are'} constant: "
                 "correlations undefined",
        )
    note = None
    if r12 == 1.0 and r1 != r2:
        # a and b are perfectly correlated, so r1 = r2 exactly; the difference is rounding.
        note = "a and b are perfectly correlated, so their correlations with y are equal (r1 = r2 taken)"
        r2 = r1
    z, p = steiger_test(r1, r2, r12, n)
    low, high = zou_interval(r1, r2, r12, n, level)
    if note is None and math.isinf(z):
        note = "a correlation of +/-1: z is infinite and p = 0 is the limit of the test, not an exact probability"
    return DependentCorrelationResult(r1, r2, r12, n, r1 - r2, z, p, low, high, method, level, note)


# --------------------------------------------------------------------------
# Multiple testing
# --------------------------------------------------------------------------


def _check_p_values(p) -> np.ndarray:
    p = np.asarray(p, dtype=float)
    present = p[~np.isnan(p)]
    if ((present < 0.0) | (present > 1.0)).any():
        raise ValueError("p-values must lie in [0, 1] (NaN marks a missing one)")
    return p


def benjamini_hochberg(p) -> np.ndarray:
    """Benjamini-Hochberg q-values (step-up FDR adjustment), same shape as ``p``.

    q_(i) = min over j >= i of m * p_(j) / j, capped at 1, where p_(1) <= ...
    <= p_(m) are the m non-NaN p-values. NaN entries stay NaN and do not count
    towards m. Raises ValueError for values outside [0, 1].
    """
    p = _check_p_values(p)
    q = np.full(p.shape, np.nan)
    present = ~np.isnan(p)
    values = p[present]
    m = values.size
    if m == 0:
        return q
    order = np.argsort(values, kind="stable")
    scaled = values[order] * m / np.arange(1, m + 1)
    step_up = np.minimum.accumulate(scaled[::-1])[::-1]
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(step_up, 1.0)
    q[present] = adjusted
    return q


def holm(p) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error), same shape as ``p``.

    adjusted_(i) = max over j <= i of (m - j + 1) * p_(j), capped at 1, where
    p_(1) <= ... <= p_(m) are the m non-NaN p-values. NaN entries stay NaN
    and do not count towards m. Raises ValueError for values outside [0, 1].
    """
    p = _check_p_values(p)
    adjusted_all = np.full(p.shape, np.nan)
    present = ~np.isnan(p)
    values = p[present]
    m = values.size
    if m == 0:
        return adjusted_all
    order = np.argsort(values, kind="stable")
    scaled = values[order] * (m - np.arange(m))
    step_down = np.maximum.accumulate(scaled)
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(step_down, 1.0)
    adjusted_all[present] = adjusted
    return adjusted_all


# --------------------------------------------------------------------------
# Across-cell paired statistics
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class PairedTestResult:
    """A paired test on per-cell values of two models.

    ``statistic`` and ``p`` are NaN when the test is undefined, and ``note``
    then says why; ``note`` also records fallbacks and degenerate cases.
    """

    statistic: float
    p: float
    method: str
    note: str | None = None


def _check_paired(a, b) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(
            f"a and b must be 1-D and equally long (one value per cell); "
            f"got shapes {a.shape} and {b.shape}"
        )
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("per-cell values must be finite (drop cells whose value is undefined)")
    return a, b


def _too_few_cells(n: int) -> str:
    return f"{n} cell{'' if n == 1 else 's'}: no across-cell test (needs at least 2)"


def _exact_signed_rank_counts(n: int) -> np.ndarray:
    """Number of sign patterns of ranks 1..n whose positive ranks sum to each of 0..n(n+1)/2."""
    counts = np.zeros(n * (n + 1) // 2 + 1)
    counts[0] = 1.0
    for rank in range(1, n + 1):
        # Adding rank k: every pattern either leaves it negative or adds k to the sum.
        counts[rank:] = counts[rank:] + counts[:-rank]  # the sum is built before it is stored
    return counts  # exact in float64: at most 2**50 < 2**53


def _sign_flip_p(ranks: np.ndarray, r_plus: float) -> float:
    """Two-sided p of R+ over all 2**n sign flips of ``ranks`` (n small), as scipy's permutation test."""
    n = ranks.size
    patterns = (np.arange(2**n)[:, None] >> np.arange(n)) & 1
    null = patterns @ ranks
    tolerance = abs(r_plus) * np.finfo(float).eps * 100  # scipy's allowance for rounding
    less = np.count_nonzero(null <= r_plus + tolerance) / null.size
    greater = np.count_nonzero(null >= r_plus - tolerance) / null.size
    return min(1.0, 2 * min(less, greater))


def wilcoxon_signed_rank(a, b) -> PairedTestResult:
    """Two-sided Wilcoxon signed-rank test of a - b, as scipy.stats.wilcoxon's defaults.

    Computed here rather than by scipy.stats, whose import alone takes half a
    second of every `compare`; tests check it against scipy. Zero differences
    are dropped (Wilcoxon's method); no continuity correction. The statistic is
    min(R+, R-). The method is the one scipy's ``method="auto"`` picks, named in
    the result:
      * "exact": no zeros or tied |differences| and at most 50 cells (the null
        distribution of R+ counted exactly);
      * "exact permutation": zeros or ties and at most 13 cells (all 2**n sign
        flips enumerated, so still exact and deterministic);
      * "normal approximation": otherwise, with tie correction.
    Edge cases: fewer than 2 cells -> statistic and p NaN, method "none", and
    ``note`` gives the reason; all differences zero -> statistic 0.0, p 1.0.
    """
    a, b = _check_paired(a, b)
    differences = a - b
    n = differences.size
    if n < 2:
        return PairedTestResult(math.nan, math.nan, "none", _too_few_cells(n))
    nonzero = differences[differences != 0.0]
    if nonzero.size == 0:
        return PairedTestResult(0.0, 1.0, "none", "all differences are zero")

    ranks = midranks(np.abs(nonzero))
    r_plus = float(ranks[nonzero > 0].sum())
    r_minus = float(ranks[nonzero < 0].sum())
    statistic = min(r_plus, r_minus)
    n_zeros = n - nonzero.size
    _, tie_sizes = np.unique(np.abs(nonzero), return_counts=True)
    has_ties = bool((tie_sizes > 1).any())
    if n_zeros == 0 and not has_ties and n <= _WILCOXON_EXACT_MAX_N:
        counts = _exact_signed_rank_counts(n)
        k = int(round(r_plus))
        p = min(1.0, 2 * min(counts[k:].sum(), counts[: k + 1].sum()) / counts.sum())
        return PairedTestResult(statistic, float(p), "exact")

    reasons = []
    if n_zeros:
        reasons.append(f"{n_zeros} zero difference{'' if n_zeros == 1 else 's'} dropped")
    if has_ties:
        reasons.append("tied absolute differences")
    if reasons and n <= _WILCOXON_ENUMERATION_MAX_N:
        return PairedTestResult(statistic, _sign_flip_p(ranks, r_plus), "exact permutation",
                                "; ".join(reasons) + ": p from all sign flips")
    m = nonzero.size
    variance = (m * (m + 1) * (2 * m + 1) - (tie_sizes**3 - tie_sizes).sum() / 2) / 24
    z = (r_plus - m * (m + 1) / 4) / math.sqrt(variance)
    note = "; ".join(reasons) + ": normal approximation with tie correction" if reasons else None
    return PairedTestResult(statistic, math.erfc(abs(z) / math.sqrt(2)), "normal approximation", note)


def _regularized_incomplete_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b) by the continued fraction of Numerical Recipes (modified Lentz), for the t-test."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1) / (a + b + 2):  # the fraction converges fast only below this point
        return 1.0 - _regularized_incomplete_beta(b, a, 1.0 - x)
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, 10_000):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            fraction *= c * d
        if abs(c * d - 1.0) < 1e-16:
            break
    return math.exp(log_front) * fraction / a


def paired_ttest(a, b) -> PairedTestResult:
    """Two-sided paired t-test of mean(a - b) = 0 (as scipy.stats.ttest_rel, checked against it).

    p = I_{df/(df+t^2)}(df/2, 1/2), the t distribution's two tails.
    Edge cases: fewer than 2 cells -> NaN statistic and p with a reason.
    Differences all equal (zero variance): if they are all zero, statistic
    0.0 and p 1.0; otherwise t = +/-inf and p = 0.0, the limit of the test,
    with a note that it is not an exact probability.
    """
    a, b = _check_paired(a, b)
    differences = a - b
    n = differences.size
    if n < 2:
        return PairedTestResult(math.nan, math.nan, "none", _too_few_cells(n))
    if np.ptp(differences) == 0.0:
        shift = float(differences[0])
        if shift == 0.0:
            return PairedTestResult(0.0, 1.0, "paired t", "all differences are zero")
        return PairedTestResult(
            math.copysign(math.inf, shift),
            0.0,
            "paired t",
            f"every difference equals {shift:g}: zero variance makes t infinite; "
            "p = 0 is its limit, not an exact probability",
        )
    df = n - 1
    t = float(differences.mean() / (differences.std(ddof=1) / math.sqrt(n)))
    p = _regularized_incomplete_beta(df / 2, 0.5, df / (df + t * t))
    return PairedTestResult(t, min(1.0, p), "paired t")


def rank_biserial(a, b) -> float:
    """Matched-pairs rank-biserial correlation of a - b (Kerby 2014), in [-1, 1].

    (sum of ranks of positive differences - sum of ranks of negative
    differences) / sum of all ranks, ranking |differences| with midranks after
    dropping zeros as Wilcoxon does. +1: a beats b in every cell that differs.
    Returns 0.0 when every difference is zero, NaN for no cells.
    """
    a, b = _check_paired(a, b)
    differences = a - b
    if differences.size == 0:
        return math.nan
    nonzero = differences[differences != 0.0]
    if nonzero.size == 0:
        return 0.0
    ranks = midranks(np.abs(nonzero))
    favourable = ranks[nonzero > 0].sum()
    unfavourable = ranks[nonzero < 0].sum()
    return float((favourable - unfavourable) / ranks.sum())


def wins_ties_losses(a, b, tol: float = 0.0) -> tuple[int, int, int]:
    """Count cells where a beats b by more than ``tol``, is within ``tol``, or loses."""
    if tol < 0:
        raise ValueError(f"tol must be non-negative; got {tol}")
    a, b = _check_paired(a, b)
    differences = a - b
    wins = int(np.count_nonzero(differences > tol))
    losses = int(np.count_nonzero(differences < -tol))
    return wins, differences.size - wins - losses, losses


def bootstrap_median_ci(
    diffs, n_boot: int = 10000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the median of ``diffs``.

    Resamples cells with replacement ``n_boot`` times in one (n_boot, n)
    index draw from ``numpy.random.default_rng(seed)``, so the result is
    deterministic for a seed. Returns (NaN, NaN) for no values; one value v
    gives (v, v).
    """
    diffs = np.asarray(diffs, dtype=float)
    if diffs.ndim != 1:
        raise ValueError(f"diffs must be 1-D; got shape {diffs.shape}")
    if not np.isfinite(diffs).all():
        raise ValueError("diffs must be finite (found NaN or infinity)")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1; got {n_boot}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1; got {level}")
    if diffs.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    resampled = diffs[rng.integers(0, diffs.size, size=(n_boot, diffs.size))]
    medians = np.median(resampled, axis=1)
    low, high = np.quantile(medians, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(low), float(high)


def _json_number(value) -> float | None:
    """A plain float, or None where the value is undefined (NaN or infinite)."""
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass
class PairedSummary:
    """Across-cell comparison of per-cell values (e.g. AUCs) of model a against model b.

    Differences are a - b; "wins" are cells where a is higher. The median
    difference has a percentile bootstrap interval; the Wilcoxon signed-rank
    and paired t-tests are two-sided. Every value is a plain int, float, str or
    None, ready for JSON: an undefined number is None, never NaN, and ``notes``
    says why, along with test fallbacks. The Holm-adjusted p-values are set by
    a caller that tests several pairs (histcli.comparison); None otherwise.
    Field order is the column order of machine output.
    """

    n_cells: int
    mean_a: float | None = None
    mean_b: float | None = None
    median_delta: float | None = None
    median_delta_ci_low: float | None = None
    median_delta_ci_high: float | None = None
    wins: int = 0
    ties: int = 0
    losses: int = 0
    wilcoxon_statistic: float | None = None
    wilcoxon_p: float | None = None
    wilcoxon_method: str | None = None
    wilcoxon_p_holm: float | None = None
    ttest_statistic: float | None = None
    ttest_p: float | None = None
    ttest_p_holm: float | None = None
    rank_biserial: float | None = None
    notes: list[str] = field(default_factory=list)


def paired_summary(a, b, *, seed: int = 0, level: float = 0.95) -> PairedSummary:
    """The :class:`PairedSummary` of per-cell values ``a`` and ``b`` (bootstrap at ``level``, seeded)."""
    a, b = _check_paired(a, b)
    n = a.size
    differences = a - b
    wins, ties, losses = wins_ties_losses(a, b)
    summary = PairedSummary(n_cells=n, wins=wins, ties=ties, losses=losses)
    notes = summary.notes
    if n == 0:
        notes.append("0 cells: nothing to compare")
        return summary

    summary.mean_a = float(a.mean())
    summary.mean_b = float(b.mean())
    summary.median_delta = float(np.median(differences))
    if n < 2:
        # One difference has rank-biserial r = +-1 by definition: an effect size that says nothing.
        notes.append(_too_few_cells(n))
        notes.append("1 cell: no bootstrap interval for the median difference and no rank-biserial r")
        return summary

    summary.rank_biserial = rank_biserial(a, b)

    summary.median_delta_ci_low, summary.median_delta_ci_high = bootstrap_median_ci(differences, level=level,
                                                                                    seed=seed)
    wilcoxon = wilcoxon_signed_rank(a, b)
    summary.wilcoxon_statistic = _json_number(wilcoxon.statistic)
    summary.wilcoxon_p = _json_number(wilcoxon.p)
    summary.wilcoxon_method = wilcoxon.method
    if wilcoxon.note:
        notes.append(f"Wilcoxon: {wilcoxon.note}")

    ttest = paired_ttest(a, b)
    summary.ttest_statistic = _json_number(ttest.statistic)
    summary.ttest_p = _json_number(ttest.p)
    if ttest.note:
        notes.append(f"t-test: {ttest.note}")
    return summary
