"""Webhook delivery against a real HTTP receiver (http.server on 127.0.0.1 in a thread), on SQLite and
PostgreSQL: signatures verify with the standardwebhooks library and with the README's recipe (a hand-written
HMAC) and fail when the body, the timestamp or the secret is changed; both secrets verify during a
rotation; a failing or hanging receiver is retried with growing waits, then dead-lettered, and a replay
delivers the same event id; `kill -9` of a `retention webhooks worker` process mid-batch loses nothing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from service.webhook_worker import WebhookWorker, WorkerSettings
from store import Store


class Receiver:
    """Records every request (when it arrived, headers, body) and answers `status` after `delay` seconds."""

    def __init__(self) -> None:
        self.status, self.delay = 204, 0.0
        self.requests: list[dict] = []
        self.lock = threading.Lock()

    def ids(self) -> list[str]:
        with self.lock:
            return [r["headers"]["webhook-id"] for r in self.requests]


@contextmanager
def receiver():
    rec = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with rec.lock:
                rec.requests.append({"at": time.monotonic(), "headers": {k.lower(): v for k, v in self.headers.items()},
                                     "body": body})
            time.sleep(rec.delay)
            try:
                self.send_response(rec.status)
                self.send_header("Content-Length", "0")
                self.end_headers()
            except OSError:  # the worker gave up (timeout) or was killed
                pass

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    rec.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def rec():
    with receiver() as r:
        yield r


def drain(store: Store, settings: WorkerSettings, until, seconds: float = 20.0) -> None:
    """Run a worker in this process until `until()` holds."""
    w = WebhookWorker(store, settings, name="test-worker")
    deadline = time.monotonic() + seconds
    try:
        while not until():
            assert time.monotonic() < deadline, "the worker did not get there in time"
            if w.run_once() == 0:
                time.sleep(0.02)
    finally:
        w.close()


def states(store: Store) -> list[str]:
    return [e["state"] for e in store.outbox_events()]


def recipe_verifies(secret: str, headers: dict, body: bytes) -> bool:
    """The README's verification recipe, by hand: HMAC-SHA256 under the base64-decoded part of the secret
    after `whsec_`, over "<webhook-id>.<webhook-timestamp>.<body>", base64, compared with each `v1,...`."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    if abs(time.time() - int(headers["webhook-timestamp"])) > 300:
        return False
    return any(hmac.compare_digest(expected, s.removeprefix("v1,")) for s in headers["webhook-signature"].split(" "))


def test_signatures_verify_with_the_library_and_the_recipe_and_fail_when_anything_changes(store, rec):
    sub = store.add_subscription(rec.url, ["*"])
    store.publish("decision.created", {"decision_id": "d-1", "customer_id": "c-1"})
    drain(store, WorkerSettings(), lambda: states(store) == ["delivered"])
    (got,) = rec.requests
    headers, body, secret = got["headers"], got["body"], sub["secret"]
    payload = Webhook(secret).verify(body, headers)
    assert payload["type"] == "decision.created" and payload["id"] == headers["webhook-id"]
    assert payload["data"] == {"decision_id": "d-1", "customer_id": "c-1"} and "created_at" in payload
    assert recipe_verifies(secret, headers, body)

    other_secret = store.add_subscription(rec.url, ["*"])["secret"]
    later = {**headers, "webhook-timestamp": str(int(headers["webhook-timestamp"]) + 1)}
    tampered = body.replace(b"d-1", b"d-2")
    for h, b, s in ((headers, tampered, secret), (later, body, secret), (headers, body, other_secret)):
        with pytest.raises(WebhookVerificationError):
            Webhook(s).verify(b, h)
        assert not recipe_verifies(s, h, b)


def test_during_a_rotation_both_the_old_and_the_new_secret_verify(store, rec):
    sub = store.add_subscription(rec.url, ["*"])
    new = store.rotate_subscription_secret(sub["id"], timedelta(hours=1))["secret"]
    store.publish("outcome.recorded", {"decision_id": "d-1"})
    drain(store, WorkerSettings(), lambda: states(store) == ["delivered"])
    (got,) = rec.requests
    assert len(got["headers"]["webhook-signature"].split(" ")) == 2
    for secret in (sub["secret"], new):
        assert Webhook(secret).verify(got["body"], got["headers"])["type"] == "outcome.recorded"
        assert recipe_verifies(secret, got["headers"], got["body"])


