"""Statistics for A/B experiments on retention offers.

Product compares offer variants (e.g. "pause 2 months", "30% off for 3 months", the model's policy) against a
control arm and against a no-offer holdout. This module holds the numbers behind those comparisons:

* proportions (e.g. the save rate) with Wilson intervals, and differences of proportions with Newcombe's
  interval and a pooled z-test;
* differences of means (e.g. revenue kept per customer, which is skewed: many zeros, a long tail) with a Welch
  interval or a bootstrap interval, and Welch's t-test;
* Holm's correction when several variants are compared with the same control;
* the sample-ratio-mismatch (SRM) check, which catches broken assignment before anyone reads the results;
* sample size and minimum detectable effect, for planning;
* "always-valid" intervals that may be looked at after every new customer without inflating false positives
  (ordinary 95% intervals may not: peeking at them until they exclude 0 finds an "effect" far more than 5% of
  the time).

Pure functions on plain numbers and numpy arrays; scipy is used wherever it has the method, and formulas are
written out (with their source) only where it does not.

Conventions: a `confidence` of 0.95 means a two-sided 95% interval; `alpha` is 1 - confidence. Differences are
always "first group minus second group" (treatment minus control when called that way). When there is not
enough data for an interval (no observations, one observation, zero variance) the bounds are NaN rather than an
exception, so that a dashboard can show "not enough data" for a young experiment.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

NAN = float("nan")

# Prior scale of the always-valid intervals (see `always_valid_difference`). For differences of rates (save
# rate, churn rate) an offer plausibly moves the rate by a few percentage points: a Normal(0, 0.05**2) mixture
# puts most of its weight on effects within +-10 points.
DEFAULT_TAU2_RATE = 0.05**2
# For means, the plausible effect is expressed in standard deviations of the metric: a tenth of one (a "small"
# effect in Cohen's terms is 0.2 SD). For a rate near 0.3 (SD about 0.46) this gives about the same 0.05 as above.
DEFAULT_TAU_SD_FRACTION = 0.1


@dataclass(frozen=True)
class Interval:
    """An estimate with a two-sided confidence interval [low, high]. Bounds are NaN when undefined."""

    estimate: float
    low: float
    high: float

    def as_dict(self) -> dict:
        """Plain floats, for JSON responses and reports."""
        return {"estimate": float(self.estimate), "low": float(self.low), "high": float(self.high)}


def _check_level(confidence: float, name: str = "confidence") -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {confidence}")


def _check_counts(successes: int, n: int) -> None:
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")


# --------------------------------------------------------------------------------------------------------------
# Proportions
# --------------------------------------------------------------------------------------------------------------


def wilson(successes: int, n: int, confidence: float = 0.95) -> Interval:
    """A proportion (e.g. save rate = saved / offered) with its Wilson score interval.

    `successes` out of `n` trials. The Wilson interval stays inside [0, 1] and keeps close to nominal coverage
    for small n and rates near 0 or 1, unlike the textbook "p +- 1.96 SE". n == 0 gives NaNs.
    """
    _check_level(confidence)
    _check_counts(successes, n)
    if n == 0:
        return Interval(NAN, NAN, NAN)
    ci = stats.binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return Interval(successes / n, float(ci.low), float(ci.high))


def newcombe_difference(s1: int, n1: int, s2: int, n2: int, confidence: float = 0.95) -> Interval:
    """Difference of two independent proportions p1 - p2 (s1/n1 - s2/n2) with Newcombe's hybrid score interval.

    This is "method 10" of Newcombe (1998), Interval estimation for the difference between independent
    proportions: comparison of eleven methods, Statistics in Medicine 17:873-890. It combines the Wilson
    intervals (l1, u1) and (l2, u2) of each proportion:
        low  = d - sqrt((p1 - l1)^2 + (u2 - p2)^2)
        high = d + sqrt((u1 - p1)^2 + (p2 - l2)^2)
    It behaves well for small samples and extreme rates. NaNs if either n is 0.
    """
    first = wilson(s1, n1, confidence)
    second = wilson(s2, n2, confidence)
    if n1 == 0 or n2 == 0:
        return Interval(NAN, NAN, NAN)
    p1, l1, u1 = first.estimate, first.low, first.high
    p2, l2, u2 = second.estimate, second.low, second.high
    d = p1 - p2
    low = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return Interval(d, low, high)


def two_proportion_p_value(s1: int, n1: int, s2: int, n2: int) -> float:
    """Two-sided p-value of the pooled two-proportion z-test of p1 == p2.

    z = (p1 - p2) / sqrt(p (1 - p) (1/n1 + 1/n2)) with the pooled rate p = (s1 + s2) / (n1 + n2). Returns 1.0
    when the test is undefined (an empty arm, or pooled rate 0 or 1: no evidence of a difference).
    """
    _check_counts(s1, n1)
    _check_counts(s2, n2)
    if n1 == 0 or n2 == 0:
        return 1.0
    pooled = (s1 + s2) / (n1 + n2)
    se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2))
    if se == 0.0:
        return 1.0
    z = (s1 / n1 - s2 / n2) / se
    return float(2.0 * stats.norm.sf(abs(z)))


# --------------------------------------------------------------------------------------------------------------
# Means
# --------------------------------------------------------------------------------------------------------------


def _as_sample(x) -> np.ndarray:
    return np.asarray(x, dtype=float).ravel()


def _too_small(x: np.ndarray, y: np.ndarray) -> Interval | None:
    """The answer for samples too small for an interval (an empty arm, or one observation), else None."""
    if x.size == 0 or y.size == 0:
        return Interval(NAN, NAN, NAN)
    if x.size < 2 or y.size < 2:
        return Interval(float(np.mean(x) - np.mean(y)), NAN, NAN)
    return None


def _welch_parts(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(difference of means, its variance var(x)/nx + var(y)/ny, Welch-Satterthwaite degrees of freedom)."""
    vx = np.var(x, ddof=1) / x.size
    vy = np.var(y, ddof=1) / y.size
    variance = float(vx + vy)
    df = variance**2 / (vx**2 / (x.size - 1) + vy**2 / (y.size - 1)) if variance > 0 else NAN
    return float(np.mean(x) - np.mean(y)), variance, float(df)


