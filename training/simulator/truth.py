"""The simulator's ground truth: the true probability that a cancel request ends in a save, per offer.

Importable on purpose: tests and evaluations use it to compute the Bayes-optimal AUC (the AUC of the true
probabilities) and the oracle decision (the offer with the highest true expected incremental value).

A world's truth is a `Response`. Two families differ in structure, not only in their numbers
(docs/worlds.md describes every world built from them):

- `ReasonResponse` (the reference world, docs/simulator.md): the save probability is a logistic function
  of what the customer did and said before the request (last NPS answer, trailing 30-day listening and its
  trend, tenure, plan), the reason they give, their price sensitivity and a small unobservable
  satisfaction term; offer effects are heterogeneous by reason and segment. Its knobs turn it into other
  worlds: discount depth that matters or not, pauses that help only some reasons, follow-ups that help only
  detractors, offers that push promoters away, more customers who stay anyway, more noise.
- `TypeResponse`: every customer has a latent type (deal seeker, seasonal, drifting, frustrated, settled)
  drawn from their customer attributes; the offer effect depends on the type, not on the reason (which is
  only weakly informative), and the base probability has thresholds and saturation instead of a linear
  logit. A learner tuned to the reference world's reason x offer structure has nothing to lean on here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retention.offers import Catalog, Offer
from retention.value import DEFAULT_HORIZON_MONTHS, expected_net_value

# Where a simulated data set keeps the truth of its cancel requests, outside the contract (training.simulator).
TRUTH_FILE = Path("_truth") / "requests.parquet"

# Logit of "still subscribed 30 days later" without any offer, by reason (the reference world).
REASON_BASE = (-0.3, -0.6, 0.3, -0.1, -0.3, -1.1, -0.2)
# Which reasons each offer type speaks to (logit increment per unit of offer strength).
PAUSE_BY_REASON = (0.2, 0.7, 1.3, 0.0, 0.1, -0.2, 0.2)
DISCOUNT_BY_REASON = (2.2, 0.5, 0.3, 0.0, 0.3, 1.4, 0.4)
DOWNGRADE_BY_REASON = (1.4, 1.0, 0.1, 0.0, 0.2, 0.4, 0.2)
CREDIT_BY_REASON = (0.2, 0.5, 0.1, 0.0, 1.6, 0.3, 0.3)
FOLLOWUP_BY_REASON = (-0.1, 0.0, -0.1, 1.3, 0.2, 0.0, 0.5)
# A loyalty reward (free extra content) speaks to content complaints and to "other" (no complaint: a thank
# you), a little to not_using; money reasons hardly (it is not a price cut). Only promoters and, more, the
# long-standing ones respond: see ReasonResponse._effect.
REWARD_BY_REASON = (0.1, 0.4, 0.1, 0.0, 1.1, 0.1, 0.6)
# A referral (invite a friend, both get a credit) keeps the referrer a little: a promoter who invites a friend
# is committing to the service; it does nothing for price or technical reasons.
REFERRAL_BY_REASON = (0.0, 0.2, 0.1, -0.1, 0.4, 0.0, 0.3)


@dataclass
class Context:
    """What the truth needs about each cancel request (arrays of equal length)."""

    reason: np.ndarray  # int index into REASONS
    nps_last: np.ndarray  # last NPS score before the request, NaN if never answered
    usage_30: np.ndarray  # listening minutes in the 30 days before the request day
    usage_prev_60: np.ndarray  # listening minutes in days 31..90 before the request day
    tenure_days: np.ndarray
    annual: np.ndarray  # bool
    price: np.ndarray  # list price per billing period
    billing_period: np.ndarray  # "monthly" / "annual"
    price_sensitivity: np.ndarray  # latent, 0..1.5
    satisfaction: np.ndarray  # latent, ~N(0, 1)
    recent_discount: np.ndarray  # bool: a discount accepted within the last 90 days
    latent_type: np.ndarray | None = None  # int index into TypeResponse.TYPES (worlds of that family)

    def __len__(self) -> int:
        return len(self.reason)


def usage_trend(usage_30: np.ndarray, usage_prev_60: np.ndarray) -> np.ndarray:
    """log ratio of the last 30 days to the average 30 days before them (0 = flat)."""
    return np.log((usage_30 + 30.0) / (usage_prev_60 / 2.0 + 30.0))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class Response:
    """A world's truth: P(still subscribed 30 days after the request | context, offer)."""

    def save_probability(self, offer: Offer, ctx: Context) -> np.ndarray:
        raise NotImplementedError

    def latent_types(self, rng: np.random.Generator, customers: dict[str, np.ndarray]) -> np.ndarray | None:
        """A latent type per customer, drawn once when they are created (None: this family has none)."""
        return None

    def reason_bias(self, latent_type: np.ndarray | None, m: int) -> np.ndarray:
        """Added to the reason logits of `m` requests (how much the stated reason reveals the type)."""
        return np.zeros((m, len(REASON_BASE)))


