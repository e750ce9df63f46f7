"""Build training sets from a validated data directory, fit the models the data supports, evaluate them on
the most recent period against baselines, and write an immutable, verifiable model version.

Models (one artifact):
- offer_response: P(still subscribed 30 days after a cancel request | features as of the request, reason,
  offer shown). The learner is chosen by measurement on time-ordered validation, calibrated, and its policy
  is gated against the rules on held-out flows (training.selection). Trained only when the history has
  cancel flows with offers shown and both outcomes; otherwise offers are decided by the rules and the
  artifact says why.
- churn_risk: P(an active customer asks to cancel within the next 30 days | features as of T): boosting or a
  regularised logistic regression, whichever predicts the inner validation period better.

Splits are by time: a model is fitted on points before a cutoff whose labels were already known at the
cutoff (a label gap of the label horizon), and evaluated on the points after it. The served model is then
refitted on every labelled point.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from retention.artifacts import save_artifact
from retention.contract import SAVE_HORIZON_DAYS
from retention.drift import feature_reference
from retention.features import FEATURE_VERSION, FeatureSpec, compute_features, discover_spec
from retention.jsonvalues import jsonable
from retention.model import DECISION_CATEGORICAL, DECISION_NUMERIC, decision_columns, offer_of
from retention.offers import Catalog, load_catalog
from retention.policy import PolicyConfig, load_policy
from retention.scorers import compile_estimator, probe_from_rows, save_scorer
from retention.utc import naive_utc
from training import learners, selection
from training.dataset import open_dataset, resolve_window_end, resolve_window_start
from training.flows import build_flows
from training.metrics import (
    binary_metrics,
    calibration_error_vs_truth,
    expected_calibration_error,
    reliability_curve,
)
from training.simulator.truth import TRUTH_FILE

MODELS = ("offer_response", "churn_risk")
CHURN_HORIZON_DAYS = 30
COMPILED_FILE = "offer_response.npz"  # the serving form of the offer-response model (retention.scorers)
CHURN_OBSERVATION_EVERY_DAYS = 30
MIN_FLOWS = 200  # labelled cancel flows below which an offer-response model is not attempted
PROBE_ROWS = 512


class NothingToTrain(ValueError):
    """The data support none of the requested models; the message says why for each."""


@dataclass
class TrainConfig:
    data_dir: Path
    out_root: Path
    window_end: datetime | None = None
    eval_fraction: float = 0.25  # share of the labelled period, most recent, held out for evaluation
    seed: int = 0
    exclude_attributes: tuple[str, ...] = ()
    max_churn_points: int = 400_000
    # At most this many labelled cancel flows (a uniform sample over the window) train the offer-response
    # model: beyond it the policy gains little (reference world: 0.97 of the oracle's lift at 31,000 flows),
    # while seven learners on three validation blocks, the gate and the final fit grow with every row.
    max_offer_flows: int = 100_000
    catalog: Catalog = field(default_factory=load_catalog)
    policy: PolicyConfig | None = None  # guardrails, rules and value horizon; default: config/policy.toml
    models: tuple[str, ...] = MODELS  # which models to train (`retention train --only`)
    learners: tuple[str, ...] | None = None  # offer-response learner families to compare (None: all)
    threads: int | None = None

    def policy_config(self) -> PolicyConfig:
        return self.policy or load_policy(self.catalog)


def response_rows(con, catalog: Catalog, spec: FeatureSpec, window_end: datetime) -> pd.DataFrame:
    """One row per cancel request whose 30-day outcome is known by the window end, with its logged
    propensity (NaN where the log has none)."""
    cutoff = naive_utc(window_end) - timedelta(days=SAVE_HORIZON_DAYS)
    points = con.execute(
        """
        SELECT row_number() OVER (ORDER BY requested_at, request_id) AS point_id, request_id, customer_id,
               requested_at AS as_of, reason, offer_id, propensity,
               (ended_at IS NULL OR ended_at > requested_at + INTERVAL (?) DAY) AS saved
        FROM cancel_requests WHERE requested_at <= ? ORDER BY point_id
        """,
        [SAVE_HORIZON_DAYS, cutoff],
    ).df()
    feats = _features_aligned(con, points, spec, catalog)
    decisions = pd.DataFrame(
        [decision_columns(offer_of(catalog, o), r) for o, r in zip(points["offer_id"], points["reason"], strict=True)]
    )
    out = pd.concat([feats.reset_index(drop=True), decisions], axis=1)
    out["request_id"] = points["request_id"].to_numpy()
    out["propensity"] = points["propensity"].astype("float64").to_numpy()
    out["label"] = points["saved"].astype(int).to_numpy()
    return out


def churn_rows(con, spec: FeatureSpec, catalog: Catalog, window_start: datetime, window_end: datetime,
               max_points: int, seed: int) -> pd.DataFrame:
    """Active customers at monthly observation dates; label = a cancel request within the next 30 days."""
    first = naive_utc(window_start) + timedelta(days=90)  # enough history for the 90-day windows
    last = naive_utc(window_end) - timedelta(days=CHURN_HORIZON_DAYS)
    dates = []
    t = first
    while t <= last:
        dates.append(t)
        t += timedelta(days=CHURN_OBSERVATION_EVERY_DAYS)
    if not dates:
        return pd.DataFrame()
    con.register("obs_dates", pd.DataFrame({"as_of": pd.to_datetime(dates)}))
    points = con.execute(
        f"""
        WITH ends AS (SELECT customer_id, min(ended_at) AS ended_at FROM cancel_requests GROUP BY 1),
        pts AS (
          SELECT c.customer_id, d.as_of
          FROM customers c CROSS JOIN obs_dates d LEFT JOIN ends e USING (customer_id)
          WHERE c.signup_at < d.as_of AND (e.ended_at IS NULL OR e.ended_at > d.as_of)
          USING SAMPLE reservoir({int(max_points)} ROWS) REPEATABLE ({int(seed)})
        )
        SELECT row_number() OVER (ORDER BY p.as_of, p.customer_id) AS point_id, p.customer_id, p.as_of,
               EXISTS (SELECT 1 FROM cancel_requests r WHERE r.customer_id = p.customer_id
                       AND r.requested_at >= p.as_of
                       AND r.requested_at < p.as_of + INTERVAL {CHURN_HORIZON_DAYS} DAY) AS label
        FROM pts p ORDER BY point_id
        """
    ).df()
    con.unregister("obs_dates")
    if points.empty:
        return pd.DataFrame()
    feats = _features_aligned(con, points, spec, catalog)
    feats["label"] = points["label"].astype(int).to_numpy()
    return feats


def _features_aligned(con, points: pd.DataFrame, spec: FeatureSpec, catalog: Catalog) -> pd.DataFrame:
    """Features row-aligned with `points` (labels and decisions are attached by position afterwards)."""
    feats = compute_features(con, points[["point_id", "customer_id", "as_of"]], spec, catalog.offer_types)
    if not np.array_equal(feats["point_id"].to_numpy(), points["point_id"].to_numpy()):
        raise AssertionError("feature rows are not aligned with their points")
    return feats


def informative_columns(rows: pd.DataFrame, names: list[str]) -> list[str]:
    """The features that vary in `rows`: a column missing on every row, or with one value everywhere (a
    data set with one flow per customer has no days_since_last_request), carries nothing to learn from."""
    return [c for c in names if rows[c].nunique(dropna=False) > 1 and rows[c].notna().any()]


def time_split(as_of: pd.Series, eval_fraction: float, gap_days: int) -> tuple[np.ndarray, np.ndarray, datetime]:
    """Train on points whose label was known by the cutoff, evaluate on points at or after it."""
    cutoff = as_of.quantile(1.0 - eval_fraction)
    train = (as_of + pd.Timedelta(days=gap_days)) <= cutoff
    test = as_of >= cutoff
    return train.to_numpy(), test.to_numpy(), cutoff.to_pydatetime()


MIN_SPLIT_ROWS = 100  # rows on each side of a time split below which no model is fitted or judged


def split_too_small(rows: pd.DataFrame, train: np.ndarray, test: np.ndarray, gap_days: int, what: str) -> str | None:
    """Why a time split of `rows` cannot fit and judge a model (too few rows before the cutoff whose label was
    known by then, or after it, or one class only before it), or None. `what`: the rows, e.g. "cancel flows"."""
    n_train, n_test = int(train.sum()), int(test.sum())
    labels = rows.loc[train, "label"].nunique() if n_train else 0
    if n_train >= MIN_SPLIT_ROWS and n_test >= 1 and labels == 2:
        return None
    first, last = rows["as_of"].min(), rows["as_of"].max()
    days = (last - first).total_seconds() / 86400
    return (f"the {len(rows):,} labelled {what} span {days:.0f} days ({first:%Y-%m-%d} to {last:%Y-%m-%d}): a model "
            f"is fitted on those whose {gap_days}-day outcome was known before the held-out last part, which leaves "
            f"{n_train:,} to fit on ({'both outcomes' if labels == 2 else 'one outcome only'}) and {n_test:,} to judge "
            f"it; it needs at least {MIN_SPLIT_ROWS} with both outcomes, so a history spanning more than "
            f"{gap_days} days")


def segment_rate_baseline(train: pd.DataFrame, test: pd.DataFrame) -> np.ndarray:
    """The NPS-segment baseline: the training save rate of each NPS segment (including 'none')."""
    rates = train.groupby("nps_segment")["label"].mean()
    return test["nps_segment"].map(rates).fillna(train["label"].mean()).to_numpy()


def true_probabilities(data_dir: Path, rows: pd.DataFrame) -> np.ndarray | None:
    """The simulator's true P(stay | the logged offer) of each row (None on real data without truth)."""
    path = Path(data_dir) / TRUTH_FILE
    if not path.exists():
        return None
    truth = pd.read_parquet(path)
    merged = rows[["request_id"]].merge(truth, on="request_id", how="left")
    if len(merged) != len(rows) or merged["logged_offer"].isna().any():
        return None
    return np.array([merged.at[i, f"p_{o}"] for i, o in enumerate(merged["logged_offer"])], dtype=float)


