"""Store outage drill: PostgreSQL becomes unreachable for a while (a TCP proxy in front of it refuses
connections and drops the open ones), the service keeps answering within its budget and spools decisions
and outcomes on local disk, and when the database is back every spooled write lands exactly once.

    make outage-drill                       # 60 seconds of outage against gunicorn (2 workers)
    python -m bench.outage --seconds 60

tests/service/test_store_outage.py runs the same drill for 5 seconds in CI. Exit code 1 when a check fails.
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

from store import Store


class Proxy:
    """A TCP proxy on 127.0.0.1 to `upstream`; `cut()` makes the upstream unreachable (new connections are
    refused, open ones dropped), `restore()` reconnects it."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._up = False
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self._listener = listener
        with self._lock:
            self._up = True
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

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
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                if not self._up:  # accepted just before a cut: the database is unreachable now
                    client.close()
                    server.close()
                    continue
                self._sockets |= {client, server}
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.close()


def through(proxy: Proxy, url: str) -> str:
    """The same database URL, reached through the proxy (connect timeout 1 s)."""
    parsed = make_url(url)
    query = {**parsed.query, "connect_timeout": "1"}
    return parsed.set(host="127.0.0.1", port=proxy.port, query=query).render_as_string(hide_password=False)


def drill(base: str, key: str, proxy: Proxy, direct_url: str, seconds: float, rate: float = 20.0) -> dict:
    """Cut the database for `seconds` while sending decisions and outcomes at `rate`/s; then restore it,
    wait for the spool to drain and check the store. Returns figures and the verdict. `key` is an admin
    key: it decides, and it reads /readyz's details (the store and spool checks)."""
    auth = {"Authorization": f"Bearer {key}"}
    session = requests.Session()

    def decide(rid: str) -> requests.Response:
        return session.post(f"{base}/v1/decisions", headers=auth, timeout=10, json={
            "request_id": rid, "customer_id": f"outage-{rid}", "reason": "too_expensive", "plan_id": "plus_monthly",
            "price": 14.95, "billing_period": "monthly", "billing_channel": "web"})

    for w in range(12):  # every worker verifies and caches the key before the outage
        assert decide(f"outage-warm-{w}").status_code == 201
    proxy.cut()
    answered, outcomes, latencies, errors = {}, {}, [], []
    ready_during = None
    started = time.monotonic()
    i = 0
    while time.monotonic() - started < seconds:
        rid = f"outage-{i}"
        t0 = time.perf_counter()
        r = decide(rid)
        latencies.append((time.perf_counter() - t0) * 1000)
        if r.status_code != 201 or r.json()["recorded"] or "spooled" not in r.json()["reason_codes"]:
            errors.append(f"decision {rid}: {r.status_code} {r.text[:200]}")
        else:
            answered[rid] = r.json()["decision_id"]
            if i % 2 == 0:
                kind = "declined" if r.json()["offer"]["id"] != "none" else "cancelled"
                o = session.post(f"{base}/v1/decisions/{answered[rid]}/outcome", headers=auth, timeout=10,
                                 json={"outcome": kind})
                if o.status_code == 202:
                    outcomes[answered[rid]] = kind
                else:
                    errors.append(f"outcome {rid}: {o.status_code} {o.text[:200]}")
        if i == 3:  # a client retrying during the outage gets the same decision
            again = decide("outage-0")
            if again.json().get("decision_id") != answered.get("outage-0"):
                errors.append("a retry during the outage got another decision")
            ready_during = session.get(f"{base}/readyz", headers=auth, timeout=10)  # the details: admin
        i += 1
        time.sleep(max(0.0, 1 / rate - (time.perf_counter() - t0)))
    outage_seconds = time.monotonic() - started
    proxy.restore()
    restored = time.monotonic()
    drained = None
    while time.monotonic() - restored < 60:
        checks = session.get(f"{base}/readyz", headers=auth, timeout=10).json()["checks"]
        if checks.get("store", {}).get("ok") and checks.get("spool", {}).get("waiting") == 0:
            drained = time.monotonic() - restored
            break
        time.sleep(0.2)
    retry_after = decide("outage-1")  # after recovery: the same decision, now from the store
    with Store.from_url(direct_url) as store, store.transaction() as conn:
        stored = dict(conn.execute(text("SELECT request_id, decision_id FROM decisions WHERE request_id LIKE "
                                        "'outage-%' AND request_id NOT LIKE 'outage-warm-%'")).all())
        kinds = {(d, k) for d, k in conn.execute(text("SELECT decision_id, kind FROM outcomes"))}
    result = {
        "outage_seconds": round(outage_seconds, 1),
        "decisions_answered": len(answered),
        "outcomes_spooled": len(outcomes),
        "latency_ms": {"p50": round(statistics.median(latencies), 1),
                       "p99": round(sorted(latencies)[int(0.99 * (len(latencies) - 1))], 1),
                       "max": round(max(latencies), 1)} if latencies else None,
        "readyz_during": None if ready_during is None else {**ready_during.json(),
                                                            "http_status": ready_during.status_code},
        "drained_after_seconds": None if drained is None else round(drained, 1),
        "decisions_stored_as_answered": sum(stored.get(r) == d for r, d in answered.items()),
        "decisions_stored": len(stored),
        "outcomes_stored": sum((d, k) in kinds for d, k in outcomes.items()),
        "retry_after_recovery_same": retry_after.status_code == 200
        and retry_after.json()["decision_id"] == answered.get("outage-1"),
        "errors": errors[:10],
    }
    result["ok"] = (not errors and drained is not None and result["decisions_stored"] == len(answered)
                    and result["decisions_stored_as_answered"] == len(answered)
                    and result["outcomes_stored"] == len(outcomes) and result["retry_after_recovery_same"]
                    and result["readyz_during"] is not None and result["readyz_during"]["http_status"] == 503)
    return result


def main() -> None:
    from bench.run import ROOT, gunicorn

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--database-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    ap.add_argument("--models", type=Path, default=ROOT / "models")
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
            result = drill("http://127.0.0.1:8104", key, proxy, direct, args.seconds)
    finally:
        with Store.from_url(args.database_url) as s, s.transaction(write=True) as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    (ROOT / "var" / "bench" / "outage.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps(result, indent=2, default=str))
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
