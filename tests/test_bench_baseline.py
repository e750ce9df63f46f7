"""The API benchmark's baseline (bench/echo_app.py, a bare Flask endpoint) must run under the service's own
gunicorn config, or `make bench` has nothing to compare the decision endpoint against."""

from __future__ import annotations

import pytest
import requests

from bench.echo_app import ANSWER
from bench.run import OUT, free_port, gunicorn

pytestmark = pytest.mark.slow


def test_the_bare_flask_baseline_starts_and_answers_under_gunicorn_conf(tmp_path):
    OUT.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {"WEB_CONCURRENCY": "1", "BENCH_ECHO_STORE": str(tmp_path / "echo.db"),
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    with gunicorn("bench.echo_app:create_app()", port, env):
        answer = requests.post(f"http://127.0.0.1:{port}/bench/echo", json={"request_id": "r1", "customer_id": "c1"},
                               timeout=10)
    assert answer.status_code == 201 and answer.json()["model_version"] == ANSWER["model_version"]