@dataclass(frozen=True)
class ReasonResponse(Response):
    """The reference family; the defaults are the reference world (docs/simulator.md)."""

    reason_base: tuple[float, ...] = REASON_BASE
    pause_by_reason: tuple[float, ...] = PAUSE_BY_REASON
    discount_by_reason: tuple[float, ...] = DISCOUNT_BY_REASON
    downgrade_by_reason: tuple[float, ...] = DOWNGRADE_BY_REASON
    credit_by_reason: tuple[float, ...] = CREDIT_BY_REASON
    followup_by_reason: tuple[float, ...] = FOLLOWUP_BY_REASON
    reward_by_reason: tuple[float, ...] = REWARD_BY_REASON
    referral_by_reason: tuple[float, ...] = REFERRAL_BY_REASON
    stay_shift: float = 0.0  # added to the no-offer logit: more customers who stay anyway
    unobserved: float = 0.25  # weight of the latent satisfaction no feature sees (noise)
    depth_exponent: float = 1.0  # a discount's strength grows as (percent / 40) ** this: 0 = depth irrelevant
    followup_detractors_only: bool = False  # a follow-up helps detractors and nobody else
    promoter_backfire: float = 0.0  # subtracted from every offer's effect for promoters and heavy users
    effect_scale: float = 1.0  # every offer effect multiplied by this (0: offers change nothing)
    effect_shift: float = 0.0  # added to every offer's effect (negative: offers push customers away)

    def base_logit(self, ctx: Context) -> np.ndarray:
        answered = ~np.isnan(ctx.nps_last)
        nps_term = np.where(answered, 0.32 * (np.nan_to_num(ctx.nps_last, nan=7.0) - 7.0), -0.1)
        return (
            -0.85
            + self.stay_shift
            + np.asarray(self.reason_base)[ctx.reason]
            + nps_term
            + 0.55 * (np.log1p(ctx.usage_30) - 5.0)
            + 0.6 * np.clip(usage_trend(ctx.usage_30, ctx.usage_prev_60), -2.0, 2.0)
            + 0.18 * np.log1p(ctx.tenure_days / 30.0)
            + 0.5 * ctx.annual
            + self.unobserved * ctx.satisfaction
        )

    def offer_effect(self, offer: Offer, ctx: Context) -> np.ndarray:
        """Logit increment of giving `offer` rather than nothing."""
        if offer.type == "none":
            return np.zeros(len(ctx))
        effect = self._effect(offer, ctx)
        if self.promoter_backfire:
            promoter = np.nan_to_num(ctx.nps_last, nan=0.0) >= 9
            heavy = np.log1p(ctx.usage_30) > 6.0
            effect = effect - self.promoter_backfire * (promoter | heavy)
        return self.effect_scale * effect + self.effect_shift

    def _effect(self, offer: Offer, ctx: Context) -> np.ndarray:
        r = ctx.reason
        ps = ctx.price_sensitivity
        detractor = np.nan_to_num(ctx.nps_last, nan=7.0) <= 6
        promoter = np.nan_to_num(ctx.nps_last, nan=0.0) >= 9
        light_user = np.log1p(ctx.usage_30) < 4.5
        if offer.type == "pause":
            strength = 0.55 + 0.25 * offer.months
            return np.asarray(self.pause_by_reason)[r] * strength + 0.3 * light_user - 0.1
        if offer.type == "discount":
            strength = (offer.percent / 40.0) ** self.depth_exponent * (0.6 + 0.2 * offer.months)
            return np.asarray(self.discount_by_reason)[r] * ps * strength - 1.0 * ctx.recent_discount - 0.1
        if offer.type == "downgrade":
            return np.asarray(self.downgrade_by_reason)[r] * (0.4 + 0.6 * ps) + 0.4 * light_user - 0.2
        if offer.type == "credit":
            return np.asarray(self.credit_by_reason)[r] + 0.5 * promoter - 0.05
        if offer.type == "followup":
            if self.followup_detractors_only:
                return np.where(detractor, 0.6 + np.maximum(np.asarray(self.followup_by_reason)[r], 0.0), -0.3)
            return np.asarray(self.followup_by_reason)[r] * (1.0 + 0.8 * detractor) + 0.3 * detractor - 0.1
        if offer.type == "reward":
            # Promoters feel thanked, more so the longer they have been with us (years, up to 4); anyone else
            # sees a token gift (-0.3: a detractor is not won back by free content).
            years = np.clip(ctx.tenure_days / 365.0, 0.0, 4.0)
            return np.where(promoter, np.asarray(self.reward_by_reason)[r] + 0.5 + 0.15 * years, -0.3)
        if offer.type == "referral":
            # A promoter asked to recommend us is reminded why they like it; a non-promoter is only asked a
            # favour (-0.2). The friend's value is not here: it is the catalog's signup_rate x signup_value
            # (retention.value.referral_value), which the simulator takes as true.
            return np.where(promoter, np.asarray(self.referral_by_reason)[r] + 0.3, -0.2)
        raise ValueError(f"unknown offer type {offer.type}")

    def save_probability(self, offer: Offer, ctx: Context) -> np.ndarray:
        return _sigmoid(self.base_logit(ctx) + self.offer_effect(offer, ctx))


