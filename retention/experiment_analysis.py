"""What an offer experiment shows: per arm, what truly happened to the customers it was shown to, and how
each arm differs from the control and from the no-offer holdout, with honest error bars.

Unit of analysis: the customer. Each customer counts once, by their FIRST decision in the experiment that
was shown to them (the frontend posted a `shown` outcome): that is an exposure. Assignments (first
decisions, shown or not) are counted too, for the sample-ratio check. Later cancel flows of the same
customer stay in the same arm (assignment is by customer) but are not counted again, so arms are made of
independent customers.

Only outcomes that truly happened count:
- accepted: the customer accepted the offer shown (arms that show no offer have none to accept);
- retained_30 / retained_90: billing reported the customer still active at day 30 / 90 after the decision
  (`still_active` event) and no cancellation (a `cancelled` outcome or event) came before that day. An
  accepted offer followed by a cancellation is not a save; an abandoned flow is not a save either - its
  customer counts as retained only if billing says so. Decisions younger than the horizon are not yet
  counted; mature ones without any billing report are counted as `missing`, not guessed;
- net_revenue_90: what the customer paid in the 90 days after the decision (`payment` events: discounts
  are already netted by billing) minus the direct cost of an accepted offer (a credit, support time).

Statistics (retention.stats): Wilson intervals per arm; Newcombe intervals and pooled z-tests for rate
differences; Welch (delta-method) intervals and tests for revenue; Holm's correction across the comparisons
of each metric; always-valid (mixture SPRT) intervals that stay valid however often they are looked at; a
chi-square sample-ratio-mismatch check; a sample-size calculator for the primary metric.

The result is typed (ExperimentResult and the frozen dataclasses it holds); its field names are the keys of its
JSON form (`retention.jsonvalues.jsonable(result)`, NaN and infinities as null), which the API serves and
`retention experiment report --json` writes, and `ExperimentResult.from_json` reads that form back.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import numpy as np
from scipy.stats import t as t_dist

from retention import stats
from retention.experiments import HOLDOUT, Experiment, ExperimentBook, UnknownExperiment
from retention.offers import Catalog

RATE_METRICS = ("accepted", "retained_30", "retained_90")
HORIZON_DAYS = {"accepted": 0, "retained_30": 30, "retained_90": 90, "net_revenue_90": 90}
METRIC_DEFINITIONS = {
    "accepted": "share of exposed customers who accepted the offer shown (arms without an offer: none)",
    "retained_30": "share still subscribed at day 30: billing reported them active at day 30 and they had not "
                   "cancelled before; customers decided less than 30 days ago are not counted yet",
    "retained_90": "the same at day 90",
    "net_revenue_90": "payments in the 90 days after the decision (discounts already netted by billing) minus "
                      "the direct cost of an accepted offer, per exposed customer",
}
SIGNIFICANCE = 0.05
DEFAULT_MDE = 0.02  # absolute difference in the primary rate the sample-size calculator aims at


# --------------------------------------------------------------------------------------------------------------
# The result. A number that does not exist yet (an empty arm, one observation) is NaN in these types and null in
# their JSON form; `from_json` reads null back as NaN, except for the fields typed `X | None`, where None is the
# value (no plan, no stop). `from_json` ignores keys it does not know: a command line may read a newer service.
# --------------------------------------------------------------------------------------------------------------


def _float(value) -> float:
    return float("nan") if value is None else float(value)


def _optional_float(value) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class RateEstimate:
    """A rate in one arm: `successes` of the `n` customers whose outcome is known, with its Wilson 95% interval."""

    n: int
    successes: int
    estimate: float
    low: float
    high: float
    missing: int  # mature exposures whose outcome was never reported: in no n, not guessed

    @classmethod
    def from_json(cls, d: Mapping) -> RateEstimate:
        return cls(int(d["n"]), int(d["successes"]), _float(d["estimate"]), _float(d["low"]), _float(d["high"]),
                   int(d["missing"]))


@dataclass(frozen=True)
class MeanEstimate:
    """A mean per customer in one arm (money) with its 95% t interval."""

    n: int
    estimate: float
    low: float
    high: float
    missing: int

    @classmethod
    def from_json(cls, d: Mapping) -> MeanEstimate:
        return cls(int(d["n"]), _float(d["estimate"]), _float(d["low"]), _float(d["high"]), int(d["missing"]))


MetricEstimate = RateEstimate | MeanEstimate


def metric_estimate_from_json(d: Mapping) -> MetricEstimate:
    """A rate carries its count of successes; a mean does not."""
    return RateEstimate.from_json(d) if "successes" in d else MeanEstimate.from_json(d)


@dataclass(frozen=True)
class ArmResult:
    """One arm: what it does, how many customers it was assigned and exposed, and each metric's estimate."""

    name: str
    kind: str  # offer, model, rules or none (the holdout: none)
    offer: str | None  # the fixed offer of an "offer" arm
    is_control: bool
    is_holdout: bool
    expected_share: float
    assigned: int
    exposed: int
    metrics: dict[str, MetricEstimate]

    def metric(self, name: str) -> MetricEstimate | None:
        """The estimate of metric `name`, None if the arm has none."""
        return self.metrics.get(name)

    @classmethod
    def from_json(cls, d: Mapping) -> ArmResult:
        return cls(d["name"], d["kind"], d["offer"], bool(d["is_control"]), bool(d["is_holdout"]),
                   float(d["expected_share"]), int(d["assigned"]), int(d["exposed"]),
                   {m: metric_estimate_from_json(v) for m, v in d["metrics"].items()})


