"""Open a data directory (CSV or Parquet files of the contract) as DuckDB views.

Two layers of views are created on one in-memory DuckDB connection:
- `raw_<table>`: the file as stored (CSV read as text, so the validator can name the bad cell);
- `<table>`: typed views (timestamps, integers, booleans) that features and training read, created only
  after validation passed.
"""

from __future__ import annotations

import json
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
    Table,
)
from retention.utc import as_utc

SQL_TYPES = {
    STRING: "VARCHAR",
    INTEGER: "BIGINT",
    NUMBER: "DOUBLE",
    TIMESTAMP: "TIMESTAMP",
    DATE: "DATE",
    BOOLEAN: "BOOLEAN",
}


class DatasetError(ValueError):
    """The data directory cannot be opened (missing or ambiguous files)."""


def locate(data_dir: str | Path) -> dict[str, Path]:
    """Map each contract table to its file: `<table>.parquet`, `<table>.csv`, or a folder `<table>/` of
    Parquet parts (what the simulator writes for big tables). A missing table is left out (the validator
    reports it); two candidates for one table is an error."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DatasetError(f"{data_dir}: not a directory")
    found: dict[str, Path] = {}
    for table in TABLES:
        candidates = [data_dir / f"{table.name}{suffix}" for suffix in FILE_SUFFIXES] + [data_dir / table.name]
        existing = [p for p in candidates if p.exists()]
        if len(existing) > 1:
            raise DatasetError(f"{data_dir}: table {table.name} is ambiguous: {', '.join(map(str, existing))}")
        if existing:
            found[table.name] = existing[0]
    return found


def reader_sql(path: Path) -> str:
    """The DuckDB table function reading one contract table's file or folder of Parquet parts."""
    p = str(path).replace("'", "''")
    if path.is_dir():
        return f"read_parquet('{p}/*.parquet')"
    if path.suffix == ".parquet":
        return f"read_parquet('{p}')"
    # Every CSV column is read as text so that a bad cell is reported, not silently coerced to NULL.
    return f"read_csv('{p}', header=true, all_varchar=true, sep=',', quote='\"', escape='\"')"


def connect(threads: int | None = None) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(":memory:")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")  # the CLI shows its own progress; keep output readable
    return con


def create_raw_views(con: duckdb.DuckDBPyConnection, files: dict[str, Path]) -> None:
    for name, path in files.items():
        con.execute(f"CREATE OR REPLACE VIEW raw_{name} AS SELECT * FROM {reader_sql(path)}")


def typed_select(table: Table, present: dict[str, str]) -> str:
    """SELECT list casting each contract column to its type; extra columns pass through unchanged.

    `present` maps the raw columns to their DuckDB types. Text (CSV) cells are cast from text with empty
    meaning NULL; typed (Parquet) columns are cast directly, which is free when the type already matches.
    """
    parts = []
    for col in table.columns:
        target = SQL_TYPES[col.type]
        raw_type = present.get(col.name)
        if raw_type is None:
            parts.append(f"CAST(NULL AS {target}) AS {col.name}")
        elif raw_type == "VARCHAR" and col.type == TIMESTAMP:
            # ISO-8601 text with or without an offset; stored as naive UTC.
            parts.append(f"CAST(CAST(NULLIF({col.name}, '') AS TIMESTAMPTZ) AS TIMESTAMP) AS {col.name}")
        elif raw_type == "VARCHAR":
            parts.append(f"CAST(NULLIF({col.name}, '') AS {target}) AS {col.name}")
        else:
            parts.append(f"CAST({col.name} AS {target}) AS {col.name}")
    parts += [f'"{c}"' for c in present if c not in table.column_names]
    return ", ".join(parts)


def create_typed_views(con: duckdb.DuckDBPyConnection, files: dict[str, Path]) -> None:
    for table in TABLES:
        if table.name not in files:
            continue
        present = {r[0]: r[1] for r in con.execute(f"DESCRIBE raw_{table.name}").fetchall()}
        con.execute(f"CREATE OR REPLACE VIEW {table.name} AS SELECT {typed_select(table, present)} FROM raw_{table.name}")


def open_dataset(data_dir: str | Path, threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """Open an (already validated) data directory with typed views, one per contract table."""
    files = locate(data_dir)
    missing = [t.name for t in TABLES if t.name not in files]
    if missing:
        raise DatasetError(f"{data_dir}: missing table file(s): {', '.join(missing)}")
    con = connect(threads)
    create_raw_views(con, files)
    create_typed_views(con, files)
    return con


def read_manifest(data_dir: str | Path) -> dict:
    """The data set's dataset.json (retention.contract.MANIFEST) as a dict; {} when there is none. Raises
    DatasetError when it exists but is not a readable JSON object."""
    path = Path(data_dir) / MANIFEST
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"{path}: cannot read the manifest: {e}") from e
    if not isinstance(meta, dict):
        raise DatasetError(f"{path}: cannot read the manifest: it is not a JSON object")
    return meta


def _manifest_time(data_dir: str | Path, key: str) -> datetime | None:
    value = read_manifest(data_dir).get(key)
    if value is None:
        return None
    try:
        return as_utc(datetime.fromisoformat(str(value)))
    except ValueError as e:
        raise DatasetError(f"{Path(data_dir) / MANIFEST}: {key} {value!r} is not an ISO-8601 timestamp") from e


def resolve_window_end(data_dir: str | Path, window_end: datetime | None) -> datetime:
    """The end of the data window as an aware UTC datetime: `window_end` if given, else `window_end` of the
    data directory's manifest, else now. Naive datetimes are UTC. Raises DatasetError when the manifest
    exists but cannot be read or its window_end is not an ISO-8601 timestamp."""
    if window_end is not None:
        return as_utc(window_end)
    return _manifest_time(data_dir, "window_end") or datetime.now(UTC)


def resolve_window_start(con: duckdb.DuckDBPyConnection, data_dir: str | Path) -> datetime | None:
    """Where the history begins: `window_start` of the manifest, else the earliest dated row (a usage day, a
    payment, an NPS answer, a cancel request); None when the data set has no dated row at all."""
    start = _manifest_time(data_dir, "window_start")
    if start is not None:
        return start
    first = con.execute(
        "SELECT min(t) FROM (SELECT min(CAST(day AS TIMESTAMP)) AS t FROM usage "
        "UNION ALL SELECT min(paid_at) FROM payments UNION ALL SELECT min(responded_at) FROM nps_responses "
        "UNION ALL SELECT min(requested_at) FROM cancel_requests)").fetchone()[0]
    return None if first is None else as_utc(first)
