"""Store outage drill: PostgreSQL becomes unreachable for a while (a TCP proxy in front of it refuses
connections and drops the open ones), the service keeps answering within its budget and spools decisions
and outcomes on local disk, and when the database is back every spooled write lands exactly once.

    make outage-drill                       # 60 seconds of outage against gunicorn (2 workers)
    make outage-drill MODE=blackhole        # the same with a silent partition instead of a refusal
    python -m bench.outage --seconds 60 --mode blackhole

Decisions run for --before-seconds against the healthy store first: the latency baseline of the same run.

tests/service/test_store_outage.py and test_store_partition.py run the same drill for a few seconds in CI. Exit code 1 when a check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

import requests
from sqlalchemy import text
from sqlalchemy.engine import make_url

from bench.run import free_port
from store import Store


class Proxy:
    """A TCP proxy on 127.0.0.1 to `upstream` with two kinds of outage:

    - `cut()`: the upstream is unreachable and says so (new connections are refused, open ones dropped);
    - `blackhole()`: a network partition that says nothing. Connections stay open and new ones are accepted,
      but every byte in either direction is silently dropped, so a client waits for an answer that never
      comes (TCP keepalives and retransmission timeouts see a live peer: the proxy's own kernel ACKs).

    `restore()` ends either: forwarding resumes on the open connections (whatever was dropped stays lost, so
    a connection that was waiting for an answer keeps waiting) and new connections reach the upstream."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = free_port()
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._up = False
        self._silent = False
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        with self._lock:
            self._up, self._silent = True, False
        if self._listener is None:
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            listener.listen(128)
            self._listener = listener
            threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def blackhole(self) -> None:
        with self._lock:
            self._silent = True

    def cut(self) -> None:
        with self._lock:
            self._up = False
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            for s in self._sockets:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            self._sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by cut()
            if self._silent:  # the partition: accepted, then nothing ever comes back
                with self._lock:
                    self._sockets.add(client)
                threading.Thread(target=self._pump, args=(client, None), daemon=True).start()
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                if not self._up:  # accepted just before a cut: the database is unreachable now
                    client.close()
                    server.close()
                    continue
                self._sockets |= {client, server}
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket | None) -> None:
        try:
            while data := src.recv(65536):
                if dst is not None and not self._silent:
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                if s is not None:
                    with contextlib.suppress(OSError):
                        s.close()


def through(proxy: Proxy, url: str) -> str:
    """The same database URL, reached through the proxy (connect timeout 1 s)."""
    parsed = make_url(url)
    query = {**parsed.query, "connect_timeout": "1"}
    return parsed.set(host="127.0.0.1", port=proxy.port, query=query).render_as_string(hide_password=False)


def _percentiles(latencies: list[float]) -> dict | None:
    if not latencies:
        return None
    ordered = sorted(latencies)
    return {"n": len(ordered), "p50": round(statistics.median(ordered), 1),
            "p99": round(ordered[int(0.99 * (len(ordered) - 1))], 1), "max": round(ordered[-1], 1)}


def _paced(seconds: float, rate: float):
    """(i, due) for request i of a fixed schedule, `rate` a second for `seconds`, waiting until each is due.
    A request that starts late (the client was still waiting for an earlier one) is late from its due time:
    the latency measured from `due` counts that wait (no coordinated omission), the one measured from the
    send does not."""
    start = time.perf_counter()
    i = 0
    while i / rate < seconds:
        due = start + i / rate
        time.sleep(max(0.0, due - time.perf_counter()))
        yield i, due
        i += 1


