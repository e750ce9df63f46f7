"""The webhook outbox: subscriptions, `enqueue` (called inside the transaction that writes a fact, so the
event exists exactly when the fact does), the delivery worker's claim with a lease, its attempt log,
replay. `Store` inherits OutboxMixin (store/repository.py); what the events say is retention/webhooks.py.

Claims: `SELECT ... FOR UPDATE SKIP LOCKED` on PostgreSQL (concurrent workers take disjoint batches without
waiting on each other); on SQLite the claim runs under BEGIN IMMEDIATE (store.db), so claims are serialised.
Either way a claim is a lease (`claimed_until`): a worker killed mid-batch holds its events only until the
lease expires, then any worker takes them again. An event is marked delivered only after a 2xx, so delivery
is at least once; receivers dedupe on the event id (webhook-id).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from retention.webhooks import (
    SRM_ALARM,
    WebhookError,
    check_url,
    envelope,
    event_filter,
    matches,
    new_event_id,
    new_secret,
    srm_alarms,
)
from store.errors import InvalidRecord, NotFound
from store.models import OutboxEvent, WebhookDelivery, WebhookSubscription

_S = WebhookSubscription.__table__
_O = OutboxEvent.__table__
_W = WebhookDelivery.__table__
# Read in every transaction that writes a fact: built once (see the prepared statements in repository.py).
_ACTIVE = select(_S.c.id, _S.c.events).where(_S.c.disabled_at.is_(None))


def _now() -> datetime:
    return datetime.now(UTC)


def _subscription_dict(row, with_secret: bool = False) -> dict:
    d = {"id": row.id, "url": row.url, "events": list(row.events), "description": row.description,
         "created_at": row.created_at, "disabled_at": row.disabled_at,
         "previous_secret_until": row.previous_secret_until}
    if with_secret:
        d["secret"] = row.secret
    return d


class OutboxMixin:
    """Webhook subscriptions and the outbox, for Store (which provides `transaction`)."""

    transaction: Callable

    # --------------------------------------------------------------------------------- writing events

    @staticmethod
    def enqueue(conn: Connection, event_type: str, data: dict[str, Any], *, event_id: str | None = None,
                customer_id: str | None = None, created_at: datetime | None = None) -> int:
        """Queue `event_type` with `data` for every active subscription that wants it, on `conn`, inside the
        caller's transaction (the fact and its event commit or roll back together); returns the rows queued.
        An `event_id` already queued for a subscription is not queued again (ids derived from the fact make
        an announcement idempotent). Costs one read of the (small) subscriptions table when nobody subscribes."""
        wanted = [s.id for s in conn.execute(_ACTIVE) if matches(s.events, event_type)]
        if not wanted:
            return 0
        event_id = event_id or new_event_id()
        created_at = created_at or _now()
        body = json.dumps(envelope(event_id, event_type, created_at, data), separators=(",", ":"),
                          ensure_ascii=False, allow_nan=False)
        rows = [{"event_id": event_id, "subscription_id": s, "event_type": event_type, "body": body,
                 "customer_id": customer_id, "state": "pending", "attempts": 0, "next_attempt_at": created_at,
                 "created_at": created_at} for s in wanted]
        insert = (postgresql if conn.dialect.name == "postgresql" else sqlite).insert(OutboxEvent)
        # RETURNING, not rowcount: an executemany's rowcount is -1 on psycopg.
        return len(conn.execute(insert.on_conflict_do_nothing(index_elements=["event_id", "subscription_id"])
                                .returning(_O.c.id), rows).all())

    def publish(self, event_type: str, data: dict[str, Any], event_id: str | None = None,
                customer_id: str | None = None) -> int:
        """Queue an event that is its own fact (no other row to write with it)."""
        with self.transaction(write=True) as conn:
            return self.enqueue(conn, event_type, data, event_id=event_id, customer_id=customer_id)

    def publish_srm_alarms(self, result) -> int:
        """Announce the sample-ratio alarms of an experiment analysis (retention.experiment_analysis), once
        per experiment definition and stage however often it is analysed; returns the rows queued."""
        alarms = srm_alarms(result)
        if not alarms:
            return 0
        with self.transaction(write=True) as conn:
            return sum(self.enqueue(conn, SRM_ALARM, data, event_id=event_id) for event_id, data in alarms)

    @staticmethod
    def erase_outbox(conn: Connection, customer_id: str) -> int:
        """Delete a customer's queued events and their attempt log (a data-subject erasure), on `conn`."""
        ids = select(_O.c.id).where(_O.c.customer_id == customer_id)
        conn.execute(delete(_W).where(_W.c.outbox_id.in_(ids)))
        return conn.execute(delete(_O).where(_O.c.customer_id == customer_id)).rowcount

    # ---------------------------------------------------------------------------------- subscriptions

    def add_subscription(self, url: str, events: Iterable[str], description: str | None = None) -> dict:
        """A new subscription with a fresh whsec_ secret; the returned record holds the secret."""
        try:
            row = {"url": check_url(url), "events": event_filter(events), "description": description,
                   "secret": new_secret(), "created_at": _now()}
        except WebhookError as exc:
            raise InvalidRecord(str(exc)) from exc
        with self.transaction(write=True) as conn:
            new_id = conn.execute(_S.insert().values(row).returning(_S.c.id)).scalar_one()
            return _subscription_dict(conn.execute(select(_S).where(_S.c.id == new_id)).one(), with_secret=True)

    def subscriptions(self) -> list[dict]:
        """Every subscription (disabled ones too), without secrets, with its events by state."""
        with self.transaction() as conn:
            subs = conn.execute(select(_S).order_by(_S.c.id)).all()
            counts = conn.execute(select(_O.c.subscription_id, _O.c.state, func.count())
                                  .group_by(_O.c.subscription_id, _O.c.state)).all()
        by_sub: dict[int, dict[str, int]] = {}
        for sub_id, state, n in counts:
            by_sub.setdefault(sub_id, {})[state] = n
        return [{**_subscription_dict(s), "events_by_state": by_sub.get(s.id, {})} for s in subs]

    def subscription(self, subscription_id: int) -> dict:
        with self.transaction() as conn:
            return _subscription_dict(self._subscription_row(conn, subscription_id))

    @staticmethod
    def _subscription_row(conn: Connection, subscription_id: int):
        row = conn.execute(select(_S).where(_S.c.id == subscription_id)).one_or_none()
        if row is None:
            raise NotFound(f"no webhook subscription {subscription_id}")
        return row

    def rotate_subscription_secret(self, subscription_id: int, grace: timedelta) -> dict:
        """A new secret; the current one keeps signing too (a second signature) for `grace`, so receivers
        can switch over. Returns the record with the new secret."""
        if grace < timedelta(0):
            raise InvalidRecord("the grace period must not be negative")
        with self.transaction(write=True) as conn:
            old = self._subscription_row(conn, subscription_id)
            conn.execute(update(_S).where(_S.c.id == subscription_id).values(
                secret=new_secret(), previous_secret=old.secret, previous_secret_until=_now() + grace))
            return _subscription_dict(self._subscription_row(conn, subscription_id), with_secret=True)

    def disable_subscription(self, subscription_id: int) -> dict:
        """Stop queueing and sending to a subscription (idempotent). Its undelivered events stay, unsent."""
        with self.transaction(write=True) as conn:
            self._subscription_row(conn, subscription_id)
            conn.execute(update(_S).where(_S.c.id == subscription_id, _S.c.disabled_at.is_(None))
                         .values(disabled_at=_now()))
            return _subscription_dict(self._subscription_row(conn, subscription_id))

    # ----------------------------------------------------------------------------------- the worker

    def claim_events(self, worker: str, limit: int, lease: timedelta, per_subscription: int | None = None,
                     in_flight: Mapping[int, int] | None = None) -> list[dict]:
        """Up to `limit` pending events that are due, of active subscriptions, leased to `worker` for `lease`:
        each with its body, url, attempts so far and the secrets to sign with (the previous one only
        within its grace period). With `per_subscription`, at most that many per subscription counting the
        worker's `in_flight` ones (subscription id -> count): a receiver that hangs holds that many of the
        worker's threads, never all of them."""
        return self.settle_and_claim(worker, [], limit, lease, per_subscription, in_flight)[1]

    def record_attempt(self, outbox_id: int, worker: str, attempted_at: datetime, ms: float, ok: bool,
                       status_code: int | None = None, error: str | None = None,
                       retry_at: datetime | None = None) -> str:
        """Log one attempt and move the event on (see settle_and_claim); returns its new state."""
        attempt = {"outbox_id": outbox_id, "attempted_at": attempted_at, "ms": ms, "ok": ok,
                   "status_code": status_code, "error": error, "retry_at": retry_at}
        return self.settle_and_claim(worker, [attempt], 0, timedelta(0))[0][0]

    def settle_and_claim(self, worker: str, attempts: list[dict], limit: int, lease: timedelta,
                         per_subscription: int | None = None,
                         in_flight: Mapping[int, int] | None = None) -> tuple[list[str], list[dict]]:
        """In one transaction: log `attempts` (each: outbox_id, attempted_at, ms, ok, status_code, error,
        retry_at) and move each event on, delivered (ok), pending until `retry_at`, or dead (neither); then
        claim as claim_events does. Returns (the attempts' new states, the claimed events). A failure is
        applied only while this worker still holds the claim and the event is pending: a late report from a
        worker whose lease expired never undoes another's delivery. One transaction per round of the worker:
        on SQLite each write transaction holds the one write lock, which the decisions wait for."""
        now = _now()
        with self.transaction(write=True) as conn:
            states = self._settle(conn, worker, attempts, now) if attempts else []
            rows = self._claim(conn, worker, limit, lease, per_subscription, in_flight or {}, now) if limit else []
        out = []
        for r in rows:
            secrets = [r.secret]
            if r.previous_secret and r.previous_secret_until and r.previous_secret_until > now:
                secrets.append(r.previous_secret)
            out.append({"id": r.id, "event_id": r.event_id, "event_type": r.event_type, "body": r.body,
                        "attempts": r.attempts, "subscription_id": r.subscription_id, "url": r.url,
                        "secrets": secrets})
        return states, out

    @staticmethod
    def _settle(conn: Connection, worker: str, attempts: list[dict], now: datetime) -> list[str]:
        conn.execute(_W.insert(), [{k: a[k] for k in ("outbox_id", "attempted_at", "status_code", "ms", "ok",
                                                      "error")} | {"worker": worker} for a in attempts])
        for a in attempts:
            if a["ok"]:
                conn.execute(update(_O).where(_O.c.id == a["outbox_id"], _O.c.state == "pending").values(
                    state="delivered", delivered_at=now, claimed_until=None, claimed_by=None, last_error=None))
                continue
            values = {"attempts": _O.c.attempts + 1, "claimed_until": None, "claimed_by": None,
                      "last_error": a["error"] or f"HTTP {a['status_code']}"}
            values.update({"next_attempt_at": a["retry_at"]} if a["retry_at"] is not None else {"state": "dead"})
            conn.execute(update(_O).where(_O.c.id == a["outbox_id"], _O.c.state == "pending",
                                          _O.c.claimed_by == worker).values(**values))
        states = dict(conn.execute(select(_O.c.id, _O.c.state).where(
            _O.c.id.in_([a["outbox_id"] for a in attempts]))).all())
        return [states[a["outbox_id"]] for a in attempts]

    @staticmethod
    def _claim(conn: Connection, worker: str, limit: int, lease: timedelta, per_subscription: int | None,
               in_flight: Mapping[int, int], now: datetime) -> list:
        due = (select(_O.c.id, _O.c.subscription_id).join(_S, _S.c.id == _O.c.subscription_id)
               .where(_O.c.state == "pending", _O.c.next_attempt_at <= now, _S.c.disabled_at.is_(None),
                      or_(_O.c.claimed_until.is_(None), _O.c.claimed_until <= now))
               .order_by(_O.c.next_attempt_at, _O.c.id))
        if per_subscription is not None:
            full = [s for s, n in in_flight.items() if n >= per_subscription]
            if full:
                due = due.where(_O.c.subscription_id.notin_(full))
            # Candidates beyond `limit`, so that one receiver's backlog at the head leaves room for others;
            # the rows not kept are only locked until this transaction ends.
            due = due.limit(limit * 4)
        else:
            due = due.limit(limit)
        due = due.with_for_update(skip_locked=True, of=_O)  # PostgreSQL; SQLite renders no locking clause
        ids, room = [], {}
        for event_id, sub in conn.execute(due):
            if per_subscription is not None:
                room.setdefault(sub, per_subscription - in_flight.get(sub, 0))
                if room[sub] <= 0:
                    continue
                room[sub] -= 1
            ids.append(event_id)
            if len(ids) == limit:
                break
        if not ids:
            return []
        conn.execute(update(_O).where(_O.c.id.in_(ids)).values(claimed_until=now + lease, claimed_by=worker))
        return conn.execute(
            select(_O.c.id, _O.c.event_id, _O.c.event_type, _O.c.body, _O.c.attempts, _O.c.subscription_id,
                   _S.c.url, _S.c.secret, _S.c.previous_secret, _S.c.previous_secret_until)
            .join(_S, _S.c.id == _O.c.subscription_id).where(_O.c.id.in_(ids))
            .order_by(_O.c.next_attempt_at, _O.c.id)).all()

    def replay_events(self, ids: Iterable[int] = (), subscription_id: int | None = None,
                      state: str | None = None) -> int:
        """Queue dead-lettered or delivered events again, due now, with a fresh retry budget: the events
        `ids`, or every event of `subscription_id` in `state` ("dead" or "delivered"). Returns how many."""
        ids = list(ids)
        if not ids and subscription_id is None:
            raise InvalidRecord("name the events to replay, or a subscription")
        if state not in (None, "dead", "delivered"):
            raise InvalidRecord(f"only dead or delivered events can be replayed, not {state!r}")
        where = [_O.c.state.in_([state] if state else ["dead", "delivered"])]
        if ids:
            where.append(_O.c.id.in_(ids))
        if subscription_id is not None:
            where.append(_O.c.subscription_id == subscription_id)
        with self.transaction(write=True) as conn:
            if ids:  # an id that names no event is an error, not "0 queued again"
                known = set(conn.execute(select(_O.c.id).where(_O.c.id.in_(ids))).scalars())
                if unknown := sorted(set(ids) - known):
                    raise NotFound(f"no queued event with id {', '.join(map(str, unknown))} "
                                   "(see `retention webhooks events`)")
            return conn.execute(update(_O).where(and_(*where)).values(
                state="pending", attempts=0, next_attempt_at=_now(), claimed_until=None, claimed_by=None,
                delivered_at=None)).rowcount

    def outbox_events(self, subscription_id: int | None = None, state: str | None = None,
                      limit: int = 50) -> list[dict]:
        """Queued events, newest first, without their bodies."""
        q = select(_O.c.id, _O.c.event_id, _O.c.subscription_id, _O.c.event_type, _O.c.state, _O.c.attempts,
                   _O.c.next_attempt_at, _O.c.created_at, _O.c.delivered_at, _O.c.last_error)
        return self._newest(q, _O.c.id, {_O.c.subscription_id: subscription_id, _O.c.state: state}, limit)

    def delivery_attempts(self, subscription_id: int | None = None, outbox_id: int | None = None,
                          limit: int = 50) -> list[dict]:
        """The attempt log, newest first, with each attempt's event id and type."""
        q = (select(_W.c.id, _W.c.outbox_id, _O.c.event_id, _O.c.event_type, _O.c.subscription_id,
                    _W.c.attempted_at, _W.c.status_code, _W.c.ms, _W.c.ok, _W.c.error, _W.c.worker)
             .join(_O, _O.c.id == _W.c.outbox_id))
        return self._newest(q, _W.c.id, {_O.c.subscription_id: subscription_id, _W.c.outbox_id: outbox_id}, limit)

    def _newest(self, query, key, equal: dict, limit: int) -> list[dict]:
        """`query`'s rows, newest (highest `key`) first, where each column of `equal` is its value (None: any)."""
        query = query.where(*(column == value for column, value in equal.items() if value is not None))
        with self.transaction() as conn:
            return [dict(r._mapping) for r in conn.execute(query.order_by(key.desc()).limit(limit))]
