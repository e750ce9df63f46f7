"""Evaluation metrics for binary probability models (offer response, churn risk).

Ranking (ROC AUC, PR AUC, top-decile lift) and calibration (Brier, ECE, reliability curve) both matter:
the decision API multiplies probabilities by offer values, so a well-ranked but badly calibrated model
still picks the wrong offer. "Positive" is whatever y == 1 means for the model; it need not be the rare
class.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

METRIC_KEYS: tuple[str, ...] = ("n", "positive_rate", "roc_auc", "pr_auc", "brier", "ece", "lift_top_decile")


def _check(y, p) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=float).ravel()
    p = np.asarray(p, dtype=float).ravel()
    if y.shape != p.shape:
        raise ValueError(f"y and p have different lengths ({y.size} vs {p.size})")
    if y.size == 0:
        raise ValueError("cannot evaluate on zero rows")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("y must contain only 0/1 (or booleans)")
    if not (np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()):
        raise ValueError("p must be probabilities in [0, 1] (no NaN)")
    return y, p


def _bins(p: np.ndarray, n_bins: int) -> np.ndarray:
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    # Equal-width bins [0, 1/n), ..., [(n-1)/n, 1]; p == 1 goes into the last bin.
    return np.minimum((p * n_bins).astype(int), n_bins - 1)


def expected_calibration_error(y, p, n_bins: int = 10) -> float:
    """sum over equal-width bins of (n_b / n) * |mean(y_b) - mean(p_b)|."""
    y, p = _check(y, p)
    return _calibration_error(y, p, n_bins)


def calibration_error_vs_truth(p_true, p, n_bins: int = 10) -> float:
    """The ECE of `p` with each bin's mean true probability (a simulator's truth) in place of its observed
    rate. Label ECE is noisy: on a few thousand rows even the true probabilities score about 0.02 against
    the labels (each bin's observed rate is off by sqrt(p(1 - p) / n_b)), so this is the figure that says
    how well calibrated a model is, and the truth's own label ECE says how much of a label ECE is noise."""
    p_true, p = np.asarray(p_true, dtype=float).ravel(), np.asarray(p, dtype=float).ravel()
    if p_true.shape != p.shape or not ((p_true >= 0) & (p_true <= 1)).all():
        raise ValueError("p_true must be probabilities row-aligned with p")
    _check(np.zeros(p.size), p)
    return _calibration_error(p_true, p, n_bins)


def _calibration_error(y: np.ndarray, p: np.ndarray, n_bins: int) -> float:
    b = _bins(p, n_bins)
    sum_y = np.bincount(b, weights=y, minlength=n_bins)
    sum_p = np.bincount(b, weights=p, minlength=n_bins)
    # n_b/n * |sum_y/n_b - sum_p/n_b| == |sum_y - sum_p| / n, and empty bins contribute 0.
    return float(np.abs(sum_y - sum_p).sum() / y.size)


def reliability_curve(y, p, n_bins: int = 10) -> dict:
    """Mean predicted vs observed positive rate per non-empty equal-width bin, with bin counts."""
    y, p = _check(y, p)
    b = _bins(p, n_bins)
    count = np.bincount(b, minlength=n_bins)
    sum_y = np.bincount(b, weights=y, minlength=n_bins)
    sum_p = np.bincount(b, weights=p, minlength=n_bins)
    nz = count > 0
    return {
        "mean_predicted": (sum_p[nz] / count[nz]).tolist(),
        "observed": (sum_y[nz] / count[nz]).tolist(),
        "count": count[nz].astype(int).tolist(),
    }


def lift_top_decile(y, p) -> float:
    """Positive rate among the top 10% of rows by p, divided by the overall positive rate.

    Ties at the cut-off are shared fractionally (the expectation over random tie-breaking), so a constant
    predictor scores exactly 1.0 and coarse scores such as NPS segments are not flattered or penalised by
    row order. NaN when there are no positives.
    """
    y, p = _check(y, p)
    base = y.mean()
    if base == 0:
        return float("nan")
    k = math.ceil(y.size / 10)
    cut = np.partition(p, y.size - k)[y.size - k]  # the k-th largest score
    above = p > cut
    tied = p == cut
    share = (k - above.sum()) / tied.sum()
    positives_top = y[above].sum() + share * y[tied].sum()
    return float((positives_top / k) / base)


def binary_metrics(y, p) -> dict:
    """All metrics as plain Python numbers; roc_auc/pr_auc (and lift without positives) are None when
    undefined, so the result can go straight into metadata.json."""
    y, p = _check(y, p)
    two_classes = 0 < y.sum() < y.size
    lift = lift_top_decile(y, p)
    return {
        "n": int(y.size),
        "positive_rate": float(y.mean()),
        # Guarded rather than caught: sklearn warns (UndefinedMetricWarning) instead of raising.
        "roc_auc": float(roc_auc_score(y, p)) if two_classes else None,
        "pr_auc": float(average_precision_score(y, p)) if two_classes else None,
        "brier": float(brier_score_loss(y, p)),
        "ece": expected_calibration_error(y, p),
        "lift_top_decile": None if math.isnan(lift) else lift,
    }
