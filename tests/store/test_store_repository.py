"""Store methods, same test bodies on SQLite and PostgreSQL: clients, idempotent decisions (also under
concurrent duplicates from threads and processes), outcome rules, idempotent events, snapshot atomicity."""

from __future__ import annotations

import math
import multiprocessing
import threading
from datetime import UTC, datetime, timedelta

import pytest
from _store_workers import record_after_barrier
from sqlalchemy import func, select

from store import Conflict, IdempotencyConflict, InvalidRecord, NotFound, Store, body_hash
from store.models import Customer, CustomerFeatures, Decision, Event, Outcome

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def decision(request_id: str = "req-1", customer_id: str = "c1", offer_id: str = "pause_1m", **overrides) -> dict:
    request = {"customer_id": customer_id, "reason": "too_expensive", "plan_id": "plus_monthly", "price": 9.99,
               "billing_period": "monthly", "billing_channel": "web"}
    record = {
        "request_id": request_id, "body_hash": body_hash(request), "client": "app", "customer_id": customer_id,
        "reason": "too_expensive", "reason_text": "costs too much for me", "request": request,
        "features": {"tenure_days": 400.0, "nps_last": float("nan"), "plan_id": "plus_monthly"},
        "scores": {"pause_1m": 0.4}, "offer_id": offer_id,
        "offer": {"type": "none"} if offer_id == "none" else {"type": "pause", "months": 1},
        "propensity": 0.8, "p_stay": 0.4, "expected_incremental_value": 3.5, "reason_codes": ["price"],
        "model_version": "m1", "policy_version": "p1", "catalog_version": "cat1", "fallback": False,
        "nps_segment": "none", "latency_ms": 4.2,
    }
    return record | overrides


def count(store: Store, model) -> int:
    with store.transaction() as conn:
        return conn.execute(select(func.count()).select_from(model)).scalar_one()


# ------------------------------------------------------------------------------------------------ clients


def test_a_created_key_authenticates_until_revoked(store):
    record, key = store.create_client("checkout", "decide")
    assert key.startswith(f"rk_{record['key_id']}_") and len(key) > 40
    assert record["role"] == "decide" and record["signing_secret"] is None and record["revoked_at"] is None
    assert store.authenticate(key)["name"] == "checkout"
    assert store.authenticate(key[:-1] + ("A" if key[-1] != "A" else "B")) is None  # same key id, wrong secret
    assert store.authenticate("rk_nope") is None and store.authenticate("") is None
    revoked = store.revoke_client("checkout")
    assert revoked["revoked_at"] is not None
    assert store.authenticate(key) is None
    assert store.revoke_client("checkout")["revoked_at"] == revoked["revoked_at"]  # idempotent
    with pytest.raises(NotFound):
        store.revoke_client("nobody")


def test_signing_secret_is_returned_to_authenticate_but_never_listed(store):
    _, key = store.create_client("signer", "events", signing_secret="s3cret-value")
    store.create_client("admin", "admin")
    assert store.authenticate(key)["signing_secret"] == "s3cret-value"
    listed = store.list_clients()
    assert [c["name"] for c in listed] == ["admin", "signer"]
    assert [c["signed"] for c in listed] == [False, True]
    assert all("signing_secret" not in c and "key_hash" not in c for c in listed)


def test_creating_a_client_with_a_fixed_key_is_idempotent(store):
    demo = "rk_demo_0123456789abcdefghij"
    first, key = store.create_client("demo", "decide", key=demo)
    again, key_again = store.create_client("demo", "decide", key=demo)
    assert key == key_again == demo and again == first
    assert len(store.list_clients()) == 1
    with pytest.raises(Conflict, match="another key"):
        store.create_client("demo", "decide", key="rk_demo2_0123456789abcdefghij")
    with pytest.raises(Conflict, match="another key"):
        store.create_client("demo", "decide")  # a new random key cannot match
    with pytest.raises(Conflict, match="role"):
        store.create_client("demo", "admin", key=demo)
    with pytest.raises(Conflict, match="key id"):
        store.create_client("other", "decide", key="rk_demo_zzzzzzzzzzzzzzzzzzzz")
    store.revoke_client("demo")
    with pytest.raises(Conflict, match="revoked"):
        store.create_client("demo", "decide", key=demo)


