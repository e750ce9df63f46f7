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
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from marshmallow import ValidationError, post_load, validate, validates_schema

from retention.configfiles import (
    AwareDateTime,
    ConfigError,
    ConfigSchema,
    Entries,
    Number,
    Str,
    StrictField,
    StrList,
    Table,
    above,
    context,
    is_number,
    load_file,
    name_of,
    non_empty,
    one_of,
)
from retention.contract import BILLING_CHANNELS, REASONS
from retention.offers import Catalog

DEFAULT_EXPERIMENTS = Path(__file__).resolve().parent.parent / "config" / "experiments.toml"
LAYER_SALT = "retention-offers/experiment-layer/v1"
HOLDOUT = "holdout"
VARIANT_KINDS = ("offer", "model", "rules", "none")
METRICS = ("retained_30", "retained_90", "accepted", "net_revenue_90")
NPS_SEGMENTS = ("promoter", "passive", "detractor", "none")


class ExperimentError(ConfigError):
    """An experiments file that cannot be run as written; each line names the file, the experiment and the
    field."""


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


def _experiment_name(value: str) -> None:
    if not value or len(value) > 64 or not value.replace("-", "").replace("_", "").isalnum():
        raise ValidationError(f"must be 1-64 letters, digits, '-' or '_', got {value!r}")


class _Slice(StrictField):
    """`slice = [start, end]`: the share [start, end) of the traffic line, as a tuple of floats."""

    what = "[start, end] with 0 <= start < end <= 1"

    def accepts(self, value):
        return (isinstance(value, list) and len(value) == 2 and all(is_number(x) for x in value)
                and 0 <= value[0] < value[1] <= 1)

    def convert(self, value):
        return float(value[0]), float(value[1])


class _VariantSchema(ConfigSchema):
    name = Str(required=True, validate=non_empty)
    kind = Str(required=True, validate=one_of(VARIANT_KINDS))
    weight = Number(load_default=1.0, validate=above(0))
    offer = Str()

    @validates_schema(skip_on_field_errors=False, pass_original=True)
    def _offer(self, data: dict, raw, **_) -> None:
        if not isinstance(raw, dict):
            return
        kind, offer = data.get("kind"), data.get("offer")
        if kind == "offer" and "offer" not in raw:
            raise ValidationError("required for kind 'offer': the catalog offer this arm makes", "offer")
        if kind == "offer" and offer is not None and (offer not in context()["catalog"] or offer == "none"):
            raise ValidationError(f"{offer!r} is not an offer of the catalog (kind 'none' gives no offer)", "offer")
        if kind not in (None, "offer") and "offer" in raw:
            raise ValidationError("only kind 'offer' takes an offer", "offer")

    @validates_schema(pass_collection=True, skip_on_field_errors=False)
    def _names(self, variants: list[dict], **_) -> None:
        errors: dict = {}
        first: dict[str, int] = {}
        for j, v in enumerate(variants):
            name = v.get("name")
            if name == HOLDOUT:
                errors[j] = {"name": [f"{HOLDOUT!r} names the holdout arm; call the variant something else"]}
            elif name in first:
                errors[j] = {"name": [f"duplicate: variant {first[name] + 1} has the name {name!r} too"]}
            elif name is not None:
                first[name] = j
        if errors:
            raise ValidationError(errors)

    @post_load
    def _variant(self, data: dict, **_) -> Variant:
        return Variant(**data)


class _PopulationSchema(ConfigSchema):
    reasons = StrList(REASONS)
    plans = StrList()
    nps_segments = StrList(NPS_SEGMENTS)
    channels = StrList(BILLING_CHANNELS)

    @post_load
    def _population(self, data: dict, **_) -> Population:
        return Population(**data)


