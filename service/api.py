"""The /v1 endpoints. Each view parses (schemas), calls one use case or store method, and serialises."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict
from datetime import UTC, datetime

from flask import current_app, g
from flask.views import MethodView
from flask_smorest import Blueprint, abort
from flask_smorest.error_handler import ErrorSchema
from webargs.flaskparser import FlaskParser, is_json_request

from retention.experiments import UnknownExperiment
from retention.jsonvalues import jsonable
from retention.registry import RegistryError, read_registry
from service import usecases
from service.auth import requires
from service.health import offers_decided_by
from service.schemas import (
    CatalogSchema,
    DecisionListSchema,
    DecisionRequestSchema,
    DecisionSchema,
    EventBatchSchema,
    EventResultSchema,
    ExperimentResultSchema,
    ExperimentResultsQuerySchema,
    OutcomeRequestSchema,
    OutcomeSchema,
    PlanCatalogSchema,
)
from store import Conflict, IdempotencyConflict, NotFound, StoreUnavailable

SECURED = [{"bearer": []}]

_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", "required": True,
                                "schema": {"type": "integer", "minimum": 1}}}
_RATE_LIMITED = {**_RETRY_AFTER, **{name: {"description": description, "required": True, "schema": {"type": "integer"}}
                                    for name, description in (
                                        ("X-RateLimit-Limit", "Requests the window allows."),
                                        ("X-RateLimit-Remaining", "Requests left in the window (0)."),
                                        ("X-RateLimit-Reset", "Unix time at which the window resets."))}}
# Every error answer an operation can give, in the one error body (flask-smorest's Error schema).
_ERRORS = {
    401: ("No API key, an unknown or revoked one, or (for a signing client) a missing or wrong signature.", None),
    403: ("The key's role may not call this endpoint.", None),
    413: ("The body is over the limit: 32 KiB for a decision, RETENTION_MAX_BODY_BYTES (1 MiB) otherwise.",
          None),
    415: ("The body is not sent as Content-Type: application/json.", None),
    422: ("Invalid input: `errors` names each field (a path parameter with a NUL character, too).", None),
    429: ("The API client's rate limit is exceeded (RETENTION_RATE_LIMIT), or this address has failed to "
          "authenticate too often (RETENTION_AUTH_FAILURE_LIMIT).", _RATE_LIMITED),
    503: ("The store is unavailable (to check the key, or for this endpoint's data): retry shortly.",
           _RETRY_AFTER),
}
_AUTH = (401, 403, 429, 503)  # every /v1 endpoint: the key is checked (in the store), the rate limit applies
_BODY = (413, 415)  # every endpoint that reads a JSON body (its 422 comes with blp.arguments)


def _errors(*codes: int):
    """Documents the error answers `codes` of an operation, with the error body."""
    def decorator(view):
        for code in codes:
            description, headers = _ERRORS[code]
            view = blp.alt_response(code, schema=ErrorSchema, description=description, headers=headers)(view)
        return view
    return decorator


class _NotIJson(ValueError):
    """What Python's json module reads but the service refuses (I-JSON, RFC 7493, is stricter than Python)."""


def _unique_keys(pairs: list) -> dict:
    obj = dict(pairs)
    if len(obj) < len(pairs):  # Python keeps the last value silently: which one did the client mean?
        duplicate = next(k for k, n in Counter(k for k, _ in pairs).items() if n > 1)
        raise _NotIJson(f"duplicate key {duplicate!r}")
    return obj


def _not_a_number(name: str):
    raise _NotIJson(f"{name} is not a JSON number")


def _bounded_int(digits: str) -> int:
    try:
        return int(digits)
    except ValueError:  # Python refuses to convert more than 4300 digits (sys.get_int_max_str_digits)
        raise _NotIJson(f"an integer of {len(digits)} digits is out of range") from None


class _Parser(FlaskParser):
    """webargs' parser, but a body that is not JSON is bad input like any other: a 422 in the error schema
    (also NaN/Infinity, duplicate keys, over-long integers and nesting too deep for the parser), and a body
    sent as another media type is a 415. The decoded body is kept in `g.json_body` for the idempotency
    fingerprint, so it is decoded once."""

    def _raw_load_json(self, req):
        if not is_json_request(req):
            if req.get_data(cache=True):  # else it would be read as no body: 422, every field "missing"
                abort(415, message="the request body must be JSON, sent with Content-Type: application/json")
            g.json_body = super()._raw_load_json(req)  # no body: `missing`
            return g.json_body
        try:
            g.json_body = json.loads(req.get_data(cache=True).decode("utf-8"), object_pairs_hook=_unique_keys,
                                     parse_constant=_not_a_number, parse_int=_bounded_int)
        except RecursionError:
            self._handle_invalid_json_error("nested too deeply", req)
        except _NotIJson as exc:
            self._handle_invalid_json_error(exc, req)
        return g.json_body

    def _handle_invalid_json_error(self, error, req, *args, **kwargs):
        abort(422, message="the request body is not valid JSON",
              errors={"json": {"_schema": [f"Invalid JSON body: {error}"]}})


