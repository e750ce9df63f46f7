"""Export: a store filled through the repository becomes a data set that passes the training-data contract's
validator, with cancel outcomes derived from outcomes and events, and nothing invented for missing data."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from store.export import export_dataset
from training.dataset import resolve_window_end
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
def test_an_export_passes_the_contract_validator(filled, tmp_path, fmt):
    out = tmp_path / "export"
    manifest = export_dataset(filled, out, fmt=fmt)
    report = validate_dataset(out)
    assert report.errors == [], report.format()
    assert manifest["rows"] == {"customers": 3, "cancel_requests": 3, "nps_responses": 2, "usage": 1, "payments": 1}
    assert report.counts == manifest["rows"]
    assert manifest["skipped"] == {"customers": {"signup_at missing": 1},
                                   "cancel_requests": {"customer not exported": 1},
                                   "nps_responses": {"customer not exported": 1, "score out of range": 1}}
    assert json.loads((out / "dataset.json").read_text())["window_end"] == manifest["window_end"]
    assert resolve_window_end(out, None) == datetime.fromisoformat(manifest["window_end"])


def naive(t: datetime) -> datetime:
    """Exported times are naive UTC, as the simulator writes them."""
    return t.replace(tzinfo=None)


def _table(out, name, fmt):
    path = out / f"{name}.{fmt}"
    return (pq.read_table(path) if fmt == "parquet" else pacsv.read_csv(path)).to_pylist()


def test_exported_rows_carry_outcomes_and_customer_attributes(filled, tmp_path):
    out = tmp_path / "export"
    export_dataset(filled, out, customer_attributes={"household_size": "number", "tenure_band": "string"})
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


def test_since_limits_history_but_keeps_customers(filled, tmp_path):
    manifest = export_dataset(filled, tmp_path / "recent", since=BASE + timedelta(days=5, hours=12), fmt="csv")
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
