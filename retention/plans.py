"""The plan catalog: every plan the billing system sells, with its list price, billing period and currency,
and the cheaper plan a downgrade moves it to. Loaded and validated from config/plans.toml (the offer catalog
loads it: `retention.offers.load_catalog`), served at `GET /v1/plans`, and what a decision request's
`plan_id` and `price` are checked against (`PlanCatalog.problems`).

The rule for a request's price (documented in the README, "Plans and prices"): the plan must be in the
catalog, billed by the request's `billing_period` and (when the request names one) sold in its `currency`,
and
the price must lie within `price_tolerance` of the plan's list price on either side (0.5: half to one and
a half times it). Customers do pay other prices than today's list price (older prices kept, regional
prices); a price outside the band is a price of another period or another plan, which would misvalue
every offer.

The training contract does not need the catalog: a data set from another business has plans of its own.
`retention validate` lists rows whose plan is not in the catalog as warnings, not errors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from marshmallow import ValidationError, post_load, validates_schema

from retention.configfiles import (
    ConfigError,
    ConfigSchema,
    Entries,
    Number,
    Str,
    StrList,
    above,
    identifier,
    load_file,
    name_of,
    non_empty,
    one_of,
)
from retention.contract import BILLING_PERIODS

_PER = {"monthly": "month", "annual": "year"}
DEFAULT_PLANS = Path(__file__).resolve().parent.parent / "config" / "plans.toml"


class PlanCatalogError(ConfigError):
    """The plan catalog file is invalid; each line names the file, the plan and the field."""


@dataclass(frozen=True)
class Plan:
    id: str
    period: str  # a contract billing period: monthly or annual
    price: float  # list price per billing period
    currencies: tuple[str, ...]  # sold in each at `price` (in that currency's units)
    downgrade_to: str | None = None  # the cheaper plan a downgrade offer moves a subscriber to

    @property
    def monthly_price(self) -> float:
        """As retention.value.monthly_price: an annual price spread over 12 months."""
        return self.price / 12.0 if self.period == "annual" else self.price


@dataclass(frozen=True)
class PlanCatalog:
    version: str
    price_tolerance: float
    plans: tuple[Plan, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_id", {p.id: p for p in self.plans})

    def __contains__(self, plan_id: object) -> bool:
        return plan_id in self._by_id  # type: ignore[attr-defined]

    def get(self, plan_id: str | None) -> Plan | None:
        return self._by_id.get(plan_id)  # type: ignore[attr-defined]

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(p.id for p in self.plans)

    def price_band(self, plan: Plan) -> tuple[float, float]:
        """The prices accepted for the plan, in whole cents rounded inward: what GET /v1/plans publishes and
        the 422 names is exactly what the check accepts."""
        low, high = plan.price * (1 - self.price_tolerance), plan.price * (1 + self.price_tolerance)
        return math.ceil(round(low * 100, 6)) / 100, math.floor(round(high * 100, 6)) / 100

    def problems(self, plan_id: str, price: float, billing_period: str, currency: str | None = None,
                 ) -> dict[str, str]:
        """What is wrong with a request's plan and price, by request field ({} when nothing is)."""
        plan = self.get(plan_id)
        if plan is None:
            return {"plan_id": f"unknown plan {plan_id!r}; the plan catalog (GET /v1/plans, version "
                               f"{self.version}) has {', '.join(self.ids)}"}
        out = {}
        if billing_period != plan.period:
            out["billing_period"] = f"plan {plan.id!r} is billed {_PER[plan.period]}ly, not {_PER[billing_period]}ly"
        if currency is not None and currency not in plan.currencies:
            out["currency"] = f"plan {plan.id!r} is sold in {', '.join(plan.currencies)}, not {currency}"
        low, high = self.price_band(plan)
        if not low <= price <= high:
            out["price"] = (f"{price:g} is not a price of plan {plan.id!r}: its list price is {plan.price:g} "
                            f"per {_PER[plan.period]}; "
                            f"prices from {low:.2f} to {high:.2f} are accepted")
        return out


