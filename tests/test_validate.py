"""Tests for training.validation: a small valid data set, then one mutation per contract rule."""

from __future__ import annotations

import csv
import json
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from training.dataset import open_dataset, resolve_window_end
from training.validation import Finding, ValidationReport, validate_dataset

WINDOW_END = "2024-07-01T00:00:00Z"

HEADERS = {
    "customers": [
        "customer_id",
        "signup_at",
        "plan_id",
        "billing_period",
        "price",
        "currency",
        "billing_channel",
        "country",
        "age_band",  # extra column: a customer attribute
    ],
    "nps_responses": ["customer_id", "responded_at", "score", "comment"],
    "usage": ["customer_id", "day", "metric", "value"],
    "payments": ["customer_id", "paid_at", "amount"],
    "cancel_requests": [
        "request_id",
        "customer_id",
        "requested_at",
        "reason",
        "offer_id",
        "propensity",
        "accepted",
        "ended_at",
    ],
}


def valid_tables() -> dict[str, list[list[str]]]:
    """Data rows (as CSV text) of a small data set that satisfies the contract."""
    return {
        "customers": [
            ["c1", "2023-01-15T10:00:00Z", "plus_monthly", "monthly", "9.99", "USD", "web", "US", "25-34"],
            ["c2", "2023-03-01 08:30:00", "plus_annual", "annual", "99", "USD", "ios", "US", "35+"],
            [
                "c3",
                "2023-06-10T12:00:00+02:00",
                "lite_monthly",
                "monthly",
                "4.99",
                "EUR",
                "android",
                "DE",
                "",
            ],
            ["c4", "2023-09-01", "plus_monthly", "monthly", "9.99", "GBP", "partner", "GB", "18-24"],
            ["c5", "2024-01-02T00:00:00Z", "plus_monthly", "monthly", "0", "USD", "web", "US", "25-34"],
            ["c6", "2024-02-20T18:45:00Z", "lite_monthly", "monthly", "4.99", "USD", "web", "CA", "35+"],
        ],
        "nps_responses": [
            ["c1", "2024-03-01T09:00:00Z", "9", "love it"],
            ["c2", "2024-03-02T09:00:00Z", "6", ""],
            ["c2", "2024-05-02T09:00:00Z", "7", 'better, "much" better'],
            ["c3", "2024-04-11T09:00:00Z", "10", ""],
        ],
        "usage": [
            [f"c{i}", f"2024-06-0{d}", metric, str(i * d + (m * 7))]
            for i in range(1, 7)
            for d in (1, 2)
            for m, metric in enumerate(("minutes", "sessions"))
            if not (i == 6 and d == 2)
        ],
        "payments": [
            ["c1", "2024-05-15T10:00:00Z", "9.99"],
            ["c1", "2024-06-15T10:00:00Z", "4.99"],
            ["c2", "2024-03-01T08:30:00Z", "99"],
            ["c3", "2024-06-10T12:00:00Z", "4.99"],
            ["c4", "2024-06-01T00:00:00Z", "9.99"],
            ["c6", "2024-06-20T18:45:00Z", "4.99"],
        ],
        "cancel_requests": [
            ["r1", "c1", "2024-06-16T10:00:00Z", "too_expensive", "discount_50_3m", "0.5", "true", ""],
            ["r2", "c2", "2024-05-10T09:00:00Z", "not_using", "", "0.3", "false", "2024-05-10T09:05:00Z"],
            ["r3", "c3", "2024-06-11T12:00:00Z", "temporary", "pause_1m", "1", "TRUE", ""],
            ["r4", "c4", "2024-06-02T00:00:00Z", "other", "", "0.25", "0", "2024-06-30T00:00:00Z"],
        ],
    }


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def write_dataset(
    data_dir: Path,
    tables: dict[str, list[list[str]]] | None = None,
    headers: dict[str, list[str]] | None = None,
    window_end: str | None = WINDOW_END,
) -> Path:
    tables = valid_tables() if tables is None else tables
    headers = HEADERS if headers is None else headers
    data_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in tables.items():
        write_csv(data_dir / f"{name}.csv", headers[name], rows)
    if window_end is not None:
        manifest = {"window_start": "2023-01-01T00:00:00Z", "window_end": window_end, "seed": 7}
        (data_dir / "dataset.json").write_text(json.dumps(manifest))
    return data_dir