class _Blueprint(Blueprint):
    ARGUMENTS_PARSER = _Parser()


blp = _Blueprint("v1", __name__, url_prefix="/v1", description="Cancel-time decisions, outcomes and events")


def _runtime():
    return current_app.extensions["retention"]


def _store_call(fn, *args, **kwargs):
    """Run a store method for an endpoint that may wait (outcomes, events, history): an outage is a 503."""
    try:
        return fn(*args, **kwargs)
    except StoreUnavailable:
        abort(503, message="the store is unavailable; retry shortly", headers={"Retry-After": "5"})


# For the other /v1 blueprints (service/followups_api.py): the same I-JSON parser, error documentation,
# store-outage answer and clock (defined below).
V1Blueprint, document_errors, store_call = _Blueprint, _errors, _store_call


@blp.route("/decisions", methods=["POST"])
@requires("decide")
@blp.arguments(DecisionRequestSchema())  # an instance: given a class, webargs builds one per request
@blp.response(201, DecisionSchema, description="A new decision.")
@blp.alt_response(200, schema=DecisionSchema, description="The decision already made for this request_id.")
@blp.alt_response(409, schema=ErrorSchema, description="This request_id was used with a different body.")
@_errors(*_AUTH, *_BODY)
@blp.doc(security=SECURED)
def create_decision(request: usecases.DecisionRequest):
    """Choose the retention offer for a cancel request (idempotent on request_id)."""
    try:
        record, created = usecases.decide(_runtime(), request, g.json_body, g.client, now=_now())
    except IdempotencyConflict as exc:
        abort(409, message=str(exc))
    g.decision_id = record["decision_id"]
    return record, 201 if created else 200


@blp.route("/decisions/<string:decision_id>/outcome", methods=["POST"])
@requires("decide", "events")
@blp.arguments(OutcomeRequestSchema())
@blp.response(201, OutcomeSchema, description="The outcome was recorded.")
@blp.alt_response(200, schema=OutcomeSchema, description="The same outcome was already recorded.")
@blp.alt_response(202, schema=OutcomeSchema, description="The store is down: kept in the local spool, to be "
                  "recorded when it is back.")
@blp.alt_response(404, schema=ErrorSchema, description="No such decision.")
@blp.alt_response(409, schema=ErrorSchema, description="Conflicts with an earlier outcome (accepted vs declined).")
@_errors(*_AUTH, *_BODY)
@blp.doc(security=SECURED)
def record_outcome(data, decision_id):
    """Record what the customer did with the offer: accepted, declined or cancelled (idempotent)."""
    try:
        return _store_call(usecases.record_outcome, _runtime(), decision_id, data["outcome"],
                           data.get("occurred_at") or _now())
    except NotFound:
        abort(404, message=f"no decision {decision_id!r}")
    except Conflict as exc:
        abort(409, message=str(exc))


@blp.route("/events", methods=["POST"])
@requires("events")
@blp.arguments(EventBatchSchema())
@blp.response(200, EventResultSchema)
@_errors(*_AUTH, *_BODY)
@blp.doc(security=SECURED)
def record_events(data):
    """Bulk events from billing and surveys (NPS answers, usage, payments, still-active checks, cancels,
    customer records). Idempotent per event_id; an event_id re-sent with a different body is listed in
    `conflicts` and not applied. All events of a call are stored, or none."""
    result = _store_call(_runtime().store.record_events, usecases.to_store_events(data["events"]))
    return {"conflicts": [], **result}


@blp.route("/customers/<path:customer_id>/decisions")
@requires("decide", "events")
@blp.response(200, DecisionListSchema)
@_errors(*_AUTH, 422)
@blp.doc(security=SECURED)
def customer_decisions(customer_id):
    """A customer's decisions, newest first, each with its outcomes."""
    rows = _store_call(_runtime().store.customer_decisions, customer_id)
    return {"customer_id": customer_id, "decisions": [{**r, "recorded": True} for r in rows]}


@blp.route("/offers")
class Offers(MethodView):
    @requires("decide", "events")
    @blp.response(200, CatalogSchema)
    @_errors(*_AUTH)
    @blp.doc(security=SECURED)
    def get(self):
        """The active offer catalog (switched-off offers are listed with enabled = false)."""
        catalog = _runtime().catalog
        return {"version": catalog.version, "offers": [asdict(o) for o in catalog.offers]}


@blp.route("/plans")
class Plans(MethodView):
    @requires("decide")
    @blp.response(200, PlanCatalogSchema)
    @_errors(*_AUTH)
    @blp.doc(security=SECURED)
    def get(self):
        """The plan catalog (config/plans.toml): the plan_id, billing_period, currency and price a decision
        request may send, and the plan a downgrade moves each to."""
        plans = _runtime().catalog.plans
        return {"version": plans.version, "price_tolerance": plans.price_tolerance,
                "plans": [{**asdict(p), "monthly_price": round(p.monthly_price, 4),
                           "accepted_prices": [round(x, 2) for x in plans.price_band(p)]} for p in plans.plans]}


