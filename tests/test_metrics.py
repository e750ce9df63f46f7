"""Evaluation metrics: calibration error, reliability curve, lift and the combined dict."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training.metrics import (
    METRIC_KEYS,
    binary_metrics,
    calibration_error_vs_truth,
    expected_calibration_error,
    lift_top_decile,
    reliability_curve,
)


def _calibrated(n=200_000, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.beta(2, 5, size=n)
    y = (rng.random(n) < p).astype(int)
    return y, p


def test_ece_near_zero_when_y_drawn_from_p():
    y, p = _calibrated()
    assert expected_calibration_error(y, p) < 0.02


def test_ece_large_for_shifted_p():
    y, p = _calibrated()
    assert expected_calibration_error(y, np.clip(p + 0.2, 0, 1)) > 0.1


def test_ece_matches_definition():
    y = np.array([0, 1, 1, 0, 1, 1])
    p = np.array([0.05, 0.05, 0.55, 0.55, 0.95, 1.0])  # 1.0 belongs to the last bin
    # bins: [0,.1): y=.5 p=.05 n=2; [.5,.6): y=.5 p=.55 n=2; [.9,1]: y=1 p=.975 n=2
    expected = (2 * 0.45 + 2 * 0.05 + 2 * 0.025) / 6
    assert expected_calibration_error(y, p) == pytest.approx(expected)


def test_label_ece_of_the_truth_itself_is_noise_that_ece_against_the_truth_does_not_have():
    # 3,000 flows, as on the small worlds: the true probabilities score about 0.02 against the labels, while
    # against themselves they score 0, and a model 0.03 too optimistic scores 0.03.
    y, p = _calibrated(n=3_000, seed=3)
    assert 0.008 < expected_calibration_error(y, p) < 0.04
    assert calibration_error_vs_truth(p, p) == 0.0
    assert calibration_error_vs_truth(p, p + 0.03) == pytest.approx(0.03)


def test_ece_against_the_truth_uses_the_models_bins():
    p_true = np.array([0.0, 0.2, 0.5, 0.5])
    p = np.array([0.05, 0.05, 0.55, 0.95])
    # bins of p: [0,.1): truth .1 vs p .05 (n=2); [.5,.6): .5 vs .55; [.9,1]: .5 vs .95
    assert calibration_error_vs_truth(p_true, p) == pytest.approx((2 * 0.05 + 0.05 + 0.45) / 4)
    with pytest.raises(ValueError, match="row-aligned"):
        calibration_error_vs_truth(p_true[:3], p)


def test_reliability_curve_counts_sum_to_n():
    y, p = _calibrated(n=10_000)
    curve = reliability_curve(y, p, n_bins=10)
    assert set(curve) == {"mean_predicted", "observed", "count"}
    assert sum(curve["count"]) == 10_000
    assert len(curve["mean_predicted"]) == len(curve["observed"]) == len(curve["count"]) <= 10
    assert all(c > 0 for c in curve["count"])  # only non-empty bins
    assert curve["mean_predicted"] == sorted(curve["mean_predicted"])
    json.dumps(curve)  # plain Python values, ready for metadata.json


def test_reliability_curve_skips_empty_bins():
    curve = reliability_curve([0, 1, 1], [0.12, 0.18, 0.91], n_bins=10)
    assert curve["count"] == [2, 1]
    assert curve["mean_predicted"] == pytest.approx([0.15, 0.91])
    assert curve["observed"] == pytest.approx([0.5, 1.0])


def test_lift_of_perfect_ranking_with_ten_percent_positives_is_ten():
    n = 1000
    y = np.zeros(n, dtype=int)
    y[:100] = 1
    p = np.linspace(1, 0, n)
    assert lift_top_decile(y, p) == pytest.approx(10.0)


def test_lift_of_constant_score_is_one_regardless_of_row_order():
    # Ties at the cut-off are shared, so a prior-only baseline does not get lucky from row order.
    y = np.zeros(1000, dtype=int)
    y[:100] = 1
    assert lift_top_decile(y, np.full(1000, 0.1)) == pytest.approx(1.0)


def test_lift_of_common_positive_class():
    # "Positive" need not be rare: with 80% positives the maximum lift is 1 / 0.8.
    y = np.array([1] * 80 + [0] * 20)
    p = np.linspace(1, 0, 100)
    assert lift_top_decile(y, p) == pytest.approx(1.25)


def test_binary_metrics_keys_and_types():
    y, p = _calibrated(n=5000)
    m = binary_metrics(y, p)
    assert tuple(m) == METRIC_KEYS
    assert m["n"] == 5000 and type(m["n"]) is int
    for k in METRIC_KEYS[1:]:
        assert type(m[k]) is float, k
    assert 0.5 < m["roc_auc"] < 1
    assert m["ece"] == pytest.approx(expected_calibration_error(y, p))
    json.dumps(m, allow_nan=False)


@pytest.mark.parametrize("label", [0, 1])
def test_binary_metrics_single_class(label):
    y = np.full(50, label)
    p = np.linspace(0.1, 0.9, 50)
    m = binary_metrics(y, p)  # must not warn (filterwarnings=error)
    assert m["roc_auc"] is None and m["pr_auc"] is None
    assert m["positive_rate"] == float(label)
    assert m["lift_top_decile"] == (None if label == 0 else 1.0)
    json.dumps(m, allow_nan=False)


def test_invalid_inputs_rejected():
    with pytest.raises(ValueError, match="different lengths"):
        binary_metrics([0, 1], [0.5])
    with pytest.raises(ValueError, match="only 0/1"):
        binary_metrics([0, 2], [0.5, 0.5])
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
        binary_metrics([0, 1], [0.5, np.nan])
    with pytest.raises(ValueError, match="zero rows"):
        expected_calibration_error([], [])