def set_cell(tables: dict[str, list[list[str]]], table: str, row: int, column: str, value: str) -> None:
    """Set the cell at 1-based data row `row` of `table`."""
    tables[table][row - 1][HEADERS[table].index(column)] = value


def drop_column(data_dir: Path, table: str, column: str) -> None:
    headers = {name: list(cols) for name, cols in HEADERS.items()}
    tables = valid_tables()
    i = headers[table].index(column)
    del headers[table][i]
    for row in tables[table]:
        del row[i]
    write_dataset(data_dir, tables, headers)


def findings_at(findings: list[Finding], file: str, row: int | None, column: str | None) -> list[Finding]:
    return [f for f in findings if (f.file, f.row, f.column) == (file, row, column)]


def assert_only_error(
    report: ValidationReport, file: str, row: int | None, column: str | None, fragment: str
):
    assert len(report.errors) == 1, report.format()
    (error,) = report.errors
    assert (error.file, error.row, error.column) == (file, row, column), str(error)
    assert fragment in error.message, str(error)
    assert not report.ok
    return error


def warning_messages(report: ValidationReport) -> list[str]:
    return [str(w) for w in report.warnings]


# ------------------------------------------------------------------------------------------------ valid data


def test_valid_csv_dataset_has_no_errors_and_no_warnings(tmp_path):
    report = validate_dataset(write_dataset(tmp_path))
    assert report.ok, report.format()
    assert report.errors == [] and report.warnings == [], report.format()
    assert report.counts == {
        "customers": 6,
        "nps_responses": 4,
        "usage": 22,
        "payments": 6,
        "cancel_requests": 4,
    }
    assert report.window_end == datetime(2024, 7, 1, tzinfo=UTC)
    assert report.format().splitlines()[-1] == "OK"


def test_valid_csv_dataset_opens_as_typed_views_with_the_values_the_validator_accepted(tmp_path):
    data_dir = write_dataset(tmp_path)
    assert validate_dataset(data_dir).ok
    con = open_dataset(data_dir)
    try:
        accepted = con.execute(
            "SELECT request_id, accepted FROM cancel_requests ORDER BY request_id"
        ).fetchall()
        assert accepted == [("r1", True), ("r2", False), ("r3", True), ("r4", False)]
        signup = con.execute("SELECT signup_at FROM customers WHERE customer_id = 'c3'").fetchone()[0]
        assert signup == datetime(2023, 6, 10, 10, 0)  # +02:00 stored as naive UTC
        assert con.execute("SELECT sum(score) FROM nps_responses").fetchone()[0] == 32
        assert con.execute("SELECT count(*) FROM usage WHERE day = DATE '2024-06-01'").fetchone()[0] == 12
    finally:
        con.close()


# ------------------------------------------------------------------------------------------ files and columns


def test_missing_table_file_is_an_error_naming_the_table(tmp_path):
    data_dir = write_dataset(tmp_path)
    (data_dir / "payments.csv").unlink()
    report = validate_dataset(data_dir)
    error = assert_only_error(report, "payments", None, None, "missing table file")
    assert "payments.csv" in error.message and "payments.parquet" in error.message
    assert "payments" not in report.counts


def test_ambiguous_table_files_are_an_error_not_an_exception(tmp_path):
    data_dir = write_dataset(tmp_path)
    write_csv(data_dir / "customers.parquet", ["x"], [])  # content irrelevant: only the name counts
    report = validate_dataset(data_dir)
    assert not report.ok
    (error,) = [e for e in report.errors if "ambiguous" in e.message]
    assert "customers.parquet" in error.file and "customers.csv" in error.file


def test_missing_required_column_is_an_error_naming_the_column(tmp_path):
    drop_column(tmp_path, "customers", "price")
    assert_only_error(validate_dataset(tmp_path), "customers.csv", None, "price", "missing required column")


def test_missing_column_with_other_case_hints_at_case_sensitivity(tmp_path):
    headers = dict(HEADERS, nps_responses=["customer_id", "responded_at", "Score", "comment"])
    write_dataset(tmp_path, headers=headers)
    report = validate_dataset(tmp_path)
    error = assert_only_error(report, "nps_responses.csv", None, "score", "missing required column")
    assert "case-sensitive" in error.message
    assert findings_at(report.warnings, "nps_responses.csv", None, "Score")  # and 'Score' itself is extra


@pytest.mark.parametrize("table,column", [("nps_responses", "comment"), ("cancel_requests", "propensity")])
def test_optional_columns_may_be_missing(tmp_path, table, column):
    drop_column(tmp_path, table, column)
    assert validate_dataset(tmp_path).ok