@dataclass(frozen=True)
class Comparison:
    """Arm minus baseline on one metric: the difference with its fixed-horizon 95% interval and p-value, the
    always-valid interval, and the p-value after Holm's correction across the comparisons of the metric."""

    metric: str
    arm: str
    baseline: str
    difference: float
    low: float
    high: float
    p_value: float
    always_valid_low: float
    always_valid_high: float
    n_arm: int
    n_baseline: int
    p_adjusted: float
    significant: bool  # p_adjusted < SIGNIFICANCE

    @classmethod
    def from_json(cls, d: Mapping) -> Comparison:
        return cls(d["metric"], d["arm"], d["baseline"], _float(d["difference"]), _float(d["low"]),
                   _float(d["high"]), _float(d["p_value"]), _float(d["always_valid_low"]),
                   _float(d["always_valid_high"]), int(d["n_arm"]), int(d["n_baseline"]), _float(d["p_adjusted"]),
                   bool(d["significant"]))


@dataclass(frozen=True)
class SrmCheck:
    """The sample-ratio check of one stage (retention.stats.srm_check): counts per arm against the design."""

    observed: dict[str, int]
    expected: dict[str, float]
    chi2: float  # infinite when an arm designed to get no one got someone
    p_value: float
    alarm: bool

    @classmethod
    def from_json(cls, d: Mapping) -> SrmCheck:
        return cls({k: int(v) for k, v in d["observed"].items()}, {k: float(v) for k, v in d["expected"].items()},
                   _float(d["chi2"]), _float(d["p_value"]), bool(d["alarm"]))


@dataclass(frozen=True)
class SampleRatio:
    """The sample-ratio check on assignments (first decisions) and on exposures."""

    assigned: SrmCheck
    exposed: SrmCheck

    def stages(self) -> list[tuple[str, SrmCheck]]:
        return [("assigned", self.assigned), ("exposed", self.exposed)]

    @classmethod
    def from_json(cls, d: Mapping) -> SampleRatio:
        return cls(SrmCheck.from_json(d["assigned"]), SrmCheck.from_json(d["exposed"]))


@dataclass(frozen=True)
class SampleSizePlan:
    """Customers per arm needed to detect `mde` in a rate from the control's rate, and what is detectable now."""

    metric: str
    baseline_rate: float | None  # None while the control has no known outcome
    mde: float
    alpha: float
    power: float
    per_arm: int | None  # None when the control's rate leaves no room for the mde
    smallest_arm_now: int
    detectable_now: float | None

    @classmethod
    def from_json(cls, d: Mapping) -> SampleSizePlan:
        return cls(d["metric"], _optional_float(d["baseline_rate"]), float(d["mde"]), float(d["alpha"]),
                   float(d["power"]), None if d["per_arm"] is None else int(d["per_arm"]), int(d["smallest_arm_now"]),
                   _optional_float(d["detectable_now"]))


