"""The proactive risk list (`retention at-risk`): every customer subscribed at T scored with the churn-risk
model (the features of `retention score`), the riskiest kept, each with the features behind the score
(reason codes), NPS segment and latest score, and a suggested action (retention.atrisk).

Reason codes, one method for every churn learner (boosting, the logistic baseline and their blend alike):
a feature's contribution to a customer's risk is the risk minus the risk with that one feature set to the
population's reference value (the median of the subscribed customers for a numeric feature, the most frequent
value for a categorical one), all other features kept. It costs one extra prediction per listed customer and
feature (1,000 customers x 40 features: one 40,000-row predict), needs nothing but predict_proba, and reads
as "without this, the risk would be this much lower". For the logistic model it matches the brief's
coefficient x standardised value up to the sigmoid (same sign and order within a row); SHAP values would be
exact for trees, but would need another library and a second code path for the blend. Correlated features
(nps_last and nps_segment) share the credit unevenly: each is measured with the other held at its own value.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from retention.atrisk import reason_codes, suggest_action
from retention.features import FeatureSpec
from retention.offers import Catalog
from retention.utc import naive_utc
from training.dataset import open_dataset
from training.evaluate import churn_risk_batches
from training.metrics import lift_top_decile

HORIZON_DAYS = 30


def references(feats: pd.DataFrame, columns: list[str], categorical: list[str]) -> dict:
    """The value each feature is set to when its contribution is measured (see the module docstring)."""
    out = {}
    for c in columns:
        if c in categorical:
            mode = feats[c].dropna().mode()
            out[c] = mode.iloc[0] if len(mode) else None
        else:
            out[c] = float(feats[c].median()) if feats[c].notna().any() else np.nan
    return out


def contributions(estimator, rows: pd.DataFrame, columns: list[str], refs: dict) -> tuple[np.ndarray, np.ndarray]:
    """(risk of each row, rows x columns matrix of risk minus the risk with that column at its reference)."""
    risk = estimator.predict_proba(rows[columns])[:, 1]
    n = len(rows)
    if n == 0:
        return risk, np.zeros((0, len(columns)))
    base = rows[columns].reset_index(drop=True)
    stacked = pd.concat([base] * len(columns), ignore_index=True)  # block j: every row with column j replaced
    for j, c in enumerate(columns):
        values = stacked[c].to_numpy(copy=True)
        values[j * n:(j + 1) * n] = refs[c]
        stacked[c] = values
    without = estimator.predict_proba(stacked)[:, 1].reshape(len(columns), n).T
    return risk, risk[:, None] - without


def score_all(model: dict, meta: dict, con, catalog: Catalog, as_of: datetime, batch_size: int = 100_000,
              progress=None) -> pd.DataFrame:
    """Every customer subscribed at `as_of`: the model's columns, nps_last, nps_segment and churn_risk_30d."""
    cols = meta["feature_names"]["churn_risk"]
    keep = list(dict.fromkeys(["customer_id", "nps_last", "nps_segment", *cols]))
    parts = [feats[keep].assign(churn_risk_30d=risk)
             for feats, risk in churn_risk_batches(model, meta, con, catalog, as_of, batch_size, progress)]
    if not parts:
        raise ValueError(f"no customer is subscribed at {as_of.isoformat()} in the data (signed up before it "
                         "and not ended by then): nothing to list")
    return pd.concat(parts, ignore_index=True)


def risk_list(model: dict, meta: dict, data_dir: Path, catalog: Catalog, as_of: datetime, top: int | None = 100,
              min_risk: float | None = None, n_reasons: int = 3, batch_size: int = 100_000,
              progress=None) -> tuple[list[dict], dict]:
    """(the listed customers, riskiest first, each a dict; a summary with the base rate and counts)."""
    con = open_dataset(data_dir)
    scored = score_all(model, meta, con, catalog, as_of, batch_size, progress)
    cols = meta["feature_names"]["churn_risk"]
    spec = FeatureSpec.from_dict(meta["feature_spec"])
    base_rate = float(scored["churn_risk_30d"].mean())
    # Riskiest first; ties by customer id, so the same data give the same list.
    ranked = scored.sort_values(["churn_risk_30d", "customer_id"], ascending=[False, True], kind="stable")
    if min_risk is not None:
        ranked = ranked[ranked["churn_risk_30d"] >= min_risk]
    if top is not None:
        ranked = ranked.head(top)
    ranked = ranked.reset_index(drop=True)
    refs = references(scored, cols, spec.categorical)
    _, contrib = contributions(model["churn_risk"], ranked, cols, refs)
    reasons = reason_codes(contrib, cols, n_reasons)
    t = naive_utc(as_of)
    listed = []
    for i, r in ranked.iterrows():
        segment = r["nps_segment"] or "none"
        risk = float(r["churn_risk_30d"])
        listed.append({
            "rank": i + 1, "customer_id": r["customer_id"], "churn_risk_30d": round(risk, 6),
            "nps_segment": segment, "nps_last": None if pd.isna(r["nps_last"]) else int(r["nps_last"]),
            "suggested_action": suggest_action(segment, risk, base_rate),
            "reason_codes": [name for name, _ in reasons[i]],
            "reasons": [{"feature": name, "value": _plain(r[name]), "contribution": round(c, 6)}
                        for name, c in reasons[i]],
        })
    summary = {"as_of": t.isoformat() + "Z", "model_version": meta["version"], "subscribed": len(scored),
               "listed": len(listed), "base_rate": round(base_rate, 6),
               "reason_method": "risk minus the risk with the feature at the population median (numeric) or "
                                "most frequent value (categorical)",
               "actions": {a: sum(1 for x in listed if x["suggested_action"] == a)
                           for a in dict.fromkeys(x["suggested_action"] for x in listed)}}
    return listed, summary


