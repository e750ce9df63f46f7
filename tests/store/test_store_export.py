"""Export: a store filled through the repository becomes a data set that passes the training-data contract's
validator, with cancel outcomes derived from outcomes and events, and nothing invented for missing data."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pandas as pd
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from cli import main
from retention.features import compute_features, discover_spec
from retention.offers import load_catalog
from retention.utc import naive_utc
from store.export import export_dataset
from store.models import Decision
from training.dataset import open_dataset, resolve_window_end
from training.evaluate import subscribed_customers
from training.validation import validate_dataset

BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(days=60)
SIGNUP = (BASE - timedelta(days=400)).isoformat()


def _event(event_id: str, type_: str, customer_id: str, at: datetime, payload: dict, decision_id=None) -> dict:
    return {"event_id": event_id, "type": type_, "customer_id": customer_id, "occurred_at": at, "payload": payload,
            "decision_id": decision_id}


def _decision(request_id: str, customer_id: str, at: datetime, offer_id: str, request: dict) -> dict:
    offer_type = offer_id.split("_")[0]
    return {"request_id": request_id, "body_hash": request_id, "client": "app", "customer_id": customer_id,
            "created_at": at, "reason": "too_expensive", "request": request, "features": {}, "scores": {},
            "offer_id": offer_id, "offer": {"type": offer_type}, "propensity": 0.5, "reason_codes": [],
            "policy_version": "p1", "catalog_version": "c1", "fallback": False, "nps_segment": "none",
            "latency_ms": 1.0}


@pytest.fixture
def filled(store):
    """Five customers: c1 fully described by events, c2 completed by its decision request, c3 known only from
    a decision, c4 without a signup time (skipped), c5 never described (its events are skipped)."""
    profile = {"plan_id": "plus_monthly", "billing_period": "monthly", "price": 9.99, "currency": "EUR",
               "billing_channel": "web", "country": "DE"}
    store.record_events([
        _event("cust-c1-old", "customer", "c1", BASE - timedelta(days=10), {**profile, "signup_at": SIGNUP, "price": 5.0}),
        _event("cust-c1", "customer", "c1", BASE, {**profile, "signup_at": SIGNUP, "household_size": 3,
                                                    "age_band": "25-34"}),
        _event("cust-c2", "customer", "c2", BASE, {k: v for k, v in profile.items() if k != "billing_channel"}
               | {"signup_at": SIGNUP, "age_band": 40}),
        _event("cust-c4", "customer", "c4", BASE, profile),
        _event("nps-c1", "nps", "c1", BASE + timedelta(days=1), {"score": 9, "comment": "great"}),
        _event("nps-c2", "nps", "c2", BASE + timedelta(days=1), {"score": 3}),
        _event("nps-c5", "nps", "c5", BASE + timedelta(days=1), {"score": 5}),
        _event("nps-bad", "nps", "c1", BASE + timedelta(days=2), {"score": 11}),
        _event("use-c1", "usage", "c1", BASE + timedelta(days=2),
               {"day": (BASE + timedelta(days=1)).date().isoformat(), "metric": "listening_minutes", "value": 42}),
        _event("pay-c1", "payment", "c1", BASE + timedelta(days=3), {"amount": 9.99}),
        _event("still-c1", "still_active", "c1", BASE + timedelta(days=4), {}),
    ])
    d1, _ = store.record_decision(_decision("r1", "c1", BASE + timedelta(days=5), "pause_1m", {"plan_id": "plus_monthly"}))
    d2, _ = store.record_decision(_decision("r2", "c2", BASE + timedelta(days=5), "none",
                                            {"billing_channel": "partner", "plan_id": "ignored_event_wins"}))
    d3, _ = store.record_decision(_decision("r3", "c3", BASE + timedelta(days=6), "discount_30_3m",
                                            {**profile, "signup_at": SIGNUP, "billing_channel": "ios"}))
    store.record_decision(_decision("r4", "c4", BASE + timedelta(days=6), "pause_1m", {}))
    store.record_outcome(d1["decision_id"], "accepted", BASE + timedelta(days=5, minutes=1))
    store.record_outcome(d1["decision_id"], "cancelled", BASE + timedelta(days=50))
    store.record_outcome(d3["decision_id"], "declined", BASE + timedelta(days=6, minutes=1))
    store.record_events([
        _event("end-c2", "cancelled", "c2", BASE + timedelta(days=5, minutes=2), {}, decision_id=d2["decision_id"]),
        _event("end-c3", "cancelled", "c3", BASE + timedelta(days=20), {}),
        _event("end-c3-old", "cancelled", "c3", BASE - timedelta(days=100), {}),  # before the request: ignored
    ])
    return store


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_a_partial_export_passes_the_contract_validator_and_counts_what_it_left_out(filled, tmp_path, fmt):
    out = tmp_path / "export"
    manifest = export_dataset(filled, out, fmt=fmt, allow_partial=True)
    report = validate_dataset(out)
    assert report.errors == [], report.format()
    assert manifest["rows"] == {"customers": 3, "cancel_requests": 3, "nps_responses": 2, "usage": 1, "payments": 1}
    assert report.counts == manifest["rows"]
    assert manifest["skipped"] == {"customers": {"signup_at missing": 2},
                                   "cancel_requests": {"customer not exported": 1},
                                   "nps_responses": {"customer not exported": 1, "score out of range": 1}}
    written = json.loads((out / "dataset.json").read_text())
    assert written["window_end"] == manifest["window_end"] and written["skipped"] == manifest["skipped"]
    assert resolve_window_end(out, None) == datetime.fromisoformat(manifest["window_end"])


def naive(t: datetime) -> datetime:
    """Exported times are naive UTC, as the simulator writes them."""
    return t.replace(tzinfo=None)


def _table(out, name, fmt):
    path = out / f"{name}.{fmt}"
    return (pq.read_table(path) if fmt == "parquet" else pacsv.read_csv(path)).to_pylist()


def test_exported_rows_carry_outcomes_and_customer_attributes(filled, tmp_path):
    out = tmp_path / "export"
    export_dataset(filled, out, customer_attributes={"household_size": "number", "tenure_band": "string"},
                   allow_partial=True)
    cancels = {r["request_id"]: r for r in _table(out, "cancel_requests", "parquet")}
    assert (cancels["r1"]["offer_id"], cancels["r1"]["accepted"]) == ("pause_1m", True)
    assert cancels["r1"]["ended_at"] == naive(BASE + timedelta(days=50))  # the decision's cancelled outcome
    assert (cancels["r2"]["offer_id"], cancels["r2"]["accepted"]) == (None, False)  # "none" shown as empty
    assert cancels["r2"]["ended_at"] == naive(BASE + timedelta(days=5, minutes=2))  # event naming the decision
    assert cancels["r3"]["ended_at"] == naive(BASE + timedelta(days=20))  # the customer's next cancellation
    assert cancels["r3"]["propensity"] == 0.5 and cancels["r3"]["requested_at"] == naive(BASE + timedelta(days=6))
    customers = {r["customer_id"]: r for r in _table(out, "customers", "parquet")}
    assert customers["c1"]["price"] == 9.99  # the latest customer event wins
    assert customers["c2"]["billing_channel"] == "partner" and customers["c2"]["plan_id"] == "plus_monthly"
    assert customers["c3"]["billing_channel"] == "ios"  # known only from its decision request
    assert customers["c1"]["household_size"] == 3.0 and customers["c3"]["household_size"] is None
    assert customers["c2"]["age_band"] == "40" and customers["c1"]["tenure_band"] is None
    nps = _table(out, "nps_responses", "parquet")
    assert [(r["customer_id"], r["score"], r["comment"]) for r in nps] == [("c1", 9, "great"), ("c2", 3, None)]


def test_two_clients_sharing_a_request_id_are_exported_under_distinct_ids(filled, tmp_path):
    """Idempotency keys are scoped per client, the contract's request_id is unique: decisions of two clients
    under one request_id are exported as <client>:<request_id> (the logged decisions under the same ids, as
    training joins them), every other request id as it is; one that even so equals a stored request id gets
    the decision id too."""
    other = {**_decision("r1", "c1", BASE + timedelta(days=7), "none", {}), "client": "web"}
    d_web, created = filled.record_decision(other)
    assert created
    filled.record_decision({**_decision("app:r1", "c3", BASE + timedelta(days=8), "none", {}), "client": "web"})
    d_app = filled.get_decision_by_request("app", "r1")
    out = tmp_path / "export"
    export_dataset(filled, out, allow_partial=True)
    assert validate_dataset(out).errors == []
    ids = [r["request_id"] for r in _table(out, "cancel_requests", "parquet")]
    assert len(ids) == len(set(ids))
    assert sorted(ids) == sorted(["r2", "r3", f"app:r1:{d_app['decision_id']}", "web:r1", "app:r1"])
    logged = pq.read_table(out / "_logged" / "decisions.parquet").to_pylist()
    assert {r["decision_id"]: r["request_id"] for r in logged}[d_web["decision_id"]] == "web:r1"


def test_since_limits_history_but_keeps_customers(filled, tmp_path):
    manifest = export_dataset(filled, tmp_path / "recent", since=BASE + timedelta(days=5, hours=12), fmt="csv",
                              allow_partial=True)
    assert manifest["rows"]["cancel_requests"] == 1 and manifest["rows"]["customers"] == 3
    assert manifest["window_start"] == (BASE + timedelta(days=5, hours=12)).isoformat()
    assert validate_dataset(tmp_path / "recent").errors == []


def test_an_empty_store_exports_an_empty_valid_data_set(store, tmp_path):
    manifest = export_dataset(store, tmp_path / "empty")
    assert set(manifest["rows"].values()) == {0}
    assert validate_dataset(tmp_path / "empty").errors == []


def test_export_refuses_a_non_empty_directory(store, tmp_path):
    (tmp_path / "keep.txt").write_text("precious")
    with pytest.raises(ValueError, match="not an empty directory"):
        export_dataset(store, tmp_path)
    with pytest.raises(ValueError, match="format"):
        export_dataset(store, tmp_path / "new", fmt="xlsx")


# ---------------------------------------------------------------- customers the store knows without events

AS_OF = BASE - timedelta(days=3)  # when the loaded feature snapshot was computed
SNAPSHOT = {  # what `retention load-features --data` stores: feature values, no signup time, no currency
    "s1": {"tenure_days": 400.25, "plan_id": "plus_monthly", "price": 14.95, "billing_period": "monthly",
           "billing_channel": "web", "country": "GB", "nps_segment": "none", "attr_age_band": "25-34",
           "attr_household_size": 2.0},
    "s2": {"tenure_days": 31.0, "plan_id": "basic_annual", "price": 99.0, "billing_period": "annual",
           "billing_channel": "ios", "country": "US", "nps_segment": "detractor", "attr_age_band": None,
           "attr_household_size": 4.0},
}


def _service_request(customer_id: str, **fields) -> dict:
    """What the service stores as a decision's request: the validated body without request id and free text."""
    return {"customer_id": customer_id, "reason": "too_expensive", "price": 14.95, "billing_period": "monthly",
            "billing_channel": "web", "plan_id": "plus_monthly", **fields}


