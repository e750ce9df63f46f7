"""One validation run: its DuckDB connection, the findings so far, and the driver that checks every table
(structure, rows), then the tables together."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

import duckdb

from retention.contract import TABLES
from retention.utc import as_utc, iso_z, naive_utc
from training.dataset import connect
from training.validation.findings import Finding
from training.validation.sources import Source
from training.validation.sql import first_lines, literal
from training.validation.structure import check_table
from training.validation.tables import check_coverage, check_references


class ValidationRun:
    """The state the checks share: what they found, the tables read so far and the data window."""

    def __init__(self, data_dir: Path, max_examples: int):
        self.data_dir = data_dir
        self.max_examples = max_examples  # example rows reported per failing check
        self.errors: list[Finding] = []
        self.warnings: list[Finding] = []
        self.counts: dict[str, int] = {}  # data rows per readable table
        self.sources: dict[str, Source] = {}  # tables that passed their own checks
        self.con: duckdb.DuckDBPyConnection | None = None
        self.have_customer_ids = False  # the customers table's ids are available as __customer_ids
        # The end of the data window as SQL literals (timestamp and date) and as text for messages.
        self.end_ts = self.end_date = self.end_text = ""

    def error(self, file: str, row: int | None, column: str | None, message: str) -> None:
        self.errors.append(Finding(file, row, column, message))

    def warning(self, file: str, row: int | None, column: str | None, message: str) -> None:
        self.warnings.append(Finding(file, row, column, message))

    def query(self, sql: str) -> list[tuple]:
        assert self.con is not None
        return self.con.execute(sql).fetchall()

    def run(self, window_end: datetime) -> None:
        self.con = connect()
        try:
            self.con.execute("SET preserve_insertion_order = true")  # keeps row_number() in file order
            self.con.execute("SET enable_progress_bar = false")
            self.end_ts = "TIMESTAMP " + literal(naive_utc(window_end).isoformat(sep=" "))
            self.end_date = "DATE " + literal(as_utc(window_end).date().isoformat())
            self.end_text = iso_z(window_end)
            for table in TABLES:
                check_table(self, table)
            try:
                check_references(self)
                check_coverage(self)
            except duckdb.Error as e:  # the files were readable a moment ago; report rather than crash
                self.error(str(self.data_dir), None, None, f"cannot read the data: {first_lines(e)}")
        finally:
            self.con.close()

    def examples(
        self,
        src: Source,
        column: str | None,
        where: str,
        values: Sequence[str],
        message: Callable[[tuple], str],
        total: int,
        label: str,
        *,
        numbered: str | None = None,
        warning: bool = False,
    ) -> None:
        """Report the first `max_examples` failing rows (in file order) and a line for the rest, as errors
        (or as warnings)."""
        report = self.warning if warning else self.error
        shown = 0
        if self.max_examples:
            select = ", ".join(["__file", "__row", *values])
            rows = self.query(
                f"SELECT {select} FROM {numbered or src.numbered} WHERE {where} "
                f"ORDER BY __file, __row LIMIT {self.max_examples}"
            )
            for file, row, *vals in rows:
                report(file, int(row), column, message(tuple(vals)))
            shown = len(rows)
        if total > shown:
            more = f"... and {total - shown:,} more rows: {label} ({total:,} in total)" if shown else ""
            report(src.name, None, column, more or f"{total:,} rows: {label}")
