"""Helpers shared by the service tests: API keys per role, request bodies, signed headers."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from standardwebhooks import Webhook

from bench.run import free_port
from service import create_app
from store import Store

KEYS = {
    "decide": "test-decide-key-0123456789abcdef",
    "events": "test-events-key-0123456789abcdef",
    "followups": "test-followups-key-0123456789abc",
    "admin": "test-admin-key-0123456789abcdef0",
}
# Tests drive one key far faster than a frontend would, and send many wrong keys on purpose; tests of the
# limiters set their own.
UNLIMITED = "100000 per second"
# A secret in the Standard Webhooks format (`retention keys create --sign` makes them): whsec_ + base64.
SIGNED_KEY = "test-signed-key-0123456789abcdef"
SIGNING_SECRET = "whsec_" + base64.b64encode(b"test-signing-secret-32-bytes-ok!").decode()


def headers(role: str = "decide") -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[role]}"}


def signed_headers(method: str, path: str, body: bytes, timestamp: int | None = None, query: str = "",
                   msg_id: str | None = None, secret: str | bytes = SIGNING_SECRET,
                   key: str = SIGNED_KEY) -> dict[str, str]:
    """Headers of a request signed the Standard Webhooks way, by the standardwebhooks library itself (not by
    the service's code): Webhook.sign over "<METHOD>\\n<path>\\n<query>\\n<body>"."""
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    timestamp = int(time.time()) if timestamp is None else timestamp
    payload = f"{method}\n{path}\n{query}\n{body.decode()}"
    signature = Webhook(secret).sign(msg_id, datetime.fromtimestamp(timestamp, UTC), payload)
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json", "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp), "webhook-signature": signature}


def decision_body(request_id: str = "r-1", customer_id: str = "cust-1", **overrides) -> dict:
    body = {"request_id": request_id, "customer_id": customer_id, "reason": "temporary",
            "plan_id": "plus_monthly", "price": 14.95, "billing_period": "monthly", "billing_channel": "web"}
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def seed_clients(url: str) -> None:
    with Store.from_url(url) as store:
        for role, key in KEYS.items():
            store.create_client(f"test-{role}", role, key=key)
        store.create_client("test-signed", "decide", key=SIGNED_KEY, signing_secret=SIGNING_SECRET)


ROOT = Path(__file__).resolve().parents[2]


def policy_file(share: float, time_budget_ms: float | None = None) -> Path:
    """config/policy.toml with the exploration share set to `share` (and the scoring budget to
    `time_budget_ms`). The service tests that check which offer a request gets run without exploration (with
    the checked-in 5%, one decision in twenty would be a random eligible offer, drawn from the time of the
    request); the exploration tests use the real file."""
    text = (ROOT / "config" / "policy.toml").read_text()
    if "\nshare = 0.05\n" not in text or "\ntime_budget_ms = 150\n" not in text:
        raise AssertionError("config/policy.toml no longer sets [exploration] share = 0.05 and time_budget_ms = "
                             "150; update this helper")
    text = text.replace("\nshare = 0.05\n", f"\nshare = {share}\n")
    if time_budget_ms is not None:
        text = text.replace("\ntime_budget_ms = 150\n", f"\ntime_budget_ms = {time_budget_ms}\n")
    path = Path(tempfile.mkdtemp(prefix="policy-")) / "policy.toml"
    path.write_text(text)
    return path


NO_EXPLORATION = policy_file(0.0)


# How long the service waits for its store in the tests, unless a test sets it (the outage drills use the
# default 500 ms): a store call slower than the wait takes the outage path by design, and on a loaded CI
# machine a few did, so tests about something else saw spooled decisions they did not expect.
TEST_STORE_WAIT_MS = 5000.0


