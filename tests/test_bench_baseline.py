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


def test_the_report_prints_the_scoring_of_a_model_that_has_no_trees():
    """make bench measured everything, then died printing it: a blend or logistic learner has no tree count."""
    from bench.run import format_report

    timing = {"rps": 100.0, "non_2xx": 0, "socket_errors": None}
    latency = {"offered_rps": 50.0, "achieved_rps": 50.0, "requests": 750, "errors": 0, "p50_ms": 5.0,
               "p95_ms": 9.0, "p99_ms": 12.0, "max_ms": 20.0, "wall_seconds": 15.0}
    report = {
        "machine": {"cpus": 2}, "workers": 2, "connections": 16, "seconds_per_round": 10,
        "rounds": [{"echo": timing, "echo+insert": timing, "decision": timing, "ratio": 0.2, "insert_ratio": 0.7}],
        "ratio": {"median": 0.2, "min": 0.2, "max": 0.2}, "insert_ratio_median": 0.7,
        "latency_at_half_max": {"echo": latency, "decision": latency},
        "worker_memory": {"decision": [{"pid": 1, "rss_mb": 80.0, "pss_mb": 55.0}], "echo": []},
        "scoring": {"model": "v", "learner": "blend of boosting (min leaf 20) and logistic (C 0.3)",
                    "offers_per_set": 9, "offer_sets": 10, "compiled_us_per_offer_set": 110.7,
                    "pipeline_us_per_offer_set": 35708.7, "speedup": 322.6, "max_abs_difference": 3.3e-16},
        "profile": None,
    }
    text = format_report(report)
    assert "scoring alone (9 offers, learner blend of boosting (min leaf 20) and logistic (C 0.3)): 110.7 us" in text