@pytest.fixture
def snapshot_only(store):
    """The demo store of issue 14: a loaded feature snapshot, decisions and outcomes, no `customer` event."""
    store.replace_feature_snapshot(SNAPSHOT.items(), AS_OF, "f1-test", "m-test", source="var/data/demo")
    d1, _ = store.record_decision(_decision("q1", "s1", BASE, "pause_1m", _service_request("s1", currency="GBP")))
    d2, _ = store.record_decision(_decision("q2", "s1", BASE + timedelta(days=40), "none",
                                            _service_request("s1", currency="GBP")))
    d3, _ = store.record_decision(_decision("q3", "s2", BASE + timedelta(days=1), "discount_30_3m",
                                            _service_request("s2", price=99.0, billing_period="annual",
                                                             billing_channel="ios", plan_id=None, currency="USD")))
    store.record_outcome(d1["decision_id"], "shown", BASE + timedelta(seconds=5))
    store.record_outcome(d1["decision_id"], "accepted", BASE + timedelta(minutes=1))
    store.record_outcome(d3["decision_id"], "declined", BASE + timedelta(days=1, minutes=1))
    store.record_outcome(d3["decision_id"], "cancelled", BASE + timedelta(days=1, minutes=2))
    return store


def test_decisions_of_customers_known_only_from_the_feature_snapshot_are_all_exported(snapshot_only, tmp_path):
    # Before this fix the same store exported 0 rows and exit 0: "signup_at missing" for every customer.
    out = tmp_path / "export"
    manifest = export_dataset(snapshot_only, out)
    assert manifest["skipped"] == {}
    assert manifest["rows"]["customers"] == 2 and manifest["rows"]["cancel_requests"] == 3
    assert validate_dataset(out).errors == []
    customers = {r["customer_id"]: r for r in _table(out, "customers", "parquet")}
    # signup_at = the snapshot's as_of minus its tenure_days
    assert customers["s1"]["signup_at"] == naive(AS_OF - timedelta(days=400.25))
    assert customers["s2"]["signup_at"] == naive(AS_OF - timedelta(days=31))
    assert (customers["s1"]["country"], customers["s1"]["currency"], customers["s1"]["price"]) == ("GB", "GBP", 14.95)
    # the request said annual/ios/99 and no plan: the plan comes from the snapshot
    assert (customers["s2"]["plan_id"], customers["s2"]["billing_channel"]) == ("basic_annual", "ios")
    assert (customers["s1"]["age_band"], customers["s1"]["household_size"]) == ("25-34", 2.0)
    assert (customers["s2"]["age_band"], customers["s2"]["household_size"]) == (None, 4.0)
    cancels = {r["request_id"]: r for r in _table(out, "cancel_requests", "parquet")}
    assert (cancels["q1"]["offer_id"], cancels["q1"]["accepted"], cancels["q1"]["ended_at"]) == ("pause_1m", True, None)
    assert cancels["q3"]["ended_at"] == naive(BASE + timedelta(days=1, minutes=2))