def truth_metrics(data_dir: Path, rows: pd.DataFrame, p: np.ndarray) -> dict:
    """On simulated data, how the model's probabilities `p` compare with the truth: the Bayes-optimal AUC,
    the model's ECE against the true probabilities, and the true probabilities' own label ECE (the part of
    a label ECE that is noise). Empty on real data."""
    p_true = true_probabilities(data_dir, rows)
    if p_true is None:
        return {}
    y = rows["label"].to_numpy()
    out = {"ece_vs_truth": calibration_error_vs_truth(p_true, p), "ece_of_truth": expected_calibration_error(y, p_true)}
    if len(np.unique(y)) == 2:
        out["bayes_optimal_auc"] = float(roc_auc_score(y, p_true))
    return out


def with_truth(truth: dict, model: dict) -> dict:
    """truth_metrics, plus the model's AUC as a share of the Bayes-optimal AUC."""
    if truth.get("bayes_optimal_auc") and model.get("roc_auc") is not None:
        truth["auc_share_of_bayes"] = model["roc_auc"] / truth["bayes_optimal_auc"]
    return truth


def _holdout_metrics(y: np.ndarray, p: np.ndarray, train: pd.DataFrame, test: pd.DataFrame) -> tuple[dict, dict]:
    p_segment = segment_rate_baseline(train, test)
    p_prior = np.full(len(test), train["label"].mean())
    metrics = {"model": binary_metrics(y, p), "baseline_nps_segment": binary_metrics(y, p_segment),
               "baseline_prior": binary_metrics(y, p_prior)}
    curves = {"model": reliability_curve(y, p), "baseline_nps_segment": reliability_curve(y, p_segment)}
    return metrics, curves


