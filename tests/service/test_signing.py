"""Signed requests (Standard Webhooks scheme), on SQLite and PostgreSQL: what the standardwebhooks library
signs is accepted once; a changed method, path, query, body, timestamp, id or secret is refused, and so is an
exact replay, also by another process on the same store."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import requests
from support import (
    ROOT,
    SIGNED_KEY,
    SIGNING_SECRET,
    decision_body,
    headers,
    make_app,
    seed_clients,
    serve,
    signed_headers,
)

from store import Store


def test_the_libraries_signature_is_accepted_for_a_get_with_a_query_and_a_post_with_a_body(client):
    r = client.get("/v1/offers?include=all", headers=signed_headers("GET", "/v1/offers", b"", query="include=all"))
    assert r.status_code == 200, r.get_json()
    body = json.dumps(decision_body(request_id="signed-lib")).encode()
    r = client.post("/v1/decisions", data=body, headers=signed_headers("POST", "/v1/decisions", body))
    assert r.status_code == 201, r.get_json()


def test_a_query_string_added_to_a_signed_request_is_refused(client):
    """The outside review's case: GET /v1/offers?injected=1 sent with the signature of the bare path."""
    signed = signed_headers("GET", "/v1/offers", b"")
    r = client.get("/v1/offers?injected=1", headers=signed)
    assert r.status_code == 401 and "does not match" in r.get_json()["message"]
    r = client.get("/v1/offers?a=2", headers=signed_headers("GET", "/v1/offers", b"", query="a=1"))
    assert r.status_code == 401


def test_every_signed_part_is_covered(client):
    body = json.dumps(decision_body(request_id="signed-parts")).encode()
    good = signed_headers("POST", "/v1/decisions", body)

    def refused(data=body, path="/v1/decisions", **changed) -> str:
        r = client.post(path, data=data, headers={**good, **changed})
        assert r.status_code == 401, (changed, r.get_json())
        return r.get_json()["message"]

    assert "does not match" in refused(data=body.replace(b"temporary", b"technical"))
    assert "does not match" in refused(**{"webhook-timestamp": str(int(good["webhook-timestamp"]) - 1)})
    assert "does not match" in refused(**{"webhook-id": "msg_another"})
    assert "does not match" in refused(path="/v1/decisions/x/outcome")
    as_get = signed_headers("GET", "/v1/decisions", body)
    assert "does not match" in refused(**{k: as_get[k] for k in ("webhook-id", "webhook-signature",
                                                                 "webhook-timestamp")})
    wrong = signed_headers("POST", "/v1/decisions", body, secret="whsec_" + "A" * 43)
    assert "does not match" in refused(**{"webhook-signature": wrong["webhook-signature"]})
    late = signed_headers("POST", "/v1/decisions", body, timestamp=int(time.time()) - 301)
    assert "replay window" in refused(**late)
    assert "must sign" in refused(**{"webhook-signature": ""})
    only_key = client.post("/v1/decisions", data=body, headers={"Authorization": good["Authorization"],
                                                                 "Content-Type": "application/json"})
    assert only_key.status_code == 401, "a signing client's key alone is not enough"
    # None of the refusals used up the id: the untouched request still goes through.
    assert client.post("/v1/decisions", data=body, headers=good).status_code == 201


def test_the_former_headers_are_refused_with_a_message_naming_the_new_ones(client):
    r = client.get("/v1/offers", headers={"Authorization": f"Bearer {SIGNED_KEY}",
                                          "X-Retention-Timestamp": str(int(time.time())),
                                          "X-Retention-Signature": "sha256=" + "0" * 64})
    assert r.status_code == 401 and "webhook-signature" in r.get_json()["message"]


