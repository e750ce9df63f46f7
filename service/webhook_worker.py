"""The webhook delivery worker: its own process (`retention webhooks worker`, the Procfile's `worker:`), never
the decision path. It claims due outbox events with a lease (store/outbox.py), signs each the Standard
Webhooks way with the subscription's secret (and the previous one during a rotation's grace period) and
POSTs it with a timeout; a 2xx marks it delivered, anything else is retried with exponential backoff and
jitter, and after `max_attempts` failures it is dead-lettered (`retention webhooks replay` queues it again).

The only module of the service that sends HTTP requests (setup.cfg's http-client contract).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import requests
from standardwebhooks import Webhook

from retention.webhooks import retry_delay
from store import Store, StoreError

log = logging.getLogger("retention.webhooks")
_ERROR_CHARS = 500  # of a receiver's answer or an exception, kept in the attempt log
BATCH_SECONDS = 0.02  # POSTs that end within this of the first are recorded in the same transaction
# How often the worker looks for follow-up tasks that have fallen due (followup.overdue), and how far back
# its first look goes (a task that fell due while no worker ran for longer is not announced).
OVERDUE_EVERY = timedelta(seconds=60)
OVERDUE_FIRST_LOOK = timedelta(hours=24)


@dataclass(frozen=True)
class WorkerSettings:
    """How the worker delivers (`retention webhooks worker`'s options, each with its environment variable)."""

    timeout: float = 5.0  # seconds a receiver has to answer one POST
    max_attempts: int = 8  # failed attempts before an event is dead-lettered
    backoff: float = 30.0  # seconds before the first retry; doubling after each failure ...
    backoff_max: float = 3600.0  # ... up to this (8 attempts: about 1 h 4 min of retrying in all)
    concurrency: int = 8  # POSTs in flight at once; each free thread claims the next due event
    per_receiver: int = 2  # of those, at most this many to one subscription: a hanging receiver holds 2 threads
    poll: float = 1.0  # seconds between claims when nothing is due
    lease_seconds: float | None = None  # how long a claim lasts; None: the timeout plus 10 s (see lease)

    @property
    def lease(self) -> timedelta:
        """How long a claim lasts. Each claimed event goes to a free thread at once, so by default the timeout
        plus 10 s; a killed worker's events wait this long at most before another run takes them. A shorter
        lease sends a slow receiver's events twice (still at least once)."""
        return timedelta(seconds=self.lease_seconds if self.lease_seconds is not None else self.timeout + 10.0)


def sign(event_id: str, timestamp: datetime, body: str, secrets: list[str]) -> str:
    """The webhook-signature header: one `v1,<signature>` per secret, space-separated (the scheme's way of
    sending the old and the new secret's signature during a rotation). standardwebhooks decodes whsec_."""
    return " ".join(Webhook(secret).sign(event_id, timestamp, body) for secret in secrets)


def headers_for(event: dict, now: datetime | None = None) -> dict[str, str]:
    """What a POST of a claimed outbox event carries: webhook-id is the event id (the same on every retry and
    for every subscription: receivers dedupe on it), webhook-timestamp the time of this attempt."""
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    return {"Content-Type": "application/json", "User-Agent": "retention-offers-webhooks/1",
            "webhook-id": event["event_id"], "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": sign(event["event_id"], now, event["body"], event["secrets"])}


class WebhookWorker:
    """Claims, signs, sends and records; one per process. Thread-safe enough for its own pool only."""

    def __init__(self, store: Store, settings: WorkerSettings | None = None, name: str | None = None) -> None:
        self.store = store
        self._overdue_looked: datetime | None = None  # the previous look for overdue follow-ups
        self.settings = settings or WorkerSettings()
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self._session = requests.Session()
        # A connection pool as large as the threads (urllib3's default keeps 10 per host).
        adapter = requests.adapters.HTTPAdapter(pool_maxsize=self.settings.concurrency)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._pool = ThreadPoolExecutor(max_workers=self.settings.concurrency, thread_name_prefix="webhook")
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._in_flight: dict[int, int] = {}  # subscription id -> POSTs in flight in this process

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._session.close()

    def _round(self, done: list[tuple[dict, dict]], room: int) -> list[dict]:
        """One store transaction: record finished POSTs ((event, attempt) pairs), free their subscriptions'
        slots and claim up to `room` due events, none of a subscription that has `per_receiver` in flight
        here. A store that fails here leaves the finished events claimed: their lease expires and they are
        sent again (at least once)."""
        with self._lock:
            for event, _ in done:
                self._in_flight[event["subscription_id"]] -= 1
            in_flight = dict(self._in_flight)
        try:
            states, events = self.store.settle_and_claim(
                self.name, [a for _, a in done], room, self.settings.lease,
                per_subscription=self.settings.per_receiver, in_flight=in_flight)
        except StoreError as exc:
            log.warning("webhook_store_unavailable", extra={"fields": {"unrecorded": len(done),
                                                                       "error": str(exc)[:_ERROR_CHARS]}})
            return []
        for (event, attempt), state in zip(done, states, strict=True):
            log.info("webhook_attempt", extra={"fields": {
                "event_id": event["event_id"], "event_type": event["event_type"],
                "subscription_id": event["subscription_id"], "status": attempt["status_code"],
                "ms": round(attempt["ms"], 1), "state": state}})
        with self._lock:
            for e in events:
                self._in_flight[e["subscription_id"]] = self._in_flight.get(e["subscription_id"], 0) + 1
        return events

    def announce_overdue(self, now: datetime | None = None) -> int | None:
        """Queue followup.overdue for tasks that fell due since the previous look, when a look is due
        (OVERDUE_EVERY); returns how many, or None when no look was due or the store did not answer."""
        now = now or datetime.now(UTC)
        if self._overdue_looked is not None and now - self._overdue_looked < OVERDUE_EVERY:
            return None
        since = self._overdue_looked or now - OVERDUE_FIRST_LOOK
        try:
            n = self.store.announce_overdue(since, now)
        except StoreError as exc:  # the store is down: look again next time, from the same point
            log.warning("followup_overdue_look_failed", extra={"fields": {"error": str(exc).splitlines()[0]}})
            return None
        self._overdue_looked = now
        return n

    def run_once(self) -> int:
        """Claim as many events as there are threads, deliver and record them; returns how many were claimed."""
        self.announce_overdue()
        events = self._round([], self.settings.concurrency)
        self._round(list(zip(events, self._pool.map(self._deliver, events), strict=True)), 0)
        return len(events)

    def run(self, until_idle: bool = False) -> None:
        """Deliver until `stopping` is set (SIGTERM, SIGINT), or, with `until_idle`, until nothing is due and
        nothing is in flight. A thread that finishes takes the next due event soon (no waiting for a whole
        batch, so one slow receiver does not hold back the others): what finished within BATCH_SECONDS of
        each other is recorded, and the next events claimed, in one transaction. A store that does not
        answer is waited for, never a crash: the events stay in the outbox. On stop, the POSTs in flight
        are finished and recorded."""
        pending: dict = {}  # future -> event
        done: list[tuple[dict, dict]] = []
        try:
            while not self.stopping.is_set():
                self.announce_overdue()
                claimed = self._round(done, self.settings.concurrency - len(pending))
                done = []
                pending.update({self._pool.submit(self._deliver, e): e for e in claimed})
                if not pending:
                    if until_idle and not claimed:
                        return
                    self.stopping.wait(self.settings.poll)
                    continue
                # Every thread busy, or nothing more due now: until a POST ends (or the next look), and then
                # a moment longer, so that what ends together is recorded (and re-claimed) together.
                finished, _ = wait(pending, timeout=self.settings.poll, return_when=FIRST_COMPLETED)
                if finished:
                    finished, _ = wait(pending, timeout=BATCH_SECONDS)
                done = [(pending.pop(f), f.result()) for f in finished]
        finally:
            wait(pending)
            self._round(done + [(e, f.result()) for f, e in pending.items()], 0)

    def _deliver(self, event: dict) -> dict:
        """POST one event (on a pool thread); returns the attempt for record_attempts."""
        started = datetime.now(UTC)
        t0 = time.perf_counter()
        status, error = None, None
        try:
            r = self._session.post(event["url"], data=event["body"].encode(), headers=headers_for(event, started),
                                   timeout=self.settings.timeout, allow_redirects=False)
            status = r.status_code
            ok = 200 <= status < 300
            if not ok:
                error = f"HTTP {status}: {r.text[:_ERROR_CHARS]}"
        except requests.RequestException as exc:
            ok, error = False, f"{type(exc).__name__}: {str(exc)[:_ERROR_CHARS]}"
        ms = (time.perf_counter() - t0) * 1000.0
        failures = event["attempts"] + 1
        retry_at = None
        if not ok and failures < self.settings.max_attempts:
            retry_at = datetime.now(UTC) + timedelta(
                seconds=retry_delay(failures, self.settings.backoff, self.settings.backoff_max))
        return {"outbox_id": event["id"], "attempted_at": started, "ms": ms, "ok": ok, "status_code": status,
                "error": error, "retry_at": retry_at}