def _split_info(rows: pd.DataFrame, train_mask, test_mask, cutoff: datetime, gap_days: int) -> dict:
    return {"cutoff": cutoff.isoformat(), "label_gap_days": gap_days, "train_rows": int(train_mask.sum()),
            "eval_rows": int(test_mask.sum()), "train_from": rows["as_of"][train_mask].min().isoformat(),
            "eval_to": rows["as_of"][test_mask].max().isoformat()}


# ------------------------------------------------------------------------------------------ offer response


@dataclass
class Trained:
    """What training one model produced (estimator None: not trained, `why` says why)."""

    estimator: object | None
    why: str | None = None
    metadata: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    curves: dict = field(default_factory=dict)
    split: dict = field(default_factory=dict)
    scorer: object | None = None
    probe: object | None = None
    reference: dict | None = None  # the training rows' feature distribution (retention.drift)


def train_offer_response(con, cfg: TrainConfig, spec: FeatureSpec, window_end: datetime, step) -> Trained:
    catalog, policy = cfg.catalog, cfg.policy_config()
    rows = response_rows(con, catalog, spec, window_end)
    offered = int((rows["offer_id"] != "none").sum()) if len(rows) else 0
    if offered == 0:
        return Trained(None, f"the history has {len(rows):,} labelled cancel flows and none with an offer shown: "
                             "there is nothing to learn offers from, so offers are decided by the rules")
    if len(rows) < MIN_FLOWS:
        return Trained(None, f"too few labelled cancel flows to learn offers from ({len(rows):,}; at least "
                             f"{MIN_FLOWS}): offers are decided by the rules")
    if rows["label"].nunique() < 2:
        outcome = "stayed" if rows["label"].iloc[0] == 1 else "left"
        return Trained(None, f"all {len(rows):,} labelled cancel flows ended the same way (every customer "
                             f"{outcome}): nothing tells which offer saves whom, so offers are decided by the rules")
    labelled = len(rows)
    if labelled > cfg.max_offer_flows:  # a uniform sample over the whole window keeps the time-ordered folds
        keep = np.sort(np.random.default_rng(cfg.seed).choice(labelled, cfg.max_offer_flows, replace=False))
        rows = rows.iloc[keep].reset_index(drop=True)
    train_mask, test_mask, cutoff = time_split(rows["as_of"], cfg.eval_fraction, SAVE_HORIZON_DAYS)
    too_small = split_too_small(rows, train_mask, test_mask, SAVE_HORIZON_DAYS, "cancel flows")
    if too_small:
        return Trained(None, too_small + ": offers are decided by the rules")
    columns = informative_columns(rows[train_mask], spec.names)
    flows = build_flows(con, rows, catalog, policy)
    train_flows, holdout = flows.subset(train_mask), flows.subset(test_mask)
    pool = selection.candidates(spec, catalog, cfg.seed, columns, cfg.learners, flows.has_propensities)
    step("offer-response learners")
    try:
        chosen = selection.select(train_flows, catalog, pool, progress=step)
    except ValueError as exc:  # too little history before the validation blocks: the first candidate, said so
        chosen = None
        why_default = str(exc)
    candidate = chosen.chosen if chosen else pool[0]
    calibration = chosen.calibration if chosen else "none"

    def make():
        model = candidate.make()
        # The map is fitted on out-of-fold copies of this very learner on these rows: the map the selection
        # fitted on its validation blocks (models fitted on less data) raised held-out ECE from 0.006 to
        # 0.015 on the reference world and from 0.024 to 0.053 on reference-small.
        return model if calibration == "none" else learners.Calibrated(model, calibration)

    def fit(flows_):
        return learners.fit(make(), flows_.rows, flows_.rows["label"].to_numpy(), candidate.weights(flows_.propensity))

    step("offer-response gate")
    model_t = fit(train_flows)
    test = rows[test_mask]
    y = test["label"].to_numpy()
    p = model_t.predict_proba(test)[:, 1]
    metrics, curves = _holdout_metrics(y, p, rows[train_mask], test)
    metrics.update(with_truth(truth_metrics(cfg.data_dir, test, p), metrics["model"]))
    gate = selection.gate(train_flows, holdout, model_t, catalog, chosen.evidence if chosen else ())

    step("offer-response model")
    final = fit(flows)
    scorer = compile_estimator(final, catalog)
    probe_rows = test.head(PROBE_ROWS)
    probe = probe_from_rows(probe_rows, spec.numeric, spec.categorical, final.predict_proba(probe_rows)[:, 1])
    diff = probe.max_difference(scorer)
    if diff > 1e-9:
        raise ValueError(f"the served form of {candidate.name} differs from the fitted model by {diff:.3g}: "
                         "this learner cannot be served; train with another (--learners)")
    meta = {
        "trained": True, "learner": candidate.name, "family": candidate.family, "calibration": calibration,
        "columns": columns, "selection": chosen.as_dict() if chosen else {"chosen": candidate.name,
                                                                         "by": f"default ({why_default})"},
        "gate": gate, "horizon_months": policy.horizon_months, "policy_version": policy.version,
        "flows": {"labelled": labelled, "used": len(rows), "max_offer_flows": cfg.max_offer_flows},
        "compiled": {"file": COMPILED_FILE, "probe_rows": len(probe.p), "max_abs_diff": diff},
    }
    split = _split_info(rows, train_mask, test_mask, cutoff, SAVE_HORIZON_DAYS)
    reference = _reference(rows, columns + ["reason"], spec.categorical + ["reason"], "offer_response training rows")
    return Trained(final, None, meta, metrics, curves, split, scorer, probe, reference)