def test_an_exact_replay_is_refused_by_the_same_and_by_another_process(migrated_url, models_root):
    """Two apps on one store stand for two gunicorn workers (each with its own memory): the id is recorded
    where both see it."""
    seed_clients(migrated_url)
    first, second = make_app(migrated_url, models_root), make_app(migrated_url, models_root)
    try:
        body = json.dumps(decision_body(request_id="signed-replay")).encode()
        signed = signed_headers("POST", "/v1/decisions", body)
        assert first.test_client().post("/v1/decisions", data=body, headers=signed).status_code == 201
        for app in (first, second):
            r = app.test_client().post("/v1/decisions", data=body, headers=signed)
            assert r.status_code == 401 and "already used" in r.get_json()["message"]
        # The same request with a new id is a new request (and the decision's idempotency answers it).
        again = second.test_client().post("/v1/decisions", data=body,
                                          headers=signed_headers("POST", "/v1/decisions", body))
        assert again.status_code == 200
    finally:
        first.extensions["retention"].close()
        second.extensions["retention"].close()


def test_a_secret_from_before_whsec_secrets_signs_as_its_bytes(migrated_url, models_root):
    legacy_key, legacy_secret = "test-legacy-signed-key-0123456789", "s3cret-signing-value"
    with Store.from_url(migrated_url) as store:
        store.create_client("legacy-signed", "decide", key=legacy_key, signing_secret=legacy_secret)
    app = make_app(migrated_url, models_root)
    try:
        r = app.test_client().get("/v1/offers", headers=signed_headers(
            "GET", "/v1/offers", b"", secret=legacy_secret.encode(), key=legacy_key))
        assert r.status_code == 200, r.get_json()
    finally:
        app.extensions["retention"].close()


def test_signed_ids_expire_with_the_window(migrated_url):
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import text

    def kept(store) -> list[str]:
        with store.transaction() as conn:
            return [r[0] for r in conn.execute(text(
                "SELECT request_id FROM signed_request_ids ORDER BY client_id, request_id"))]

    with Store.from_url(migrated_url) as store:
        later = datetime.now(UTC) + timedelta(seconds=300)
        assert store.first_use_of_request_id(1, "msg_1", later) is True
        assert store.first_use_of_request_id(1, "msg_1", later) is False
        assert store.first_use_of_request_id(2, "msg_1", later) is True  # ids are per client
        assert store.first_use_of_request_id(1, "msg_old", datetime.now(UTC) - timedelta(seconds=1)) is True
        # Expired but not yet swept (sweeps are at most every 10 s): no replay, the id may be used again.
        assert kept(store) == ["msg_1", "msg_old", "msg_1"]
        assert store.first_use_of_request_id(1, "msg_old", later) is True
        assert store.first_use_of_request_id(1, "msg_old", later) is False
        # When a sweep is due, the next use deletes the expired ids and keeps the others.
        assert store.first_use_of_request_id(1, "msg_gone", datetime.now(UTC) - timedelta(seconds=1)) is True
        store._next_sweep = 0.0
        assert store.first_use_of_request_id(1, "msg_2", later) is True
        assert kept(store) == ["msg_1", "msg_2", "msg_old", "msg_1"]


@pytest.mark.slow
def test_the_example_client_works_against_gunicorn_and_its_replay_is_refused_by_every_worker(
        migrated_url, models_root, tmp_path):
    seed_clients(migrated_url)
    with serve(migrated_url, models_root, tmp_path, workers=2) as server:
        out = subprocess.run(
            [sys.executable, str(ROOT / "docs" / "examples" / "signed_request.py"), "--url", server.base,
             "--key", SIGNED_KEY, "--secret", SIGNING_SECRET, "--print-headers", "GET", "/v1/offers?limit=5"],
            capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        sent = json.loads(lines[0])
        assert lines[1] == "200"
        assert {"webhook-id", "webhook-timestamp", "webhook-signature"} <= sent.keys()
        # Exactly the same request again, each on a new connection, so to either of the two workers: never
        # accepted (with ids kept per process, about half of these would have been).
        for _ in range(12):
            r = requests.get(f"{server.base}/v1/offers?limit=5", headers=sent, timeout=10)
            assert r.status_code == 401 and "already used" in r.json()["message"]
        assert requests.get(f"{server.base}/v1/offers", headers=headers(), timeout=10).status_code == 200
