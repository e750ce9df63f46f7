"""Prometheus metrics: request counts and latency by endpoint and status, decisions by offer and fallback,
fail-open events, the model version each process serves, the feature snapshot's age, open and overdue
follow-up tasks, and the drift of recent decisions from the served model's training data (service.monitoring).

Under gunicorn each worker is a process; with PROMETHEUS_MULTIPROC_DIR set (gunicorn.conf.py does), every
worker writes its samples there and /metrics aggregates them, so a scrape sees the whole server, not the
one worker that happened to answer it.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

if TYPE_CHECKING:
    from retention.drift import DriftReport

REQUESTS = Counter("retention_http_requests_total", "HTTP requests", ["endpoint", "method", "status"])
LATENCY = Histogram(
    "retention_http_request_duration_seconds", "HTTP request latency", ["endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5),
)
DECISIONS = Counter("retention_decisions_total", "Decisions answered", ["offer_id", "fallback"])
EXPLORED = Counter("retention_explored_decisions_total", "Decisions whose offer the exploration draw chose")
EXPLORATION_COST = Counter("retention_exploration_expected_cost_total",
                           "Expected incremental value given up by exploring, by the model's own estimates "
                           "(share x (the policy's choice - the mean eligible offer)), summed over decisions; a "
                           "decision where exploring was expected to gain adds 0")
SHADOW = Counter("retention_shadow_decisions_total", "Decisions the challenger also made in the shadow",
                 ["agrees"])
FAIL_OPEN = Counter("retention_fail_open_total", "Decisions answered despite a failure", ["cause"])
SPOOLED = Counter("retention_spooled_total", "Writes kept in the local spool during a store outage", ["kind"])
# One sample per live process (pid label): set by each process that serves requests (mark_served), never by
# the gunicorn master, which loads and verifies the model (preload) but answers nothing. Had the master set it,
# its 1 would stand for the workers, which fork with a fresh multiprocess file where the version reads 0.
MODEL_LOADED = Gauge("retention_model_loaded", "1 for the model version this process serves", ["version"],
                     multiprocess_mode="liveall")
_served: tuple[int, str] | None = None  # (pid, version) this process last marked as served

# Set by the process a scrape reaches; "livemostrecent": the newest value of any live worker is shown.
SNAPSHOT_AGE = Gauge("retention_feature_snapshot_age_seconds",
                     "Age of the loaded feature snapshot (now - its as_of); absent before the first load",
                     multiprocess_mode="livemostrecent")
FEATURE_PSI = Gauge("retention_feature_psi", "Population Stability Index of a model feature, recent decisions "
                    "against the served model's training rows (0.1 moderate, 0.25 major)", ["feature"],
                    multiprocess_mode="livemostrecent")
FEATURE_PSI_MAX = Gauge("retention_feature_psi_max", "The highest retention_feature_psi",
                        multiprocess_mode="livemostrecent")
OFFER_MIX_PSI = Gauge("retention_offer_mix_psi", "Population Stability Index of the offers of recent decisions "
                      "against the served policy's offer mix on held-out flows at training",
                      multiprocess_mode="livemostrecent")
DRIFT_DECISIONS = Gauge("retention_drift_decisions", "Recent decisions the drift gauges were computed on",
                        multiprocess_mode="livemostrecent")
# Follow-up tasks (service/followups_api.py on_scrape), counted in the store by the process a scrape reaches.
FOLLOWUPS_OPEN = Gauge("retention_followups_open", "Follow-up tasks open (not claimed yet)",
                       multiprocess_mode="livemostrecent")
FOLLOWUPS_CLAIMED = Gauge("retention_followups_claimed", "Follow-up tasks claimed by an agent, not closed",
                          multiprocess_mode="livemostrecent")
FOLLOWUPS_OVERDUE = Gauge("retention_followups_overdue", "Follow-up tasks open or claimed past their due time",
                          multiprocess_mode="livemostrecent")
_psi_features: set[str] = set()
for _gauge in (SNAPSHOT_AGE, FEATURE_PSI_MAX, OFFER_MIX_PSI, DRIFT_DECISIONS, FOLLOWUPS_OPEN, FOLLOWUPS_CLAIMED,
               FOLLOWUPS_OVERDUE):
    _gauge.set(math.nan)  # not measured yet, rather than a reassuring 0


def observe_request(endpoint: str, method: str, status: int, seconds: float) -> None:
    REQUESTS.labels(endpoint, method, str(status)).inc()
    LATENCY.labels(endpoint).observe(seconds)


def mark_served(version: str | None) -> None:
    """Mark `version` ("none": the rules) as the one this process serves, and the one it served before, if
    another, as 0. Cheap when nothing changed: it runs before every request (service.register_hooks) and in
    each gunicorn worker right after its fork (gunicorn.conf.py post_fork), so a worker reports before its
    first request and a process whose model was reloaded in place reports the new one."""
    global _served
    label, pid = version or "none", os.getpid()
    if _served == (pid, label):
        return
    if _served is not None and _served[0] == pid:
        MODEL_LOADED.labels(_served[1]).set(0)
    MODEL_LOADED.labels(label).set(1)
    _served = (pid, label)


def set_snapshot_age(seconds: float | None) -> None:
    SNAPSHOT_AGE.set(math.nan if seconds is None else seconds)


def set_drift(report: DriftReport) -> None:
    """The drift gauges from a report; features no longer measured (another model) are set to NaN."""
    measured = {f.name: f.psi for f in report.features}
    for name in _psi_features - measured.keys():
        FEATURE_PSI.labels(name).set(math.nan)
    for name, value in measured.items():
        FEATURE_PSI.labels(name).set(value)
    _psi_features.update(measured)
    FEATURE_PSI_MAX.set(math.nan if report.max_psi is None else report.max_psi)
    OFFER_MIX_PSI.set(report.offer_mix.psi if report.offer_mix else math.nan)
    DRIFT_DECISIONS.set(report.decisions)


def set_followups(counts: dict[str, int]) -> None:
    FOLLOWUPS_OPEN.set(counts["open"])
    FOLLOWUPS_CLAIMED.set(counts["claimed"])
    FOLLOWUPS_OVERDUE.set(counts["overdue"])


def exposition() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
