"""Two rate limits, counted with the `limits` library: one per authenticated API client, and one on failed
authentication per source address (service/auth.py calls both).

- **Per client** (RETENTION_RATE_LIMIT, default 1000 per second per worker): counted after the key is
  verified, by the client's id, so the bucket holds no key material and a flood of wrong keys never touches
  another client's budget. The default is above what one sequential caller can reach: a decision takes
  about 3 ms over HTTP (README, Performance), so one connection makes ~300/s, and even the cheapest request
  (a bare round trip to gunicorn) stays under 1 ms; with several workers, its requests are split among them.
  A frontend that sees a 429 is running many connections flat out, i.e. a loop gone wrong. The former
  default, 50 per second, cut a sequential frontend (15 x 429 on 92 outcome posts).
- **Failed authentication per source address** (RETENTION_AUTH_FAILURE_LIMIT, default 30 per minute): a
  missing, unknown or revoked key counts as a failure. Over the limit, a key this process does not already
  know is answered 429 *without a store look-up*, so a flood of random keys costs one counter increment per
  request, not a query. Keys already known (every active key is loaded at start-up) still work from that
  address, so a flood from behind the same proxy does not lock out the frontend.

Over either limit: 429 in the usual error body, with Retry-After = whole seconds until the window lets the
next request through (at least 1), and X-RateLimit-Limit / -Remaining / -Reset.

Counts live in RETENTION_RATE_LIMIT_STORAGE (default memory://: per worker process, so with N gunicorn
workers a client gets up to N x the limit; memcached:// or redis:// with its client library for one count
across workers and hosts). The source address is `request.remote_addr`; behind a reverse proxy or load
balancer set RETENTION_TRUSTED_PROXIES to the number of proxies in front of the service, and werkzeug's
ProxyFix takes the client address from that many X-Forwarded-For hops (never more: a client can write
anything into the header itself).
"""

from __future__ import annotations

import math
import time

from flask import Flask, current_app, request
from flask_smorest import abort
from limits import parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter
from werkzeug.middleware.proxy_fix import ProxyFix


class RateLimits:
    """The service's two limits on one storage. `client_limit` / `failure_limit` are `limits` strings
    ("1000 per second"); an empty one is off."""

    def __init__(self, storage_uri: str, client_limit: str, failure_limit: str) -> None:
        self.storage = storage_from_string(storage_uri)
        self._limiter = MovingWindowRateLimiter(self.storage)
        self.client_limit = parse(client_limit) if client_limit else None
        self.failure_limit = parse(failure_limit) if failure_limit else None

    def hit_client(self, client_id: int) -> None:
        """Count one request of an authenticated client; 429 if it is over its limit."""
        if self.client_limit is not None and not self._limiter.hit(self.client_limit, "client", str(client_id)):
            self._refuse(self.client_limit, ("client", str(client_id)),
                         f"rate limit of this API client exceeded ({self.client_limit})")

    def failures_exceeded(self) -> None:
        """429 if the request's address is over its failed-authentication limit (no failure is counted)."""
        if self.failure_limit is not None and not self._limiter.test(self.failure_limit, "authfail", _address()):
            self._refuse(self.failure_limit, ("authfail", _address()),
                         f"too many failed authentications from this address ({self.failure_limit})")

    def count_failure(self) -> None:
        if self.failure_limit is not None:
            self._limiter.hit(self.failure_limit, "authfail", _address())

    def _refuse(self, item, identifiers: tuple[str, ...], message: str) -> None:
        stats = self._limiter.get_window_stats(item, *identifiers)
        # Whole seconds until the oldest counted request leaves the window, never 0 (a client told "retry
        # after 0" retries at once, which is the flood we are refusing).
        retry = max(1, math.ceil(stats.reset_time - time.time()))
        abort(429, message=f"{message}; retry after the Retry-After seconds",
              headers={"Retry-After": str(retry), "X-RateLimit-Limit": str(item.amount),
                       "X-RateLimit-Remaining": str(stats.remaining),
                       "X-RateLimit-Reset": str(math.ceil(stats.reset_time))})


def _address() -> str:
    return request.remote_addr or "unknown"


def limits() -> RateLimits | None:
    """This app's limits (None when both are off)."""
    return current_app.extensions.get("retention_limits")


def register_rate_limits(app: Flask) -> None:
    hops = int(app.config.get("TRUSTED_PROXIES", 0))
    if hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops)
    client, failures = app.config["RATE_LIMIT"], app.config["AUTH_FAILURE_LIMIT"]
    if client or failures:
        app.extensions["retention_limits"] = RateLimits(app.config["RATE_LIMIT_STORAGE"], client, failures)
