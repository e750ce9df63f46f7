"""Offer experiments: their definitions (config/experiments.toml), who is in one, and which variant they get.

How a cancel request meets an experiment (retention.policy.Policy.decide applies this):

1. Guardrails first. The request's eligible offers are known before any experiment is considered.
2. Traffic slice. Every customer has a stable position u in [0, 1) (a hash of the customer id under one
   fixed "layer" salt). Each experiment owns a slice of that line (`slice = [start, end)`); slices of
   experiments that run at the same time may not overlap, so experiments are mutually exclusive: one cancel
   flow shows one offer, and two experiments choosing it at once would measure each other.
3. Entry. The customer enters the experiment owning their slice only if it is running, the request matches
   its population (reasons, plans, NPS segments, billing channels), and EVERY variant can be carried out for
   them (each fixed offer passed the guardrails). Otherwise they are in no experiment and the normal policy
   decides; that way all variants are compared on the same kind of customer.
4. Variant. A second hash, of (experiment salt, customer id), gives v in [0, 1): v < holdout -> the holdout
   (no offer); the rest is split by the variants' weights. Same customer, same variant, in every process and
   on every later cancel flow of that customer.
"""

from __future__ import annotations

import functools
import hashlib
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from retention.contract import BILLING_CHANNELS, REASONS
from retention.offers import Catalog

DEFAULT_EXPERIMENTS = Path(__file__).resolve().parent.parent / "config" / "experiments.toml"
LAYER_SALT = "retention-offers/experiment-layer/v1"
HOLDOUT = "holdout"
VARIANT_KINDS = ("offer", "model", "rules", "none")
METRICS = ("retained_30", "retained_90", "accepted", "net_revenue_90")
NPS_SEGMENTS = ("promoter", "passive", "detractor", "none")


class ExperimentError(ValueError):
    """An experiment definition that cannot be run as written."""


class UnknownExperiment(LookupError):
    """No experiment of that name in the experiments file."""


@dataclass(frozen=True)
class Variant:
    name: str
    kind: str  # one of VARIANT_KINDS
    weight: float
    offer: str | None = None  # the catalog offer of an "offer" variant


@dataclass(frozen=True)
class Population:
    """Who may enter; an empty tuple means everyone."""

    reasons: tuple[str, ...] = ()
    plans: tuple[str, ...] = ()
    nps_segments: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()

    def matches(self, reason: str, plan_id: str | None, nps_segment: str, channel: str) -> bool:
        return ((not self.reasons or reason in self.reasons) and (not self.plans or plan_id in self.plans)
                and (not self.nps_segments or nps_segment in self.nps_segments)
                and (not self.channels or channel in self.channels))


@dataclass(frozen=True)
class Experiment:
    name: str
    salt: str
    slice: tuple[float, float]  # [start, end) of the traffic line
    holdout: float  # share of entrants who get no offer, e.g. 0.05
    variants: tuple[Variant, ...]
    control: str  # the variant others are compared with (the holdout is always compared too)
    start: datetime
    stop: datetime | None
    population: Population = field(default_factory=Population)
    primary_metric: str = "retained_30"
    guardrail_metrics: tuple[str, ...] = ("net_revenue_90",)
    description: str = ""

    def running(self, now: datetime) -> bool:
        return self.start <= now and (self.stop is None or now < self.stop)

    @functools.cached_property
    def expected_shares(self) -> dict[str, float]:
        """Design share of each arm among entrants (the holdout included): the sample-ratio check's expectation
        and each entrant decision's propensity. Computed once."""
        total = sum(v.weight for v in self.variants)
        shares = {v.name: (1.0 - self.holdout) * v.weight / total for v in self.variants}
        if self.holdout > 0:
            shares[HOLDOUT] = self.holdout
        return shares

    def variant_of(self, customer_id: str) -> str:
        """The arm (a variant name or "holdout") of a customer who entered this experiment."""
        v = unit_hash(self.salt, customer_id)
        if v < self.holdout:
            return HOLDOUT
        v = (v - self.holdout) / (1.0 - self.holdout)
        total, acc = sum(x.weight for x in self.variants), 0.0
        for variant in self.variants:
            acc += variant.weight / total
            if v < acc:
                return variant.name
        return self.variants[-1].name  # v within float rounding of 1

    def variant(self, name: str) -> Variant | None:
        return next((v for v in self.variants if v.name == name), None)

    def definition_hash(self) -> str:
        """Changes whenever who enters or what an arm does changes: analysis keeps one definition apart."""
        return self._definition

    @functools.cached_property
    def _definition(self) -> str:
        text = repr((self.name, self.salt, self.slice, self.holdout, self.variants, self.control, self.population))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def required_offers(self) -> set[str]:
        """Offers that must pass the guardrails for a customer to enter: every fixed-offer variant's."""
        return {v.offer for v in self.variants if v.kind == "offer"}