def test_a_customer_gone_from_the_snapshot_is_exported_from_the_features_of_its_decision(store, tmp_path):
    # A later load left s3 out (it cancelled, say); the decision still records what the model saw then.
    seen = {"tenure_days": 90.5, "plan_id": "lite_monthly", "price": 4.99, "billing_period": "monthly",
            "billing_channel": "android", "country": "FR", "attr_age_band": "50+", "nps_last": None}
    record = _decision("g1", "s3", BASE, "none", _service_request("s3", price=4.99, billing_channel="android",
                                                                  plan_id=None, currency="EUR"))
    store.record_decision({**record, "features": seen})
    manifest = export_dataset(store, tmp_path / "export")
    (row,) = _table(tmp_path / "export", "customers", "parquet")
    assert row["signup_at"] == naive(BASE - timedelta(days=90.5))
    assert (row["plan_id"], row["country"], row["age_band"]) == ("lite_monthly", "FR", "50+")
    assert manifest["customer_sources"]["signup_at"] == {"decision features": 1}
    assert manifest["customer_sources"]["billing_channel"] == {"decision request": 1}


def test_a_customer_who_cancelled_before_the_snapshot_is_exported_from_the_loaded_data_sets_row(store, tmp_path):
    # `load-features --data` keeps every customer's row of the data set; the snapshot only the subscribed ones.
    rows = [{"customer_id": "s1", "signup_at": AS_OF - timedelta(days=400.25), "plan_id": "plus_monthly",
             "billing_period": "monthly", "price": 14.95, "currency": "GBP", "billing_channel": "web", "country": "GB",
             "age_band": "25-34", "household_size": 2, "acquisition": "promo"},
            {"customer_id": "gone", "signup_at": datetime(2024, 2, 29, 13, 5, 7, tzinfo=UTC), "plan_id": "lite_monthly",
             "billing_period": "monthly", "price": 7.95, "currency": "CAD", "billing_channel": "android",
             "country": "CA", "age_band": None, "household_size": 1, "acquisition": "organic"}]
    store.replace_feature_snapshot([("s1", SNAPSHOT["s1"])], AS_OF, "f1-test", "m-test", source="var/data/demo",
                                   customers=rows)
    # Requests without currency or signup time; the service scored "gone" as an unknown customer.
    store.record_decision(_decision("d1", "s1", BASE, "none", _service_request("s1")))
    store.record_decision(_decision("d2", "gone", BASE, "pause_1m",
                                    _service_request("gone", plan_id="lite_monthly", price=5.95,
                                                     billing_channel="android")))
    manifest = export_dataset(store, tmp_path / "export")
    assert manifest["skipped"] == {} and manifest["rows"]["cancel_requests"] == 2
    customers = {r["customer_id"]: r for r in _table(tmp_path / "export", "customers", "parquet")}
    assert customers["gone"] == {"customer_id": "gone", "signup_at": datetime(2024, 2, 29, 13, 5, 7),
                                 "plan_id": "lite_monthly", "billing_period": "monthly", "price": 5.95,
                                 "currency": "CAD", "billing_channel": "android", "country": "CA",
                                 "age_band": None, "household_size": 1.0, "acquisition": "organic"}
    assert (customers["s1"]["currency"], customers["s1"]["signup_at"]) == ("GBP", naive(AS_OF - timedelta(days=400.25)))
    sources = manifest["customer_sources"]
    assert sources["currency"] == {"loaded data set": 2} and sources["signup_at"] == {"loaded data set": 2}
    assert sources["price"] == {"decision request": 2}  # what the frontend says now wins
    assert validate_dataset(tmp_path / "export").errors == []


