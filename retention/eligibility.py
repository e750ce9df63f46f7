"""Guardrails applied before any scoring: which catalog offers this customer may get now, and why not the rest.

Every exclusion carries a stable reason code (returned to the caller and stored with the decision), so a
support agent can answer "why was I not offered a pause?" and the data team can count exclusions.

Codes (per offer):
- `<type>_ineligible_<period>`   the catalog does not allow this offer type for the billing period (annual)
- `<type>_ineligible_app_store`  billed by iOS / Google Play, which cannot carry this offer
- `<type>_ineligible_channel`    another billing channel that cannot carry it
- `<offer id>_disabled`          switched off in the catalog
- `pause_used_12m`               a pause was accepted within the last `pause_once_per_days`
- `discount_active`              a discount is still running
- `discount_cooldown`            a discount was accepted within the last `discount_cooldown_days`
- `no_stacking`                  a pause or discount is running; no second price change on top of it
- `downgrade_not_cheaper`        the customer already pays the target plan's price or less
- `downgrade_not_for_plan`       the plan catalog (config/plans.toml) moves the customer's plan to another
                                 plan than this offer's (`downgrade_to`), or to none
- `reward_not_promoter`          a loyalty reward is for promoters (last NPS answer 9-10) only; a detractor,
                                 a passive or a customer who never answered gets none
- `reward_tenure_short`          subscribed for less than `reward_min_tenure_months` (or tenure unknown)
- `reward_used_recently`         a reward was accepted within the last `reward_once_per_months`
- `referral_not_promoter`        a referral is for promoters only (see Guardrails for why not passives)
- `referral_already_referred`    the customer accepted a referral offer before: they have referred already
- `offer_cap_reached`            `max_offers_per_year` offers were already shown (follow-ups are exempt)
- `history_unavailable`          the customer's offer history cannot be read (store down): no offer that a
                                 history guardrail could forbid is made
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from retention.contract import APP_STORE_CHANNELS
from retention.decision import CancelRequest, PastOffer
from retention.offers import Catalog, Offer
from retention.value import monthly_price

# Offer types that change what the customer pays; only one may run at a time.
PRICE_CHANGING = frozenset({"pause", "discount", "downgrade"})
# Offer types that count towards the yearly cap. A follow-up is a support contact, not an incentive; a
# reward or a referral is one.
CAPPED = frozenset({"pause", "discount", "downgrade", "credit", "reward", "referral"})
# Offer types only promoters may get (NPS 9-10, by their last answer).
PROMOTERS_ONLY = frozenset({"reward", "referral"})


@dataclass(frozen=True)
class Standing:
    """What the customer-based guardrails need beyond the request: the NPS segment of the last answer
    (detractor, passive, promoter, none) and the tenure in days (None: unknown), as the features have them."""

    nps_segment: str = "none"
    tenure_days: float | None = None

    @classmethod
    def of(cls, features: dict) -> Standing:
        tenure = features.get("tenure_days")
        known = isinstance(tenure, (int, float)) and not isinstance(tenure, bool) and tenure == tenure  # not NaN
        return cls(str(features.get("nps_segment") or "none"), float(tenure) if known else None)


@dataclass(frozen=True)
class Guardrails:
    pause_once_per_days: int = 365
    discount_cooldown_days: int = 90
    max_offers_per_year: int = 3
    days_per_month: int = 30
    # A loyalty reward: only for promoters subscribed at least this long, at most once per this many months.
    reward_min_tenure_months: int = 12
    reward_once_per_months: int = 12
    # A referral only for promoters who never referred (no accepted referral in their history). Not for
    # passives: a 7-8 is by NPS's own definition someone who would not actively recommend us, so a referral
    # reward to them is mostly a credit in disguise paid to people unlikely to bring anyone.

    def __post_init__(self) -> None:
        for name in ("pause_once_per_days", "discount_cooldown_days", "max_offers_per_year", "days_per_month",
                     "reward_min_tenure_months", "reward_once_per_months"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"guardrails.{name} must be a non-negative integer, got {value!r}")


def _running(p: PastOffer, now: datetime, days_per_month: int) -> bool:
    return p.accepted and p.at + timedelta(days=p.months * days_per_month) > now


def exclusions(
    catalog: Catalog, request: CancelRequest, history: list[PastOffer] | None, now: datetime, rules: Guardrails,
    standing: Standing | None = None,
) -> dict[str, tuple[str, ...]]:
    """Offer id -> reason codes for every catalog offer this customer may NOT get now. `none` is never excluded.

    `history` None means it is unknown; then only offers no history guardrail applies to remain. `standing`
    None means the customer's NPS segment and tenure are unknown: no reward or referral.
    """
    standing = standing or Standing()
    promoter = standing.nps_segment == "promoter"
    month = timedelta(days=rules.days_per_month)
    unknown_history = history is None
    history = history or []
    year_ago = now - timedelta(days=365)
    recent = [p for p in history if year_ago <= p.at <= now]
    pauses = [p for p in history if p.accepted and p.offer_type == "pause"]
    discounts = [p for p in history if p.accepted and p.offer_type == "discount"]
    discount_running = any(_running(p, now, rules.days_per_month) for p in discounts)
    pause_running = any(_running(p, now, rules.days_per_month) for p in pauses)
    offers_shown = sum(1 for p in recent if p.offer_type in CAPPED)
    rewarded = any(p.accepted and p.offer_type == "reward" and now - p.at < rules.reward_once_per_months * month
                   for p in history)
    referred = any(p.accepted and p.offer_type == "referral" for p in history)

    out: dict[str, tuple[str, ...]] = {}
    for offer in catalog.offers:
        if offer.type == "none":
            continue
        codes = _static_codes(offer, request, catalog)
        if offer.type == "pause" and any(now - p.at < timedelta(days=rules.pause_once_per_days) for p in pauses):
            codes.append("pause_used_12m")
        if offer.type == "discount":
            if discount_running:
                codes.append("discount_active")
            elif any(now - p.at < timedelta(days=rules.discount_cooldown_days) for p in discounts):
                codes.append("discount_cooldown")
        if offer.type in PROMOTERS_ONLY and not promoter:
            codes.append(f"{offer.type}_not_promoter")
        if offer.type == "reward":
            if standing.tenure_days is None or standing.tenure_days < rules.reward_min_tenure_months * rules.days_per_month:
                codes.append("reward_tenure_short")
            if rewarded:
                codes.append("reward_used_recently")
        if offer.type == "referral" and referred:
            codes.append("referral_already_referred")
        if offer.type in PRICE_CHANGING and (
            (pause_running and offer.type != "pause") or (discount_running and offer.type != "discount")
        ):
            codes.append("no_stacking")
        if offer.type in CAPPED and offers_shown >= rules.max_offers_per_year:
            codes.append("offer_cap_reached")
        if offer.type in CAPPED and unknown_history:
            codes.append("history_unavailable")
        if codes:
            out[offer.id] = tuple(codes)
    return out


def _static_codes(offer: Offer, request: CancelRequest, catalog: Catalog) -> list[str]:
    """Exclusions that follow from the catalog and the subscription alone, not from history."""
    codes = []
    if not offer.enabled:
        codes.append(f"{offer.id}_disabled")
    if request.billing_period not in offer.billing_periods:
        codes.append(f"{offer.type}_ineligible_{request.billing_period}")
    if request.billing_channel not in offer.channels:
        store = request.billing_channel in APP_STORE_CHANNELS
        codes.append(f"{offer.type}_ineligible_{'app_store' if store else 'channel'}")
    if offer.type == "downgrade":
        current = float(monthly_price(request.price, request.billing_period))
        if (offer.to_plan is not None and request.plan_id == offer.to_plan) or current <= (offer.to_price or 0.0):
            codes.append("downgrade_not_cheaper")
        else:  # a plan unknown to the catalog (another business's data) keeps the price rule alone
            plan = catalog.plans.get(request.plan_id) if catalog.plans is not None else None
            if plan is not None and plan.downgrade_to != offer.to_plan:
                codes.append("downgrade_not_for_plan")
    return codes


def eligible_offers(catalog: Catalog, excluded: dict[str, tuple[str, ...]]) -> list[Offer]:
    """Catalog offers not excluded, in catalog order (`none` first when the catalog lists it first)."""
    return [o for o in catalog.offers if o.id not in excluded]