def test_a_failing_receiver_is_retried_with_growing_waits_then_dead_lettered_and_replay_delivers(store, rec):
    rec.status = 500
    store.add_subscription(rec.url, ["*"])
    store.publish("decision.created", {"decision_id": "d-1"})
    base = 0.4
    drain(store, WorkerSettings(max_attempts=4, backoff=base, backoff_max=60), lambda: states(store) == ["dead"])
    times = [r["at"] for r in rec.requests]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    print(f"\nwaits between the 4 attempts: {', '.join(f'{g:.2f} s' for g in gaps)}")
    assert len(times) == 4
    for n, gap in enumerate(gaps, start=1):  # after failure n: between half and all of base * 2^(n-1)
        assert base * 2 ** (n - 1) / 2 - 0.02 <= gap <= base * 2 ** (n - 1) + 0.3
    assert gaps[2] > gaps[1] > gaps[0]
    log = store.delivery_attempts()
    assert [a["status_code"] for a in log] == [500] * 4 and not any(a["ok"] for a in log)
    (event,) = store.outbox_events()
    assert event["attempts"] == 4 and event["last_error"].startswith("HTTP 500")

    rec.status = 200
    assert store.replay_events([event["id"]]) == 1
    drain(store, WorkerSettings(), lambda: states(store) == ["delivered"])
    assert len(set(rec.ids())) == 1 and len(rec.ids()) == 5  # the same webhook-id every time


def test_a_receiver_that_does_not_answer_times_out_and_is_dead_lettered(store, rec):
    rec.delay = 3.0
    store.add_subscription(rec.url, ["*"])
    store.publish("decision.created", {"decision_id": "d-1"})
    started = time.monotonic()
    drain(store, WorkerSettings(timeout=0.3, max_attempts=2, backoff=0.1), lambda: states(store) == ["dead"])
    assert time.monotonic() - started < 2.5  # the worker did not wait for the receiver
    log = store.delivery_attempts()
    assert len(log) == 2 and all(a["status_code"] is None and "Timeout" in a["error"] for a in log)
    assert all(250 <= a["ms"] < 1500 for a in log)


def test_a_hanging_receiver_does_not_hold_back_another(store):
    with receiver() as hanging, receiver() as fast:
        hanging.delay = 5.0
        store.add_subscription(hanging.url, ["*"])
        store.add_subscription(fast.url, ["*"])
        with store.transaction(write=True) as conn:
            for i in range(10):
                store.enqueue(conn, "decision.created", {"n": i})
        w = WebhookWorker(store, WorkerSettings(timeout=3.0, concurrency=4, per_receiver=2, poll=0.05))
        thread = threading.Thread(target=w.run)
        started = time.monotonic()
        thread.start()
        try:
            while len(fast.requests) < 10:
                assert time.monotonic() - started < 2.5, f"{len(fast.requests)} of 10 delivered"
                time.sleep(0.01)
            took = time.monotonic() - started
            assert len(hanging.requests) == 2  # at most per_receiver threads wait on it
        finally:
            w.stopping.set()
            thread.join()
            w.close()
    print(f"\nthe answering receiver got its 10 events in {took:.2f} s while the other hung")


def _worker(url: str, log: Path, *args: str) -> subprocess.Popen:
    retention = Path(sys.executable).parent / "retention"
    with open(log, "ab") as out:
        return subprocess.Popen([str(retention), "webhooks", "worker", "--database-url", url, *args],
                                stdout=out, stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_kill_9_of_the_worker_mid_batch_loses_no_event_and_redelivers_with_the_same_id(migrated_url, rec, tmp_path):
    rec.delay = 0.5
    with Store.from_url(migrated_url) as store:
        store.add_subscription(rec.url, ["*"])
        with store.transaction(write=True) as conn:
            for i in range(10):
                store.enqueue(conn, "decision.created", {"n": i})
    options = ("--concurrency", "4", "--per-receiver", "4", "--timeout", "2", "--lease-seconds", "3", "--poll", "0.1")
    log = tmp_path / "worker.log"
    first = _worker(migrated_url, log, *options)
    try:
        deadline = time.monotonic() + 30
        while len(rec.requests) < 2:  # the first POSTs of the first batch are in flight now
            assert first.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.01)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        killed_at = len(rec.requests)
    finally:
        if first.poll() is None:
            first.kill()
    second = _worker(migrated_url, log, *options)
    try:
        with Store.from_url(migrated_url) as store:
            deadline = time.monotonic() + 60
            while states(store) != ["delivered"] * 10:
                assert second.poll() is None and time.monotonic() < deadline, (states(store), log.read_text())
                time.sleep(0.1)
            events = store.outbox_events()
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
    received = rec.ids()
    counts = {i: received.count(i) for i in set(received)}
    print(f"\nkilled after {killed_at} POSTs; {len(received)} POSTs in all for {len(counts)} events; "
          f"sent twice: {sorted(i for i, n in counts.items() if n > 1)}")
    assert set(counts) == {e["event_id"] for e in events}  # every event arrived, under its own id
    # The ones in flight at the kill (received, not answered) came again, with the same id.
    assert all(counts[i] >= 2 for i in received[:killed_at])
    assert second.returncode == 0
