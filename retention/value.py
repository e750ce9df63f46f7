"""What an offer is worth: revenue kept over a horizon if the customer stays, and what the offer costs.

Used by the decision policy and by the simulator's oracle alike, so that "incremental net revenue" means the
same thing when we choose an offer and when we judge the choice. All amounts are per customer, in the plan's
currency, over `horizon_months` (default 6) from the cancel request.
"""

from __future__ import annotations

import numpy as np

from retention.offers import Offer

DEFAULT_HORIZON_MONTHS = 6


def monthly_price(price: np.ndarray | float, billing_period: np.ndarray | str) -> np.ndarray:
    """List price per month: annual prices are spread over 12 months."""
    price = np.asarray(price, dtype=float)
    annual = np.asarray(billing_period) == "annual"
    return np.where(annual, price / 12.0, price)


def stay_revenue(
    offer: Offer,
    price: np.ndarray | float,
    billing_period: np.ndarray | str,
    horizon_months: int = DEFAULT_HORIZON_MONTHS,
) -> np.ndarray:
    """Revenue over the horizon from a customer who stays after being given `offer`.

    A pause bills nothing for its months; a discount bills `percent` less for its months (also for a customer
    who would have stayed anyway: that is exactly why a needless discount is a loss); a downgrade bills the
    cheaper plan for the whole horizon.
    """
    m = monthly_price(price, billing_period)
    if offer.type == "pause":
        return m * max(horizon_months - offer.months, 0)
    if offer.type == "discount":
        discounted = min(offer.months, horizon_months)
        return m * horizon_months - m * (offer.percent / 100.0) * discounted
    if offer.type == "downgrade":
        return np.minimum(m, offer.to_price or 0.0) * horizon_months
    return m * horizon_months


def referral_value(offer: Offer) -> float:
    """What a referral brings beyond the referrer's own stay, per referrer who stays: the share who bring a
    friend who signs up (`signup_rate`) times that friend's revenue over the horizon less the friend's
    reward. 0 for every other offer type."""
    if offer.type != "referral":
        return 0.0
    return offer.signup_rate * (offer.signup_value - offer.friend_cost)


def net_stay_value(offer: Offer, price: np.ndarray | float, billing_period: np.ndarray | str,
                   horizon_months: int = DEFAULT_HORIZON_MONTHS) -> np.ndarray:
    """What a customer who stays after `offer` is worth net: stay revenue - the offer's direct cost + what a
    referral brings from the friend (`referral_value`)."""
    return stay_revenue(offer, price, billing_period, horizon_months) - offer.cost + referral_value(offer)


def expected_net_value(
    offer: Offer,
    p_stay: np.ndarray | float,
    price: np.ndarray | float,
    billing_period: np.ndarray | str,
    horizon_months: int = DEFAULT_HORIZON_MONTHS,
) -> np.ndarray:
    """E[revenue - cost | offer] = P(stay | offer) * (stay revenue - offer cost + referral value).

    The direct cost (a content credit, support time, a reward) is only incurred when the customer takes the
    offer and stays, which is how the simulator and the billing system account for it; likewise a referral
    is only passed on by a customer who stays, so its friend's value is counted for those alone.
    """
    return np.asarray(p_stay, dtype=float) * net_stay_value(offer, price, billing_period, horizon_months)
