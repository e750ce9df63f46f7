"""Numbers as a person reads them: one function per kind of number, for the HTML reports (Jinja filters, see
reports.render) and the command line's text (reports.text). Every function prints a number that does not exist
(None, NaN, an infinity, something that is not a number) as its `missing` text, and rounds so that a value
that rounds to zero never prints as "-0.0"."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from typing import Any

DASH = "–"  # a number that does not exist (yet), on a page
ASCII_DASH = "-"  # the same in the terminal
NA = "n/a"  # a figure a model's metadata does not have (a metric undefined on one class)


def finite(value: Any) -> float | None:
    """`value` as a finite float; None for None, NaN, infinities, booleans and anything that is not a number."""
    if value is None or isinstance(value, bool):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def fixed(value: Any, digits: int = 2, *, sign: bool = False, grouping: bool = True, missing: str = DASH) -> str:
    """`digits` decimals, thousands separated unless `grouping` is off, "+" on positive values with `sign`."""
    f = finite(value)
    if f is None:
        return missing
    f = round(f, digits) + 0.0  # + 0.0 turns -0.0 into 0.0: no "-0.0"
    return f"{f:{'+' if sign else ''}{',' if grouping else ''}.{digits}f}"


def count(value: Any, *, grouping: bool = True, missing: str = DASH) -> str:
    """A whole number: 12,345."""
    f = finite(value)
    if f is None:
        return missing
    return f"{round(f):,}" if grouping else str(round(f))


def percent(value: Any, digits: int | None = 1, *, sign: bool = False, missing: str = DASH) -> str:
    """A share as a percentage: 0.593 -> "59.3%"; `digits` None prints the shortest form (0.8 -> "80%")."""
    f = finite(value)
    if f is None:
        return missing
    if digits is None:
        return f"{100 * f:{'+' if sign else ''}g}%"
    return fixed(100 * f, digits, sign=sign, grouping=False) + "%"


def points(value: Any, digits: int = 1, *, sign: bool = True, unit: bool = True, missing: str = DASH) -> str:
    """A difference of two rates in percentage points: 0.031 -> "+3.1 pp" (no unit with `unit` off)."""
    f = finite(value)
    if f is None:
        return missing
    return fixed(100 * f, digits, sign=sign, grouping=False) + (" pp" if unit else "")


def money(value: Any, *, sign: bool = False, missing: str = DASH) -> str:
    """An amount in the plan currency, 2 decimals: 1,234.50 (signed: +1,234.50)."""
    return fixed(value, 2, sign=sign, missing=missing)


def significant(value: Any, digits: int = 3, *, missing: str = DASH) -> str:
    """`digits` significant digits: 0.000909, 6.42e-18."""
    f = finite(value)
    return missing if f is None else f"{f:.{digits}g}"


def general(value: Any, *, missing: str = DASH) -> str:
    """The shortest form of a setting such as a significance level: 0.05."""
    f = finite(value)
    return missing if f is None else f"{f:g}"


def p_value(value: Any, *, missing: str = DASH) -> str:
    """A p-value to 3 decimals, "< 0.001" below that (what a reader decides on)."""
    f = finite(value)
    if f is None:
        return missing
    return "< 0.001" if f < 0.001 else f"{f:.3f}"


def p_exact(value: Any, *, missing: str = DASH) -> str:
    """A p-value in full even when tiny, for the sample-ratio check (where 1e-3 and 1e-30 mean different
    things): 1.5e-10."""
    f = finite(value)
    if f is None:
        return missing
    return f"{f:.1e}" if f < 0.001 else f"{f:.3f}"


def p_is(value: Any, *, missing: str = DASH) -> str:
    """A p-value after "p": "= 0.048" or "< 0.001"."""
    text = p_value(value, missing=missing)
    return text if text.startswith("<") or text == missing else f"= {text}"


def measure(value: Any, rate: bool, *, missing: str = DASH) -> str:
    """An estimate: a rate as a percentage, money with 2 decimals."""
    return percent(value, missing=missing) if rate else money(value, missing=missing)


def change(value: Any, rate: bool, *, sign: bool = True, unit: bool = True, missing: str = DASH) -> str:
    """A difference: of rates in signed percentage points, of money signed with 2 decimals."""
    if rate:
        return points(value, sign=sign, unit=unit, missing=missing)
    return money(value, sign=sign, missing=missing)


def interval(low: Any, high: Any, fmt: Callable[[Any], str], *, missing: str = DASH) -> str:
    """ "low to high", each bound by `fmt`; `missing` unless both bounds exist."""
    if finite(low) is None or finite(high) is None:
        return missing
    return f"{fmt(low)} to {fmt(high)}"


def measure_interval(low: Any, high: Any, rate: bool, *, missing: str = DASH) -> str:
    """The interval of an estimate: "57.0% to 61.0%", "20.16 to 22.44"."""
    return interval(low, high, lambda v: measure(v, rate), missing=missing)


def change_interval(low: Any, high: Any, rate: bool, *, missing: str = DASH) -> str:
    """The interval of a difference, its unit once at the end: "+1.8 to +7.3 pp"."""
    text = interval(low, high, lambda v: change(v, rate, unit=False), missing=missing)
    return f"{text} pp" if rate and text != missing else text


def metadata_value(value: Any, *, missing: str = NA) -> str:
    """A scalar of a model's metadata as it is: counts with separators, metrics with 4 decimals (large values
    as whole numbers), text and booleans as they are."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"  # not through float: a byte count or a seed keeps every digit
    if value is None or isinstance(value, float):
        f = finite(value)
        if f is None:
            return missing
        return fixed(f, 4, grouping=False) if abs(f) < 1000 else fixed(f, 0)
    return str(value)


def when(value: datetime | str | None, *, missing: str = DASH) -> str:
    """A time to the minute with its zone: 2026-12-20 00:00 UTC (ISO-8601 text is read first)."""
    if not value:
        return missing
    if not isinstance(value, datetime):
        try:
            value = datetime.fromisoformat(str(value))
        except ValueError:
            return str(value)
    zone = value.strftime(" %Z") if value.tzinfo else ""
    return value.strftime("%Y-%m-%d %H:%M") + zone


def is_finite(value: Any) -> bool:
    return finite(value) is not None


# The Jinja filters of the reports (reports.render registers them): `{{ x|percent }}`, `{{ p|p_value }}`...
FILTERS: dict[str, Callable[..., str]] = {
    f.__name__: f for f in (fixed, count, percent, points, money, significant, general, p_value, p_exact, p_is,
                            measure, measure_interval, change, change_interval, metadata_value,
                            when)
}
TESTS: dict[str, Callable[[Any], bool]] = {"finite": is_finite}  # `{% if x is finite %}`