@dataclass(frozen=True)
class Assignment:
    experiment: str
    variant: str  # a variant name or "holdout"
    kind: str  # what the arm does: offer / model / rules / none
    offer: str | None
    definition: str  # hash of the experiment's definition, so analysis can refuse mixed definitions
    share: float  # the arm's design share among entrants: the decision's propensity

    def as_dict(self) -> dict:
        return {"name": self.experiment, "variant": self.variant, "kind": self.kind, "offer": self.offer,
                "definition": self.definition, "share": self.share}


@dataclass(frozen=True)
class ExperimentBook:
    """All configured experiments; `assign` is called by the policy once the eligible offers are known."""

    experiments: tuple[Experiment, ...]
    version: str  # hash of the file

    def get(self, name: str) -> Experiment | None:
        return next((e for e in self.experiments if e.name == name), None)

    def candidate(self, customer_id: str, now: datetime) -> Experiment | None:
        """The running experiment whose traffic slice holds this customer, if any."""
        if not self.experiments:  # the usual case: no hashing on the decision path
            return None
        u = unit_hash(LAYER_SALT, customer_id)
        for e in self.experiments:
            if e.slice[0] <= u < e.slice[1] and e.running(now):
                return e
        return None

    def assign(self, customer_id: str, now: datetime, reason: str, plan_id: str | None, nps_segment: str,
               channel: str, eligible_offers: Iterable[str]) -> tuple[Assignment | None, str | None]:
        """(assignment, None) for an entrant; (None, why) for a customer in an experiment's slice who may not
        enter (reason code); (None, None) when no experiment concerns this request."""
        e = self.candidate(customer_id, now)
        if e is None:
            return None, None
        if not e.population.matches(reason, plan_id, nps_segment, channel):
            return None, "experiment_population_mismatch"
        if not e.required_offers() <= set(eligible_offers):
            return None, "experiment_variant_ineligible"
        arm = e.variant_of(customer_id)
        if arm == HOLDOUT:
            return Assignment(e.name, HOLDOUT, "none", None, e.definition_hash(), e.expected_shares[HOLDOUT]), None
        v = e.variant(arm)
        return Assignment(e.name, v.name, v.kind, v.offer, e.definition_hash(), e.expected_shares[v.name]), None


