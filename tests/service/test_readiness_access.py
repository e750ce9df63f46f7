"""Who sees what of /readyz: a load balancer (no key) gets the status and one word per degraded check, with the
same status codes; the details (database, model paths and checksums, versions, errors) need the admin role,
and a wrong key gets the short form, never a 401, and costs no store query per request."""

from __future__ import annotations

import json

from sqlalchemy.engine import make_url
from support import headers

from store import StoreUnavailable


def _leaks(body: dict, app) -> list[str]:
    """Things of the deployment that appear in a public body."""
    rt = app.extensions["retention"]
    url = make_url(rt.database_url)
    text = json.dumps(body)
    secrets = [url.database, url.host, url.username, str(url.port) if url.port else None, rt.models_dir,
               rt.model_version, rt.policy.config.version, rt.catalog.version]
    return [s for s in secrets if s and s in text]


def test_public_readiness_says_only_the_status_and_what_is_degraded(client, app):
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json() == {"status": "degraded", "degraded": ["features"]}  # no snapshot in this test
    assert _leaks(ready.get_json(), app) == []


def test_the_admin_role_sees_the_details(client, app):
    body = client.get("/readyz", headers=headers("admin")).get_json()
    assert body["checks"]["model"]["ok"] and body["checks"]["model"]["version"] == app.extensions["retention"].model_version
    assert body["degraded"] == ["features"] and "policy_version" in body and "catalog_version" in body


def test_another_role_or_a_wrong_key_gets_the_short_form_not_a_401(client):
    for sent in (headers("decide"), {"Authorization": "Bearer not-a-key"}, {"X-API-Key": "nope"}):
        ready = client.get("/readyz", headers=sent)
        assert ready.status_code == 200, sent
        assert set(ready.get_json()) == {"status", "degraded"}, sent


def test_wrong_keys_cost_no_store_query_per_request(client, app, monkeypatch):
    store = app.extensions["retention"].store
    lookups = []
    real = store.authenticate
    monkeypatch.setattr(store, "authenticate", lambda key: lookups.append(key) or real(key))
    for i in range(20):
        assert client.get("/readyz", headers={"Authorization": f"Bearer wrong-{i % 3}"}).status_code == 200
    assert len(lookups) <= 1, lookups


def _store_down(app, monkeypatch) -> None:
    def down():
        raise StoreUnavailable("could not connect to server at postgres.internal:5432 as retention_rw")

    monkeypatch.setattr(app.extensions["retention"].store, "latest_snapshot", down)


def test_a_store_outage_is_degraded_not_unready_while_the_spool_keeps_the_writes(client, app, monkeypatch):
    """Every replica shares the store: a 503 for it would take them all out of the load balancer at once,
    although each still answers decisions and spools them (the outside review's partition case)."""
    _store_down(app, monkeypatch)
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json() == {"status": "degraded", "degraded": ["store"]}
    details = client.get("/readyz", headers=headers("admin"))
    assert details.status_code == 200 and "retention_rw" in details.get_json()["checks"]["store"]["error"]
    assert details.get_json()["checks"]["spool"]["ok"] is True


def test_not_ready_keeps_the_503_and_names_the_check_in_one_word(client, app, monkeypatch):
    """With the store down and no spool, what this process answers is recorded nowhere: take it out."""
    _store_down(app, monkeypatch)
    monkeypatch.setattr(app.extensions["retention"], "spool", None)
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.get_json() == {"status": "not ready", "degraded": ["store"]}
    details = client.get("/readyz", headers=headers("admin"))
    assert details.status_code == 503 and "retention_rw" in details.get_json()["checks"]["store"]["error"]


def test_the_openapi_document_says_the_key_is_optional_and_only_widens_the_answer(client):
    readyz = client.get("/openapi.json").get_json()["paths"]["/readyz"]["get"]
    assert {} in readyz["security"] and {"bearer": []} in readyz["security"]
    assert set(readyz["responses"]) == {"200", "503"} and "admin" in readyz["description"]