def drill(base: str, key: str, proxy: Proxy, direct_url: str, seconds: float, rate: float = 20.0,
          mode: str = "cut", before_seconds: float = 0.0) -> dict:
    """Take the database away for `seconds` while sending decisions and outcomes at `rate`/s (`mode` "cut":
    refused, "blackhole": silent, see Proxy); then restore it, wait for the spool to drain and check the
    store. With `before_seconds`, the same traffic first runs that long against the healthy store: the
    latency baseline of the same run. Returns figures and the verdict. `key` is an admin key: it decides,
    and it reads /readyz's details (the store and spool checks)."""
    auth = {"Authorization": f"Bearer {key}"}
    session = requests.Session()
    errors: list[str] = []

    def call(method: str, path: str, **kw) -> tuple[requests.Response | None, float]:
        """(response or None when none came within 10 s, milliseconds)."""
        t0 = time.perf_counter()
        try:
            r = session.request(method, f"{base}{path}", timeout=10, **kw)
        except requests.RequestException as exc:
            errors.append(f"{method} {path}: no answer ({type(exc).__name__})")
            r = None
        return r, (time.perf_counter() - t0) * 1000

    def decide(rid: str) -> tuple[requests.Response | None, float]:
        return call("POST", "/v1/decisions", headers=auth, json={
            "request_id": rid, "customer_id": f"outage-{rid}", "reason": "too_expensive", "plan_id": "plus_monthly",
            "price": 14.95, "billing_period": "monthly", "billing_channel": "web"})

    for w in range(12):  # every worker verifies and caches the key before the outage
        r, _ = decide(f"outage-warm-{w}")
        assert r is not None and r.status_code == 201, r
    before: list[float] = []
    for i, _ in _paced(before_seconds, rate):
        r, ms = decide(f"outage-warm-b{i}")
        before.append(ms)
        if r is None or r.status_code != 201 or not r.json()["recorded"]:
            errors.append(f"decision before the outage: {getattr(r, 'status_code', None)}")
    proxy.blackhole() if mode == "blackhole" else proxy.cut()
    answered, outcomes, latencies, outcome_ms, health_ms, scheduled = {}, {}, [], [], [], []
    ready_during, ready_ms, server_errors = None, None, 0
    started = time.monotonic()
    for i, due in _paced(seconds, rate):
        rid = f"outage-{i}"
        r, ms = decide(rid)
        latencies.append(ms)
        scheduled.append((time.perf_counter() - due) * 1000)
        if r is not None and r.status_code >= 500:
            server_errors += 1
        if r is None:
            pass
        elif r.status_code != 201 or r.json()["recorded"] or "spooled" not in r.json()["reason_codes"]:
            errors.append(f"decision {rid}: {r.status_code} {r.text[:200]}")
        else:
            answered[rid] = r.json()["decision_id"]
            if i % 2 == 0:
                kind = "declined" if r.json()["offer"]["id"] != "none" else "cancelled"
                o, ms = call("POST", f"/v1/decisions/{answered[rid]}/outcome", headers=auth, json={"outcome": kind})
                outcome_ms.append(ms)
                if o is not None and o.status_code == 202:
                    outcomes[answered[rid]] = kind
                elif o is not None:
                    server_errors += o.status_code >= 500
                    errors.append(f"outcome {rid}: {o.status_code} {o.text[:200]}")
        if i % 10 == 5:  # liveness never depends on the store
            h, ms = call("GET", "/healthz")
            health_ms.append(ms)
            if h is not None and h.status_code != 200:
                errors.append(f"/healthz during the outage: {h.status_code}")
        if i == 3:  # a client retrying during the outage gets the same decision
            again, _ = decide("outage-0")
            if again is None or again.json().get("decision_id") != answered.get("outage-0"):
                errors.append("a retry during the outage got another decision")
            ready_during, ready_ms = call("GET", "/readyz", headers=auth)  # the details: admin
    outage_seconds = time.monotonic() - started
    proxy.restore()
    restored = time.monotonic()
    drained = None
    while time.monotonic() - restored < 60:
        r, _ = call("GET", "/readyz", headers=auth)
        checks = r.json()["checks"] if r is not None else {}
        if checks.get("store", {}).get("ok") and checks.get("spool", {}).get("waiting") == 0:
            drained = time.monotonic() - restored
            break
        time.sleep(0.2)
    retry_after, _ = decide("outage-1")  # after recovery: the same decision, now from the store
    with Store.from_url(direct_url) as store, store.transaction() as conn:
        stored = conn.execute(text("SELECT request_id, decision_id FROM decisions WHERE request_id LIKE "
                                   "'outage-%' AND request_id NOT LIKE 'outage-warm-%'")).all()
        kinds = conn.execute(text("SELECT decision_id, kind FROM outcomes")).all()
    stored_ids = dict(stored)
    result = {
        "mode": mode,
        "outage_seconds": round(outage_seconds, 1),
        "decisions_answered": len(answered),
        "outcomes_spooled": len(outcomes),
        "latency_ms_before": _percentiles(before),
        "latency_ms": _percentiles(latencies),
        # From each request's due time on the schedule: what a frontend sending at `rate` would see, the wait
        # behind this client's own slow requests included (one client: an upper bound for the first second).
        "latency_ms_from_schedule": _percentiles(scheduled),
        "outcome_latency_ms": _percentiles(outcome_ms),
        "healthz_latency_ms": _percentiles(health_ms),
        "server_errors": server_errors,
        "readyz_during": None if ready_during is None else {**ready_during.json(),
                                                            "http_status": ready_during.status_code,
                                                            "ms": round(ready_ms, 1)},
        "drained_after_seconds": None if drained is None else round(drained, 1),
        "decisions_stored_as_answered": sum(stored_ids.get(r) == d for r, d in answered.items()),
        "decisions_stored": len(stored),
        "outcomes_stored": sum((d, k) in set(kinds) for d, k in outcomes.items()),
        "outcome_rows": sum(d in outcomes for d, _ in kinds),  # exactly once: one row per acknowledged outcome
        "retry_after_recovery_same": retry_after is not None and retry_after.status_code == 200
        and retry_after.json()["decision_id"] == answered.get("outage-1"),
        "errors": errors[:10],
    }
    result["ok"] = (not errors and drained is not None and result["decisions_stored"] == len(answered)
                    and result["decisions_stored_as_answered"] == len(answered)
                    and result["outcomes_stored"] == len(outcomes) == result["outcome_rows"]
                    and result["retry_after_recovery_same"] and not server_errors
                    and result["readyz_during"] is not None and result["readyz_during"]["http_status"] == 200
                    and "store" in result["readyz_during"]["degraded"])
    return result


