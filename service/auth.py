"""API keys with roles, request signing in the Standard Webhooks scheme, and the failed-authentication limit.

- A key is sent as `Authorization: Bearer <key>` (or `X-API-Key: <key>`). The store keeps only its SHA-256.
- Roles: `decide` (the billing frontend), `events` (the billing system), `followups` (the team that works
  follow-up tasks), `admin` (catalog, models, history).
  `admin` may do everything.
- A client created with a signing secret (`retention keys create --sign`, a `whsec_...` secret) must sign
  every request the Standard Webhooks way (https://www.standardwebhooks.com), so any of its libraries can
  do it: headers `webhook-id` (a fresh unique id per request, 1-128 printable characters), `webhook-timestamp`
  (Unix seconds) and `webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<payload>")>`, where
  the payload is the request itself:

      <METHOD>\\n<path>\\n<query>\\n<body>

  METHOD upper case; path percent-decoded, without the query (`/v1/decisions/abc/outcome`); query the raw
  query string exactly as sent, without `?` (empty if none); body the raw bytes (empty for GET). With the
  `standardwebhooks` package: `Webhook(secret).sign(id, timestamp, payload)`; docs/examples/signed_request.py
  is a complete client. Several space-separated `v1,...` signatures may be sent (one matching is enough),
  so a client can sign with an old and a new secret while a secret is rotated.
- A timestamp more than SIGNATURE_WINDOW_SECONDS from the server's clock is refused, and so is a webhook-id
  the client has used within that window: ids are recorded in the store (signed_request_ids), which every
  worker and host sees, until timestamp + window. While the store is down, ids are recorded in the process
  only, so a signed client keeps working through an outage (as unsigned ones do) and a replay is refused by
  the worker that saw the original; another worker could accept one exact copy then. Every write endpoint
  is idempotent (request_id, outcome per decision, event_id), so such a copy changes nothing stored.
- The former scheme (X-Retention-Timestamp / X-Retention-Signature over "<ts>.<METHOD>.<path>.<body>")
  covered neither the query string nor a nonce; it is refused with a message naming the new headers. A
  secret created before `whsec_` secrets keeps working as it is: the HMAC key is its UTF-8 bytes (with the
  library, `Webhook(secret.encode())`).
- Successful look-ups are cached in the process for a short time, so a store outage does not lock out a
  frontend that was already talking to us (a revoked key stops working within that time). A key the store
  refused is not looked up again for REFUSED_SECONDS, and failed authentications are limited per source
  address (service/ratelimit.py): over the limit, an unknown key is answered 429 without a store look-up.
  A verified client is then rate-limited by its client id.
- An endpoint open to everyone that shows more to one role (/readyz: details for admin) uses `optional_role`:
  a missing, wrong or under-privileged key is never an error there, and unknown keys are looked up in the
  store at most once per OPTIONAL_LOOKUP_SECONDS per process, so probes cannot turn it into store load. It
  never writes to the store: a signed webhook-id is remembered in the process only there.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import wraps

from flask import current_app, g, request
from flask_smorest import abort
from standardwebhooks import Webhook
from werkzeug.exceptions import HTTPException

from service.ratelimit import limits
from store import StoreUnavailable

ROLES = ("decide", "events", "followups", "admin")
AUTH_CACHE_SECONDS = 300.0  # a verified key is re-checked against the store after this long
STALE_SECONDS = 86_400.0  # ...but while the store is down, a key verified within this long still works
# A key the store refused is answered 401 from memory for this long. Short, so a key that is created after
# a client first tried it works within a minute.
REFUSED_SECONDS = 60.0
# optional_role: unknown keys are looked up at most this often per process.
OPTIONAL_LOOKUP_SECONDS = 1.0
SIGNATURE_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
_REQUEST_ID = re.compile(r"^[\x21-\x7e]{1,128}$")
_BOUNDED = 10_000  # entries per in-process table; a flood of fresh values empties it rather than grow it


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
            if len(self._entries) > _BOUNDED:
                self._entries.clear()
            self._entries[digest] = (time.monotonic(), client)

    def forget(self, digest: str) -> None:
        with self._lock:
            self._entries.pop(digest, None)


_cache = _AuthCache()


class _Expiring:
    """A bounded set of strings, each remembered for a given time (refused digests, seen webhook-ids)."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()

    def __contains__(self, item: str) -> bool:
        with self._lock:
            until = self._until.get(item)
            return until is not None and time.monotonic() < until

    def add(self, item: str, seconds: float) -> bool:
        """Remember `item`; False if it was already remembered."""
        with self._lock:
            now = time.monotonic()
            until = self._until.get(item)
            if until is not None and now < until:
                return False
            if len(self._until) > _BOUNDED:
                self._until = {k: v for k, v in self._until.items() if v > now}
                if len(self._until) > _BOUNDED:
                    self._until.clear()
            self._until[item] = now + seconds
            return True


