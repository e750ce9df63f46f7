"""Helpers shared by the service tests: API keys per role, request bodies, signed headers."""

from __future__ import annotations

import json
from pathlib import Path

from service import create_app
from service.auth import sign
from store import Store

KEYS = {
    "decide": "test-decide-key-0123456789abcdef",
    "events": "test-events-key-0123456789abcdef",
    "admin": "test-admin-key-0123456789abcdef0",
}
SIGNED_KEY, SIGNING_SECRET = "test-signed-key-0123456789abcdef", "s3cret-signing-value"


def headers(role: str = "decide") -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[role]}"}


def signed_headers(method: str, path: str, body: bytes, timestamp: int) -> dict[str, str]:
    return {"Authorization": f"Bearer {SIGNED_KEY}", "Content-Type": "application/json",
            "X-Retention-Timestamp": str(timestamp),
            "X-Retention-Signature": sign(SIGNING_SECRET, str(timestamp), method, path, body)}


def decision_body(request_id: str = "r-1", customer_id: str = "cust-1", **overrides) -> dict:
    body = {"request_id": request_id, "customer_id": customer_id, "reason": "temporary",
            "plan_id": "plus_monthly", "price": 14.95, "billing_period": "monthly", "billing_channel": "web"}
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def seed_clients(url: str) -> None:
    with Store.from_url(url) as store:
        for role, key in KEYS.items():
            store.create_client(f"test-{role}", role, key=key)
        store.create_client("test-signed", "decide", key=SIGNED_KEY, signing_secret=SIGNING_SECRET)


def make_app(url: str, models_root: Path, **config):
    return create_app({"TESTING": True, "DATABASE_URL": url, "MODELS_DIR": str(models_root),
                       "MODEL_VERSION": "latest", **config})


def post(client, path: str, body, role: str = "decide", **kw):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post(path, data=data, headers={**headers(role), "Content-Type": "application/json"}, **kw)
