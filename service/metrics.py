"""Prometheus metrics: request counts and latency by endpoint and status, decisions by offer and fallback,
fail-open events, and the model version each process serves.

Under gunicorn each worker is a process; with PROMETHEUS_MULTIPROC_DIR set (gunicorn.conf.py does), every
worker writes its samples there and /metrics aggregates them, so a scrape sees the whole server, not the
one worker that happened to answer it.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

REQUESTS = Counter("retention_http_requests_total", "HTTP requests", ["endpoint", "method", "status"])
LATENCY = Histogram(
    "retention_http_request_duration_seconds", "HTTP request latency", ["endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5),
)
DECISIONS = Counter("retention_decisions_total", "Decisions answered", ["offer_id", "fallback"])
FAIL_OPEN = Counter("retention_fail_open_total", "Decisions answered despite a failure", ["cause"])
SPOOLED = Counter("retention_spooled_total", "Writes kept in the local spool during a store outage", ["kind"])
MODEL_LOADED = Gauge("retention_model_loaded", "1 for the model version this process serves", ["version"],
                     multiprocess_mode="liveall")


def observe_request(endpoint: str, method: str, status: int, seconds: float) -> None:
    REQUESTS.labels(endpoint, method, str(status)).inc()
    LATENCY.labels(endpoint).observe(seconds)


def set_model(version: str | None, previous: str | None = None) -> None:
    """Mark `version` as served (after a reload, the previous version as no longer served)."""
    if previous is not None and previous != version:
        MODEL_LOADED.labels(previous).set(0)
    MODEL_LOADED.labels(version or "none").set(1)


def exposition() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