@dataclass(frozen=True)
class TimelinePoint:
    """One day of the primary metric's difference of an arm minus its baseline (the control or the holdout, as
    in the comparisons), with the always-valid interval intersected since the first day (infinite until the
    first finite one)."""

    day: date
    arm: str
    baseline: str
    metric: str
    n_arm: int
    n_baseline: int
    difference: float
    always_valid_low: float
    always_valid_high: float

    @classmethod
    def from_json(cls, d: Mapping) -> TimelinePoint:
        return cls(date.fromisoformat(d["day"]), d["arm"], d["baseline"], d["metric"], int(d["n_arm"]),
                   int(d["n_baseline"]), _float(d["difference"]), _float(d["always_valid_low"]),
                   _float(d["always_valid_high"]))


@dataclass(frozen=True)
class ExperimentResult:
    """What `analyse` finds: the experiment, its arms, the comparisons, the checks, the plan and the warnings."""

    experiment: str
    description: str
    definition: str  # hash of the experiment's definition the decisions were made under
    as_of: datetime
    start: datetime
    stop: datetime | None
    running: bool
    primary_metric: str
    guardrail_metrics: tuple[str, ...]
    control: str
    unit: str
    metric_definitions: dict[str, str]
    arms: tuple[ArmResult, ...]
    comparisons: tuple[Comparison, ...]
    srm: SampleRatio
    sample_size: SampleSizePlan
    timeline: tuple[TimelinePoint, ...]
    warnings: tuple[str, ...]

    @classmethod
    def from_json(cls, d: Mapping) -> ExperimentResult:
        """The result from its JSON form (the API's answer, `retention experiment report --json`)."""
        stop = d["stop"]
        return cls(
            d["experiment"], d["description"], d["definition"], datetime.fromisoformat(d["as_of"]),
            datetime.fromisoformat(d["start"]), None if stop is None else datetime.fromisoformat(stop),
            bool(d["running"]), d["primary_metric"], tuple(d["guardrail_metrics"]), d["control"], d["unit"],
            dict(d["metric_definitions"]), tuple(ArmResult.from_json(a) for a in d["arms"]),
            tuple(Comparison.from_json(c) for c in d["comparisons"]), SampleRatio.from_json(d["srm"]),
            SampleSizePlan.from_json(d["sample_size"]), tuple(TimelinePoint.from_json(t) for t in d["timeline"]),
            tuple(d["warnings"]))


@dataclass(frozen=True)
class Exposure:
    """One customer's first exposed decision in the experiment and what followed."""

    customer_id: str
    arm: str
    decided_at: datetime
    accepted: bool
    cancelled_at: datetime | None  # the first cancellation after the decision (outcome or event)
    active: dict[int, bool]  # day (30, 90) -> billing's report
    revenue_90: float

    def retained(self, day: int, as_of: datetime) -> bool | None:
        """True/False once known at `as_of`; None if too young or never reported."""
        if self.decided_at + timedelta(days=day) > as_of:
            return None
        if self.cancelled_at is not None and self.cancelled_at <= self.decided_at + timedelta(days=day):
            return False
        return self.active.get(day)


