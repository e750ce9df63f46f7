"""The offer catalog: load and validate config/offers.toml into immutable Offer objects.

The catalog is the only list of offers anywhere in the code: the simulator, the models and (later) the
decision API all read it, so an offer that the billing system cannot carry out cannot be chosen.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from retention.contract import BILLING_CHANNELS, BILLING_PERIODS

OFFER_TYPES: tuple[str, ...] = ("none", "pause", "discount", "downgrade", "credit", "followup")
DEFAULT_CATALOG = Path(__file__).resolve().parent.parent / "config" / "offers.toml"

_KNOWN_KEYS = {
    "id", "type", "display_key", "months", "percent", "to_plan", "to_price", "credits", "cost",
    "billing_periods", "channels", "enabled",
}
_REQUIRED_PARAMS = {
    "none": set(),
    "pause": {"months"},
    "discount": {"percent", "months"},
    "downgrade": {"to_plan", "to_price"},
    "credit": {"credits"},
    "followup": set(),
}


class CatalogError(ValueError):
    """The offer catalog file is invalid; the message names the file, the offer and the field."""


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
    billing_periods: tuple[str, ...] = BILLING_PERIODS
    channels: tuple[str, ...] = BILLING_CHANNELS
    enabled: bool = True

    def applies_to(self, billing_period: str, channel: str) -> bool:
        return self.enabled and billing_period in self.billing_periods and channel in self.channels


@dataclass(frozen=True)
class Catalog:
    version: str
    offers: tuple[Offer, ...]

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


def _check(cond: bool, path: Path, where: str, msg: str) -> None:
    if not cond:
        raise CatalogError(f"{path}: {where}: {msg}")


def load_catalog(path: str | Path = DEFAULT_CATALOG) -> Catalog:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CatalogError(f"{path}: cannot read offer catalog: {exc}") from exc
    version = raw.get("version")
    _check(isinstance(version, str) and bool(version), path, "version", "must be a non-empty string")
    entries = raw.get("offer")
    _check(isinstance(entries, list) and bool(entries), path, "offer", "at least one [[offer]] is required")
    offers: list[Offer] = []
    seen: set[str] = set()
    for i, e in enumerate(entries):
        where = f"offer #{i + 1} ({e.get('id', '?')})"
        unknown = set(e) - _KNOWN_KEYS
        _check(not unknown, path, where, f"unknown field(s) {sorted(unknown)}")
        oid, otype = e.get("id"), e.get("type")
        _check(isinstance(oid, str) and oid.isidentifier(), path, where, "id must be an identifier")
        _check(oid not in seen, path, where, "duplicate id")
        seen.add(oid)
        _check(otype in OFFER_TYPES, path, where, f"type must be one of {OFFER_TYPES}")
        missing = _REQUIRED_PARAMS[otype] - set(e)
        _check(not missing, path, where, f"type {otype} needs {sorted(missing)}")
        if otype == "pause":
            _check(e["months"] in (1, 2, 3), path, where, "pause months must be 1, 2 or 3")
        if otype == "discount":
            _check(0 < e["percent"] < 100, path, where, "discount percent must be in (0, 100)")
            _check(isinstance(e["months"], int) and 1 <= e["months"] <= 12, path, where, "months in 1..12")
        for key, allowed in (("billing_periods", BILLING_PERIODS), ("channels", BILLING_CHANNELS)):
            vals = e.get(key, list(allowed))
            _check(set(vals) <= set(allowed), path, where, f"{key} must be a subset of {allowed}")
        _check(float(e.get("cost", 0.0)) >= 0, path, where, "cost must be >= 0")
        offers.append(
            Offer(
                id=oid,
                type=otype,
                display_key=e.get("display_key", f"offer.{oid}"),
                months=int(e.get("months", 0)),
                percent=float(e.get("percent", 0.0)),
                to_plan=e.get("to_plan"),
                to_price=float(e["to_price"]) if "to_price" in e else None,
                credits=int(e.get("credits", 0)),
                cost=float(e.get("cost", 0.0)),
                billing_periods=tuple(e.get("billing_periods", BILLING_PERIODS)),
                channels=tuple(e.get("channels", BILLING_CHANNELS)),
                enabled=bool(e.get("enabled", True)),
            )
        )
    _check("none" in seen, path, "offer", "the catalog must contain the 'none' offer")
    return Catalog(version=version, offers=tuple(offers))
