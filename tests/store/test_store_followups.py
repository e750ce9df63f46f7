"""Follow-up tasks in the store, same test bodies on SQLite and PostgreSQL: made in the transaction of the
NPS event or decision, one active task per customer (also under concurrent writers), claim and close
idempotent, the list's filters, the counts /metrics shows, the report's records, erasure."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from test_store_repository import decision

from retention.followups import FollowupRules
from store import Conflict, NotFound, Store
from store.models import Event, FollowupTask

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
H48 = timedelta(hours=48)


def nps(event_id: str, customer_id: str, score: int, at: datetime) -> dict:
    return {"event_id": event_id, "type": "nps", "customer_id": customer_id, "occurred_at": at,
            "payload": {"score": score}}


def tasks(store: Store, customer_id: str | None = None) -> list[dict]:
    out = [t for s in ("open", "claimed", "closed", "holdout") for t in store.list_followups(s, limit=1000)]
    return [t for t in out if customer_id is None or t["customer_id"] == customer_id]


def test_every_detractor_answer_makes_one_open_task_per_customer_due_48_hours_after_it(store):
    store.record_events([nps("e1", "c1", 3, T0), nps("e2", "c2", 6, T0 + timedelta(minutes=5)),
                         nps("e3", "c3", 0, T0), nps("e4", "c4", 2, T0)])
    found = {t["customer_id"]: t for t in tasks(store)}
    assert sorted(found) == ["c1", "c2", "c3", "c4"]
    assert found["c2"]["due_at"] == T0 + timedelta(minutes=5) + H48
    assert found["c1"]["status"] == "open" and found["c1"]["source"] == "nps"
    assert (found["c1"]["score"], found["c1"]["trend"], found["c1"]["sample_rate"]) == (3, "first_answer", 1.0)
    # A retry of the batch is a duplicate: nothing changes; a repeat answer updates the same task.
    store.record_events([nps("e1", "c1", 3, T0)])
    store.record_events([nps("e5", "c1", 1, T0 + timedelta(hours=30))])
    (c1,) = tasks(store, "c1")
    assert c1["task_id"] == found["c1"]["task_id"] and (c1["score"], c1["previous_score"], c1["trend"]) == (1, 3, "dropped")
    assert c1["due_at"] == T0 + H48 and c1["answered_at"] == T0 + timedelta(hours=30) and c1["event_id"] == "e5"


def test_an_answer_arriving_late_makes_the_task_due_earlier_but_keeps_the_latest_score(store):
    store.record_events([nps("e1", "c1", 5, T0)])
    store.record_events([nps("e0", "c1", 2, T0 - timedelta(days=1))])
    (t,) = tasks(store, "c1")
    assert (t["score"], t["due_at"]) == (5, T0 - timedelta(days=1) + H48)


def test_a_trend_uses_the_stored_answer_before(store):
    store.record_events([nps("e1", "c1", 9, T0)])  # a promoter: sampled or not, it is the answer before
    store.record_events([nps("e2", "c1", 4, T0 + timedelta(days=3))])
    (t,) = tasks(store, "c1")
    assert (t["score"], t["previous_score"], t["trend"]) == (4, 9, "dropped")


def test_no_event_is_stored_without_its_task(store, monkeypatch):
    def broken(*_a, **_k):
        raise RuntimeError("the task write fails")

    monkeypatch.setattr(Store, "_apply_triggers", broken)
    with pytest.raises(RuntimeError):
        store.record_events([nps("e1", "c1", 3, T0), nps("e2", "c2", 8, T0)])
    with store.transaction() as conn:
        assert conn.execute(select(func.count()).select_from(Event)).scalar_one() == 0
    with pytest.raises(RuntimeError):
        store.record_decision(decision(offer_id="followup", offer={"type": "followup"}))
    assert store.get_decision_by_request("app", "req-1") is None


def test_inline_answers_of_a_decision_make_and_update_the_task(store):
    request = {"customer_id": "c1", "nps": [{"score": 8, "responded_at": (T0 - timedelta(days=40)).isoformat()},
                                            {"score": 4, "responded_at": T0.isoformat()}]}
    store.record_decision(decision(request=request, nps_segment="detractor", p_stay=0.35,
                                   created_at=T0 + timedelta(hours=2)))
    (t,) = tasks(store, "c1")
    assert (t["score"], t["previous_score"], t["trend"], t["due_at"]) == (4, 8, "dropped", T0 + H48)
    assert (t["reason"], t["churn_risk"]) == ("too_expensive", pytest.approx(0.65))
    stored = store.get_decision_by_request("app", "req-1")
    assert t["decision_id"] == stored["decision_id"]
    # The same answers sent again with the next decision change nothing but the links.
    store.record_decision(decision("req-2", request=request, nps_segment="detractor", p_stay=0.5,
                                   created_at=T0 + timedelta(hours=3)))
    (again,) = tasks(store, "c1")
    assert again["task_id"] == t["task_id"] and again["due_at"] == T0 + H48 and again["churn_risk"] == 0.5
    # ...and once the task is closed, an old answer re-sent inline opens no new one.
    store.close_followup(t["task_id"], "resolved")
    store.record_decision(decision("req-3", request=request, nps_segment="detractor",
                                   created_at=T0 + timedelta(days=3)))
    assert [x["status"] for x in tasks(store, "c1")] == ["closed"]


def test_a_follow_up_decision_makes_a_task_and_a_plain_one_does_not(store):
    store.record_decision(decision("r-plain", customer_id="c0"))
    assert tasks(store, "c0") == []
    d, _ = store.record_decision(decision("r-fu", customer_id="c1", offer_id="followup", offer={"type": "followup"},
                                          reason="technical", created_at=T0, p_stay=0.2))
    (t,) = tasks(store, "c1")
    assert (t["source"], t["segment"], t["due_at"], t["decision_id"]) == ("decision", "none", T0 + H48, d["decision_id"])
    assert t["score"] is None and t["trend"] == "no_answer" and t["churn_risk"] == pytest.approx(0.8)
    # A replay of the same request is not a new decision: no second task, no change.
    store.record_decision(decision("r-fu", customer_id="c1", offer_id="followup", offer={"type": "followup"},
                                   reason="technical", created_at=T0, p_stay=0.2))
    store.record_events([nps("e1", "c1", 2, T0 + timedelta(hours=1))])
    (t2,) = tasks(store, "c1")
    assert t2["task_id"] == t["task_id"] and t2["score"] == 2 and t2["due_at"] == T0 + H48


def test_concurrent_writers_leave_one_active_task_per_customer(migrated_url):
    stores = [Store.from_url(migrated_url) for _ in range(4)]
    barrier = threading.Barrier(4)
    errors = []

    def work(i: int) -> None:
        try:
            barrier.wait()
            for k in range(5):
                stores[i].record_events([nps(f"e{i}-{k}", "c1", 3, T0 + timedelta(minutes=i * 10 + k))])
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        with stores[0].transaction() as conn:
            assert conn.execute(select(func.count()).select_from(FollowupTask)).scalar_one() == 1
        (t,) = tasks(stores[0], "c1")
        assert t["due_at"] == T0 + H48 and t["answered_at"] == T0 + timedelta(minutes=34)
    finally:
        for s in stores:
            s.close()


def test_claim_and_close_are_idempotent_and_refuse_what_conflicts(store):
    store.record_events([nps("e1", "c1", 3, T0)])
    (t,) = tasks(store)
    claimed, changed = store.claim_followup(t["task_id"], "ann", now=T0 + timedelta(hours=1))
    assert changed and claimed["status"] == "claimed" and claimed["claimed_by"] == "ann"
    again, changed = store.claim_followup(t["task_id"], "ann", now=T0 + timedelta(hours=5))
    assert not changed and again == claimed
    with pytest.raises(Conflict, match="claimed by another agent"):
        store.claim_followup(t["task_id"], "bob")
    closed, changed = store.close_followup(t["task_id"], "reached", "fixed the login", now=T0 + timedelta(hours=6))
    assert changed and closed["status"] == "closed" and closed["outcome"] == "reached"
    assert store.close_followup(t["task_id"], "reached", "fixed the login") == (closed, False)
    with pytest.raises(Conflict, match="already closed as reached"):
        store.close_followup(t["task_id"], "not_reached")
    with pytest.raises(Conflict, match="another reason"):
        store.close_followup(t["task_id"], "reached", "something else")
    with pytest.raises(Conflict, match="closed: it cannot be claimed"):
        store.claim_followup(t["task_id"], "ann")
    with pytest.raises(NotFound):
        store.claim_followup("nope", "ann")
    # Closed, the customer's next detractor answer opens a new task.
    store.record_events([nps("e2", "c1", 1, T0 + timedelta(days=2))])
    assert [x["status"] for x in tasks(store, "c1")] == ["open", "closed"]


def test_the_list_filters_by_status_due_time_and_risk_soonest_first(store):
    for i, (risk, hours) in enumerate([(0.9, 30), (0.2, 10), (0.6, 20), (None, 5)]):
        if risk is None:
            store.record_events([nps(f"e{i}", f"c{i}", 2, T0 + timedelta(hours=hours))])
        else:
            store.record_decision(decision(f"r{i}", customer_id=f"c{i}", offer_id="followup",
                                           offer={"type": "followup"}, p_stay=1 - risk,
                                           created_at=T0 + timedelta(hours=hours)))
    order = [t["customer_id"] for t in store.list_followups()]
    assert order == ["c3", "c1", "c2", "c0"]
    assert [t["customer_id"] for t in store.list_followups(min_risk=0.5)] == ["c2", "c0"]
    assert [t["customer_id"] for t in store.list_followups(due_before=T0 + timedelta(hours=69))] == ["c3", "c1", "c2"]
    assert [t["customer_id"] for t in store.list_followups(limit=2)] == ["c3", "c1"]
    store.claim_followup(store.list_followups()[0]["task_id"], "ann")
    assert [t["customer_id"] for t in store.list_followups("claimed")] == ["c3"]
    assert store.followup_counts(now=T0 + timedelta(hours=59)) == {"open": 3, "claimed": 1, "overdue": 2}


def test_sampled_passives_carry_their_rate_and_a_holdout_is_stored_as_such(store):
    store.followup_rules = replace(FollowupRules(), sample={"passive": 1.0, "promoter": 0.0}, holdout_share=1.0)
    store.record_events([nps("e1", "p1", 8, T0), nps("e2", "q1", 10, T0), nps("e3", "d1", 2, T0)])
    by = {t["customer_id"]: t for t in tasks(store)}
    assert sorted(by) == ["d1", "p1"]
    assert (by["p1"]["segment"], by["p1"]["sample_rate"], by["p1"]["status"]) == ("passive", 1.0, "open")
    assert (by["d1"]["status"], by["d1"]["holdout"]) == ("holdout", True)
    with pytest.raises(Conflict, match="holdout"):
        store.claim_followup(by["d1"]["task_id"], "ann")
    assert store.followup_counts(now=T0 + timedelta(days=5))["overdue"] == 1  # the holdout is never overdue


def test_the_report_reads_the_tasks_and_every_cancellation_signal(store):
    store.record_events([nps("e1", "c1", 3, T0), nps("e2", "c2", 3, T0), nps("e3", "c3", 3, T0)])
    d, _ = store.record_decision(decision("r1", customer_id="c2", created_at=T0 + timedelta(hours=1)))
    store.record_outcome(d["decision_id"], "cancelled", T0 + timedelta(days=2))
    store.record_events([
        {"event_id": "x1", "type": "cancelled", "customer_id": "c1", "occurred_at": T0 + timedelta(days=3)},
        {"event_id": "x2", "type": "still_active", "customer_id": "c3", "decision_id": "elsewhere",
         "occurred_at": T0 + timedelta(days=30), "payload": {"day": 30, "active": False}},
        {"event_id": "x3", "type": "still_active", "customer_id": "c2", "decision_id": d["decision_id"],
         "occurred_at": T0 + timedelta(days=30), "payload": {"day": 30, "active": True}},
    ])
    found, cancellations = store.followup_report_records(T0, T0 + timedelta(days=60))
    assert sorted(t["customer_id"] for t in found) == ["c1", "c2", "c3"]
    assert cancellations == {"c1": [T0 + timedelta(days=3)], "c2": [T0 + timedelta(days=2)],
                             "c3": [T0 + timedelta(days=30)]}


def test_erasing_a_customer_erases_their_tasks(store):
    store.record_events([nps("e1", "c1", 3, T0), nps("e2", "c2", 3, T0)])
    assert len(store.customer_data("c1")["followups"]) == 1
    assert store.delete_customer("c1")["followups"] == 1
    assert [t["customer_id"] for t in tasks(store)] == ["c2"] and store.customer_data("c1")["followups"] == []


def test_a_re_sent_passive_answer_draws_the_same_as_the_first_time(store):
    store.followup_rules = replace(FollowupRules(), sample={"passive": 0.5, "promoter": 0.05})
    answers = [nps(f"e{i}", f"p{i}", 8, T0 + timedelta(minutes=i)) for i in range(200)]
    store.record_events(answers)
    first = {t["customer_id"] for t in tasks(store)}
    assert 60 < len(first) < 140  # about half, drawn
    store.record_events([{**a, "event_id": "again-" + a["event_id"]} for a in answers])  # new ids, same answers
    assert {t["customer_id"] for t in tasks(store)} == first and len(tasks(store)) == len(first)


def test_the_migration_can_be_undone_and_redone(db_url):
    from alembic import command
    from sqlalchemy import inspect

    import store.db
    from store import make_engine, upgrade
    from store.db import head_revision

    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            command.downgrade(store.db.alembic_config(conn), "0005")
        with engine.connect() as conn:
            assert not inspect(conn).has_table("followup_tasks")
    finally:
        engine.dispose()
    assert upgrade(db_url) == head_revision()


def test_a_task_is_announced_to_webhooks_created_overdue_and_closed_once_each(store):
    """followup.created in the transaction of the answer that made the task, followup.overdue when the
    webhook worker's look finds it past due (once, however often it looks), followup.closed with the close;
    the agent's free-text reason is not in the payload."""
    import json

    from store.models import OutboxEvent

    sub = store.add_subscription("http://127.0.0.1:1/crm", ["followup.created", "followup.overdue",
                                                             "followup.closed"])

    def sent() -> list[tuple[str, dict]]:
        with store.transaction() as conn:
            rows = conn.execute(select(OutboxEvent.event_type, OutboxEvent.body)
                                .where(OutboxEvent.subscription_id == sub["id"]).order_by(OutboxEvent.id)).all()
        return [(t, json.loads(b)["data"]) for t, b in rows]

    store.record_events([nps("w1", "c-wh", 2, T0), nps("w2", "c-wh", 1, T0 + timedelta(hours=1))])
    assert [t for t, _ in sent()] == ["followup.created"]  # the second answer updated the task
    task = sent()[0][1]
    assert task["customer_id"] == "c-wh" and task["score"] == 1 and task["due_at"].startswith("2026-06-03T12:00")
    assert store.announce_overdue(T0, T0 + timedelta(hours=47)) == 0
    assert store.announce_overdue(T0, T0 + timedelta(hours=49)) == 1
    assert store.announce_overdue(T0, T0 + timedelta(hours=50)) == 1  # looked at again: not queued again
    assert [t for t, _ in sent()] == ["followup.created", "followup.overdue"]
    store.close_followup(task["task_id"], "resolved", "called, fixed the billing mistake")
    store.close_followup(task["task_id"], "resolved", "called, fixed the billing mistake")  # idempotent
    kinds = [t for t, _ in sent()]
    assert kinds == ["followup.created", "followup.overdue", "followup.closed"]
    closed = sent()[-1][1]
    assert closed["outcome"] == "resolved" and "close_reason" not in closed and "billing" not in json.dumps(closed)
