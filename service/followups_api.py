"""/v1/followups: the follow-up tasks ("close the loop", retention.followups) for the team that works them
(role `followups`, or admin): the list by status, due time and churn risk, one task, claim and close, each
idempotent. Tasks are made by the store with the facts (NPS events, decisions); nothing here creates one.
"""

from __future__ import annotations

from datetime import UTC

import marshmallow as ma
from flask import current_app
from flask_smorest.error_handler import ErrorSchema
from marshmallow import fields, validate

from retention.followups import OUTCOMES, STATUSES
from service.api import SECURED, V1Blueprint, document_errors, request_time, store_call
from service.auth import requires
from service.schemas import ID, AwareDateTime, Strict, Text
from store import Conflict, NotFound

blp = V1Blueprint("followups", __name__, url_prefix="/v1/followups",
                 description="Follow-up tasks: contact detractors (and a sample of the others) within the window")
MAX_LIST = 1000


def _representable(value) -> None:
    """A time that has a UTC equivalent: 9999-12-31T23:59-01:00 has none (it is past year 9999)."""
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise ma.ValidationError("is out of range once converted to UTC") from None


class FollowupQuerySchema(Strict):
    status = fields.String(load_default="open", validate=validate.OneOf(STATUSES),
                           metadata={"description": "Tasks of this status (default open)."})
    due_before = AwareDateTime(validate=_representable, metadata={"description": "Only tasks due before this time."})
    min_risk = fields.Float(validate=validate.Range(min=0.0, max=1.0), metadata={
        "description": "Only tasks whose churn risk (1 - p_stay of the customer's latest decision) is at least "
                       "this; tasks without a decision are left out."})
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=MAX_LIST))


class ClaimSchema(Strict):
    agent = Text(required=True, validate=ID, metadata={"description": "Who works the task."})


class CloseSchema(Strict):
    outcome = fields.String(required=True, validate=validate.OneOf(OUTCOMES))
    reason = Text(validate=validate.Length(max=2000), allow_none=True,
                  metadata={"description": "What was found or done; stored, never logged."})


def _time(description: str, nullable: bool = True) -> fields.DateTime:
    return fields.DateTime(required=True, allow_none=nullable, metadata={"description": description})


def _maybe(field_type, description: str, **kwargs):
    return field_type(required=True, allow_none=True, metadata={"description": description}, **kwargs)


class FollowupSchema(Strict):
    task_id = fields.String(required=True)
    customer_id = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(STATUSES))
    holdout = fields.Boolean(required=True, metadata={
        "description": "Drawn into the randomised no-contact group (status holdout: not worked)."})
    segment = fields.String(required=True, metadata={"description": "The NPS segment that made the task."})
    sample_rate = fields.Float(required=True, metadata={
        "description": "The probability that its answer made a task (1 for detractors and follow-up decisions); "
                       "weight 1 / sample_rate."})
    source = fields.String(required=True, validate=validate.OneOf(("nps", "decision", "at_risk")))
    triggered_at = _time("The answer (or decision) that made it.", nullable=False)
    due_at = _time("Contact the customer before this time.", nullable=False)
    score = _maybe(fields.Integer, "The customer's latest NPS answer.")
    previous_score = _maybe(fields.Integer, "The answer before it.")
    trend = fields.String(required=True, validate=validate.OneOf(
        ("dropped", "rose", "unchanged", "first_answer", "no_answer")))
    answered_at = _time("The latest answer's time.")
    event_id = _maybe(fields.String, "The latest answer's event.")
    decision_id = _maybe(fields.String, "The customer's latest decision while the task was active.")
    reason = _maybe(fields.String, "That decision's cancel reason.")
    churn_risk = _maybe(fields.Float, "1 - that decision's p_stay.")
    created_at = _time("", nullable=False)
    updated_at = _time("", nullable=False)
    claimed_by = _maybe(fields.String, "The agent who claimed it.")
    claimed_at = _time("When it was claimed.")
    closed_at = _time("When it was closed.")
    outcome = _maybe(fields.String, "How it was closed.", validate=validate.OneOf(OUTCOMES))
    close_reason = _maybe(fields.String, "The reason given at the close.")


class FollowupListSchema(Strict):
    followups = fields.List(fields.Nested(FollowupSchema), required=True,
                            metadata={"description": "Soonest due first."})


def _store():
    return current_app.extensions["retention"].store


@blp.route("", methods=["GET"])
@requires("followups")
# webargs excludes unknown query parameters by default; the document says they are refused, so they are.
@blp.arguments(FollowupQuerySchema(), location="query", unknown=ma.RAISE)
@blp.response(200, FollowupListSchema)
@document_errors(401, 403, 429, 503)
@blp.doc(security=SECURED)
def list_followups(query):
    """Follow-up tasks of one status, soonest due first (role followups)."""
    return {"followups": store_call(_store().list_followups, **query)}


@blp.route("/<string:task_id>", methods=["GET"])
@requires("followups")
@blp.response(200, FollowupSchema)
@blp.alt_response(404, schema=ErrorSchema, description="No such task.")
@document_errors(401, 403, 422, 429, 503)
@blp.doc(security=SECURED)
def get_followup(task_id):
    """One follow-up task (role followups)."""
    task = store_call(_store().get_followup, task_id)
    if task is None:
        _missing(task_id)
    return task


def _missing(task_id: str):
    from flask_smorest import abort

    abort(404, message=f"no follow-up task {task_id!r}")


def _change(fn, task_id: str, *args):
    from flask_smorest import abort

    try:
        task, _changed = store_call(fn, task_id, *args, now=request_time())
    except NotFound:
        _missing(task_id)
    except Conflict as exc:
        abort(409, message=str(exc))
    return task


@blp.route("/<string:task_id>/claim", methods=["POST"])
@requires("followups")
@blp.arguments(ClaimSchema())
@blp.response(200, FollowupSchema, description="Claimed by this agent (now, or already).")
@blp.alt_response(404, schema=ErrorSchema, description="No such task.")
@blp.alt_response(409, schema=ErrorSchema, description="Claimed by another agent, closed, or in the holdout.")
@document_errors(401, 403, 413, 415, 429, 503)
@blp.doc(security=SECURED)
def claim(data, task_id):
    """An agent takes an open task (idempotent: the same agent again gets it back)."""
    return _change(_store().claim_followup, task_id, data["agent"])


@blp.route("/<string:task_id>/close", methods=["POST"])
@requires("followups")
@blp.arguments(CloseSchema())
@blp.response(200, FollowupSchema, description="Closed with this outcome and reason (now, or already).")
@blp.alt_response(404, schema=ErrorSchema, description="No such task.")
@blp.alt_response(409, schema=ErrorSchema, description="Already closed with another outcome or reason, or in "
                  "the holdout.")
@document_errors(401, 403, 413, 415, 429, 503)
@blp.doc(security=SECURED)
def close(data, task_id):
    """Close an open or claimed task with its outcome (idempotent: the same body again gets it back)."""
    return _change(_store().close_followup, task_id, data["outcome"], data.get("reason"))