def _diff_of_means(a, b, axis=-1):
    return np.mean(a, axis=axis) - np.mean(b, axis=axis)


def mean_difference(
    x: np.ndarray,
    y: np.ndarray,
    confidence: float = 0.95,
    method: str = "welch",
    rng=None,
    n_resamples: int = 2000,
) -> Interval:
    """Difference of means mean(x) - mean(y) of two independent samples (e.g. revenue per customer by arm).

    method "welch": mean difference +- t * sqrt(var(x)/nx + var(y)/ny), with the t quantile at the
    Welch-Satterthwaite degrees of freedom (variances not assumed equal). Fast; relies on the central limit
    theorem, which is fine for skewed revenue once each arm has a few hundred customers.
    method "bootstrap": scipy.stats.bootstrap, BCa interval (bias-corrected and accelerated) from `n_resamples`
    resamples of each arm separately; falls back to the percentile interval when BCa is undefined on degenerate
    data. `rng` is a seed or numpy Generator, for reproducible results. On skewed revenue with a few hundred
    customers per arm the bootstrap is not more accurate than Welch (tests: BCa covered 93% vs Welch 95%).

    With fewer than 2 observations in an arm, or zero variance in both, the bounds are NaN (the estimate is
    still given when both arms have data).
    """
    _check_level(confidence)
    if method not in ("welch", "bootstrap"):
        raise ValueError(f"method must be 'welch' or 'bootstrap', got {method!r}")
    x, y = _as_sample(x), _as_sample(y)
    if (small := _too_small(x, y)) is not None:
        return small
    estimate, variance, df = _welch_parts(x, y)
    if not variance > 0:
        return Interval(estimate, NAN, NAN)
    if method == "welch":
        half = stats.t.ppf(0.5 + confidence / 2.0, df) * math.sqrt(variance)
        return Interval(estimate, estimate - half, estimate + half)

    def run(ci_method: str):
        return stats.bootstrap(
            (x, y),
            _diff_of_means,
            n_resamples=n_resamples,
            vectorized=True,
            paired=False,
            confidence_level=confidence,
            method=ci_method,
            rng=rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng),
        ).confidence_interval

    # BCa is undefined when e.g. every resample lands on the same side of the estimate; scipy then warns and
    # returns NaN. Catch that and use the plain percentile interval instead.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", stats.DegenerateDataWarning)
        warnings.simplefilter("always", RuntimeWarning)
        ci = run("BCa")
    handled = (stats.DegenerateDataWarning, RuntimeWarning)
    for w in caught:  # pass on anything unrelated
        if not issubclass(w.category, handled):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    bca_failed = any(issubclass(w.category, handled) for w in caught)
    if bca_failed or not (np.isfinite(ci.low) and np.isfinite(ci.high)):
        ci = run("percentile")
    return Interval(estimate, float(ci.low), float(ci.high))