def _count(store, table) -> int:
    with store.transaction() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar()


def test_every_decision_is_exported_exactly_once_with_its_stored_propensity(snapshot_only, tmp_path):
    store = snapshot_only
    store.record_events([_event("cust-e1", "customer", "e1", BASE - timedelta(days=30), {
        "signup_at": SIGNUP, "plan_id": "plus_monthly", "billing_period": "monthly", "price": 9.99,
        "currency": "EUR", "billing_channel": "web", "country": "DE"})])
    propensities = {"q1": 0.5}
    for i, (days, offer, p) in enumerate([(2, "pause_1m", 0.25), (3, "none", 1.0), (59, "discount_30_3m", 0.1),
                                          (59.9, "credit_5", 0.8)]):
        d, _ = store.record_decision({**_decision(f"e{i}", "e1", BASE + timedelta(days=days), offer,
                                                  _service_request("e1")), "propensity": p})
        propensities[f"e{i}"] = p
        if i == 0:
            store.record_outcome(d["decision_id"], "accepted", BASE + timedelta(days=days, minutes=1))
    manifest = export_dataset(store, tmp_path / "export", fmt="csv")
    cancels = _table(tmp_path / "export", "cancel_requests", "csv")
    ids = [r["request_id"] for r in cancels]
    assert len(ids) == len(set(ids)) == _count(store, Decision) == manifest["rows"]["cancel_requests"] == 7
    assert {r["request_id"]: r["propensity"] for r in cancels if r["request_id"] in propensities} == propensities
    by_id = {r["request_id"]: r for r in cancels}
    # Decisions without any outcome (e2, e3: a day old; e1: no offer shown) are not accepted and still active.
    assert [(by_id[i]["accepted"], by_id[i]["ended_at"]) for i in ("e1", "e2", "e3")] == [(False, None)] * 3
    assert by_id["e0"]["accepted"] is True
    assert validate_dataset(tmp_path / "export").errors == []


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_export_of_a_customer_known_nowhere_exits_2_and_writes_nothing(snapshot_only, migrated_url, tmp_path):
    snapshot_only.record_decision(_decision("x1", "ghost", BASE, "none", _service_request("ghost", plan_id=None)))
    out = tmp_path / "exports" / "demo"
    result = _run("export", "--out", out, "--database-url", migrated_url)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "error: 2 row(s) of the store cannot be exported, so nothing was written to" in result.output
    assert "error:   customers: 1 signup_at missing" in result.output
    assert "error:   cancel_requests: 1 customer not exported" in result.output
    assert "--allow-partial" in result.output
    assert list((tmp_path / "exports").iterdir()) == []  # no data set, no half-written staging folder

    result = _run("export", "--out", out, "--allow-partial", "--database-url", migrated_url)
    assert result.exit_code == 0, result.output
    assert "warning: cancel_requests: left out 1 customer not exported (--allow-partial)" in result.output
    manifest = json.loads((out / "dataset.json").read_text())
    assert manifest["skipped"] == {"customers": {"signup_at missing": 1},
                                   "cancel_requests": {"customer not exported": 1}}
    assert manifest["rows"]["cancel_requests"] == 3 and validate_dataset(out).errors == []