def wait_until(condition, seconds: float = 30.0, every: float = 0.1) -> bool:
    """Poll `condition` until it is true (True) or `seconds` have passed (False): the tests' one way to wait
    for something another process or thread does; the caller's assert says what it waited for."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(every)
    return True


def make_app(url: str, models_root: Path, **config):
    # Each app its own spool: a decision spooled in one test must never be replayed into another's store.
    spool = Path(tempfile.mkdtemp(prefix="spool-")) / "spool.db"
    return create_app({"TESTING": True, "DATABASE_URL": url, "MODELS_DIR": str(models_root),
                       "MODEL_VERSION": "latest", "RATE_LIMIT": UNLIMITED, "AUTH_FAILURE_LIMIT": UNLIMITED,
                       "SPOOL_PATH": str(spool), "STORE_WAIT_MS": TEST_STORE_WAIT_MS,
                       "POLICY_PATH": str(NO_EXPLORATION), **config})


def post(client, path: str, body, role: str = "decide", **kw):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post(path, data=data, headers={**headers(role), "Content-Type": "application/json"}, **kw)


@dataclass
class Server:
    base: str  # http://127.0.0.1:<port>
    log_path: Path
    proc: subprocess.Popen  # the gunicorn master

    def workers(self) -> list[int]:
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(p) for p in path.read_text().split()] if path.exists() else []



@contextmanager
def serve(url: str, models_root: Path, tmp_path: Path, workers: int = 2, **env):
    """gunicorn with gunicorn.conf.py and `workers` workers on a free port; yields a Server."""
    port = free_port()
    prom = tmp_path / f"prom-{port}"
    prom.mkdir()
    env = {**os.environ, "DATABASE_URL": url, "RETENTION_MODELS_DIR": str(models_root),
           "PORT": str(port), "WEB_CONCURRENCY": str(workers), "PROMETHEUS_MULTIPROC_DIR": str(prom),
           "RETENTION_RATE_LIMIT": UNLIMITED, "RETENTION_AUTH_FAILURE_LIMIT": UNLIMITED, "RETENTION_SPOOL": str(tmp_path / f"spool-{port}.db"),
           "RETENTION_POLICY": str(NO_EXPLORATION), "RETENTION_MODEL": "latest",
           "RETENTION_STORE_WAIT_MS": str(TEST_STORE_WAIT_MS), **env}
    log_path = tmp_path / f"gunicorn-{port}.log"
    with open(log_path, "w+") as log:
        proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "service:create_app()"],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            base = f"http://127.0.0.1:{port}"
            _wait_until_up(base, proc, log)
            server = Server(base, log_path, proc)
            _wait_for_workers(server, workers, log)
            yield server
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_until_up(base: str, proc: subprocess.Popen, log) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            log.seek(0)
            pytest.fail(f"gunicorn did not start:\n{log.read()}")
        time.sleep(0.2)


def _wait_for_workers(server: Server, workers: int, log) -> None:
    """/healthz answers as soon as the first worker is up; the master forks the others one after another."""
    deadline = time.monotonic() + 60
    while len(server.workers()) < workers:
        if server.proc.poll() is not None or time.monotonic() > deadline:
            log.seek(0)
            pytest.fail(f"gunicorn did not start {workers} workers:\n{log.read()}")
        time.sleep(0.1)


def newer_copy(models_root: Path, good: Path, name: str, minutes: int) -> Path:
    """A copy of the good version with its own id, created later ("latest" picks it): metadata.json holds
    the other files' checksums, not its own, so the copy verifies."""
    new = models_root / name
    shutil.copytree(good, new)
    meta = json.loads((new / "metadata.json").read_text())
    meta["created_at"] = (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat()
    meta["version"] = name
    (new / "metadata.json").write_text(json.dumps(meta))
    return new


THREE_ARMS = """[
  { name = "model", kind = "model" },
  { name = "discount_50_2m", kind = "offer", offer = "discount_50_2m" },
  { name = "pause_1m", kind = "offer", offer = "pause_1m" },
]"""


def experiments_file(path: Path, name: str = "offer-variants", variants: str = THREE_ARMS,
                     holdout: float = 0.10) -> Path:
    """An experiments file in which experiment `name` started yesterday (by default the model vs 50% off
    for 2 months vs a 1-month pause, with a 10% holdout)."""
    start = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    path.write_text(f"""
[[experiment]]
name = "{name}"
start = {start}
holdout = {holdout}
control = "model"
variants = {variants}
""")
    return path


class FlaskApi:
    """training.experiment_sim's client protocol over Flask's test client, as the admin."""

    def __init__(self, client) -> None:
        self.client = client

    def post(self, path: str, body: dict):
        r = self.client.post(path, json=body, headers=headers("admin"))
        return r.status_code, r.get_json()

    def get(self, path: str, params: dict | None = None):
        r = self.client.get(path, query_string=params, headers=headers("admin"))
        return r.status_code, r.get_json()