def test_extra_column_outside_customers_is_only_a_warning(tmp_path):
    headers = dict(HEADERS, payments=[*HEADERS["payments"], "method"])
    tables = valid_tables()
    for row in tables["payments"]:
        row.append("card")
    write_dataset(tmp_path, tables, headers)
    report = validate_dataset(tmp_path)
    assert report.ok, report.format()
    (warning,) = findings_at(report.warnings, "payments.csv", None, "method")
    assert "extra column" in warning.message and "ignored" in warning.message


def test_extra_columns_in_customers_are_customer_attributes_not_findings(tmp_path):
    report = validate_dataset(write_dataset(tmp_path))  # customers has age_band
    assert not [f for f in report.errors + report.warnings if f.column == "age_band"]


def test_duplicate_column_in_csv_header_is_an_error(tmp_path):
    headers = dict(HEADERS, payments=[*HEADERS["payments"], "amount"])
    tables = valid_tables()
    for row in tables["payments"]:
        row.append("1")
    write_dataset(tmp_path, tables, headers)
    assert_only_error(validate_dataset(tmp_path), "payments.csv", None, "amount", "duplicate column name")


def test_csv_row_with_wrong_number_of_fields_is_reported_by_row(tmp_path):
    data_dir = write_dataset(tmp_path)
    rows = valid_tables()["payments"]
    rows.insert(2, ["c1", "2024-06-01T00:00:00Z", "1", "extra", "fields"])  # data row 3
    with (data_dir / "payments.csv").open("w", newline="") as f:
        csv.writer(f).writerows([HEADERS["payments"], *rows])
    report = validate_dataset(data_dir)
    (error,) = report.errors
    assert (error.file, error.row) == ("payments.csv", 3), str(error)
    assert "Expected Number of Columns: 3 Found: 5" in error.message


def test_unreadable_csv_is_an_error_not_an_exception(tmp_path):
    data_dir = write_dataset(tmp_path)
    (data_dir / "payments.csv").write_bytes(b'customer_id,paid_at,amount\n"c1,2024-06-01,1\n')  # open quote
    report = validate_dataset(data_dir)
    assert not report.ok
    (error,) = report.errors
    assert error.file == "payments.csv" and "cannot read the file" in error.message
    assert str(data_dir) not in error.message  # the file name, not the full path


# ------------------------------------------------------------------------------------------------ cell checks

# One mutated cell per case; each must produce exactly one error naming file, row and column.
CELL_ERRORS = [
    # wrong type
    ("nps_responses", 2, "score", "seven", "cannot read 'seven' as an integer"),
    ("customers", 3, "price", "abc", "cannot read 'abc' as a number"),
    ("payments", 4, "amount", "inf", "cannot read 'inf' as a number"),
    ("cancel_requests", 2, "requested_at", "yesterday", "cannot read 'yesterday' as a timestamp"),
    ("usage", 3, "day", "2024-13-01", "cannot read '2024-13-01' as a date"),
    ("cancel_requests", 3, "accepted", "maybe", "cannot read 'maybe' as a boolean"),
    # empty value in a non-nullable column
    ("customers", 2, "plan_id", "", "empty value"),
    ("usage", 7, "metric", "   ", "empty value"),
    # NPS score
    ("nps_responses", 1, "score", "11", "score '11' is out of range (must be between 0 and 10)"),
    ("nps_responses", 2, "score", "7.5", "score '7.5' is not an integer"),
    # enums
    ("cancel_requests", 2, "reason", "bored", "unknown value 'bored' (allowed: too_expensive, not_using"),
    ("customers", 6, "billing_period", "weekly", "unknown value 'weekly' (allowed: monthly, annual)"),
    ("customers", 1, "billing_channel", "Web", "unknown value 'Web' (allowed: web, ios, android, partner)"),
    # numeric bounds
    ("customers", 2, "price", "-1", "price '-1' is out of range (must be >= 0)"),
    ("payments", 3, "amount", "-0.01", "amount '-0.01' is out of range (must be >= 0)"),
    ("usage", 9, "value", "-3", "value '-3' is out of range (must be >= 0)"),
    ("cancel_requests", 1, "propensity", "0", "propensity '0' is out of range (must be > 0 and <= 1)"),
    # time columns after the end of the data window (2024-07-01T00:00:00Z)
    ("customers", 3, "signup_at", "2024-07-02T00:00:00Z", "is after the end of the data window (2024-07-01"),
    ("nps_responses", 1, "responded_at", "2024-07-01T00:00:01Z", "is after the end of the data window"),
    ("usage", 2, "day", "2024-07-02", "day '2024-07-02' is after the end of the data window"),
    ("payments", 6, "paid_at", "2025-01-01T00:00:00Z", "is after the end of the data window"),
    ("cancel_requests", 3, "requested_at", "2024-08-01T00:00:00Z", "is after the end of the data window"),
    ("cancel_requests", 4, "ended_at", "2024-07-03T00:00:00+02:00", "is after the end of the data window"),
    # references to unknown customers
    ("nps_responses", 2, "customer_id", "c99", "unknown customer_id 'c99' (not in customers.csv)"),
    ("usage", 4, "customer_id", "C1", "unknown customer_id 'C1'"),
    ("payments", 5, "customer_id", "c7", "unknown customer_id 'c7'"),
    ("cancel_requests", 1, "customer_id", "x", "unknown customer_id 'x'"),
]


