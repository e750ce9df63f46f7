"""What a cancel-time decision is made from and what it answers: plain domain objects, no HTTP, no database.

The Flask adapter turns validated JSON into these objects (marshmallow `post_load`), the store turns stored
rows into `PastOffer`s, and `retention.policy` turns them into a `Decision`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from retention.experiments import Assignment
from retention.offers import Offer


@dataclass(frozen=True)
class NpsAnswer:
    score: int
    responded_at: datetime


@dataclass(frozen=True)
class UsageSummary:
    """Recent usage of one metric, as the frontend or billing system knows it now (whole days before today)."""

    metric: str
    last_7d: float
    last_30d: float
    last_90d: float
    active_days_30: int | None = None
    days_since_last: float | None = None


@dataclass(frozen=True)
class CancelRequest:
    """One press of "Cancel": who the customer is now and the reason they gave.

    `nps` / `usage` are optional inline context. None means "not sent" (use what the service knows); a tuple,
    even an empty one, replaces what the service knows.
    """

    customer_id: str
    reason: str
    billing_period: str
    billing_channel: str
    price: float
    plan_id: str | None = None
    country: str | None = None
    signup_at: datetime | None = None
    nps: tuple[NpsAnswer, ...] | None = None
    usage: tuple[UsageSummary, ...] | None = None


@dataclass(frozen=True)
class PastOffer:
    """An earlier decision for the same customer, as the guardrails need it."""

    offer_id: str
    offer_type: str
    at: datetime
    accepted: bool
    months: int = 0


@dataclass(frozen=True)
class Snapshot:
    """A customer's features as of `as_of`, loaded by the data team (`retention load-features`)."""

    values: dict[str, object]
    as_of: datetime


@dataclass(frozen=True)
class OfferScore:
    offer_id: str
    p_stay: float
    net_value: float  # expected revenue kept over the horizon minus the offer's cost
    incremental_value: float  # net_value minus that of giving no offer


@dataclass(frozen=True)
class Exploration:
    """How an exploring policy chose (retention.policy): enough to recompute the decision's propensity."""

    share: float  # the exploration share of the policy version that decided
    policy_offer: str  # the offer the policy itself chose
    eligible: tuple[str, ...]  # the offers the uniform draw was over (after the guardrails)
    explored: bool  # the uniform draw decided
    expected_cost: float | None = None  # share x (policy's choice - mean eligible), model's expected values

    def as_dict(self) -> dict:
        return {"share": self.share, "policy_offer": self.policy_offer, "eligible": list(self.eligible),
                "explored": self.explored, "expected_cost": self.expected_cost}


@dataclass(frozen=True)
class ShadowChoice:
    """What the challenger model would have answered (retention.policy, step 5): recorded, never shown."""

    version: str
    offer: str
    p_stay: float | None
    expected_incremental_value: float | None
    agrees: bool  # the same offer as the champion's own choice (before exploration)
    error: str | None = None  # scoring_timeout / scoring_error: the challenger could not decide in time

    def as_dict(self) -> dict:
        return {"version": self.version, "offer": self.offer, "p_stay": self.p_stay,
                "expected_incremental_value": self.expected_incremental_value, "agrees": self.agrees,
                "error": self.error}


@dataclass(frozen=True)
class Decision:
    offer: Offer
    reason_codes: tuple[str, ...]
    fallback: bool
    policy_version: str
    catalog_version: str
    model_version: str | None = None
    p_stay: float | None = None
    expected_incremental_value: float | None = None
    propensity: float = 1.0  # the probability with which this offer was chosen (off-policy evaluation)
    scores: tuple[OfferScore, ...] = ()
    excluded: dict[str, tuple[str, ...]] = field(default_factory=dict)
    features: dict[str, object] = field(default_factory=dict)
    nps_segment: str = "none"
    close_the_loop_by: datetime | None = None  # detractors get a personal follow-up before this time
    experiment: Assignment | None = None  # the experiment arm that decided, if the customer entered one
    exploration: Exploration | None = None  # how exploration chose, where the policy explores
    shadow: ShadowChoice | None = None  # the challenger's choice on the same request, never shown
