"""Request and response schemas: declared once, they validate input (unknown fields raise) and produce the
OpenAPI document. `post_load` turns validated input into domain objects, so views never pass raw dicts inward.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC

import marshmallow as ma
from flask import current_app, has_app_context
from marshmallow import fields, validate

from retention.contract import BILLING_CHANNELS, BILLING_PERIODS, NPS_MAX, NPS_MIN, REASONS
from retention.decision import CancelRequest, NpsAnswer, UsageSummary
from retention.offers import OFFER_TYPES
from retention.plans import PlanCatalog
from service.usecases import DecisionRequest

ID = validate.Length(min=1, max=128)
OUTCOMES = ("shown", "accepted", "declined", "cancelled")
EVENT_TYPES = ("nps", "usage", "payment", "still_active", "cancelled", "customer")
MAX_EVENTS_PER_CALL = 5000
MAX_PRICE = 1_000_000.0  # per billing period, in the currency's units
# Text no store can keep: NUL (PostgreSQL text refuses it) and lone UTF-16 surrogates (a JSON escape such
# as "\ud800" decodes to one; it is no character and cannot be encoded as UTF-8).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# ...and the rule as the document states it, for the free-text fields (a JSON Schema pattern). Lone
# surrogates are not in it: a JSON Schema string is Unicode characters, which they are not (and a range of them
# is no valid ECMA-262 `u` regex, so validators such as jsonschema-rs would drop the whole pattern).
STORABLE_TEXT = r"^[^\u0000]*$"


class AwareDateTime(fields.AwareDateTime):
    """ISO-8601 time; a time without a zone is read as UTC (the data contract's convention)."""

    def __init__(self, **kwargs):
        super().__init__(default_timezone=UTC, **kwargs)


class Number(fields.Float):
    """A JSON number, as the document says: not a numeric string ("1.5") nor a boolean, which marshmallow's
    Float would take."""

    def _validated(self, value):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.make_error("invalid")
        return super()._validated(value)


class Whole(fields.Integer):
    """A JSON integer: not 4.5, "4" nor true (a bool is an int to Python)."""

    def __init__(self, **kwargs):
        super().__init__(strict=True, **kwargs)

    def _validated(self, value):
        if isinstance(value, bool):
            raise self.make_error("invalid")
        return super()._validated(value)


class Flag(fields.Boolean):
    """A JSON true or false: not 1, "yes" or "on", which marshmallow's Boolean would take."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


class Text(fields.String):
    """A string field the document says may hold any character but NUL or a lone surrogate (which
    Strict.refuse_unstorable_text answers with a 422 naming the field)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.metadata = {"pattern": STORABLE_TEXT, **self.metadata}


class Strict(ma.Schema):
    # Clearer than marshmallow's "Invalid input type." for, e.g., a body that is an array or a string.
    error_messages = {"type": "must be a JSON object"}

    class Meta:
        unknown = ma.RAISE
        ordered = True

    @ma.pre_load
    def refuse_unstorable_text(self, data, **_):
        """A string with NUL or a lone surrogate is a 422 naming its field, on every database, rather than a
        500 from the driver (or from UTF-8 encoding) later. Nested schemas check their own fields."""
        if not isinstance(data, Mapping):
            return data  # not an object: the load reports the type
        errors = {}
        for name, value in data.items():
            bad = _UNSTORABLE.search(value) if isinstance(value, str) else None
            if bad:
                errors[name] = ["must not contain NUL (\\u0000) characters" if bad.group() == "\x00"
                                else "must be valid Unicode text (no lone surrogate such as \\ud800)"]
        if errors:
            raise ma.ValidationError(errors)
        return data


class NpsAnswerSchema(Strict):
    # strict integers (here and below): 4.5 is refused, as the document says, rather than truncated to 4
    score = Whole(required=True, validate=validate.Range(NPS_MIN, NPS_MAX))
    responded_at = AwareDateTime(required=True)

    @ma.post_load
    def make(self, data, **_):
        return NpsAnswer(**data)


class UsageSummarySchema(Strict):

    metric = fields.String(required=True, validate=validate.Regexp(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"))
    last_7d = Number(required=True, validate=validate.Range(min=0))
    # JSON Schema cannot compare two fields: the document says it in words (the fuzz test's generator is told
    # the same, tests/service/test_hostile_input.py).
    last_30d = Number(required=True, validate=validate.Range(min=0), metadata={
        "description": "Nested windows: last_7d <= last_30d <= last_90d, else 422."})
    last_90d = Number(required=True, validate=validate.Range(min=0))
    active_days_30 = Whole(validate=validate.Range(0, 30))
    days_since_last = Number(validate=validate.Range(min=0), allow_none=True)

    @ma.validates_schema
    def windows_nest(self, data, **_):
        if not data["last_7d"] <= data["last_30d"] <= data["last_90d"]:
            raise ma.ValidationError("must satisfy last_7d <= last_30d <= last_90d (they are nested windows)",
                                     "last_30d")

    @ma.post_load
    def make(self, data, **_):
        return UsageSummary(**data)


class DecisionRequestSchema(Strict):
    request_id = Text(required=True, validate=ID,
                      metadata={"description": "The caller's idempotency key for this cancel flow."})
    customer_id = Text(required=True, validate=ID)
    reason = fields.String(required=True, validate=validate.OneOf(REASONS))
    reason_text = Text(validate=validate.Length(max=2000), allow_none=True,
                       metadata={"description": "Free text; stored with the decision, never logged."})
    plan_id = Text(validate=ID, metadata={"description": "A plan of GET /v1/plans; the price must be "
                                          "within its price_tolerance of that plan's list price."})
    # Bounded: the value arithmetic overflows near 1e308 and the answer would carry NaN (not JSON).
    price = Number(required=True, validate=validate.Range(min=0, max=MAX_PRICE),
                         metadata={"description": "List price per billing period."})
    billing_period = fields.String(required=True, validate=validate.OneOf(BILLING_PERIODS))
    billing_channel = fields.String(required=True, validate=validate.OneOf(BILLING_CHANNELS))
    currency = fields.String(validate=validate.Regexp(r"^[A-Z]{3}$"))
    country = fields.String(validate=validate.Regexp(r"^[A-Z]{2}$"))
    signup_at = AwareDateTime()
    nps = fields.List(fields.Nested(NpsAnswerSchema), validate=validate.Length(max=100),
                      metadata={"description": "Inline NPS answers; replace what the service knows."})
    usage = fields.List(fields.Nested(UsageSummarySchema), validate=validate.Length(max=50),
                        metadata={"description": "Inline usage summary per metric; replaces stored usage."})

    @ma.validates_schema
    def plan_and_price(self, data, **_):
        """A named plan must be in the plan catalog (config/plans.toml, GET /v1/plans), billed by this period,
        in this currency, at a price within its tolerance of the list price (retention.plans)."""
        plans = current_app.extensions["retention"].catalog.plans if has_app_context() else None
        if plans is not None and data.get("plan_id") is not None:
            problems = plans.problems(data["plan_id"], data["price"], data["billing_period"], data.get("currency"))
            if problems:
                raise ma.ValidationError({k: [v] for k, v in problems.items()})

    @ma.post_load
    def make(self, data, **_):
        """The domain's cancel request, plus the validated fields stored beside the decision."""
        nps = data.get("nps")
        usage = data.get("usage")
        cancel = CancelRequest(
            customer_id=data["customer_id"],
            reason=data["reason"],
            billing_period=data["billing_period"],
            billing_channel=data["billing_channel"],
            price=data["price"],
            plan_id=data.get("plan_id"),
            country=data.get("country"),
            signup_at=data.get("signup_at"),
            nps=tuple(nps) if nps is not None else None,
            usage=tuple(usage) if usage is not None else None,
        )
        stored = {k: v for k, v in data.items() if k not in ("request_id", "reason_text")}
        return DecisionRequest(data["request_id"], cancel, stored, data.get("reason_text"))



def document_plans(schema: dict, plans: PlanCatalog) -> None:
    """State the plan check (DecisionRequestSchema.plan_and_price) in the request's JSON schema: no plan_id,
    or one of the catalog's plans with its billing period, currencies and accepted price band. What the
    document says is then exactly what the service accepts (schemathesis' positive-data check sends it)."""
    branches = [{"not": {"required": ["plan_id"]}}]
    for plan in plans.plans:
        low, high = plans.price_band(plan)
        branches.append({"required": ["plan_id"], "properties": {
            "plan_id": {"type": "string", "enum": [plan.id]},
            "billing_period": {"type": "string", "enum": [plan.period]},
            "currency": {"type": "string", "enum": list(plan.currencies)},
            "price": {"type": "number", "minimum": low, "maximum": high}}})
    schema["anyOf"] = branches
    schema["properties"]["plan_id"] = {**schema["properties"]["plan_id"], "enum": list(plans.ids)}

class OfferSchema(Strict):
    id = fields.String(required=True)
    type = fields.String(required=True, validate=validate.OneOf(OFFER_TYPES))
    display_key = fields.String(required=True)
    months = fields.Integer(metadata={"description": "Pause or discount length."})
    percent = fields.Float(metadata={"description": "Discount percent."})
    to_plan = fields.String(allow_none=True)  # null unless a downgrade
    to_price = fields.Float(allow_none=True)
    credits = fields.Integer(metadata={"description": "Content credits: a credit or a reward gives them; a "
                                                      "referral gives them to both the customer and the friend."})
    cost = fields.Float()
    friend_cost = fields.Float(metadata={"description": "Referral: the friend's reward, paid when they sign up."})
    signup_rate = fields.Float(metadata={"description": "Referral: the expected share of referrers who stay "
                                                        "that bring a friend who signs up."})
    signup_value = fields.Float(metadata={"description": "Referral: a referred friend's expected revenue over "
                                                         "the value horizon."})
    billing_periods = fields.List(fields.String())
    channels = fields.List(fields.String())
    enabled = fields.Boolean()


class CatalogSchema(Strict):
    version = fields.String(required=True)
    offers = fields.List(fields.Nested(OfferSchema), required=True)


class PlanSchema(Strict):
    id = fields.String(required=True)
    period = fields.String(required=True, validate=validate.OneOf(BILLING_PERIODS),
                           metadata={"description": "What one payment covers."})
    price = fields.Float(required=True, metadata={"description": "List price per billing period."})
    monthly_price = fields.Float(required=True, metadata={"description": "The price spread over months."})
    currencies = fields.List(fields.String(), required=True, metadata={"description": "Sold in these currencies, "
                                                                         "at `price` in each one's units."})
    downgrade_to = fields.String(allow_none=True, metadata={"description": "The cheaper plan a downgrade "
                                                                          "offer moves this plan to; null: none."})
    accepted_prices = fields.List(fields.Float(), required=True, validate=validate.Length(equal=2), metadata={
        "description": "[low, high]: a decision request's price for this plan must lie in this band."})


class PlanCatalogSchema(Strict):
    version = fields.String(required=True)
    price_tolerance = fields.Float(required=True, metadata={
        "description": "A request's price may differ from the list price by this share either side."})
    plans = fields.List(fields.Nested(PlanSchema), required=True)


class ExperimentArmSchema(Strict):
    name = fields.String(required=True)
    variant = fields.String(required=True, metadata={"description": "A variant name, or \"holdout\"."})
    kind = fields.String(required=True, metadata={"description": "offer, model, rules or none."})
    offer = fields.String(allow_none=True)
    definition = fields.String(required=True, metadata={"description": "Hash of the experiment's definition."})


class DecisionSchema(Strict):
    decision_id = fields.String(required=True)
    request_id = fields.String(required=True)
    customer_id = fields.String(required=True)
    created_at = fields.DateTime(required=True)
    offer = fields.Nested(OfferSchema, required=True)
    p_stay = fields.Float(allow_none=True, metadata={"description": "Predicted P(still subscribed at 30 days)."})
    expected_incremental_value = fields.Float(
        allow_none=True, metadata={"description": "Expected net revenue over 6 months minus that of no offer."})
    reason_codes = fields.List(fields.String(), required=True)
    nps_segment = fields.String(required=True)
    close_the_loop_by = fields.DateTime(allow_none=True,
                                        metadata={"description": "Detractors: personal follow-up due by."})
    model_version = fields.String(allow_none=True)
    policy_version = fields.String(required=True)
    catalog_version = fields.String(required=True)
    fallback = fields.Boolean(required=True, metadata={"description": "True when rules, not the model, decided."})
    recorded = fields.Boolean(required=True, metadata={"description": "False only when the store was down."})
    experiment = fields.Nested(ExperimentArmSchema, allow_none=True, metadata={
        "description": "The experiment arm that decided (null: no experiment). Post a `shown` outcome when the "
                       "answer is displayed: experiment analysis counts exposures."})
    outcomes = fields.List(fields.Dict())


class DecisionListSchema(Strict):
    customer_id = fields.String(required=True)
    decisions = fields.List(fields.Nested(DecisionSchema), required=True)


class ExperimentResultsQuerySchema(Strict):
    as_of = AwareDateTime(metadata={"description": "Analyse what was known at this time (default: now)."})
    mde = fields.Float(validate=validate.Range(min=0.001, max=0.5), metadata={
        "description": "Absolute difference in the primary rate the sample-size calculator aims at (0.02)."})


class FiniteFloat(fields.Float):
    """A number of an analysis result: null when it does not exist yet (NaN: an empty arm, one observation) or
    is unbounded (an infinite chi2), as retention.jsonvalues.jsonable writes it; JSON has no NaN."""

    def __init__(self, **kwargs):
        super().__init__(allow_none=True, **kwargs)

    def _serialize(self, value, attr, obj, **kwargs):
        if value is None or not math.isfinite(value):
            return None
        return super()._serialize(value, attr, obj, **kwargs)


# The result of GET /v1/experiments/<name>/results: retention.experiment_analysis.ExperimentResult, field for
# field and in its order, so the body is what `retention experiment report --json` writes.
class MetricEstimateSchema(Strict):
    n = fields.Integer(required=True, metadata={"description": "Exposed customers whose outcome is known."})
    successes = fields.Integer(metadata={"description": "Rates only: how many of the n had the outcome."})
    estimate = FiniteFloat(required=True, metadata={"description": "A rate (0-1) or a mean per customer."})
    low = FiniteFloat(required=True, metadata={"description": "95% interval (Wilson for rates, t for means)."})
    high = FiniteFloat(required=True)
    missing = fields.Integer(required=True, metadata={
        "description": "Mature exposures whose outcome was never reported: in no n, not guessed."})


class ResultArmSchema(Strict):
    name = fields.String(required=True)
    kind = fields.String(required=True, metadata={"description": "offer, model, rules or none."})
    offer = fields.String(required=True, allow_none=True)
    is_control = fields.Boolean(required=True)
    is_holdout = fields.Boolean(required=True)
    expected_share = fields.Float(required=True)
    assigned = fields.Integer(required=True, metadata={"description": "Customers assigned (first decisions)."})
    exposed = fields.Integer(required=True, metadata={"description": "Customers shown the arm's answer."})
    metrics = fields.Dict(keys=fields.String(), values=fields.Nested(MetricEstimateSchema), required=True)


class ComparisonSchema(Strict):
    metric = fields.String(required=True)
    arm = fields.String(required=True)
    baseline = fields.String(required=True, metadata={"description": "The control or the holdout."})
    difference = FiniteFloat(required=True, metadata={"description": "Arm minus baseline."})
    low = FiniteFloat(required=True, metadata={"description": "Fixed-horizon 95% interval of the difference."})
    high = FiniteFloat(required=True)
    p_value = FiniteFloat(required=True)
    always_valid_low = FiniteFloat(required=True, metadata={
        "description": "Always-valid 95% interval: may be looked at every day."})
    always_valid_high = FiniteFloat(required=True)
    n_arm = fields.Integer(required=True)
    n_baseline = fields.Integer(required=True)
    p_adjusted = FiniteFloat(required=True, metadata={"description": "Holm-adjusted across the metric's comparisons."})
    significant = fields.Boolean(required=True)


class SrmCheckSchema(Strict):
    observed = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)
    expected = fields.Dict(keys=fields.String(), values=FiniteFloat(), required=True)
    chi2 = FiniteFloat(required=True)
    p_value = FiniteFloat(required=True)
    alarm = fields.Boolean(required=True, metadata={"description": "Sample-ratio mismatch: do not trust the results."})


class SampleRatioSchema(Strict):
    assigned = fields.Nested(SrmCheckSchema, required=True)
    exposed = fields.Nested(SrmCheckSchema, required=True)


class SampleSizePlanSchema(Strict):
    metric = fields.String(required=True)
    baseline_rate = FiniteFloat(required=True)
    mde = fields.Float(required=True)
    alpha = fields.Float(required=True)
    power = fields.Float(required=True)
    per_arm = fields.Integer(required=True, allow_none=True)
    smallest_arm_now = fields.Integer(required=True)
    detectable_now = FiniteFloat(required=True)


class TimelinePointSchema(Strict):
    day = fields.Date(required=True)
    arm = fields.String(required=True)
    baseline = fields.String(required=True)
    metric = fields.String(required=True)
    n_arm = fields.Integer(required=True)
    n_baseline = fields.Integer(required=True)
    difference = FiniteFloat(required=True)
    always_valid_low = FiniteFloat(required=True)
    always_valid_high = FiniteFloat(required=True)


class ExperimentResultSchema(Strict):
    experiment = fields.String(required=True)
    description = fields.String(required=True)
    definition = fields.String(required=True, metadata={"description": "Hash of the experiment's definition."})
    as_of = fields.DateTime(required=True)
    start = fields.DateTime(required=True)
    stop = fields.DateTime(required=True, allow_none=True)
    running = fields.Boolean(required=True)
    primary_metric = fields.String(required=True)
    guardrail_metrics = fields.List(fields.String(), required=True)
    control = fields.String(required=True)
    unit = fields.String(required=True, metadata={"description": "What one observation is."})
    metric_definitions = fields.Dict(keys=fields.String(), values=fields.String(), required=True)
    arms = fields.List(fields.Nested(ResultArmSchema), required=True)
    comparisons = fields.List(fields.Nested(ComparisonSchema), required=True)
    srm = fields.Nested(SampleRatioSchema, required=True)
    sample_size = fields.Nested(SampleSizePlanSchema, required=True)
    timeline = fields.List(fields.Nested(TimelinePointSchema), required=True, metadata={
        "description": "Day by day, the primary metric's difference vs the control with its always-valid interval."})
    warnings = fields.List(fields.String(), required=True)


class OutcomeRequestSchema(Strict):
    outcome = fields.String(required=True, validate=validate.OneOf(OUTCOMES))
    occurred_at = AwareDateTime(metadata={"description": "Default: now."})


class OutcomeSchema(Strict):
    decision_id = fields.String(required=True)
    kind = fields.String(required=True)
    occurred_at = fields.DateTime(required=True)
    recorded_at = fields.DateTime(allow_none=True, metadata={"description": "Null while it waits in the spool."})


class EventBaseSchema(Strict):
    """What every event carries; each type's schema below adds its own fields (and refuses any other)."""

    event_id = Text(required=True, validate=ID)
    customer_id = Text(required=True, validate=ID)
    occurred_at = AwareDateTime(required=True)
    decision_id = Text(validate=ID)


def _event_type(kind: str) -> fields.String:
    return fields.String(required=True, validate=validate.OneOf([kind]))


def _iso_date(value: str) -> None:
    fields.Date().deserialize(value)  # raises "Not a valid date." for anything but YYYY-MM-DD


class NpsEventSchema(EventBaseSchema):
    type = _event_type("nps")
    score = Whole(required=True, validate=validate.Range(NPS_MIN, NPS_MAX))
    comment = Text(validate=validate.Length(max=2000), allow_none=True)


class UsageEventSchema(EventBaseSchema):
    type = _event_type("usage")
    day = fields.String(required=True, validate=_iso_date, metadata={"format": "date"})
    metric = fields.String(required=True, validate=validate.Regexp(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"))
    value = Number(required=True, validate=validate.Range(min=0))


class PaymentEventSchema(EventBaseSchema):
    type = _event_type("payment")
    amount = Number(required=True, validate=validate.Range(min=0))


class StillActiveEventSchema(EventBaseSchema):
    type = _event_type("still_active")
    decision_id = Text(required=True, validate=ID)
    day = Whole(required=True, validate=validate.OneOf([30, 90]),
                metadata={"description": "Still subscribed 30 or 90 days after the decision?"})
    active = Flag(required=True)


class CancelledEventSchema(EventBaseSchema):
    type = _event_type("cancelled")


class CustomerEventSchema(EventBaseSchema):
    type = _event_type("customer")
    signup_at = AwareDateTime(required=True)
    plan_id = Text(required=True, validate=ID)
    billing_period = fields.String(required=True, validate=validate.OneOf(BILLING_PERIODS))
    price = Number(required=True, validate=validate.Range(min=0))
    currency = fields.String(required=True, validate=validate.Regexp(r"^[A-Z]{3}$"))
    country = fields.String(required=True, validate=validate.Regexp(r"^[A-Z]{2}$"))
    billing_channel = fields.String(required=True, validate=validate.OneOf(BILLING_CHANNELS))


EVENT_SCHEMAS: dict[str, Strict] = {
    "nps": NpsEventSchema(), "usage": UsageEventSchema(), "payment": PaymentEventSchema(),
    "still_active": StillActiveEventSchema(), "cancelled": CancelledEventSchema(), "customer": CustomerEventSchema(),
}
assert tuple(EVENT_SCHEMAS) == EVENT_TYPES
for _kind, _schema in EVENT_SCHEMAS.items():  # "Unknown field." would not say why
    _schema.error_messages = {**_schema.error_messages, "unknown": f"not a field of a {_kind!r} event"}


class Event(fields.Field):
    """One event, loaded by the schema of its `type`; the document says the same with a oneOf discriminated
    by `type` (event_property below)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, Mapping):
            raise ma.ValidationError({"_schema": ["must be a JSON object"]})
        kind = value.get("type")
        if kind is None:
            raise ma.ValidationError({"type": ["Missing data for required field."]})
        if not isinstance(kind, str) or kind not in EVENT_SCHEMAS:
            EventBaseSchema().refuse_unstorable_text(value)  # a NUL in `type` (or elsewhere) is named as such
            raise ma.ValidationError({"type": [f"Must be one of: {', '.join(EVENT_TYPES)}."]})
        return EVENT_SCHEMAS[kind].load(value)


def event_property(converter, field, ret, **_) -> dict:
    """apispec attribute function (registered in service.register_api): an Event is one of the types'
    schemas, told apart by `type`."""
    if not isinstance(field, Event):
        return {}
    refs = {kind: converter.resolve_nested_schema(type(schema)) for kind, schema in EVENT_SCHEMAS.items()}
    return {"oneOf": list(refs.values()),
            "discriminator": {"propertyName": "type", "mapping": {k: r["$ref"] for k, r in refs.items()}}}


class EventBatchSchema(Strict):
    events = fields.List(Event(), required=True, validate=validate.Length(min=1, max=MAX_EVENTS_PER_CALL),
                         metadata={"description": "At most 5,000 events, and at most RETENTION_MAX_BODY_BYTES "
                                                  "(1 MiB by default) of JSON: a larger body is a 413."})


class EventResultSchema(Strict):
    created = fields.Integer(required=True)
    duplicates = fields.Integer(required=True)
    conflicts = fields.List(fields.String(), required=True)
