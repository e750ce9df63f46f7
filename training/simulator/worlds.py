"""A family of simulated subscription businesses that differ in structure, not only in seed.

A `World` is what `retention simulate --world NAME` builds: who the customers are (plans, billing channels),
how often they come to the cancel flow, how often they answer NPS, whether their usage is recorded, how
the historical cancel flow chose offers (the logging policy, whose propensities are logged), and above all
the true response to each offer (training.simulator.truth: two families of different functional form with
knobs). Every world writes its truth to `_truth/requests.parquet`, so any policy can be valued against it.

docs/worlds.md describes each world and why a skeptical reviewer would call it different. Models are judged
on all of them together (`make bench-policy`); none is tuned to one world alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from training.simulator.truth import REFERENCE, ReasonResponse, Response, TypeResponse

# plan_id, billing_period, price, share
PLANS = (
    ("plus_monthly", "monthly", 14.95, 0.42),
    ("plus_annual", "annual", 149.50, 0.15),
    ("premium_monthly", "monthly", 22.95, 0.15),
    ("premium_annual", "annual", 229.50, 0.06),
    ("lite_monthly", "monthly", 7.95, 0.22),
)
CHANNELS = (("web", 0.65), ("ios", 0.17), ("android", 0.12), ("partner", 0.06))


@dataclass(frozen=True)
class World:
    name: str
    story: str  # what is different about this world, in a sentence or two (docs/worlds.md)
    customers: int  # the default population; flows per year are about customers x 0.73 x request_rate
    response: Response = field(default=REFERENCE)
    plans: tuple[tuple[str, str, float, float], ...] = PLANS
    channels: tuple[tuple[str, float], ...] = CHANNELS
    request_rate: float = 1.0  # multiplies the daily hazard of coming to the cancel flow
    nps_answer_rate: float = 1.0  # multiplies the chance that an invited customer answers the survey
    usage_recorded: float = 1.0  # share of customers whose usage reaches the data at all
    # The historical cancel flow's choice: offers uniformly at random among the eligible ones, weighted by
    # offer type ("none" counts double by default, so the no-offer baseline is well measured).
    logging_weights: tuple[tuple[str, float], ...] = (("none", 2.0),)
    horizon_months: int = 6  # the value horizon the business judges offers by (config/policy.toml)
    # False: the history's cancel flow never showed an offer (a team starting without offer history).
    offer_history: bool = True

    def logging_weight(self, offer_type: str) -> float:
        if not self.offer_history:
            return 1.0 if offer_type == "none" else 0.0
        return dict(self.logging_weights).get(offer_type, 1.0)


# The same plans, two thirds of customers on an annual one.
_ANNUAL_HEAVY = tuple((plan, period, price, share) for (plan, period, price, _), share
                      in zip(PLANS, (0.20, 0.40, 0.08, 0.25, 0.07), strict=True))
_APP_STORE_HEAVY = (("web", 0.28), ("ios", 0.42), ("android", 0.24), ("partner", 0.06))

WORLDS: dict[str, World] = {w.name: w for w in (
    World("reference", "The simulator the service was built on: offer effects by reason and NPS segment, "
          "a linear logit, 6-month horizon.", customers=50_000),
    World("reference-small", "The reference truth with about 3,000 logged flows: the data a team has in its "
          "first months.", customers=4_200),
    World("types", "Offer effects by latent customer type (drawn from attributes such as acquisition, age "
          "band, plan), not by the stated reason; thresholds instead of a linear logit; a 12-month horizon; "
          "about 3,000 flows.", customers=16_500, response=TypeResponse(), request_rate=0.2, horizon_months=12),
    World("types-large", "The latent-type world with about 15,000 flows.", customers=47_000,
          response=TypeResponse(), request_rate=0.35, horizon_months=12),
    World("tiny", "The latent-type world with about 1,500 flows, a discount-happy history (discounts logged "
          "three times as often as other offers) and sparse NPS.", customers=7_700, response=TypeResponse(),
          request_rate=0.2, nps_answer_rate=0.4, logging_weights=(("none", 2.0), ("discount", 3.0))),
    World("depth-and-backfire", "Only a deep discount works (strength ~ depth^2.5), follow-ups help detractors "
          "only, and any offer pushes promoters and heavy users away; the history logged discounts twice as "
          "often as the rest; about 11,000 flows.", customers=15_000,
          response=ReasonResponse(depth_exponent=2.5, followup_detractors_only=True, promoter_backfire=0.8),
          logging_weights=(("none", 2.0), ("discount", 2.0))),
    World("sparse-noisy", "Five times the unobservable noise, one NPS answer in five of the reference, usage "
          "recorded for half the customers, pauses that help only temporary absences; 12-month horizon; "
          "about 6,000 flows.", customers=8_000,
          response=ReasonResponse(unobserved=1.25, pause_by_reason=(-0.3, -0.3, 1.3, -0.3, -0.3, -0.4, -0.3)),
          nps_answer_rate=0.2, usage_recorded=0.5, horizon_months=12),
    World("stay-anyway-annual", "Most customers stay without any offer (+1.5 on the logit) and two thirds pay "
          "annually (no pauses or discounts for them): offers are mostly money given away; about 4,000 flows.",
          customers=5_000, response=ReasonResponse(stay_shift=1.5), plans=_ANNUAL_HEAVY, horizon_months=12),
    World("app-store", "Two thirds billed by iOS or Android, where only a credit or a follow-up can be "
          "offered; latent types drive the response; about 4,000 flows.", customers=11_000,
          response=TypeResponse(), channels=_APP_STORE_HEAVY, request_rate=0.4),
    World("nothing-helps", "No offer helps anyone (every effect a little negative): the right policy offers "
          "nothing; about 4,000 flows.", customers=5_500,
          response=ReasonResponse(effect_scale=0.0, effect_shift=-0.15)),
    World("churn-only", "A team without offer history: customers, payments and cancel requests, no offer ever "
          "shown, no usage recorded and no NPS answered (the usage and NPS files are empty). Only churn risk "
          "can be learned; the rules choose offers.", customers=20_000, nps_answer_rate=0.0,
          usage_recorded=0.0, offer_history=False),
)}

# The worlds an offer policy can be learned and judged on (churn-only has no offer history).
POLICY_WORLDS = tuple(name for name, w in WORLDS.items() if w.offer_history)


def world(name: str) -> World:
    try:
        return WORLDS[name]
    except KeyError:
        raise ValueError(f"unknown world {name!r}; the worlds are {', '.join(WORLDS)}") from None
