"""The store's tables as typed SQLAlchemy declarative models (the schema itself is created by the migrations).

All times are UTC: columns are `DateTime(timezone=True)` and UTCDateTime hands back aware UTC datetimes on
SQLite too (which has no time zones), so callers never compare naive with aware values.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import JSON, DateTime, Double, ForeignKey, Index, MetaData, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from retention.utc import as_utc, naive_utc, require_aware

ROLES: tuple[str, ...] = ("decide", "events", "followups", "admin")
# "shown": the frontend displayed the answer (the offer, or for no offer the plain cancel page): an exposure.
OUTCOME_KINDS: tuple[str, ...] = ("shown", "accepted", "declined", "cancelled")
EVENT_TYPES: tuple[str, ...] = ("nps", "usage", "payment", "still_active", "cancelled", "customer")
# The catalog's "no offer" offer id (config/offers.toml): nothing to accept, exported as an empty offer_id.
NO_OFFER = "none"

# Deterministic constraint names, identical on SQLite and PostgreSQL, so later migrations can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator):
    """A timezone-aware timestamp stored in UTC; naive datetimes are refused (their zone is unknown)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        value = require_aware("a stored time", value).astimezone(UTC)
        # SQLite keeps text; storing every value as naive UTC keeps comparisons between them correct.
        return naive_utc(value) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return as_utc(value)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), float: Double()}