def exposures(experiment: Experiment, catalog: Catalog, records: dict, as_of: datetime) -> tuple[
        list[Exposure], dict[str, int], list[str]]:
    """From the store's records of an experiment (store.Store.experiment_records): the exposures, the
    assignment count per arm (first decision per customer) and warnings."""
    warnings = []
    definition = experiment.definition_hash()
    decisions = sorted(records["decisions"], key=lambda d: (d["created_at"], d["decision_id"]))
    other = [d for d in decisions if (d.get("experiment") or {}).get("definition") != definition]
    if other:
        warnings.append(f"{len(other)} decision(s) were made under another definition of this experiment and "
                        "are left out")
    decisions = [d for d in decisions if d not in other and d["created_at"] <= as_of]
    outcomes = records["outcomes"]  # decision_id -> {kind: occurred_at}
    assigned, seen_assigned, first_exposed = defaultdict(int), set(), {}
    for d in decisions:
        if d["customer_id"] not in seen_assigned:
            seen_assigned.add(d["customer_id"])
            assigned[d["experiment_variant"]] += 1
        shown = outcomes.get(d["decision_id"], {}).get("shown")
        if shown is not None and shown <= as_of and d["customer_id"] not in first_exposed:
            first_exposed[d["customer_id"]] = d
    cancelled = defaultdict(list)  # customer -> times of cancelled events
    for e in records["cancelled"]:
        cancelled[e["customer_id"]].append(e["occurred_at"])
    payments = defaultdict(list)
    for e in records["payments"]:
        payments[e["customer_id"]].append((e["occurred_at"], e["amount"]))
    active = defaultdict(dict)  # decision_id -> day -> active
    for e in records["still_active"]:
        if e["occurred_at"] <= as_of:
            active[e["decision_id"]][int(e["day"])] = bool(e["active"])
    out = []
    for cid, d in first_exposed.items():
        kinds = outcomes.get(d["decision_id"], {})
        accepted = "accepted" in kinds and kinds["accepted"] <= as_of
        at = d["created_at"]
        cancel_times = [t for t in cancelled[cid] if at <= t <= as_of]
        if "cancelled" in kinds and kinds["cancelled"] <= as_of:
            cancel_times.append(kinds["cancelled"])
        end = at + timedelta(days=90)
        paid = sum(amount for t, amount in payments[cid] if at < t <= min(end, as_of))
        cost = catalog[d["offer_id"]].cost if accepted and d["offer_id"] in catalog.ids else 0.0
        out.append(Exposure(cid, d["experiment_variant"], at, accepted, min(cancel_times, default=None),
                            active[d["decision_id"]], paid - cost))
    return out, dict(assigned), warnings


# (experiment name, as of) -> the records `exposures` reads (store.Store.experiment_records)
RecordReader = Callable[[str, datetime], dict]


def experiment_results(book: ExperimentBook, catalog: Catalog, read_records: RecordReader, name: str,
                       as_of: datetime, mde: float = DEFAULT_MDE) -> ExperimentResult:
    """The use case behind `retention experiment report` and `GET /v1/experiments/<name>/results`: find the
    experiment in `book`, read its records as of `as_of`, analyse them with `catalog` (offer costs)."""
    experiment = book.get(name)
    if experiment is None:
        known = ", ".join(e.name for e in book.experiments) or "none"
        raise UnknownExperiment(f"no experiment named {name!r} in the experiments file (have: {known})")
    return analyse(experiment, catalog, read_records(name, as_of), as_of, mde=mde)


