"""Slow clients against the decision service: what 50 connections that trickle a request in, one byte every
0.5 s, do to an ordinary client's decisions (issue 15; service/worker.py is the fix).

Run with `make bench-slow-clients` (the demo data and model first) or
`python -m bench.slow_clients --data DATA --models MODELS`. Against gunicorn with gunicorn.conf.py (2
workers), on a fresh SQLite store with every customer's features loaded (bench.run.prepare_store):
1. baseline: one sequential client posts decisions (a new connection each, a pause of 20 ms between them) for
   --seconds;
2. the same client for --seconds more while --slow connections each send a decision's headers one byte every
   0.5 s (reopened as soon as the server closes one, as an attacker would);
3. p50 / p99 / max of both phases, their ratio, how many slow connections were opened and how long the
   server let them live. Exit 1 if any ordinary request was not answered 201.

The load generators (SlowClients, ordinary) are shared with tests/service/test_slow_clients.py.
"""

from __future__ import annotations

import argparse
import json
import math
import select
import socket
import sys
import threading
import time
from dataclasses import dataclass, field

import requests

HEADER = (b"POST /v1/decisions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
          b"X-Padding: " + b"a" * 4000)
BODY_HEADERS = (b"POST /v1/decisions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: 4000\r\n\r\n")


@dataclass
class _Conn:
    sock: socket.socket
    opened: float
    sent: int = 0
    next_send: float = 0.0


