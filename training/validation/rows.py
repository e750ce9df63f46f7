"""Row-level checks, in one scan per table: empty required cells, values not of the column's type, whole
numbers, allowed values, ranges, times after the data window, and the cancel flow's own logic (ended
before the request, accepted without an offer); then duplicates of unique columns.

One aggregate counts the failures of every check and, for tables with a customer_id, groups them per
customer into a small temp table that the duplicate, reference and coverage checks read instead of
scanning the table again. Only a failing check runs a second query for its first few example rows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from retention.contract import DATE
from training.validation.columns import TYPE_HINTS, TYPE_NAMES, ColumnSql
from training.validation.sources import Source
from training.validation.sql import bounds, literal, show

if TYPE_CHECKING:
    from training.validation.run import ValidationRun

NO_OFFER = "none"  # offer_id value that, like an empty cell, means no offer was shown


@dataclass(frozen=True)
class _RowCheck:
    column: str | None
    where: str  # SQL predicate over the raw columns: the row fails the check
    values: tuple[str, ...]  # SQL expressions fetched for each example row
    message: Callable[[tuple], str]  # example values -> message
    label: str  # what is wrong, for the "... and N more rows" line


def _scan_stats(src: Source) -> dict[str, str]:
    """Extra counts computed in the same scan as the row checks."""
    stats = {}
    if src.table.name == "cancel_requests" and "propensity" in src.cols:
        stats["no_propensity"] = f"count(*) FILTER (WHERE {src.cols['propensity'].empty})"
    return stats


def _row_checks(run: ValidationRun, src: Source) -> list[_RowCheck]:
    checks: list[_RowCheck] = []
    cols = src.cols
    for c in cols.values():
        spec, name = c.spec, c.spec.name
        if not spec.nullable:
            checks.append(
                _RowCheck(name, c.empty, (), lambda v: "empty value in a required column", "empty")
            )
        if c.bad_type is not None:
            kind, hint = TYPE_NAMES[spec.type], TYPE_HINTS[spec.type]
            checks.append(
                _RowCheck(
                    name,
                    c.bad_type,
                    (c.text,),
                    lambda v, kind=kind, hint=hint: (
                        f"cannot read {show(v[0])} as {kind} (expected {hint})"
                    ),
                    f"not {kind}",
                )
            )
        if c.not_integer is not None:
            checks.append(
                _RowCheck(
                    name,
                    c.not_integer,
                    (c.text,),
                    lambda v, name=name: f"{name} {show(v[0])} is not an integer",
                    "not an integer",
                )
            )
        if spec.allowed is not None:
            allowed = ", ".join(spec.allowed)
            checks.append(
                _RowCheck(
                    name,
                    f"(NOT {c.empty} AND {c.text} NOT IN ({', '.join(map(literal, spec.allowed))}))",
                    (c.text,),
                    lambda v, allowed=allowed: f"unknown value {show(v[0])} (allowed: {allowed})",
                    "unknown value",
                )
            )
        if spec.min is not None or spec.max is not None:
            conds = []
            if spec.min is not None:
                conds.append(f"{c.parsed} {'<=' if spec.min_exclusive else '<'} {spec.min!r}")
            if spec.max is not None:
                conds.append(f"{c.parsed} > {spec.max!r}")
            limits = bounds(spec)
            checks.append(
                _RowCheck(
                    name,
                    f"({' OR '.join(conds)})",
                    (c.text,),
                    lambda v, name=name, limits=limits: (
                        f"{name} {show(v[0])} is out of range (must be {limits})"
                    ),
                    f"out of range (must be {limits})",
                )
            )
        if name in src.table.time_columns:
            limit = run.end_date if spec.type == DATE else run.end_ts
            end_text = run.end_text
            checks.append(
                _RowCheck(
                    name,
                    f"({c.parsed} > {limit})",
                    (c.text,),
                    lambda v, name=name, end=end_text: (
                        f"{name} {show(v[0])} is after the end of the data window ({end})"
                    ),
                    "after the end of the data window",
                )
            )
    if src.table.name == "cancel_requests":
        checks += _cancel_request_checks(cols)
    return checks


def _cancel_request_checks(cols: dict[str, ColumnSql]) -> list[_RowCheck]:
    checks = []
    req, end = cols.get("requested_at"), cols.get("ended_at")
    if req is not None and end is not None:
        checks.append(
            _RowCheck(
                "ended_at",
                f"({end.parsed} < {req.parsed})",
                (end.text, req.text),
                lambda v: f"ended_at {show(v[0])} is before requested_at {show(v[1])}",
                "ended before the cancel request",
            )
        )
    acc, offer = cols.get("accepted"), cols.get("offer_id")
    if acc is not None and offer is not None:
        checks.append(
            _RowCheck(
                "accepted",
                f"({acc.parsed} AND ({offer.empty} OR lower(trim({offer.text})) = {literal(NO_OFFER)}))",
                (acc.text, offer.text),
                lambda v: (
                    f"accepted is {show(v[0])} but no offer was shown "
                    f"(offer_id is {show(v[1]) if v[1] and v[1].strip() else 'empty'})"
                ),
                "accepted without an offer",
            )
        )
    return checks


def check_rows(run: ValidationRun, src: Source) -> None:
    """One scan of the table counts the failures of every row check (plus the counts of _scan_stats); only
    failing checks then query their example rows.

    Tables with a customer_id are aggregated per customer_id in that same scan, into a temp table that the
    duplicate, reference and coverage checks then read instead of scanning (and joining) the table again."""
    checks = _row_checks(run, src)
    stats = _scan_stats(src)
    aggregates = (
        ["count(*)"] + [f"count(*) FILTER (WHERE {ch.where})" for ch in checks] + list(stats.values())
    )
    cid = src.cols.get("customer_id")
    if cid is not None:
        src.by_customer = f"__by_customer_{src.table.name}"
        columns = ", ".join(f"{a} AS a{i}" for i, a in enumerate(aggregates))
        run.query(
            f"CREATE OR REPLACE TEMP TABLE {src.by_customer} AS "
            f"SELECT CASE WHEN NOT {cid.empty} THEN {cid.text} END AS id, {columns} FROM {src.scan} GROUP BY 1"
        )
        sums = ", ".join(f"coalesce(sum(a{i}), 0)" for i in range(len(aggregates)))
        row = run.query(f"SELECT {sums} FROM {src.by_customer}")[0]
    else:
        row = run.query(f"SELECT {', '.join(aggregates)} FROM {src.scan}")[0]
    total, *values = (int(v) for v in row)
    failures, src.stats = values[: len(checks)], dict(zip(stats, values[len(checks) :], strict=True))
    run.counts[src.table.name] = total
    for ch, n in zip(checks, failures, strict=True):
        if n:
            run.examples(src, ch.column, ch.where, ch.values, ch.message, n, ch.label)
    for spec in src.table.columns:
        if spec.unique and spec.name in src.cols:
            _check_unique(run, src, src.cols[spec.name])


def _check_unique(run: ValidationRun, src: Source, c: ColumnSql) -> None:
    if c.spec.name == "customer_id" and src.by_customer is not None:
        sql = f"SELECT coalesce(sum(a0), 0) - count(*) FROM {src.by_customer} WHERE id IS NOT NULL"
    else:
        sql = f"SELECT count(*) - count(DISTINCT {c.text}) FROM {src.scan} WHERE NOT {c.empty}"
    (dups,) = run.query(sql)[0]
    if dups:
        _duplicates(run, src, c, int(dups))


def _duplicates(run: ValidationRun, src: Source, c: ColumnSql, dups: int) -> None:
    """Report the rows repeating a value of a unique column, with the row of its first occurrence."""
    key, name = c.text, c.spec.name
    numbered = (
        f"(SELECT __file, __row, {key} AS __key, "
        f"row_number() OVER (PARTITION BY {key} ORDER BY __file, __row) AS __occurrence, "
        f"first_value(__file) OVER (PARTITION BY {key} ORDER BY __file, __row) AS __first_file, "
        f"first_value(__row) OVER (PARTITION BY {key} ORDER BY __file, __row) AS __first_row "
        f"FROM {src.numbered} WHERE NOT {c.empty})"
    )

    def message(v: tuple) -> str:
        key_value, first_file, first_row = v
        where = f"row {first_row}" + ("" if first_file == src.name else f" of {first_file}")
        return f"duplicate {name} {show(key_value)} (first seen in {where})"

    run.examples(
        src,
        name,
        "__occurrence > 1",
        ("__key", "__first_file", "__first_row"),
        message,
        dups,
        f"duplicate {name}",
        numbered=numbered,
    )
