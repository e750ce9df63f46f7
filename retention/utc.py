"""Times are UTC everywhere: these helpers are the one place that says what a time without a zone means
(UTC, as in the data contract) and how a time is written."""

from __future__ import annotations

from datetime import UTC, datetime


def as_utc(ts: datetime) -> datetime:
    """An aware datetime in UTC; a naive one is taken to be UTC already."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def naive_utc(ts: datetime) -> datetime:
    """The same instant as a naive UTC datetime, the form DuckDB's TIMESTAMP columns hold."""
    return as_utc(ts).replace(tzinfo=None)


def iso_z(ts: datetime) -> str:
    """ISO-8601 in UTC with a Z, e.g. 2026-12-01T08:00:00Z."""
    return as_utc(ts).isoformat().replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    """An ISO-8601 date or date-time as an aware UTC datetime (no zone: UTC). Raises ValueError."""
    return as_utc(datetime.fromisoformat(text))


def require_aware(name: str, value: object) -> datetime:
    """`value` if it is a timezone-aware datetime; a naive one is a bug in the caller (ValueError)."""
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {value!r}")
    return value
