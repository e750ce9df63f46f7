"""The offer catalog: load and validate config/offers.toml into immutable Offer objects.

The catalog is the only list of offers anywhere in the code: the simulator, the models and (later) the
decision API all read it, so an offer that the billing system cannot carry out cannot be chosen.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from marshmallow import ValidationError, post_load, validate, validates_schema

from retention.configfiles import (
    Bool,
    ConfigError,
    ConfigSchema,
    Entries,
    Int,
    Number,
    Str,
    StrList,
    at_least,
    identifier,
    load_file,
    name_of,
    non_empty,
    one_of,
)
from retention.contract import BILLING_CHANNELS, BILLING_PERIODS
from retention.plans import DEFAULT_PLANS, PlanCatalog, PlanCatalogError, load_plans

OFFER_TYPES: tuple[str, ...] = ("none", "pause", "discount", "downgrade", "credit", "followup", "reward", "referral")
DEFAULT_CATALOG = Path(__file__).resolve().parent.parent / "config" / "offers.toml"


class CatalogError(ConfigError):
    """The offer catalog file is invalid; each line names the file, the offer and the field."""


@dataclass(frozen=True)
class Offer:
    id: str
    type: str
    display_key: str
    months: int = 0
    percent: float = 0.0
    to_plan: str | None = None
    to_price: float | None = None
    credits: int = 0
    cost: float = 0.0
    # A referral (invite a friend, both get a reward): what the friend's reward costs us, the share of
    # referrers who stay and bring a friend who signs up, and that friend's revenue over the value horizon.
    friend_cost: float = 0.0
    signup_rate: float = 0.0
    signup_value: float = 0.0
    billing_periods: tuple[str, ...] = BILLING_PERIODS
    channels: tuple[str, ...] = BILLING_CHANNELS
    enabled: bool = True

    def applies_to(self, billing_period: str, channel: str) -> bool:
        return self.enabled and billing_period in self.billing_periods and channel in self.channels


@dataclass(frozen=True)
class Catalog:
    version: str
    offers: tuple[Offer, ...]
    plans: PlanCatalog | None = None  # the plans offers apply to (retention.plans); None: not checked

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_id", {o.id: o for o in self.offers})

    def __getitem__(self, offer_id: str) -> Offer:
        return self._by_id[offer_id]  # type: ignore[attr-defined]

    def __contains__(self, offer_id: object) -> bool:
        return offer_id in self._by_id  # type: ignore[attr-defined]

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(o.id for o in self.offers)

    @property
    def offer_types(self) -> dict[str, str]:
        """Offer id -> type, for recognising past pauses and discounts in logged history."""
        return {o.id: o.type for o in self.offers}


# --------------------------------------------------------------------------------------------- loading

# The parameters each type needs: without them the billing system cannot carry the offer out.
_REQUIRED_PARAMS: dict[str, tuple[str, ...]] = {
    "none": (),
    "pause": ("months",),
    "discount": ("percent", "months"),
    "downgrade": ("to_plan", "to_price"),
    "credit": ("credits",),
    "followup": (),
    # A loyalty reward (free extra content or credit) and a referral have a direct cost by definition: without
    # it the value of giving one would be overstated, so the file must say it (0 is allowed, if written).
    "reward": ("credits", "cost"),
    "referral": ("credits", "cost", "friend_cost", "signup_rate", "signup_value"),
}
# Keys that only mean something for one type: elsewhere they are errors, not silently ignored.
_ONLY_FOR: dict[str, tuple[str, ...]] = {name: ("referral",) for name in ("friend_cost", "signup_rate",
                                                                          "signup_value")}


class _OfferSchema(ConfigSchema):
    """One [[offer]]; the checks across offers (ids unique, `none` present) see the whole array."""

    id = Str(required=True, validate=identifier)
    type = Str(required=True, validate=one_of(OFFER_TYPES))
    display_key = Str(validate=non_empty)
    months = Int(validate=at_least(0))
    percent = Number()
    to_plan = Str(validate=non_empty)
    to_price = Number(validate=at_least(0))
    credits = Int(validate=at_least(0))
    cost = Number(validate=at_least(0))
    friend_cost = Number(validate=at_least(0))
    signup_rate = Number(validate=validate.Range(min=0.0, max=1.0, error="must be between {min} and {max}, "
                                                                          "got {input}"))
    signup_value = Number(validate=at_least(0))
    billing_periods = StrList(BILLING_PERIODS)
    channels = StrList(BILLING_CHANNELS)
    enabled = Bool()

    @validates_schema(skip_on_field_errors=False, pass_original=True)
    def _type_params(self, data: dict, raw, **_) -> None:
        if not isinstance(raw, dict):  # not a table: already an error
            return
        otype, errors = data.get("type"), {}
        for name in _REQUIRED_PARAMS.get(otype, ()):
            if name not in raw:
                errors[name] = [f"required for type {otype!r}"]
        for name, types in _ONLY_FOR.items():
            if name in raw and otype in OFFER_TYPES and otype not in types:
                errors[name] = [f"only for type {' or '.join(map(repr, types))}, not {otype!r}"]
        if otype in ("reward", "referral") and data.get("credits") == 0:
            errors["credits"] = [f"a {otype} gives at least 1 credit, got 0"]
        months, percent = data.get("months"), data.get("percent")
        if otype == "pause" and months is not None and months not in (1, 2, 3):
            errors["months"] = [f"a pause lasts 1, 2 or 3 months, got {months}"]
        if otype == "discount":
            if percent is not None and not 0 < percent < 100:
                errors["percent"] = [f"a discount's percent must be in (0, 100), got {percent:g}"]
            if months is not None and not 1 <= months <= 12:
                errors["months"] = [f"a discount lasts 1..12 months, got {months}"]
        if errors:
            raise ValidationError(errors)

    @validates_schema(pass_collection=True, skip_on_field_errors=False)
    def _across_offers(self, offers: list[dict], **_) -> None:
        if not offers:
            raise ValidationError("at least one [[offer]] is required")
        errors: dict = {}
        first: dict[str, int] = {}
        for i, offer in enumerate(offers):
            oid = offer.get("id")
            if oid in first:
                errors[i] = {"id": [f"duplicate: offer #{first[oid] + 1} has the id {oid!r} too"]}
            elif oid is not None:
                first[oid] = i
        if "none" not in first:
            errors["_schema"] = ["the catalog must contain the 'none' offer (what a customer gets when nothing "
                                 "is offered)"]
        if errors:
            raise ValidationError(errors)

    @post_load
    def _offer(self, data: dict, **_) -> Offer:
        data.setdefault("display_key", f"offer.{data['id']}")
        return Offer(**data)


class _CatalogSchema(ConfigSchema):
    version = Str(required=True, validate=non_empty)
    plans = Str(validate=non_empty)  # the plan catalog's path, relative to this file (default config/plans.toml)
    offer = Entries(_OfferSchema, "[[offer]]", required=True,
                    error_messages={"required": "at least one [[offer]] is required"})

    @post_load
    def _catalog(self, data: dict, **_) -> tuple[Catalog, str | None]:
        """The catalog without its plans yet, and the `plans` key that says where they are (load_catalog
        loads and checks them)."""
        return Catalog(version=data["version"], offers=tuple(data["offer"])), data.get("plans")


_CATALOG = _CatalogSchema()


def _label(keys: tuple, raw) -> str | None:
    if len(keys) == 2 and keys[0] == "offer" and isinstance(keys[1], int):
        return f"offer #{keys[1] + 1} ({name_of(raw, 'id')})"
    return None


def load_catalog(path: str | Path = DEFAULT_CATALOG) -> Catalog:
    """The offer catalog of a TOML file with its plan catalog (the file's `plans` key, relative to it, else
    config/plans.toml), or a CatalogError listing every problem in either. A downgrade offer must move to a
    catalog plan at that plan's monthly price."""
    path = Path(path)
    catalog, plans_key = load_file(path, _CATALOG, CatalogError, "offer catalog", _label)
    plans_path = path.parent / plans_key if plans_key else DEFAULT_PLANS
    try:
        plans = load_plans(plans_path)
    except PlanCatalogError as exc:
        raise CatalogError(*exc.lines) from None
    problems = []
    for i, o in enumerate(catalog.offers):
        if o.type != "downgrade":
            continue
        target = plans.get(o.to_plan)
        where = f"{path}: offer #{i + 1} ({o.id})"
        if target is None:
            problems.append(f"{where}: to_plan: {o.to_plan!r} is not a plan of {plans_path} "
                            f"({', '.join(plans.ids)})")
        elif abs(target.monthly_price - (o.to_price or 0.0)) > 0.005:
            problems.append(f"{where}: to_price: {o.to_price:g} is not the monthly price of {o.to_plan!r} in "
                            f"{plans_path} ({target.monthly_price:.2f})")
    if problems:
        raise CatalogError(*problems)
    return Catalog(version=catalog.version, offers=catalog.offers, plans=plans)