# -------------------------------------------------------------------------------------------- churn risk


def churn_logistic(spec: FeatureSpec, columns: list[str]) -> Pipeline:
    """The plain baseline the churn model must match: a regularised logistic regression on the same features."""
    numeric = [c for c in spec.numeric if c in columns]
    categorical = [c for c in spec.categorical if c in columns]
    num = Pipeline([("log", FunctionTransformer(learners.signed_log1p)),
                    ("impute", SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True)),
                    ("scale", StandardScaler())])
    cat = Pipeline([("impute", SimpleImputer(strategy="constant", fill_value="(missing)")),
                    ("onehot", OneHotEncoder(handle_unknown="ignore", min_frequency=20))])
    pre = ColumnTransformer([("num", num, numeric), ("cat", cat, categorical)])
    return Pipeline([("columns", pre), ("model", LogisticRegression(C=0.3, max_iter=5000))])


def churn_boosting(spec: FeatureSpec, seed: int, columns: list[str]) -> Pipeline:
    from sklearn.preprocessing import OrdinalEncoder

    numeric = [c for c in spec.numeric if c in columns]
    categorical = [c for c in spec.categorical if c in columns]
    encoder = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan, encoded_missing_value=np.nan)
    pre = ColumnTransformer([("cat", encoder, categorical), ("num", "passthrough", numeric)],
                            verbose_feature_names_out=False)
    clf = learners.Boosting(
        learning_rate=0.05, max_iter=250, max_leaf_nodes=7, min_samples_leaf=100, l2_regularization=1.0,
        categorical_features=[True] * len(categorical) + [False] * len(numeric), early_stopping=False,
        random_state=seed)
    return Pipeline([("columns", pre), ("model", clf)])


