"""Webhooks through the service, on SQLite and PostgreSQL: the admin API (create, list, disable, delivery
log, replay; admin only; bad input is a 422 naming the field), a decision and an outcome posted to the API
queue their events, and an experiment analysis that finds a sample-ratio mismatch announces it once."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from support import decision_body, headers, post

import retention.experiment_analysis
from service import usecases


def _outbox(app) -> list[dict]:
    return app.extensions["retention"].store.outbox_events(limit=1000)


def test_admins_manage_subscriptions_and_others_may_not(client):
    body = {"url": "http://127.0.0.1:9/hook", "events": ["decision.created", "outcome.recorded"]}
    assert post(client, "/v1/webhooks", body, role="decide").status_code == 403
    r = post(client, "/v1/webhooks", body, role="admin")
    assert r.status_code == 201, r.get_json()
    sub = r.get_json()
    assert sub["secret"].startswith("whsec_") and sub["events"] == ["decision.created", "outcome.recorded"]
    listed = client.get("/v1/webhooks", headers=headers("admin")).get_json()["subscriptions"]
    assert [s["id"] for s in listed] == [sub["id"]] and "secret" not in listed[0]
    assert client.get("/v1/webhooks", headers=headers("events")).status_code == 403

    gone = client.delete(f"/v1/webhooks/{sub['id']}", headers=headers("admin"))
    assert gone.status_code == 200 and gone.get_json()["disabled_at"] is not None
    assert client.delete("/v1/webhooks/999", headers=headers("admin")).status_code == 404
    assert client.delete(f"/v1/webhooks/{2**40}", headers=headers("admin")).status_code == 404


def test_bad_subscriptions_are_422s_naming_the_field(client):
    r = post(client, "/v1/webhooks", {"url": "http://x/h", "events": ["decision.made"]}, role="admin")
    assert r.status_code == 422 and "events" in r.get_json()["errors"]["json"]
    r = post(client, "/v1/webhooks", {"url": "ftp://x/h", "events": ["*"]}, role="admin")
    assert r.status_code == 422 and "url" in r.get_json()["errors"]["json"]
    r = post(client, "/v1/webhooks", {"url": "http://x/h", "events": [], "secret": "mine"}, role="admin")
    assert r.status_code == 422 and {"events", "secret"} <= set(r.get_json()["errors"]["json"])


def test_a_decision_and_its_outcome_posted_to_the_api_queue_their_events(app, client):
    sub = post(client, "/v1/webhooks", {"url": "http://127.0.0.1:9/h", "events": ["*"]}, role="admin").get_json()
    decision = post(client, "/v1/decisions", decision_body("wh-1", reason_text="my own words")).get_json()
    assert post(client, f"/v1/decisions/{decision['decision_id']}/outcome", {"outcome": "shown"}).status_code == 201
    events = _outbox(app)
    assert sorted(e["event_type"] for e in events) == ["decision.created", "outcome.recorded"]
    store = app.extensions["retention"].store
    (claimed,) = [e for e in store.claim_events("t", 10, timedelta(seconds=30))
                  if e["event_type"] == "decision.created"]
    data = json.loads(claimed["body"])["data"]
    assert data["decision_id"] == decision["decision_id"] and data["offer"] == decision["offer"]
    assert "my own words" not in claimed["body"] and "test-decide-key" not in claimed["body"]

    store.record_attempt(claimed["id"], "t", datetime.now(UTC), 12.0, False, 500)  # dead after one failure
    log = client.get(f"/v1/webhooks/{sub['id']}/deliveries", headers=headers("admin")).get_json()
    assert [(d["status_code"], d["ok"], d["event_id"]) for d in log["deliveries"]] == [
        (500, False, claimed["event_id"])]
    r = post(client, f"/v1/webhooks/{sub['id']}/replay", {}, role="admin")
    assert r.status_code == 200 and r.get_json() == {"replayed": 1}
    assert post(client, "/v1/webhooks/999/replay", {}, role="admin").status_code == 404
    assert client.get(f"/v1/webhooks/{sub['id']}/deliveries?limit=0", headers=headers("admin")).status_code == 422


def test_an_srm_alarm_found_by_an_analysis_is_queued_once(app, monkeypatch):
    store = app.extensions["retention"].store
    store.add_subscription("http://127.0.0.1:9/h", ["experiment.srm_alarm"])
    alarm = SimpleNamespace(alarm=True, observed={"model": 90, "holdout": 10}, expected={"model": 50.0, "holdout": 50.0},
                            chi2=64.0, p_value=1e-15)
    result = SimpleNamespace(experiment="xp", definition="d1", as_of=datetime.now(UTC),
                             srm=SimpleNamespace(stages=lambda: [("assigned", alarm)]))
    monkeypatch.setattr(retention.experiment_analysis, "experiment_results", lambda *args, **kwargs: result)
    for _ in range(3):  # three looks at the results
        assert usecases.experiment_results(app.extensions["retention"], "xp") is result
    (event,) = _outbox(app)
    assert event["event_type"] == "experiment.srm_alarm"