@dataclass
class SlowClients:
    """`connections` sockets to (host, port), each sending one byte every `interval` seconds: of the headers
    (mode "headers"), or of a body whose headers went in full first (mode "body"). One thread drives them all;
    a socket the server closes is timed (`lifetimes`, seconds from its connect) and, with `reconnect`,
    replaced. `answered` counts the slow connections that got any bytes back (a response: none should)."""

    host: str
    port: int
    connections: int = 50
    interval: float = 0.5
    mode: str = "headers"
    reconnect: bool = True
    opened: int = 0
    lifetimes: list[float] = field(default_factory=list)
    answered: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> SlowClients:
        self._conns: dict[socket.socket, _Conn] = {}
        for _ in range(self.connections):
            self._open()
        self._thread = threading.Thread(target=self._run, name="slow-clients", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for conn in list(self._conns.values()):
            conn.sock.close()

    def cut(self) -> int:
        with self._lock:
            return len(self.lifetimes)

    def wait_cut(self, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.cut() < n:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def _open(self) -> None:
        sock = socket.create_connection((self.host, self.port), timeout=5)
        sock.setblocking(False)
        now = time.monotonic()
        if self.mode == "body":
            self._send_all(sock, BODY_HEADERS)
        self._conns[sock] = _Conn(sock, now, next_send=now)
        self.opened += 1

    @staticmethod
    def _send_all(sock: socket.socket, data: bytes) -> None:
        sock.setblocking(True)
        try:
            sock.sendall(data)
        finally:
            sock.setblocking(False)

    def _closed(self, conn: _Conn) -> None:
        del self._conns[conn.sock]
        conn.sock.close()
        with self._lock:
            self.lifetimes.append(time.monotonic() - conn.opened)
        if self.reconnect and not self._stop.is_set():
            self._open()

    def _run(self) -> None:
        payload = HEADER if self.mode == "headers" else b"{" + b" " * 3998 + b"}"
        while not self._stop.is_set():
            now = time.monotonic()
            wait = min((c.next_send for c in self._conns.values()), default=now + self.interval) - now
            socks = list(self._conns)
            readable = select.select(socks, [], [], max(0.0, min(wait, 0.1)))[0] if socks else []
            if not socks:
                time.sleep(0.05)
            for sock in readable:
                conn = self._conns[sock]
                try:
                    data = sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if data:
                    self.answered += 1
                self._closed(conn)
            now = time.monotonic()
            for conn in list(self._conns.values()):
                if conn.next_send > now:
                    continue
                try:
                    conn.sock.send(payload[conn.sent % len(payload):][:1])
                    conn.sent += 1
                    conn.next_send = now + self.interval
                except (BlockingIOError, InterruptedError):
                    conn.next_send = now + self.interval
                except OSError:
                    self._closed(conn)


@dataclass
class Answer:
    status: int  # 0: no answer (timeout, connection error)
    seconds: float
    error: str = ""


def ordinary(base: str, headers: dict, seconds: float, tag: str, make_body, pause: float = 0.02,
             timeout: float = 5.0) -> list[Answer]:
    """One sequential client posting decisions for `seconds`, a new connection each (as a frontend without
    keep-alive, and what each slow client competes with for a worker)."""
    answers = []
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        body = json.dumps(make_body(f"{tag}-{i}", i))
        i += 1
        start = time.monotonic()
        try:
            r = requests.post(f"{base}/v1/decisions", data=body, timeout=timeout,
                              headers={**headers, "Content-Type": "application/json", "Connection": "close"})
            answers.append(Answer(r.status_code, time.monotonic() - start, "" if r.status_code == 201 else r.text[:200]))
        except requests.RequestException as exc:
            answers.append(Answer(0, time.monotonic() - start, type(exc).__name__))
        time.sleep(pause)
    return answers


def percentile(values: list[float], q: float) -> float:
    """Nearest rank: the smallest value with at least q% of them at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def summary(answers: list[Answer]) -> dict:
    ms = [a.seconds * 1000 for a in answers]
    return {"requests": len(answers), "ok": sum(a.status == 201 for a in answers),
            "timeouts_or_errors": sum(a.status == 0 for a in answers),
            "p50_ms": round(percentile(ms, 50), 1), "p99_ms": round(percentile(ms, 99), 1),
            "max_ms": round(max(ms), 1)}


def describe(s: dict) -> str:
    return (f"{s['requests']} requests, {s['ok']} x 201, {s['timeouts_or_errors']} unanswered; p50 {s['p50_ms']} ms, "
            f"p99 {s['p99_ms']} ms, max {s['max_ms']} ms")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    from pathlib import Path

    from bench.run import KEY, REASONS, ROOT, gunicorn, prepare_store

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT / "var" / "data" / "demo")
    ap.add_argument("--models", type=Path, default=ROOT / "models")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    ap.add_argument("--slow", type=int, default=50, help="slow connections in the second phase")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    url, customers = prepare_store(args.data, args.models)
    rows = [line.split("\t") for line in customers.read_text().splitlines()]

    def make_body(request_id: str, i: int) -> dict:
        cid, plan, price, period, channel = rows[i % len(rows)]
        return {"request_id": request_id, "customer_id": cid, "reason": REASONS[i % len(REASONS)], "plan_id": plan,
                "price": float(price), "billing_period": period, "billing_channel": channel}

    port = free_port()
    env = {"DATABASE_URL": url, "RETENTION_MODELS_DIR": str(args.models), "WEB_CONCURRENCY": str(args.workers),
           "RETENTION_LOG_LEVEL": "WARNING", "RETENTION_RATE_LIMIT": "100000 per second"}
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {KEY}"}
    tag = f"slow-{int(time.time())}"
    with gunicorn("service:create_app()", port, env):
        ordinary(base, auth, 2.0, f"{tag}-warm", make_body)
        served = requests.post(f"{base}/v1/decisions", json=make_body(f"{tag}-check", 0), headers=auth, timeout=10).json()
        print(f"serving model {served['model_version']} (fallback: {served['fallback']})", flush=True)
        baseline = summary(ordinary(base, auth, args.seconds, f"{tag}-base", make_body))
        print(f"baseline, no slow clients: {describe(baseline)}", flush=True)
        with SlowClients("127.0.0.1", port, connections=args.slow) as slow:
            time.sleep(1.0)
            loaded = summary(ordinary(base, auth, args.seconds, f"{tag}-slow", make_body))
            lifetimes = sorted(slow.lifetimes)
            opened, answered = slow.opened, slow.answered
    print(f"with {args.slow} slow connections: {describe(loaded)}")
    cut = (f"{len(lifetimes)} cut by the server after {lifetimes[0]:.2f}-{lifetimes[-1]:.2f} s" if lifetimes
           else "none cut by the server")
    print(f"slow connections: {opened} opened, {cut}, {answered} answered")
    print(f"ratio slow/baseline: p50 {loaded['p50_ms'] / baseline['p50_ms']:.2f}, "
          f"p99 {loaded['p99_ms'] / baseline['p99_ms']:.2f}, max {loaded['max_ms'] / baseline['max_ms']:.2f}")
    if baseline["ok"] < baseline["requests"] or loaded["ok"] < loaded["requests"]:
        sys.exit("some ordinary requests were not answered 201")


if __name__ == "__main__":
    main()