def train_churn_risk(con, cfg: TrainConfig, spec: FeatureSpec, window_start: datetime, window_end: datetime,
                     step) -> Trained:
    rows = churn_rows(con, spec, cfg.catalog, window_start, window_end, cfg.max_churn_points, cfg.seed)
    if rows.empty:
        return Trained(None, "the data window is too short for churn risk (it needs 90 days of history and a "
                             "30-day label period after an observation date)")
    if rows["label"].nunique() < 2:
        return Trained(None, f"no customer {'left' if rows['label'].iloc[0] == 0 else 'stayed'} in any of the "
                             f"{len(rows):,} observation windows: nothing to learn churn from")
    train_mask, test_mask, cutoff = time_split(rows["as_of"], cfg.eval_fraction, CHURN_HORIZON_DAYS)
    too_small = split_too_small(rows, train_mask, test_mask, CHURN_HORIZON_DAYS, "observation windows")
    if too_small:
        return Trained(None, too_small)
    train, test = rows[train_mask], rows[test_mask]
    columns = informative_columns(train, spec.names)
    # Choose among boosting, the logistic baseline and their blend (the mean of the two probabilities, which
    # is rarely worse than either) by log loss on the last fifth of the training period.
    inner_fit, inner_val, _ = time_split(train["as_of"], 0.2, CHURN_HORIZON_DAYS)
    makers = {"boosting": lambda: churn_boosting(spec, cfg.seed, columns),
              "logistic": lambda: churn_logistic(spec, columns)}
    step("churn-risk learners")
    inner, holdout = {}, {}
    a, b = train[inner_fit], train[inner_val]
    for name, make in makers.items():
        if a["label"].nunique() == 2 and len(b):
            inner[name] = make().fit(a[columns], a["label"]).predict_proba(b[columns])[:, 1]
        holdout[name] = make().fit(train[columns], train["label"].to_numpy()).predict_proba(test[columns])[:, 1]
    holdout["blend"] = (holdout["boosting"] + holdout["logistic"]) / 2
    if inner:
        inner["blend"] = (inner["boosting"] + inner["logistic"]) / 2
    scores = {name: float(log_loss(b["label"], p, labels=[0, 1])) for name, p in inner.items()}
    chosen = min(scores, key=scores.get) if scores else "blend"
    y = test["label"].to_numpy()
    metrics, curves = _holdout_metrics(y, holdout[chosen], train, test)
    metrics["baseline_logistic"] = binary_metrics(y, holdout["logistic"])
    for name in ("boosting", "blend"):
        if name != chosen:
            metrics[f"alternative_{name}"] = binary_metrics(y, holdout[name])
    step("churn-risk model")
    if chosen == "blend":
        final = learners.Blend([makers["boosting"](), makers["logistic"]()])
    else:
        final = makers[chosen]()
    final = final.fit(rows[columns], rows["label"].to_numpy())
    meta = {"trained": True, "learner": chosen, "columns": columns,
            "selection": {"by": "log loss on the last fifth of the training period", "log_loss": scores}}
    return Trained(final, None, meta, metrics, curves, _split_info(rows, train_mask, test_mask, cutoff,
                                                                    CHURN_HORIZON_DAYS),
                   reference=_reference(rows, columns, spec.categorical, "churn_risk training rows"))