def test_a_free_form_fixed_key_is_found_by_a_digest_not_by_its_prefix(store):
    record, key = store.create_client("dev", "decide", key="dev-key-0123456789abcdef")
    assert key == "dev-key-0123456789abcdef" and not key.startswith(record["key_id"][1:])
    assert store.authenticate(key)["name"] == "dev"
    assert store.authenticate("dev-key-0123456789abcdeF") is None


@pytest.mark.parametrize("name, role, key", [("x", "superuser", None), ("", "decide", None),
                                             ("x", "decide", "too-short"), ("x", "decide", "has spaces in the key")])
def test_bad_client_input_is_refused(store, name, role, key):
    with pytest.raises(InvalidRecord):
        store.create_client(name, role, key=key)


# ---------------------------------------------------------------------------------------------- decisions


def test_a_decision_is_stored_as_given_and_found_by_id_and_request(store):
    stored, created = store.record_decision(decision())
    assert created and len(stored["decision_id"]) == 32
    assert stored["features"]["nps_last"] is None  # NaN is not JSON: stored as null
    assert stored["offer"] == {"type": "pause", "months": 1} and stored["reason_codes"] == ["price"]
    assert stored["created_at"].tzinfo is not None and stored["outcomes"] == []
    assert stored["reason_text"] == "costs too much for me" and stored["experiment"] is None
    assert store.get_decision(stored["decision_id"]) == stored
    assert store.get_decision_by_request("app", "req-1") == stored
    assert store.get_decision("missing") is None and store.get_decision_by_request("app", "missing") is None
    assert store.get_decision_by_request("someone-else", "req-1") is None  # keys are scoped per client


def test_replaying_a_request_returns_the_first_decision(store):
    first, created = store.record_decision(decision())
    again, created_again = store.record_decision(decision(decision_id="another-id", latency_ms=99.0))
    assert created and not created_again
    assert again == first
    assert count(store, Decision) == 1


def test_reusing_a_request_id_for_another_body_is_a_conflict(store):
    store.record_decision(decision())
    with pytest.raises(IdempotencyConflict, match="another request body"):
        store.record_decision(decision(body_hash="0" * 64))
    assert count(store, Decision) == 1


def test_request_ids_are_scoped_per_client(store):
    """Another client's request_id is another idempotency key: its own decision, its own replays, its own
    conflicts; the first client's decision is neither returned to it nor changed by it."""
    first, _ = store.record_decision(decision())
    other, created = store.record_decision(decision(client="someone-else"))
    assert created and other["decision_id"] != first["decision_id"]
    again, created_again = store.record_decision(decision(client="someone-else", decision_id="third-id"))
    assert not created_again and again["decision_id"] == other["decision_id"]
    with pytest.raises(IdempotencyConflict, match="another request body"):
        store.record_decision(decision(client="someone-else", body_hash="0" * 64))
    assert store.get_decision_by_request("app", "req-1") == first
    assert count(store, Decision) == 2


def test_a_decision_record_with_missing_or_unknown_fields_is_refused(store):
    record = decision()
    del record["offer_id"]
    with pytest.raises(InvalidRecord, match="missing offer_id"):
        store.record_decision(record)
    with pytest.raises(InvalidRecord, match="unknown colour"):
        store.record_decision(decision(colour="red"))
    with pytest.raises(InvalidRecord, match="timezone-aware"):
        store.record_decision(decision(created_at=datetime(2026, 1, 1)))


def test_body_hash_ignores_key_order_and_sees_values():
    assert body_hash({"a": 1, "b": [1, 2]}) == body_hash({"b": [1, 2], "a": 1})
    assert body_hash({"a": 1}) != body_hash({"a": 2})


