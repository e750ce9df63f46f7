"""Validate a data directory against the training-data contract (retention.contract) before training.

All checks are set-based DuckDB queries, never Python loops over rows, so a data set of a million customers
and 200 million usage rows validates in well under a minute on two cores. Each table is scanned once: one
aggregate counts the failures of all row-level checks (type, empty, range, enum, data window, logical) and,
for tables with a customer_id, groups them per customer into a small temp table that the duplicate, reference
and coverage checks read instead of scanning the table again. Only a failing check runs a second query for its
first few example rows (in file order). Findings name the file, the 1-based data row (header not counted) and
the column.

Row numbers: Parquet rows are numbered by the reader (`file_row_number`); CSV rows by `row_number() OVER ()`
over the CSV scan, which DuckDB keeps in file order as long as `preserve_insertion_order` is on (set
explicitly below; the reader may parse the file in parallel, the numbering stays in file order). A folder of
Parquet parts is numbered per part and findings name the part, e.g. `usage/part-003.parquet`.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from retention.contract import (
    BOOLEAN,
    DATE,
    FILE_SUFFIXES,
    INTEGER,
    MANIFEST,
    NUMBER,
    STRING,
    TABLES,
    TIMESTAMP,
    Column,
    Table,
)
from retention.utc import as_utc, iso_z, naive_utc
from training.dataset import DatasetError, connect, reader_sql, resolve_window_end

# Below this share of customers with at least one NPS answer, NPS features carry little signal.
MIN_NPS_ANSWER_RATE = 0.05
BOOLEAN_TRUE = ("true", "t", "1")
BOOLEAN_FALSE = ("false", "f", "0")
NO_OFFER = "none"  # offer_id value that, like an empty cell, means no offer was shown

_INTEGER_TYPES = frozenset(
    f"{u}{t}" for u in ("", "U") for t in ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT")
)
_FLOAT_TYPES = frozenset({"FLOAT", "DOUBLE"})
_TYPE_NAMES = {
    STRING: "text",
    INTEGER: "an integer",
    NUMBER: "a number",
    TIMESTAMP: "a timestamp",
    DATE: "a date",
    BOOLEAN: "a boolean",
}
_TYPE_HINTS = {
    STRING: "text",
    INTEGER: "an integer, e.g. 7",
    NUMBER: "a finite number, e.g. 9.99",
    TIMESTAMP: "ISO-8601, e.g. 2024-05-01T12:30:00Z",
    DATE: "YYYY-MM-DD",
    BOOLEAN: "true/false, 1/0 or t/f",
}


@dataclass(frozen=True)
class Finding:
    file: str  # file name as on disk ("usage/part-003.parquet" inside a folder of Parquet parts)
    row: int | None  # 1-based data row number (header not counted); None for file/column-level problems
    column: str | None
    message: str

    def __str__(self) -> str:
        where = [f"row {self.row}"] if self.row is not None else []
        if self.column is not None:
            where.append(f"column '{self.column}'")
        return f"{self.file}: {', '.join(where) + ': ' if where else ''}{self.message}"


@dataclass
class ValidationReport:
    errors: list[Finding]
    warnings: list[Finding]
    window_end: datetime
    counts: dict[str, int] = field(default_factory=dict)  # data rows per readable table

    @property
    def ok(self) -> bool:
        return not self.errors

    def format(self) -> str:
        lines = [f"Data window end: {iso_z(self.window_end)}"]
        if self.counts:
            lines.append("Rows: " + ", ".join(f"{name} {n:,}" for name, n in self.counts.items()))
        for title, findings in (("error", self.errors), ("warning", self.warnings)):
            if findings:
                lines.append(f"{len(findings)} {title}{'s' if len(findings) != 1 else ''}:")
                lines += [f"  {title.upper()}: {f}" for f in findings]
        lines.append("OK" if self.ok else "FAILED")
        return "\n".join(lines)


def validate_dataset(
    data_dir: str | Path, *, window_end: datetime | None = None, max_examples: int = 5
) -> ValidationReport:
    """Check a data directory against the contract; never raises for bad data, it reports it."""
    data_dir = Path(data_dir)
    v = _Validator(data_dir, max(0, int(max_examples)))
    try:
        end = resolve_window_end(data_dir, window_end)
    except DatasetError as e:
        end = datetime.now(UTC)
        v.error(MANIFEST, None, "window_end", f"{str(e).split(': ', 1)[-1]}; using the current time instead")
    report = ValidationReport(v.errors, v.warnings, end, v.counts)
    if not data_dir.is_dir():
        v.error(str(data_dir), None, None, "not a directory")
        return report
    v.run(end)
    return report


class InvalidDataset(ValueError):
    """A data directory failed validation; `report` holds every error and warning."""

    def __init__(self, data_dir: Path, report: ValidationReport) -> None:
        super().__init__(f"{data_dir}: {len(report.errors)} error(s)")
        self.data_dir, self.report = data_dir, report


def require_valid(data_dir: str | Path, window_end: datetime | None = None) -> ValidationReport:
    """`validate_dataset`, raising InvalidDataset unless the data set passed (warnings are allowed)."""
    report = validate_dataset(data_dir, window_end=window_end)
    if not report.ok:
        raise InvalidDataset(Path(data_dir), report)
    return report


# --------------------------------------------------------------------------------------------------------------
# Implementation


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _show(value: object) -> str:
    """A cell value for a message: quoted text, shortened."""
    if value is None:
        return "empty"
    text = str(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return "'" + text + "'"


def _num(x: float) -> str:
    return f"{x:g}"


def _bounds(col: Column) -> str:
    if col.min is not None and col.max is not None and not col.min_exclusive:
        return f"between {_num(col.min)} and {_num(col.max)}"
    parts = []
    if col.min is not None:
        parts.append(f"{'>' if col.min_exclusive else '>='} {_num(col.min)}")
    if col.max is not None:
        parts.append(f"<= {_num(col.max)}")
    return " and ".join(parts)


@dataclass(frozen=True)
class _Col:
    """SQL expressions for one contract column as stored in the file."""

    spec: Column
    ident: str  # the quoted raw column
    text: str  # the cell as text, for messages
    empty: str  # predicate: no value
    parsed: str  # the typed value; NULL when empty or not parseable
    bad_type: str | None = None  # predicate: a value that cannot be read as the column's type
    not_integer: str | None = None  # predicate: a number that is not whole (INTEGER columns)


def _column_sql(spec: Column, raw_type: str) -> _Col | None:
    """How to read `spec` from a raw column of DuckDB type `raw_type`; None when the type is incompatible.

    Text cells (CSV, or text columns in Parquet) are parsed with TRY_CAST the way the typed views of
    training.dataset cast them, so a value that passes here also casts there."""
    c = _ident(spec.name)
    text = f"CAST({c} AS VARCHAR)"
    raw = raw_type.upper()
    if raw == "VARCHAR":
        if spec.type == STRING:
            # Empty or only spaces; the CASE runs trim() only for the rare values that start with a space.
            empty = f"({c} IS NULL OR CASE WHEN {c} < '!' THEN trim({c}) = '' ELSE false END)"
            return _Col(spec, c, c, empty, f"(CASE WHEN NOT {empty} THEN {c} END)")
        # Typed columns: only '' means no value (the typed views cast NULLIF(x, '')); '  ' is a bad value.
        empty = f"({c} IS NULL OR {c} = '')"
        if spec.type in (INTEGER, NUMBER):
            d = f"TRY_CAST({c} AS DOUBLE)"
            bad = f"(NOT {empty} AND ({d} IS NULL OR NOT isfinite({d})))"
            if spec.type == NUMBER:
                return _Col(spec, c, c, empty, f"(CASE WHEN isfinite({d}) THEN {d} END)", bad)
            not_int = f"(isfinite({d}) AND {d} <> round({d}))"
            return _Col(spec, c, c, empty, f"(CASE WHEN {d} = round({d}) THEN {d} END)", bad, not_int)
        if spec.type in (TIMESTAMP, DATE):
            # Same cast as training.dataset.typed_select: text with or without offset, stored as naive UTC.
            t = (
                f"TRY_CAST(TRY_CAST(NULLIF({c}, '') AS TIMESTAMPTZ) AS TIMESTAMP)"
                if spec.type == TIMESTAMP
                else f"TRY_CAST(NULLIF({c}, '') AS DATE)"
            )
            bad = f"(NOT {empty} AND ({t} IS NULL OR NOT isfinite({t})))"
            return _Col(spec, c, c, empty, f"(CASE WHEN isfinite({t}) THEN {t} END)", bad)
        if spec.type == BOOLEAN:
            true, false = ", ".join(map(_lit, BOOLEAN_TRUE)), ", ".join(map(_lit, BOOLEAN_FALSE))
            parsed = (
                f"(CASE WHEN lower({c}) IN ({true}) THEN true WHEN lower({c}) IN ({false}) THEN false END)"
            )
            bad = f"(NOT {empty} AND lower({c}) NOT IN ({true}, {false}))"
            return _Col(spec, c, c, empty, parsed, bad)
        raise ValueError(f"unknown column type {spec.type}")

    empty = f"({c} IS NULL)"
    is_int, is_float, is_decimal = raw in _INTEGER_TYPES, raw in _FLOAT_TYPES, raw.startswith("DECIMAL")
    is_ts, is_date = raw.startswith("TIMESTAMP"), raw == "DATE"
    if spec.type == STRING and is_int:
        return _Col(spec, c, text, empty, text)
    if spec.type == INTEGER and (is_int or is_float or is_decimal):
        if is_int:
            return _Col(spec, c, text, empty, c)
        bad = f"(NOT isfinite({c}))" if is_float else None
        return _Col(
            spec, c, text, empty, f"(CASE WHEN {c} = round({c}) THEN {c} END)", bad, f"({c} <> round({c}))"
        )
    if spec.type == NUMBER and (is_int or is_float or is_decimal):
        if is_float:
            return _Col(
                spec, c, text, empty, f"(CASE WHEN isfinite({c}) THEN {c} END)", f"(NOT isfinite({c}))"
            )
        return _Col(spec, c, text, empty, c)
    if spec.type in (TIMESTAMP, DATE) and (is_ts or is_date):
        target = "TIMESTAMP" if spec.type == TIMESTAMP else "DATE"
        t = f"CAST({c} AS {target})"
        return _Col(spec, c, text, empty, f"(CASE WHEN isfinite({t}) THEN {t} END)", f"(NOT isfinite({t}))")
    if spec.type == BOOLEAN and raw == "BOOLEAN":
        return _Col(spec, c, text, empty, c)
    if spec.type == BOOLEAN and is_int:
        return _Col(
            spec, c, text, empty, f"(CASE WHEN {c} IN (0, 1) THEN {c} = 1 END)", f"({c} NOT IN (0, 1))"
        )
    return None


@dataclass(frozen=True)
class _RowCheck:
    column: str | None
    where: str  # SQL predicate over the raw columns: the row fails the check
    values: tuple[str, ...]  # SQL expressions fetched for each example row
    message: Callable[[tuple], str]  # example values -> message
    label: str  # what is wrong, for the "... and N more rows" line


@dataclass
class _Source:
    table: Table
    path: Path
    name: str  # display name: "customers.csv", or "usage/" for a folder of parts
    scan: str  # FROM clause: the data as stored
    numbered: str  # FROM clause adding __file (display name) and __row (1-based data row)
    types: dict[str, str] = field(default_factory=dict)
    cols: dict[str, _Col] = field(default_factory=dict)  # readable contract columns
    stats: dict[str, int] = field(default_factory=dict)  # aggregates of the table scan (see _stats)
    by_customer: str | None = None  # temp table of the scan's aggregates per customer_id (see check_rows)


def _stats(src: _Source) -> dict[str, str]:
    """Extra counts computed in the same scan as the row checks."""
    stats = {}
    if src.table.name == "cancel_requests" and "propensity" in src.cols:
        stats["no_propensity"] = f"count(*) FILTER (WHERE {src.cols['propensity'].empty})"
    return stats


def _candidates(data_dir: Path, table: Table) -> list[Path]:
    """The files that could hold `table` (same rule as training.dataset.locate)."""
    paths = [data_dir / f"{table.name}{suffix}" for suffix in FILE_SUFFIXES] + [data_dir / table.name]
    return [p for p in paths if p.exists()]


def _open_source(table: Table, path: Path) -> _Source:
    p = str(path).replace("'", "''")
    if path.is_dir():
        name = f"{path.name}/"
        scan = f"read_parquet('{p}/*.parquet')"
        numbered = (
            f"(SELECT {_lit(name)} || parse_filename(filename) AS __file, file_row_number + 1 AS __row, "
            f"* EXCLUDE (filename, file_row_number) "
            f"FROM read_parquet('{p}/*.parquet', filename=true, file_row_number=true))"
        )
    elif path.suffix == ".parquet":
        name = path.name
        scan = f"read_parquet('{p}')"
        numbered = (
            f"(SELECT {_lit(name)} AS __file, file_row_number + 1 AS __row, * EXCLUDE (file_row_number) "
            f"FROM read_parquet('{p}', file_row_number=true))"
        )
    else:
        name = path.name
        scan = reader_sql(path)
        # A streaming row_number() over the scan numbers rows in file order (preserve_insertion_order).
        numbered = f"(SELECT {_lit(name)} AS __file, row_number() OVER () AS __row, * FROM {scan})"
    return _Source(table, path, name, scan, numbered)


def _first_lines(err: Exception, path: Path | None = None, n: int = 3) -> str:
    """The useful head of a DuckDB error message, on one line."""
    lines = []
    for line in str(err).splitlines():
        line = line.strip()
        if line.startswith(("The search space used was", "Possible fixes")):
            break
        if line:
            lines.append(line)
    text = "; ".join(lines[:n])
    for prefix in ("Invalid Input Error: ", "IO Error: ", "Conversion Error: ", "Binder Error: "):
        text = text.replace(prefix, "")
    if path is not None:
        text = text.replace(str(path), path.name)
    return text


class _Validator:
    def __init__(self, data_dir: Path, max_examples: int):
        self.data_dir = data_dir
        self.max_examples = max_examples
        self.errors: list[Finding] = []
        self.warnings: list[Finding] = []
        self.counts: dict[str, int] = {}
        self.sources: dict[str, _Source] = {}
        self.con: duckdb.DuckDBPyConnection | None = None
        self.have_customer_ids = False

    def error(self, file: str, row: int | None, column: str | None, message: str) -> None:
        self.errors.append(Finding(file, row, column, message))

    def warning(self, file: str, row: int | None, column: str | None, message: str) -> None:
        self.warnings.append(Finding(file, row, column, message))

    def query(self, sql: str) -> list[tuple]:
        assert self.con is not None
        return self.con.execute(sql).fetchall()

    # ---------------------------------------------------------------------------------------------- driver

    def run(self, window_end: datetime) -> None:
        self.con = connect()
        try:
            self.con.execute("SET preserve_insertion_order = true")  # keeps row_number() in file order
            self.con.execute("SET enable_progress_bar = false")
            self.end_ts = "TIMESTAMP " + _lit(naive_utc(window_end).isoformat(sep=" "))
            self.end_date = "DATE " + _lit(as_utc(window_end).date().isoformat())
            self.end_text = iso_z(window_end)
            for table in TABLES:
                self.check_table(table)
            try:
                self.check_references()
                self.check_coverage()
            except duckdb.Error as e:  # the files were readable a moment ago; report rather than crash
                self.error(str(self.data_dir), None, None, f"cannot read the data: {_first_lines(e)}")
        finally:
            self.con.close()

    def check_table(self, table: Table) -> None:
        found = _candidates(self.data_dir, table)
        if not found:
            self.error(
                table.name,
                None,
                None,
                f"missing table file (expected {table.name}.csv, {table.name}.parquet "
                f"or a folder {table.name}/ of Parquet parts)",
            )
            return
        if len(found) > 1:
            names = [p.name + ("/" if p.is_dir() else "") for p in found]
            self.error(
                ", ".join(names),
                None,
                None,
                f"table {table.name} is ambiguous: keep only one of {', '.join(names)}",
            )
            return
        src = _open_source(table, found[0])
        if src.path.is_dir() and not any(src.path.glob("*.parquet")):
            self.error(src.name, None, None, "folder contains no .parquet files")
            return
        if src.path.is_file() and src.path.stat().st_size == 0:
            self.error(src.name, None, None, "empty file (expected at least a header row)")
            return
        try:
            src.types = {r[0]: r[1] for r in self.query(f"DESCRIBE SELECT * FROM {src.scan}")}
            self.check_columns(src)
            self.check_rows(src)
        except duckdb.Error as e:
            self.counts.pop(table.name, None)
            if not self.malformed_csv_rows(src):
                self.error(src.name, None, None, f"cannot read the file: {_first_lines(e, src.path)}")
            return
        self.sources[table.name] = src

    def malformed_csv_rows(self, src: _Source) -> bool:
        """After a CSV failed to read: report its malformed rows (too many or too few fields, bad quoting),
        from DuckDB's rejects table. False when there is nothing row-level to report."""
        header = self.csv_header(src)
        if not header or len(set(header)) != len(header):
            return False
        columns = "{" + ", ".join(f"{_lit(name)}: 'VARCHAR'" for name in header) + "}"
        path = _lit(str(src.path))
        try:
            self.query(
                f"SELECT count(*) FROM read_csv({path}, header=true, sep=',', quote='\"', escape='\"', "
                f"columns={columns}, store_rejects=true, rejects_table='__rejects', rejects_scan='__reject_scans')"
            )
            (n,) = self.query("SELECT count(DISTINCT line) FROM __rejects")[0]
            rows = self.query(  # one row per line: a line with many extra fields is rejected once per field
                "SELECT line, arg_max(error_message, column_idx), arg_max(trim(csv_line, E'\\r\\n'), column_idx) "
                f"FROM __rejects GROUP BY line ORDER BY line LIMIT {self.max_examples}"
            )
            self.query("DROP TABLE __rejects; DROP TABLE __reject_scans")
        except duckdb.Error:
            return False
        if not n:
            return False
        for line, message, text in rows:  # `line` counts CSV records including the header
            self.error(src.name, int(line) - 1, None, f"malformed row: {message} (row text {_show(text)})")
        if n > len(rows):
            more = (
                f"... and {n - len(rows):,} more malformed rows ({n:,} in total)"
                if rows
                else f"{n:,} malformed rows"
            )
            self.error(src.name, None, None, more)
        return True

    # ------------------------------------------------------------------------------------- file and columns

    def check_columns(self, src: _Source) -> None:
        """Missing, duplicate, extra and wrongly typed columns; fills src.cols with the readable ones."""
        table, names = src.table, list(src.types)
        header = self.csv_header(src)
        seen: set[str] = set()
        for name in header if header is not None else names:
            if name.lower() in seen:
                self.error(src.name, None, name, "duplicate column name in the header")
            seen.add(name.lower())
        by_folded = {n.strip().lower(): n for n in names}
        for spec in table.columns:
            raw_type = src.types.get(spec.name)
            if raw_type is None:
                if spec.required:
                    hint = by_folded.get(spec.name)
                    extra = f" (found {hint!r}: column names are case-sensitive)" if hint else ""
                    self.error(src.name, None, spec.name, f"missing required column{extra}")
                continue
            col = _column_sql(spec, raw_type)
            if col is None:
                self.error(
                    src.name,
                    None,
                    spec.name,
                    f"column has type {raw_type}, which cannot hold {_TYPE_NAMES[spec.type]} "
                    f"(expected {_TYPE_HINTS[spec.type]})",
                )
                continue
            src.cols[spec.name] = col
        if not table.extra_columns_allowed:
            for name in names:
                if name not in table.column_names:
                    self.warning(
                        src.name, None, name, "extra column is not part of the contract and is ignored"
                    )

    def csv_header(self, src: _Source) -> list[str] | None:
        if src.path.is_dir() or src.path.suffix != ".csv":
            return None
        with src.path.open(newline="", encoding="utf-8-sig", errors="replace") as f:
            return next(csv.reader(f), [])

    # ------------------------------------------------------------------------------------------- row checks

    def row_checks(self, src: _Source) -> list[_RowCheck]:
        checks: list[_RowCheck] = []
        cols = src.cols
        for c in cols.values():
            spec, name = c.spec, c.spec.name
            if not spec.nullable:
                checks.append(
                    _RowCheck(name, c.empty, (), lambda v: "empty value in a required column", "empty")
                )
            if c.bad_type is not None:
                kind, hint = _TYPE_NAMES[spec.type], _TYPE_HINTS[spec.type]
                checks.append(
                    _RowCheck(
                        name,
                        c.bad_type,
                        (c.text,),
                        lambda v, kind=kind, hint=hint: (
                            f"cannot read {_show(v[0])} as {kind} (expected {hint})"
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
                        lambda v, name=name: f"{name} {_show(v[0])} is not an integer",
                        "not an integer",
                    )
                )
            if spec.allowed is not None:
                allowed = ", ".join(spec.allowed)
                checks.append(
                    _RowCheck(
                        name,
                        f"(NOT {c.empty} AND {c.text} NOT IN ({', '.join(map(_lit, spec.allowed))}))",
                        (c.text,),
                        lambda v, allowed=allowed: f"unknown value {_show(v[0])} (allowed: {allowed})",
                        "unknown value",
                    )
                )
            if spec.min is not None or spec.max is not None:
                conds = []
                if spec.min is not None:
                    conds.append(f"{c.parsed} {'<=' if spec.min_exclusive else '<'} {spec.min!r}")
                if spec.max is not None:
                    conds.append(f"{c.parsed} > {spec.max!r}")
                bounds = _bounds(spec)
                checks.append(
                    _RowCheck(
                        name,
                        f"({' OR '.join(conds)})",
                        (c.text,),
                        lambda v, name=name, bounds=bounds: (
                            f"{name} {_show(v[0])} is out of range (must be {bounds})"
                        ),
                        f"out of range (must be {bounds})",
                    )
                )
            if name in src.table.time_columns:
                limit = self.end_date if spec.type == DATE else self.end_ts
                end_text = self.end_text
                checks.append(
                    _RowCheck(
                        name,
                        f"({c.parsed} > {limit})",
                        (c.text,),
                        lambda v, name=name, end=end_text: (
                            f"{name} {_show(v[0])} is after the end of the data window ({end})"
                        ),
                        "after the end of the data window",
                    )
                )
        if src.table.name == "cancel_requests":
            checks += self.cancel_request_checks(cols)
        return checks

    def cancel_request_checks(self, cols: dict[str, _Col]) -> list[_RowCheck]:
        checks = []
        req, end = cols.get("requested_at"), cols.get("ended_at")
        if req is not None and end is not None:
            checks.append(
                _RowCheck(
                    "ended_at",
                    f"({end.parsed} < {req.parsed})",
                    (end.text, req.text),
                    lambda v: f"ended_at {_show(v[0])} is before requested_at {_show(v[1])}",
                    "ended before the cancel request",
                )
            )
        acc, offer = cols.get("accepted"), cols.get("offer_id")
        if acc is not None and offer is not None:
            checks.append(
                _RowCheck(
                    "accepted",
                    f"({acc.parsed} AND ({offer.empty} OR lower(trim({offer.text})) = {_lit(NO_OFFER)}))",
                    (acc.text, offer.text),
                    lambda v: (
                        f"accepted is {_show(v[0])} but no offer was shown "
                        f"(offer_id is {_show(v[1]) if v[1] and v[1].strip() else 'empty'})"
                    ),
                    "accepted without an offer",
                )
            )
        return checks

    def check_rows(self, src: _Source) -> None:
        """One scan of the table counts the failures of every row check (plus the counts of _stats); only
        failing checks then query their example rows.

        Tables with a customer_id are aggregated per customer_id in that same scan, into a temp table that the
        duplicate, reference and coverage checks then read instead of scanning (and joining) the table again."""
        checks = self.row_checks(src)
        stats = _stats(src)
        aggregates = (
            ["count(*)"] + [f"count(*) FILTER (WHERE {ch.where})" for ch in checks] + list(stats.values())
        )
        cid = src.cols.get("customer_id")
        if cid is not None:
            src.by_customer = f"__by_customer_{src.table.name}"
            columns = ", ".join(f"{a} AS a{i}" for i, a in enumerate(aggregates))
            self.query(
                f"CREATE OR REPLACE TEMP TABLE {src.by_customer} AS "
                f"SELECT CASE WHEN NOT {cid.empty} THEN {cid.text} END AS id, {columns} FROM {src.scan} GROUP BY 1"
            )
            sums = ", ".join(f"coalesce(sum(a{i}), 0)" for i in range(len(aggregates)))
            row = self.query(f"SELECT {sums} FROM {src.by_customer}")[0]
        else:
            row = self.query(f"SELECT {', '.join(aggregates)} FROM {src.scan}")[0]
        total, *values = (int(v) for v in row)
        failures, src.stats = values[: len(checks)], dict(zip(stats, values[len(checks) :], strict=True))
        self.counts[src.table.name] = total
        for ch, n in zip(checks, failures, strict=True):
            if n:
                self.examples(src, ch.column, ch.where, ch.values, ch.message, n, ch.label)
        for spec in src.table.columns:
            if spec.unique and spec.name in src.cols:
                self.check_unique(src, src.cols[spec.name])

    def check_unique(self, src: _Source, c: _Col) -> None:
        if c.spec.name == "customer_id" and src.by_customer is not None:
            sql = f"SELECT coalesce(sum(a0), 0) - count(*) FROM {src.by_customer} WHERE id IS NOT NULL"
        else:
            sql = f"SELECT count(*) - count(DISTINCT {c.text}) FROM {src.scan} WHERE NOT {c.empty}"
        (dups,) = self.query(sql)[0]
        if dups:
            self.duplicates(src, c, int(dups))

    def examples(
        self,
        src: _Source,
        column: str | None,
        where: str,
        values: Sequence[str],
        message: Callable[[tuple], str],
        total: int,
        label: str,
        *,
        numbered: str | None = None,
    ) -> None:
        """Report the first `max_examples` failing rows (in file order) and a line for the rest."""
        shown = 0
        if self.max_examples:
            select = ", ".join(["__file", "__row", *values])
            rows = self.query(
                f"SELECT {select} FROM {numbered or src.numbered} WHERE {where} "
                f"ORDER BY __file, __row LIMIT {self.max_examples}"
            )
            for file, row, *vals in rows:
                self.error(file, int(row), column, message(tuple(vals)))
            shown = len(rows)
        if total > shown:
            more = f"... and {total - shown:,} more rows: {label} ({total:,} in total)" if shown else ""
            self.error(src.name, None, column, more or f"{total:,} rows: {label}")

    def duplicates(self, src: _Source, c: _Col, dups: int) -> None:
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
            return f"duplicate {name} {_show(key_value)} (first seen in {where})"

        self.examples(
            src,
            name,
            "__occurrence > 1",
            ("__key", "__first_file", "__first_row"),
            message,
            dups,
            f"duplicate {name}",
            numbered=numbered,
        )

    # ---------------------------------------------------------------------------------- cross-table checks

    def check_references(self) -> None:
        customers = self.sources.get("customers")
        if customers is None or customers.by_customer is None:
            return
        self.query(
            f"CREATE OR REPLACE TEMP VIEW __customer_ids AS "
            f"SELECT id FROM {customers.by_customer} WHERE id IS NOT NULL"
        )
        self.have_customer_ids = True
        for table in TABLES:
            src = self.sources.get(table.name)
            if src is None or src.by_customer is None or not table.references_customer:
                continue
            c = src.cols["customer_id"]
            unknown = f"{src.by_customer} WHERE id IS NOT NULL AND id NOT IN (SELECT id FROM __customer_ids)"
            (n,) = self.query(f"SELECT coalesce(sum(a0), 0) FROM {unknown}")[0]
            if not n:
                continue
            self.query(f"CREATE OR REPLACE TEMP TABLE __unknown_{table.name} AS SELECT id FROM {unknown}")
            self.examples(
                src,
                "customer_id",
                f"({c.text} IN (SELECT id FROM __unknown_{table.name}))",
                (c.text,),
                lambda v, f=customers.name: f"unknown customer_id {_show(v[0])} (not in {f})",
                int(n),
                f"unknown customer_id (not in {customers.name})",
            )

    def check_coverage(self) -> None:
        """Warnings for legal but suspicious data."""
        n_customers = self.counts.get("customers")
        for table in TABLES:
            src = self.sources.get(table.name)
            if src is None or self.counts.get(table.name) != 0:
                continue
            if table.name == "nps_responses":
                self.warning(src.name, None, None, "no NPS responses at all: NPS features will be empty")
            elif table.name == "cancel_requests":
                self.warning(
                    src.name, None, None, "no cancel requests: there is nothing to learn offers from"
                )
            else:
                self.warning(src.name, None, None, "table has no data rows")
        self.check_nps_rate(n_customers)
        self.check_propensity()
        self.check_usage_coverage(n_customers)

    def check_nps_rate(self, n_customers: int | None) -> None:
        nps = self.sources.get("nps_responses")
        if not n_customers or nps is None or not self.counts.get("nps_responses") or nps.by_customer is None:
            return
        (answered,) = self.query(f"SELECT count(*) FROM {nps.by_customer} WHERE id IS NOT NULL")[0]
        rate = answered / n_customers
        if rate < MIN_NPS_ANSWER_RATE:
            self.warning(
                nps.name,
                None,
                "customer_id",
                f"only {rate:.1%} of customers ({answered:,} of {n_customers:,}) answered the NPS survey "
                f"(under {MIN_NPS_ANSWER_RATE:.0%}): NPS features will carry little signal",
            )

    def check_propensity(self) -> None:
        cancels = self.sources.get("cancel_requests")
        total = self.counts.get("cancel_requests")
        if cancels is None or not total:
            return
        consequence = "off-policy evaluation of new offer policies is impossible"
        if "propensity" not in cancels.types:
            self.warning(cancels.name, None, "propensity", f"no propensity column: {consequence}")
            return
        if "propensity" not in cancels.cols:  # wrongly typed column, already an error
            return
        missing = cancels.stats["no_propensity"]
        if missing == total:
            self.warning(
                cancels.name, None, "propensity", f"no cancel request has a propensity: {consequence}"
            )
        elif missing:
            self.warning(
                cancels.name,
                None,
                "propensity",
                f"{missing:,} of {total:,} cancel requests have no propensity: "
                f"off-policy evaluation cannot use them",
            )

    def check_usage_coverage(self, n_customers: int | None) -> None:
        usage = self.sources.get("usage")
        if not n_customers or usage is None or not self.have_customer_ids or usage.by_customer is None:
            return
        without = f"(SELECT id FROM __customer_ids WHERE id NOT IN (SELECT id FROM {usage.by_customer} WHERE id IS NOT NULL))"
        (n,) = self.query(f"SELECT count(*) FROM {without}")[0]
        if not n:
            return
        ids = [
            r[0]
            for r in self.query(f"SELECT id FROM {without} ORDER BY id LIMIT {max(self.max_examples, 1)}")
        ]
        examples = ", ".join(_show(i) for i in ids) + (", ..." if n > len(ids) else "")
        self.warning(
            usage.name,
            None,
            "customer_id",
            f"{n:,} of {n_customers:,} customers ({n / n_customers:.1%}) have no usage rows at all "
            f"(e.g. {examples})",
        )
