"""Is each table there, readable, and shaped as the contract says: one file per table, not empty, CSV rows
well formed, every required column present with a type that can hold its values."""

from __future__ import annotations

from typing import TYPE_CHECKING

import duckdb

from retention.contract import Table
from training.validation.columns import TYPE_HINTS, TYPE_NAMES, column_sql
from training.validation.rows import check_rows
from training.validation.sources import Source, candidates, csv_header, open_source
from training.validation.sql import first_lines, literal, show

if TYPE_CHECKING:
    from training.validation.run import ValidationRun


def check_table(run: ValidationRun, table: Table) -> None:
    found = candidates(run.data_dir, table)
    if not found:
        run.error(
            table.name,
            None,
            None,
            f"missing table file (expected {table.name}.csv, {table.name}.parquet "
            f"or a folder {table.name}/ of Parquet parts)",
        )
        return
    if len(found) > 1:
        names = [p.name + ("/" if p.is_dir() else "") for p in found]
        run.error(
            ", ".join(names),
            None,
            None,
            f"table {table.name} is ambiguous: keep only one of {', '.join(names)}",
        )
        return
    src = open_source(table, found[0])
    if src.path.is_dir() and not any(src.path.glob("*.parquet")):
        run.error(src.name, None, None, "folder contains no .parquet files")
        return
    if src.path.is_file() and src.path.stat().st_size == 0:
        run.error(src.name, None, None, "empty file (expected at least a header row)")
        return
    try:
        src.types = {r[0]: r[1] for r in run.query(f"DESCRIBE SELECT * FROM {src.scan}")}
        _check_columns(run, src)
        check_rows(run, src)
    except duckdb.Error as e:
        run.counts.pop(table.name, None)
        if not _malformed_csv_rows(run, src):
            run.error(src.name, None, None, f"cannot read the file: {first_lines(e, src.path)}")
        return
    run.sources[table.name] = src


def _malformed_csv_rows(run: ValidationRun, src: Source) -> bool:
    """After a CSV failed to read: report its malformed rows (too many or too few fields, bad quoting),
    from DuckDB's rejects table. False when there is nothing row-level to report."""
    header = csv_header(src)
    if not header or len(set(header)) != len(header):
        return False
    columns = "{" + ", ".join(f"{literal(name)}: 'VARCHAR'" for name in header) + "}"
    path = literal(str(src.path))
    try:
        run.query(
            f"SELECT count(*) FROM read_csv({path}, header=true, sep=',', quote='\"', escape='\"', "
            f"columns={columns}, store_rejects=true, rejects_table='__rejects', rejects_scan='__reject_scans')"
        )
        (n,) = run.query("SELECT count(DISTINCT line) FROM __rejects")[0]
        rows = run.query(  # one row per line: a line with many extra fields is rejected once per field
            "SELECT line, arg_max(error_message, column_idx), arg_max(trim(csv_line, E'\\r\\n'), column_idx) "
            f"FROM __rejects GROUP BY line ORDER BY line LIMIT {run.max_examples}"
        )
        run.query("DROP TABLE __rejects; DROP TABLE __reject_scans")
    except duckdb.Error:
        return False
    if not n:
        return False
    for line, message, text in rows:  # `line` counts CSV records including the header
        run.error(src.name, int(line) - 1, None, f"malformed row: {message} (row text {show(text)})")
    if n > len(rows):
        more = (
            f"... and {n - len(rows):,} more malformed rows ({n:,} in total)"
            if rows
            else f"{n:,} malformed rows"
        )
        run.error(src.name, None, None, more)
    return True


def _check_columns(run: ValidationRun, src: Source) -> None:
    """Missing, duplicate, extra and wrongly typed columns; fills src.cols with the readable ones."""
    table, names = src.table, list(src.types)
    header = csv_header(src)
    seen: set[str] = set()
    for name in header if header is not None else names:
        if name.lower() in seen:
            run.error(src.name, None, name, "duplicate column name in the header")
        seen.add(name.lower())
    by_folded = {n.strip().lower(): n for n in names}
    for spec in table.columns:
        raw_type = src.types.get(spec.name)
        if raw_type is None:
            if spec.required:
                hint = by_folded.get(spec.name)
                extra = f" (found {hint!r}: column names are case-sensitive)" if hint else ""
                run.error(src.name, None, spec.name, f"missing required column{extra}")
            continue
        col = column_sql(spec, raw_type)
        if col is None:
            run.error(
                src.name,
                None,
                spec.name,
                f"column has type {raw_type}, which cannot hold {TYPE_NAMES[spec.type]} "
                f"(expected {TYPE_HINTS[spec.type]})",
            )
            continue
        src.cols[spec.name] = col
    if not table.extra_columns_allowed:
        for name in names:
            if name not in table.column_names:
                run.warning(
                    src.name, None, name, "extra column is not part of the contract and is ignored"
                )
