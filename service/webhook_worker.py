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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import requests
from standardwebhooks import Webhook

from retention.webhooks import retry_delay
from store import Store, StoreError

log = logging.getLogger("retention.webhooks")
_ERROR_CHARS = 500  # of a receiver's answer or an exception, kept in the attempt log


@dataclass(frozen=True)
class WorkerSettings:
    """How the worker delivers (`retention webhooks worker`'s options, each with its environment variable)."""

    timeout: float = 5.0  # seconds a receiver has to answer one POST
    max_attempts: int = 8  # failed attempts before an event is dead-lettered
    backoff: float = 30.0  # seconds before the first retry; doubling after each failure ...
    backoff_max: float = 3600.0  # ... up to this (8 attempts: about 1 h 4 min of retrying in all)
    batch: int = 20  # events per claim
    concurrency: int = 4  # POSTs in flight at once (a slow receiver holds one thread, not the batch)
    poll: float = 1.0  # seconds between claims when nothing is due
    lease_seconds: float | None = None  # how long a claim lasts; None: long enough for the batch (see lease)

    @property
    def lease(self) -> timedelta:
        """How long a claim lasts. By default long enough for the whole batch to time out, a wave of
        `concurrency` at a time, plus 10 s; a killed worker's events wait this long at most before another run
        takes them. A shorter lease sends a slow batch's events twice (still at least once)."""
        if self.lease_seconds is not None:
            return timedelta(seconds=self.lease_seconds)
        waves = -(-self.batch // self.concurrency)
        return timedelta(seconds=waves * self.timeout + 10.0)


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
        self.settings = settings or WorkerSettings()
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self._session = requests.Session()
        self._pool = ThreadPoolExecutor(max_workers=self.settings.concurrency, thread_name_prefix="webhook")
        self.stopping = threading.Event()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._session.close()

    def run_once(self) -> int:
        """Claim one batch and deliver it; returns how many events were claimed."""
        events = self.store.claim_events(self.name, self.settings.batch, self.settings.lease)
        for _ in self._pool.map(self._deliver, events):
            pass
        return len(events)

    def run(self, until_idle: bool = False) -> None:
        """Deliver until `stopping` is set (SIGTERM, SIGINT), or, with `until_idle`, until nothing is due.
        A store that does not answer is waited for, never a crash: the events stay in the outbox."""
        while not self.stopping.is_set():
            try:
                claimed = self.run_once()
            except StoreError as exc:
                log.warning("webhook_store_unavailable", extra={"fields": {"error": str(exc)[:_ERROR_CHARS]}})
                claimed = 0
            if claimed == 0:
                if until_idle:
                    return
                self.stopping.wait(self.settings.poll)

    def _deliver(self, event: dict) -> str:
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
        try:
            state = self.store.record_attempt(event["id"], self.name, started, ms, ok, status, error, retry_at)
        except StoreError as exc:  # the lease expires and the event is sent again: at least once
            log.warning("webhook_attempt_not_recorded", extra={"fields": {"event_id": event["event_id"],
                                                                          "error": str(exc)[:_ERROR_CHARS]}})
            return "unknown"
        log.info("webhook_attempt", extra={"fields": {
            "event_id": event["event_id"], "event_type": event["event_type"],
            "subscription_id": event["subscription_id"], "status": status, "ms": round(ms, 1), "state": state}})
        return state
