"""`Store`: every read and write of the service's state, as short transactions returning plain dicts.

Idempotency rests on unique constraints, not on checking first: concurrent duplicates (threads, gunicorn
workers, several hosts) race to INSERT ... ON CONFLICT DO NOTHING, exactly one row wins, and the losers read
the winner's row in the same transaction. Transactions that write start with the write lock on SQLite (see
store.db) and lock the decision row on PostgreSQL where a check must hold until the insert (outcomes).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
import secrets
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, delete, exists, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from retention.contract import CUSTOMERS
from retention.jsonvalues import jsonable
from retention.utc import require_aware
from retention.webhooks import DECISION_CREATED, OUTCOME_RECORDED, decision_created, outcome_recorded
from store.db import WRITES, make_engine, unavailable_as_store_errors
from store.errors import Conflict, IdempotencyConflict, InvalidRecord, NotFound
from store.followups import FollowupStore
from store.models import (
    EVENT_TYPES,
    NO_OFFER,
    OUTCOME_KINDS,
    ROLES,
    ApiClient,
    Customer,
    CustomerFeatures,
    Decision,
    Event,
    FeatureSnapshot,
    Outcome,
    SignedRequestId,
)
from store.outbox import OutboxMixin

KEY_PREFIX = "rk"
# Generated keys are rk_<key_id>_<secret>: the key id is public (it finds the row), only the whole key
# authenticates. Explicit keys (a dev setup's fixed key) may be any printable text of 16+ characters.
_KEY_RE = re.compile(rf"^{KEY_PREFIX}_([A-Za-z0-9]{{4,32}})_([A-Za-z0-9_-]{{16,}})$")
_ANY_KEY_RE = re.compile(r"^[\x21-\x7e]{16,}$")
_MUTUALLY_EXCLUSIVE = {"accepted": "declined", "declined": "accepted"}
_BATCH = 1000  # rows per INSERT / IN (...) list: well under SQLite's limit on bound parameters

_DECISION_REQUIRED = frozenset({
    "request_id", "body_hash", "client", "customer_id", "reason", "request", "features", "scores", "offer_id",
    "offer", "propensity", "reason_codes", "policy_version", "catalog_version", "fallback", "latency_ms",
    "nps_segment",
})
_DECISION_OPTIONAL = frozenset({
    "decision_id", "created_at", "reason_text", "p_stay", "expected_incremental_value", "model_version",
    "experiment", "experiment_name", "experiment_variant", "close_the_loop_by",
})
_DECISION_JSON = ("request", "features", "scores", "offer", "reason_codes", "experiment")
_EVENT_REQUIRED = frozenset({"event_id", "type", "customer_id", "occurred_at"})
_EVENT_OPTIONAL = frozenset({"decision_id", "payload"})
# What makes two events with the same event_id the same event.
_EVENT_IDENTITY = ("type", "customer_id", "decision_id", "occurred_at", "payload")


def _now() -> datetime:
    return datetime.now(UTC)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_id_of(key: str) -> str | None:
    """The public id that finds a key's row: the <key_id> of an rk_<key_id>_<secret> key, else a prefix of the
    key's digest (a prefix of a free-form key would give away part of its secret); None for a non-key."""
    if not isinstance(key, str) or not _ANY_KEY_RE.match(key):
        return None
    m = _KEY_RE.match(key)
    return m.group(1) if m else "d" + key_hash(key)[:12]


def new_key() -> str:
    return f"{KEY_PREFIX}_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"


