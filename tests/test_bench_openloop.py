"""The benchmark's open-loop generator keeps its offered rate when the server is slow, and counts the wait
in the latency (no coordinated omission)."""

from __future__ import annotations

import threading
import time

import pytest
from werkzeug.serving import make_server

from bench.echo_app import create_app
from bench.openloop import run


@pytest.fixture
def echo_server():
    app = create_app()
    delay = {"seconds": 0.0}

    @app.before_request
    def slow_down():
        time.sleep(delay["seconds"])

    server = make_server("127.0.0.1", 0, app, threaded=False)  # one request at a time, like a sync worker
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_port, delay
    server.shutdown()
    thread.join()


def _request(i: int) -> bytes:
    body = f'{{"request_id": "r{i}", "customer_id": "c{i}"}}'
    return (f"POST /bench/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}").encode()


def test_a_fast_server_sees_the_offered_rate(echo_server):
    port, _ = echo_server
    r = run("127.0.0.1", port, _request, rate=100, seconds=1.0)
    assert r["requests"] == 100 and r["errors"] == 0
    assert r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"] <= r["max_ms"]
    # The median, not the maximum: on a loaded machine one request can wait a scheduler slice, while a backlog
    # (the next test) moves the median by hundreds of milliseconds.
    assert r["p50_ms"] < 100, r


@pytest.mark.slow
def test_a_server_slower_than_the_rate_shows_queueing_in_the_latency(echo_server):
    port, delay = echo_server
    delay["seconds"] = 0.02  # capacity 50/s, offered 100/s: requests queue up
    r = run("127.0.0.1", port, _request, rate=100, seconds=1.0, connections=4)
    assert r["errors"] == 0
    # a closed-loop client would report ~20 ms; measured from the schedule, the backlog shows
    assert r["p99_ms"] > 500
