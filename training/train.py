"""Build training sets from a validated data directory, fit both models, evaluate them on the most recent
period against baselines, and write an immutable, verifiable model version with its HTML report.

Models (one artifact, a dict of two scikit-learn Pipelines):
- offer_response: P(still subscribed 30 days after a cancel request | features as of the request, reason,
  offer shown), trained on historical cancel flows whose offers were randomised by the logging policy;
- churn_risk: P(an active customer asks to cancel within the next 30 days | features as of T).

Splits are by time: the model is fitted on points before a cutoff whose labels were already known at the
cutoff (a label gap of the label horizon), and evaluated on the points after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder

from retention.artifacts import save_artifact
from retention.compiled import compile_pipeline, save_compiled
from retention.contract import MANIFEST, SAVE_HORIZON_DAYS
from retention.features import FEATURE_VERSION, FeatureSpec, compute_features, discover_spec
from retention.jsonvalues import jsonable
from retention.model import DECISION_CATEGORICAL, DECISION_NUMERIC, decision_columns, offer_of
from retention.offers import Catalog, load_catalog
from retention.utc import naive_utc
from training.dataset import open_dataset, resolve_window_end, resolve_window_start
from training.metrics import binary_metrics, reliability_curve
from training.simulator.truth import TRUTH_FILE

CHURN_HORIZON_DAYS = 30
COMPILED_FILE = "offer_response.npz"  # the serving form of the offer-response model (retention.compiled)
CHURN_OBSERVATION_EVERY_DAYS = 30


@dataclass
class TrainConfig:
    data_dir: Path
    out_root: Path
    window_end: datetime | None = None
    eval_fraction: float = 0.25  # share of the labelled period, most recent, held out for evaluation
    seed: int = 0
    exclude_attributes: tuple[str, ...] = ()
    max_churn_points: int = 400_000
    catalog: Catalog = field(default_factory=load_catalog)
    threads: int | None = None


def build_pipeline(numeric: list[str], categorical: list[str], seed: int) -> Pipeline:
    """Everything learned from data (category codes, trees) lives in one Pipeline fitted on training rows."""
    encoder = OrdinalEncoder(
        handle_unknown="use_encoded_value", unknown_value=np.nan, encoded_missing_value=np.nan, dtype=np.float64
    )
    pre = ColumnTransformer(
        [("cat", encoder, categorical), ("num", "passthrough", numeric)], verbose_feature_names_out=False
    )
    clf = HistGradientBoostingClassifier(
        learning_rate=0.05,
        max_iter=250,
        max_leaf_nodes=7,  # shallow trees: enough for customer x reason x offer, better calibrated
        min_samples_leaf=100,
        l2_regularization=1.0,
        categorical_features=[True] * len(categorical) + [False] * len(numeric),
        # A fixed number of rounds rather than early stopping on a random slice: deterministic, and on weak
        # signals (churn) early stopping could stop at a constant model.
        early_stopping=False,
        random_state=seed,
    )
    return Pipeline([("columns", pre), ("model", clf)])


def response_rows(con, catalog: Catalog, spec: FeatureSpec, window_end: datetime) -> pd.DataFrame:
    """One row per cancel request whose 30-day outcome is known by the window end."""
    cutoff = naive_utc(window_end) - timedelta(days=SAVE_HORIZON_DAYS)
    points = con.execute(
        """
        SELECT row_number() OVER (ORDER BY requested_at, request_id) AS point_id, request_id, customer_id,
               requested_at AS as_of, reason, offer_id,
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
    feats = _features_aligned(con, points, spec, catalog)
    feats["label"] = points["label"].astype(int).to_numpy()
    return feats


def _features_aligned(con, points: pd.DataFrame, spec: FeatureSpec, catalog: Catalog) -> pd.DataFrame:
    """Features row-aligned with `points` (labels and decisions are attached by position afterwards)."""
    feats = compute_features(con, points[["point_id", "customer_id", "as_of"]], spec, catalog.offer_types)
    if not np.array_equal(feats["point_id"].to_numpy(), points["point_id"].to_numpy()):
        raise AssertionError("feature rows are not aligned with their points")
    return feats