@pytest.mark.parametrize(
    "table,row,column,value,fragment",
    CELL_ERRORS,
    ids=[f"{t}.{c}={v!r}" for t, _, c, v, _ in CELL_ERRORS],
)
def test_bad_cell_is_reported_with_file_row_and_column(tmp_path, table, row, column, value, fragment):
    tables = valid_tables()
    set_cell(tables, table, row, column, value)
    report = validate_dataset(write_dataset(tmp_path, tables))
    assert_only_error(report, f"{table}.csv", row, column, fragment)


# More bad values, in distinct cells of one data set (each would be a single error on its own).
MORE_CELL_ERRORS = [
    ("usage", 5, "value", "NaN", "cannot read 'NaN' as a number"),
    ("customers", 4, "signup_at", "2023-02-30", "cannot read '2023-02-30' as a timestamp"),
    ("cancel_requests", 1, "accepted", "yes", "as a boolean (expected true/false, 1/0 or t/f)"),
    ("cancel_requests", 2, "propensity", "high", "cannot read 'high' as a number"),
    ("cancel_requests", 2, "ended_at", "soon", "cannot read 'soon' as a timestamp"),
    ("cancel_requests", 1, "ended_at", "  ", "cannot read '  ' as a timestamp"),  # nullable, but not blank
    ("cancel_requests", 4, "propensity", "1.5", "propensity '1.5' is out of range (must be > 0 and <= 1)"),
    ("payments", 2, "customer_id", "", "empty value"),
    ("payments", 1, "paid_at", "", "empty value"),
    ("nps_responses", 3, "score", "", "empty value"),
    ("nps_responses", 4, "score", "-1", "score '-1' is out of range"),
    ("cancel_requests", 4, "accepted", "", "empty value"),
    ("cancel_requests", 3, "reason", "", "empty value"),
]


def test_more_bad_cells_are_each_reported_once(tmp_path):
    tables = valid_tables()
    for table, row, column, value, _ in MORE_CELL_ERRORS:
        set_cell(tables, table, row, column, value)
    report = validate_dataset(write_dataset(tmp_path, tables))
    assert len(report.errors) == len(MORE_CELL_ERRORS), report.format()
    for table, row, column, value, fragment in MORE_CELL_ERRORS:
        found = findings_at(report.errors, f"{table}.csv", row, column)
        assert len(found) == 1 and fragment in found[0].message, (table, row, column, value, report.format())


# Legal edge values, in distinct cells of one data set.
LEGAL_EDGE_VALUES = [
    ("nps_responses", 1, "score", "0"),
    ("nps_responses", 2, "score", "10"),
    ("nps_responses", 3, "score", "8.0"),
    ("nps_responses", 1, "comment", ""),
    ("cancel_requests", 1, "propensity", "1"),
    ("cancel_requests", 2, "propensity", "1e-9"),
    ("cancel_requests", 1, "accepted", "t"),
    ("cancel_requests", 2, "accepted", "F"),
    ("cancel_requests", 4, "accepted", "False"),
    ("cancel_requests", 2, "ended_at", "2024-07-01T00:00:00Z"),  # exactly the window end
    ("customers", 1, "price", "0"),
    ("usage", 1, "value", "0"),
    ("usage", 2, "day", "2024-07-01"),  # the day the window ends
]