def test_a_currency_no_source_gives_must_be_stated(store, migrated_url, tmp_path):
    store.replace_feature_snapshot(SNAPSHOT.items(), AS_OF, "f1-test", "m-test", source="var/data/demo")
    store.record_decision(_decision("c1", "s1", BASE, "none", _service_request("s1")))  # no currency in the request
    (tmp_path / "out").mkdir()  # an empty directory is a fine target
    result = _run("export", "--out", tmp_path / "out", "--database-url", migrated_url)
    assert result.exit_code == 2 and "customers: 1 currency missing" in result.output
    assert "--currency CODE" in result.output and not any((tmp_path / "out").iterdir())
    bad = _run("export", "--out", tmp_path / "out", "--currency", "pounds", "--database-url", migrated_url)
    assert bad.exit_code == 2 and "'pounds' is not an ISO 4217 currency code" in bad.output
    result = _run("export", "--out", tmp_path / "out", "--currency", "GBP", "--database-url", migrated_url)
    assert result.exit_code == 0, result.output
    (row,) = _table(tmp_path / "out", "customers", "parquet")
    assert row["currency"] == "GBP"
    assert json.loads(result.output)["customer_sources"]["currency"] == {"stated by the caller": 1}


def _replay(store, data_dir, customers: int) -> pd.DataFrame:
    """A store as the service leaves it after serving the first `customers` customers of a simulated data set:
    the snapshot `retention load-features --data` loads (features as of the window end of those still
    subscribed), and one decision per cancel request (the request the frontend sends, the features the model
    saw, the logged propensity) with its accepted and cancelled outcomes. No `customer` event at all."""
    con = open_dataset(data_dir)
    spec = discover_spec(con)
    offer_types = {o.id: o.type for o in load_catalog().offers}
    window_end = resolve_window_end(data_dir, None)
    requests = con.execute(
        "SELECT row_number() OVER (ORDER BY r.requested_at, r.request_id) AS point_id, r.*, r.requested_at AS as_of,"
        " c.price, c.billing_period, c.billing_channel, c.plan_id, c.currency, c.signup_at"
        " FROM cancel_requests r JOIN customers c USING (customer_id)"
        " WHERE r.customer_id IN (SELECT customer_id FROM customers ORDER BY customer_id LIMIT ?)"
        " ORDER BY point_id", [customers]).df()
    at_request = compute_features(con, requests[["point_id", "customer_id", "as_of"]], spec, offer_types)
    subscribed = [c for c in subscribed_customers(con, window_end) if c in set(requests["customer_id"])]
    points = pd.DataFrame({"point_id": range(len(subscribed)), "customer_id": subscribed,
                           "as_of": pd.Timestamp(naive_utc(window_end))})
    snapshot = compute_features(con, points, spec, offer_types)
    store.replace_feature_snapshot(((r["customer_id"], {n: r[n] for n in spec.names})
                                    for r in snapshot.to_dict("records")), window_end, "f1-test", "m-test",
                                   source=str(data_dir))
    for r, features in zip(requests.to_dict("records"), at_request.to_dict("records"), strict=True):
        at = r["requested_at"].to_pydatetime().replace(tzinfo=UTC)
        request = {k: r[k] for k in ("customer_id", "reason", "price", "billing_period", "billing_channel",
                                     "plan_id", "currency")}
        offer = r["offer_id"] if isinstance(r["offer_id"], str) and r["offer_id"] else "none"
        d, _ = store.record_decision({**_decision(r["request_id"], r["customer_id"], at, offer, request),
                                      "reason": r["reason"], "features": {n: features[n] for n in spec.names},
                                      "propensity": r["propensity"]})
        if r["accepted"]:
            store.record_outcome(d["decision_id"], "accepted", at + timedelta(minutes=1))
        if not pd.isna(r["ended_at"]):
            store.record_outcome(d["decision_id"], "cancelled", r["ended_at"].to_pydatetime().replace(tzinfo=UTC))
    con.close()
    return requests