def analyse(experiment: Experiment, catalog: Catalog, records: dict, as_of: datetime,
            mde: float = DEFAULT_MDE) -> ExperimentResult:
    """The full result: arms, comparisons, sample-ratio checks, sample size, timeline, warnings."""
    data, assigned, warnings = exposures(experiment, catalog, records, as_of)
    arms = _arm_names(experiment)
    by_arm = {a: [x for x in data if x.arm == a] for a in arms}
    unknown = sorted({x.arm for x in data} - set(arms))
    if unknown:
        warnings.append(f"decisions in arms that the definition does not have: {unknown}")
    values = {a: {m: _values(m, by_arm[a], as_of) for m in HORIZON_DAYS} for a in arms}
    shares = experiment.expected_shares
    arm_rows = []
    for a in arms:
        v = experiment.variant(a)
        arm_rows.append(ArmResult(
            name=a, kind=v.kind if v else "none", offer=v.offer if v else None,
            is_control=a == experiment.control, is_holdout=a == HOLDOUT, expected_share=shares[a],
            assigned=assigned.get(a, 0), exposed=len(by_arm[a]),
            metrics={m: _summary(m, *values[a][m]) for m in HORIZON_DAYS},
        ))
        if not by_arm[a]:
            warnings.append(f"arm {a!r} has no exposures yet")
    missing = sum(values[a]["retained_30"][1] for a in arms)
    known = sum(len(values[a]["retained_30"][0]) for a in arms)
    if known + missing and missing / (known + missing) > 0.05:
        warnings.append(f"{missing} mature exposure(s) have no day-30 billing report: is billing posting "
                        "`still_active` events?")
    return ExperimentResult(
        experiment=experiment.name, description=experiment.description,
        definition=experiment.definition_hash(), as_of=as_of,
        start=experiment.start, stop=experiment.stop,
        running=experiment.running(as_of), primary_metric=experiment.primary_metric,
        guardrail_metrics=tuple(experiment.guardrail_metrics), control=experiment.control,
        unit="customers: each customer's first exposed decision in the experiment",
        metric_definitions=dict(METRIC_DEFINITIONS),
        arms=tuple(arm_rows),
        comparisons=_comparisons(experiment, arms, values),
        srm=SampleRatio(assigned=SrmCheck(**stats.srm_check({a: assigned.get(a, 0) for a in arms}, shares)),
                        exposed=SrmCheck(**stats.srm_check({a: len(by_arm[a]) for a in arms}, shares))),
        sample_size=_sample_size(experiment, arms, values, mde),
        timeline=_timeline(experiment, by_arm, as_of),
        warnings=tuple(warnings),
    )


def _arm_names(experiment: Experiment) -> list[str]:
    names = [experiment.control] + [v.name for v in experiment.variants if v.name != experiment.control]
    if experiment.holdout > 0 and HOLDOUT not in names:
        names.append(HOLDOUT)
    return names


def _outcome(metric: str, x: Exposure, as_of: datetime) -> float | None:
    """One exposure's value of `metric` as known at `as_of`; None while too young or never reported."""
    if metric == "accepted":
        return float(x.accepted)
    if x.decided_at + timedelta(days=HORIZON_DAYS[metric]) > as_of:
        return None
    if metric == "net_revenue_90":
        return x.revenue_90
    status = x.retained(HORIZON_DAYS[metric], as_of)
    return None if status is None else float(status)


def _values(metric: str, rows: list[Exposure], as_of: datetime) -> tuple[np.ndarray, int]:
    """(observed values, number of mature exposures with no report) for one arm and metric."""
    mature = [x for x in rows if x.decided_at + timedelta(days=HORIZON_DAYS[metric]) <= as_of]
    values = [_outcome(metric, x, as_of) for x in mature]
    return np.array([v for v in values if v is not None], dtype=float), sum(v is None for v in values)


def _summary(metric: str, x: np.ndarray, missing: int) -> MetricEstimate:
    if metric in RATE_METRICS:
        ci = stats.wilson(int(x.sum()), len(x))
        return RateEstimate(n=len(x), successes=int(x.sum()), **ci.as_dict(), missing=missing)
    return MeanEstimate(n=len(x), **_mean_interval(x).as_dict(), missing=missing)


def _mean_interval(x: np.ndarray) -> stats.Interval:
    """An arm's mean with a 95% t interval (differences between arms use retention.stats)."""
    if len(x) < 2:
        return stats.Interval(float(x.mean()) if len(x) else float("nan"), float("nan"), float("nan"))
    m, se = float(x.mean()), float(x.std(ddof=1) / np.sqrt(len(x)))
    half = float(t_dist.ppf(0.975, len(x) - 1)) * se
    return stats.Interval(m, m - half, m + half)