class _ExperimentSchema(ConfigSchema):
    """One [[experiment]]; names and traffic slices are checked across all of them."""

    name = Str(required=True, validate=_experiment_name)
    salt = Str(validate=non_empty)
    description = Str(load_default="")
    slice = _Slice(load_default=(0.0, 1.0))
    holdout = Number(load_default=0.0, validate=validate.Range(
        0, 1, max_inclusive=False, error="must be a share in [0, 1), got {input!r}"))
    variants = Entries(_VariantSchema, 'variants = [{ name = "model", kind = "model" }, ...]', load_default=list)
    control = Str()
    start = AwareDateTime(required=True)
    stop = AwareDateTime(load_default=None)
    population = Table(_PopulationSchema, load_default=Population)
    primary_metric = Str(load_default="retained_30", validate=one_of(METRICS))
    guardrail_metrics = StrList(METRICS, load_default=("net_revenue_90",))

    @validates_schema(skip_on_field_errors=False, pass_original=True)
    def _arms(self, data: dict, raw, **_) -> None:
        if not isinstance(raw, dict) or not isinstance(raw.get("variants", []), list):
            return
        variants = raw.get("variants", [])
        errors = {}
        if "holdout" in data and len(variants) < 2 and not (variants and data["holdout"] > 0):
            errors["variants"] = ["needs at least two arms: two variants, or one variant and a holdout"]
        names = [v["name"] for v in variants if isinstance(v, dict) and isinstance(v.get("name"), str)]
        control = data.get("control")
        # Only when every variant has a name: otherwise the control may be the one whose name is wrong.
        if control is not None and len(names) == len(variants) and control not in names and control != HOLDOUT:
            errors["control"] = [f"{control!r} is not one of its variants {names} (nor {HOLDOUT!r})"]
        # A holdout control without a holdout share has no customer: every comparison would be against nothing
        # (the analysis met it as a KeyError). Unknown while the holdout itself is refused.
        if control == HOLDOUT and data.get("holdout") == 0:
            errors["control"] = [f"{HOLDOUT!r} gets no customers: holdout is 0 (give a holdout share, or name one of "
                                 f"its variants {names})"]
        if data.get("start") and data.get("stop") and data["stop"] <= data["start"]:
            errors["stop"] = [f"must be after start ({data['start'].isoformat()})"]
        if errors:
            raise ValidationError(errors)

    @validates_schema(pass_collection=True, skip_on_field_errors=False, pass_original=True)
    def _across_experiments(self, experiments: list[dict], raw: list, **_) -> None:
        errors: dict = {}
        first: dict[str, int] = {}
        for i, e in enumerate(experiments):
            name = e.get("name")
            if name in first:
                errors[i] = {"name": [f"duplicate: experiment {first[name] + 1} has the name {name!r} too"]}
            elif name is not None:
                first[name] = i
        # Experiments running at the same time must own disjoint slices: one cancel flow, one offer. Only
        # those whose slice, start and stop are valid can be compared.
        timed = [(i, e) for i, e in enumerate(experiments) if {"slice", "start", "stop"} <= set(e)]
        for k, (j, b) in enumerate(timed):
            for i, a in timed[:k]:
                if _overlap(a, b):
                    errors.setdefault(j, {}).setdefault("slice", []).append(
                        f"overlapping traffic slices: {list(b['slice'])} here and {list(a['slice'])} in "
                        f"experiment {i + 1} ({name_of(raw[i], 'name')}), which runs at the same time")
        if errors:
            raise ValidationError(errors)

    @post_load
    def _experiment(self, data: dict, **_) -> Experiment:
        names = [v.name for v in data["variants"]]
        stop = data["stop"]
        return Experiment(
            name=data["name"], salt=data.get("salt", data["name"]), slice=data["slice"], holdout=data["holdout"],
            variants=tuple(data["variants"]), control=data.get("control", names[0] if names else HOLDOUT),
            start=data["start"].astimezone(UTC), stop=stop.astimezone(UTC) if stop else None,
            population=data["population"], primary_metric=data["primary_metric"],
            guardrail_metrics=data["guardrail_metrics"], description=data["description"],
        )


def _overlap(a: dict, b: dict) -> bool:
    forever = datetime.max.replace(tzinfo=UTC)
    in_time = a["start"] < (b["stop"] or forever) and b["start"] < (a["stop"] or forever)
    return in_time and a["slice"][0] < b["slice"][1] and b["slice"][0] < a["slice"][1]


class _BookSchema(ConfigSchema):
    error_messages = {"unknown": "unknown key; experiments are [[experiment]] tables"}

    experiment = Entries(_ExperimentSchema, "[[experiment]]", load_default=list)

    @post_load
    def _book(self, data: dict, **_) -> ExperimentBook:
        return ExperimentBook(tuple(data["experiment"]), hashlib.sha256(context()["text"].encode()).hexdigest()[:10])


_BOOK = _BookSchema()


def _label(keys: tuple, raw) -> str | None:
    if len(keys) == 2 and keys[0] == "experiment" and isinstance(keys[1], int):
        return f"experiment {keys[1] + 1} ({name_of(raw, 'name')})"
    if len(keys) == 4 and keys[0] == "experiment" and keys[2] == "variants" and isinstance(keys[3], int):
        return f"variant {keys[3] + 1} ({name_of(raw, 'name')})"
    return None


def load_experiments(catalog: Catalog, path: str | Path = DEFAULT_EXPERIMENTS) -> ExperimentBook:
    """Read and check config/experiments.toml against the catalog; a missing file means no experiments. An
    ExperimentError lists every problem in the file."""
    path = Path(path)
    if not path.is_file():
        return ExperimentBook((), "none")
    return load_file(path, _BOOK, ExperimentError, "experiments file", _label, catalog=catalog)
