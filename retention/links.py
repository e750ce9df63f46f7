"""The logistic link, shared by training (calibration maps, the logistic learner) and the served scorers:
numpy only, so the service's workers load neither scipy nor scikit-learn for it."""

from __future__ import annotations

import numpy as np

EPS = 1e-9  # probabilities are clipped to [EPS, 1 - EPS] before taking logits


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def logit(p):
    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p / (1.0 - p))
