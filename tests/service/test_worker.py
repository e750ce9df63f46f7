"""What the app sees and what clients get through gunicorn's worker (service/worker.py, BufferedSyncWorker):
keep-alive, chunked bodies, 413 before a too-large body is sent, the header limit, the peer address for the
failed-authentication limit, max_requests and a graceful stop. SQLite only: none of this depends on the store.
"""

from __future__ import annotations

import json
import signal
import socket
import time
from urllib.parse import urlsplit

import pytest
import requests
from support import KEYS, decision_body, headers, seed_clients, serve

from store.db import upgrade

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sqlite_url(tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('worker-db') / 'store.db'}"
    upgrade(url)
    seed_clients(url)
    return url


@pytest.fixture(scope="module")
def server(sqlite_url, module_models_root, tmp_path_factory):
    # Keep-alive on (RETENTION_KEEPALIVE; off by default, gunicorn.conf.py says why), so its tests mean something.
    with serve(sqlite_url, module_models_root, tmp_path_factory.mktemp("gunicorn"), RETENTION_KEEPALIVE="5") as running:
        yield running


def _connect(base: str) -> socket.socket:
    return socket.create_connection(("127.0.0.1", urlsplit(base).port), timeout=10)


def _request(body: bytes, *extra: str, path: str = "/v1/decisions", key: str = KEYS["decide"]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Authorization: Bearer {key}",
             "Content-Type: application/json", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response read by its Content-Length (the worker always sends one)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    while len(body) < int(fields["content-length"]):
        body += sock.recv(65536)
    return int(status_line.split()[1]), fields, body


def _closed(sock: socket.socket, timeout: float = 10) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


def test_a_kept_alive_connection_serves_several_requests(server):
    with _connect(server.base) as sock:
        answers = []
        for i in range(3):
            body = json.dumps(decision_body(request_id=f"ka-{i}")).encode()
            sock.sendall(_request(body, f"Content-Length: {len(body)}"))
            answers.append(_response(sock))
    assert [status for status, _, _ in answers] == [201, 201, 201]
    assert all("connection" not in fields for _, fields, _ in answers)
    assert [json.loads(body)["request_id"] for _, _, body in answers] == ["ka-0", "ka-1", "ka-2"]


def test_a_chunked_body_reaches_the_app_whole(server):
    body = json.dumps(decision_body(request_id="chunked-1")).encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:10], body[10:50], body[50:])) + b"0\r\n\r\n"
    with _connect(server.base) as sock:
        sock.sendall(_request(chunks, "Transfer-Encoding: chunked"))
        status, _, answer = _response(sock)
    assert status == 201, answer
    assert json.loads(answer)["request_id"] == "chunked-1"


def test_a_declared_body_over_the_limit_is_the_apps_413_before_it_is_sent(server):
    with _connect(server.base) as sock:
        sock.sendall(_request(b"", "Content-Length: 5000000"))  # and not one byte of it
        status, fields, answer = _response(sock)
        assert status == 413 and json.loads(answer)["code"] == 413
        assert fields["connection"] == "close"
        assert _closed(sock)
    # Under the worker's limit (1 MiB) but over the decision endpoint's (32 KiB): read, then the app's 413.
    r = requests.post(f"{server.base}/v1/decisions", data=b"x" * 40_000, timeout=10,
                      headers={**headers(), "Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["code"] == 413


def test_a_header_section_over_16_kib_is_closed_unanswered_and_the_next_client_is_served(server):
    with _connect(server.base) as sock:
        sock.sendall(_request(b"", "Content-Length: 0", "X-Padding: " + "a" * 17_000))
        assert _closed(sock)
    r = requests.post(f"{server.base}/v1/decisions", json=decision_body(request_id="after-big-headers"),
                      headers=headers(), timeout=10)
    assert r.status_code == 201


def test_the_failed_auth_limit_counts_the_peer_address_whatever_x_forwarded_for_says(sqlite_url, module_models_root,
                                                                                     tmp_path):
    with serve(sqlite_url, module_models_root, tmp_path, workers=1,
               RETENTION_AUTH_FAILURE_LIMIT="3 per minute") as running:
        statuses = [requests.post(f"{running.base}/v1/decisions", json=decision_body(), timeout=10,
                                  headers={"Authorization": f"Bearer wrong-key-{i}-0123456789abcdef",
                                           "X-Forwarded-For": f"203.0.113.{i}"}).status_code for i in range(5)]
        known = requests.post(f"{running.base}/v1/decisions", json=decision_body(request_id="known-key"),
                              headers=headers(), timeout=10)
    assert statuses == [401, 401, 401, 429, 429]
    assert known.status_code == 201  # a known key still works from that address


def test_max_requests_replaces_workers_and_a_kept_alive_client_sees_no_error(sqlite_url, module_models_root,
                                                                             tmp_path):
    with serve(sqlite_url, module_models_root, tmp_path,
               GUNICORN_CMD_ARGS="--max-requests 5 --max-requests-jitter 0", RETENTION_KEEPALIVE="5") as running:
        first = set(running.workers())
        seen = set(first)
        statuses = []
        with requests.Session() as s:
            for i in range(30):
                statuses.append(s.post(f"{running.base}/v1/decisions", json=decision_body(request_id=f"mr-{i}"),
                                       headers=headers(), timeout=10).status_code)
                seen |= set(running.workers())
        log = running.log_path.read_text()
    assert statuses == [201] * 30
    assert log.count("Autorestarting worker after current request.") >= 4, log[-2000:]
    assert seen - first, "no worker was replaced"


def test_sigterm_lets_a_request_being_read_finish(sqlite_url, module_models_root, tmp_path):
    body = json.dumps(decision_body(request_id="graceful-1")).encode()
    with serve(sqlite_url, module_models_root, tmp_path) as running, _connect(running.base) as sock:
        sock.sendall(_request(body[:20], f"Content-Length: {len(body)}"))
        time.sleep(0.3)
        running.proc.send_signal(signal.SIGTERM)
        time.sleep(1.0)  # the workers are stopping; this request is theirs to finish
        sock.sendall(body[20:])
        status, fields, answer = _response(sock)
        assert status == 201 and json.loads(answer)["request_id"] == "graceful-1"
        assert fields["connection"] == "close"
        assert running.proc.wait(timeout=30) == 0
