"""The offer-response learners the trainer chooses between by measurement, each a scikit-learn estimator
that retention.scorers can serve without scikit-learn (numpy arrays only, checked to 1e-9 against the
fitted estimator).

- `boosting`: histogram gradient boosting on customer features + reason + offer (one model for all offers),
  the learner that served until now; its leaves, minimum leaf size and regularisation are tuned, and it
  can stop early.
- `logistic`: a regularised logistic model on a hierarchical design (OfferDesign): customer features, the
  reason, each offer and its offer type, every (reason, offer) and (reason, offer type) cell, and offer x
  customer-segment interactions at both levels. The L2 penalty shrinks a (reason, offer) cell toward its
  (reason, type) parent and an offer's interactions toward its type's, so 30 flows do not decide a cell
  alone (retention of a cell is its parents' unless the data say otherwise).
- `ipw`: the logistic model fitted with stabilised inverse-propensity weights (mean propensity / logged
  propensity), so an unbalanced logging history (discounts shown three times as often) counts as if the
  offers had been shown uniformly.
- `Blend`: the average of a boosting and a logistic model's probabilities.
- `Calibrated`: any of them, recalibrated (sigmoid or isotonic) on out-of-fold predictions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin, clone
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder

from retention.contract import REASONS
from retention.features import FeatureSpec
from retention.links import logit, sigmoid
from retention.model import DECISION_CATEGORICAL, DECISION_NUMERIC
from retention.offers import Catalog


def signed_log1p(x: np.ndarray) -> np.ndarray:
    """sign(x) log(1 + |x|): usage minutes and days-since are heavy-tailed; a linear model wants them tamed."""
    return np.sign(x) * np.log1p(np.abs(x))


def interacting_features(spec: FeatureSpec) -> list[str]:
    """The customer features offers interact with in the logistic design: who the customer is and how they
    use the product, not every window of every metric (those would mostly add noise to the interactions)."""
    names = ["tenure_days", "price", "nps_answered", "nps_last", "nps_trend", "prior_offers", "prior_accepted",
             "days_since_last_discount", "days_since_last_pause"]
    for m in spec.metrics:
        names += [f"{m}_30d", f"{m}_trend", f"{m}_days_since_last"]
    names += [f"attr_{a}" for a in spec.numeric_attributes]
    return [n for n in names if n in spec.numeric]


class OfferDesign(TransformerMixin, BaseEstimator):
    """(customer features, reason, offer) rows -> the logistic model's design matrix.

    Columns, in order: customer numerics (signed log, median-imputed, standardised), a missing indicator per
    numeric that was ever missing, customer categoricals one-hot (levels seen `min_frequency` times), the
    reason one-hot, the offer one-hot (x `s_offer`), its type one-hot, every (reason, offer) cell
    (x `s_cell * s_offer`) and (reason, type) cell (x `s_cell`), offer x segment and type x segment
    interactions (x `s_segment`, `s_type`), where the segment is the interacting numerics and the
    categorical one-hots. Scaling a block down by s makes the L2 penalty on its coefficients 1/s^2 times stronger: an
    offer's terms are deviations from its type's, shrunk toward them, and a (reason, offer) cell is a
    deviation from its (reason, type) parent."""

    def __init__(self, numeric: list[str], categorical: list[str], interacting: list[str], offers: list[str],
                 offer_types: dict[str, str], s_offer: float = 1.0, s_segment: float = 0.2, s_type: float = 0.5,
                 s_cell: float = 0.5, min_frequency: int = 20):
        self.numeric = numeric
        self.categorical = categorical
        self.interacting = interacting
        self.offers = offers
        self.offer_types = offer_types
        self.s_offer = s_offer
        self.s_segment = s_segment
        self.s_type = s_type
        self.s_cell = s_cell
        self.min_frequency = min_frequency

    def fit(self, X: pd.DataFrame, y=None):
        N = signed_log1p(X[self.numeric].to_numpy(dtype=float))
        medians = np.nanmedian(np.where(np.isnan(N).all(axis=0), 0.0, N), axis=0) if len(N) else np.zeros(N.shape[1])
        self.medians_ = np.where(np.isnan(medians), 0.0, medians)
        missing = np.isnan(N)
        self.missing_ = missing.any(axis=0)
        filled = np.where(missing, self.medians_, N)
        self.means_ = filled.mean(axis=0)
        scale = filled.std(axis=0)
        self.scales_ = np.where(scale > 0, scale, 1.0)
        self.levels_ = {}
        for c in self.categorical:
            counts = X[c].dropna().astype(str).value_counts()
            self.levels_[c] = sorted(v for v, k in counts.items() if k >= self.min_frequency)
        self.types_ = sorted({self.offer_types[o] for o in self.offers})
        self.interacting_index_ = [self.numeric.index(c) for c in self.interacting]
        return self

    def customer_part(self, X: pd.DataFrame) -> np.ndarray:
        """Everything that depends on the customer alone: standardised numerics, missing flags, one-hots."""
        N = signed_log1p(X[self.numeric].to_numpy(dtype=float))
        missing = np.isnan(N)
        Z = (np.where(missing, self.medians_, N) - self.means_) / self.scales_
        parts = [Z, missing[:, self.missing_].astype(float)]
        for c in self.categorical:
            values = X[c].to_numpy(dtype=object)
            parts.append(np.column_stack([values == v for v in self.levels_[c]]).astype(float)
                         if self.levels_[c] else np.zeros((len(X), 0)))
        return np.hstack(parts)

    def segment(self, customer: np.ndarray) -> np.ndarray:
        """The columns of the customer part that offers interact with."""
        n_num, n_miss = len(self.numeric), int(self.missing_.sum())
        return np.hstack([customer[:, self.interacting_index_], customer[:, n_num + n_miss:]])

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        customer = self.customer_part(X)
        reason = X["reason"].to_numpy(dtype=object)
        offer = X["offer_id"].to_numpy(dtype=object)
        otype = np.array([self.offer_types.get(o, "none") for o in offer], dtype=object)
        by_reason = np.column_stack([reason == r for r in REASONS]).astype(float)
        by_offer = np.column_stack([offer == o for o in self.offers]).astype(float)
        by_type = np.column_stack([otype == t for t in self.types_]).astype(float)
        segment = self.segment(customer)

        def cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            return (a[:, :, None] * b[:, None, :]).reshape(len(X), -1)

        return np.hstack([customer, by_reason, by_offer * self.s_offer, by_type,
                          cross(by_reason, by_offer) * (self.s_cell * self.s_offer),
                          cross(by_reason, by_type) * self.s_cell, cross(by_offer, segment) * self.s_segment,
                          cross(by_type, segment) * self.s_type])


def logistic(spec: FeatureSpec, catalog: Catalog, C: float = 0.3, s_offer: float = 1.0, s_segment: float = 0.2,
             s_type: float = 0.5, columns: list[str] | None = None) -> Pipeline:
    """The hierarchical logistic learner (see OfferDesign). `columns`: the usable customer features."""
    usable = set(columns if columns is not None else spec.names)
    numeric = [c for c in spec.numeric if c in usable]
    categorical = [c for c in spec.categorical if c in usable]
    offers = [o.id for o in catalog.offers if o.type != "none"]
    design = OfferDesign(numeric, categorical, [c for c in interacting_features(spec) if c in numeric], offers,
                         {o.id: o.type for o in catalog.offers}, s_offer=s_offer, s_segment=s_segment, s_type=s_type)
    return Pipeline([("design", design), ("model", LogisticRegression(C=C, max_iter=5000))])


def boosting(spec: FeatureSpec, seed: int, max_leaf_nodes: int = 7, min_samples_leaf: int = 100,
             l2_regularization: float = 1.0, max_iter: int = 250, early_stopping: bool = False,
             columns: list[str] | None = None) -> Pipeline:
    """Gradient boosting on customer features + reason + offer. Everything learned from data (category codes,
    trees) lives in one Pipeline fitted on training rows. Early stopping holds out 15% of the rows (seeded)."""
    usable = set(columns if columns is not None else spec.names)
    numeric = [c for c in spec.numeric if c in usable] + DECISION_NUMERIC
    categorical = [c for c in spec.categorical if c in usable] + DECISION_CATEGORICAL
    encoder = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan, encoded_missing_value=np.nan,
                             dtype=np.float64)
    pre = ColumnTransformer([("cat", encoder, categorical), ("num", "passthrough", numeric)],
                            verbose_feature_names_out=False)
    clf = Boosting(
        learning_rate=0.05, max_iter=max_iter, max_leaf_nodes=max_leaf_nodes, min_samples_leaf=min_samples_leaf,
        l2_regularization=l2_regularization, categorical_features=[True] * len(categorical) + [False] * len(numeric),
        early_stopping=early_stopping, validation_fraction=0.15, n_iter_no_change=20, random_state=seed)
    return Pipeline([("columns", pre), ("model", clf)])


class Boosting(HistGradientBoostingClassifier):
    """scikit-learn's histogram gradient boosting, accepting columns that are (almost) always missing.

    scikit-learn 1.9 cannot bin a column with no value in the rows it bins ("window shape cannot be larger
    than input array shape"): a data set with one cancel flow per customer has several such columns
    (days_since_last_request, ...), and with early stopping a column known on a handful of rows can lose them
    all to the validation split. A column known on fewer than MIN_KNOWN rows is fitted as a constant, which
    no tree can split on, so whatever it holds at prediction time is ignored (a handful of values could not
    have supported a split anyway)."""

    MIN_KNOWN = 20

    def fit(self, X, y, sample_weight=None):
        X = np.array(X, dtype=np.float64, copy=True)
        X[:, (~np.isnan(X)).sum(axis=0) < self.MIN_KNOWN] = 0.0
        return super().fit(X, y, sample_weight=sample_weight)


def fit(estimator, X: pd.DataFrame, y: np.ndarray, sample_weight: np.ndarray | None = None):
    """Fit any learner of this module, passing sample weights to where the model is."""
    if sample_weight is None:
        return estimator.fit(X, y)
    if isinstance(estimator, Pipeline):
        return estimator.fit(X, y, **{f"{estimator.steps[-1][0]}__sample_weight": sample_weight})
    return estimator.fit(X, y, sample_weight=sample_weight)


class Blend(ClassifierMixin, BaseEstimator):
    """The mean of its estimators' probabilities of the positive class."""

    def __init__(self, estimators: list):
        self.estimators = estimators

    def fit(self, X, y, sample_weight=None):
        self.estimators_ = [fit(clone(e), X, y, sample_weight) for e in self.estimators]
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X) -> np.ndarray:
        p = np.mean([e.predict_proba(X)[:, 1] for e in self.estimators_], axis=0)
        return np.column_stack([1.0 - p, p])