_refused = _Expiring()  # digests the store said no to
_seen_locally = _Expiring()  # webhook-ids, when the store cannot record them (and for optional_role)


class _Throttle:
    def __init__(self, every: float) -> None:
        self._every, self._last, self._lock = every, float("-inf"), threading.Lock()

    def allow(self) -> bool:
        """True at most once per `every` seconds (and then counts as the use)."""
        with self._lock:
            now = time.monotonic()
            if now - self._last < self._every:
                return False
            self._last = now
            return True


_optional_lookups = _Throttle(OPTIONAL_LOOKUP_SECONDS)


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


def _failed(message: str) -> None:
    rl = limits()
    if rl is not None:
        rl.count_failure()
    abort(401, message=message, headers={"WWW-Authenticate": "Bearer"})


def _authenticate(key: str) -> dict:
    """The client holding `key`, else 401 (counted against the source address) or 429 (address over its
    failed-authentication limit: no store look-up) or 503 (store down and the key not known)."""
    digest = hashlib.sha256(key.encode()).hexdigest()
    client = _cache.get(digest)
    if client is not None:
        return client
    known = _cache.get(digest, stale=True) is not None
    if not known:
        # Neither a key this process knows nor one to re-check: this is where a flood of made-up keys
        # would turn into store queries, so the address's failures are checked first.
        rl = limits()
        if rl is not None:
            rl.failures_exceeded()
        if digest in _refused:
            _failed("invalid or revoked API key")
    client = _ask_store(key, digest)
    if client is _UNAVAILABLE:
        abort(503, message="cannot verify the API key: the store is unavailable; retry shortly",
              headers={"Retry-After": "5"})
    if client is None:
        _failed("invalid or revoked API key")
    return client


_UNAVAILABLE = object()  # _ask_store: the store could not be asked and the key is not known from before


def _ask_store(key: str, digest: str) -> dict | None | object:
    """The store's word on a key that is not fresh in the cache, kept in the caches: the client, or None
    (refused: revoked since it was cached, or never valid; not asked about again for REFUSED_SECONDS).
    While the store cannot be asked: the client if this process verified the key within STALE_SECONDS, else
    _UNAVAILABLE."""
    try:
        client = current_app.extensions["retention"].store.authenticate(key)
    except StoreUnavailable:
        stale = _cache.get(digest, stale=True)
        return _UNAVAILABLE if stale is None else stale
    if client is None:
        _cache.forget(digest)
        _refused.add(digest, REFUSED_SECONDS)
    else:
        _cache.put(digest, client)
    return client


def optional_role(role: str) -> bool:
    """Whether the request carries a valid key with `role` (or admin), for an endpoint everyone may call:
    never aborts and never blocks on the store. A key verified recently (every key at start-up) is known
    from the cache; any other key costs at most one store look-up per OPTIONAL_LOOKUP_SECONDS in this
    process, and one the store refused is not asked about again for REFUSED_SECONDS."""
    key = presented_key()
    if key is None:
        return False
    digest = hashlib.sha256(key.encode()).hexdigest()
    client = _cache.get(digest)
    if client is None:
        if digest in _refused or not _optional_lookups.allow():
            return False
        client = _ask_store(key, digest)
        if client is None or client is _UNAVAILABLE:
            return False
    if client.get("signing_secret"):
        try:
            request_id, _ = _verify_signature(client["signing_secret"])
        except HTTPException:
            return False
        if not _first_use_here(client, request_id):
            return False
    return client["role"] in (role, "admin")