def test_legal_edge_values_pass_and_cast_in_the_typed_views(tmp_path):
    tables = valid_tables()
    for table, row, column, value in LEGAL_EDGE_VALUES:
        set_cell(tables, table, row, column, value)
    report = validate_dataset(write_dataset(tmp_path, tables))
    assert report.ok and not report.warnings, report.format()
    con = open_dataset(tmp_path)  # what the validator accepts, the typed views of training.dataset can cast
    try:
        for name, rows in tables.items():
            assert len(con.execute(f"SELECT * FROM {name}").fetchall()) == len(rows)
        accepted = con.execute("SELECT accepted FROM cancel_requests ORDER BY request_id").fetchall()
        assert accepted == [(True,), (False,), (True,), (False,)]
        assert con.execute("SELECT min(score), max(score) FROM nps_responses").fetchone() == (0, 10)
    finally:
        con.close()


def test_empty_propensity_is_legal(tmp_path):
    tables = valid_tables()
    set_cell(tables, "cancel_requests", 2, "propensity", "")
    report = validate_dataset(write_dataset(tmp_path, tables))
    assert report.ok, report.format()


def test_duplicate_customer_id_names_the_duplicate_row_and_the_first(tmp_path):
    tables = valid_tables()
    tables["customers"].append(list(tables["customers"][1]))  # row 7 repeats c2 of row 2
    report = validate_dataset(write_dataset(tmp_path, tables))
    error = assert_only_error(report, "customers.csv", 7, "customer_id", "duplicate customer_id 'c2'")
    assert "first seen in row 2" in error.message


def test_duplicate_request_id_is_an_error(tmp_path):
    tables = valid_tables()
    set_cell(tables, "cancel_requests", 4, "request_id", "r1")
    report = validate_dataset(write_dataset(tmp_path, tables))
    assert_only_error(
        report, "cancel_requests.csv", 4, "request_id", "duplicate request_id 'r1' (first seen in row 1)"
    )


def test_ended_before_requested_is_an_error(tmp_path):
    tables = valid_tables()
    set_cell(tables, "cancel_requests", 2, "ended_at", "2024-05-09T23:59:59Z")
    report = validate_dataset(write_dataset(tmp_path, tables))
    error = assert_only_error(report, "cancel_requests.csv", 2, "ended_at", "is before requested_at")
    assert "'2024-05-09T23:59:59Z'" in error.message and "'2024-05-10T09:00:00Z'" in error.message


@pytest.mark.parametrize("offer", ["", "none", "None"])
def test_accepted_without_offer_is_an_error(tmp_path, offer):
    tables = valid_tables()
    set_cell(tables, "cancel_requests", 1, "offer_id", offer)
    report = validate_dataset(write_dataset(tmp_path, tables))
    assert_only_error(
        report, "cancel_requests.csv", 1, "accepted", "accepted is 'true' but no offer was shown"
    )


def test_examples_are_capped_and_the_rest_counted(tmp_path):
    tables = valid_tables()
    for row in range(1, 11):
        set_cell(tables, "usage", row, "metric", "")
    report = validate_dataset(write_dataset(tmp_path, tables), max_examples=3)
    assert [(e.file, e.row, e.column) for e in report.errors] == [
        ("usage.csv", 1, "metric"),
        ("usage.csv", 2, "metric"),
        ("usage.csv", 3, "metric"),
        ("usage.csv", None, "metric"),
    ]
    assert "... and 7 more rows" in report.errors[-1].message
    assert "(10 in total)" in report.errors[-1].message


def test_finding_str_and_report_format(tmp_path):
    tables = valid_tables()
    set_cell(tables, "cancel_requests", 2, "reason", "bored")
    report = validate_dataset(write_dataset(tmp_path, tables))
    assert str(report.errors[0]) == (
        "cancel_requests.csv: row 2, column 'reason': unknown value 'bored' "
        "(allowed: too_expensive, not_using, temporary, technical, content, switching, other)"
    )
    assert str(Finding("usage", None, None, "missing table file")) == "usage: missing table file"
    text = report.format()
    assert "1 error:" in text and str(report.errors[0]) in text and text.endswith("FAILED")


# -------------------------------------------------------------------------------------------------- warnings


def test_no_nps_responses_is_a_warning(tmp_path):
    tables = valid_tables()
    tables["nps_responses"] = []
    report = validate_dataset(write_dataset(tmp_path, tables))
    assert report.ok, report.format()
    assert warning_messages(report) == [
        "nps_responses.csv: no NPS responses at all: NPS features will be empty"
    ]


