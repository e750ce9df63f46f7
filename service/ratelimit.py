"""Per-key rate limiting (flask-limiter): a frontend gone haywire, or a leaked key, cannot flood the store or
hand out offers faster than the limit. Keyed by a hash of the presented API key (never the key itself), by
the client address when there is none. Health, readiness and metrics are exempt.

The default storage is per process, so with N gunicorn workers a key gets up to N x the limit; point
RETENTION_RATE_LIMIT_STORAGE at a shared store (e.g. memcached:// or redis://, with its client library
installed) for one limit across workers and hosts. Over the limit: 429 in the usual error body, with
Retry-After.
"""

from __future__ import annotations

import hashlib

from flask import Flask, request
from flask_limiter import Limiter

from service.auth import presented_key


def _bucket() -> str:
    key = presented_key()
    if key:
        return "key:" + hashlib.sha256(key.encode()).hexdigest()[:24]
    return "addr:" + (request.remote_addr or "unknown")


def register_rate_limits(app: Flask) -> None:
    limit = app.config["RATE_LIMIT"]
    if not limit:
        return
    from service.health import blp as health

    limiter = Limiter(_bucket, app=app, default_limits=[limit], storage_uri=app.config["RATE_LIMIT_STORAGE"],
                      strategy="moving-window", headers_enabled=True, retry_after="delta-seconds",
                      key_prefix="retention")
    limiter.exempt(health)
    app.extensions["retention_limiter"] = limiter
