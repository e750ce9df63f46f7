"""The plain logic of outbound webhooks (retention/webhooks.py): filters, payloads that leave out what a
receiver must not see, and a retry schedule whose waits grow, are capped and are jittered."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from retention.webhooks import WebhookError, decision_created, envelope, event_filter, matches, retry_delay


def test_filters_name_known_types_or_everything():
    assert event_filter(["outcome.recorded", " decision.created", "decision.created"]) == [
        "decision.created", "outcome.recorded"]
    assert event_filter(["decision.created", "*"]) == ["*"]
    with pytest.raises(WebhookError, match="unknown event type"):
        event_filter(["decision.made"])
    with pytest.raises(WebhookError, match="at least one"):
        event_filter([" "])
    assert matches(["*"], "followup.closed") and not matches(["decision.created"], "outcome.recorded")


def test_a_decision_payload_never_carries_the_customers_words_or_the_models_internals():
    record = {"decision_id": "d1", "customer_id": "c1", "reason_text": "call me at 555", "features": {"x": 1.0},
              "scores": {"a": 0.3}, "created_at": datetime(2026, 12, 1, tzinfo=UTC), "p_stay": float("nan")}
    data = decision_created(record)
    assert data["decision_id"] == "d1" and data["created_at"] == "2026-12-01T00:00:00+00:00"
    assert data["p_stay"] is None and not {"reason_text", "features", "scores"} & set(data)
    body = envelope("evt_1", "decision.created", datetime(2026, 12, 1, tzinfo=UTC), data)
    assert list(body) == ["type", "id", "created_at", "data"]


def test_retry_waits_grow_with_jitter_up_to_the_cap():
    rng = random.Random(1)
    for failures in range(1, 12):
        step = min(3600.0, 30.0 * 2 ** (failures - 1))
        waits = [retry_delay(failures, 30.0, 3600.0, rng) for _ in range(200)]
        assert all(step / 2 <= w <= step for w in waits)
        assert max(waits) - min(waits) > step / 4  # jittered, not one fixed wait
    assert retry_delay(20, 30.0, 3600.0, rng) <= 3600.0


def test_the_worker_looks_for_overdue_follow_ups_every_minute_from_where_it_left_off():
    from datetime import UTC, datetime, timedelta

    from service.webhook_worker import WebhookWorker
    from store import StoreUnavailable

    looks = []

    class FakeStore:
        down = False

        def announce_overdue(self, since, now):
            if self.down:
                raise StoreUnavailable("no answer")
            looks.append((since, now))
            return 1

    store = FakeStore()
    worker = WebhookWorker.__new__(WebhookWorker)  # only the overdue look: no pool, no session
    worker.store, worker._overdue_looked = store, None
    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    assert worker.announce_overdue(t0) == 1 and looks == [(t0 - timedelta(hours=24), t0)]
    assert worker.announce_overdue(t0 + timedelta(seconds=30)) is None  # not due yet
    store.down = True
    assert worker.announce_overdue(t0 + timedelta(seconds=61)) is None  # a store outage is no crash
    store.down = False
    assert worker.announce_overdue(t0 + timedelta(seconds=90)) == 1
    assert looks[-1] == (t0, t0 + timedelta(seconds=90))  # from the last look that worked
