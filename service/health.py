"""Liveness, readiness and Prometheus metrics: unauthenticated, for the platform rather than for clients
(readiness shows its details to the admin role only)."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, Response, current_app

from service import auth, metrics
from service.monitoring import snapshot_staleness
from store import StoreUnavailable

blp = Blueprint("health", __name__)


@blp.get("/healthz")
def healthz():
    """The process is alive and serving HTTP."""
    return {"status": "ok"}


@blp.get("/readyz")
def readyz():
    """Ready = a verified model is loaded and the store answers. A store that does not answer, while this
    process has a working spool, is "degraded" (200); without a model, or with the store down and no spool to
    keep writes, 503 ("not ready"). Either way the answer names what is degraded.

    Without a key (a load balancer) the answer is the status and one word per degraded check, e.g.
    `{"status": "degraded", "degraded": ["features"]}`: the details name the database, model versions,
    artifact paths and error texts, which are for the operator. An admin key (`Authorization: Bearer`) gets
    them; any other key, or a wrong one, gets the short form with the same status code, never a 401 (a probe
    with a stale key must not take a healthy replica out), and costs no store query per request
    (auth.optional_role).

    A degraded process still answers decisions (rules instead of the model, or without history when the
    store is down); readiness tells a deploy or load balancer that it should not be preferred.

    Features (no snapshot loaded, or one older than RETENTION_MAX_FEATURE_AGE_HOURS) are listed under
    `degraded` with the reason, but keep the 200: the snapshot is shared by every process, so a 503 for it
    would take every replica out of the load balancer at once and block the billing frontend, which the
    service must never do. It tells the operator; decisions go on with the old features. The store is shared
    the same way: while it is down (a partition, a failover) every replica still answers decisions without
    history and spools what it writes, so each says "degraded" and stays in. Only a process that could not keep
    those writes (no spool, or an unreadable one) leaves.
    """
    rt = current_app.extensions["retention"]
    checks: dict[str, dict] = {}
    degraded: list[str] = []
    if rt.policy.scorer is not None:
        checks["model"] = {"ok": True, "version": rt.model_version, "offers": offers_decided_by(rt.policy.scorer)}
        if rt.reload_error:
            checks["model"]["last_reload_refused"] = rt.reload_error
    else:
        checks["model"] = {"ok": False, "error": rt.model_error, "serving": "fallback rules"}
        degraded.append("model")
    try:
        snapshot = rt.store.latest_snapshot()  # reaching the store and its schema is part of reading this
        checks["store"] = {"ok": True}
        if snapshot is None:
            checks["features"] = {"ok": False, "error": "no feature snapshot loaded: every customer is scored "
                                  "as new (run `retention load-features`)"}
            degraded.append("features")
        else:
            max_age = rt.monitor.settings.max_feature_age_hours
            age_h, stale = snapshot_staleness(snapshot, max_age, datetime.now(UTC))
            checks["features"] = {"ok": stale is None, "as_of": snapshot["as_of"].isoformat(),
                                  "age_hours": round(age_h, 1), "max_age_hours": max_age, "rows": snapshot["rows"]}
            if stale:
                checks["features"]["error"] = stale
                degraded.append("features")
    except StoreUnavailable as exc:
        checks["store"] = {"ok": False, "error": str(exc)}
        degraded.append("store")
    if rt.spool is not None:
        try:
            waiting = rt.spool.depth()
            checks["spool"] = {"ok": True, "waiting": waiting}
        except Exception as exc:  # noqa: BLE001 - readiness reports, it does not fail
            checks["spool"] = {"ok": False, "error": str(exc)}
            degraded.append("spool")
    keeps_writes = rt.spool is not None and "spool" not in degraded
    ready = "model" not in degraded and ("store" not in degraded or keeps_writes)
    status = "not ready" if not ready else "degraded" if degraded else "ready"
    if not auth.optional_role("admin"):
        return {"status": status, "degraded": degraded}, 200 if ready else 503
    body = {"status": status, "degraded": degraded, "checks": checks,
            "policy_version": rt.policy.config.version, "catalog_version": rt.catalog.version}
    return body, 200 if ready else 503


_READYZ_DOC = {
    "get": {
        "tags": ["health"],
        "summary": "Readiness: the status and what is degraded; the details for the admin role",
        "description": (
            "200 when a verified model is loaded and the store answers (\"ready\", or \"degraded\" naming a "
            "stale or missing feature snapshot or an unreadable spool), and 200 \"degraded\" naming `store` "
            "while the store does not answer but this process spools the decisions and outcomes it answers "
            "(every replica shares the store: a 503 would take them all out while they still answer). 503 "
            "(\"not ready\") without a verified model, or with the store down and no working spool. No key is needed: without one, or with any key but an admin's (a wrong "
            "key too, never a 401), the body is only `status` and `degraded`, one word per check. An admin key "
            "adds `checks` (model version and the last refused reload, store and spool errors, the feature "
            "snapshot's age), `policy_version` and `catalog_version`."),
        "security": [{}, {"bearer": []}],  # optional: the key only widens the answer
        "responses": {
            status: {"description": why, "content": {"application/json": {"schema": {
                "type": "object", "required": ["status", "degraded"],
                "properties": {
                    "status": {"type": "string", "enum": ["ready", "degraded", "not ready"]},
                    "degraded": {"type": "array", "items": {"type": "string",
                                                            "enum": ["model", "store", "features", "spool"]}},
                    "checks": {"type": "object", "description": "admin only"},
                    "policy_version": {"type": "string", "description": "admin only"},
                    "catalog_version": {"type": "string", "description": "admin only"},
                }}}}}
            for status, why in (("200", "Ready (perhaps degraded, the store too): keep it in the load balancer."),
                                ("503", "Not ready: no verified model, or the store is down and nothing "
                                        "spools the writes."))
        },
    }
}


def document(api, app) -> None:
    """Put /readyz in the OpenAPI document (a plain Flask view, so flask-smorest does not see it)."""
    rule = next(r for r in app.url_map.iter_rules() if r.endpoint == "health.readyz")
    api.spec.path(rule=rule, operations=_READYZ_DOC)


def offers_decided_by(scorer) -> str:
    """Who chooses offers with this model version, in words: the model, or the rules and why."""
    if scorer.offers is None:
        return f"rules: {scorer.offers_why}"
    if scorer.fixed_offer is not None:
        return (f"fixed offer {scorer.fixed_offer} wherever it is allowed, else the rules: the policy gate found it "
                "better than the rules and not worse than the model's choices on held-out flows "
                "(fixed_offer_better_than_rules)")
    if not scorer.serves_policy:
        return ("rules: the policy gate did not find the model's choices better than the rules' on held-out "
                "flows (model_not_better_than_rules)")
    return "model"


@blp.get("/metrics")
def prometheus():
    rt = current_app.extensions["retention"]
    rt.monitor.on_scrape(rt)  # the snapshot's age now; drift recomputed in the background when due
    data, content_type = metrics.exposition()
    return Response(data, content_type=content_type)
