"""Privacy: logs never carry free text, emails, names, customer ids or keys, whatever the requests contain;
a customer's data can be exported and erased on request (API and command line), without touching anyone
else's."""

from __future__ import annotations

import io
import json
import logging

import pytest
from click.testing import CliRunner
from support import KEYS, decision_body, headers, post

from cli import main

PII = {
    "email": "jane.doe@example.com",
    "name": "Jane Q. Doe",
    "phone": "+44 20 7946 0958",
    "comment": "Support never answered me, call me on my mobile",
}


def _activity(client, customer_id: str, tag: str) -> str:
    d = post(client, "/v1/decisions", decision_body(
        request_id=f"{tag}-1", customer_id=customer_id,
        reason_text=f"I am {PII['name']}, write to {PII['email']} or {PII['phone']}")).get_json()
    assert post(client, f"/v1/decisions/{d['decision_id']}/outcome", {"outcome": "shown"}).status_code == 201
    events = {"events": [
        {"event_id": f"{tag}-nps", "type": "nps", "customer_id": customer_id, "score": 3,
         "occurred_at": "2026-11-20T10:00:00Z", "comment": f"{PII['comment']} - {PII['name']} {PII['email']}"},
        {"event_id": f"{tag}-pay", "type": "payment", "customer_id": customer_id, "amount": 12.99,
         "occurred_at": "2026-11-21T10:00:00Z"},
    ]}
    assert post(client, "/v1/events", events, role="events").status_code == 200
    # A bad request echoing personal data must not leak it into the logs either.
    bad = post(client, "/v1/decisions", decision_body(request_id=f"{tag}-bad", customer_id=customer_id,
                                                      reason=PII["email"]))
    assert bad.status_code == 422
    return d["decision_id"]


@pytest.fixture
def service_log(client):
    """What the service's own JSON log handler writes (service.logs), captured from its stream."""
    handler = logging.getLogger("retention").handlers[0]
    buffer = io.StringIO()
    previous = handler.setStream(buffer)
    yield buffer
    handler.setStream(previous)


def test_logs_carry_no_personal_data_or_keys(client, service_log):
    customer = "cust-private-7781"
    decision_id = _activity(client, customer, "log")
    assert client.get(f"/v1/customers/{customer}/decisions", headers=headers()).status_code == 200
    logs = service_log.getvalue()
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    requests = [x for x in lines if x.get("event") == "request"]
    assert len(requests) >= 5 and any(x.get("decision_id") == decision_id for x in requests), "logs were captured"
    for secret in [*PII.values(), customer, *KEYS.values()]:
        assert secret not in logs, f"{secret!r} reached the logs"


def test_a_customer_can_be_exported_and_erased(client):
    _activity(client, "cust-erase-1", "er1")
    _activity(client, "cust-keep-2", "kp2")
    admin = headers("admin")
    assert client.get("/v1/customers/cust-erase-1/data", headers=headers()).status_code == 403
    data = client.get("/v1/customers/cust-erase-1/data", headers=admin).get_json()
    assert [d["request_id"] for d in data["decisions"]] == ["er1-1"]
    assert PII["email"] in data["decisions"][0]["reason_text"]
    assert [o["kind"] for o in data["decisions"][0]["outcomes"]] == ["shown"]
    assert {e["event_id"] for e in data["events"]} == {"er1-nps", "er1-pay"}
    assert PII["comment"] in json.dumps(data["events"]) and "kp2" not in json.dumps(data)

    assert client.delete("/v1/customers/cust-erase-1/data", headers=headers()).status_code == 403
    gone = client.delete("/v1/customers/cust-erase-1/data", headers=admin).get_json()
    assert gone == {"customer_id": "cust-erase-1", "decisions": 1, "outcomes": 1, "events": 2, "features": 0,
                    "customer": 0, "followups": 1, "webhook_events": 0, "spooled_decisions": 0,
                    "spooled_outcomes": 0}
    after = client.get("/v1/customers/cust-erase-1/data", headers=admin).get_json()
    assert after["decisions"] == [] and after["events"] == [] and after["features"] is None
    assert after["followups"] == []  # the detractor answer's task went with the customer
    assert client.delete("/v1/customers/cust-erase-1/data", headers=admin).get_json()["decisions"] == 0
    kept = client.get("/v1/customers/cust-keep-2/data", headers=admin).get_json()
    assert len(kept["decisions"]) == 1 and len(kept["events"]) == 2


def test_the_command_line_exports_and_erases(client, migrated_url, tmp_path):
    _activity(client, "cust-cli-3", "cli3")
    runner = CliRunner()
    out = tmp_path / "export.json"
    r = runner.invoke(main, ["customer", "export", "cust-cli-3", "--database-url", migrated_url, "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["decisions"][0]["request_id"] == "cli3-1"
    r = runner.invoke(main, ["customer", "delete", "cust-cli-3", "--database-url", migrated_url])
    assert r.exit_code == 2 and "--yes" in r.output
    r = runner.invoke(main, ["customer", "delete", "cust-cli-3", "--database-url", migrated_url, "--yes"])
    assert r.exit_code == 0 and "1 decision(s)" in r.output and "2 event(s)" in r.output
    assert client.get("/v1/customers/cust-cli-3/decisions", headers=headers()).get_json()["decisions"] == []