def body_hash(body: Any) -> str:
    """sha256 of the canonical JSON of a request body (sorted keys, no spaces): the idempotency fingerprint."""
    canonical = json.dumps(_json(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _json(value: Any) -> Any:
    """The core's plain-JSON conversion; a value without one is a caller's bug the store names."""
    try:
        return jsonable(value)
    except TypeError as exc:
        raise InvalidRecord(f"cannot be stored as JSON: {exc}") from exc


def _feature_values(values: dict) -> dict[str, float | str | None]:
    """Feature name -> float (numbers), str (categories) or None (missing, NaN)."""
    out: dict[str, float | str | None] = {}
    for name, v in _json(dict(values)).items():
        if v is None or isinstance(v, str):
            out[name] = v
        elif isinstance(v, bool | int | float):
            out[name] = float(v)
        else:
            raise InvalidRecord(f"feature {name!r}: {v!r} is neither a number nor a category")
    return out


def _check_keys(what: str, record: dict, required: frozenset, optional: frozenset) -> None:
    missing, unknown = sorted(required - record.keys()), sorted(record.keys() - required - optional)
    if missing or unknown:
        problems = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unknown {', '.join(unknown)}"] if unknown else [])
        raise InvalidRecord(f"{what}: {'; '.join(problems)}")


def _aware(name: str, value: Any) -> datetime:
    try:
        return require_aware(name, value).astimezone(UTC)
    except ValueError as exc:
        raise InvalidRecord(str(exc)) from exc


def _insert(conn: Connection, table):
    """INSERT with the dialect's ON CONFLICT support."""
    return (postgresql if conn.dialect.name == "postgresql" else sqlite).insert(table)


def _batches(items: Iterable, size: int = _BATCH) -> Iterator[list]:
    it = iter(items)
    while batch := list(itertools.islice(it, size)):
        yield batch


def _client_dict(row, with_secret: bool) -> dict:
    d = {"id": row.id, "name": row.name, "role": row.role, "key_id": row.key_id,
         "signed": row.signing_secret is not None, "created_at": row.created_at, "revoked_at": row.revoked_at}
    if with_secret:
        d["signing_secret"] = row.signing_secret
    return d


def _same_secret(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and hmac.compare_digest(a.encode(), b.encode())


# The decision path's statements, built once: building a SQLAlchemy expression costs more than running it
# on SQLite, so the per-request statements are prepared here with bound parameters.
_D = Decision.__table__
_DECISION_BY_ID = select(_D).where(_D.c.decision_id == bindparam("key"))
# Idempotency keys are scoped per client: a decision is found by (client, request_id), never by request_id alone.
_DECISION_BY_REQUEST = select(_D).where(_D.c.client == bindparam("client"), _D.c.request_id == bindparam("key"))
_FEATURES_BY_CUSTOMER = select(CustomerFeatures.__table__).where(
    CustomerFeatures.__table__.c.customer_id == bindparam("customer_id"))
_CUSTOMER_COLUMNS = CUSTOMERS.column_names  # the contract's; any other key of a customer row is an attribute
_OFFER_HISTORY = (
    select(_D.c.decision_id, _D.c.offer_id, _D.c.offer, _D.c.created_at,
           exists().where(Outcome.__table__.c.decision_id == _D.c.decision_id,
                          Outcome.__table__.c.kind == "accepted").label("accepted"))
    .where(_D.c.customer_id == bindparam("customer_id"), _D.c.created_at >= bindparam("since"))
    .order_by(_D.c.created_at.desc(), _D.c.decision_id)
)
_NPS_SINCE = (
    select(Event.__table__)
    .where(Event.__table__.c.customer_id == bindparam("customer_id"), Event.__table__.c.type == "nps",
           Event.__table__.c.occurred_at >= bindparam("since"))
    .order_by(Event.__table__.c.occurred_at, Event.__table__.c.id)
)
_RECENT_DECISIONS = (
    select(_D.c.created_at, _D.c.model_version, _D.c.reason, _D.c.features, _D.c.offer_id, _D.c.reason_codes,
           _D.c.experiment)
    .where(_D.c.created_at >= bindparam("since"))
    .order_by(_D.c.created_at.desc(), _D.c.decision_id)
    .limit(bindparam("limit"))
)
_SHADOW_CHOICES = (
    select(_D.c.model_version, _D.c.offer_id, _D.c.scores)
    .where(_D.c.created_at >= bindparam("since"))
    .order_by(_D.c.created_at.desc(), _D.c.decision_id)
    .limit(bindparam("limit"))
)
_INSERT_DECISION = {
    name: dialect.insert(_D).on_conflict_do_nothing(index_elements=["client", "request_id"]).returning(_D.c.decision_id)
    for name, dialect in (("postgresql", postgresql), ("sqlite", sqlite))
}


class Store(FollowupStore, OutboxMixin):
    """The service's state in one SQL database. Methods are thread-safe (the engine pools connections)."""

    SWEEP_EVERY_SECONDS = 10.0  # how often first_use_of_request_id deletes expired signed ids

    def __init__(self, engine: Engine):
        self.engine = engine
        self._next_sweep = 0.0

    @classmethod
    def from_url(cls, url: str | None = None) -> Store:
        """A store on `url`, else DATABASE_URL, else the embedded SQLite file (see store.db)."""
        return cls(make_engine(url))

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def transaction(self, write: bool = False, snapshot: bool = False) -> Iterator[Connection]:
        """A connection in a transaction that commits on success; for this package's modules (export).

        `snapshot`: every statement sees the same state of the database (PostgreSQL's default isolation
        gives each statement its own; a SQLite transaction always reads one snapshot)."""
        with unavailable_as_store_errors(self.engine.url.render_as_string()), self.engine.connect() as conn:
            if write:
                conn.execution_options(**{WRITES: True})
            if snapshot and conn.dialect.name == "postgresql":
                conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn

    def ping(self) -> None:
        """Raise StoreUnavailable unless the database answers (SchemaMissing if it is not migrated)."""
        with self.transaction() as conn:
            conn.execute(text("SELECT 1"))
            conn.execute(select(FeatureSnapshot.id).limit(1))  # a migrated schema, not just a server

    # ------------------------------------------------------------------------------------------- clients

    def create_client(self, name: str, role: str, key: str | None = None,
                      signing_secret: str | None = None) -> tuple[dict, str]:
        """Register a client; returns (record incl. signing_secret, plaintext key), the key shown only now.

        Idempotent for a fixed key (a dev setup's demo key): creating the same name with the same key and
        role again returns the existing client; any other clash with an existing client raises Conflict."""
        if role not in ROLES:
            raise InvalidRecord(f"role {role!r} is not one of {', '.join(ROLES)}")
        if not name or not name.strip():
            raise InvalidRecord("client name must not be empty")
        plaintext = key if key is not None else new_key()
        key_id = key_id_of(plaintext)
        if key_id is None:
            raise InvalidRecord("a key must be at least 16 printable characters without spaces")
        row = {"name": name, "role": role, "key_id": key_id, "key_hash": key_hash(plaintext),
               "signing_secret": signing_secret, "created_at": _now(), "revoked_at": None}
        by_name = select(ApiClient).where(ApiClient.name == name)
        with self.transaction(write=True) as conn:
            inserted = conn.execute(
                _insert(conn, ApiClient).values(row).on_conflict_do_nothing().returning(ApiClient.id)
            ).first()
            existing = conn.execute(by_name).one_or_none()
        if inserted is not None:
            return _client_dict(existing, with_secret=True), plaintext
        if existing is None:
            raise Conflict(f"key id {key_id} is already used by another client; use another key")
        if key is None or not hmac.compare_digest(existing.key_hash, row["key_hash"]):
            raise Conflict(f"client {name!r} already exists with another key")
        if existing.role != role:
            raise Conflict(f"client {name!r} already exists with role {existing.role!r}")
        if existing.revoked_at is not None:
            raise Conflict(f"client {name!r} was revoked; create it under a new name")
        if signing_secret is not None and not _same_secret(existing.signing_secret, signing_secret):
            raise Conflict(f"client {name!r} already exists with another signing secret")
        return _client_dict(existing, with_secret=True), plaintext

    def authenticate(self, key: str) -> dict | None:
        """The client holding `key` (with its signing_secret), or None for an unknown or revoked key."""
        key_id = key_id_of(key)
        if key_id is None:
            return None
        with self.transaction() as conn:
            row = conn.execute(select(ApiClient).where(ApiClient.key_id == key_id)).one_or_none()
        # The key id is public, so finding the row leaks nothing; the hash comparison is constant-time.
        if row is None or not hmac.compare_digest(row.key_hash, key_hash(key)) or row.revoked_at is not None:
            return None
        return _client_dict(row, with_secret=True)

    def active_clients(self) -> dict[str, dict]:
        """Every client whose key is not revoked, by key hash (with signing secrets: for the service's
        authentication cache only)."""
        with self.transaction() as conn:
            rows = conn.execute(select(ApiClient).where(ApiClient.revoked_at.is_(None))).all()
        return {r.key_hash: _client_dict(r, with_secret=True) for r in rows}

    def list_clients(self) -> list[dict]:
        """Every client, revoked ones included, without secrets."""
        with self.transaction() as conn:
            rows = conn.execute(select(ApiClient).order_by(ApiClient.name)).all()
        return [_client_dict(r, with_secret=False) for r in rows]

    def revoke_client(self, name: str) -> dict:
        """Revoke a client's key (idempotent); raises NotFound for an unknown name."""
        with self.transaction(write=True) as conn:
            conn.execute(update(ApiClient).where(ApiClient.name == name, ApiClient.revoked_at.is_(None))
                         .values(revoked_at=_now()))
            row = conn.execute(select(ApiClient).where(ApiClient.name == name)).one_or_none()
        if row is None:
            raise NotFound(f"no client named {name!r}")
        return _client_dict(row, with_secret=False)

    def first_use_of_request_id(self, client_id: int, request_id: str, expires_at: datetime) -> bool:
        """Record a signed request's id; False if this client already used it within the window (a replay).
        An id whose `expires_at` (signed timestamp + replay window) has passed counts as unused: its own
        timestamp is refused anyway, so the row only waits to be deleted. Expired ids are deleted at most
        every SWEEP_EVERY_SECONDS per process, not on every signed request (each worker deleting the same rows
        made them wait on each other's locks)."""
        now = _now()
        expires_at = _aware("expires_at", expires_at)
        with self.transaction(write=True) as conn:
            if time.monotonic() >= self._next_sweep:
                self._next_sweep = time.monotonic() + self.SWEEP_EVERY_SECONDS
                conn.execute(delete(SignedRequestId).where(SignedRequestId.expires_at < now))
            insert = _insert(conn, SignedRequestId).values(client_id=client_id, request_id=request_id,
                                                            expires_at=expires_at)
            stored = conn.execute(insert.on_conflict_do_update(
                index_elements=[SignedRequestId.client_id, SignedRequestId.request_id],
                set_={"expires_at": expires_at}, where=SignedRequestId.expires_at < now,
            ).returning(SignedRequestId.client_id)).first()
        return stored is not None

    # ----------------------------------------------------------------------------------------- decisions

    def record_decision(self, record: dict) -> tuple[dict, bool]:
        """Store a decision; returns (stored record, True), or (the earlier record, False) for a replay.

        A replay is the same (client, request_id) with the same body_hash; the same pair with another body
        raises IdempotencyConflict. Another client's request_id is another key (keys are scoped per client,
        as Stripe scopes them per account), so it makes a decision of its own. decision_id (uuid4 hex) and created_at (now)
        are filled in when absent."""
        _check_keys("decision", record, _DECISION_REQUIRED, _DECISION_OPTIONAL)
        row = {k: record.get(k) for k in _DECISION_REQUIRED | _DECISION_OPTIONAL}
        row["decision_id"] = row["decision_id"] or uuid.uuid4().hex
        row["created_at"] = _aware("created_at", row["created_at"]) if row["created_at"] else _now()
        if row["close_the_loop_by"] is not None:
            row["close_the_loop_by"] = _aware("close_the_loop_by", row["close_the_loop_by"])
        for k in _DECISION_JSON:
            row[k] = _json(row[k])
        with self.transaction(write=True) as conn:
            # A prepared Core statement, not an ORM insert: a third of the cost per decision.
            inserted = conn.execute(_INSERT_DECISION[conn.dialect.name], row).first()
            if inserted is not None:  # the common case: what we inserted is what is stored
                self._followups_for_decision(conn, row)  # its follow-up task, in the same transaction
                self.enqueue(conn, DECISION_CREATED, decision_created(row), customer_id=row["customer_id"],
                             created_at=row["created_at"])
                return {**row, "outcomes": []}, True
            stored = self._decision_where(conn, _DECISION_BY_REQUEST, row["request_id"], row["client"])
        if stored["body_hash"] != row["body_hash"]:
            raise IdempotencyConflict(f"request_id {row['request_id']!r} was already used for another request body")
        return stored, False

    def decision_context(self, client: str, request_id: str, customer_id: str, history_since: datetime,
                         nps_lookback: timedelta) -> dict:
        """Everything a decision reads, in one transaction (one connection, one snapshot of the data):
        `existing` (the decision already made for this client's request_id, or None), `features` (the customer's
        snapshot row or None), `history` (as customer_offer_history) and `nps` (the customer's NPS events
        since the snapshot, or within `nps_lookback` of now without one)."""
        with self.transaction(snapshot=True) as conn:
            existing = self._decision_where(conn, _DECISION_BY_REQUEST, request_id, client)
            if existing is not None:
                return {"existing": existing}
            features = self._features_row(conn, customer_id)
            history = self._offer_history(conn, customer_id, history_since)
            since = features["as_of"] if features else _now() - nps_lookback
            nps = [self._event_dict(r) for r in conn.execute(_NPS_SINCE, {"customer_id": customer_id,
                                                                          "since": since})]
        return {"existing": None, "features": features, "history": history, "nps": nps}

    def get_decision(self, decision_id: str) -> dict | None:
        with self.transaction() as conn:
            return self._decision_where(conn, _DECISION_BY_ID, decision_id)

    def get_decision_by_request(self, client: str, request_id: str) -> dict | None:
        """The decision `client` was given for its `request_id` (keys are scoped per client), or None."""
        with self.transaction() as conn:
            return self._decision_where(conn, _DECISION_BY_REQUEST, request_id, client)

    def customer_decisions(self, customer_id: str, limit: int = 50) -> list[dict]:
        """A customer's decisions, newest first, each with its outcomes."""
        with self.transaction() as conn:
            rows = conn.execute(
                select(Decision).where(Decision.customer_id == customer_id)
                .order_by(Decision.created_at.desc(), Decision.decision_id).limit(limit)
            ).all()
            outcomes = self._outcomes(conn, [r.decision_id for r in rows])
        return [self._decision_dict(r, outcomes) for r in rows]

    def customer_offer_history(self, customer_id: str, since: datetime) -> list[dict]:
        """For guardrails: the customer's decisions since `since`, newest first, with offer_id, offer_type
        (the offer's "type"), months (how long a pause or discount runs), created_at and whether the offer
        was accepted."""
        with self.transaction() as conn:
            return self._offer_history(conn, customer_id, since)

    @staticmethod
    def _offer_history(conn: Connection, customer_id: str, since: datetime) -> list[dict]:
        rows = conn.execute(_OFFER_HISTORY, {"customer_id": customer_id, "since": _aware("since", since)}).all()
        return [{"decision_id": r.decision_id, "offer_id": r.offer_id, "offer_type": (r.offer or {}).get("type"),
                 "months": int((r.offer or {}).get("months") or 0), "created_at": r.created_at,
                 "accepted": bool(r.accepted)} for r in rows]

    def _decision_where(self, conn: Connection, statement, key: str, client: str | None = None) -> dict | None:
        """The decision a prepared statement (_DECISION_BY_ID / _BY_REQUEST, which also needs `client`) finds
        for `key`, with outcomes."""
        row = conn.execute(statement, {"key": key} if client is None else {"key": key, "client": client}).one_or_none()
        if row is None:
            return None
        return self._decision_dict(row, self._outcomes(conn, [row.decision_id]))

    @staticmethod
    def _outcomes(conn: Connection, decision_ids: list[str]) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {d: [] for d in decision_ids}
        for batch in _batches(decision_ids):
            for o in conn.execute(select(Outcome).where(Outcome.decision_id.in_(batch))
                                  .order_by(Outcome.occurred_at, Outcome.id)):
                out[o.decision_id].append(dict(o._mapping))
        return out

    @staticmethod
    def _decision_dict(row, outcomes: dict[str, list[dict]]) -> dict:
        return {**row._mapping, "outcomes": outcomes.get(row.decision_id, [])}

    def experiment_records(self, name: str, until: datetime) -> dict:
        """What analysing an experiment reads (retention.experiment_analysis), in one read transaction:
        its decisions up to `until`, their outcomes (decision_id -> {kind: occurred_at}), billing's
        `still_active` reports on them, and the `payment` and `cancelled` events of its customers."""
        until = _aware("until", until)
        with self.transaction(snapshot=True) as conn:
            decisions = [dict(r._mapping) for r in conn.execute(
                select(Decision.decision_id, Decision.customer_id, Decision.created_at, Decision.offer_id,
                       Decision.experiment, Decision.experiment_variant)
                .where(Decision.experiment_name == name, Decision.created_at <= until)
                .order_by(Decision.created_at, Decision.decision_id))]
            ids = [d["decision_id"] for d in decisions]
            customers = sorted({d["customer_id"] for d in decisions})
            outcomes: dict[str, dict] = {}
            for batch in _batches(ids):
                for o in conn.execute(select(Outcome.decision_id, Outcome.kind, Outcome.occurred_at)
                                      .where(Outcome.decision_id.in_(batch))):
                    outcomes.setdefault(o.decision_id, {})[o.kind] = o.occurred_at
            still_active = []
            for batch in _batches(ids):
                for e in conn.execute(select(Event.decision_id, Event.occurred_at, Event.payload)
                                      .where(Event.type == "still_active", Event.decision_id.in_(batch))):
                    still_active.append({"decision_id": e.decision_id, "occurred_at": e.occurred_at,
                                         "day": e.payload.get("day"), "active": e.payload.get("active")})
            payments, cancelled = [], []
            for batch in _batches(customers):
                for e in conn.execute(select(Event.customer_id, Event.type, Event.occurred_at, Event.payload)
                                      .where(Event.type.in_(("payment", "cancelled")),
                                             Event.customer_id.in_(batch), Event.occurred_at <= until)):
                    if e.type == "payment":
                        payments.append({"customer_id": e.customer_id, "occurred_at": e.occurred_at,
                                         "amount": float(e.payload.get("amount") or 0.0)})
                    else:
                        cancelled.append({"customer_id": e.customer_id, "occurred_at": e.occurred_at})
        return {"decisions": decisions, "outcomes": outcomes, "still_active": still_active,
                "payments": payments, "cancelled": cancelled}

    def recent_decisions(self, since: datetime, limit: int) -> list[dict]:
        """For drift monitoring (retention.drift): the newest decisions made at or after `since`, at most
        `limit` of them, newest first, each with created_at, model_version, reason, features, offer_id,
        reason_codes and experiment. Bounded by `limit` so that a busy store costs the same to read."""
        if limit < 1:
            raise InvalidRecord(f"limit must be at least 1, got {limit}")
        with self.transaction() as conn:
            rows = conn.execute(_RECENT_DECISIONS, {"since": _aware("since", since), "limit": int(limit)}).all()
        return [dict(r._mapping) for r in rows]

    def shadow_agreement(self, since: datetime, limit: int = 200_000) -> list[dict]:
        """How often the challenger scored in the shadow (retention.policy, step 5) chose what the champion
        chose, among the newest `limit` decisions since `since`: one dict per (champion, challenger) pair
        with the decisions, the agreements and the challenger's offer mix where it disagreed."""
        if limit < 1:
            raise InvalidRecord(f"limit must be at least 1, got {limit}")
        with self.transaction() as conn:
            rows = conn.execute(_SHADOW_CHOICES, {"since": _aware("since", since), "limit": int(limit)}).all()
        pairs: dict[tuple[str, str], dict] = {}
        for model_version, _offer, scores in rows:
            shadow = (scores or {}).get("shadow")
            if not shadow:
                continue
            pair = pairs.setdefault((model_version, shadow["version"]), {
                "champion": model_version, "challenger": shadow["version"], "decisions": 0, "agree": 0,
                "errors": 0, "challenger_offers_where_different": {}})
            pair["decisions"] += 1
            pair["agree"] += bool(shadow.get("agrees"))
            pair["errors"] += shadow.get("error") is not None
            if not shadow.get("agrees"):
                mix = pair["challenger_offers_where_different"]
                mix[shadow["offer"]] = mix.get(shadow["offer"], 0) + 1
        return sorted(pairs.values(), key=lambda p: -p["decisions"])

    # ------------------------------------------------------------------------------------------- privacy

    def customer_data(self, customer_id: str) -> dict:
        """Everything stored about one customer (a data-subject access request): decisions with their
        outcomes and free text, events, the feature snapshot row, the loaded data set's customer row and the
        follow-up tasks; one read transaction."""
        with self.transaction(snapshot=True) as conn:
            rows = conn.execute(select(Decision).where(Decision.customer_id == customer_id)
                                .order_by(Decision.created_at, Decision.decision_id)).all()
            outcomes = self._outcomes(conn, [r.decision_id for r in rows])
            events = conn.execute(select(Event).where(Event.customer_id == customer_id)
                                  .order_by(Event.occurred_at, Event.id)).all()
            features = self._features_row(conn, customer_id)
            customer = conn.execute(select(Customer.__table__)
                                    .where(Customer.customer_id == customer_id)).one_or_none()
            followups = self._followups_of(conn, customer_id)
        return {"customer_id": customer_id, "decisions": [self._decision_dict(r, outcomes) for r in rows],
                "events": [self._event_dict(e) for e in events], "features": features,
                "customer": None if customer is None else dict(customer._mapping), "followups": followups}

    def delete_customer(self, customer_id: str) -> dict:
        """Erase one customer: their decisions (with outcomes), events, feature row, customer row and
        follow-up tasks, in one
        transaction; returns how many rows of each went. Deleting again deletes nothing. Billing's `still_active` events
        about their decisions carry their customer id, so they go too, and so do the webhook events queued about them
        (`webhook_events`: with their delivery log)."""
        with self.transaction(write=True) as conn:
            ids = [d for (d,) in conn.execute(select(Decision.decision_id)
                                                .where(Decision.customer_id == customer_id))]
            outcomes = 0
            for batch in _batches(ids):
                outcomes += conn.execute(delete(Outcome).where(Outcome.decision_id.in_(batch))).rowcount
            decisions = conn.execute(delete(Decision).where(Decision.customer_id == customer_id)).rowcount
            events = conn.execute(delete(Event).where(Event.customer_id == customer_id)).rowcount
            features = conn.execute(delete(CustomerFeatures)
                                    .where(CustomerFeatures.customer_id == customer_id)).rowcount
            customer = conn.execute(delete(Customer).where(Customer.customer_id == customer_id)).rowcount
            followups = self._delete_followups(conn, customer_id)
            webhook_events = self.erase_outbox(conn, customer_id)
        return {"customer_id": customer_id, "decisions": decisions, "outcomes": outcomes, "events": events,
                "features": features, "customer": customer, "followups": followups,
                "webhook_events": webhook_events}

    # ------------------------------------------------------------------------------------------ outcomes

    def record_outcome(self, decision_id: str, kind: str, occurred_at: datetime) -> tuple[dict, bool]:
        """Record what happened after a decision; returns (outcome, created).

        Idempotent per (decision, kind): the same kind again returns the first one. "accepted" and
        "declined" exclude each other, and a decision that showed no offer cannot be accepted (Conflict);
        an unknown decision raises NotFound."""
        if kind not in OUTCOME_KINDS:
            raise InvalidRecord(f"outcome kind {kind!r} is not one of {', '.join(OUTCOME_KINDS)}")
        occurred_at = _aware("occurred_at", occurred_at)
        with self.transaction(write=True) as conn:
            # Locks the decision (PostgreSQL; SQLite is already serialised) so that the checks below still
            # hold at the insert: two concurrent calls cannot record both "accepted" and "declined".
            decision = conn.execute(select(Decision.offer_id, Decision.customer_id)
                                    .where(Decision.decision_id == decision_id).with_for_update()).one_or_none()
            if decision is None:
                raise NotFound(f"no decision {decision_id!r}")
            existing = {o["kind"]: o for o in self._outcomes(conn, [decision_id])[decision_id]}
            if kind in existing:
                return existing[kind], False
            other = _MUTUALLY_EXCLUSIVE.get(kind)
            if other in existing:
                raise Conflict(f"decision {decision_id} was already {other}; it cannot also be {kind}")
            if kind == "accepted" and decision.offer_id == NO_OFFER:
                raise Conflict(f"decision {decision_id} showed no offer, so nothing can be accepted")
            conn.execute(_insert(conn, Outcome).values(decision_id=decision_id, kind=kind,
                                                       occurred_at=occurred_at, recorded_at=_now()))
            stored = conn.execute(select(Outcome).where(Outcome.decision_id == decision_id,
                                                        Outcome.kind == kind)).one()
            self.enqueue(conn, OUTCOME_RECORDED, outcome_recorded(decision_id, decision.customer_id, decision.offer_id,
                                                                  kind, stored.occurred_at, stored.recorded_at),
                         customer_id=decision.customer_id)
        return dict(stored._mapping), True

    # -------------------------------------------------------------------------------------------- events

    def record_events(self, events: list[dict]) -> dict:
        """Store events, idempotent on event_id, all or none; returns {"created": n, "duplicates": m,
        "conflicts": [event_id, ...]}. A duplicate repeats a stored event exactly; a conflict reuses an
        event_id for a different event, which is not stored and is reported instead."""
        rows = [self._event_row(e, i) for i, e in enumerate(events)]  # every event is checked before writing
        created: set[str] = set()
        stored: dict[str, Any] = {}
        with self.transaction(write=True) as conn:
            stmt = (_insert(conn, Event).on_conflict_do_nothing(index_elements=["event_id"])
                    .returning(Event.event_id))
            recorded_at = _now()
            for batch in _batches(rows):
                created.update(conn.execute(stmt, [{**r, "recorded_at": recorded_at} for r in batch]).scalars())
            # Follow-up tasks of the NPS answers stored now (the first row of each id is the one inserted).
            self._followups_for_events(conn, list({r["event_id"]: r for r in reversed(rows)
                                                   if r["event_id"] in created}.values()))
            # Rows that were not inserted (stored before, or twice in this call): compare with what is stored.
            seen: set[str] = set()
            candidates = []
            for r in rows:
                if r["event_id"] not in created or r["event_id"] in seen:
                    candidates.append(r)
                seen.add(r["event_id"])
            for batch in _batches(sorted({r["event_id"] for r in candidates})):
                for s in conn.execute(select(Event).where(Event.event_id.in_(batch))):
                    stored[s.event_id] = s
        conflicts = [r["event_id"] for r in candidates
                     if any(getattr(stored[r["event_id"]], f) != r[f] for f in _EVENT_IDENTITY)]
        return {"created": len(created), "duplicates": len(candidates) - len(conflicts), "conflicts": conflicts}

    def events_for_customer(self, customer_id: str, type: str | None = None,
                            since: datetime | None = None) -> list[dict]:
        """A customer's events in time order, optionally of one type and from `since` on."""
        q = select(Event).where(Event.customer_id == customer_id)
        if type is not None:
            q = q.where(Event.type == type)
        if since is not None:
            q = q.where(Event.occurred_at >= _aware("since", since))
        with self.transaction() as conn:
            rows = conn.execute(q.order_by(Event.occurred_at, Event.id)).all()
        return [self._event_dict(r) for r in rows]

    @staticmethod
    def _event_row(event: dict, index: int) -> dict:
        where = f"event {index} ({event.get('event_id', 'no event_id')})" if isinstance(event, dict) else ""
        if not isinstance(event, dict):
            raise InvalidRecord(f"event {index} is not a dict")
        _check_keys(where, event, _EVENT_REQUIRED, _EVENT_OPTIONAL)
        if event["type"] not in EVENT_TYPES:
            raise InvalidRecord(f"{where}: type {event['type']!r} is not one of {', '.join(EVENT_TYPES)}")
        for k in ("event_id", "customer_id"):
            if not isinstance(event[k], str) or not event[k]:
                raise InvalidRecord(f"{where}: {k} must be a non-empty string")
        payload = _json(event.get("payload") or {})
        if not isinstance(payload, dict):
            raise InvalidRecord(f"{where}: payload must be an object")
        return {"event_id": event["event_id"], "type": event["type"], "customer_id": event["customer_id"],
                "decision_id": event.get("decision_id"), "payload": payload,
                "occurred_at": _aware(f"{where}: occurred_at", event["occurred_at"])}

    @staticmethod
    def _event_dict(row) -> dict:
        d = dict(row._mapping)
        del d["id"]
        return d

    # ------------------------------------------------------------------------------------------ features

    def replace_feature_snapshot(self, rows: Iterable[tuple[str, dict]], as_of: datetime, feature_version: str,
                                 model_version: str, source: str, batch_size: int = 5000,
                                 customers: Iterable[dict] | None = None) -> int:
        """Replace the whole feature snapshot with `rows` of (customer_id, {feature: value}); returns the count.

        `customers`, the contract rows of the data set's customers (every one, subscribed or not: the
        contract's columns, any other key an attribute), replace the customers table too; None leaves it as
        it is. One transaction: readers keep seeing the previous snapshot until it commits, and a load that
        fails part-way (bad row, exception in `rows`, lost connection) leaves the previous snapshot in place."""
        as_of = _aware("as_of", as_of)
        loaded_at = _now()
        n, kept = 0, None
        with self.transaction(write=True) as conn:
            if customers is not None:
                kept = self._replace_customers(conn, customers, loaded_at, batch_size)
            # DELETE, not TRUNCATE: TRUNCATE would lock out PostgreSQL readers until the load commits.
            conn.execute(delete(CustomerFeatures))
            for batch in _batches(rows, batch_size):
                try:
                    conn.execute(_insert(conn, CustomerFeatures), [
                        {"customer_id": cid, "as_of": as_of, "feature_version": feature_version,
                         "model_version": model_version, "values": _feature_values(values), "loaded_at": loaded_at}
                        for cid, values in batch
                    ])
                except IntegrityError as exc:
                    raise InvalidRecord(f"the snapshot lists a customer twice (rows {n + 1}-{n + len(batch)})") from exc
                n += len(batch)
            conn.execute(_insert(conn, FeatureSnapshot).values(
                as_of=as_of, feature_version=feature_version, model_version=model_version, source=source, rows=n,
                customers=kept, loaded_at=loaded_at))
        return n

    @staticmethod
    def _replace_customers(conn: Connection, customers: Iterable[dict], loaded_at: datetime, batch_size: int) -> int:
        conn.execute(delete(Customer))  # not TRUNCATE, as for the snapshot
        n = 0
        for batch in _batches(customers, batch_size):
            rows = []
            for i, record in enumerate(batch, start=n + 1):
                missing = [c for c in _CUSTOMER_COLUMNS if record.get(c) is None]
                if missing:
                    raise InvalidRecord(f"customer row {i}: missing {', '.join(missing)}")
                rows.append({**{c: record[c] for c in _CUSTOMER_COLUMNS},
                             "signup_at": _aware("signup_at", record["signup_at"]),
                             "attributes": _json({k: v for k, v in record.items() if k not in _CUSTOMER_COLUMNS}),
                             "loaded_at": loaded_at})
            try:
                conn.execute(_insert(conn, Customer), rows)
            except IntegrityError as exc:
                raise InvalidRecord(f"the data set lists a customer twice (rows {n + 1}-{n + len(batch)})") from exc
            n += len(batch)
        return n

    def get_customer_features(self, customer_id: str) -> dict | None:
        """{customer_id, values, as_of, feature_version, model_version, loaded_at}, or None."""
        with self.transaction() as conn:
            return self._features_row(conn, customer_id)

    @staticmethod
    def _features_row(conn: Connection, customer_id: str) -> dict | None:
        row = conn.execute(_FEATURES_BY_CUSTOMER, {"customer_id": customer_id}).one_or_none()
        return None if row is None else dict(row._mapping)

    def latest_snapshot(self) -> dict | None:
        """The most recent snapshot load (what customer_features holds), or None before the first load."""
        with self.transaction() as conn:
            row = conn.execute(select(FeatureSnapshot).order_by(FeatureSnapshot.id.desc()).limit(1)).one_or_none()
        return None if row is None else dict(row._mapping)