def _reference(rows: pd.DataFrame, columns: list[str], categorical: list[str], source: str) -> dict:
    """The distribution of the model's columns over the rows it was fitted on, for drift monitoring: the
    service and `retention drift` compare live decisions' features with it (retention.drift)."""
    values = {c: rows[c].to_numpy(dtype=object if c in categorical else "float64") for c in columns}
    return feature_reference(values, categorical, source)


# --------------------------------------------------------------------------------------------- a version


def train_version(cfg: TrainConfig, progress=None) -> Path:
    """Train the models the data supports and write `<out_root>/<version>/` (model.joblib, metadata.json and,
    with an offer-response model, its served form offer_response.npz). The HTML report is the caller's to
    add (reports.model.write_report; `retention train` does). Raises NothingToTrain when no model can be."""
    step = progress or (lambda _msg: None)
    unknown = set(cfg.models) - set(MODELS)
    if unknown or not cfg.models:
        raise ValueError(f"models must be some of {list(MODELS)}, got {list(cfg.models)}")
    con = open_dataset(cfg.data_dir, threads=cfg.threads)
    window_end = resolve_window_end(cfg.data_dir, cfg.window_end)
    window_start = resolve_window_start(con, cfg.data_dir)
    if window_start is None:
        raise NothingToTrain(f"{cfg.data_dir}: the data set has no dated rows at all (no usage, payments, NPS "
                             "answers or cancel requests): there is nothing to learn from")
    spec = discover_spec(con, cfg.exclude_attributes)
    results: dict[str, Trained] = {}
    if "offer_response" in cfg.models:
        step("offer-response features")
        results["offer_response"] = train_offer_response(con, cfg, spec, window_end, step)
    if "churn_risk" in cfg.models:
        step("churn-risk features")
        results["churn_risk"] = train_churn_risk(con, cfg, spec, window_start, window_end, step)
    if all(r.estimator is None for r in results.values()):
        raise NothingToTrain(f"{cfg.data_dir}: " + "; ".join(f"{name}: {r.why}" for name, r in results.items()))

    step("writing artifact")
    trained = {name: r for name, r in results.items() if r.estimator is not None}
    offer = results.get("offer_response")
    metadata = {
        "data_dir": str(cfg.data_dir),
        "data_window": {"start": window_start.isoformat(), "end": window_end.isoformat()},
        "row_counts": {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                       for t in ("customers", "nps_responses", "usage", "payments", "cancel_requests")},
        "feature_spec": spec.to_dict(),
        "feature_names": {name: (r.metadata["columns"] + (DECISION_NUMERIC + DECISION_CATEGORICAL
                                                          if name == "offer_response" else []))
                          for name, r in trained.items()},
        "catalog_version": cfg.catalog.version,
        "offers": list(cfg.catalog.ids),
        "models": {name: (r.metadata if r.estimator is not None else {"trained": False, "why": r.why})
                   for name, r in results.items()}
        | {name: {"trained": False, "why": "not asked for (--only "
                  + ",".join(m.replace("_", "-") for m in cfg.models) + ")"}
           for name in MODELS if name not in results},
        "splits": {name: r.split for name, r in trained.items()},
        "metrics": {name: r.metrics for name, r in trained.items()},
        "reliability": {name: r.curves for name, r in trained.items()},
        "params": {"seed": cfg.seed, "eval_fraction": cfg.eval_fraction},
    }
    if offer is not None and offer.estimator is not None:
        metadata["compiled"] = {"offer_response": offer.metadata["compiled"]}
    # Drift is measured against the rows of the model that scores decisions: the offer-response model, or
    # the churn model when there is none.
    reference = next((r.reference for r in trained.values() if r.reference is not None), None)
    if reference is not None:
        metadata["feature_reference"] = reference
    extra = {}
    if offer is not None and offer.scorer is not None:
        extra[COMPILED_FILE] = lambda path: save_scorer(offer.scorer, path, offer.probe)
    return save_artifact(cfg.out_root, {name: r.estimator for name, r in results.items()}, jsonable(metadata),
                         feature_version=FEATURE_VERSION, extra_files=extra)