def _window() -> int:
    return current_app.config["SIGNATURE_WINDOW_SECONDS"]


def signing_key(secret: str) -> str | bytes:
    """What to give standardwebhooks.Webhook for a client's secret: a `whsec_<base64>` secret as it is
    (the library decodes it), an older free-form secret as its UTF-8 bytes."""
    return secret if secret.startswith("whsec_") else secret.encode()


def signed_payload(method: str, path: str, query: str, body: str) -> str:
    """The request as it is signed: "<METHOD>\\n<path>\\n<query>\\n<body>"."""
    return f"{method.upper()}\n{path}\n{query}\n{body}"


def _verify_signature(secret: str) -> tuple[str, int]:
    """(webhook-id, timestamp) of a correctly signed, timely request, else 401. Does not record the id."""
    request_id, ts, sig = (request.headers.get(h, "") for h in SIGNATURE_HEADERS)
    if not (request_id and ts and sig):
        if request.headers.get("X-Retention-Signature"):
            abort(401, message="X-Retention-Timestamp / X-Retention-Signature are no longer accepted (they "
                               "covered neither the query string nor a nonce): sign with webhook-id, "
                               "webhook-timestamp and webhook-signature (see the README)")
        abort(401, message="this client must sign requests: send webhook-id, webhook-timestamp and "
                           "webhook-signature (Standard Webhooks; see the README)")
    if not _REQUEST_ID.match(request_id):
        abort(401, message="webhook-id must be 1 to 128 printable ASCII characters without spaces")
    try:
        sent = int(ts)
    except ValueError:
        abort(401, message="webhook-timestamp must be Unix seconds")
    window = _window()
    if abs(time.time() - sent) > window:
        abort(401, message=f"webhook-timestamp is outside the {window} s replay window")
    try:
        # The library signs text: a JSON body is UTF-8, and a query string is ASCII (RFC 3986).
        payload = signed_payload(request.method, request.path, request.query_string.decode(),
                                 request.get_data(cache=True).decode())
        expected = Webhook(signing_key(secret)).sign(request_id, datetime.fromtimestamp(sent, UTC), payload)
    except (UnicodeDecodeError, ValueError):
        abort(401, message="request signature does not match")
    if not any(hmac.compare_digest(expected.encode(), s.encode()) for s in sig.split(" ") if s.startswith("v1,")):
        abort(401, message="request signature does not match")
    return request_id, sent


def _first_use(client: dict, request_id: str, sent: int) -> bool:
    """Record a verified request's webhook-id; False if the client used it before within the window."""
    expires = datetime.fromtimestamp(sent + _window(), UTC)
    try:
        return current_app.extensions["retention"].store.first_use_of_request_id(client["id"], request_id, expires)
    except StoreUnavailable:
        return _first_use_here(client, request_id)


def _first_use_here(client: dict, request_id: str) -> bool:
    """The same in this process's memory only (the store down, or /readyz, which never writes to it)."""
    return _seen_locally.add(f"{client['id']}:{request_id}", _window() * 2)


def requires(*roles: str) -> Callable:
    """View decorator: a valid key whose role is one of `roles` (or admin), else 401 / 403 (or 429).

    In this order, cheapest first: key (cache, else the failure limit, else the store), signature (HMAC and
    clock only), the client's rate limit, the webhook-id (a store write), the role."""
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown roles {unknown}")

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(*args, **kwargs):
            key = presented_key()
            if key is None:
                _failed("missing API key: send 'Authorization: Bearer <key>'")
            client = _authenticate(key)
            signed = _verify_signature(client["signing_secret"]) if client.get("signing_secret") else None
            rl = limits()
            if rl is not None:
                rl.hit_client(client["id"])
            if signed is not None and not _first_use(client, *signed):
                abort(401, message="this webhook-id was already used: a replayed request is refused; send "
                                   "each request with a new webhook-id")
            if client["role"] != "admin" and client["role"] not in roles:
                abort(403, message=f"role {client['role']!r} may not call this endpoint (needs {' or '.join(roles)})")
            g.client = client["name"]
            return view(*args, **kwargs)

        return wrapper

    return decorator