def test_customer_decisions_are_newest_first_with_their_outcomes(store):
    for i in range(3):
        store.record_decision(decision(f"req-{i}", created_at=T0 + timedelta(days=i)))
    store.record_decision(decision("req-other", customer_id="c2", created_at=T0))
    newest = store.get_decision_by_request("app", "req-2")
    store.record_outcome(newest["decision_id"], "declined", T0 + timedelta(days=2, minutes=1))
    history = store.customer_decisions("c1")
    assert [d["request_id"] for d in history] == ["req-2", "req-1", "req-0"]
    assert [o["kind"] for o in history[0]["outcomes"]] == ["declined"] and history[1]["outcomes"] == []
    assert [d["request_id"] for d in store.customer_decisions("c1", limit=2)] == ["req-2", "req-1"]
    assert store.customer_decisions("nobody") == []


def test_offer_history_lists_offers_since_a_time_with_acceptance(store):
    old, _ = store.record_decision(decision("old", created_at=T0 - timedelta(days=400)))
    pause, _ = store.record_decision(decision("pause", created_at=T0))
    discount, _ = store.record_decision(decision("discount", offer_id="discount_30_3m", created_at=T0 + timedelta(days=1),
                                                 offer={"type": "discount", "percent": 30, "months": 3}))
    store.record_decision(decision("none", offer_id="none", created_at=T0 + timedelta(days=2)))
    store.record_outcome(pause["decision_id"], "accepted", T0)
    store.record_outcome(old["decision_id"], "accepted", T0 - timedelta(days=400))
    history = store.customer_offer_history("c1", since=T0 - timedelta(days=365))
    assert [(h["offer_id"], h["offer_type"], h["accepted"]) for h in history] == [
        ("none", "none", False), ("discount_30_3m", "discount", False), ("pause_1m", "pause", True)]
    assert history[-1]["created_at"] == T0


# ----------------------------------------------------------------------------------------------- outcomes


def test_outcomes_are_idempotent_per_kind(store):
    d, _ = store.record_decision(decision())
    first, created = store.record_outcome(d["decision_id"], "accepted", T0)
    again, created_again = store.record_outcome(d["decision_id"], "accepted", T0 + timedelta(hours=1))
    assert created and not created_again and again == first and first["occurred_at"] == T0
    cancelled, created = store.record_outcome(d["decision_id"], "cancelled", T0 + timedelta(days=40))
    assert created and cancelled["kind"] == "cancelled"
    assert [o["kind"] for o in store.get_decision(d["decision_id"])["outcomes"]] == ["accepted", "cancelled"]


def test_accepted_and_declined_exclude_each_other(store):
    d, _ = store.record_decision(decision())
    store.record_outcome(d["decision_id"], "declined", T0)
    with pytest.raises(Conflict, match="already declined"):
        store.record_outcome(d["decision_id"], "accepted", T0)
    e, _ = store.record_decision(decision("req-2"))
    store.record_outcome(e["decision_id"], "accepted", T0)
    with pytest.raises(Conflict, match="already accepted"):
        store.record_outcome(e["decision_id"], "declined", T0)


def test_outcome_errors(store):
    with pytest.raises(NotFound):
        store.record_outcome("no-such-decision", "accepted", T0)
    none, _ = store.record_decision(decision(offer_id="none"))
    with pytest.raises(Conflict, match="no offer"):
        store.record_outcome(none["decision_id"], "accepted", T0)
    assert store.record_outcome(none["decision_id"], "declined", T0)[1]
    with pytest.raises(InvalidRecord):
        store.record_outcome(none["decision_id"], "clicked", T0)
    with pytest.raises(InvalidRecord, match="timezone-aware"):
        store.record_outcome(none["decision_id"], "cancelled", datetime(2026, 1, 1))


