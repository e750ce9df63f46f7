"""The model's view of a decision: which columns describe the (reason, offer) pair being scored.

The offer-response model scores "customer features + reason + offer". These columns are built here, once,
for training rows (the offer that was shown) and for decisions (every eligible offer), so the two cannot
disagree on how an offer is described.
"""

from __future__ import annotations

from retention.offers import Catalog, Offer

DECISION_NUMERIC = ["offer_months", "offer_percent", "offer_to_price"]
# reason_offer: the (reason, offer) pair as one category. Offer effects depend strongly on the reason (a
# follow-up saves technical cancels, a pause temporary ones); as one categorical column the trees can split on
# such pairs directly instead of needing two levels of splits per pair, which shallow trees rarely make.
DECISION_CATEGORICAL = ["reason", "offer_id", "offer_type", "reason_offer"]


def decision_columns(offer: Offer, reason: str) -> dict[str, object]:
    return {
        "reason": reason,
        "offer_id": offer.id,
        "offer_type": offer.type,
        "reason_offer": f"{reason}:{offer.id}",
        "offer_months": float(offer.months),
        "offer_percent": float(offer.percent),
        "offer_to_price": float(offer.to_price) if offer.to_price is not None else float("nan"),
    }


def offer_of(catalog: Catalog, offer_id: str | None) -> Offer:
    """The catalog offer for a logged offer id; an empty id (None, NaN or "") means no offer was shown."""
    if not isinstance(offer_id, str) or not offer_id:
        offer_id = "none"
    if offer_id not in catalog:
        raise ValueError(f"offer_id {offer_id!r} is not in the offer catalog (version {catalog.version})")
    return catalog[offer_id]