def test_low_nps_answer_rate_is_a_warning(tmp_path):
    tables = valid_tables()
    template = tables["customers"][0]
    tables["customers"] += [[f"c{i}", *template[1:]] for i in range(7, 41)]
    tables["usage"] += [[f"c{i}", "2024-06-01", "minutes", "1"] for i in range(7, 41)]
    tables["nps_responses"] = tables["nps_responses"][:1]  # 1 of 40 customers answered
    report = validate_dataset(write_dataset(tmp_path, tables))
    assert report.ok, report.format()
    (warning,) = report.warnings
    assert (warning.file, warning.column) == ("nps_responses.csv", "customer_id")
    assert "only 2.5% of customers (1 of 40) answered the NPS survey (under 5%)" in warning.message


def test_no_cancel_requests_is_a_warning(tmp_path):
    tables = valid_tables()
    tables["cancel_requests"] = []
    report = validate_dataset(write_dataset(tmp_path, tables))
    assert report.ok, report.format()
    assert warning_messages(report) == [
        "cancel_requests.csv: no cancel requests: there is nothing to learn offers from"
    ]


def test_no_propensity_column_is_a_warning(tmp_path):
    drop_column(tmp_path, "cancel_requests", "propensity")
    report = validate_dataset(tmp_path)
    assert report.ok
    (warning,) = report.warnings
    assert (warning.file, warning.column) == ("cancel_requests.csv", "propensity")
    assert "off-policy evaluation" in warning.message and "impossible" in warning.message


def test_all_propensities_empty_is_a_warning(tmp_path):
    tables = valid_tables()
    for row in range(1, 5):
        set_cell(tables, "cancel_requests", row, "propensity", "")
    report = validate_dataset(write_dataset(tmp_path, tables))
    assert report.ok
    assert warning_messages(report) == [
        "cancel_requests.csv: column 'propensity': no cancel request has a propensity: "
        "off-policy evaluation of new offer policies is impossible"
    ]


def test_some_propensities_empty_is_a_warning_with_the_count(tmp_path):
    tables = valid_tables()
    set_cell(tables, "cancel_requests", 3, "propensity", "")
    report = validate_dataset(write_dataset(tmp_path, tables))
    assert report.ok
    (warning,) = report.warnings
    assert "1 of 4 cancel requests have no propensity" in warning.message


def test_customers_without_usage_are_counted_in_a_warning(tmp_path):
    tables = valid_tables()
    tables["usage"] = [row for row in tables["usage"] if row[0] not in ("c4", "c6")]
    report = validate_dataset(write_dataset(tmp_path, tables))
    assert report.ok
    (warning,) = report.warnings
    assert (warning.file, warning.column) == ("usage.csv", "customer_id")
    assert "2 of 6 customers (33.3%) have no usage rows at all (e.g. 'c4', 'c6')" in warning.message


def test_table_with_zero_rows_is_a_warning(tmp_path):
    tables = valid_tables()
    tables["payments"] = []
    report = validate_dataset(write_dataset(tmp_path, tables))
    assert report.ok
    assert warning_messages(report) == ["payments.csv: table has no data rows"]
    assert report.counts["payments"] == 0


# ----------------------------------------------------------------------------------------------- window end


def test_window_end_argument_overrides_the_manifest(tmp_path):
    tables = valid_tables()
    set_cell(tables, "payments", 1, "paid_at", "2024-07-10T00:00:00Z")
    data_dir = write_dataset(tmp_path, tables)
    assert not validate_dataset(data_dir).ok
    report = validate_dataset(data_dir, window_end=datetime(2024, 8, 1))  # naive means UTC
    assert report.ok and report.window_end == datetime(2024, 8, 1, tzinfo=UTC)


def test_resolve_window_end_sources(tmp_path):
    write_dataset(tmp_path)
    assert resolve_window_end(tmp_path, None) == datetime(2024, 7, 1, tzinfo=UTC)
    cest = timezone(timedelta(hours=2))
    assert resolve_window_end(tmp_path, datetime(2024, 1, 1, 2, tzinfo=cest)) == datetime(
        2024, 1, 1, tzinfo=UTC
    )
    (tmp_path / "dataset.json").unlink()
    before = datetime.now(UTC)
    assert before <= resolve_window_end(tmp_path, None) <= datetime.now(UTC)