@pytest.mark.slow
def test_an_export_of_decisions_and_outcomes_validates_and_retrains(sim_dir, store, migrated_url, tmp_path):
    requests = _replay(store, sim_dir, customers=900)
    out, models = tmp_path / "export", tmp_path / "models"
    result = CliRunner().invoke(main, ["export", "--out", str(out), "--database-url", migrated_url])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["rows"]["cancel_requests"] == len(requests) > 500
    exported = {r["request_id"]: r for r in _table(out, "cancel_requests", "parquet")}
    assert {k: r["propensity"] for k, r in exported.items()} == dict(zip(requests["request_id"],
                                                                          requests["propensity"], strict=True))
    # The derived sign-up times are the data set's own, to the second.
    signups = {r["customer_id"]: r["signup_at"] for r in _table(out, "customers", "parquet")}
    truth = requests.drop_duplicates("customer_id").set_index("customer_id")["signup_at"]
    assert {c: t.replace(microsecond=0) for c, t in signups.items()} == {
        c: t.to_pydatetime().replace(microsecond=0) for c, t in truth.items()}
    result = CliRunner().invoke(main, ["validate", "--data", str(out)])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["train", "--data", str(out), "--out", str(models)])
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    (version,) = models.iterdir()
    trained = json.loads((version / "metadata.json").read_text())["models"]
    # 665 decisions, enough for both models: the offer-response model learns from the logged propensities.
    assert trained["churn_risk"]["trained"] is True and trained["offer_response"]["trained"] is True, trained