def time_split(as_of: pd.Series, eval_fraction: float, gap_days: int) -> tuple[np.ndarray, np.ndarray, datetime]:
    """Train on points whose label was known by the cutoff, evaluate on points at or after it."""
    cutoff = as_of.quantile(1.0 - eval_fraction)
    train = (as_of + pd.Timedelta(days=gap_days)) <= cutoff
    test = as_of >= cutoff
    return train.to_numpy(), test.to_numpy(), cutoff.to_pydatetime()


def segment_rate_baseline(train: pd.DataFrame, test: pd.DataFrame) -> np.ndarray:
    """The NPS-segment baseline: the training save rate of each NPS segment (including 'none')."""
    rates = train.groupby("nps_segment")["label"].mean()
    return test["nps_segment"].map(rates).fillna(train["label"].mean()).to_numpy()


def bayes_optimal_auc(data_dir: Path, rows: pd.DataFrame) -> float | None:
    """AUC of the simulator's true save probabilities on these rows (None on real data without truth)."""
    path = Path(data_dir) / TRUTH_FILE
    if not path.exists():
        return None
    truth = pd.read_parquet(path)
    merged = rows[["request_id", "label"]].merge(truth, on="request_id", how="inner")
    if len(merged) != len(rows):
        return None
    p_true = np.array([merged.at[i, f"p_{o}"] for i, o in enumerate(merged["logged_offer"])])
    return float(roc_auc_score(merged["label"], p_true))


def _evaluate(pipe: Pipeline, train: pd.DataFrame, test: pd.DataFrame, cols: list[str]) -> tuple[dict, dict]:
    y = test["label"].to_numpy()
    p_model = pipe.predict_proba(test[cols])[:, 1]
    p_segment = segment_rate_baseline(train, test)
    p_prior = np.full(len(test), train["label"].mean())
    metrics = {
        "model": binary_metrics(y, p_model),
        "baseline_nps_segment": binary_metrics(y, p_segment),
        "baseline_prior": binary_metrics(y, p_prior),
    }
    curves = {
        "model": reliability_curve(y, p_model),
        "baseline_nps_segment": reliability_curve(y, p_segment),
    }
    return metrics, curves


def fit_and_evaluate(rows: pd.DataFrame, numeric: list[str], categorical: list[str], cfg: TrainConfig,
                     gap_days: int) -> tuple[Pipeline, dict, dict, dict, np.ndarray]:
    train_mask, test_mask, cutoff = time_split(rows["as_of"], cfg.eval_fraction, gap_days)
    train, test = rows[train_mask], rows[test_mask]
    cols = numeric + categorical
    pipe = build_pipeline(numeric, categorical, cfg.seed)
    pipe.fit(train[cols], train["label"].to_numpy())
    metrics, curves = _evaluate(pipe, train, test, cols)
    split = {
        "cutoff": cutoff.isoformat(),
        "label_gap_days": gap_days,
        "train_rows": int(train_mask.sum()),
        "eval_rows": int(test_mask.sum()),
        "train_from": rows["as_of"][train_mask].min().isoformat(),
        "eval_to": rows["as_of"][test_mask].max().isoformat(),
        "boosting_iterations": int(pipe.named_steps["model"].n_iter_),
    }
    # Refit on every labelled row for the artifact that will serve: the evaluation above is the honest
    # estimate of a model trained up to the cutoff; the served model also learns from the latest period.
    final = build_pipeline(numeric, categorical, cfg.seed)
    final.fit(rows[cols], rows["label"].to_numpy())
    return final, metrics, curves, split, test_mask


