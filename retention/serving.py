"""Features for one live decision: the customer's stored snapshot brought forward to now and merged with
what arrived since (NPS answers and decisions recorded by the service) and with what the request says.

The snapshot itself comes from `retention.features.compute_features` (one definition for training and
serving). This module only *updates* those values the way the SQL would have computed them at `now`:
- ages (tenure, days since the last answer / payment / request / discount / pause) grow by the time elapsed;
- NPS answers and cancel decisions after the snapshot are folded into the NPS and history features;
- the request's plan, price, billing and inline context (NPS answers, usage summary) replace stored values.
Usage sums cannot be brought forward without the daily rows, so they stay as of the snapshot unless the
request sends a usage summary; /readyz reports the snapshot's age. A test checks these updates against
`compute_features` run at `now` on the same data.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from retention.contract import is_missing, nps_segment
from retention.decision import CancelRequest, NpsAnswer, PastOffer, Snapshot
from retention.features import LOOKBACK_DAYS, FeatureSpec, usage_trend

# Features that are "days since" something (or an age) and therefore grow as time passes.
_AGES = ("tenure_days", "nps_days_since_last", "days_since_last_payment", "days_since_last_request",
         "days_since_last_discount", "days_since_last_pause")
# Counts that are zero, not unknown, for a customer the service has never seen.
_ZERO_FOR_NEW = ("nps_answered", "nps_count", "paid_90d", "prior_requests", "prior_offers", "prior_accepted")


def _days(delta: timedelta) -> float:
    return delta.total_seconds() / 86400.0


def new_customer_values(spec: FeatureSpec) -> dict[str, object]:
    """A customer the service knows nothing about: counts are zero, everything else is unknown (NaN/None).

    Usage is unknown rather than zero: zero usage is a strong churn signal that an unknown customer has not
    given; the model sends missing values down its most common branch.
    """
    values: dict[str, object] = {name: math.nan for name in spec.numeric}
    values.update({name: None for name in spec.categorical})
    values.update({name: 0.0 for name in _ZERO_FOR_NEW})
    values["nps_segment"] = "none"
    return values


def live_features(
    spec: FeatureSpec,
    request: CancelRequest,
    snapshot: Snapshot | None,
    now: datetime,
    history: list[PastOffer] = (),
    nps_answers: list[NpsAnswer] = (),
) -> tuple[dict[str, object], list[str]]:
    """Feature values for `request` at `now`, and context reason codes.

    `history` and `nps_answers` are what the service recorded for this customer; only the part after the
    snapshot is folded in (the snapshot already counts the rest).
    """
    codes: list[str] = []
    if snapshot is None:
        values = new_customer_values(spec)
        since = datetime.min.replace(tzinfo=now.tzinfo)
        codes.append("customer_unknown")
    else:
        values = {name: snapshot.values.get(name) for name in spec.names}
        for name, v in values.items():
            if v is None and name in spec.numeric:
                values[name] = math.nan
        since = snapshot.as_of
        _age(values, spec, now - snapshot.as_of)

    if request.signup_at is not None:
        values["tenure_days"] = max(_days(now - request.signup_at), 0.0)
    values["price"] = float(request.price)
    values["billing_period"] = request.billing_period
    values["billing_channel"] = request.billing_channel
    if request.plan_id is not None:
        values["plan_id"] = request.plan_id
    if request.country is not None:
        values["country"] = request.country

    if request.nps is not None:
        _reset_nps(values)
        _fold_nps(values, list(request.nps), now)
    else:
        _fold_nps(values, [a for a in nps_answers if a.responded_at >= since], now)
    _fold_history(values, [p for p in history if since <= p.at < now], now)
    if request.usage is not None:
        _apply_usage(values, spec, request)

    segment = nps_segment(values["nps_last"])
    values["nps_segment"] = segment
    codes.insert(0, f"nps_{'missing' if segment == 'none' else segment}")
    if not is_missing(values["nps_trend"]) and values["nps_trend"] <= -3:
        codes.append("nps_drop")
    return values, codes


def _age(values: dict[str, object], spec: FeatureSpec, elapsed: timedelta) -> None:
    days = _days(elapsed)
    for name in _AGES:
        if not is_missing(values.get(name)):
            values[name] = float(values[name]) + days
    whole_days = float(elapsed.days)  # usage recency is counted in whole days, as in the SQL
    for m in spec.metrics:
        name = f"{m}_days_since_last"
        if not is_missing(values.get(name)):
            values[name] = float(values[name]) + whole_days


def _reset_nps(values: dict[str, object]) -> None:
    values.update(nps_answered=0.0, nps_count=0.0, nps_last=math.nan, nps_prev=math.nan, nps_trend=math.nan,
                  nps_days_since_last=math.nan)


def _fold_nps(values: dict[str, object], answers: list[NpsAnswer], now: datetime) -> None:
    """Add answers (strictly before now, within the look-back) to the NPS features, oldest first."""
    oldest = now - timedelta(days=LOOKBACK_DAYS)
    for a in sorted((a for a in answers if oldest <= a.responded_at < now), key=lambda a: a.responded_at):
        values["nps_prev"] = values["nps_last"]
        values["nps_last"] = float(a.score)
        values["nps_count"] = float(values["nps_count"] or 0.0) + 1.0
        values["nps_answered"] = 1.0
        values["nps_days_since_last"] = _days(now - a.responded_at)
        prev = values["nps_prev"]
        values["nps_trend"] = math.nan if is_missing(prev) else values["nps_last"] - prev


def _fold_history(values: dict[str, object], later: list[PastOffer], now: datetime) -> None:
    """Count cancel flows the service decided after the snapshot, as the SQL counts cancel_requests."""
    if not later:
        return
    values["prior_requests"] = float(values["prior_requests"] or 0.0) + len(later)
    values["prior_offers"] = float(values["prior_offers"] or 0.0) + sum(p.offer_id != "none" for p in later)
    values["prior_accepted"] = float(values["prior_accepted"] or 0.0) + sum(p.accepted for p in later)
    values["days_since_last_request"] = _days(now - max(p.at for p in later))
    for kind in ("discount", "pause"):
        taken = [p.at for p in later if p.accepted and p.offer_type == kind]
        if taken:
            values[f"days_since_last_{kind}"] = _days(now - max(taken))


def _apply_usage(values: dict[str, object], spec: FeatureSpec, request: CancelRequest) -> None:
    for u in request.usage or ():
        if u.metric not in spec.metrics:
            continue  # a metric the model was not trained on carries no information for it
        m = u.metric
        values[f"{m}_7d"], values[f"{m}_30d"], values[f"{m}_90d"] = float(u.last_7d), float(u.last_30d), float(u.last_90d)
        values[f"{m}_trend"] = usage_trend(float(u.last_30d), float(u.last_90d))
        if u.active_days_30 is not None:
            values[f"{m}_active_days_30"] = float(u.active_days_30)
        values[f"{m}_days_since_last"] = math.nan if u.days_since_last is None else float(u.days_since_last)
