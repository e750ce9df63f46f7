"""API keys with roles, and optional HMAC-SHA256 request signing.

- A key is sent as `Authorization: Bearer <key>` (or `X-API-Key: <key>`). The store keeps only its SHA-256.
- Roles: `decide` (the billing frontend), `events` (the billing system), `admin` (catalog, models, history).
  `admin` may do everything.
- A client created with a signing secret must also send `X-Retention-Timestamp` (Unix seconds) and
  `X-Retention-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<METHOD>.<path>.<body>")>`. A signature
  older or newer than the replay window is refused, so a captured request cannot be replayed later.
- Successful look-ups are cached in the process for a short time, so a store outage does not lock out a
  frontend that was already talking to us (a revoked key stops working within that time).
- An endpoint open to everyone that shows more to one role (/readyz: details for admin) uses `optional_role`:
  a missing, wrong or under-privileged key is never an error there, and unknown keys are looked up in the
  store at most once per OPTIONAL_LOOKUP_SECONDS per process, so probes cannot turn it into store load.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Callable
from functools import wraps

from flask import current_app, g, request
from flask_smorest import abort
from werkzeug.exceptions import HTTPException

from store import StoreUnavailable

ROLES = ("decide", "events", "admin")
AUTH_CACHE_SECONDS = 300.0  # a verified key is re-checked against the store after this long
STALE_SECONDS = 86_400.0  # ...but while the store is down, a key verified within this long still works
# optional_role: unknown keys are looked up at most this often per process, and a key the store refused is
# not asked about again for AUTH_CACHE_SECONDS (a probe sending a stale key every second costs nothing).
OPTIONAL_LOOKUP_SECONDS = 1.0


class _AuthCache:
    """Verified keys by SHA-256 digest. Fresh for AUTH_CACHE_SECONDS; while the store cannot be asked, an
    entry up to STALE_SECONDS old is still honoured, so a store outage never locks out the frontend."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, dict]] = {}
        self._lock = threading.Lock()

    def get(self, digest: str, stale: bool = False) -> dict | None:
        with self._lock:
            hit = self._entries.get(digest)
            if hit is None:
                return None
            age = time.monotonic() - hit[0]
            return hit[1] if age < (STALE_SECONDS if stale else AUTH_CACHE_SECONDS) else None

    def put(self, digest: str, client: dict) -> None:
        with self._lock:
            if len(self._entries) > 10_000:
                self._entries.clear()
            self._entries[digest] = (time.monotonic(), client)

    def forget(self, digest: str) -> None:
        with self._lock:
            self._entries.pop(digest, None)


_cache = _AuthCache()


class _Refused:
    """Digests the store refused recently (for optional_role only), and when it was last asked."""

    def __init__(self) -> None:
        self._at: dict[str, float] = {}
        self._last_lookup = -OPTIONAL_LOOKUP_SECONDS
        self._lock = threading.Lock()

    def recently(self, digest: str) -> bool:
        with self._lock:
            at = self._at.get(digest)
            return at is not None and time.monotonic() - at < AUTH_CACHE_SECONDS

    def may_look_up(self) -> bool:
        """True at most once per OPTIONAL_LOOKUP_SECONDS (and then counts as the look-up)."""
        with self._lock:
            now = time.monotonic()
            if now - self._last_lookup < OPTIONAL_LOOKUP_SECONDS:
                return False
            self._last_lookup = now
            return True

    def add(self, digest: str) -> None:
        with self._lock:
            if len(self._at) > 10_000:
                self._at.clear()
            self._at[digest] = time.monotonic()


_refused = _Refused()


def prime(clients: dict[str, dict]) -> None:
    """Load every active key (digest -> client) at start-up, before gunicorn forks: each worker then knows
    every key even if the store is down before its first request."""
    for digest, client in clients.items():
        _cache.put(digest, client)


def presented_key() -> str | None:
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header[7:].strip() or None
    return request.headers.get("X-API-Key") or None


def _authenticate(key: str) -> dict | None:
    digest = hashlib.sha256(key.encode()).hexdigest()
    client = _cache.get(digest)
    if client is not None:
        return client
    try:
        client = current_app.extensions["retention"].store.authenticate(key)
    except StoreUnavailable:
        client = _cache.get(digest, stale=True)
        if client is not None:
            return client
        abort(503, message="cannot verify the API key: the store is unavailable; retry shortly",
              headers={"Retry-After": "5"})
    if client is None:
        _cache.forget(digest)  # revoked since it was cached
    else:
        _cache.put(digest, client)
    return client


def optional_role(role: str) -> bool:
    """Whether the request carries a valid key with `role` (or admin), for an endpoint everyone may call:
    never aborts and never blocks on the store. A key verified recently (every key at start-up) is known
    from the cache; any other key costs at most one store look-up per OPTIONAL_LOOKUP_SECONDS in this
    process, and one the store refused is not asked about again for AUTH_CACHE_SECONDS."""
    key = presented_key()
    if key is None:
        return False
    digest = hashlib.sha256(key.encode()).hexdigest()
    client = _cache.get(digest)
    if client is None:
        if _refused.recently(digest) or not _refused.may_look_up():
            return False
        try:
            client = current_app.extensions["retention"].store.authenticate(key)
        except StoreUnavailable:
            client = _cache.get(digest, stale=True)  # not refused: the store could not be asked
            if client is None:
                return False
        else:
            if client is None:
                _refused.add(digest)
                _cache.forget(digest)
                return False
            _cache.put(digest, client)
    if client.get("signing_secret") and not _signature_valid(client["signing_secret"]):
        return False
    return client["role"] in (role, "admin")


def _signature_valid(secret: str) -> bool:
    try:
        _check_signature(secret)
    except HTTPException:
        return False
    return True


def _check_signature(secret: str) -> None:
    ts = request.headers.get("X-Retention-Timestamp", "")
    sig = request.headers.get("X-Retention-Signature", "")
    if not ts or not sig.startswith("sha256="):
        abort(401, message="this client must sign requests: send X-Retention-Timestamp and X-Retention-Signature")
    try:
        sent = int(ts)
    except ValueError:
        abort(401, message="X-Retention-Timestamp must be Unix seconds")
    window = current_app.config["SIGNATURE_WINDOW_SECONDS"]
    if abs(time.time() - sent) > window:
        abort(401, message=f"signature timestamp is outside the {window} s replay window")
    expected = sign(secret, ts, request.method, request.path, request.get_data(cache=True))
    if not hmac.compare_digest(expected, sig):
        abort(401, message="request signature does not match")


def sign(secret: str, timestamp: str, method: str, path: str, body: bytes) -> str:
    """The value of X-Retention-Signature for a request (clients use the same function or its equivalent)."""
    message = f"{timestamp}.{method.upper()}.{path}.".encode() + body
    return "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def requires(*roles: str) -> Callable:
    """View decorator: a valid key whose role is one of `roles` (or admin), else 401 / 403."""
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown roles {unknown}")

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(*args, **kwargs):
            key = presented_key()
            if key is None:
                abort(401, message="missing API key: send 'Authorization: Bearer <key>'",
                      headers={"WWW-Authenticate": "Bearer"})
            client = _authenticate(key)
            if client is None:
                abort(401, message="invalid or revoked API key", headers={"WWW-Authenticate": "Bearer"})
            if client.get("signing_secret"):
                _check_signature(client["signing_secret"])
            if client["role"] != "admin" and client["role"] not in roles:
                abort(403, message=f"role {client['role']!r} may not call this endpoint (needs {' or '.join(roles)})")
            g.client = client["name"]
            return view(*args, **kwargs)

        return wrapper

    return decorator