def _compare(metric: str, a: np.ndarray, b: np.ndarray) -> dict:
    if metric in RATE_METRICS:
        s1, n1, s2, n2 = int(a.sum()), len(a), int(b.sum()), len(b)
        ci = stats.newcombe_difference(s1, n1, s2, n2)
        p = stats.two_proportion_p_value(s1, n1, s2, n2)
        av = stats.always_valid_proportions(s1, n1, s2, n2)
    else:
        ci = stats.mean_difference(a, b, method="welch")
        p = stats.mean_difference_p_value(a, b)
        av = stats.always_valid_means(a, b)
    return {"difference": ci.estimate, "low": ci.low, "high": ci.high, "p_value": p,
            "always_valid_low": av.low, "always_valid_high": av.high, "n_arm": len(a), "n_baseline": len(b)}


def _pairs(experiment: Experiment, arms: list[str]) -> list[tuple[str, str]]:
    """(arm, baseline) of every comparison, always arm minus baseline: each arm against the control, then each
    arm against the no-offer holdout. The holdout is only ever a baseline, so "model vs holdout" is the one
    direction in the table, the forest plot and the timeline alike."""
    pairs = [(a, experiment.control) for a in arms if a not in (experiment.control, HOLDOUT)]
    if HOLDOUT in arms and experiment.control != HOLDOUT:
        pairs += [(a, HOLDOUT) for a in arms if a != HOLDOUT]
    return pairs


def _comparisons(experiment: Experiment, arms: list[str], values: dict) -> tuple[Comparison, ...]:
    pairs = _pairs(experiment, arms)
    out = []
    for metric in HORIZON_DAYS:
        rows = [(a, b, _compare(metric, values[a][metric][0], values[b][metric][0])) for a, b in pairs]
        adjusted = stats.holm([c["p_value"] for _, _, c in rows]) if rows else []
        out += [Comparison(metric=metric, arm=a, baseline=b, **c, p_adjusted=p, significant=bool(p < SIGNIFICANCE))
                for (a, b, c), p in zip(rows, adjusted, strict=True)]
    return tuple(out)


def comparisons_in(arms: int, holdout: bool) -> int:
    """How many comparisons an experiment of `arms` arms (the control included, a holdout not) makes on its
    primary metric, as _pairs does: each other arm against the control, and with a holdout every arm against it."""
    return (arms - 1) + (arms if holdout else 0)


def plan_per_arm(baseline: float, mde: float, comparisons: int, alpha: float = SIGNIFICANCE,
                 power: float = 0.8) -> tuple[int, float]:
    """(customers per arm, alpha of each comparison) to detect an absolute change `mde` from `baseline` in a
    rate. `alpha` is split over the comparisons (Bonferroni), the first and strictest step of the Holm
    correction the analysis applies, so the plan is a little conservative for it. The one sizing rule of
    `retention experiment sample-size` and of the analysis' sample-size section."""
    each = alpha / max(1, comparisons)
    return stats.sample_size_two_proportions(baseline, mde, alpha=each, power=power), each


def _sample_size(experiment: Experiment, arms: list[str], values: dict, mde: float) -> SampleSizePlan:
    metric = experiment.primary_metric if experiment.primary_metric in RATE_METRICS else "retained_30"
    control = values[experiment.control][metric][0]
    smallest = min(len(values[a][metric][0]) for a in values)
    p = float(control.mean()) if len(control) else None
    comparisons = len(_pairs(experiment, arms))
    per_arm = detectable = None
    each = SIGNIFICANCE / max(1, comparisons)
    if p is not None and 0 < p < 1 and 0 < p + mde < 1:
        per_arm, each = plan_per_arm(p, mde, comparisons)
        if smallest >= 2:
            detectable = stats.minimum_detectable_effect(p, smallest, alpha=each)
    return SampleSizePlan(metric=metric, baseline_rate=p, mde=mde, alpha=each, power=0.8, per_arm=per_arm,
                          smallest_arm_now=smallest, detectable_now=detectable)


