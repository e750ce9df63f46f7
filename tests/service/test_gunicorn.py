"""Against a real gunicorn (gunicorn.conf.py, two preforked workers), on SQLite and PostgreSQL: decisions,
idempotency under concurrent duplicates hitting different workers, auth and validation errors, and metrics
aggregated across workers.

One server per backend serves the module (a boot costs ~1.5 s): each test writes under its own request and
customer ids and reads only those, and the metrics test counts what its own requests added. The test without
a model starts its own server."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from support import decision_body, headers, seed_clients, serve

from store import Store

ROOT = Path(__file__).resolve().parents[2]
# Not serial: these check what gunicorn answers, not how fast, and every request may take 10 s or more.
pytestmark = pytest.mark.slow
CREATED = 'retention_http_requests_total{endpoint="/v1/decisions",method="POST",status="201"}'


@pytest.fixture(scope="module")
def server(module_migrated_url, module_models_root, tmp_path_factory):
    seed_clients(module_migrated_url)
    with serve(module_migrated_url, module_models_root, tmp_path_factory.mktemp("gunicorn")) as running:
        yield running.base, module_migrated_url, running.log_path


def _created(base: str) -> float:
    """The server's count of decisions answered 201, summed over its workers (0 before the first)."""
    text = requests.get(f"{base}/metrics", timeout=10).text
    assert "retention_model_loaded{" in text
    return next((float(x.split()[-1]) for x in text.splitlines() if x.startswith(CREATED)), 0.0)


def test_gunicorn_serves_decisions_outcomes_and_errors(server):
    base, _, log_path = server
    s = requests.Session()
    r = s.post(f"{base}/v1/decisions", json=decision_body(reason_text="my email is jane@example.com"),
               headers=headers(), timeout=10)
    assert r.status_code == 201, r.text
    d = r.json()
    assert d["fallback"] is False and d["recorded"] is True
    out = s.post(f"{base}/v1/decisions/{d['decision_id']}/outcome", json={"outcome": "declined"},
                 headers=headers(), timeout=10)
    assert out.status_code == 201
    assert s.post(f"{base}/v1/decisions", json=decision_body(), timeout=10).status_code == 401
    bad = s.post(f"{base}/v1/decisions", json=decision_body(reason="bored"), headers=headers(), timeout=10)
    assert bad.status_code == 422 and "reason" in bad.json()["errors"]["json"]
    assert s.get(f"{base}/readyz", headers=headers("admin"), timeout=10).json()["checks"]["model"]["ok"]
    logs = log_path.read_text()
    assert '"event": "request"' in logs and d["decision_id"] in logs
    assert "jane@example.com" not in logs and "cust-1" not in logs, "no free text or customer ids in logs"


def test_concurrent_duplicates_across_workers_store_one_decision(server):
    base, url, _ = server
    body = decision_body(request_id="dup-1", customer_id="dup-customer")

    def send(_):
        with requests.Session() as s:  # a new connection each, so gunicorn spreads them over its workers
            return s.post(f"{base}/v1/decisions", json=body, headers=headers(), timeout=20)

    with ThreadPoolExecutor(max_workers=16) as pool:
        responses = list(pool.map(send, range(32)))
    assert all(r.status_code in (200, 201) for r in responses), [r.text for r in responses]
    assert len({r.json()["decision_id"] for r in responses}) == 1
    assert sum(r.status_code == 201 for r in responses) == 1
    with Store.from_url(url) as store:
        assert len(store.customer_decisions("dup-customer")) == 1
    conflict = requests.post(f"{base}/v1/decisions", json={**body, "reason": "other"}, headers=headers(), timeout=10)
    assert conflict.status_code == 409


def test_metrics_add_up_over_all_workers(server):
    base, _, _ = server
    n = 20
    before = _created(base)
    for i in range(n):
        with requests.Session() as s:  # a new connection each, so the requests reach both workers
            assert s.post(f"{base}/v1/decisions", json=decision_body(request_id=f"m-{i}"), headers=headers(),
                          timeout=10).status_code == 201
    assert _created(base) - before == n


def test_every_endpoint_answers_through_gunicorn(server):
    base, _, _ = server
    s = requests.Session()
    d = s.post(f"{base}/v1/decisions", json=decision_body(request_id="e-1", customer_id="e-cust"),
               headers=headers(), timeout=10).json()
    event = {"event_id": "ev-1", "type": "still_active", "customer_id": "e-cust", "decision_id": d["decision_id"],
             "occurred_at": "2026-11-25T00:00:00Z", "day": 30, "active": True}
    calls = [
        ("post", f"/v1/decisions/{d['decision_id']}/outcome", {"outcome": "accepted"}, "events", 201),
        ("post", "/v1/events", {"events": [event]}, "events", 200),
        ("get", "/v1/offers", None, "decide", 200),
        ("get", "/v1/customers/e-cust/decisions", None, "decide", 200),
        ("get", "/v1/model", None, "admin", 200),
        ("get", "/v1/model", None, "decide", 403),
        ("get", "/healthz", None, None, 200),
        ("get", "/readyz", None, None, 200),
        ("get", "/metrics", None, None, 200),
        ("get", "/openapi.json", None, None, 200),
        ("get", "/docs", None, None, 200),
    ]
    for method, path, body, role, status in calls:
        r = s.request(method, f"{base}{path}", json=body, headers=headers(role) if role else {}, timeout=10)
        assert r.status_code == status, (path, r.text)
    history = s.get(f"{base}/v1/customers/e-cust/decisions", headers=headers(), timeout=10).json()["decisions"]
    assert [o["kind"] for o in history[0]["outcomes"]] == ["accepted"]


def test_gunicorn_without_a_model_answers_by_the_rules(migrated_url, tmp_path):
    seed_clients(migrated_url)
    empty = tmp_path / "no-models"
    empty.mkdir()
    with serve(migrated_url, empty, tmp_path) as running:
        base = running.base
        r = requests.post(f"{base}/v1/decisions", json=decision_body(reason="temporary"), headers=headers(),
                          timeout=10)
        assert r.status_code == 201 and r.json()["fallback"] is True and r.json()["offer"]["id"] == "pause_2m"
        ready = requests.get(f"{base}/readyz", timeout=10)
        assert ready.status_code == 503 and ready.json()["degraded"][0] == "model"