def test_concurrent_accept_and_decline_store_exactly_one_of_them(store):
    d, _ = store.record_decision(decision())
    barrier = threading.Barrier(8)
    results: list[str] = []

    def answer(kind: str) -> None:
        barrier.wait(timeout=30)
        try:
            results.append(store.record_outcome(d["decision_id"], kind, T0)[0]["kind"])
        except Conflict:
            results.append("conflict")

    threads = [threading.Thread(target=answer, args=("accepted" if i % 2 else "declined",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    kinds = [o["kind"] for o in store.get_decision(d["decision_id"])["outcomes"]]
    assert len(kinds) == 1
    assert results.count(kinds[0]) == 4 and results.count("conflict") == 4


# ------------------------------------------------------------------------------- concurrent duplicates


def test_concurrent_duplicate_decisions_from_threads_store_one_row(store):
    barrier = threading.Barrier(8)
    results: list[tuple[str, bool]] = []
    errors: list[BaseException] = []

    def post() -> None:
        barrier.wait(timeout=30)
        try:
            stored, created = store.record_decision(decision("same-request"))
            results.append((stored["decision_id"], created))
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=post) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len({decision_id for decision_id, _ in results}) == 1
    assert sorted(created for _, created in results) == [False] * 7 + [True]
    assert count(store, Decision) == 1


def test_concurrent_duplicates_from_two_clients_store_one_row_per_client(store):
    """Two clients racing with one request_id: exactly one row in each client's scope, each client's threads
    all get that client's decision."""
    barrier = threading.Barrier(12)
    results: list[tuple[str, str, bool]] = []
    errors: list[BaseException] = []

    def post(client: str) -> None:
        barrier.wait(timeout=30)
        try:
            stored, created = store.record_decision(decision("shared-request", client=client))
            results.append((client, stored["decision_id"], created))
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=post, args=("app" if i % 2 else "other-app",)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    by_client = {c: {d for k, d, _ in results if k == c} for c in ("app", "other-app")}
    assert all(len(ids) == 1 for ids in by_client.values()) and by_client["app"] != by_client["other-app"]
    assert sorted(created for _, _, created in results) == [False] * 10 + [True] * 2
    assert count(store, Decision) == 2


@pytest.mark.slow
def test_concurrent_duplicate_decisions_from_processes_store_one_row(store, migrated_url):
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(8), ctx.Queue()
    workers = [ctx.Process(target=record_after_barrier, args=(migrated_url, decision("same-request"), barrier, results))
               for _ in range(8)]
    for w in workers:
        w.start()
    try:
        outcomes = [results.get(timeout=120) for _ in workers]
    finally:
        for w in workers:
            w.join(timeout=30)
        results.close()
        results.join_thread()
    assert all(o[0] != "error" for o in outcomes), outcomes
    assert len({decision_id for decision_id, _ in outcomes}) == 1
    assert sorted(created for _, created in outcomes) == [False] * 7 + [True]
    assert count(store, Decision) == 1


# ------------------------------------------------------------------------------------------------- events


def events(n: int, start: int = 0, customer_id: str = "c1") -> list[dict]:
    return [{"event_id": f"ev-{i}", "type": "usage", "customer_id": customer_id, "occurred_at": T0 + timedelta(minutes=i),
             "payload": {"day": "2026-06-01", "metric": "listening_minutes", "value": float(i)}}
            for i in range(start, start + n)]


def test_events_are_idempotent_on_event_id(store):
    assert store.record_events(events(3000)) == {"created": 3000, "duplicates": 0, "conflicts": []}
    # A retried batch overlapping the first one: only the new events are created.
    assert store.record_events(events(3000, start=2000)) == {"created": 2000, "duplicates": 1000, "conflicts": []}
    assert count(store, Event) == 5000
    assert store.record_events([]) == {"created": 0, "duplicates": 0, "conflicts": []}


def test_an_event_id_reused_for_another_event_is_reported_not_stored(store):
    store.record_events(events(2))
    changed = events(2)
    changed[1]["payload"]["value"] = 42.0
    repeated = [events(1, start=5)[0]] * 2  # the same new event twice in one call
    result = store.record_events(changed + repeated)
    assert result == {"created": 1, "duplicates": 2, "conflicts": ["ev-1"]}
    assert [e["payload"]["value"] for e in store.events_for_customer("c1")] == [0.0, 1.0, 5.0]


def test_a_batch_with_an_invalid_event_stores_nothing(store):
    bad = events(10)
    bad[7]["type"] = "pageview"
    with pytest.raises(InvalidRecord, match="event 7"):
        store.record_events(bad)
    bad[7] = {**events(1, start=7)[0], "occurred_at": datetime(2026, 1, 1)}
    with pytest.raises(InvalidRecord, match="timezone-aware"):
        store.record_events(bad)
    bad[7] = {**events(1, start=7)[0], "payload": {"value": object()}}
    with pytest.raises(InvalidRecord):
        store.record_events(bad)
    assert count(store, Event) == 0


def test_events_for_customer_filter_by_type_and_time(store):
    store.record_events(events(5) + events(2, start=10, customer_id="c2") + [
        {"event_id": "nps-1", "type": "nps", "customer_id": "c1", "occurred_at": T0 + timedelta(minutes=2, seconds=30),
         "payload": {"score": 9}, "decision_id": "d-1"}])
    assert len(store.events_for_customer("c1")) == 6
    nps = store.events_for_customer("c1", type="nps")
    assert [(e["event_id"], e["payload"], e["decision_id"]) for e in nps] == [("nps-1", {"score": 9}, "d-1")]
    recent = store.events_for_customer("c1", since=T0 + timedelta(minutes=3))
    assert [e["event_id"] for e in recent] == ["ev-3", "ev-4"]
    assert [e["occurred_at"] for e in store.events_for_customer("c1")] == sorted(
        e["occurred_at"] for e in store.events_for_customer("c1"))


# ----------------------------------------------------------------------------------------------- features


def test_a_feature_snapshot_replaces_the_previous_one(store):
    assert store.latest_snapshot() is None and store.get_customer_features("c1") is None
    n = store.replace_feature_snapshot([("c1", {"tenure_days": 10, "nps_last": math.nan, "plan_id": "plus"}),
                                        ("c2", {"tenure_days": 20.5, "nps_last": 7.0, "plan_id": None})],
                                       T0, "f1", "m1", "data/demo")
    assert n == 2
    c1 = store.get_customer_features("c1")
    assert c1["values"] == {"tenure_days": 10.0, "nps_last": None, "plan_id": "plus"}
    assert (c1["as_of"], c1["feature_version"], c1["model_version"]) == (T0, "f1", "m1")
    store.replace_feature_snapshot(iter([("c3", {"tenure_days": 1.0})]), T0 + timedelta(days=1), "f1", "m2", "store")
    assert store.get_customer_features("c1") is None
    assert store.get_customer_features("c3")["model_version"] == "m2"
    latest = store.latest_snapshot()
    assert (latest["rows"], latest["source"], latest["as_of"]) == (1, "store", T0 + timedelta(days=1))


def test_a_failed_snapshot_load_leaves_the_previous_snapshot_intact(store):
    store.replace_feature_snapshot([(f"c{i}", {"x": float(i)}) for i in range(10)], T0, "f1", "m1", "old")

    def failing_rows():
        for i in range(2500):  # several insert batches are written before the failure
            yield f"n{i}", {"x": 1.0}
        raise RuntimeError("feature computation crashed")

    with pytest.raises(RuntimeError, match="crashed"):
        store.replace_feature_snapshot(failing_rows(), T0, "f1", "m2", "new", batch_size=1000)
    with pytest.raises(InvalidRecord, match="twice"):
        store.replace_feature_snapshot([("a", {}), ("a", {})], T0, "f1", "m3", "dup")
    with pytest.raises(InvalidRecord):
        store.replace_feature_snapshot([("a", {"x": [1, 2]})], T0, "f1", "m4", "bad")
    assert count(store, CustomerFeatures) == 10
    assert store.get_customer_features("c3")["values"] == {"x": 3.0}
    assert store.latest_snapshot()["source"] == "old"


def _customer(customer_id: str, **extra) -> dict:
    """A contract row of the data set's customers table, as `load-features --data` hands it over."""
    return {"customer_id": customer_id, "signup_at": T0 - timedelta(days=400), "plan_id": "plus_monthly",
            "billing_period": "monthly", "price": 14.95, "currency": "GBP", "billing_channel": "web",
            "country": "GB", **extra}


def test_the_data_sets_customers_are_replaced_with_the_snapshot_and_kept_by_a_load_without_them(store):
    store.replace_feature_snapshot([("c1", {"x": 1.0})], T0, "f1", "m1", "data/demo",
                                   customers=[_customer("c1", age_band="25-34"), _customer("gone", household_size=2)])
    assert store.latest_snapshot()["customers"] == 2
    # A customer the snapshot left out (cancelled before it) keeps its contract row.
    gone = store.customer_data("gone")["customer"]
    assert (gone["signup_at"], gone["currency"], gone["attributes"]) == (T0 - timedelta(days=400), "GBP",
                                                                         {"household_size": 2})
    store.replace_feature_snapshot([("c1", {"x": 2.0})], T0, "f1", "m2", "store")  # from the store: none given
    assert store.latest_snapshot()["customers"] is None and count(store, Customer) == 2
    store.replace_feature_snapshot([("c2", {"x": 2.0})], T0, "f1", "m3", "data/other", customers=[_customer("c2")])
    assert count(store, Customer) == 1 and store.customer_data("c1")["customer"] is None
    with pytest.raises(InvalidRecord, match="customer row 2: missing currency"):
        store.replace_feature_snapshot([], T0, "f1", "m4", "bad", customers=[_customer("a"), _customer("b", currency=None)])
    with pytest.raises(InvalidRecord, match="twice"):
        store.replace_feature_snapshot([], T0, "f1", "m4", "dup", customers=[_customer("a"), _customer("a")])
    with pytest.raises(InvalidRecord, match="signup_at"):  # a naive time: its zone is unknown
        store.replace_feature_snapshot([], T0, "f1", "m4", "naive",
                                       customers=[_customer("a", signup_at=datetime(2025, 1, 1))])
    assert store.latest_snapshot()["source"] == "data/other" and count(store, Customer) == 1


def test_a_customers_row_is_part_of_their_data_and_erased_with_it(store):
    store.replace_feature_snapshot([], T0, "f1", "m1", "data/demo", customers=[_customer("c1"), _customer("c2")])
    assert store.customer_data("c1")["customer"]["plan_id"] == "plus_monthly"
    assert store.delete_customer("c1")["customer"] == 1
    assert store.customer_data("c1")["customer"] is None and store.delete_customer("c1")["customer"] == 0
    assert store.customer_data("c2")["customer"] is not None


def test_outcome_rows_reference_decisions(store):
    """The foreign key holds (SQLite enforces it only with PRAGMA foreign_keys=ON)."""
    from sqlalchemy.exc import IntegrityError

    with pytest.raises(IntegrityError), store.transaction(write=True) as conn:
        conn.execute(Outcome.__table__.insert().values(decision_id="ghost", kind="accepted", occurred_at=T0,
                                                       recorded_at=T0))


def test_a_key_is_stored_only_as_its_sha256(store):
    """The database never holds a key: a dump of api_clients is no use to whoever steals it."""
    import hashlib

    from sqlalchemy import text

    _, key = store.create_client("frontend", "decide")
    with store.transaction() as conn:
        rows = [tuple(r) for r in conn.execute(text("SELECT * FROM api_clients"))]
        key_hash = conn.execute(text("SELECT key_hash FROM api_clients WHERE name = 'frontend'")).scalar()
    assert key_hash == hashlib.sha256(key.encode()).hexdigest()
    secret_part = key.split("_", 2)[2]  # rk_<public key id>_<secret>
    assert not any(secret_part in str(value) for row in rows for value in row)


def test_recent_decisions_are_the_newest_in_the_window_with_their_features(store):
    """What drift monitoring reads: bounded by time and by count, newest first, features as stored."""
    for i in range(5):
        store.record_decision(decision(f"recent-{i}", created_at=T0 + timedelta(hours=i)))
    store.record_decision(decision("too-old", created_at=T0 - timedelta(days=8)))
    rows = store.recent_decisions(T0 - timedelta(days=7), limit=3)
    assert [r["created_at"] for r in rows] == [T0 + timedelta(hours=h) for h in (4, 3, 2)]
    assert rows[0]["features"] == {"tenure_days": 400.0, "nps_last": None, "plan_id": "plus_monthly"}
    assert {k: rows[0][k] for k in ("reason", "offer_id", "model_version", "reason_codes", "experiment")} == {
        "reason": "too_expensive", "offer_id": "pause_1m", "model_version": "m1", "reason_codes": ["price"],
        "experiment": None}
    assert len(store.recent_decisions(T0 - timedelta(days=30), limit=100)) == 6
    with pytest.raises(InvalidRecord, match="limit"):
        store.recent_decisions(T0, limit=0)