def train_version(cfg: TrainConfig, progress=None) -> Path:
    """Train both models and write `<out_root>/<version>/` (model.joblib, offer_response.npz, metadata.json).
    The HTML report is the caller's to add (reports.model.write_report; `retention train` does)."""
    step = progress or (lambda _msg: None)
    con = open_dataset(cfg.data_dir, threads=cfg.threads)
    window_end = resolve_window_end(cfg.data_dir, cfg.window_end)
    window_start = resolve_window_start(con, cfg.data_dir)
    if window_start is None:
        raise ValueError(f"{cfg.data_dir}: {MANIFEST} has no window_start and there are no usage rows to tell "
                         "where the history begins; add window_start to the manifest")
    spec = discover_spec(con, cfg.exclude_attributes)

    step("offer-response features")
    resp = response_rows(con, cfg.catalog, spec, window_end)
    if resp["label"].nunique() < 2 or len(resp) < 200:
        raise ValueError(f"{cfg.data_dir}: too few labelled cancel requests to train ({len(resp)})")
    resp_numeric = spec.numeric + DECISION_NUMERIC
    resp_categorical = spec.categorical + DECISION_CATEGORICAL
    step("offer-response model")
    resp_pipe, resp_metrics, resp_curves, resp_split, test_mask = fit_and_evaluate(
        resp, resp_numeric, resp_categorical, cfg, SAVE_HORIZON_DAYS)
    bayes = bayes_optimal_auc(cfg.data_dir, resp[test_mask])
    if bayes is not None:
        resp_metrics["bayes_optimal_auc"] = bayes
        resp_metrics["auc_share_of_bayes"] = resp_metrics["model"]["roc_auc"] / bayes

    step("churn-risk features")
    churn = churn_rows(con, spec, cfg.catalog, window_start, window_end, cfg.max_churn_points, cfg.seed)
    step("churn-risk model")
    churn_pipe, churn_metrics, churn_curves, churn_split, _ = fit_and_evaluate(
        churn, spec.numeric, spec.categorical, cfg, CHURN_HORIZON_DAYS)

    step("writing artifact")
    compiled, probe_X, probe_p, diff = _compile_with_probe(resp_pipe, resp[test_mask], resp_numeric + resp_categorical)
    metadata = {
        "data_dir": str(cfg.data_dir),
        "data_window": {"start": window_start.isoformat(), "end": window_end.isoformat()},
        "row_counts": {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                       for t in ("customers", "nps_responses", "usage", "payments", "cancel_requests")},
        "feature_spec": spec.to_dict(),
        "feature_names": {
            "offer_response": resp_numeric + resp_categorical,
            "churn_risk": spec.numeric + spec.categorical,
        },
        "catalog_version": cfg.catalog.version,
        "offers": list(cfg.catalog.ids),
        "splits": {"offer_response": resp_split, "churn_risk": churn_split},
        "metrics": {"offer_response": resp_metrics, "churn_risk": churn_metrics},
        "reliability": {"offer_response": resp_curves, "churn_risk": churn_curves},
        "params": {"seed": cfg.seed, "eval_fraction": cfg.eval_fraction,
                   "model": resp_pipe.named_steps["model"].get_params()},
        "compiled": {"offer_response": {"file": COMPILED_FILE, "probe_rows": len(probe_p),
                                        "max_abs_diff_vs_pipeline": diff}},
    }
    metadata = jsonable(metadata)
    version_dir = save_artifact(
        cfg.out_root, {"offer_response": resp_pipe, "churn_risk": churn_pipe}, metadata,
        feature_version=FEATURE_VERSION,
        extra_files={COMPILED_FILE: lambda path: save_compiled(compiled, path, probe_X, probe_p)},
    )
    return version_dir


def _compile_with_probe(pipe: Pipeline, rows: pd.DataFrame, cols: list[str], n: int = 512):
    """The offer-response Pipeline compiled for serving, and a probe of `n` held-out rows with the Pipeline's
    probabilities. Refuses (ValueError) if the compiled scorer disagrees with the Pipeline by more than 1e-9."""
    probe = rows[cols].head(n)
    compiled = compile_pipeline(pipe)
    X = compiled.encode(probe.to_dict("records"))
    expected = pipe.predict_proba(probe)[:, 1]
    diff = float(np.abs(compiled.predict_proba(X) - expected).max())
    if diff > 1e-9:
        raise ValueError(f"the compiled offer-response scorer differs from the Pipeline by {diff:.3g}")
    return compiled, X, expected, diff