# --------------------------------------------------------------------------------------------- loading


def _currencies(values: tuple[str, ...]) -> None:
    if not values:
        raise ValidationError("must name at least one currency")
    bad = [v for v in values if not (len(v) == 3 and v.isascii() and v.isalpha() and v.isupper())]
    if bad:
        raise ValidationError(f"must be ISO 4217 codes such as \"USD\", got {', '.join(map(repr, bad))}")


class _PlanSchema(ConfigSchema):
    id = Str(required=True, validate=identifier)
    period = Str(required=True, validate=one_of(BILLING_PERIODS))
    price = Number(required=True, validate=above(0))
    currencies = StrList(required=True, validate=_currencies)
    downgrade_to = Str(validate=non_empty)

    @validates_schema(pass_collection=True, skip_on_field_errors=False)
    def _across_plans(self, plans: list[dict], **_) -> None:
        if not plans:
            raise ValidationError("at least one [[plan]] is required")
        errors: dict = {}
        first: dict[str, int] = {}
        for i, plan in enumerate(plans):
            pid = plan.get("id")
            if pid in first:
                errors[i] = {"id": [f"duplicate: plan #{first[pid] + 1} has the id {pid!r} too"]}
            elif pid is not None:
                first[pid] = i
        by_id = {p.get("id"): p for p in plans if isinstance(p, dict)}
        for i, plan in enumerate(plans):
            target = plan.get("downgrade_to") if isinstance(plan, dict) else None
            if target is None or i in errors:
                continue
            to = by_id.get(target)
            if to is None:
                errors[i] = {"downgrade_to": [f"{target!r} is not a plan of this catalog"]}
            elif target == plan.get("id"):
                errors[i] = {"downgrade_to": ["a plan cannot downgrade to itself"]}
            elif _monthly(to) is not None and _monthly(plan) is not None and _monthly(to) >= _monthly(plan):
                errors[i] = {"downgrade_to": [f"{target!r} costs {_monthly(to):.2f} a month, not less than "
                                              f"this plan's {_monthly(plan):.2f}"]}
            elif not set(plan.get("currencies") or ()) <= set(to.get("currencies") or ()):
                errors[i] = {"downgrade_to": [f"{target!r} is not sold in every currency this plan is"]}
        if errors:
            raise ValidationError(errors)

    @post_load
    def _plan(self, data: dict, **_) -> Plan:
        return Plan(**data)


def _monthly(raw: dict) -> float | None:
    price, period = raw.get("price"), raw.get("period")
    if isinstance(price, int | float) and not isinstance(price, bool) and period in BILLING_PERIODS:
        return float(price) / 12.0 if period == "annual" else float(price)
    return None


class _PlanCatalogSchema(ConfigSchema):
    version = Str(required=True, validate=non_empty)
    price_tolerance = Number(required=True, validate=lambda v: _tolerance(v))
    plan = Entries(_PlanSchema, "[[plan]]", required=True,
                   error_messages={"required": "at least one [[plan]] is required"})

    @post_load
    def _catalog(self, data: dict, **_) -> PlanCatalog:
        return PlanCatalog(version=data["version"], price_tolerance=data["price_tolerance"],
                           plans=tuple(data["plan"]))


def _tolerance(value: float) -> None:
    if not 0 <= value < 1:
        raise ValidationError(f"must be in [0, 1) (a share of the list price), got {value:g}")


_PLANS = _PlanCatalogSchema()


def _label(keys: tuple, raw) -> str | None:
    if len(keys) == 2 and keys[0] == "plan" and isinstance(keys[1], int):
        return f"plan #{keys[1] + 1} ({name_of(raw, 'id')})"
    return None


def load_plans(path: str | Path = DEFAULT_PLANS) -> PlanCatalog:
    """The plan catalog of a TOML file, or a PlanCatalogError listing every problem in it."""
    return load_file(Path(path), _PLANS, PlanCatalogError, "plan catalog", _label)
