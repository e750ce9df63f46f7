"""The webhook outbox in the store, same bodies on SQLite and PostgreSQL: events are written with their fact
(and roll back with it), one row per matching subscription; the worker's claims are leased and disjoint
under concurrent workers; a late failure never undoes a delivery; SRM alarms are announced once; an erased
customer's queued events go too."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select
from test_store_repository import decision

from store import InvalidRecord, NotFound
from store.models import OutboxEvent

LEASE = timedelta(seconds=30)


def outbox(store) -> list[dict]:
    with store.transaction() as conn:
        return [dict(r._mapping) for r in conn.execute(select(OutboxEvent.__table__).order_by(OutboxEvent.id))]


def test_a_decision_and_an_outcome_queue_one_event_per_matching_active_subscription(store):
    decisions = store.add_subscription("http://127.0.0.1:1/d", ["decision.created"])
    everything = store.add_subscription("https://example.com/all", ["*"])
    outcomes = store.add_subscription("http://127.0.0.1:1/o", ["outcome.recorded"])
    off = store.add_subscription("http://127.0.0.1:1/off", ["*"])
    store.disable_subscription(off["id"])

    stored, _ = store.record_decision(decision(customer_id="c-wh"))
    store.record_outcome(stored["decision_id"], "shown", datetime.now(UTC))
    rows = outbox(store)
    assert sorted((r["event_type"], r["subscription_id"]) for r in rows) == sorted([
        ("decision.created", decisions["id"]), ("decision.created", everything["id"]),
        ("outcome.recorded", everything["id"]), ("outcome.recorded", outcomes["id"])])
    created = [r for r in rows if r["event_type"] == "decision.created"]
    assert created[0]["event_id"] == created[1]["event_id"] and created[0]["body"] == created[1]["body"]
    body = json.loads(created[0]["body"])
    assert set(body) == {"type", "id", "created_at", "data"} and body["id"] == created[0]["event_id"]
    assert body["data"]["decision_id"] == stored["decision_id"] and body["data"]["offer"]["type"] == "pause"
    assert "reason_text" not in body["data"] and "costs too much" not in created[0]["body"]
    assert all(r["state"] == "pending" and r["customer_id"] == "c-wh" for r in rows)

    store.record_decision(decision(customer_id="c-wh"))  # a replay of the same request: no new event
    store.record_outcome(stored["decision_id"], "shown", datetime.now(UTC))  # a repeated outcome: none either
    assert len(outbox(store)) == 4


def test_an_event_rolls_back_with_the_transaction_of_its_fact(store):
    store.add_subscription("http://127.0.0.1:1/x", ["*"])
    with pytest.raises(RuntimeError), store.transaction(write=True) as conn:
        assert store.enqueue(conn, "decision.created", {"decision_id": "d1"}) == 1
        raise RuntimeError("the fact's write failed")
    assert outbox(store) == []


def test_nothing_is_queued_without_subscribers(store):
    store.record_decision(decision())
    assert outbox(store) == []


def test_subscriptions_refuse_unknown_event_types_and_urls(store):
    with pytest.raises(InvalidRecord, match="unknown event type"):
        store.add_subscription("http://127.0.0.1:1/x", ["decision.made"])
    with pytest.raises(InvalidRecord, match="not an http"):
        store.add_subscription("ftp://x/y", ["*"])
    with pytest.raises(NotFound):
        store.rotate_subscription_secret(99, timedelta(hours=1))


def test_a_claim_is_a_lease_that_another_worker_takes_over_when_it_expires(store):
    store.add_subscription("http://127.0.0.1:1/x", ["*"])
    for i in range(3):
        store.publish("decision.created", {"n": i})
    first = store.claim_events("w1", 10, timedelta(seconds=0.5))
    assert len(first) == 3 and store.claim_events("w2", 10, LEASE) == []
    time.sleep(0.6)  # w1 died: its lease runs out
    again = store.claim_events("w2", 10, LEASE)
    assert [e["event_id"] for e in again] == [e["event_id"] for e in first]


def test_a_late_failure_of_an_expired_claim_does_not_undo_a_delivery(store):
    store.add_subscription("http://127.0.0.1:1/x", ["*"])
    store.publish("decision.created", {})
    (event,) = store.claim_events("w1", 10, timedelta(seconds=0.2))
    time.sleep(0.3)
    store.claim_events("w2", 10, LEASE)
    now = datetime.now(UTC)
    assert store.record_attempt(event["id"], "w2", now, 5.0, True, 204) == "delivered"
    assert store.record_attempt(event["id"], "w1", now, 5000.0, False, error="timeout",
                                retry_at=now + timedelta(seconds=1)) == "delivered"
    assert [a["ok"] for a in store.delivery_attempts()] == [False, True]  # both attempts are logged


def test_concurrent_workers_claim_disjoint_batches(store):
    store.add_subscription("http://127.0.0.1:1/x", ["*"])
    with store.transaction(write=True) as conn:
        for i in range(60):
            store.enqueue(conn, "decision.created", {"n": i})
    claimed: list[list[int]] = [[] for _ in range(4)]

    def work(k: int) -> None:
        while batch := store.claim_events(f"w{k}", 5, LEASE):
            claimed[k].extend(e["id"] for e in batch)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for ids in claimed for i in ids]
    assert len(every) == 60 and len(set(every)) == 60


def test_failures_move_to_dead_and_replay_queues_again_with_the_same_id(store):
    sub = store.add_subscription("http://127.0.0.1:1/x", ["*"])
    store.publish("decision.created", {})
    (event,) = store.claim_events("w", 10, LEASE)
    assert store.record_attempt(event["id"], "w", datetime.now(UTC), 1.0, False, 500) == "dead"
    assert store.claim_events("w", 10, LEASE) == []
    assert store.replay_events(subscription_id=sub["id"], state="dead") == 1
    (again,) = store.claim_events("w", 10, LEASE)
    assert again["event_id"] == event["event_id"] and again["attempts"] == 0


def test_rotation_signs_with_both_secrets_until_the_grace_period_ends(store):
    sub = store.add_subscription("http://127.0.0.1:1/x", ["*"])
    rotated = store.rotate_subscription_secret(sub["id"], timedelta(seconds=0.5))
    assert rotated["secret"] != sub["secret"] and rotated["secret"].startswith("whsec_")
    store.publish("decision.created", {})
    (event,) = store.claim_events("w", 10, timedelta(seconds=0.1))
    assert event["secrets"] == [rotated["secret"], sub["secret"]]
    time.sleep(0.6)
    (event,) = store.claim_events("w", 10, LEASE)
    assert event["secrets"] == [rotated["secret"]]
    assert all("secret" not in s for s in store.subscriptions())


def _srm_result(alarm: bool) -> SimpleNamespace:
    check = SimpleNamespace(alarm=alarm, observed={"a": 10, "b": 90}, expected={"a": 50.0, "b": 50.0},
                            chi2=float("inf"), p_value=1e-9)
    ok = SimpleNamespace(alarm=False)
    return SimpleNamespace(experiment="xp", definition="def1", as_of=datetime(2026, 12, 1, tzinfo=UTC),
                           srm=SimpleNamespace(stages=lambda: [("assigned", check), ("exposed", ok)]))


def test_an_srm_alarm_is_announced_once_however_often_it_is_analysed(store):
    store.add_subscription("http://127.0.0.1:1/x", ["experiment.srm_alarm"])
    assert store.publish_srm_alarms(_srm_result(alarm=False)) == 0
    assert store.publish_srm_alarms(_srm_result(alarm=True)) == 1
    assert store.publish_srm_alarms(_srm_result(alarm=True)) == 0
    (row,) = outbox(store)
    data = json.loads(row["body"])["data"]
    assert data["stage"] == "assigned" and data["chi2"] is None and data["observed"] == {"a": 10, "b": 90}


def test_erasing_a_customer_deletes_the_events_queued_about_them(store):
    store.add_subscription("http://127.0.0.1:1/x", ["*"])
    store.record_decision(decision(customer_id="gone"))
    store.record_decision(decision(request_id="req-2", customer_id="kept"))
    (event,) = [e for e in store.claim_events("w", 10, LEASE) if json.loads(e["body"])["data"]["customer_id"] == "gone"]
    store.record_attempt(event["id"], "w", datetime.now(UTC), 3.0, False, 500, retry_at=datetime.now(UTC))
    assert store.delete_customer("gone")["webhook_events"] == 1
    with store.transaction() as conn:
        assert conn.execute(select(func.count()).select_from(OutboxEvent)).scalar_one() == 1
    assert store.delivery_attempts() == []