def _timeline(experiment: Experiment, by_arm: dict[str, list[Exposure]],
              as_of: datetime) -> tuple[TimelinePoint, ...]:
    """Day by day, the primary metric's difference of each compared pair (`_pairs`: arm minus the control, arm
    minus the holdout) with its always-valid interval (the running intersection since the first day), using
    only what was known that day: decisions
    old enough to have reached the metric's horizon. The comparisons table shows the interval of the last
    day alone, which is valid too and never narrower."""
    metric = experiment.primary_metric
    day0 = min((x.decided_at for xs in by_arm.values() for x in xs), default=None)
    if day0 is None:
        return ()
    horizon = timedelta(days=HORIZON_DAYS[metric])
    first = (day0 + horizon).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    days = []
    d = first
    while d <= as_of + timedelta(days=1) and len(days) < 400:
        days.append(min(d, as_of))
        d += timedelta(days=1)
    # A decision mature by day d has its outcome settled by then (billing reports at the horizon), so each
    # outcome is computed once, as of `as_of`, and each day keeps the decisions mature by that day.
    def settled(rows: list[Exposure]) -> tuple[np.ndarray, np.ndarray]:
        pairs = [(x.decided_at.timestamp(), v) for x in rows
                 if (v := _outcome(metric, x, as_of)) is not None]
        return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs], dtype=float)

    arms = {arm: settled(rows) for arm, rows in by_arm.items()}
    out = []
    for arm, baseline in _pairs(experiment, list(by_arm)):
        (arm_t, arm_v), (base_t, base_v) = arms[arm], arms[baseline]
        low, high = -np.inf, np.inf
        for day in days:
            cut = day.timestamp() - horizon.total_seconds()
            a, b = arm_v[arm_t <= cut], base_v[base_t <= cut]
            if len(a) < 2 or len(b) < 2:
                continue
            c = _compare(metric, a, b)
            # A confidence sequence may be intersected with its past: still valid, never wider.
            if np.isfinite(c["always_valid_low"]) and np.isfinite(c["always_valid_high"]):
                low, high = max(low, c["always_valid_low"]), min(high, c["always_valid_high"])
            out.append(TimelinePoint(day=day.date(), arm=arm, baseline=baseline, metric=metric,
                                     n_arm=len(a), n_baseline=len(b), difference=c["difference"],
                                     always_valid_low=low, always_valid_high=high))
    return tuple(out)


# --------------------------------------------------------------------------------------------------------------
# What to do now, and which data the answer rests on: derived from a result (also one read back from its JSON
# form), so the report, the terminal and any other reader say the same.
# --------------------------------------------------------------------------------------------------------------

SHIP, KEEP_RUNNING, STOP = "ship", "keep_running", "stop"


@dataclass(frozen=True)
class Recommendation:
    """What to do with the experiment now, and the comparisons that say so.

    action: SHIP `arm` (it beats `baseline` on the primary metric for sure and harms no guardrail), KEEP_RUNNING
    (no sure answer yet: about `more_flows` more cancel flows bring every undecided arm to the planned sample
    size), or STOP (`why`: "srm", the assignment is broken; "guardrail", the best arm harms `breach.metric`;
    "no_winner", the planned size or the end is reached and no arm beats its baseline)."""

    action: str
    why: str  # srm, guardrail, no_winner, winner, undecided, no_data
    metric: str
    arm: str | None = None
    baseline: str | None = None
    evidence: Comparison | None = None  # the primary comparison the action rests on
    breach: Comparison | None = None  # the guardrail comparison that stops it
    undecided: tuple[Comparison, ...] = ()  # the primary comparisons without a sure answer yet
    more_flows: int | None = None  # KEEP_RUNNING: about this many more cancel flows in the experiment


def _finite(x: float) -> bool:
    return x is not None and np.isfinite(x)


def decided(c: Comparison, result: ExperimentResult) -> bool:
    """Is `c` a sure answer now? Significant after Holm's correction, and either the always-valid interval
    excludes zero (safe although the data were looked at before the end) or the fixed-horizon interval is valid
    because the experiment has stopped or reached its planned sample size."""
    if not (c.significant and _finite(c.difference) and c.difference != 0):
        return False
    if _finite(c.always_valid_low) and _finite(c.always_valid_high) and (c.always_valid_low > 0
                                                                         or c.always_valid_high < 0):
        return True
    return not result.running or _plan_reached(result)