@dataclass(frozen=True)
class TypeResponse(Response):
    """Offer effects by latent customer type; see the module docstring."""

    TYPES = ("deal_seeker", "seasonal", "drifting", "frustrated", "settled")
    # Logit effect of each offer type per latent type (rows: TYPES; columns: pause, discount, downgrade,
    # credit, followup, reward, referral). Deal seekers take any discount (depth hardly matters: square
    # root), seasonal customers want a pause, drifting ones respond to extra content, frustrated ones to a
    # person and are insulted by money, settled ones would stay and are put off by any offer but a thank-you
    # reward. A reward or referral reaches only promoters (guardrails); deal seekers like any reward,
    # drifting ones the free content; the frustrated are put off by being asked to refer.
    effects: tuple[tuple[float, ...], ...] = (
        (-0.3, 1.9, 1.0, 0.3, -0.4, 0.5, 0.6),
        (1.6, 0.2, -0.3, 0.2, 0.0, 0.2, 0.0),
        (0.3, 0.3, 0.6, 1.3, 0.4, 1.1, 0.2),
        (-0.5, -0.6, -0.3, 0.4, 1.8, 0.1, -0.4),
        (-0.4, -0.5, -0.6, -0.3, 0.1, 0.3, 0.1),
    )
    base_by_type: tuple[float, ...] = (-0.9, -0.4, -1.2, -1.0, 1.3)
    type_noise: float = 0.2  # scale of the Gumbel noise when a type is drawn from the attributes (0: fully determined)
    unobserved: float = 0.3
    stay_shift: float = 0.0
    effect_scale: float = 1.0
    effect_shift: float = 0.0

    def latent_types(self, rng, customers):
        acq, age, household, price, annual, channel = (customers[k] for k in (
            "acquisition", "age_band", "household", "price", "annual", "channel"))
        n = len(acq)
        logits = np.column_stack([
            1.6 * (acq == "promo") + 0.7 * (household >= 4) + 0.4 * (price > 20) - 0.6,  # deal seeker
            1.0 * np.isin(age, ("25-34", "35-49")) + 0.5 * (household <= 2) - 0.7,  # seasonal
            1.2 * (age == "18-24") + 0.6 * (acq == "organic") - 0.8,  # drifting
            1.0 * np.isin(channel, ("android", "partner")) + 0.4 * (age == "50+") - 0.9,  # frustrated
            1.3 * annual + 1.0 * (acq == "referral") + 0.7 * (age == "50+") - 0.9,  # settled
        ])
        return (logits + self.type_noise * rng.gumbel(size=(n, len(self.TYPES)))).argmax(axis=1)

    def reason_bias(self, latent_type, m):
        # The stated reason is only a weak hint of the type: frustrated customers say technical a bit more,
        # deal seekers too_expensive, seasonal ones temporary; everything else is the process's own reasons.
        bias = np.zeros((m, len(REASON_BASE)))
        if latent_type is not None:
            bias[:, 0] += 0.5 * (latent_type == 0)
            bias[:, 2] += 0.6 * (latent_type == 1)
            bias[:, 3] += 0.6 * (latent_type == 3)
            bias[:, 1] += 0.4 * (latent_type == 2)
        return bias

    def save_probability(self, offer: Offer, ctx: Context) -> np.ndarray:
        t = ctx.latent_type if ctx.latent_type is not None else np.zeros(len(ctx), dtype=int)
        nps = ctx.nps_last
        answered = ~np.isnan(nps)
        base = (
            np.asarray(self.base_by_type)[t]
            + self.stay_shift
            + np.where(answered, 0.9 * np.tanh((np.nan_to_num(nps, nan=7.0) - 7.0) / 2.0), -0.2)
            + 0.7 * (ctx.usage_30 > 400) - 0.5 * (ctx.usage_30 < 30)  # thresholds, not a log-linear slope
            + 0.5 * np.minimum(ctx.tenure_days / 365.0, 2.0) - 0.3 * (ctx.tenure_days < 60)
            + self.unobserved * ctx.satisfaction
        )
        if offer.type == "none":
            return _sigmoid(base)
        column = ("pause", "discount", "downgrade", "credit", "followup", "reward", "referral").index(offer.type)
        effect = np.asarray(self.effects)[t, column]
        if offer.type == "discount":
            effect = effect * np.sqrt(offer.percent / 40.0) - 0.8 * ctx.recent_discount
        elif offer.type == "pause":
            effect = effect * (0.7 + 0.15 * offer.months)
        return _sigmoid(base + self.effect_scale * effect + self.effect_shift)


