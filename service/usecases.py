"""The service's use cases: decide-and-record, record an outcome, record events, read an experiment's
results. Each is called by exactly one view and is testable without HTTP. They join the store (what we know,
what we did) to the domain policy; the experiment results are the core's use case
(retention.experiment_analysis.experiment_results), shared with the CLI, fed from this process's runtime.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from retention.decision import CancelRequest, Decision, NpsAnswer, PastOffer, Snapshot
from retention.experiments import Experiment
from retention.features import FEATURE_VERSION, LOOKBACK_DAYS
from service import metrics
from service.runtime import Runtime
from store import IdempotencyConflict, NotFound, StoreUnavailable, body_hash

if TYPE_CHECKING:  # at run time only inside experiment_results (scipy)
    from retention.experiment_analysis import ExperimentResult

log = logging.getLogger("retention.service")
HISTORY_DAYS = 400  # guardrails look back at most 365 days (+ a running offer's months)
OFFER_FIELDS = ("id", "type", "display_key", "months", "percent", "to_plan", "to_price", "credits")


@dataclass(frozen=True)
class DecisionRequest:
    """A validated `POST /v1/decisions` body (service.schemas.DecisionRequestSchema builds it)."""

    request_id: str  # the caller's idempotency key
    cancel: CancelRequest  # what the policy decides from
    fields: dict  # the validated fields, stored with the decision (`request_id` and `reason_text` apart)
    reason_text: str | None = None  # the customer's own words: stored, never logged


def decide(runtime: Runtime, request: DecisionRequest, body: dict, client: str,
           now: datetime | None = None) -> tuple[dict, bool]:
    """Answer one cancel request and record it. Returns (decision record, created).

    `body` is the request body as decoded JSON: its hash is the idempotency fingerprint, so a retry must send
    the same body. The same request_id with another body raises store.IdempotencyConflict.

    Idempotency keys are scoped per client (the API client's name), as Stripe scopes them per account: the key
    is (client, request_id). Another client sending a request_id already used gets a decision of its own,
    never the first client's (which would hand one integration another's customer data), and cannot block
    the first client's key either; a global key answering 409 would do the latter and tell it that the id
    exists. Lookups in the store and in the spool both go by the pair.

    The store going down never stops an answer: the policy then decides without history (offers that a
    history guardrail could forbid are left out) and the answer says `recorded: false`.
    """
    started = time.perf_counter()
    now = now or datetime.now(UTC)
    cancel = request.cancel
    digest = body_hash(body)
    store = runtime.store
    snapshot, history, nps, store_ok = None, None, [], True
    context_codes: list[str] = []
    try:
        known = store.decision_context(client, request.request_id, cancel.customer_id,
                                       history_since=now - timedelta(days=HISTORY_DAYS),
                                       nps_lookback=timedelta(days=LOOKBACK_DAYS))
        if known["existing"] is not None:
            return _replay(known["existing"], digest)
        spooled = _spooled_decision(runtime, client, request.request_id)
        if spooled is not None:  # answered during an outage and not replayed yet: store it now, answer it
            stored, _ = store.record_decision(spooled)
            return _replay(stored, digest)
        snapshot, incompatible = _snapshot(known["features"])
        if incompatible:
            context_codes.append("snapshot_incompatible")
        history = [_past_offer(h) for h in known["history"]]
        nps = [NpsAnswer(int(e["payload"]["score"]), e["occurred_at"]) for e in known["nps"]]
    except StoreUnavailable:
        store_ok = False
        history = None
        context_codes.append("store_unavailable")
        metrics.FAIL_OPEN.labels("store").inc()
        spooled = _spooled_decision(runtime, client, request.request_id, outage=True)
        if spooled is not None:  # a retry during the outage gets the decision it was given
            return {**_replay(spooled, digest)[0], "recorded": False}, False

    decision = runtime.policy.decide(cancel, snapshot, now, history, nps)
    if decision.fallback and runtime.policy.scorer is not None:
        cause = next((c for c in decision.reason_codes if c in ("scoring_timeout", "scoring_error")), "rules")
        metrics.FAIL_OPEN.labels(cause).inc()
        log.warning("scoring_fell_back", extra={"fields": {"cause": cause}})
    record = _record(request, decision, digest, client, now, context_codes, started)
    created = True
    if store_ok:
        try:
            record, created = store.record_decision(record)
        except StoreUnavailable:
            metrics.FAIL_OPEN.labels("store").inc()
            record = {**record, "reason_codes": record["reason_codes"] + ["store_unavailable"]}
            store_ok = False
    if not store_ok:
        record = _spool_decision(runtime, record)
    if created:
        metrics.DECISIONS.labels(record["offer_id"], str(record["fallback"]).lower()).inc()
        _count_exploration(decision)
    return {**record, "recorded": store_ok}, created


def _count_exploration(d: Decision) -> None:
    """What exploring costs and what the shadow says, on /metrics (the per-decision figures are stored)."""
    if d.exploration is not None:
        if d.exploration.explored:
            metrics.EXPLORED.inc()
        if d.exploration.expected_cost is not None:
            metrics.EXPLORATION_COST.inc(max(d.exploration.expected_cost, 0.0))
    if d.shadow is not None:
        metrics.SHADOW.labels(str(d.shadow.agrees).lower()).inc()


def _spooled_decision(runtime: Runtime, client: str, request_id: str, outage: bool = False) -> dict | None:
    """The decision this host's spool holds for the request, if any. With the store up the spool is read only
    when something may wait in it (Spool.pending, which looks at other workers' writes at most every few
    seconds: the common path stays cheap). During an outage it is always read: a retry that reached another
    worker than the first attempt got a new decision when that worker had last seen the spool empty."""
    if runtime.spool is None or not (outage or runtime.spool.pending()):
        return None
    return runtime.spool.decision(client, request_id)


def _spool_decision(runtime: Runtime, record: dict) -> dict:
    """Keep a decision the store could not take on local disk, to be replayed; the answer says so. If even
    the spool fails (a full disk), the customer still gets the answer."""
    if runtime.spool is None:
        return record
    try:
        runtime.spool.put_decision(record)
    except Exception:  # noqa: BLE001 - never block the cancel flow on the spool
        log.exception("spool_write_failed")
        return record
    metrics.SPOOLED.labels("decision").inc()
    return {**record, "reason_codes": record["reason_codes"] + ["spooled"]}


def record_outcome(runtime: Runtime, decision_id: str, kind: str, occurred_at: datetime) -> tuple[dict, int]:
    """Record an outcome: (outcome, 201 new / 200 repeat / 202 spooled). While the store is down, or while
    the decision itself still waits in the spool, the outcome is spooled behind it."""
    try:
        outcome, created = runtime.store.record_outcome(decision_id, kind, occurred_at)
        return outcome, 201 if created else 200
    except NotFound:
        if runtime.spool is None or not runtime.spool.holds_decision(decision_id):
            raise
    except StoreUnavailable:
        if runtime.spool is None:
            raise
    runtime.spool.put_outcome(decision_id, kind, occurred_at)
    metrics.SPOOLED.labels("outcome").inc()
    return {"decision_id": decision_id, "kind": kind, "occurred_at": occurred_at, "recorded_at": None}, 202


def erase_customer(runtime: Runtime, customer_id: str) -> dict:
    """A data-subject erasure: the customer's rows still waiting in this host's spool first (a decision
    spooled during an outage and not replayed yet is deleted and never stored), then everything in the
    store. In that order, a row the replayer moves meanwhile is already in the store when the store's
    erasure runs. With the store down the spool part is done and StoreUnavailable raised: retry."""
    spooled = runtime.spool.erase_customer(customer_id) if runtime.spool is not None else {
        "decisions": 0, "outcomes": 0}
    gone = runtime.store.delete_customer(customer_id)
    return {**gone, "spooled_decisions": spooled["decisions"], "spooled_outcomes": spooled["outcomes"]}


def _replay(existing: dict, digest: str) -> tuple[dict, bool]:
    if existing["body_hash"] != digest:
        raise IdempotencyConflict(f"request_id {existing['request_id']!r} was already used with a different body")
    return {**existing, "recorded": True}, False


def _snapshot(row: dict | None) -> tuple[Snapshot | None, bool]:
    if row is None:
        return None, False
    if row["feature_version"] != FEATURE_VERSION:
        return None, True  # features computed by other definitions would be misread by this model
    return Snapshot(values=row["values"], as_of=row["as_of"]), False


def _past_offer(row: dict) -> PastOffer:
    return PastOffer(offer_id=row["offer_id"], offer_type=row["offer_type"] or "none", at=row["created_at"],
                     accepted=bool(row["accepted"]), months=row["months"])


def _record(request: DecisionRequest, d: Decision, digest: str, client: str, now: datetime,
            context_codes: list[str], started: float) -> dict:
    # Plain JSON for the JSON columns (NaN as null, times as ISO text) is the store's job.
    offer = {k: getattr(d.offer, k) for k in OFFER_FIELDS}
    return {
        "decision_id": uuid.uuid4().hex,
        "request_id": request.request_id,
        "body_hash": digest,
        "client": client,
        "customer_id": request.cancel.customer_id,
        "created_at": now,
        "reason": request.cancel.reason,
        "reason_text": request.reason_text,
        "request": request.fields,
        "features": d.features,
        "scores": {"offers": list(d.scores), "excluded": d.excluded,
                   "exploration": d.exploration.as_dict() if d.exploration else None,
                   "shadow": d.shadow.as_dict() if d.shadow else None},
        "offer_id": d.offer.id,
        "offer": offer,
        "propensity": d.propensity,
        "p_stay": d.p_stay,
        "expected_incremental_value": d.expected_incremental_value,
        "reason_codes": context_codes + list(d.reason_codes),
        "nps_segment": d.nps_segment,
        "close_the_loop_by": d.close_the_loop_by,
        "model_version": d.model_version,
        "policy_version": d.policy_version,
        "catalog_version": d.catalog_version,
        "fallback": d.fallback,
        "experiment": d.experiment.as_dict() if d.experiment else None,
        "experiment_name": d.experiment.experiment if d.experiment else None,
        "experiment_variant": d.experiment.variant if d.experiment else None,
        "latency_ms": (time.perf_counter() - started) * 1000.0,
    }


def experiment_summary(e: Experiment, now: datetime) -> dict:
    return {"name": e.name, "description": e.description, "running": e.running(now), "start": e.start,
            "stop": e.stop, "slice": list(e.slice), "holdout": e.holdout, "control": e.control,
            "variants": [asdict(v) for v in e.variants], "population": asdict(e.population),
            "primary_metric": e.primary_metric, "guardrail_metrics": list(e.guardrail_metrics),
            "definition": e.definition_hash()}


def experiment_results(runtime: Runtime, name: str, as_of: datetime | None = None,
                       mde: float | None = None) -> ExperimentResult:
    """The analysis of one experiment as of `as_of` (default now), with this process's experiments file and
    catalog; the view's schema (service.schemas.ExperimentResultSchema) writes it as JSON, NaN as null.
    Raises retention.experiments.UnknownExperiment."""
    # Imported here: the statistics need scipy, which the decision path does not load (worker memory).
    from retention.experiment_analysis import experiment_results as analyse_experiment

    result = analyse_experiment(runtime.policy.experiments, runtime.catalog, runtime.store.experiment_records, name,
                                as_of or datetime.now(UTC), **({"mde": mde} if mde else {}))
    try:  # experiment.srm_alarm webhooks, once per definition and stage (the next analysis retries a failure)
        runtime.store.publish_srm_alarms(result)
    except StoreUnavailable:
        log.warning("srm_alarm_not_queued", extra={"fields": {"experiment": name}})
    return result


EVENT_BASE = ("event_id", "type", "customer_id", "occurred_at", "decision_id")


def to_store_events(events: list[dict]) -> list[dict]:
    """Validated events -> store rows: the common columns, and the type's own fields as a JSON payload."""
    rows = []
    for e in events:
        payload = {k: v for k, v in e.items() if k not in EVENT_BASE}  # the store makes it plain JSON
        rows.append({
            "event_id": e["event_id"],
            "type": e["type"],
            "customer_id": e["customer_id"],
            "decision_id": e.get("decision_id"),
            "occurred_at": e["occurred_at"],
            "payload": payload,
        })
    return rows