@blp.route("/model")
class Model(MethodView):
    @requires("admin")
    @blp.doc(security=SECURED)
    @blp.response(200)
    @_errors(*_AUTH)
    def get(self):
        """The model version this process serves, its data window and held-out metrics (admin)."""
        rt = _runtime()
        meta = rt.model_meta
        models = meta.get("models") or {}
        offer = models.get("offer_response") or {}
        return {
            "model_version": rt.model_version,
            "model_ref": rt.model_ref,  # what this service is configured to serve: "champion" by default
            "registry": _registry_view(rt),
            "challenger": {"version": rt.challenger_version, "error": rt.challenger_error},
            "error": rt.model_error,
            "last_reload_refused": rt.reload_error,
            "policy_version": rt.policy.config.version,
            "catalog_version": rt.catalog.version,
            "data_window": meta.get("data_window"),
            "created_at": meta.get("created_at"),
            "offers": offers_decided_by(rt.policy.scorer) if rt.policy.scorer else "rules: no verified model",
            "models": {name: {k: m.get(k) for k in ("trained", "why", "learner", "calibration") if k in m}
                       for name, m in models.items()},
            "gate": {k: (offer.get("gate") or {}).get(k) for k in ("verdict", "fixed_offer", "why", "differences", "best_fixed",
                                                                 "offers_allowed")}
            if offer.get("trained") else None,
            "metrics": {k: v.get("model") for k, v in meta.get("metrics", {}).items()},
        }


def _now() -> datetime:
    """The time of a decision. `CLOCK` (a function returning an aware datetime) is an app setting for tests
    that replay weeks of traffic in seconds (tests/service/test_data_team_loop.py); no environment variable
    sets it, so a deployed service always decides at the wall-clock time."""
    clock = current_app.config.get("CLOCK")
    return clock() if clock else datetime.now(UTC)


request_time = _now


def _registry_view(rt) -> dict:
    """The registry's aliases now, and whether this process serves what the champion names (False right after
    a promotion, until the reload it triggers has run)."""
    try:
        aliases = read_registry(rt.models_dir).aliases
    except RegistryError as exc:
        return {"error": str(exc)}
    return {"aliases": aliases, "serving_champion": aliases.get("champion") == rt.model_version
            if rt.model_version else False}


@blp.route("/experiments")
class Experiments(MethodView):
    @requires("admin")
    @blp.doc(security=SECURED)
    @blp.response(200)
    @_errors(*_AUTH)
    def get(self):
        """Every configured experiment (config/experiments.toml), with whether it is running now (admin)."""
        book = _runtime().policy.experiments
        now = datetime.now(UTC)
        return {"version": book.version,
                "experiments": [usecases.experiment_summary(e, now) for e in book.experiments]}


@blp.route("/experiments/<string:name>/results")
class ExperimentResults(MethodView):
    @requires("admin")
    @blp.arguments(ExperimentResultsQuerySchema(), location="query")
    @blp.doc(security=SECURED)
    @blp.response(200, ExperimentResultSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="No experiment of that name.")
    @_errors(*_AUTH)
    def get(self, query, name):
        """Per-arm results with 95% and always-valid intervals, the sample-ratio check, sample size (admin).

        The same analysis as `retention experiment report`; see retention/experiment_analysis.py."""
        try:
            return _store_call(usecases.experiment_results, _runtime(), name, query.get("as_of"),
                               query.get("mde"))
        except UnknownExperiment as exc:
            abort(404, message=str(exc))


@blp.route("/customers/<path:customer_id>/data")
class CustomerData(MethodView):
    """A customer's stored data (ids may contain '/': the `path` converter, with a fixed suffix so that no
    other route is swallowed)."""

    @requires("admin")
    @blp.doc(security=SECURED)
    @blp.response(200)
    @_errors(*_AUTH, 422)
    def get(self, customer_id):
        """Everything stored about a customer: decisions with outcomes and free text, events, features, the
        loaded data set's customer row (admin; for a data-subject access request)."""
        return jsonable(_store_call(_runtime().store.customer_data, customer_id))

    @requires("admin")
    @blp.doc(security=SECURED)
    @blp.response(200)
    @_errors(*_AUTH, 422)
    def delete(self, customer_id):
        """Erase a customer: decisions, outcomes, events, features and customer row, in one transaction,
        and their decisions and outcomes still waiting in this host's spool (`spooled_decisions`,
        `spooled_outcomes`: deleted, never stored); counts what went (admin; for a data-subject erasure
        request). Idempotent: a second call deletes nothing."""
        return _store_call(usecases.erase_customer, _runtime(), customer_id)


# For the views other modules add to this blueprint (service/webhooks_api.py).
documented_errors, store_call, AUTH, BODY = _errors, _store_call, _AUTH, _BODY
