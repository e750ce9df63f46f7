"""An offer experiment end to end: simulated customers cancel through the real API, react to what the
experiment shows them as the simulator says they would, and the analysis is checked against the truth.

    retention experiment simulate --data var/data/eval-seed8 --url http://127.0.0.1:8000 --key ADMIN_KEY \
        --name offer-variants --limit 6000 --html var/experiments/offer-variants.html

The service must run with an experiments file in which `--name` is running (the README shows one). For each
simulated customer (their first cancel request in the data set) this posts a decision; for those who enter
the experiment it then posts what followed, drawn from the simulator's TRUE probability that the customer
stays given the offer they were shown (the data set's `_truth`):

- `shown` for 98% of exposures (the rest never saw the answer: a closed tab), at random, whatever the arm;
- stays ~ Bernoulli(p_true(offer)); an offer is `accepted` by those who stay and by 15% of those who leave
  anyway (accepted, then cancelled 10-25 days later: not a save), else `declined`; leavers who did not
  accept get a `cancelled` outcome;
- billing's `still_active` at day 30 (= stays) and day 90 (stays and 85% of them are still there);
- monthly `payment`s at days 15, 45, 75 while active, at the price the offer leaves (a pause bills nothing
  for its months, a discount bills less for its months, a downgrade bills the cheaper plan).

Outcomes are dated after the decision as in real life, so they lie in the future of the run; the report is
read "as of" 100 days after the last decision. The true value of each arm is computed from the same
probabilities without any draw (its expectation over the arm's own customers), so the report can be checked
against it: does it rank the arms as the truth does?
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import pandas as pd
import requests

from retention.offers import Catalog, Offer
from retention.value import monthly_price
from training.simulator.truth import TRUTH_FILE

if TYPE_CHECKING:
    from retention.experiment_analysis import ExperimentResult

SHOWN_SHARE = 0.98
ACCEPT_THEN_LEAVE = 0.15  # of those who leave anyway, the share who accept first
STILL_THERE_AT_90 = 0.85  # of those active at day 30
BILL_DAYS = (15, 45, 75)
REPORT_DELAY_DAYS = 100


class Client(Protocol):
    def post(self, path: str, body: dict) -> tuple[int, dict]: ...
    def get(self, path: str, params: dict | None = None) -> tuple[int, dict]: ...


class HttpClient:
    """The API over HTTP (requests), for a running service."""

    def __init__(self, base_url: str, key: str) -> None:
        self.base = base_url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {key}"

    def post(self, path: str, body: dict) -> tuple[int, dict]:
        r = self.session.post(self.base + path, json=body, timeout=30)
        return r.status_code, r.json()

    def get(self, path: str, params: dict | None = None) -> tuple[int, dict]:
        r = self.session.get(self.base + path, params=params, timeout=120)
        return r.status_code, r.json()


@dataclass(frozen=True)
class Customer:
    request_id: str
    customer_id: str
    reason: str
    plan_id: str
    price: float
    billing_period: str
    billing_channel: str
    p_true: dict[str, float]  # offer id -> true P(still subscribed at day 30), ineligible offers as "none"
    currency: str | None = None  # what a billing frontend knows of the customer and sends along
    country: str | None = None


def customers(data_dir: Path, catalog: Catalog, limit: int, seed: int, among=None) -> list[Customer]:
    """Each simulated customer's first cancel request with the truth of every offer, `limit` at random
    (`among`: only these customer ids, e.g. those subscribed when the traffic starts)."""
    data_dir = Path(data_dir)
    flows = pd.read_parquet(data_dir / "cancel_requests.parquet", columns=["request_id", "customer_id",
                                                                           "requested_at", "reason"])
    first = flows.sort_values("requested_at").drop_duplicates("customer_id")
    people = pd.read_parquet(data_dir / "customers.parquet", columns=["customer_id", "plan_id", "billing_period",
                                                                      "price", "billing_channel", "currency",
                                                                      "country"])
    truth = pd.read_parquet(data_dir / TRUTH_FILE)
    rows = first.merge(people, on="customer_id").merge(truth.drop(columns=["reason", "price", "billing_period"]),
                                                       on="request_id")
    if among is not None:
        rows = rows[rows["customer_id"].isin(set(among))]
    if limit < len(rows):
        rows = rows.sample(n=limit, random_state=seed)
    out = []
    for r in rows.to_dict("records"):
        p = {o: float(r[f"p_{o}"]) if r[f"eligible_{o}"] else float(r["p_none"]) for o in catalog.ids}
        out.append(Customer(r["request_id"], r["customer_id"], r["reason"], r["plan_id"], float(r["price"]),
                            r["billing_period"], r["billing_channel"], p, r["currency"], r["country"]))
    return out


def bills(offer: Offer, price: float, billing_period: str) -> list[float]:
    """What billing charges at BILL_DAYS for a customer who stays with `offer` (monthly plans)."""
    m = float(monthly_price(price, billing_period))
    out = []
    for month in range(1, len(BILL_DAYS) + 1):
        if offer.type == "pause" and month <= offer.months:
            out.append(0.0)
        elif offer.type == "discount" and month <= offer.months:
            out.append(m * (1 - offer.percent / 100.0))
        elif offer.type == "downgrade":
            out.append(min(m, offer.to_price or m))
        else:
            out.append(m)
    return out


def expected(offer: Offer, c: Customer) -> dict[str, float]:
    """The true expectation of each metric for customer `c` shown `offer` (no draws)."""
    p = c.p_true[offer.id]
    b = bills(offer, c.price, c.billing_period)
    accept = 0.0 if offer.id == "none" else p + (1 - p) * ACCEPT_THEN_LEAVE
    return {"retained_30": p, "retained_90": p * STILL_THERE_AT_90, "accepted": accept,
            "net_revenue_90": p * (b[0] + b[1] + STILL_THERE_AT_90 * b[2]) - accept * offer.cost}


def run(client: Client, data_dir: Path, catalog: Catalog, limit: int = 4000, seed: int = 0, tag: str = "xp",
        follow_all: bool = False, among=None) -> dict:
    """Decide for `limit` simulated customers through the API, post what followed; returns the truth per arm
    and the last decision time. `catalog` must be the one the service runs with. `follow_all`: post what
    followed every decision, not only the experiment's entrants' (the data team's loop: the service's own
    traffic, exploration included, becomes the next training set)."""
    rng = np.random.default_rng(seed)
    truth: dict[tuple[str, str], list[dict]] = defaultdict(list)
    events, last, entered = [], None, 0
    for c in customers(data_dir, catalog, limit, seed, among):
        status, d = client.post("/v1/decisions", {
            "request_id": f"{tag}-{c.request_id}", "customer_id": c.customer_id, "reason": c.reason,
            "plan_id": c.plan_id, "price": c.price, "billing_period": c.billing_period,
            "billing_channel": c.billing_channel,
            **{k: v for k, v in (("currency", c.currency), ("country", c.country)) if v}})
        if status not in (200, 201):
            raise RuntimeError(f"decision for {c.customer_id} failed: {status} {d}")
        arm = d.get("experiment")
        if not arm and not follow_all:
            continue
        offer = catalog[d["offer"]["id"]]
        at = datetime.fromisoformat(d["created_at"])
        last = max(last or at, at)
        if arm:
            entered += 1
            truth[(arm["name"], arm["variant"])].append(expected(offer, c))
        events += _follow(client, rng, c, offer, d["decision_id"], at)
    for i in range(0, len(events), 2000):
        status, body = client.post("/v1/events", {"events": events[i:i + 2000]})
        if status != 200:
            raise RuntimeError(f"posting events failed: {status} {body}")
    arms = {variant: {m: float(np.mean([t[m] for t in rows])) for m in rows[0]} | {"n": len(rows)}
            for (_, variant), rows in truth.items()}
    return {"customers": limit, "entered": entered, "last_decision_at": last.isoformat() if last else None,
            "truth": arms}


def _follow(client: Client, rng, c: Customer, offer: Offer, decision_id: str, at: datetime) -> list[dict]:
    """Post the customer's outcomes; return billing's events for them (posted in batches by the caller)."""
    def outcome(kind: str, delay: timedelta) -> None:
        status, body = client.post(f"/v1/decisions/{decision_id}/outcome",
                                   {"outcome": kind, "occurred_at": (at + delay).isoformat()})
        if status not in (200, 201):
            raise RuntimeError(f"outcome {kind} for {decision_id} failed: {status} {body}")

    stays = rng.random() < c.p_true[offer.id]
    accepts = offer.id != "none" and (stays or rng.random() < ACCEPT_THEN_LEAVE)
    at_90 = stays and rng.random() < STILL_THERE_AT_90
    if rng.random() < SHOWN_SHARE:
        outcome("shown", timedelta(seconds=5))
    if offer.id != "none":
        outcome("accepted" if accepts else "declined", timedelta(seconds=30))
    events = []

    def event(kind: str, days: float, **fields) -> None:
        events.append({"event_id": f"{decision_id}-{kind}-{len(events)}", "type": kind, "customer_id": c.customer_id,
                       "occurred_at": (at + timedelta(days=days)).isoformat(), **fields})

    if not stays:
        if accepts:
            event("cancelled", float(rng.uniform(10, 25)))
        else:
            outcome("cancelled", timedelta(minutes=1))
    event("still_active", 30, decision_id=decision_id, day=30, active=bool(stays))
    event("still_active", 90, decision_id=decision_id, day=90, active=bool(at_90))
    for day, amount, paid in zip(BILL_DAYS, bills(offer, c.price, c.billing_period), (stays, stays, at_90),
                                 strict=True):
        if paid and amount > 0:
            event("payment", day, amount=round(amount, 2))
    return events


def recovered_ordering(result: ExperimentResult, truth: dict, metric: str) -> dict:
    """The arms ranked by the report's estimate and by the truth, for one metric."""
    observed = {a.name: a.metrics[metric].estimate for a in result.arms}
    true = {name: t[metric] for name, t in truth.items()}
    return {"metric": metric, "observed": sorted(observed, key=observed.get, reverse=True),
            "true": sorted(true, key=true.get, reverse=True), "observed_values": observed, "true_values": true}

