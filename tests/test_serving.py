"""Live features: a snapshot as of T0 brought forward to T1 with what happened in between must equal the
features `compute_features` computes directly as of T1 (training/serving parity across time)."""

from __future__ import annotations

import math
from datetime import UTC, timedelta

import pandas as pd
import pytest

from retention.decision import CancelRequest, NpsAnswer, PastOffer, Snapshot, UsageSummary
from retention.features import compute_features, discover_spec, feature_sql, usage_trend
from retention.offers import load_catalog
from retention.serving import live_features
from training.dataset import open_dataset, resolve_window_end

CATALOG = load_catalog()
TYPES = {o.id: o.type for o in CATALOG.offers}
# The features live_features claims to bring forward exactly (usage sums and payments need daily rows).
UPDATED = ["tenure_days", "nps_answered", "nps_count", "nps_last", "nps_prev", "nps_trend", "nps_days_since_last",
           "prior_requests", "prior_offers", "prior_accepted", "days_since_last_request",
           "days_since_last_discount", "days_since_last_pause", "nps_segment", "price", "plan_id",
           "billing_period", "billing_channel", "country"]


def _features(con, spec, customers, as_of):
    points = pd.DataFrame({"point_id": range(len(customers)), "customer_id": customers,
                           "as_of": pd.Timestamp(as_of.replace(tzinfo=None))})
    return compute_features(con, points, spec, TYPES).set_index("customer_id")


def _same(a, b) -> bool:
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return b is None or (isinstance(b, float) and math.isnan(b))
    if isinstance(a, float):
        return b is not None and abs(a - float(b)) < 1e-6
    return a == b


@pytest.fixture(scope="module")
def busy_customers(sim_dir):
    """Customers with NPS answers or cancel flows between T0 and T1, plus some quiet ones."""
    con = open_dataset(sim_dir)
    t1 = resolve_window_end(sim_dir, None) - timedelta(days=10)
    t0 = t1 - timedelta(days=40)
    naive0, naive1 = t0.replace(tzinfo=None), t1.replace(tzinfo=None)
    busy = con.execute(
        """SELECT customer_id FROM nps_responses WHERE responded_at >= ? AND responded_at < ?
           UNION SELECT customer_id FROM cancel_requests WHERE requested_at >= ? AND requested_at < ?
           ORDER BY 1 LIMIT 300""", [naive0, naive1, naive0, naive1]).df()["customer_id"].tolist()
    quiet = con.execute("SELECT customer_id FROM customers ORDER BY customer_id LIMIT 50").df()["customer_id"].tolist()
    return con, t0, t1, sorted(set(busy + quiet))


def test_a_snapshot_brought_forward_equals_features_computed_later(busy_customers):
    con, t0, t1, customers = busy_customers
    spec = discover_spec(con)
    before, after = _features(con, spec, customers, t0), _features(con, spec, customers, t1)
    n0, n1 = t0.replace(tzinfo=None), t1.replace(tzinfo=None)
    nps = con.execute("SELECT customer_id, score, responded_at FROM nps_responses WHERE responded_at >= ? "
                      "AND responded_at < ?", [n0, n1]).df()
    flows = con.execute("SELECT customer_id, offer_id, requested_at, accepted FROM cancel_requests "
                        "WHERE requested_at >= ? AND requested_at < ?", [n0, n1]).df()
    assert len(nps) > 20 and len(flows) > 50, "the window must contain events to fold in"
    checked = 0
    for cid in customers:
        row0, row1 = before.loc[cid], after.loc[cid]
        request = CancelRequest(cid, "other", row1["billing_period"], row1["billing_channel"], float(row1["price"]),
                                plan_id=row1["plan_id"], country=row1["country"])
        answers = [NpsAnswer(int(r.score), r.responded_at.to_pydatetime().replace(tzinfo=UTC))
                   for r in nps[nps["customer_id"] == cid].itertuples()]
        history = [PastOffer(o if isinstance(o, str) else "none", TYPES.get(o, "none") if isinstance(o, str) else "none",
                             r.to_pydatetime().replace(tzinfo=UTC), bool(a))
                   for o, r, a in flows[flows["customer_id"] == cid][["offer_id", "requested_at", "accepted"]]
                   .itertuples(index=False)]
        snap = Snapshot({k: (None if (isinstance(v, float) and math.isnan(v)) else v) for k, v in row0.items()}, t0)
        values, _ = live_features(spec, request, snap, t1, history, answers)
        for name in UPDATED:
            assert _same(values[name], row1[name]), (cid, name, values[name], row1[name])
        checked += 1
    assert checked == len(customers)


def test_inline_nps_answers_replace_what_the_service_knows(busy_customers):
    con, t0, _, customers = busy_customers
    spec = discover_spec(con)
    row = _features(con, spec, customers[:1], t0).iloc[0]
    snap = Snapshot(dict(row), t0)
    req = CancelRequest(customers[0], "other", "monthly", "web", 14.95,
                        nps=(NpsAnswer(9, t0 - timedelta(days=40)), NpsAnswer(3, t0 - timedelta(days=2))))
    values, codes = live_features(spec, req, snap, t0)
    assert (values["nps_last"], values["nps_prev"], values["nps_trend"], values["nps_count"]) == (3.0, 9.0, -6.0, 2.0)
    assert values["nps_segment"] == "detractor" and "nps_detractor" in codes and "nps_drop" in codes
    assert abs(values["nps_days_since_last"] - 2.0) < 1e-9
    empty, codes = live_features(spec, CancelRequest(customers[0], "other", "monthly", "web", 14.95, nps=()), snap, t0)
    assert empty["nps_count"] == 0 and empty["nps_segment"] == "none" and "nps_missing" in codes


def test_inline_usage_uses_the_same_trend_formula_as_the_sql(busy_customers):
    con, t0, _, customers = busy_customers
    spec = discover_spec(con)
    metric = spec.metrics[0]
    assert f"((coalesce(u_{metric}.s90, 0) - coalesce(u_{metric}.s30, 0)) / 2 + 1)" in feature_sql(spec)
    row = _features(con, spec, customers[:5], t0)
    for _, r in row.iterrows():
        assert abs(usage_trend(r[f"{metric}_30d"], r[f"{metric}_90d"]) - r[f"{metric}_trend"]) < 1e-9
    req = CancelRequest("x", "other", "monthly", "web", 14.95,
                        usage=(UsageSummary(metric, 10, 40, 400, active_days_30=4, days_since_last=1),))
    values, codes = live_features(spec, req, None, t0)
    assert values[f"{metric}_30d"] == 40 and values[f"{metric}_active_days_30"] == 4
    assert abs(values[f"{metric}_trend"] - math.log(41 / 181)) < 1e-12
    assert "customer_unknown" in codes


def test_an_unknown_customer_has_zero_counts_and_unknown_usage(sim_dir):
    con = open_dataset(sim_dir)
    spec = discover_spec(con)
    t = resolve_window_end(sim_dir, None)
    values, codes = live_features(spec, CancelRequest("new", "other", "monthly", "web", 9.0,
                                                      signup_at=t - timedelta(days=3)), None, t)
    assert values["prior_requests"] == 0 and values["nps_count"] == 0 and values["nps_segment"] == "none"
    assert math.isnan(values[f"{spec.metrics[0]}_30d"]) and abs(values["tenure_days"] - 3.0) < 1e-9
    assert codes[:2] == ["nps_missing", "customer_unknown"]
