"""/v1/followups through the Flask app (SQLite and PostgreSQL): detractor answers posted as events or inline
in a decision become tasks, the followups role (or admin) lists, claims and closes them idempotently, and
/metrics counts the open and overdue ones."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from support import decision_body, headers, post

NOW = datetime.now(UTC).replace(microsecond=0)


def iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def answer(event_id: str, customer_id: str, score: int, at: datetime) -> dict:
    return {"event_id": event_id, "type": "nps", "customer_id": customer_id, "score": score, "occurred_at": iso(at)}


def listed(client, query: str = "", role: str = "followups") -> list[dict]:
    r = client.get(f"/v1/followups{query}", headers=headers(role))
    assert r.status_code == 200, r.get_json()
    return r.get_json()["followups"]


def test_detractor_answers_as_events_and_inline_become_one_task_each_for_the_followups_role(client):
    events = [answer("a1", "cust-ev", 2, NOW - timedelta(hours=3)), answer("a2", "cust-ev", 5, NOW - timedelta(hours=1)),
              answer("a3", "cust-happy", 10, NOW - timedelta(hours=1))]
    assert post(client, "/v1/events", {"events": events}, role="events").status_code == 200
    d = post(client, "/v1/decisions", decision_body(
        "fu-1", "cust-inline", reason="technical", nps=[{"score": 1, "responded_at": iso(NOW - timedelta(hours=2))}]))
    assert d.status_code == 201
    decision = d.get_json()
    tasks = {t["customer_id"]: t for t in listed(client)}
    assert "cust-ev" in tasks and "cust-inline" in tasks
    ev = tasks["cust-ev"]
    assert (ev["score"], ev["previous_score"], ev["trend"]) == (5, 2, "rose")
    assert ev["due_at"] == iso(NOW - timedelta(hours=3) + timedelta(hours=48)).replace("Z", "+00:00")
    inline = tasks["cust-inline"]
    assert inline["decision_id"] == decision["decision_id"] and inline["reason"] == "technical"
    assert inline["churn_risk"] == round(1 - decision["p_stay"], 6)
    assert inline["due_at"] == iso(NOW - timedelta(hours=2) + timedelta(hours=48)).replace("Z", "+00:00")
    # The retried decision and the retried events change nothing.
    assert post(client, "/v1/decisions", decision_body(
        "fu-1", "cust-inline", reason="technical",
        nps=[{"score": 1, "responded_at": iso(NOW - timedelta(hours=2))}])).status_code == 200
    assert post(client, "/v1/events", {"events": events}, role="events").get_json()["duplicates"] == 3
    assert {t["customer_id"]: t for t in listed(client)} == tasks
    # Roles: followups and admin read the tasks; the frontend and billing do not.
    assert len(listed(client, role="admin")) == len(tasks)
    for role in ("decide", "events"):
        assert client.get("/v1/followups", headers=headers(role)).status_code == 403


def test_claim_and_close_are_idempotent_and_answer_409_to_a_conflict(client):
    post(client, "/v1/events", {"events": [answer("b1", "cust-b", 3, NOW)]}, role="events")
    (task,) = listed(client)
    url = f"/v1/followups/{task['task_id']}"
    first = post(client, f"{url}/claim", {"agent": "ann"}, role="followups")
    assert first.status_code == 200 and first.get_json()["status"] == "claimed"
    again = post(client, f"{url}/claim", {"agent": "ann"}, role="followups")
    assert again.status_code == 200 and again.get_json() == first.get_json()
    assert post(client, f"{url}/claim", {"agent": "bob"}, role="followups").status_code == 409
    assert [t["task_id"] for t in listed(client, "?status=claimed")] == [task["task_id"]]
    body = {"outcome": "resolved", "reason": "reset the password together"}
    closed = post(client, f"{url}/close", body, role="followups")
    assert closed.status_code == 200 and closed.get_json()["outcome"] == "resolved"
    assert post(client, f"{url}/close", body, role="followups").get_json() == closed.get_json()
    assert post(client, f"{url}/close", {"outcome": "not_reached"}, role="followups").status_code == 409
    assert client.get(url, headers=headers("followups")).get_json() == closed.get_json()
    assert post(client, "/v1/followups/nope/claim", {"agent": "ann"}, role="followups").status_code == 404
    r = post(client, f"{url}/close", {"outcome": "maybe"}, role="followups")
    assert r.status_code == 422 and "outcome" in r.get_json()["errors"]["json"]
    assert post(client, f"{url}/claim", {"agent": "ann"}, role="decide").status_code == 403


def test_the_list_filters_by_status_due_time_risk_and_limit(client):
    post(client, "/v1/events", {"events": [answer(f"c{i}", f"cust-{i}", 4, NOW - timedelta(hours=10 * i))
                                           for i in range(4)]}, role="events")
    assert [t["customer_id"] for t in listed(client)] == ["cust-3", "cust-2", "cust-1", "cust-0"]
    due = iso(NOW + timedelta(hours=48 - 15))
    assert [t["customer_id"] for t in listed(client, f"?due_before={due}")] == ["cust-3", "cust-2"]
    assert [t["customer_id"] for t in listed(client, "?limit=1")] == ["cust-3"]
    assert listed(client, "?min_risk=0.1") == []  # no decision yet: no risk known
    assert listed(client, "?status=closed") == []
    r = client.get("/v1/followups?status=done&limit=0", headers=headers("followups"))
    assert r.status_code == 422 and set(r.get_json()["errors"]["query"]) == {"status", "limit"}
    r = client.get("/v1/followups?=true&statu=open", headers=headers("followups"))
    assert r.status_code == 422 and set(r.get_json()["errors"]["query"]) == {"", "statu"}


def _gauge(text: str, name: str) -> float:
    return float(re.search(rf"^{name} (\S+)$", text, re.M).group(1))


def test_metrics_count_open_and_overdue_tasks(client):
    post(client, "/v1/events", {"events": [answer("m1", "cust-late", 2, NOW - timedelta(hours=50)),
                                           answer("m2", "cust-due", 2, NOW - timedelta(hours=1)),
                                           answer("m3", "cust-claimed-late", 6, NOW - timedelta(hours=72))]},
         role="events")
    late = next(t for t in listed(client) if t["customer_id"] == "cust-claimed-late")
    post(client, f"/v1/followups/{late['task_id']}/claim", {"agent": "ann"}, role="followups")
    text = client.get("/metrics").get_data(as_text=True)
    assert (_gauge(text, "retention_followups_open"), _gauge(text, "retention_followups_claimed"),
            _gauge(text, "retention_followups_overdue")) == (2.0, 1.0, 2.0)
    post(client, f"/v1/followups/{late['task_id']}/close", {"outcome": "reached"}, role="followups")
    assert _gauge(client.get("/metrics").get_data(as_text=True), "retention_followups_overdue") == 1.0
