"""The simulator's ground truth: the true probability that a cancel request ends in a save, per offer.

Importable on purpose: tests and evaluations use it to compute the Bayes-optimal AUC (the AUC of the true
probabilities) and the oracle decision (the offer with the highest true expected incremental value).

The generative story (see docs/simulator.md): the save probability depends on what the customer did and said
before the request (last NPS answer, trailing 30-day listening, its trend, tenure, plan), on the reason they
give, on their price sensitivity (driven by how they were acquired, household size and price, plus a little
noise), a small unobservable satisfaction term, and on the offer. Offer effects are heterogeneous: a pause
helps temporary and not-using reasons, discounts help price-sensitive customers, a downgrade helps the
price-conscious and light users, a credit helps content complaints and promoters, a personal follow-up helps
technical problems, above all for detractors. Many customers stay without any offer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retention.offers import Catalog, Offer
from retention.value import expected_net_value

# Where a simulated data set keeps the truth of its cancel requests, outside the contract (training.simulator).
TRUTH_FILE = Path("_truth") / "requests.parquet"

# Logit of "still subscribed 30 days later" without any offer, by reason.
REASON_BASE = np.array([-0.3, -0.6, 0.3, -0.1, -0.3, -1.1, -0.2])
# Which reasons each offer type speaks to (logit increment per unit of offer strength).
PAUSE_BY_REASON = np.array([0.2, 0.7, 1.3, 0.0, 0.1, -0.2, 0.2])
DISCOUNT_BY_REASON = np.array([2.2, 0.5, 0.3, 0.0, 0.3, 1.4, 0.4])
DOWNGRADE_BY_REASON = np.array([1.4, 1.0, 0.1, 0.0, 0.2, 0.4, 0.2])
CREDIT_BY_REASON = np.array([0.2, 0.5, 0.1, 0.0, 1.6, 0.3, 0.3])
FOLLOWUP_BY_REASON = np.array([-0.1, 0.0, -0.1, 1.3, 0.2, 0.0, 0.5])


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

    def __len__(self) -> int:
        return len(self.reason)


def usage_trend(usage_30: np.ndarray, usage_prev_60: np.ndarray) -> np.ndarray:
    """log ratio of the last 30 days to the average 30 days before them (0 = flat)."""
    return np.log((usage_30 + 30.0) / (usage_prev_60 / 2.0 + 30.0))


def base_logit(ctx: Context) -> np.ndarray:
    answered = ~np.isnan(ctx.nps_last)
    nps_term = np.where(answered, 0.32 * (np.nan_to_num(ctx.nps_last, nan=7.0) - 7.0), -0.1)
    return (
        -0.85
        + REASON_BASE[ctx.reason]
        + nps_term
        + 0.55 * (np.log1p(ctx.usage_30) - 5.0)
        + 0.6 * np.clip(usage_trend(ctx.usage_30, ctx.usage_prev_60), -2.0, 2.0)
        + 0.18 * np.log1p(ctx.tenure_days / 30.0)
        + 0.5 * ctx.annual
        + 0.25 * ctx.satisfaction
    )


def offer_effect(offer: Offer, ctx: Context) -> np.ndarray:
    """Logit increment of giving `offer` rather than nothing."""
    r = ctx.reason
    ps = ctx.price_sensitivity
    detractor = np.nan_to_num(ctx.nps_last, nan=7.0) <= 6
    promoter = np.nan_to_num(ctx.nps_last, nan=0.0) >= 9
    light_user = np.log1p(ctx.usage_30) < 4.5
    if offer.type == "none":
        return np.zeros(len(ctx))
    if offer.type == "pause":
        strength = 0.55 + 0.25 * offer.months
        return PAUSE_BY_REASON[r] * strength + 0.3 * light_user - 0.1
    if offer.type == "discount":
        strength = offer.percent / 40.0 * (0.6 + 0.2 * offer.months)
        return DISCOUNT_BY_REASON[r] * ps * strength - 1.0 * ctx.recent_discount - 0.1
    if offer.type == "downgrade":
        return DOWNGRADE_BY_REASON[r] * (0.4 + 0.6 * ps) + 0.4 * light_user - 0.2
    if offer.type == "credit":
        return CREDIT_BY_REASON[r] + 0.5 * promoter - 0.05
    if offer.type == "followup":
        return FOLLOWUP_BY_REASON[r] * (1.0 + 0.8 * detractor) + 0.3 * detractor - 0.1
    raise ValueError(f"unknown offer type {offer.type}")


def save_probability(offer: Offer, ctx: Context) -> np.ndarray:
    """True P(still subscribed 30 days after the request | context, offer)."""
    return 1.0 / (1.0 + np.exp(-(base_logit(ctx) + offer_effect(offer, ctx))))


def oracle_choice(
    catalog: Catalog, ctx: Context, eligible: dict[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Best offer id per request under the true response, among eligible offers, and its incremental value
    (expected net revenue minus that of giving nothing)."""
    values = []
    for o in catalog.offers:
        v = expected_net_value(o, save_probability(o, ctx), ctx.price, ctx.billing_period)
        values.append(np.where(eligible[o.id], v, -np.inf))
    values_arr = np.vstack(values)
    best = values_arr.argmax(axis=0)
    none_value = values_arr[catalog.ids.index("none")]
    ids = np.array(catalog.ids, dtype=object)
    return ids[best], values_arr[best, np.arange(len(ctx))] - none_value