def test_without_manifest_the_window_ends_now(tmp_path):
    tables = valid_tables()
    set_cell(tables, "usage", 1, "day", (datetime.now(UTC) + timedelta(days=2)).date().isoformat())
    report = validate_dataset(write_dataset(tmp_path, tables, window_end=None))
    assert_only_error(report, "usage.csv", 1, "day", "after the end of the data window")


def test_bad_manifest_window_end_is_an_error(tmp_path):
    data_dir = write_dataset(tmp_path, window_end="next tuesday")
    assert_only_error(
        validate_dataset(data_dir), "dataset.json", None, "window_end", "not an ISO-8601 timestamp"
    )


# --------------------------------------------------------------------------------------------------- parquet

PARQUET_TYPES = {
    "customers": {
        "signup_at": pa.timestamp("us", tz="UTC"),
        "price": pa.float64(),
    },
    "nps_responses": {"responded_at": pa.timestamp("us", tz="UTC"), "score": pa.int64()},
    "usage": {"day": pa.date32(), "value": pa.float64()},
    "payments": {"paid_at": pa.timestamp("us"), "amount": pa.float64()},
    "cancel_requests": {
        "requested_at": pa.timestamp("us", tz="UTC"),
        "propensity": pa.float64(),
        "accepted": pa.bool_(),
        "ended_at": pa.timestamp("us", tz="UTC"),
    },
}


def _typed(value: str, typ: pa.DataType):
    if value == "":
        return None
    if pa.types.is_timestamp(typ):
        dt = datetime.fromisoformat(value)
        return _utc_naive(dt) if typ.tz is None else (dt if dt.tzinfo else dt.replace(tzinfo=UTC))
    if pa.types.is_date(typ):
        return date.fromisoformat(value)
    if pa.types.is_boolean(typ):
        return value.lower() in ("true", "t", "1")
    if pa.types.is_integer(typ):
        return int(value)
    if pa.types.is_floating(typ):
        return float(value)
    return value


def _utc_naive(dt: datetime) -> datetime:
    return dt.astimezone(UTC).replace(tzinfo=None) if dt.tzinfo else dt


def parquet_table(name: str, rows: list[list[str]], types: dict[str, pa.DataType] | None = None) -> pa.Table:
    types = PARQUET_TYPES[name] if types is None else types
    columns = {}
    for i, col in enumerate(HEADERS[name]):
        typ = types.get(col, pa.string())
        columns[col] = pa.array([_typed(r[i], typ) for r in rows], type=typ)
    return pa.table(columns)


def write_parquet_dataset(data_dir: Path, tables=None, types=None) -> Path:
    tables = valid_tables() if tables is None else tables
    write_dataset(data_dir, {}, window_end=WINDOW_END)
    for name, rows in tables.items():
        pq.write_table(parquet_table(name, rows, (types or {}).get(name)), data_dir / f"{name}.parquet")
    return data_dir


def test_valid_parquet_dataset_has_no_errors(tmp_path):
    report = validate_dataset(write_parquet_dataset(tmp_path))
    assert report.ok and not report.warnings, report.format()
    assert report.counts["usage"] == 22


def test_parquet_bad_value_is_reported_with_row_and_column(tmp_path):
    tables = valid_tables()
    set_cell(tables, "cancel_requests", 3, "reason", "bored")
    set_cell(tables, "usage", 8, "value", "-2")
    report = validate_dataset(write_parquet_dataset(tmp_path, tables))
    assert len(report.errors) == 2, report.format()
    assert findings_at(report.errors, "cancel_requests.parquet", 3, "reason")
    (error,) = findings_at(report.errors, "usage.parquet", 8, "value")
    assert error.message == "value '-2.0' is out of range (must be >= 0)"


def test_parquet_fractional_score_is_not_an_integer(tmp_path):
    tables = valid_tables()
    set_cell(tables, "nps_responses", 2, "score", "7.5")
    types = {"nps_responses": {**PARQUET_TYPES["nps_responses"], "score": pa.float64()}}
    report = validate_dataset(write_parquet_dataset(tmp_path, tables, types))
    assert_only_error(report, "nps_responses.parquet", 2, "score", "score '7.5' is not an integer")


def test_parquet_text_column_is_parsed_like_csv(tmp_path):
    tables = valid_tables()
    set_cell(tables, "nps_responses", 4, "score", "seven")
    types = {"nps_responses": {**PARQUET_TYPES["nps_responses"], "score": pa.string()}}
    report = validate_dataset(write_parquet_dataset(tmp_path, tables, types))
    assert_only_error(report, "nps_responses.parquet", 4, "score", "cannot read 'seven' as an integer")