def _plan_reached(result: ExperimentResult) -> bool:
    plan = result.sample_size
    return plan.per_arm is not None and plan.smallest_arm_now >= plan.per_arm


def more_flows_needed(result: ExperimentResult, arms: set[str]) -> int | None:
    """About how many more cancel flows entering the experiment give each of `arms` the planned number of
    customers with a known outcome (result.sample_size.per_arm), at the designed shares; None without a plan."""
    plan = result.sample_size
    if plan.per_arm is None:
        return None
    need = 0.0
    for a in result.arms:
        if a.name in arms and a.expected_share > 0:
            known = a.metric(plan.metric)
            need = max(need, (plan.per_arm - (known.n if known else 0)) / a.expected_share)
    return int(np.ceil(need))


def recommend(result: ExperimentResult) -> Recommendation:
    """Ship, keep running or stop, from the primary metric's comparisons and the guardrails.

    In this order: a sample-ratio mismatch stops everything; the arm that beats the control by most for sure
    is the candidate, else the control if it beats the no-offer holdout for sure and no variant may still beat
    it; a candidate significantly worse than the same baseline on a guardrail stops the experiment; while some
    comparison has no sure answer and the experiment runs short of its planned size, keep running; at the end
    with no winner, stop and keep the control."""
    metric, control = result.primary_metric, result.control
    if any(s.alarm for _, s in result.srm.stages()):
        return Recommendation(STOP, "srm", metric)
    primary = [c for c in result.comparisons if c.metric == metric and _finite(c.difference)]
    more = functools.partial(more_flows_needed, result)
    if not primary:  # nothing to compare yet: wait for outcomes, unless the experiment has already stopped
        if not result.running:
            return Recommendation(STOP, "no_data", metric, baseline=control)
        return Recommendation(KEEP_RUNNING, "no_data", metric, more_flows=more({a.name for a in result.arms}))
    can_wait = result.running and not _plan_reached(result)
    variants = [c for c in primary if c.baseline == control]
    winners = sorted((c for c in variants if decided(c, result) and c.difference > 0), key=lambda c: -c.difference)
    undecided = tuple(c for c in variants if not decided(c, result))
    candidate = winners[0] if winners else None
    if candidate is None and not (undecided and can_wait):
        candidate = next((c for c in primary if c.arm == control and c.baseline == HOLDOUT
                          and decided(c, result) and c.difference > 0), None)
        if candidate is None:
            undecided += tuple(c for c in primary if c.arm == control and c.baseline == HOLDOUT
                               and not decided(c, result))
    if candidate is None:
        if undecided and can_wait:
            arms = {name for c in undecided for name in (c.arm, c.baseline)}
            return Recommendation(KEEP_RUNNING, "undecided", metric, undecided=undecided, more_flows=more(arms))
        return Recommendation(STOP, "no_winner", metric, baseline=control, undecided=undecided)
    breaches = sorted((c for c in result.comparisons if c.metric in result.guardrail_metrics
                       and c.arm == candidate.arm and c.baseline == candidate.baseline and c.significant
                       and _finite(c.difference) and c.difference < 0), key=lambda c: c.p_adjusted)
    if breaches:
        return Recommendation(STOP, "guardrail", metric, candidate.arm, candidate.baseline, candidate, breaches[0])
    return Recommendation(SHIP, "winner", metric, candidate.arm, candidate.baseline, candidate)


@dataclass(frozen=True)
class DataWindow:
    """Which cancel flows the result rests on: the experiment's window from `start` to `end` (its stop, or the
    as-of time while it runs), outcomes as known at `as_of`; the primary metric counts only the flows made by
    `known_through` (`horizon_days` before `as_of`: the youngest whose outcome is known)."""

    start: datetime
    end: datetime
    as_of: datetime
    horizon_days: int
    known_through: datetime


def data_window(result: ExperimentResult) -> DataWindow:
    end = min(result.stop, result.as_of) if result.stop else result.as_of
    days = HORIZON_DAYS.get(result.primary_metric, 0)
    return DataWindow(result.start, end, result.as_of, days, min(end, result.as_of - timedelta(days=days)))
