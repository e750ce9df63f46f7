"""Logged cancel flows as offline policy work needs them: for each labelled flow, which offers the guardrails
allowed then, what the fallback rules would have chosen, the logged offer with its propensity, and what
each offer is worth if the customer stays (net revenue over the value horizon).

Learner selection, the policy gate (training.selection) and the off-policy estimates all read these, so
"what the rules would have done" and "what a save is worth" are computed once, the way the service
decides (retention.eligibility, retention.policy.rules_choice, retention.value).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from retention.contract import is_missing
from retention.decision import CancelRequest, PastOffer, Snapshot
from retention.eligibility import Standing, exclusions
from retention.features import FeatureSpec
from retention.model import decision_columns, offer_of
from retention.offers import Catalog
from retention.ope import LoggedFlows
from retention.policy import PolicyConfig, rules_choice
from retention.utc import as_utc
from retention.value import net_stay_value


def histories(con, catalog: Catalog) -> dict[str, tuple[list[datetime], list[PastOffer]]]:
    """Per customer, the logged cancel flows in time order, as the guardrails see them in production."""
    flows = con.execute(
        "SELECT customer_id, requested_at, offer_id, coalesce(accepted, false) AS accepted "
        "FROM cancel_requests ORDER BY customer_id, requested_at"
    ).fetchall()
    out: dict[str, tuple[list[datetime], list[PastOffer]]] = {}
    for customer_id, at, offer_id, accepted in flows:
        offer = offer_of(catalog, offer_id)
        at = as_utc(at)
        times, offers = out.setdefault(customer_id, ([], []))
        times.append(at)
        offers.append(PastOffer(offer.id, offer.type, at, bool(accepted), offer.months))
    return out


def request_of(row: dict) -> CancelRequest:
    """The cancel request a flow's features describe (the plan and price as of the request)."""
    return CancelRequest(row["customer_id"], row["reason"], row["billing_period"], row["billing_channel"],
                         float(row["price"]), plan_id=row["plan_id"], country=row["country"])


def replayed_requests(rows: pd.DataFrame, spec: FeatureSpec, past: dict):
    """(request, snapshot, now, history) of each row of `rows` (features of `spec` as of each request), as the
    service had them at the time: the request's own fields, the features as a snapshot as of then, and the
    customer's logged flows before it (`past`: histories). Policy evaluation and off-policy replay read these."""
    for row in rows[list(dict.fromkeys([*spec.names, "customer_id", "as_of", "reason", "billing_period",
                                        "billing_channel", "price", "plan_id", "country"]))].to_dict("records"):
        now = as_utc(pd.Timestamp(row["as_of"]).to_pydatetime())
        snapshot = Snapshot({k: None if is_missing(row[k]) else row[k] for k in spec.names}, as_of=now)
        times, offers = past.get(row["customer_id"], ((), ()))
        yield request_of(row), snapshot, now, list(offers[:bisect.bisect_left(times, now)])