def test_parquet_column_of_incompatible_type_is_an_error(tmp_path):
    types = {"customers": {**PARQUET_TYPES["customers"], "signup_at": pa.float64()}}
    tables = valid_tables()
    for row in tables["customers"]:
        row[1] = "1.5"
    report = validate_dataset(write_parquet_dataset(tmp_path, tables, types))
    error = assert_only_error(report, "customers.parquet", None, "signup_at", "column has type DOUBLE")
    assert "timestamp" in error.message


def test_parquet_folder_of_parts_names_the_part_and_its_row(tmp_path):
    tables = valid_tables()
    set_cell(tables, "usage", 14, "metric", "")  # row 4 of the second part
    data_dir = write_parquet_dataset(tmp_path, {k: v for k, v in tables.items() if k != "usage"})
    (data_dir / "usage").mkdir()
    pq.write_table(parquet_table("usage", tables["usage"][:10]), data_dir / "usage" / "part-000.parquet")
    pq.write_table(parquet_table("usage", tables["usage"][10:]), data_dir / "usage" / "part-001.parquet")
    report = validate_dataset(data_dir)
    assert_only_error(report, "usage/part-001.parquet", 4, "metric", "empty value")
    assert report.counts["usage"] == 22


def test_empty_parquet_folder_is_an_error(tmp_path):
    data_dir = write_dataset(tmp_path)
    (data_dir / "usage.csv").unlink()
    (data_dir / "usage").mkdir()
    assert_only_error(validate_dataset(data_dir), "usage/", None, None, "no .parquet files")


# ------------------------------------------------------------------------------------------- large CSV order


def test_row_numbers_are_exact_in_a_csv_read_in_parallel(tmp_path):
    """300k usage rows (~9 MB) are parsed by several DuckDB threads; row numbers must still be file order."""
    n = 300_000
    bad_rows = (17, 150_001, 299_990)
    tables = valid_tables()
    tables["usage"] = [
        [
            f"c{i % 6 + 1}",
            "2024-06-01",
            "minutes" if i % 2 else "sessions",
            "-1" if i + 1 in bad_rows else str(i),
        ]
        for i in range(n)
    ]
    report = validate_dataset(write_dataset(tmp_path, tables))
    assert report.counts["usage"] == n
    assert [(e.file, e.row, e.column) for e in report.errors] == [("usage.csv", r, "value") for r in bad_rows]
    # The examples are the first failing rows in file order, also when capped.
    capped = validate_dataset(tmp_path, max_examples=1)
    assert [(e.row, e.message.startswith("...")) for e in capped.errors] == [(17, False), (None, True)]


def test_data_dir_that_is_not_a_directory_is_an_error(tmp_path):
    report = validate_dataset(tmp_path / "nope")
    (error,) = report.errors
    assert error.message == "not a directory" and not report.ok


def test_customers_on_plans_the_plan_catalog_does_not_list_are_warnings_by_row(tmp_path):
    # Another business's data set has plans of its own: training can learn from it (a warning, not an
    # error), but the service refuses decision requests for those plans until config/plans.toml lists them.
    tables = valid_tables()
    set_cell(tables, "customers", 2, "plan_id", "gold_monthly")
    set_cell(tables, "customers", 5, "plan_id", "gold_annual")
    report = validate_dataset(write_dataset(tmp_path, tables))
    assert report.ok, report.format()
    assert [str(w) for w in findings_at(report.warnings, "customers.csv", 2, "plan_id")] == [
        "customers.csv: row 2, column 'plan_id': plan 'gold_monthly' is not in the plan catalog (plans.toml): "
        "the service refuses decision requests for it until the catalog lists it"]
    assert len(findings_at(report.warnings, "customers.csv", 5, "plan_id")) == 1
    assert len(report.warnings) == 2, report.format()


def test_an_invalid_plan_catalog_is_a_warning_naming_it_not_a_crash(tmp_path, monkeypatch):
    import training.validation.tables as tables_module

    broken = tmp_path / "plans.toml"
    broken.write_text("price_tolerance = 2.0\n")
    monkeypatch.setattr(tables_module, "DEFAULT_PLANS", broken)
    report = validate_dataset(write_dataset(tmp_path / "data", valid_tables()))
    assert report.ok, report.format()
    (warning,) = [w for w in report.warnings if w.file == str(broken)]
    assert "plan check did not run" in warning.message and str(broken) in warning.message