def mean_difference_p_value(x, y) -> float:
    """Two-sided p-value of Welch's t-test of mean(x) == mean(y) (scipy.stats.ttest_ind, equal_var=False).

    Returns 1.0 when undefined: fewer than 2 observations in an arm, or zero variance in both.
    """
    x, y = _as_sample(x), _as_sample(y)
    if x.size < 2 or y.size < 2:
        return 1.0
    if not _welch_parts(x, y)[1] > 0:
        return 1.0
    return float(stats.ttest_ind(x, y, equal_var=False).pvalue)


# --------------------------------------------------------------------------------------------------------------
# Several comparisons, assignment health
# --------------------------------------------------------------------------------------------------------------


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the same order as the input.

    Use when several variants are each compared with the control: reject the variants whose adjusted p-value is
    below alpha, and the chance of any false "winner" stays <= alpha. Step-down procedure of Holm (1979), A
    simple sequentially rejective multiple test procedure, Scand J Statist 6:65-70: with the m p-values sorted
    ascending, adjusted_(i) = max over j <= i of min(1, (m - j + 1) p_(j)) (i, j counted from 1).
    Raises ValueError for p-values outside [0, 1] or NaN.
    """
    p = np.asarray(p_values, dtype=float)
    if p.size == 0:
        return []
    if np.any(np.isnan(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError(f"p-values must be in [0, 1], got {list(p_values)}")
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted_sorted = np.maximum.accumulate(scaled)
    adjusted = np.empty(m)
    adjusted[order] = adjusted_sorted
    return [float(v) for v in adjusted]


def srm_check(observed: dict[str, int], expected_share: dict[str, float], alarm_p: float = 0.001) -> dict:
    """Sample-ratio mismatch check: are the arm sizes consistent with the designed split?

    `observed` maps arm name -> number of customers assigned; `expected_share` maps arm name -> designed share
    (shares are renormalised to sum to 1, so {"control": 1, "offer": 1} means 50/50). An arm in the design but
    missing from `observed` counts 0. Chi-square goodness-of-fit test (scipy.stats.chisquare). A p-value below
    `alarm_p` (default 0.001, strict because the check runs on every experiment, every day) means the
    assignment or the logging is broken and the experiment's results must not be trusted.

    Returns {"observed": {arm: count}, "expected": {arm: expected count}, "chi2", "p_value", "alarm"}.
    No customers yet: p_value 1.0, no alarm. An arm with share 0 that received customers: chi2 inf, alarm.
    """
    unknown = set(observed) - set(expected_share)
    if unknown:
        raise ValueError(f"arms without an expected share: {sorted(unknown)}")
    names = list(expected_share)
    counts = np.array([int(observed.get(name, 0)) for name in names], dtype=float)
    shares = np.array([float(expected_share[name]) for name in names])
    if np.any(counts < 0) or np.any(shares < 0) or not shares.sum() > 0:
        raise ValueError("counts and shares must be >= 0, with at least one positive share")
    total = counts.sum()
    expected = total * shares / shares.sum()
    result = {
        "observed": {name: int(c) for name, c in zip(names, counts, strict=True)},
        "expected": {name: float(e) for name, e in zip(names, expected, strict=True)},
    }
    if np.any((shares == 0) & (counts > 0)):
        return {**result, "chi2": math.inf, "p_value": 0.0, "alarm": True}
    used = shares > 0
    if total == 0 or used.sum() < 2:
        return {**result, "chi2": 0.0, "p_value": 1.0, "alarm": False}
    test = stats.chisquare(counts[used], expected[used])
    p_value = float(test.pvalue)
    return {**result, "chi2": float(test.statistic), "p_value": p_value, "alarm": bool(p_value < alarm_p)}


# --------------------------------------------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------------------------------------------


def _n_control_exact(p_control: float, mde: float, alpha: float, power: float, ratio: float) -> float:
    """Unrounded control-arm size of `sample_size_two_proportions`."""
    p1, p2 = p_control, p_control + mde
    p_bar = (p1 + ratio * p2) / (1.0 + ratio)
    z_alpha = stats.norm.ppf(1.0 - alpha / 2.0)
    z_beta = stats.norm.ppf(power)
    under_h0 = z_alpha * math.sqrt(p_bar * (1.0 - p_bar) * (1.0 + 1.0 / ratio))
    under_h1 = z_beta * math.sqrt(p1 * (1.0 - p1) + p2 * (1.0 - p2) / ratio)
    return (under_h0 + under_h1) ** 2 / mde**2


def sample_size_two_proportions(
    p_control: float, mde: float, alpha: float = 0.05, power: float = 0.8, ratio: float = 1.0
) -> int:
    """Customers needed in the CONTROL arm to detect an absolute change `mde` in a rate (two-sided test).

    `p_control` is the expected control rate (e.g. 0.30 save rate), `mde` the absolute difference to detect
    (0.05 = 30% -> 35%), `ratio` = treatment size / control size (the treatment arm needs ratio * n). Normal
    approximation without continuity correction, pooled variance under H0 and unpooled under H1 (Fleiss, Levin,
    Paik, Statistical Methods for Rates and Proportions, 3rd ed. 2003, eq. 4.14 without the correction; Chow,
    Shao, Wang, Sample Size Calculations in Clinical Research, 2008, sec. 4.2):
        n = [z_{1-alpha/2} sqrt(p_bar q_bar (1 + 1/r)) + z_{power} sqrt(p1 q1 + p2 q2 / r)]^2 / mde^2,
        p_bar = (p1 + r p2) / (1 + r),
    rounded up. Raises ValueError for impossible inputs.
    """
    if not 0.0 < p_control < 1.0:
        raise ValueError(f"p_control must be in (0, 1), got {p_control}")
    if mde == 0 or not 0.0 < p_control + mde < 1.0:
        raise ValueError(f"mde must be non-zero with p_control + mde in (0, 1), got mde={mde}")
    _check_level(alpha, "alpha")
    _check_level(power, "power")
    if not ratio > 0:
        raise ValueError(f"ratio must be > 0, got {ratio}")
    n = _n_control_exact(p_control, mde, alpha, power, ratio)
    # Guard against float noise pushing an exact integer (e.g. 1376.0000000001) up by one.
    return int(math.ceil(n - 1e-9))


def minimum_detectable_effect(
    p_control: float, n_per_arm: int, alpha: float = 0.05, power: float = 0.8
) -> float:
    """Smallest absolute increase of a rate detectable with `n_per_arm` customers in each of two arms.

    The inverse of `sample_size_two_proportions` (ratio 1), solved numerically with scipy.optimize.brentq.
    Only increases are considered (a decrease of the same size needs a slightly different n). NaN when even a
    rise to a rate of 1 is not detectable with that n.
    """
    if not 0.0 < p_control < 1.0:
        raise ValueError(f"p_control must be in (0, 1), got {p_control}")
    if not n_per_arm > 0:
        raise ValueError(f"n_per_arm must be > 0, got {n_per_arm}")
    _check_level(alpha, "alpha")
    _check_level(power, "power")

    def excess(mde: float) -> float:
        return _n_control_exact(p_control, mde, alpha, power, 1.0) - n_per_arm

    lo, hi = 1e-9, (1.0 - p_control) * (1.0 - 1e-9)
    if excess(hi) > 0:
        return NAN
    return float(optimize.brentq(excess, lo, hi, xtol=1e-12))


# --------------------------------------------------------------------------------------------------------------
# Always-valid (sequential) intervals
# --------------------------------------------------------------------------------------------------------------


def always_valid_difference(
    estimate: float, variance: float, alpha: float = 0.05, tau2: float | None = None
) -> Interval:
    """Always-valid confidence interval for a difference, safe to look at after every new observation.

    `estimate` is the current difference estimate, assumed ~ Normal(delta, variance), and `variance` its
    variance (e.g. var1/n1 + var2/n2). With ordinary intervals, checking repeatedly and stopping when 0 is
    excluded gives far more than alpha false positives. These intervals form a confidence sequence: the chance
    that the interval EVER excludes the true delta, over all looks, is <= alpha. The price is a wider interval.

    It is the mixture sequential probability ratio test (mSPRT) with a Normal(0, tau2) mixture over delta,
    inverted into an interval (Robbins 1970, Statistical methods related to the law of the iterated logarithm,
    Ann Math Statist 41:1397; Johari, Koomen, Pekelis, Walsh 2017, Peeking at A/B tests, KDD, and Johari,
    Pekelis, Walsh, Always valid inference, arXiv:1512.04922). The test rejects delta0 when
    sqrt(V/(V+tau2)) exp(tau2 (estimate - delta0)^2 / (2 V (V+tau2))) >= 1/alpha, i.e. outside
        estimate +- sqrt( V (V + tau2) / tau2 * ( log((V + tau2) / V) + 2 log(1/alpha) ) ).

    `tau2` is the variance of plausible true effects; the interval is narrowest when the effect size is about
    sqrt(tau2) and any fixed choice keeps validity. Default DEFAULT_TAU2_RATE = 0.05**2, suited to differences
    of rates; pass your own for other scales (`always_valid_means` does). Choose tau2 before the experiment.
    To report the tightest valid range, callers may intersect the intervals of successive looks.
    NaN bounds when the variance is not positive (no data or no spread yet).
    """
    _check_level(alpha, "alpha")
    tau2 = DEFAULT_TAU2_RATE if tau2 is None else float(tau2)
    if not tau2 > 0:
        raise ValueError(f"tau2 must be > 0, got {tau2}")
    if not (math.isfinite(estimate) and math.isfinite(variance) and variance > 0):
        return Interval(float(estimate), NAN, NAN)
    v = float(variance)
    half = math.sqrt(v * (v + tau2) / tau2 * (math.log((v + tau2) / v) + 2.0 * math.log(1.0 / alpha)))
    return Interval(float(estimate), estimate - half, estimate + half)


def always_valid_proportions(
    s1: int, n1: int, s2: int, n2: int, alpha: float = 0.05, tau2: float | None = None
) -> Interval:
    """Always-valid interval for p1 - p2 = s1/n1 - s2/n2 (see `always_valid_difference`).

    Variance p1(1-p1)/n1 + p2(1-p2)/n2, with each p smoothed to (s + 0.5)/(n + 1) so that it is never 0 (an arm
    with 0 or all successes still has uncertainty). `tau2` default: DEFAULT_TAU2_RATE = 0.05**2.
    NaNs when an arm is empty.
    """
    _check_counts(s1, n1)
    _check_counts(s2, n2)
    if n1 == 0 or n2 == 0:
        return Interval(NAN, NAN, NAN)
    q1 = (s1 + 0.5) / (n1 + 1.0)
    q2 = (s2 + 0.5) / (n2 + 1.0)
    variance = q1 * (1.0 - q1) / n1 + q2 * (1.0 - q2) / n2
    return always_valid_difference(s1 / n1 - s2 / n2, variance, alpha, tau2)


def always_valid_means(x, y, alpha: float = 0.05, tau2: float | None = None) -> Interval:
    """Always-valid interval for mean(x) - mean(y) (see `always_valid_difference`).

    Variance var(x)/nx + var(y)/ny. `tau2` default: (0.1 * SD)^2, with SD the standard deviation of x and y
    pooled together (DEFAULT_TAU_SD_FRACTION): a plausible effect is a tenth of a standard deviation of the
    metric. That default is estimated from the data seen so far; it settles quickly, but for a strict
    guarantee fix tau2 from pre-experiment data and pass it. NaN bounds with fewer than 2 observations in an
    arm or no spread.
    """
    x, y = _as_sample(x), _as_sample(y)
    if (small := _too_small(x, y)) is not None:
        return small
    estimate, variance, _ = _welch_parts(x, y)
    if tau2 is None:
        sd = float(np.std(np.concatenate([x, y]), ddof=1))
        if not sd > 0:
            return Interval(estimate, NAN, NAN)
        tau2 = (DEFAULT_TAU_SD_FRACTION * sd) ** 2
    return always_valid_difference(estimate, variance, alpha, tau2)
