"""Which file holds a contract table, how to scan it, and how its rows are numbered for messages.

Row numbers: Parquet rows are numbered by the reader (`file_row_number`); CSV rows by `row_number() OVER ()`
over the CSV scan, which DuckDB keeps in file order as long as `preserve_insertion_order` is on (the run sets
it; the reader may parse the file in parallel, the numbering stays in file order). A folder of Parquet parts
is numbered per part and findings name the part, e.g. `usage/part-003.parquet`.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from retention.contract import FILE_SUFFIXES, Table
from training.dataset import reader_sql
from training.validation.columns import ColumnSql
from training.validation.sql import literal


@dataclass
class Source:
    table: Table
    path: Path
    name: str  # display name: "customers.csv", or "usage/" for a folder of parts
    scan: str  # FROM clause: the data as stored
    numbered: str  # FROM clause adding __file (display name) and __row (1-based data row)
    types: dict[str, str] = field(default_factory=dict)
    cols: dict[str, ColumnSql] = field(default_factory=dict)  # readable contract columns
    stats: dict[str, int] = field(default_factory=dict)  # aggregates of the table scan (see _scan_stats)
    by_customer: str | None = None  # temp table of the scan's aggregates per customer_id (see check_rows)


def candidates(data_dir: Path, table: Table) -> list[Path]:
    """The files that could hold `table` (same rule as training.dataset.locate)."""
    paths = [data_dir / f"{table.name}{suffix}" for suffix in FILE_SUFFIXES] + [data_dir / table.name]
    return [p for p in paths if p.exists()]


def open_source(table: Table, path: Path) -> Source:
    p = str(path).replace("'", "''")
    if path.is_dir():
        name = f"{path.name}/"
        scan = f"read_parquet('{p}/*.parquet')"
        numbered = (
            f"(SELECT {literal(name)} || parse_filename(filename) AS __file, file_row_number + 1 AS __row, "
            f"* EXCLUDE (filename, file_row_number) "
            f"FROM read_parquet('{p}/*.parquet', filename=true, file_row_number=true))"
        )
    elif path.suffix == ".parquet":
        name = path.name
        scan = f"read_parquet('{p}')"
        numbered = (
            f"(SELECT {literal(name)} AS __file, file_row_number + 1 AS __row, * EXCLUDE (file_row_number) "
            f"FROM read_parquet('{p}', file_row_number=true))"
        )
    else:
        name = path.name
        scan = reader_sql(path)
        # A streaming row_number() over the scan numbers rows in file order (preserve_insertion_order).
        numbered = f"(SELECT {literal(name)} AS __file, row_number() OVER () AS __row, * FROM {scan})"
    return Source(table, path, name, scan, numbered)


def csv_header(src: Source) -> list[str] | None:
    if src.path.is_dir() or src.path.suffix != ".csv":
        return None
    with src.path.open(newline="", encoding="utf-8-sig", errors="replace") as f:
        return next(csv.reader(f), [])
