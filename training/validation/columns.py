"""How each contract column is read from the type its file stores it in (CSV text, or a Parquet type), as
SQL expressions: what counts as empty, the parsed value, and which values are not of the column's type."""

from __future__ import annotations

from dataclasses import dataclass

from retention.contract import BOOLEAN, DATE, INTEGER, NUMBER, STRING, TIMESTAMP, Column
from training.validation.sql import literal, quote_ident

BOOLEAN_TRUE = ("true", "t", "1")
BOOLEAN_FALSE = ("false", "f", "0")
_INTEGER_TYPES = frozenset(
    f"{u}{t}" for u in ("", "U") for t in ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT")
)
_FLOAT_TYPES = frozenset({"FLOAT", "DOUBLE"})
TYPE_NAMES = {
    STRING: "text",
    INTEGER: "an integer",
    NUMBER: "a number",
    TIMESTAMP: "a timestamp",
    DATE: "a date",
    BOOLEAN: "a boolean",
}
TYPE_HINTS = {
    STRING: "text",
    INTEGER: "an integer, e.g. 7",
    NUMBER: "a finite number, e.g. 9.99",
    TIMESTAMP: "ISO-8601, e.g. 2024-05-01T12:30:00Z",
    DATE: "YYYY-MM-DD",
    BOOLEAN: "true/false, 1/0 or t/f",
}


@dataclass(frozen=True)
class ColumnSql:
    """SQL expressions for one contract column as stored in the file."""

    spec: Column
    ident: str  # the quoted raw column
    text: str  # the cell as text, for messages
    empty: str  # predicate: no value
    parsed: str  # the typed value; NULL when empty or not parseable
    bad_type: str | None = None  # predicate: a value that cannot be read as the column's type
    not_integer: str | None = None  # predicate: a number that is not whole (INTEGER columns)


def column_sql(spec: Column, raw_type: str) -> ColumnSql | None:
    """How to read `spec` from a raw column of DuckDB type `raw_type`; None when the type is incompatible.

    Text cells (CSV, or text columns in Parquet) are parsed with TRY_CAST the way the typed views of
    training.dataset cast them, so a value that passes here also casts there."""
    c = quote_ident(spec.name)
    text = f"CAST({c} AS VARCHAR)"
    raw = raw_type.upper()
    if raw == "VARCHAR":
        if spec.type == STRING:
            # Empty or only spaces; the CASE runs trim() only for the rare values that start with a space.
            empty = f"({c} IS NULL OR CASE WHEN {c} < '!' THEN trim({c}) = '' ELSE false END)"
            return ColumnSql(spec, c, c, empty, f"(CASE WHEN NOT {empty} THEN {c} END)")
        # Typed columns: only '' means no value (the typed views cast NULLIF(x, '')); '  ' is a bad value.
        empty = f"({c} IS NULL OR {c} = '')"
        if spec.type in (INTEGER, NUMBER):
            d = f"TRY_CAST({c} AS DOUBLE)"
            bad = f"(NOT {empty} AND ({d} IS NULL OR NOT isfinite({d})))"
            if spec.type == NUMBER:
                return ColumnSql(spec, c, c, empty, f"(CASE WHEN isfinite({d}) THEN {d} END)", bad)
            not_int = f"(isfinite({d}) AND {d} <> round({d}))"
            return ColumnSql(spec, c, c, empty, f"(CASE WHEN {d} = round({d}) THEN {d} END)", bad, not_int)
        if spec.type in (TIMESTAMP, DATE):
            # Same cast as training.dataset.typed_select: text with or without offset, stored as naive UTC.
            t = (
                f"TRY_CAST(TRY_CAST(NULLIF({c}, '') AS TIMESTAMPTZ) AS TIMESTAMP)"
                if spec.type == TIMESTAMP
                else f"TRY_CAST(NULLIF({c}, '') AS DATE)"
            )
            bad = f"(NOT {empty} AND ({t} IS NULL OR NOT isfinite({t})))"
            return ColumnSql(spec, c, c, empty, f"(CASE WHEN isfinite({t}) THEN {t} END)", bad)
        if spec.type == BOOLEAN:
            true, false = ", ".join(map(literal, BOOLEAN_TRUE)), ", ".join(map(literal, BOOLEAN_FALSE))
            parsed = (
                f"(CASE WHEN lower({c}) IN ({true}) THEN true WHEN lower({c}) IN ({false}) THEN false END)"
            )
            bad = f"(NOT {empty} AND lower({c}) NOT IN ({true}, {false}))"
            return ColumnSql(spec, c, c, empty, parsed, bad)
        raise ValueError(f"unknown column type {spec.type}")

    empty = f"({c} IS NULL)"
    is_int, is_float, is_decimal = raw in _INTEGER_TYPES, raw in _FLOAT_TYPES, raw.startswith("DECIMAL")
    is_ts, is_date = raw.startswith("TIMESTAMP"), raw == "DATE"
    if spec.type == STRING and is_int:
        return ColumnSql(spec, c, text, empty, text)
    if spec.type == INTEGER and (is_int or is_float or is_decimal):
        if is_int:
            return ColumnSql(spec, c, text, empty, c)
        bad = f"(NOT isfinite({c}))" if is_float else None
        return ColumnSql(
            spec, c, text, empty, f"(CASE WHEN {c} = round({c}) THEN {c} END)", bad, f"({c} <> round({c}))"
        )
    if spec.type == NUMBER and (is_int or is_float or is_decimal):
        if is_float:
            return ColumnSql(
                spec, c, text, empty, f"(CASE WHEN isfinite({c}) THEN {c} END)", f"(NOT isfinite({c}))"
            )
        return ColumnSql(spec, c, text, empty, c)
    if spec.type in (TIMESTAMP, DATE) and (is_ts or is_date):
        target = "TIMESTAMP" if spec.type == TIMESTAMP else "DATE"
        t = f"CAST({c} AS {target})"
        return ColumnSql(spec, c, text, empty, f"(CASE WHEN isfinite({t}) THEN {t} END)", f"(NOT isfinite({t}))")
    if spec.type == BOOLEAN and raw == "BOOLEAN":
        return ColumnSql(spec, c, text, empty, c)
    if spec.type == BOOLEAN and is_int:
        return ColumnSql(
            spec, c, text, empty, f"(CASE WHEN {c} IN (0, 1) THEN {c} = 1 END)", f"({c} NOT IN (0, 1))"
        )
    return None
