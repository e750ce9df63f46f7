"""Per-key rate limiting: a key over its limit gets 429 in the usual error body with Retry-After, other keys
and the health endpoints are unaffected, and the bucket is never the key itself."""

from __future__ import annotations

from support import KEYS, decision_body, headers, make_app, post, seed_clients


def test_a_key_over_its_limit_gets_429_and_others_do_not(migrated_url, models_root):
    seed_clients(migrated_url)
    app = make_app(migrated_url, models_root, RATE_LIMIT="5 per minute")
    client = app.test_client()
    try:
        codes = [post(client, "/v1/decisions", decision_body(request_id=f"rl-{i}")).status_code for i in range(7)]
        assert codes == [201] * 5 + [429, 429]
        r = post(client, "/v1/decisions", decision_body(request_id="rl-over"))
        body = r.get_json()
        assert r.status_code == 429 and body["code"] == 429 and "limit" in body["message"].lower()
        assert int(r.headers["Retry-After"]) > 0
        # Another key has its own budget; health and metrics are never limited.
        assert post(client, "/v1/decisions", decision_body(request_id="rl-events"), role="admin").status_code == 201
        assert all(client.get("/healthz").status_code == 200 for _ in range(10))
        # Requests without a key are limited by address, and still get their 401 first.
        assert client.post("/v1/decisions", json=decision_body()).status_code == 401
        # The limiter's storage never sees a key, only a hash of it.
        limiter = app.extensions["retention_limiter"]
        stored = repr(vars(limiter.storage))
        assert KEYS["decide"] not in stored and KEYS["admin"] not in stored
    finally:
        app.extensions["retention"].close()


def test_the_limit_can_be_switched_off(migrated_url, models_root):
    seed_clients(migrated_url)
    app = make_app(migrated_url, models_root, RATE_LIMIT="")
    try:
        client = app.test_client()
        assert "retention_limiter" not in app.extensions
        assert all(client.get("/v1/offers", headers=headers()).status_code == 200 for _ in range(20))
    finally:
        app.extensions["retention"].close()