@dataclass
class Flows:
    """Row-aligned with `rows` (training.train.response_rows, plus a `propensity` column)."""

    rows: pd.DataFrame
    offers: tuple[str, ...]  # the catalog's offer ids: column j of the matrices below
    eligible: np.ndarray  # (n, offers) bool: the guardrails allowed the offer at the time
    rules: np.ndarray  # (n,) the fallback rules' choice
    logged: np.ndarray  # (n,) the offer shown
    propensity: np.ndarray  # (n,) its logged probability; NaN where the log has none
    revenue: np.ndarray  # (n, offers): net revenue over the horizon if the customer stays with that offer

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def none(self) -> int:
        return self.offers.index("none")

    @property
    def rewards(self) -> np.ndarray:
        """What each logged flow earned: the logged offer's net revenue if the customer stayed, else 0."""
        return self.rows["label"].to_numpy(dtype=float) * self.revenue[np.arange(len(self)), self.logged]

    def subset(self, mask: np.ndarray) -> Flows:
        idx = np.flatnonzero(mask)
        return Flows(self.rows.iloc[idx].reset_index(drop=True), self.offers, self.eligible[idx], self.rules[idx],
                     self.logged[idx], self.propensity[idx], self.revenue[idx])

    @property
    def has_propensities(self) -> bool:
        return len(self) > 0 and not np.isnan(self.propensity).any()

    def log(self) -> LoggedFlows:
        return LoggedFlows(self.logged, self.propensity, self.rewards)

    def values(self, p_stay: np.ndarray) -> np.ndarray:
        """(n, offers) expected net revenue of each offer given P(stay | offer)."""
        return p_stay * self.revenue

    def greedy(self, values: np.ndarray, allowed: np.ndarray | None = None) -> np.ndarray:
        """The policy's choice: the allowed offer of highest expected value, none unless it beats none.
        `allowed`: (offers,) bool, the offers the policy may choose at all (default: every one)."""
        eligible = self.eligible if allowed is None else self.eligible & allowed[None, :]
        incremental = np.where(eligible, values - values[:, [self.none]], -np.inf)
        best = incremental.argmax(axis=1)
        return np.where(incremental[np.arange(len(self)), best] > 0, best, self.none)

    def fixed(self, offer: int) -> np.ndarray:
        """Always `offer` where the guardrails allow it, else none."""
        return np.where(self.eligible[:, offer], offer, self.none)


def build_flows(con, rows: pd.DataFrame, catalog: Catalog, policy: PolicyConfig) -> Flows:
    """Eligibility, the rules' choice and the revenues of every flow in `rows`, as the service would have
    decided at the time (its guardrails over the customer's earlier logged flows)."""
    ids = tuple(catalog.ids)
    col = {o: j for j, o in enumerate(ids)}
    past = histories(con, catalog)
    n = len(rows)
    eligible = np.ones((n, len(ids)), dtype=bool)
    rules = np.zeros(n, dtype=np.int64)
    fields = ["customer_id", "reason", "billing_period", "billing_channel", "price", "plan_id", "country",
              "as_of", "nps_segment", "tenure_days"]
    for i, row in enumerate(rows[fields].to_dict("records")):
        now = as_utc(pd.Timestamp(row["as_of"]).to_pydatetime())
        times, offers = past.get(row["customer_id"], ((), ()))
        history = list(offers[:bisect.bisect_left(times, now)])
        request = request_of(row)
        excluded = exclusions(catalog, request, history, now, policy.guardrails, Standing.of(row))
        for offer_id in excluded:
            eligible[i, col[offer_id]] = False
        allowed = {o for o in ids if o not in excluded}
        rules[i] = col[rules_choice(policy, row["nps_segment"], row["reason"], allowed)]
    logged = np.array([col[offer_of(catalog, o).id] for o in rows["offer_id"]], dtype=np.int64)
    propensity = (rows["propensity"].to_numpy(dtype=float) if "propensity" in rows
                  else np.full(n, np.nan))
    price, period = rows["price"].to_numpy(dtype=float), rows["billing_period"].to_numpy()
    revenue = np.column_stack([net_stay_value(catalog[o], price, period, policy.horizon_months) for o in ids])
    return Flows(rows.reset_index(drop=True), ids, eligible, rules, logged, propensity, revenue)


def offer_probabilities(estimator, rows: pd.DataFrame, catalog: Catalog) -> np.ndarray:
    """(n, offers) P(stay | the flow's customer and reason, each offer) from a fitted learner."""
    customer = rows.drop(columns=[c for c in rows.columns if c in decision_columns(catalog["none"], "other")])
    reasons = rows["reason"].to_numpy()
    out = []
    for offer in catalog.offers:
        decisions = pd.DataFrame([decision_columns(offer, r) for r in reasons], index=customer.index)
        out.append(estimator.predict_proba(pd.concat([customer, decisions], axis=1))[:, 1])
    return np.column_stack(out)
