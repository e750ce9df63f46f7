"""Outbound webhooks, the parts that are plain logic: the event types, each type's payload (what a receiver
may see: never an API key, a signing secret or the customer's free text), subscription filters, the retry
schedule and the secret format. The store writes the outbox (store/outbox.py); the worker signs and sends
(service/webhook_worker.py)."""

from __future__ import annotations

import base64
import hashlib
import random
import secrets
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from retention.jsonvalues import jsonable

DECISION_CREATED = "decision.created"
OUTCOME_RECORDED = "outcome.recorded"
SRM_ALARM = "experiment.srm_alarm"
# Emitted by the follow-up tasks (issue 16, item 1); declared here so subscriptions can name them now.
FOLLOWUP_CREATED = "followup.created"
FOLLOWUP_OVERDUE = "followup.overdue"
FOLLOWUP_CLOSED = "followup.closed"
EVENT_TYPES: tuple[str, ...] = (DECISION_CREATED, OUTCOME_RECORDED, SRM_ALARM, FOLLOWUP_CREATED, FOLLOWUP_OVERDUE,
                                FOLLOWUP_CLOSED)
ALL = "*"
SECRET_PREFIX = "whsec_"

# What a decision.created payload carries of the stored decision. Not the request's reason_text (the
# customer's own words), the features or the scores (large, and the model's internals), nor anything of the
# API client's key.
_DECISION_FIELDS = ("decision_id", "request_id", "client", "customer_id", "created_at", "reason", "offer_id",
                    "offer", "p_stay", "expected_incremental_value", "reason_codes", "nps_segment",
                    "close_the_loop_by", "model_version", "policy_version", "catalog_version", "fallback",
                    "experiment_name", "experiment_variant")


class WebhookError(ValueError):
    """A subscription that cannot be (an unknown event type, a URL that is not http(s))."""


def new_event_id() -> str:
    """A fresh event id: the payload's `id` and the `webhook-id` header, the same on every retry."""
    return f"evt_{uuid.uuid4().hex}"


def new_secret() -> str:
    """A signing secret in the Standard Webhooks format: whsec_ + base64 of 32 random bytes (its libraries
    decode it)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def event_filter(events: Iterable[str]) -> list[str]:
    """A subscription's event filter, checked: event types of EVENT_TYPES, or ["*"] for every type."""
    chosen = sorted({e.strip() for e in events if e.strip()})
    if not chosen:
        raise WebhookError(f"name at least one event type ({', '.join(EVENT_TYPES)}) or {ALL!r} for all")
    unknown = [e for e in chosen if e not in EVENT_TYPES and e != ALL]
    if unknown:
        raise WebhookError(f"unknown event type(s) {', '.join(unknown)}: use {', '.join(EVENT_TYPES)} or {ALL!r}")
    return [ALL] if ALL in chosen else chosen


def check_url(url: str) -> str:
    """A receiver's URL: http or https with a host."""
    from urllib.parse import urlsplit

    parts = urlsplit(url or "")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookError(f"url {url!r} is not an http(s) URL with a host")
    return url


def matches(events: Iterable[str], event_type: str) -> bool:
    return any(e in (ALL, event_type) for e in events)


def envelope(event_id: str, event_type: str, created_at: datetime, data: Mapping[str, Any]) -> dict:
    """The body every receiver gets: {"type", "id", "created_at", "data"} as plain JSON."""
    return jsonable({"type": event_type, "id": event_id, "created_at": created_at, "data": dict(data)})


def decision_created(record: Mapping[str, Any]) -> dict:
    """decision.created's data from a stored decision record."""
    data = {k: record.get(k) for k in _DECISION_FIELDS}
    return jsonable(data)


def outcome_recorded(decision_id: str, customer_id: str, offer_id: str, kind: str, occurred_at: datetime,
                     recorded_at: datetime) -> dict:
    return jsonable({"decision_id": decision_id, "customer_id": customer_id, "offer_id": offer_id, "kind": kind,
                     "occurred_at": occurred_at, "recorded_at": recorded_at})


# What a followup.* payload carries of a task: not the agent's free-text close reason (it may quote the
# customer), nor the internal active_customer key.
_FOLLOWUP_FIELDS = ("task_id", "customer_id", "status", "source", "segment", "holdout", "sample_rate",
                    "triggered_at", "due_at", "score", "previous_score", "trend", "decision_id", "reason",
                    "churn_risk", "claimed_by", "claimed_at", "closed_at", "outcome")


def followup_event(kind: str, task: Mapping[str, Any]) -> tuple[str, dict]:
    """(event id, data) of followup.created / .overdue / .closed for a task. The id is the task's and the
    kind's: a task is announced created, overdue and closed once each, however often the store or the
    worker looks (a task is closed once; a customer's next task has another id)."""
    key = f"{kind}\n{task['task_id']}".encode()
    return "evt_fu_" + hashlib.sha256(key).hexdigest()[:32], jsonable({k: task.get(k) for k in _FOLLOWUP_FIELDS})


def srm_alarms(result) -> list[tuple[str, dict]]:
    """(event id, data) of each sample-ratio alarm of an experiment result (retention.experiment_analysis).
    The id is derived from the experiment, its definition and the stage, so analysing the same experiment
    again (every report, every GET of its results) announces an alarm once, not once per look."""
    out = []
    for stage, check in result.srm.stages():
        if not check.alarm:
            continue
        key = f"{result.experiment}\n{result.definition}\n{stage}".encode()
        event_id = "evt_srm_" + hashlib.sha256(key).hexdigest()[:32]
        out.append((event_id, jsonable({
            "experiment": result.experiment, "definition": result.definition, "as_of": result.as_of,
            "stage": stage, "observed": check.observed, "expected": check.expected,
            "chi2": check.chi2, "p_value": check.p_value})))  # an infinite chi2 is null
    return out


def retry_delay(failures: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds before the next attempt after `failures` failed ones (1, 2, ...): exponential, base * 2^(n-1),
    capped, with "equal jitter" (a uniform draw in the upper half of the step). Equal rather than full
    jitter: receivers coming back after an outage are still spread out, and each wait is at least as long as
    the one before (a full-jitter draw can be shorter), so a failing receiver is never retried faster."""
    step = min(cap, base * 2 ** (max(1, failures) - 1))
    return step / 2 + (rng or random).uniform(0, step / 2)
