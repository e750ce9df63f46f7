"""Tests of retention.stats: published values, coverage of the intervals over repeated simulations with a known
truth, validity of the always-valid intervals under peeking, sample size against simulated power, SRM alarm
rates, and edge cases.

Simulation tests use fixed seeds. Their bands allow for binomial noise: with S simulations, a measured rate
around r has a standard error sqrt(r (1 - r) / S) (0.0049 for coverage 0.95 and S = 2000), and each band is at
least about 3.5 standard errors wide on either side, while a wrong method (e.g. a z-interval that ignores the
variance of one arm, or an uncorrected peeking test) lands well outside it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from retention import stats as rs
from retention.stats import (
    Interval,
    always_valid_difference,
    always_valid_means,
    always_valid_proportions,
    holm,
    mean_difference,
    mean_difference_p_value,
    minimum_detectable_effect,
    newcombe_difference,
    sample_size_two_proportions,
    srm_check,
    two_proportion_p_value,
    wilson,
)

Z95 = stats.norm.ppf(0.975)


def covers(interval: Interval, truth: float) -> bool:
    return interval.low <= truth <= interval.high


# ----------------------------------------------------------------------------------------------------------------
# Known values
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("successes", "n", "low", "high"),
    [
        # Newcombe (1998a), Two-sided confidence intervals for the single proportion: comparison of seven methods,
        # Stat Med 17:857-872, Table I, method 3 (Wilson score interval without continuity correction).
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0000, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_published_values(successes, n, low, high):
    ci = wilson(successes, n)
    assert ci.estimate == pytest.approx(successes / n)
    assert ci.low == pytest.approx(low, abs=5e-5)
    assert ci.high == pytest.approx(high, abs=5e-5)


@pytest.mark.parametrize(("successes", "n", "confidence"), [(7, 40, 0.95), (300, 1000, 0.9), (3, 3, 0.99)])
def test_wilson_matches_closed_form(successes, n, confidence):
    # Wilson (1927): (p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n), computed by hand here.
    z = stats.norm.ppf(0.5 + confidence / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    ci = wilson(successes, n, confidence)
    assert ci.low == pytest.approx(centre - half, abs=1e-12)
    assert ci.high == pytest.approx(centre + half, abs=1e-12)


@pytest.mark.parametrize(
    ("s1", "n1", "s2", "n2", "low", "high"),
    [
        # Newcombe (1998b), Interval estimation for the difference between independent proportions: comparison
        # of eleven methods, Stat Med 17:873-890, Table II, method 10 (hybrid score), examples (a)-(f).
        (56, 70, 48, 80, 0.0524, 0.3339),
        (9, 10, 3, 10, 0.1705, 0.8090),
        (6, 7, 2, 7, 0.0582, 0.8062),
        (5, 56, 0, 29, -0.0381, 0.1926),
        (0, 10, 0, 20, -0.1611, 0.2775),
        (10, 10, 0, 20, 0.6791, 1.0000),
    ],
)
def test_newcombe_published_values(s1, n1, s2, n2, low, high):
    ci = newcombe_difference(s1, n1, s2, n2)
    assert ci.estimate == pytest.approx(s1 / n1 - s2 / n2)
    assert ci.low == pytest.approx(low, abs=5e-5)
    assert ci.high == pytest.approx(high, abs=5e-5)


def test_two_proportion_p_value_known_value():
    # Pooled z-test by hand for 56/70 vs 48/80: pooled 104/150, z = 0.2 / sqrt(p q (1/70 + 1/80)) = 2.6502.
    pooled = 104 / 150
    z = (56 / 70 - 48 / 80) / math.sqrt(pooled * (1 - pooled) * (1 / 70 + 1 / 80))
    assert z == pytest.approx(2.6502, abs=1e-4)
    p = two_proportion_p_value(56, 70, 48, 80)
    assert p == pytest.approx(2 * stats.norm.sf(z), rel=1e-12)
    assert p == pytest.approx(0.00805, abs=1e-5)
    # The pooled z-test is the uncorrected chi-square test of the 2x2 table (z^2 = chi2).
    table = [[56, 14], [48, 32]]
    assert p == pytest.approx(stats.chi2_contingency(table, correction=False).pvalue, rel=1e-9)


def test_welch_interval_and_p_value_match_scipy_ttest():
    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, 10.0, size=57)
    y = rng.gamma(2.0, 12.0, size=83)
    ci = mean_difference(x, y, confidence=0.9)
    ref = stats.ttest_ind(x, y, equal_var=False)
    ref_ci = ref.confidence_interval(confidence_level=0.9)
    assert ci.estimate == pytest.approx(x.mean() - y.mean())
    assert ci.low == pytest.approx(ref_ci.low, rel=1e-10)
    assert ci.high == pytest.approx(ref_ci.high, rel=1e-10)
    assert mean_difference_p_value(x, y) == pytest.approx(ref.pvalue, rel=1e-12)


def test_holm_worked_example():
    # Sorted: 0.005, 0.01, 0.03, 0.04 -> times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max
    # 0.02, 0.03, 0.06, 0.06; back in input order:
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02], abs=1e-15)
    # Capped at 1 and monotone; one test is not adjusted; ties handled.
    assert holm([0.5, 0.4, 0.3]) == pytest.approx([0.9, 0.9, 0.9])
    assert holm([0.5, 0.6, 0.02]) == pytest.approx([1.0, 1.0, 0.06])
    assert holm([0.02]) == [0.02]
    assert holm([0.01, 0.01]) == pytest.approx([0.02, 0.02])
    assert holm([]) == []
    with pytest.raises(ValueError):
        holm([0.1, float("nan")])


def test_holm_properties_random():
    rng = np.random.default_rng(1)
    for _ in range(50):
        p = rng.random(int(rng.integers(1, 12))) ** 3
        adj = np.array(holm(list(p)))
        order = np.argsort(p)
        assert np.all(adj >= p) and np.all(adj <= 1)
        assert np.all(np.diff(adj[order]) >= -1e-15)  # monotone in the order of the raw p-values
        assert adj[order[0]] == pytest.approx(min(1.0, p.size * p.min()))  # smallest: Bonferroni


def test_srm_balanced_no_alarm():
    result = srm_check({"control": 10_030, "pause_2m": 9_970}, {"control": 0.5, "pause_2m": 0.5})
    assert result["alarm"] is False
    assert result["expected"] == {"control": 10_000.0, "pause_2m": 10_000.0}
    assert result["observed"] == {"control": 10_030, "pause_2m": 9_970}
    assert result["chi2"] == pytest.approx(2 * 30**2 / 10_000)
    assert result["p_value"] == pytest.approx(stats.chi2.sf(0.18, df=1))


def test_srm_injected_mismatch_alarm():
    # 50/50 design, 10,000 vs 10,600: chi2 = 2 * 300^2 / 10,300 = 17.48, p = 2.9e-5.
    result = srm_check({"control": 10_000, "offer": 10_600}, {"control": 1, "offer": 1})
    assert result["chi2"] == pytest.approx(17.4757, abs=1e-4)
    assert result["p_value"] == pytest.approx(2.91e-5, rel=1e-2)
    assert result["alarm"] is True


def test_srm_sensitivity_at_20k_per_arm():
    # A 2-point skew of the split (51/49 instead of 50/50) at about 20k per arm: alarm (chi2 = 16, p = 6e-5).
    skewed = srm_check({"control": 19_600, "offer": 20_400}, {"control": 0.5, "offer": 0.5})
    assert skewed["chi2"] == pytest.approx(16.0)
    assert skewed["alarm"] is True
    # Limit of the strict threshold: an arm only 2% larger than the other (20,400 vs 20,000) gives p = 0.047,
    # not an alarm at p < 0.001; that takes about 3.3% at this size.
    small = srm_check({"control": 20_000, "offer": 20_400}, {"control": 0.5, "offer": 0.5})
    assert small["p_value"] == pytest.approx(0.0466, abs=1e-3)
    assert small["alarm"] is False


# ----------------------------------------------------------------------------------------------------------------
# Coverage over repeated simulations
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("p", "n"), [(0.3, 200), (0.1, 500), pytest.param(0.05, 1000, marks=pytest.mark.slow),
                                      (0.02, 300)])
def test_wilson_coverage_exact(p, n):
    # Exact coverage (no simulation noise): sum of Binomial(n, p) probabilities of the outcomes whose interval
    # contains p. Measured: 0.9466, 0.9563, 0.9504, 0.9424.
    ks = np.arange(n + 1)
    pmf = stats.binom.pmf(ks, n, p)
    coverage = sum(pmf[k] for k in ks if covers(wilson(int(k), n), p))
    assert 0.93 <= coverage <= 0.97


def test_wilson_coverage_simulated():
    # 10,000 simulated samples of 200 at p = 0.3 (cheap: one interval per distinct count). The simulated coverage
    # must agree with the exact one (0.9466, see above) within 4 standard errors (0.0022). Measured: 0.9450.
    rng = np.random.default_rng(2)
    p, n, sims = 0.3, 200, 10_000
    successes = rng.binomial(n, p, size=sims)
    cache = {k: wilson(int(k), n) for k in np.unique(successes)}
    coverage = np.mean([covers(cache[k], p) for k in successes])
    assert 0.93 <= coverage <= 0.97
    assert abs(coverage - 0.9466) <= 4 * math.sqrt(0.95 * 0.05 / sims)


@pytest.mark.parametrize(("p1", "n1", "p2", "n2"), [(0.30, 400, 0.30, 400), (0.36, 300, 0.28, 500)])
@pytest.mark.slow
def test_newcombe_coverage(p1, n1, p2, n2):
    # A/A and A/B (unequal arms); 2000 simulations each. Measured: 0.9515 and 0.9445.
    # One interval per distinct pair of counts (about half the simulations repeat one).
    rng = np.random.default_rng(3)
    sims = 2000
    s1 = rng.binomial(n1, p1, size=sims)
    s2 = rng.binomial(n2, p2, size=sims)
    pairs = list(zip(s1.tolist(), s2.tolist(), strict=True))
    cache = {(a, b): newcombe_difference(a, n1, b, n2) for a, b in set(pairs)}
    hits = [covers(cache[pair], p1 - p2) for pair in pairs]
    assert 0.93 <= np.mean(hits) <= 0.97


ZERO_SHARE = 0.4
LOGNORMAL_MU, LOGNORMAL_SIGMA = 3.0, 1.0


def revenue(rng, zero_share: float, scale: float, shape: tuple[int, int]) -> np.ndarray:
    """Revenue-like skewed amounts: 0 with probability `zero_share`, else scale * lognormal(3, 1)."""
    amounts = scale * rng.lognormal(LOGNORMAL_MU, LOGNORMAL_SIGMA, size=shape)
    return np.where(rng.random(shape) < zero_share, 0.0, amounts)


def revenue_mean(zero_share: float, scale: float) -> float:
    return (1 - zero_share) * scale * math.exp(LOGNORMAL_MU + LOGNORMAL_SIGMA**2 / 2)


# A/A, and A/B where the offer keeps more customers (fewer zeros) but at a discount (amounts x 0.9).
MEAN_SCENARIOS = [((0.4, 1.0), (0.4, 1.0)), ((0.3, 0.9), (0.4, 1.0))]


@pytest.mark.parametrize(("treatment", "control"), MEAN_SCENARIOS)
def test_welch_coverage_skewed_revenue(treatment, control):
    # 2000 simulations, 300 vs 250 customers. Measured: 0.9615 (A/A) and 0.9590 (A/B)
    # (over 20,000 simulations with other seeds: 0.951 and 0.952).
    rng = np.random.default_rng(4)
    sims = 2000
    x = revenue(rng, *treatment, shape=(sims, 300))
    y = revenue(rng, *control, shape=(sims, 250))
    truth = revenue_mean(*treatment) - revenue_mean(*control)
    hits = [covers(mean_difference(x[i], y[i]), truth) for i in range(sims)]
    assert 0.93 <= np.mean(hits) <= 0.97


@pytest.mark.slow
def test_bootstrap_coverage_skewed_revenue():
    # BCa bootstrap, A/B scenario, 1000 vs 800 customers, 300 simulations with 999 resamples each (to keep the
    # run time down). With 300 simulations the standard error of the coverage is 0.013, hence the looser band
    # 0.91-0.98. Measured: 0.933. (On this skewed metric BCa under-covers at a few hundred per arm:
    # about 0.93 at 300 vs 250 over 2000 simulations, while Welch gives 0.955; it reaches ~0.945 at 1000 vs 800.)
    rng = np.random.default_rng(5)
    sims = 300
    treatment, control = MEAN_SCENARIOS[1]
    x = revenue(rng, *treatment, shape=(sims, 1000))
    y = revenue(rng, *control, shape=(sims, 800))
    truth = revenue_mean(*treatment) - revenue_mean(*control)
    hits = [
        covers(mean_difference(x[i], y[i], method="bootstrap", rng=rng, n_resamples=999), truth)
        for i in range(sims)
    ]
    assert 0.91 <= np.mean(hits) <= 0.98


def test_bootstrap_close_to_welch_on_large_sample():
    rng = np.random.default_rng(6)
    x = revenue(rng, 0.3, 0.9, shape=(2000,))
    y = revenue(rng, 0.4, 1.0, shape=(2000,))
    boot = mean_difference(x, y, method="bootstrap", rng=7, n_resamples=2000)
    welch = mean_difference(x, y)
    assert boot.estimate == welch.estimate
    width = welch.high - welch.low
    assert abs(boot.low - welch.low) < 0.1 * width
    assert abs(boot.high - welch.high) < 0.1 * width
    # Reproducible with a seed.
    assert mean_difference(x, y, method="bootstrap", rng=7, n_resamples=2000) == boot


def test_bootstrap_falls_back_to_percentile_when_bca_fails(monkeypatch):
    # BCa is undefined on some degenerate data sets; scipy then warns and returns NaN. Simulate exactly that.
    real_bootstrap = stats.bootstrap
    methods = []

    def flaky_bootstrap(*args, method="BCa", **kwargs):
        methods.append(method)
        if method == "BCa":
            import warnings

            warnings.warn("BCa undefined", stats.DegenerateDataWarning, stacklevel=2)
            result = real_bootstrap(*args, method="percentile", **kwargs)
            result.confidence_interval = type(result.confidence_interval)(np.nan, np.nan)
            return result
        return real_bootstrap(*args, method=method, **kwargs)

    monkeypatch.setattr(rs.stats, "bootstrap", flaky_bootstrap)
    ci = mean_difference([0.0, 0.0, 1.0, 3.0], [0.0, 2.0, 2.0], method="bootstrap", rng=0, n_resamples=500)
    assert methods == ["BCa", "percentile"]
    assert np.isfinite(ci.low) and np.isfinite(ci.high) and ci.low <= ci.estimate <= ci.high


# ----------------------------------------------------------------------------------------------------------------
# Sequential validity of the always-valid intervals
# ----------------------------------------------------------------------------------------------------------------

STREAMS, PER_ARM, EVERY = 500, 5000, 100


def peek_rates(rng, p1: float, p2: float, streams: int):
    """Cumulative successes of two arms of Bernoulli streams, at each look (every EVERY customers per arm)."""
    looks = PER_ARM // EVERY
    s1 = np.cumsum(rng.binomial(EVERY, p1, size=(streams, looks)), axis=1)
    s2 = np.cumsum(rng.binomial(EVERY, p2, size=(streams, looks)), axis=1)
    n = EVERY * np.arange(1, looks + 1)
    return s1, s2, n


@pytest.mark.slow
def test_always_valid_proportions_survive_peeking_under_aa():
    # 500 A/A streams of up to 5000 customers per arm at a 30% rate, looked at after every 100 per arm (50 looks).
    # Measured: the always-valid interval ever excludes 0 in 2.8% of the streams (<= 5% guaranteed); the
    # ordinary 95% interval (Wald, same estimate and variance) in 32.8%, the pooled z-test at p < 0.05 in 32.6%;
    # at the last look alone, the ordinary interval excludes 0 in 5.6%.
    rng = np.random.default_rng(8)
    s1, s2, n = peek_rates(rng, 0.3, 0.3, STREAMS)
    valid_ever = np.zeros(STREAMS, dtype=bool)
    z_test_ever = np.zeros(STREAMS, dtype=bool)
    for i in range(STREAMS):
        for j, m in enumerate(n):
            a, b = int(s1[i, j]), int(s2[i, j])
            ci = always_valid_proportions(a, int(m), b, int(m))
            valid_ever[i] |= not covers(ci, 0.0)
            z_test_ever[i] |= two_proportion_p_value(a, int(m), b, int(m)) < 0.05
    # The ordinary fixed-horizon interval on the same data, vectorised: estimate +- 1.96 sqrt(variance).
    q1, q2 = (s1 + 0.5) / (n + 1), (s2 + 0.5) / (n + 1)
    se = np.sqrt(q1 * (1 - q1) / n + q2 * (1 - q2) / n)
    wald_ever = np.any(np.abs(s1 / n - s2 / n) > Z95 * se, axis=1)
    assert valid_ever.mean() <= 0.065
    assert wald_ever.mean() > 0.15
    assert z_test_ever.mean() > 0.15
    # The ordinary interval is right at a single, fixed look (the last): it excludes 0 about 5% of the time.
    assert 0.02 <= np.mean(np.abs(s1[:, -1] - s2[:, -1]) / n[-1] > Z95 * se[:, -1]) <= 0.08


def test_always_valid_proportions_detect_a_real_effect():
    # 30% -> 35%: the always-valid interval excludes 0 (on the right side) in most streams within 5000 per arm,
    # and it (almost) never wrongly says "worse". Measured: 99.5% detected, 0 wrong-side.
    rng = np.random.default_rng(9)
    streams = 200
    s1, s2, n = peek_rates(rng, 0.35, 0.30, streams)
    detected = np.zeros(streams, dtype=bool)
    wrong_side = np.zeros(streams, dtype=bool)
    for i in range(streams):
        for j, m in enumerate(n):
            ci = always_valid_proportions(int(s1[i, j]), int(m), int(s2[i, j]), int(m))
            detected[i] |= ci.low > 0
            wrong_side[i] |= ci.high < 0
    assert detected.mean() >= 0.85
    assert wrong_side.mean() <= 0.01


@pytest.mark.slow
def test_always_valid_means_survive_peeking_under_aa():
    # Skewed revenue, 300 A/A streams of up to 3000 per arm, looks every 100 (30 looks), default tau2.
    # Measured: always-valid ever excludes 0 in 0.7%; the ordinary Welch interval in 31.0%.
    rng = np.random.default_rng(10)
    streams, per_arm = 300, 3000
    x = revenue(rng, 0.4, 1.0, shape=(streams, per_arm))
    y = revenue(rng, 0.4, 1.0, shape=(streams, per_arm))
    valid_ever = np.zeros(streams, dtype=bool)
    welch_ever = np.zeros(streams, dtype=bool)
    for i in range(streams):
        for m in range(EVERY, per_arm + 1, EVERY):
            valid_ever[i] |= not covers(always_valid_means(x[i, :m], y[i, :m]), 0.0)
            welch_ever[i] |= not covers(mean_difference(x[i, :m], y[i, :m]), 0.0)
    assert valid_ever.mean() <= 0.065
    assert welch_ever.mean() > 0.15


def test_always_valid_difference_formula_and_shape():
    # Half-width by hand for V = 1e-4, tau2 = 0.0025, alpha = 0.05:
    # sqrt(1e-4 * 0.0026 / 0.0025 * (log(26) + 2 log 20)) = sqrt(1.04e-4 * 9.24966) = 0.0310154.
    ci = always_valid_difference(0.01, 1e-4)
    assert ci.high - ci.estimate == pytest.approx(0.0310154, abs=1e-7)
    assert ci.estimate - ci.low == pytest.approx(ci.high - ci.estimate)
    # Wider than the fixed-horizon interval, narrowing as the variance shrinks (more data).
    widths = [always_valid_difference(0.0, v).high for v in (1e-3, 1e-4, 1e-5, 1e-6)]
    assert all(w > Z95 * math.sqrt(v) for w, v in zip(widths, (1e-3, 1e-4, 1e-5, 1e-6), strict=True))
    assert widths == sorted(widths, reverse=True)
    with pytest.raises(ValueError):
        always_valid_difference(0.0, 1e-4, tau2=0.0)


# ----------------------------------------------------------------------------------------------------------------
# Sample size and minimum detectable effect
# ----------------------------------------------------------------------------------------------------------------


def test_sample_size_textbook_value():
    # 30% -> 35%, alpha 0.05 two-sided, power 0.8: p_bar = 0.325,
    # n = (1.95996 sqrt(2 * 0.325 * 0.675) + 0.84162 sqrt(0.3 * 0.7 + 0.35 * 0.65))^2 / 0.05^2 = 1376.3 -> 1377.
    by_hand = (
        Z95 * math.sqrt(2 * 0.325 * 0.675) + stats.norm.ppf(0.8) * math.sqrt(0.21 + 0.2275)
    ) ** 2 / 0.0025
    assert by_hand == pytest.approx(1376.30, abs=0.01)
    assert sample_size_two_proportions(0.30, 0.05) == 1377
    # More power, smaller alpha or a smaller effect need more; a decrease is also handled.
    assert sample_size_two_proportions(0.30, 0.05, power=0.9) > 1377
    assert sample_size_two_proportions(0.30, 0.05, alpha=0.01) > 1377
    assert sample_size_two_proportions(0.30, 0.025) > 4 * 1300
    assert sample_size_two_proportions(0.30, -0.05) > 0


@pytest.mark.parametrize(("p_control", "mde", "ratio"), [(0.30, 0.05, 1.0), (0.20, 0.04, 2.0)])
def test_sample_size_gives_the_promised_power(p_control, mde, ratio):
    # 2000 simulated experiments at the computed size, pooled z-test at alpha 0.05.
    # Measured power: 0.805 (30% -> 35%, 1377 per arm) and 0.802 (20% -> 24%, 1273 control + 2546 treatment).
    rng = np.random.default_rng(11)
    n_control = sample_size_two_proportions(p_control, mde, ratio=ratio)
    n_treatment = int(math.ceil(ratio * n_control))
    sims = 2000
    s_t = rng.binomial(n_treatment, p_control + mde, size=sims)
    s_c = rng.binomial(n_control, p_control, size=sims)
    power = np.mean(
        [
            two_proportion_p_value(int(a), n_treatment, int(b), n_control) < 0.05
            for a, b in zip(s_t, s_c, strict=True)
        ]
    )
    assert 0.75 <= power <= 0.85


def test_minimum_detectable_effect_inverts_sample_size():
    assert minimum_detectable_effect(0.30, 1377) == pytest.approx(0.05, abs=2e-4)
    for p, n in [(0.3, 500), (0.05, 20_000), (0.6, 3000)]:
        mde = minimum_detectable_effect(p, n)
        assert 0 < mde < 1 - p
        assert sample_size_two_proportions(p, mde) in (n, n + 1)
    # Tiny arms: not even a rise to 100% is detectable.
    assert math.isnan(minimum_detectable_effect(0.5, 2))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"p_control": 0.0, "mde": 0.05},
        {"p_control": 1.0, "mde": -0.05},
        {"p_control": 0.97, "mde": 0.05},
        {"p_control": 0.03, "mde": -0.05},
        {"p_control": 0.3, "mde": 0.0},
        {"p_control": 0.3, "mde": 0.05, "alpha": 0.0},
        {"p_control": 0.3, "mde": 0.05, "ratio": 0.0},
    ],
)
def test_sample_size_rejects_impossible_inputs(kwargs):
    with pytest.raises(ValueError):
        sample_size_two_proportions(**kwargs)


# ----------------------------------------------------------------------------------------------------------------
# SRM alarm rates
# ----------------------------------------------------------------------------------------------------------------

SHARES = {"control": 0.45, "offer": 0.45, "holdout": 0.10}


def test_srm_false_alarm_rate_under_correct_assignment():
    # 2000 experiments of 40,000 customers assigned 45/45/10. Measured: alarm rate 0.001 (2 of 2000), and
    # p < 0.05 in 5.2% (the p-value is uniform under H0, as it should be).
    rng = np.random.default_rng(12)
    counts = rng.multinomial(40_000, list(SHARES.values()), size=2000)
    results = [srm_check(dict(zip(SHARES, map(int, row), strict=True)), SHARES) for row in counts]
    alarm_rate = np.mean([r["alarm"] for r in results])
    p_values = np.array([r["p_value"] for r in results])
    assert alarm_rate <= 0.005
    assert 0.035 <= np.mean(p_values < 0.05) <= 0.065


def test_srm_detects_injected_skew():
    # Assignment skewed to 51/49 instead of 50/50, 40,000 customers (about 20k per arm). The alarm rate must
    # match the power of the chi-square test, noncentral chi2(1, lambda = 16) above the 0.001 critical value:
    # 0.761. Measured: 0.738 over 1000 experiments. At 52/48 it is always detected.
    rng = np.random.default_rng(13)
    design = {"control": 0.5, "offer": 0.5}
    theory = stats.ncx2.sf(stats.chi2.isf(0.001, 1), 1, 40_000 * 0.02**2)
    offer = rng.binomial(40_000, 0.51, size=1000)
    rate = np.mean([srm_check({"control": 40_000 - int(k), "offer": int(k)}, design)["alarm"] for k in offer])
    assert abs(rate - theory) <= 0.05
    offer = rng.binomial(40_000, 0.52, size=200)
    assert all(srm_check({"control": 40_000 - int(k), "offer": int(k)}, design)["alarm"] for k in offer)


# ----------------------------------------------------------------------------------------------------------------
# Edge cases: no exception, no warning (warnings are errors in this project), NaN or a sensible interval
# ----------------------------------------------------------------------------------------------------------------


def is_nan_interval(ci: Interval) -> bool:
    return math.isnan(ci.low) and math.isnan(ci.high)


def test_edge_cases_proportions():
    assert is_nan_interval(wilson(0, 0)) and math.isnan(wilson(0, 0).estimate)
    assert wilson(0, 0).as_dict().keys() == {"estimate", "low", "high"}
    full = wilson(10, 10)
    assert full.estimate == 1.0 and full.high == pytest.approx(1.0) and 0.6 < full.low < 1.0
    none = wilson(0, 10)
    assert none.low == pytest.approx(0.0, abs=1e-15) and 0 < none.high < 0.4
    assert is_nan_interval(newcombe_difference(0, 0, 5, 10))
    both_full = newcombe_difference(10, 10, 20, 20)
    assert both_full.estimate == 0.0 and both_full.low < 0 < both_full.high
    assert two_proportion_p_value(10, 10, 20, 20) == 1.0
    assert two_proportion_p_value(0, 0, 5, 10) == 1.0
    assert two_proportion_p_value(0, 10, 0, 20) == 1.0
    with pytest.raises(ValueError):
        wilson(11, 10)
    with pytest.raises(ValueError):
        wilson(5, 10, confidence=1.0)


@pytest.mark.parametrize("method", ["welch", "bootstrap"])
def test_edge_cases_means(method):
    def md(x, y):
        return mean_difference(np.asarray(x, dtype=float), np.asarray(y, dtype=float), method=method, rng=0)

    assert is_nan_interval(md([], [1.0, 2.0])) and math.isnan(md([], [1.0, 2.0]).estimate)
    single = md([5.0], [1.0, 2.0])
    assert single.estimate == 3.5 and is_nan_interval(single)
    constant = md([3.0, 3.0, 3.0], [3.0, 3.0])
    assert constant.estimate == 0.0 and is_nan_interval(constant)
    same = md([1.0, 2.0, 3.0, 4.0, 10.0], [1.0, 2.0, 3.0, 4.0, 10.0])
    assert same.estimate == 0.0 and same.low < 0 < same.high
    # One arm constant (e.g. nobody in the holdout paid anything yet), the other not: a proper interval.
    one_constant = md([0.0, 0.0, 0.0, 5.0, 9.0], [0.0, 0.0, 0.0])
    assert one_constant.low <= one_constant.estimate <= one_constant.high
    assert math.isfinite(one_constant.low)
    with pytest.raises(ValueError):
        mean_difference(np.ones(3), np.ones(3), method="median")


def test_edge_cases_p_values_and_srm():
    assert mean_difference_p_value([1.0], [1.0, 2.0]) == 1.0
    assert mean_difference_p_value([2.0, 2.0], [3.0, 3.0]) == 1.0
    assert mean_difference_p_value([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == pytest.approx(1.0)
    empty = srm_check({}, {"control": 0.5, "offer": 0.5})
    assert (
        empty["p_value"] == 1.0
        and empty["alarm"] is False
        and empty["observed"] == {"control": 0, "offer": 0}
    )
    missing = srm_check({"control": 100}, {"control": 0.5, "offer": 0.5})
    assert missing["alarm"] is True and missing["observed"]["offer"] == 0
    off = srm_check({"control": 500, "offer": 500, "retired": 3}, {"control": 1, "offer": 1, "retired": 0})
    assert off["alarm"] is True and off["p_value"] == 0.0
    idle = srm_check({"control": 500, "offer": 490, "retired": 0}, {"control": 1, "offer": 1, "retired": 0})
    assert idle["alarm"] is False
    with pytest.raises(ValueError):
        srm_check({"ghost": 3}, {"control": 1})


def test_edge_cases_always_valid():
    assert is_nan_interval(always_valid_proportions(0, 0, 3, 10))
    all_success = always_valid_proportions(10, 10, 10, 10)
    assert all_success.estimate == 0.0 and all_success.low < 0 < all_success.high
    assert is_nan_interval(always_valid_means([1.0], [1.0, 2.0]))
    assert is_nan_interval(always_valid_means([2.0, 2.0], [2.0, 2.0]))
    assert is_nan_interval(always_valid_means([], []))
    same = always_valid_means([1.0, 2.0, 7.0], [1.0, 2.0, 7.0])
    assert same.estimate == 0.0 and same.low < 0 < same.high
    assert is_nan_interval(always_valid_difference(0.1, 0.0))
    nan_dict = always_valid_difference(0.1, float("nan")).as_dict()
    assert nan_dict["estimate"] == 0.1 and math.isnan(nan_dict["low"]) and isinstance(nan_dict["high"], float)
