"""The admin API of outbound webhooks, on the /v1 blueprint: list, create and disable subscriptions, a
subscription's delivery log, replay of its dead-lettered or delivered events. The same store methods as
`retention webhooks ...` (cli/webhooks.py); delivering is the worker's (service/webhook_worker.py)."""

from __future__ import annotations

import re

from flask_smorest import abort
from flask_smorest.error_handler import ErrorSchema
from marshmallow import RAISE, ValidationError, fields, validate

from retention.webhooks import ALL, EVENT_TYPES
from service.api import AUTH, BODY, SECURED, blp, documented_errors, store_call
from service.auth import requires
from service.schemas import Strict, Text, Whole
from store import InvalidRecord, NotFound

_PG_INT = 2**31 - 1  # ids are 32-bit integers on PostgreSQL: a larger one names nothing (404, not a 500)
_SUBSCRIPTION = f"/webhooks/<int(max={_PG_INT}):subscription_id>"


# A receiver's URL as the document states it (and as retention.webhooks.check_url needs it: a host): the
# same class of characters in JSON Schema's and Python's regular expressions (printable ASCII; a URL
# percent-encodes the rest), matched as a whole string (Python's `$` would also take a final newline).
_URL = "^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[!-~]*)?$"
_URL_RE = re.compile(_URL)


def _receiver_url(value: str) -> None:
    if not _URL_RE.fullmatch(value):
        raise ValidationError("must be an http(s) URL with a host, in printable ASCII")


class WebhookCreateSchema(Strict):
    url = Text(required=True, validate=[validate.Length(min=1, max=2048), _receiver_url],
               metadata={"description": "The receiver's http(s) URL; events are POSTed to it.", "pattern": _URL})
    events = fields.List(fields.String(validate=validate.OneOf((*EVENT_TYPES, ALL))), required=True,
                         validate=validate.Length(min=1, max=len(EVENT_TYPES) + 1),
                         metadata={"description": f"Event types, or {ALL!r} for all."})
    description = Text(allow_none=True, validate=validate.Length(max=500))


class SubscriptionSchema(Strict):
    id = fields.Integer(required=True)
    url = fields.String(required=True)
    events = fields.List(fields.String(), required=True)
    description = fields.String(allow_none=True, required=True)
    created_at = fields.DateTime(required=True)
    disabled_at = fields.DateTime(allow_none=True, required=True)
    previous_secret_until = fields.DateTime(allow_none=True, required=True,
                                            metadata={"description": "After a rotation: until when the previous "
                                                      "secret signs too."})
    events_by_state = fields.Dict(keys=fields.String(), values=fields.Integer(),
                                  metadata={"description": "Queued events by state (pending, delivered, dead)."})


class CreatedSubscriptionSchema(SubscriptionSchema):
    secret = fields.String(required=True, metadata={"description": "The whsec_ signing secret, shown only now."})


class SubscriptionListSchema(Strict):
    subscriptions = fields.List(fields.Nested(SubscriptionSchema), required=True)


class DeliveriesQuerySchema(Strict):
    limit = fields.Integer(validate=validate.Range(min=1, max=1000), metadata={"description": "At most this many (50)."})


class DeliverySchema(Strict):
    id = fields.Integer(required=True)
    outbox_id = fields.Integer(required=True, metadata={"description": "The queued event (replay takes it)."})
    event_id = fields.String(required=True, metadata={"description": "Its webhook-id."})
    event_type = fields.String(required=True)
    subscription_id = fields.Integer(required=True)
    attempted_at = fields.DateTime(required=True)
    status_code = fields.Integer(allow_none=True, required=True, metadata={"description": "Null: no answer."})
    ms = fields.Float(required=True)
    ok = fields.Boolean(required=True)
    error = fields.String(allow_none=True, required=True)
    worker = fields.String(required=True)


class DeliveryListSchema(Strict):
    subscription_id = fields.Integer(required=True)
    deliveries = fields.List(fields.Nested(DeliverySchema), required=True)