def unit_hash(salt: str, customer_id: str) -> float:
    """A stable, uniform number in [0, 1) for (salt, customer id): the first 8 bytes of SHA-256."""
    digest = hashlib.sha256(f"{salt}\x00{customer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


# --------------------------------------------------------------------------------------------- loading


def load_experiments(catalog: Catalog, path: str | Path = DEFAULT_EXPERIMENTS) -> ExperimentBook:
    """Read and check config/experiments.toml; a missing file means no experiments."""
    path = Path(path)
    if not path.is_file():
        return ExperimentBook((), "none")
    text = path.read_text()
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ExperimentError(f"{path}: not valid TOML: {exc}") from exc
    unknown = set(raw) - {"experiment"}
    if unknown:
        raise ExperimentError(f"{path}: unknown top-level key(s) {sorted(unknown)}; experiments are [[experiment]]")
    experiments = tuple(_experiment(path, i, item, catalog) for i, item in enumerate(raw.get("experiment", [])))
    names = [e.name for e in experiments]
    if len(set(names)) != len(names):
        raise ExperimentError(f"{path}: experiment names must be unique, got {names}")
    for i, a in enumerate(experiments):
        for b in experiments[i + 1:]:
            overlap_in_time = a.start < (b.stop or datetime.max.replace(tzinfo=UTC)) and \
                b.start < (a.stop or datetime.max.replace(tzinfo=UTC))
            if overlap_in_time and a.slice[0] < b.slice[1] and b.slice[0] < a.slice[1]:
                raise ExperimentError(f"{path}: experiments {a.name!r} and {b.name!r} run at the same time on "
                                      f"overlapping traffic slices {list(a.slice)} and {list(b.slice)}")
    return ExperimentBook(experiments, hashlib.sha256(text.encode()).hexdigest()[:10])


def _experiment(path: Path, i: int, item: dict, catalog: Catalog) -> Experiment:
    where = f"{path}: experiment {i + 1}"

    def fail(message: str):
        raise ExperimentError(f"{where} ({item.get('name', '?')}): {message}")

    allowed = {"name", "salt", "description", "slice", "holdout", "variants", "control", "start", "stop",
               "population", "primary_metric", "guardrail_metrics"}
    if set(item) - allowed:
        fail(f"unknown key(s) {sorted(set(item) - allowed)}")
    name = item.get("name")
    if not isinstance(name, str) or not name or len(name) > 64 or not name.replace("-", "").replace("_", "").isalnum():
        fail("name must be 1-64 letters, digits, '-' or '_'")
    window = item.get("slice", [0.0, 1.0])
    if (not isinstance(window, list) or len(window) != 2 or not all(isinstance(x, int | float) for x in window)
            or not 0 <= window[0] < window[1] <= 1):
        fail("slice must be [start, end) with 0 <= start < end <= 1")
    holdout = item.get("holdout", 0.0)
    if not isinstance(holdout, int | float) or not 0 <= holdout < 1:
        fail("holdout must be a share in [0, 1)")
    variants = tuple(_variant(item, j, v, catalog, fail) for j, v in enumerate(item.get("variants", [])))
    if len(variants) < 2 and not (variants and holdout > 0):
        fail("needs at least two arms: two variants, or one variant and a holdout")
    vnames = [v.name for v in variants]
    if len(set(vnames)) != len(vnames) or HOLDOUT in vnames:
        fail(f"variant names must be unique and not {HOLDOUT!r}")
    control = item.get("control", vnames[0] if vnames else HOLDOUT)
    if control not in vnames and control != HOLDOUT:
        fail(f"control {control!r} is not one of its variants {vnames}")
    start, stop = item.get("start"), item.get("stop")
    if not isinstance(start, datetime) or start.tzinfo is None:
        fail("start must be a TOML date-time with a time zone, e.g. 2026-12-01T00:00:00Z")
    if stop is not None and (not isinstance(stop, datetime) or stop.tzinfo is None or stop <= start):
        fail("stop must be a date-time with a time zone after start")
    primary = item.get("primary_metric", "retained_30")
    guardrails = tuple(item.get("guardrail_metrics", ["net_revenue_90"]))
    for metric in (primary, *guardrails):
        if metric not in METRICS:
            fail(f"metric {metric!r} is not one of {list(METRICS)}")
    return Experiment(
        name=name, salt=str(item.get("salt", name)), slice=(float(window[0]), float(window[1])),
        holdout=float(holdout), variants=variants, control=control, start=start.astimezone(UTC),
        stop=stop.astimezone(UTC) if stop else None, population=_population(item.get("population", {}), fail),
        primary_metric=primary, guardrail_metrics=guardrails, description=str(item.get("description", "")),
    )


def _variant(item: dict, j: int, raw: dict, catalog: Catalog, fail) -> Variant:
    if not isinstance(raw, dict) or set(raw) - {"name", "kind", "weight", "offer"}:
        fail(f"variant {j + 1}: keys are name, kind, weight and offer")
    kind, name, weight = raw.get("kind"), raw.get("name"), raw.get("weight", 1.0)
    if kind not in VARIANT_KINDS:
        fail(f"variant {j + 1}: kind must be one of {list(VARIANT_KINDS)}")
    if not isinstance(name, str) or not name:
        fail(f"variant {j + 1}: needs a name")
    if not isinstance(weight, int | float) or weight <= 0:
        fail(f"variant {name}: weight must be positive")
    offer = raw.get("offer")
    if kind == "offer":
        if offer not in catalog.ids or offer == "none":
            fail(f"variant {name}: offer {offer!r} is not an offer of the catalog (kind 'none' gives no offer)")
    elif offer is not None:
        fail(f"variant {name}: only kind 'offer' takes an offer")
    return Variant(name, kind, float(weight), offer)


def _population(raw: dict, fail) -> Population:
    known = {"reasons": REASONS, "nps_segments": NPS_SEGMENTS, "channels": BILLING_CHANNELS, "plans": None}
    if not isinstance(raw, dict) or set(raw) - set(known):
        fail(f"population keys are {sorted(known)}")
    out = {}
    for key, allowed in known.items():
        values = raw.get(key, [])
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            fail(f"population.{key} must be a list of strings")
        if allowed is not None and set(values) - set(allowed):
            fail(f"population.{key}: unknown value(s) {sorted(set(values) - set(allowed))}")
        out[key] = tuple(values)
    return Population(**out)