def main() -> None:
    from bench.run import ROOT, gunicorn

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--database-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    ap.add_argument("--models", type=Path, default=ROOT / "models")
    ap.add_argument("--mode", choices=("cut", "blackhole"), default="cut",
                    help="cut: connections refused and dropped; blackhole: kept open, every byte dropped")
    ap.add_argument("--before-seconds", type=float, default=10.0, help="healthy traffic first: the baseline")
    args = ap.parse_args()
    schema = f"outage_{int(time.time())}"
    admin = make_url(args.database_url)
    with Store.from_url(args.database_url) as s, s.transaction(write=True) as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    direct = admin.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    from store import upgrade

    upgrade(direct)
    key = "outage-admin-key-0123456789abcdef01"
    with Store.from_url(direct) as s:
        s.create_client("outage-admin", "admin", key=key)
    proxy = Proxy((admin.host or "127.0.0.1", admin.port or 5432))
    spool = ROOT / "var" / "bench" / f"outage-spool-{schema}.db"
    env = {"DATABASE_URL": through(proxy, direct), "RETENTION_MODELS_DIR": str(args.models),
           "RETENTION_SPOOL": str(spool), "RETENTION_LOG_LEVEL": "WARNING"}
    try:
        with gunicorn("service:create_app()", 8104, env):
            result = drill("http://127.0.0.1:8104", key, proxy, direct, args.seconds, mode=args.mode,
                           before_seconds=args.before_seconds)
    finally:
        with Store.from_url(args.database_url) as s, s.transaction(write=True) as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    before, during = result["latency_ms_before"], result["latency_ms"]
    if before and during:
        result["p99_during_over_before"] = round(during["p99"] / before["p99"], 2)
    (ROOT / "var" / "bench" / f"outage-{args.mode}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps(result, indent=2, default=str))
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