class Calibrated(ClassifierMixin, BaseEstimator):
    """`estimator` fitted on all rows, its probabilities mapped by a calibrator fitted on out-of-fold
    predictions (`folds` consecutive blocks of the rows as given, i.e. in time order).

    method "sigmoid": p' = 1 / (1 + exp(-(a logit(p) + b))); "isotonic": a monotone step-linear map
    (sklearn's IsotonicRegression, clipped to the fitted range)."""

    def __init__(self, estimator, method: str = "sigmoid", folds: int = 3):
        self.estimator = estimator
        self.method = method
        self.folds = folds

    def fit(self, X, y, sample_weight=None):
        y = np.asarray(y)
        oof = out_of_fold(self.estimator, X, y, self.folds, sample_weight)
        if self.method == "sigmoid":
            lr = LogisticRegression(C=1e6, max_iter=1000).fit(logit(oof)[:, None], y)
            self.a_, self.b_ = float(lr.coef_[0, 0]), float(lr.intercept_[0])
        elif self.method == "isotonic":
            self.isotonic_ = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(oof, y)
        else:
            raise ValueError(f"unknown calibration method {self.method!r}")
        self.estimator_ = fit(clone(self.estimator), X, y, sample_weight)
        self.classes_ = np.array([0, 1])
        return self

    def calibrate(self, p: np.ndarray) -> np.ndarray:
        if self.method == "sigmoid":
            return sigmoid(self.a_ * logit(p) + self.b_)
        return self.isotonic_.predict(p)

    def predict_proba(self, X) -> np.ndarray:
        p = self.calibrate(self.estimator_.predict_proba(X)[:, 1])
        return np.column_stack([1.0 - p, p])


def out_of_fold(estimator, X: pd.DataFrame, y: np.ndarray, folds: int,
                sample_weight: np.ndarray | None = None) -> np.ndarray:
    """Each row's probability from a copy of `estimator` fitted without its block (blocks in row order)."""
    n = len(X)
    edges = np.linspace(0, n, folds + 1).astype(int)
    out = np.empty(n)
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        keep = np.r_[0:lo, hi:n]
        w = None if sample_weight is None else sample_weight[keep]
        model = fit(clone(estimator), X.iloc[keep], y[keep], w)
        out[lo:hi] = model.predict_proba(X.iloc[lo:hi])[:, 1]
    return out