def _plain(value):
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def outcomes_after(con, customer_ids: np.ndarray, as_of: datetime, days: int = HORIZON_DAYS) -> pd.DataFrame:
    """For each customer: a cancel request in (as_of, as_of + days] (what the churn model predicts), and the
    subscription ending in that period (an unsaved request), from the data's own rows."""
    t = naive_utc(as_of)
    end = t + timedelta(days=days)
    con.register("listed_ids", pd.DataFrame({"customer_id": customer_ids}))
    try:
        df = con.execute(
            """
            SELECT l.customer_id,
                   coalesce(bool_or(r.requested_at > ? AND r.requested_at <= ?), false) AS requested,
                   coalesce(bool_or(r.ended_at > ? AND r.ended_at <= ?), false) AS ended
            FROM listed_ids l LEFT JOIN cancel_requests r USING (customer_id)
            GROUP BY l.customer_id
            """,
            [t, end, t, end],
        ).df()
    finally:
        con.unregister("listed_ids")
    return pd.DataFrame({"customer_id": customer_ids}).merge(df, on="customer_id", how="left")


def top_decile_lift(risk: np.ndarray, outcome: np.ndarray) -> dict:
    """The share of the riskiest tenth with the outcome, over the share of everyone: how much better the list
    finds who will cancel than picking customers at random. The lift is the model report's
    (training.metrics.lift_top_decile: the top ceil(n/10), ties at the cut shared)."""
    outcome = np.asarray(outcome, dtype=bool)
    if len(outcome) == 0:
        raise ValueError("no customers to measure a lift on")
    overall = float(outcome.mean())
    # Only the order matters: ranks scaled to (0, 1] let any risk score through the metric's probability check.
    ranks = rankdata(np.asarray(risk, dtype="float64")) / len(outcome)
    lift = None if overall == 0 else lift_top_decile(outcome, ranks)
    return {"customers": int(len(outcome)), "top": -(-len(outcome) // 10), "positives": int(outcome.sum()),
            "share_top": overall * lift if lift is not None else 0.0, "share_all": overall, "lift": lift}


def held_out_lift(model: dict, meta: dict, data_dir: Path, catalog: Catalog, as_of: datetime) -> dict:
    """The top-decile lift of the risk ranking at `as_of` on what happened in the next 30 days: for a cancel
    request (the model's label) and for the subscription ending. `model` must be trained on a window ending
    at or before `as_of` for this to be out of sample."""
    con = open_dataset(data_dir)
    scored = score_all(model, meta, con, catalog, as_of)
    out = outcomes_after(con, scored["customer_id"].to_numpy(), as_of)
    risk = scored["churn_risk_30d"].to_numpy()
    return {"as_of": naive_utc(as_of).isoformat() + "Z",
            "cancel_request": top_decile_lift(risk, out["requested"].to_numpy()),
            "subscription_ended": top_decile_lift(risk, out["ended"].to_numpy())}


def write_list(listed: list[dict], summary: dict, path: Path) -> None:
    """The list as CSV (one row a customer; reason codes joined by ';', their contributions likewise) or as
    JSON (the summary and every customer with each reason's feature value)."""
    import json

    if path.suffix == ".json":
        path.write_text(json.dumps({"summary": summary, "customers": listed}, indent=2, default=str) + "\n")
        return
    rows = [{**{k: v for k, v in x.items() if k not in ("reason_codes", "reasons")},
             "reason_codes": ";".join(x["reason_codes"]),
             "reason_contributions": ";".join(f"{r['contribution']:.4f}" for r in x["reasons"]),
             "as_of": summary["as_of"], "model_version": summary["model_version"]} for x in listed]
    columns = ["rank", "customer_id", "churn_risk_30d", "nps_segment", "nps_last", "suggested_action",
               "reason_codes", "reason_contributions", "as_of", "model_version"]
    pd.DataFrame(rows, columns=columns).astype({"nps_last": "Int64"}).to_csv(path, index=False)
