"""The training-data contract: which files, columns, types and value rules a data set must satisfy.

This module is the single source of truth for the contract. The validator (training.validation), the simulator
(training.simulator) and the README's contract table are all derived from or checked against it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

# Cancel reasons, in the order the cancel flow shows them.
REASONS: tuple[str, ...] = (
    "too_expensive",
    "not_using",
    "temporary",
    "technical",
    "content",
    "switching",
    "other",
)
BILLING_PERIODS: tuple[str, ...] = ("monthly", "annual")
BILLING_CHANNELS: tuple[str, ...] = ("web", "ios", "android", "partner")
# Channels where the store, not us, bills the customer; many offers cannot be applied there.
APP_STORE_CHANNELS: frozenset[str] = frozenset({"ios", "android"})

NPS_MIN, NPS_MAX = 0, 10


def is_missing(value: object) -> bool:
    """None or a float NaN: how a missing value arrives (JSON null, an empty cell read by pandas or DuckDB)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def nps_segment(score: float | int | None) -> str:
    """promoter 9-10, passive 7-8, detractor 0-6, or 'none' when the customer never answered."""
    if is_missing(score):
        return "none"
    if score >= 9:
        return "promoter"
    if score >= 7:
        return "passive"
    return "detractor"


# Logical column types. The validator maps them onto what CSV and Parquet can carry.
STRING, INTEGER, NUMBER, TIMESTAMP, DATE, BOOLEAN = "string", "integer", "number", "timestamp", "date", "boolean"


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    required: bool = True  # the column must exist
    nullable: bool = False  # empty values allowed
    allowed: tuple[str, ...] | None = None  # enum of allowed values
    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False
    unique: bool = False
    doc: str = ""


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    doc: str = ""
    # Columns that must reference customers.customer_id.
    references_customer: bool = True
    # Timestamp/date columns that must not lie after the end of the data window.
    time_columns: tuple[str, ...] = field(default_factory=tuple)
    # Extra columns are allowed (and become customer attributes) only in `customers`.
    extra_columns_allowed: bool = False

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


CUSTOMERS = Table(
    "customers",
    (
        Column("customer_id", STRING, unique=True, doc="Stable id of the subscriber."),
        Column("signup_at", TIMESTAMP, doc="When the subscription started (UTC)."),
        Column("plan_id", STRING, doc="Current plan, e.g. plus_monthly."),
        Column("billing_period", STRING, allowed=BILLING_PERIODS, doc="monthly or annual."),
        Column("price", NUMBER, min=0, doc="List price per billing period, in `currency`."),
        Column("currency", STRING, doc="ISO 4217 code, e.g. USD."),
        Column("billing_channel", STRING, allowed=BILLING_CHANNELS, doc="Who bills the customer."),
        Column("country", STRING, doc="ISO 3166 alpha-2 code."),
    ),
    doc="One row per customer. Any extra column is a customer attribute and becomes a feature.",
    references_customer=False,
    time_columns=("signup_at",),
    extra_columns_allowed=True,
)

NPS_RESPONSES = Table(
    "nps_responses",
    (
        Column("customer_id", STRING),
        Column("responded_at", TIMESTAMP),
        Column("score", INTEGER, min=NPS_MIN, max=NPS_MAX, doc="Integer 0-10."),
        Column("comment", STRING, required=False, nullable=True, doc="Optional free text; never logged."),
    ),
    doc="Survey answers. Sparse: most customers never answer, some answer many times.",
    time_columns=("responded_at",),
)

USAGE = Table(
    "usage",
    (
        Column("customer_id", STRING),
        Column("day", DATE),
        Column("metric", STRING, doc="Metric name; any name is allowed and becomes features."),
        Column("value", NUMBER, min=0),
    ),
    doc="Long format daily usage; days without a row count as zero.",
    time_columns=("day",),
)

PAYMENTS = Table(
    "payments",
    (
        Column("customer_id", STRING),
        Column("paid_at", TIMESTAMP),
        Column("amount", NUMBER, min=0, doc="What was charged; discounts show as smaller amounts."),
    ),
    doc="Successful charges.",
    time_columns=("paid_at",),
)

CANCEL_REQUESTS = Table(
    "cancel_requests",
    (
        Column("request_id", STRING, unique=True),
        Column("customer_id", STRING),
        Column("requested_at", TIMESTAMP),
        Column("reason", STRING, allowed=REASONS),
        Column("offer_id", STRING, nullable=True, doc="Offer shown; empty means none."),
        Column(
            "propensity",
            NUMBER,
            required=False,
            nullable=True,
            min=0,
            max=1,
            min_exclusive=True,
            doc="Probability with which the logging policy showed that offer, in (0, 1].",
        ),
        Column("accepted", BOOLEAN, doc="Whether the customer accepted the offer (false when none shown)."),
        Column(
            "ended_at",
            TIMESTAMP,
            nullable=True,
            doc="When the subscription actually ended; empty while still active.",
        ),
    ),
    doc="History of cancel flows, one row per flow.",
    time_columns=("requested_at", "ended_at"),
)

TABLES: tuple[Table, ...] = (CUSTOMERS, NPS_RESPONSES, USAGE, PAYMENTS, CANCEL_REQUESTS)
TABLES_BY_NAME: dict[str, Table] = {t.name: t for t in TABLES}
FILE_SUFFIXES: tuple[str, ...] = (".parquet", ".csv")

# The data set's manifest: a JSON object beside the tables. `window_end` (ISO-8601) is the end of the data
# window (no row may be later); `window_start` where the history begins. Written by `retention simulate` and
# `retention export`; read by validation and training (training.dataset).
MANIFEST = "dataset.json"
# Beside the tables, not part of the contract (validation ignores folders starting with "_"): what the service
# logged at each decision, as a store export writes it (store.logged), for off-policy evaluation.
LOGGED_DECISIONS = "_logged/decisions.parquet"

# Horizon after which a cancel request counts as saved when the customer is still subscribed.
SAVE_HORIZON_DAYS = 30
