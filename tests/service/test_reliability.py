"""Reliability against a real gunicorn (two preforked workers) on SQLite and PostgreSQL: a thousand
concurrent duplicates make one decision, and a worker killed with SIGKILL under load loses no write that was
acknowledged, leaves no corrupt row, and is replaced by the master.

One server per backend serves both tests: each writes and reads only its own request ids, and the kill test
leaves the server as it found it (two workers, which it checks)."""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from sqlalchemy import text
from support import decision_body, headers, seed_clients, serve, wait_until

from store import Store

pytestmark = [pytest.mark.slow, pytest.mark.serial]


@pytest.fixture(scope="module")
def server(module_migrated_url, module_models_root, tmp_path_factory):
    seed_clients(module_migrated_url)
    # About concurrency and crashes, not a slow store: serve() waits TEST_STORE_WAIT_MS for it (on a loaded CI
    # machine, with the default 500 ms, one of a thousand duplicates took the outage path and made a second,
    # spooled decision, by design: test_store_partition.py).
    with serve(module_migrated_url, module_models_root, tmp_path_factory.mktemp("gunicorn")) as running:
        yield running, module_migrated_url


def _rows(url: str, sql: str, **params) -> list:
    with Store.from_url(url) as store, store.transaction() as conn:
        return list(conn.execute(text(sql), params))


def test_a_thousand_concurrent_duplicates_make_one_decision(server):
    srv, url = server
    body = decision_body(request_id="dup-1000", customer_id="dup-1000-customer")

    def send(_):
        with requests.Session() as s:  # a new connection each: gunicorn spreads them over both workers
            return s.post(f"{srv.base}/v1/decisions", json=body, headers=headers(), timeout=120)

    with ThreadPoolExecutor(max_workers=100) as pool:
        responses = list(pool.map(send, range(1000)))
    statuses = Counter(r.status_code for r in responses)
    created = [r.json()["reason_codes"] for r in responses if r.status_code == 201]
    assert statuses == {201: 1, 200: 999}, (statuses, created)
    assert len({r.json()["decision_id"] for r in responses}) == 1
    assert _rows(url, "SELECT count(*) FROM decisions WHERE request_id = :r", r="dup-1000")[0][0] == 1


def test_a_worker_killed_under_load_loses_no_acknowledged_write(server):
    srv, url = server
    acknowledged: dict[str, str] = {}
    failed: list[tuple[str, str]] = []
    stop = threading.Event()
    lock = threading.Lock()

    def client(k: int) -> None:
        i = 0
        while not stop.is_set():
            rid = f"kill-{k}-{i}"
            i += 1
            try:
                r = requests.post(f"{srv.base}/v1/decisions", headers=headers(), timeout=30,
                                  json=decision_body(request_id=rid, customer_id=f"kill-customer-{k}-{i}"))
                outcome = r.json()["decision_id"] if r.status_code in (200, 201) else str(r.status_code)
            except requests.RequestException as exc:
                outcome = type(exc).__name__
            with lock:
                if outcome.isalnum() and len(outcome) == 32:
                    acknowledged[rid] = outcome
                else:
                    failed.append((rid, outcome))

    def done() -> int:
        with lock:
            return len(acknowledged) + len(failed)

    def replaced() -> bool:
        workers = srv.workers()
        return len(workers) == 2 and victim not in workers

    clients = 8
    with ThreadPoolExecutor(max_workers=clients) as pool:
        futures = [pool.submit(client, k) for k in range(clients)]
        try:  # under load before the kill, and still once the master has replaced the worker
            assert wait_until(lambda: len(acknowledged) >= 150), "150 acknowledged writes before the kill"
            workers = srv.workers()
            assert len(workers) == 2
            victim = workers[0]
            os.kill(victim, signal.SIGKILL)
            assert wait_until(replaced), "the master did not replace the killed worker"
            after = done()
            assert wait_until(lambda: done() >= after + 100), "100 more answers after the replacement"
        finally:
            stop.set()
    for f in futures:
        f.result()

    # The master replaced the killed worker.
    assert replaced()

    # Clients saw at most the requests in flight at the kill fail: one per connection at most.
    print(f"kill -9 under load: {len(acknowledged)} acknowledged, {len(failed)} failed in flight: {failed}")
    assert len(acknowledged) > 200, "the load did run"
    assert len(failed) <= clients, failed
    # Every acknowledged decision is stored exactly once, with the id the client was given.
    stored = dict(_rows(url, "SELECT request_id, decision_id FROM decisions WHERE request_id LIKE 'kill-%'"))
    assert {rid: stored.get(rid) for rid in acknowledged} == acknowledged
    assert not _rows(url, "SELECT request_id FROM decisions GROUP BY request_id HAVING count(*) > 1")
    # No corrupt rows: every stored decision reads back whole, and SQLite's own check passes.
    with Store.from_url(url) as store:
        for rid in stored:
            d = store.get_decision_by_request("test-decide", rid)
            assert d["offer"]["id"] == d["offer_id"] and isinstance(d["features"], dict)
    if url.startswith("sqlite"):
        assert _rows(url, "PRAGMA integrity_check")[0][0] == "ok"
    # A client retrying a request that failed in flight gets one decision, never a second.
    for rid, _ in failed:
        k, i = rid.split("-")[1:]
        r = requests.post(f"{srv.base}/v1/decisions", headers=headers(), timeout=30,
                          json=decision_body(request_id=rid, customer_id=f"kill-customer-{k}-{int(i) + 1}"))
        assert r.status_code in (200, 201), r.text
    assert _rows(url, "SELECT count(*) FROM decisions WHERE request_id LIKE 'kill-%'")[0][0] == \
        len(set(stored) | {rid for rid, _ in failed})