# The reference world's truth, and the module-level functions the reference tests and docs use.
REFERENCE = ReasonResponse()


def base_logit(ctx: Context) -> np.ndarray:
    return REFERENCE.base_logit(ctx)


def offer_effect(offer: Offer, ctx: Context) -> np.ndarray:
    """Logit increment of giving `offer` rather than nothing (reference world)."""
    return REFERENCE.offer_effect(offer, ctx)


def save_probability(offer: Offer, ctx: Context, response: Response = REFERENCE) -> np.ndarray:
    """True P(still subscribed 30 days after the request | context, offer)."""
    return response.save_probability(offer, ctx)


def oracle_choice(
    catalog: Catalog, ctx: Context, eligible: dict[str, np.ndarray], response: Response = REFERENCE,
    horizon_months: int = DEFAULT_HORIZON_MONTHS,
) -> tuple[np.ndarray, np.ndarray]:
    """Best offer id per request under the true response, among eligible offers, and its incremental value
    (expected net revenue over the horizon minus that of giving nothing)."""
    values = []
    for o in catalog.offers:
        v = expected_net_value(o, response.save_probability(o, ctx), ctx.price, ctx.billing_period, horizon_months)
        values.append(np.where(eligible[o.id], v, -np.inf))
    values_arr = np.vstack(values)
    best = values_arr.argmax(axis=0)
    none_value = values_arr[catalog.ids.index("none")]
    ids = np.array(catalog.ids, dtype=object)
    return ids[best], values_arr[best, np.arange(len(ctx))] - none_value