class ApiClient(Base):
    """A caller of the service and the key it authenticates with."""

    __tablename__ = "api_clients"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(unique=True)
    role: Mapped[str]  # one of ROLES
    key_id: Mapped[str] = mapped_column(unique=True)  # public part of the key, to find the row
    # Hex SHA-256 of the whole key. A fast hash is enough: keys are 32 random bytes, far beyond brute force,
    # unlike passwords, which need a slow salted hash.
    key_hash: Mapped[str]
    # When set, requests must carry an HMAC-SHA256 signature under this secret. Stored as-is (not hashed)
    # because the server has to recompute the signature.
    signing_secret: Mapped[str | None]
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class SignedRequestId(Base):
    """A signed request's webhook-id (its nonce), kept until its signed timestamp leaves the replay window,
    so an exact replay is refused by every worker and host. The key is (client, id): clients pick ids
    independently."""

    __tablename__ = "signed_request_ids"

    client_id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[str] = mapped_column(primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class Decision(Base):
    """One answer of the decision endpoint, with everything needed to explain, replay and evaluate it."""

    __tablename__ = "decisions"
    # Idempotency keys are scoped per client, as Stripe scopes them per account: (client, request_id) is the
    # key, so one client's request ids can neither reach nor block another's (migration 0004).
    __table_args__ = (UniqueConstraint("client", "request_id"),
                      Index(None, "customer_id", "created_at"),  # a customer's history, newest first
                      Index(None, "experiment_name", "created_at"))  # an experiment's decisions

    decision_id: Mapped[str] = mapped_column(primary_key=True)  # uuid4 hex
    request_id: Mapped[str]  # the caller's idempotency key, unique per client (see __table_args__)
    body_hash: Mapped[str]  # sha256 of the canonical request body: a reused request_id must match it
    client: Mapped[str]  # the API client's name (api_clients.name): the idempotency key's scope
    customer_id: Mapped[str]
    created_at: Mapped[datetime] = mapped_column(index=True)
    reason: Mapped[str]
    reason_text: Mapped[str | None] = mapped_column(Text)  # the customer's own words: stored, never logged
    request: Mapped[dict] = mapped_column(JSON)  # validated input, without the free text
    features: Mapped[dict] = mapped_column(JSON)
    scores: Mapped[dict] = mapped_column(JSON)
    offer_id: Mapped[str]
    offer: Mapped[dict] = mapped_column(JSON)  # parameters as returned to the caller, incl. "type"
    propensity: Mapped[float]  # probability with which this offer was chosen (off-policy evaluation)
    p_stay: Mapped[float | None]
    expected_incremental_value: Mapped[float | None]
    reason_codes: Mapped[list] = mapped_column(JSON)
    model_version: Mapped[str | None]
    policy_version: Mapped[str]
    catalog_version: Mapped[str]
    fallback: Mapped[bool]
    nps_segment: Mapped[str]  # promoter / passive / detractor / none, as the policy saw it
    close_the_loop_by: Mapped[datetime | None]  # detractors: personal follow-up due by
    experiment: Mapped[dict | None] = mapped_column(JSON)  # retention.experiments.Assignment.as_dict()
    experiment_name: Mapped[str | None]
    experiment_variant: Mapped[str | None]  # a variant name or "holdout"
    latency_ms: Mapped[float]


class Outcome(Base):
    """What the customer did after a decision; at most one row per kind."""

    __tablename__ = "outcomes"
    # The unique constraint's index leads with decision_id, so it also serves lookups by decision.
    __table_args__ = (UniqueConstraint("decision_id", "kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    decision_id: Mapped[str] = mapped_column(ForeignKey("decisions.decision_id"))
    kind: Mapped[str]  # one of OUTCOME_KINDS
    occurred_at: Mapped[datetime]
    recorded_at: Mapped[datetime]


class Event(Base):
    """A fact posted by the caller (NPS answer, usage, payment, ...), the store's source of training data."""

    __tablename__ = "events"
    __table_args__ = (Index(None, "customer_id", "occurred_at"),)  # a customer's events in time order

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[str] = mapped_column(unique=True)  # the caller's idempotency key
    type: Mapped[str]  # one of EVENT_TYPES
    customer_id: Mapped[str]
    # Not a foreign key: an event may mention a decision this store never made (another region, a replay).
    decision_id: Mapped[str | None] = mapped_column(index=True)
    occurred_at: Mapped[datetime] = mapped_column(index=True)
    payload: Mapped[dict] = mapped_column(JSON)
    recorded_at: Mapped[datetime]


class CustomerFeatures(Base):
    """The current feature snapshot: one row per customer, replaced as a whole by each load."""

    __tablename__ = "customer_features"

    customer_id: Mapped[str] = mapped_column(primary_key=True)
    as_of: Mapped[datetime]
    feature_version: Mapped[str]
    model_version: Mapped[str]
    values: Mapped[dict] = mapped_column(JSON)  # feature name -> float, str or null
    loaded_at: Mapped[datetime]


class Customer(Base):
    """A customer of the data set the feature snapshot was last loaded from (`retention load-features --data`):
    the contract's customer columns and attributes, for every customer in it, subscribed at the snapshot time
    or not. The snapshot holds features only of those subscribed, and no currency or sign-up time; the export
    needs both for any customer the store refers to, one who had cancelled before the snapshot included.
    Replaced as a whole with the snapshot, in the same transaction."""

    __tablename__ = "customers"

    customer_id: Mapped[str] = mapped_column(primary_key=True)
    signup_at: Mapped[datetime]
    plan_id: Mapped[str]
    billing_period: Mapped[str]
    price: Mapped[float]
    currency: Mapped[str]
    billing_channel: Mapped[str]
    country: Mapped[str]
    attributes: Mapped[dict] = mapped_column(JSON)  # the data set's extra columns: name -> number, text or null
    loaded_at: Mapped[datetime]


class FeatureSnapshot(Base):
    """One row per snapshot load, the newest describing what customer_features holds."""

    __tablename__ = "feature_snapshots"

    id: Mapped[int] = mapped_column(primary_key=True)
    as_of: Mapped[datetime]
    feature_version: Mapped[str]
    model_version: Mapped[str]
    source: Mapped[str]  # the data directory, or "store"
    rows: Mapped[int]
    # Rows of `customers` loaded with it; null when the load left that table as it was: a snapshot of the
    # store's own history, or one loaded before the table existed.
    customers: Mapped[int | None]
    loaded_at: Mapped[datetime]


class FollowupTask(Base):
    """A personal follow-up to work ("close the loop", retention.followups): made by a detractor's NPS
    answer, a sampled passive's or promoter's, or a follow-up decision, in the same transaction as that fact."""

    __tablename__ = "followup_tasks"
    __table_args__ = (Index(None, "status", "due_at"),)  # the work queue, and the overdue count

    task_id: Mapped[str] = mapped_column(primary_key=True)  # uuid4 hex
    customer_id: Mapped[str] = mapped_column(index=True)
    # The customer id while the task is active (open, claimed, holdout), null once closed: the unique
    # constraint keeps one active task per customer on SQLite and PostgreSQL alike (NULLs never collide).
    active_customer: Mapped[str | None] = mapped_column(unique=True)
    status: Mapped[str]  # retention.followups.STATUSES
    holdout: Mapped[bool]  # drawn into the randomised no-contact group (kept when a decision opens it)
    segment: Mapped[str]  # the NPS segment that made the task (a decision's, for a follow-up offer)
    sample_rate: Mapped[float]  # the probability that the trigger made a task: 1 for detractors and decisions
    source: Mapped[str]  # "nps", "decision" or "at_risk" (`retention at-risk --create-followups`): what made it
    triggered_at: Mapped[datetime] = mapped_column(index=True)  # the answer's (or decision's) time
    due_at: Mapped[datetime]
    score: Mapped[int | None]  # the customer's latest answer
    previous_score: Mapped[int | None]  # the answer before it: the trend
    answered_at: Mapped[datetime | None]  # the latest answer's time
    event_id: Mapped[str | None]  # the latest answer's event, when it came as one
    decision_id: Mapped[str | None]  # the latest decision of the customer while the task was active
    reason: Mapped[str | None]  # that decision's cancel reason
    churn_risk: Mapped[float | None]  # that decision's 1 - p_stay
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    claimed_by: Mapped[str | None]
    claimed_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    outcome: Mapped[str | None]  # retention.followups.OUTCOMES
    close_reason: Mapped[str | None] = mapped_column(Text)


# ------------------------------------------------------------------------------------------- webhooks
# Outbound webhooks (retention/webhooks.py, store/outbox.py, service/webhook_worker.py; migration 0007).
OUTBOX_STATES: tuple[str, ...] = ("pending", "delivered", "dead")


class WebhookSubscription(Base):
    """A receiver of outbound webhooks: where to send, which event types, the secret to sign with."""

    __tablename__ = "webhook_subscriptions"

    id: Mapped[int] = mapped_column(primary_key=True)
    url: Mapped[str]
    events: Mapped[list] = mapped_column(JSON)  # event types (retention.webhooks.EVENT_TYPES), or ["*"]
    description: Mapped[str | None]
    # whsec_ secrets, stored as they are (not hashed): the worker must recompute the signature. After a
    # rotation the previous one still signs (a second signature) until previous_secret_until.
    secret: Mapped[str]
    previous_secret: Mapped[str | None]
    previous_secret_until: Mapped[datetime | None]
    created_at: Mapped[datetime]
    disabled_at: Mapped[datetime | None]


class OutboxEvent(Base):
    """One event to deliver to one subscription, written in the transaction of the fact it announces (fan-out
    at write time: each receiver has its own attempts, backoff and dead-letter state). `event_id` is the
    webhook-id, the same for every subscription and every retry."""

    __tablename__ = "webhook_outbox"
    __table_args__ = (UniqueConstraint("event_id", "subscription_id"),  # an event at most once per receiver
                      Index(None, "state", "next_attempt_at"))  # the worker's claim

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[str]
    subscription_id: Mapped[int] = mapped_column(ForeignKey("webhook_subscriptions.id"), index=True)
    event_type: Mapped[str]
    body: Mapped[str] = mapped_column(Text)  # the JSON envelope as sent, the same bytes on every attempt
    customer_id: Mapped[str | None] = mapped_column(index=True)  # for a customer's erasure
    state: Mapped[str]  # one of OUTBOX_STATES
    attempts: Mapped[int]  # failed attempts since it was (re)queued
    next_attempt_at: Mapped[datetime]
    # The lease of a worker's claim: until then no other worker takes it; a worker killed mid-batch loses
    # it when it expires, and another run delivers the event again.
    claimed_until: Mapped[datetime | None]
    claimed_by: Mapped[str | None]
    created_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)


class WebhookDelivery(Base):
    """Every attempt to deliver an outbox event: when, how long, what the receiver answered."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(primary_key=True)
    outbox_id: Mapped[int] = mapped_column(ForeignKey("webhook_outbox.id"), index=True)
    attempted_at: Mapped[datetime]
    status_code: Mapped[int | None]  # null when no answer came (timeout, refused connection)
    ms: Mapped[float]
    ok: Mapped[bool]
    error: Mapped[str | None] = mapped_column(Text)
    worker: Mapped[str]