class ReplayRequestSchema(Strict):
    event_ids = fields.List(Whole(validate=validate.Range(min=1, max=_PG_INT)),
                            validate=validate.Length(max=10_000),
                            metadata={"description": "Outbox ids of this subscription's events (default: all)."})
    state = fields.String(validate=validate.OneOf(("dead", "delivered")),
                          metadata={"description": "Only events in this state (default: dead)."})


class ReplayResultSchema(Strict):
    replayed = fields.Integer(required=True)


def _store():
    from flask import current_app

    return current_app.extensions["retention"].store


def _subscription_or_404(subscription_id: int) -> dict:
    try:
        return store_call(_store().subscription, subscription_id)
    except NotFound as exc:
        abort(404, message=str(exc))


@blp.route("/webhooks", methods=["GET"])
@requires("admin")
@blp.response(200, SubscriptionListSchema)
@documented_errors(*AUTH)
@blp.doc(security=SECURED)
def list_webhooks():
    """Every webhook subscription (never its secret), with its queued events by state (admin)."""
    return {"subscriptions": store_call(_store().subscriptions)}


@blp.route("/webhooks", methods=["POST"])
@requires("admin")
@blp.arguments(WebhookCreateSchema())
@blp.response(201, CreatedSubscriptionSchema, description="The subscription, with its secret (shown only now).")
@documented_errors(*AUTH, *BODY)
@blp.doc(security=SECURED)
def create_webhook(data):
    """Subscribe a receiver to event types (admin); the answer holds its whsec_ signing secret."""
    try:
        sub = store_call(_store().add_subscription, data["url"], data["events"], data.get("description"))
    except InvalidRecord as exc:
        abort(422, message=str(exc), errors={"json": {"url": [str(exc)]}})
    return sub, 201


@blp.route(_SUBSCRIPTION, methods=["DELETE"])
@requires("admin")
@blp.response(200, SubscriptionSchema, description="The subscription, disabled.")
@blp.alt_response(404, schema=ErrorSchema, description="No such subscription.")
@documented_errors(*AUTH)
@blp.doc(security=SECURED)
def delete_webhook(subscription_id: int):
    """Disable a subscription (idempotent): nothing more is queued or sent to it (admin)."""
    _subscription_or_404(subscription_id)
    return store_call(_store().disable_subscription, subscription_id)


@blp.route(f"{_SUBSCRIPTION}/deliveries", methods=["GET"])
@requires("admin")
@blp.arguments(DeliveriesQuerySchema(), location="query", unknown=RAISE)  # webargs: EXCLUDE for queries
@blp.response(200, DeliveryListSchema)
@blp.alt_response(404, schema=ErrorSchema, description="No such subscription.")
@documented_errors(*AUTH, 422)
@blp.doc(security=SECURED)
def webhook_deliveries(query, subscription_id: int):
    """A subscription's delivery attempts, newest first: status, time taken, error (admin)."""
    _subscription_or_404(subscription_id)
    rows = store_call(_store().delivery_attempts, subscription_id, None, query.get("limit", 50))
    return {"subscription_id": subscription_id, "deliveries": rows}


@blp.route(f"{_SUBSCRIPTION}/replay", methods=["POST"])
@requires("admin")
@blp.arguments(ReplayRequestSchema())
@blp.response(200, ReplayResultSchema)
@blp.alt_response(404, schema=ErrorSchema, description="No such subscription.")
@documented_errors(*AUTH, *BODY)
@blp.doc(security=SECURED)
def replay_webhooks(data, subscription_id: int):
    """Queue a subscription's dead-lettered (or delivered) events again, due now, with their ids (admin)."""
    _subscription_or_404(subscription_id)
    ids = data.get("event_ids") or ()
    state = data.get("state") or (None if ids else "dead")
    return {"replayed": store_call(_store().replay_events, ids, subscription_id, state)}
