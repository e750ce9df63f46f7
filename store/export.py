"""Export the store's history as a data set in the training-data contract (retention.contract), so the data
team can validate, retrain and evaluate on what the service actually saw.

Mapping: decisions (+ outcomes and `cancelled` events) -> cancel_requests; `nps` / `usage` / `payment` events
-> nps_responses / usage / payments; the latest `customer` event per customer, completed field by field from
the customer's latest decision request -> customers. Nothing is invented: a row lacking a required value is
left out and counted in the result's "skipped", by table and reason, and so are rows of customers that could
not be exported (the contract requires every row to reference a known customer).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from sqlalchemy import Connection, func, select

from retention.contract import (
    BOOLEAN,
    CANCEL_REQUESTS,
    CUSTOMERS,
    DATE,
    INTEGER,
    MANIFEST,
    NPS_RESPONSES,
    NUMBER,
    PAYMENTS,
    STRING,
    TIMESTAMP,
    USAGE,
    Column,
    Table,
)
from retention.utc import naive_utc
from store.models import NO_OFFER, Decision, Event, Outcome
from store.repository import Store

_ARROW_TYPES = {STRING: pa.string(), INTEGER: pa.int64(), NUMBER: pa.float64(), TIMESTAMP: pa.timestamp("us"),
                DATE: pa.date32(), BOOLEAN: pa.bool_()}
_ATTRIBUTE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CHUNK = 50_000  # rows per streamed read and per written batch
# Event type -> (contract table, event field -> contract column). occurred_at is the event's own time.
_EVENT_TABLES: dict[str, tuple[Table, dict[str, str]]] = {
    "nps": (NPS_RESPONSES, {"occurred_at": "responded_at", "score": "score", "comment": "comment"}),
    "usage": (USAGE, {"day": "day", "metric": "metric", "value": "value"}),
    "payment": (PAYMENTS, {"occurred_at": "paid_at", "amount": "amount"}),
}


class _Invalid(ValueError):
    """A value the contract does not allow; its message is the skip reason."""


def export_dataset(store: Store, out_dir: str | Path, since: datetime | None = None, fmt: str = "parquet",
                   customer_attributes: dict[str, str] | None = None) -> dict:
    """Write the store's history from `since` (default: all of it) up to now into `out_dir` (new or empty)
    as `<table>.parquet` or `.csv` files plus dataset.json; returns the manifest.

    `customer_attributes` (name -> "number" or "string") are extra customer columns that must exist even if
    no `customer` event carries them (a model trained with them needs the column; missing values are null).
    Customers use their latest attributes up to now whatever `since` is, as the contract has no history of
    them."""
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"format must be parquet or csv, not {fmt!r}")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out}: exists and is not an empty directory; choose a new output directory")
    since = since.astimezone(UTC) if since is not None else None
    end = datetime.now(UTC)
    out.mkdir(parents=True, exist_ok=True)
    skipped: dict[str, Counter] = defaultdict(Counter)
    rows: dict[str, int] = {}
    # One snapshot of the database, so that the tables agree with each other.
    with store.transaction(snapshot=True) as conn:
        customers, attributes = _customers(conn, end, customer_attributes or {}, skipped[CUSTOMERS.name])
        known = {c["customer_id"] for c in customers}
        attribute_columns = [Column(a, NUMBER if t == "number" else STRING, nullable=True)
                             for a, t in attributes.items()]
        rows[CUSTOMERS.name] = _write(out, fmt, CUSTOMERS, [customers], attribute_columns)
        cancels = _cancel_requests(conn, since, end, known, skipped[CANCEL_REQUESTS.name])
        rows[CANCEL_REQUESTS.name] = _write(out, fmt, CANCEL_REQUESTS, [cancels])
        for event_type, (table, fields) in _EVENT_TABLES.items():
            batches = _event_rows(conn, event_type, table, fields, since, end, known, skipped[table.name])
            rows[table.name] = _write(out, fmt, table, batches)
        window_start = since or _first_time(conn, end) or end
    manifest = {
        "source": "store",
        "exported_at": end.isoformat(),
        "window_start": window_start.isoformat(),
        "window_end": end.isoformat(),
        "format": fmt,
        "rows": rows,
        "skipped": {table: dict(reasons) for table, reasons in skipped.items() if reasons},
        "customer_attributes": attributes,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return {"out": str(out), **manifest}


# ------------------------------------------------------------------------------------------------- tables


def _customers(conn: Connection, end: datetime, required_attributes: dict[str, str],
               skipped: Counter) -> tuple[list[dict], dict[str, str]]:
    """One row per customer with every contract column known; plus the attribute columns and their types."""
    latest_request: dict[str, dict] = {}
    for customer_id, request in conn.execute(
        select(Decision.customer_id, Decision.request).where(Decision.created_at <= end)
        .order_by(Decision.customer_id, Decision.created_at)
    ):
        latest_request[customer_id] = request or {}
    latest_event: dict[str, dict] = {}
    for customer_id, payload in conn.execute(
        select(Event.customer_id, Event.payload).where(Event.type == "customer", Event.occurred_at <= end)
        .order_by(Event.customer_id, Event.occurred_at, Event.id)
    ):
        latest_event[customer_id] = payload or {}
    attributes = dict(required_attributes)
    for payload in latest_event.values():
        for name, value in payload.items():
            if name not in CUSTOMERS.column_names and _ATTRIBUTE_NAME.fullmatch(name) and name not in attributes:
                attributes[name] = "number"
            if name in attributes and value is not None and not _is_number(value):
                attributes[name] = "string"  # one non-number value makes the column categorical
    rows = []
    for customer_id in sorted(latest_request.keys() | latest_event.keys()):
        event, request = latest_event.get(customer_id, {}), latest_request.get(customer_id, {})
        raw = {c: event[c] if event.get(c) is not None else request.get(c) for c in CUSTOMERS.column_names}
        raw["customer_id"] = customer_id
        row = _contract_row(CUSTOMERS, raw, end, skipped)
        if row is not None:
            for name, kind in attributes.items():
                value = event.get(name)
                row[name] = None if value is None else float(value) if kind == "number" else str(value)
            rows.append(row)
    return rows, attributes


def _cancel_requests(conn: Connection, since: datetime | None, end: datetime, known: set[str],
                     skipped: Counter) -> list[dict]:
    """One row per decision: accepted = an `accepted` outcome; ended_at = when the subscription ended."""
    accepted: set[str] = set()
    ended_by_decision: dict[str, datetime] = {}
    for decision_id, kind, occurred_at in conn.execute(
        select(Outcome.decision_id, Outcome.kind, Outcome.occurred_at)
        .where(Outcome.kind.in_(("accepted", "cancelled")), Outcome.occurred_at <= end)
    ):
        if kind == "accepted":
            accepted.add(decision_id)
        else:
            ended_by_decision[decision_id] = occurred_at
    # A `cancelled` event ends the subscription of its customer (or of its decision's customer).
    cancelled_at: dict[str, list[datetime]] = defaultdict(list)
    q = select(Event.customer_id, Event.decision_id, Event.occurred_at).where(
        Event.type == "cancelled", Event.occurred_at <= end)
    for customer_id, decision_id, occurred_at in conn.execute(_since(q, Event.occurred_at, since)):
        cancelled_at[customer_id].append(occurred_at)
        if decision_id is not None:
            ended_by_decision[decision_id] = min(occurred_at, ended_by_decision.get(decision_id, occurred_at))
    q = select(Decision.decision_id, Decision.request_id, Decision.customer_id, Decision.created_at,
               Decision.reason, Decision.offer_id, Decision.propensity).where(Decision.created_at <= end)
    rows = []
    for d in conn.execute(_since(q, Decision.created_at, since).order_by(Decision.created_at, Decision.request_id)):
        if d.customer_id not in known:
            skipped["customer not exported"] += 1
            continue
        requested_at = d.created_at
        # The decision's own end counts even if clocks put it a moment before the request; another end of
        # the customer counts only from the request on (an earlier one belongs to an earlier subscription).
        ends = [max(ended_by_decision[d.decision_id], requested_at)] if d.decision_id in ended_by_decision else []
        ends += [t for t in cancelled_at.get(d.customer_id, []) if t >= requested_at]
        shown = d.offer_id != NO_OFFER
        propensity = d.propensity if d.propensity is not None and 0 < d.propensity <= 1 else None
        row = _contract_row(CANCEL_REQUESTS, {
            "request_id": d.request_id, "customer_id": d.customer_id, "requested_at": requested_at,
            "reason": d.reason, "offer_id": d.offer_id if shown else None, "propensity": propensity,
            "accepted": shown and d.decision_id in accepted, "ended_at": min(ends) if ends else None,
        }, end, skipped)
        if row is not None:
            rows.append(row)
    return rows


def _event_rows(conn: Connection, event_type: str, table: Table, fields: dict[str, str],
                since: datetime | None, end: datetime, known: set[str], skipped: Counter) -> Iterator[list[dict]]:
    """The contract rows of one event type, streamed in batches."""
    q = select(Event.customer_id, Event.occurred_at, Event.payload).where(
        Event.type == event_type, Event.occurred_at <= end)
    q = _since(q, Event.occurred_at, since).order_by(Event.occurred_at, Event.id).execution_options(yield_per=_CHUNK)
    batch: list[dict] = []
    for e in conn.execute(q):
        if e.customer_id not in known:
            skipped["customer not exported"] += 1
            continue
        source = {**(e.payload or {}), "occurred_at": e.occurred_at}
        row = _contract_row(table, {"customer_id": e.customer_id,
                                    **{column: source.get(field) for field, column in fields.items()}}, end, skipped)
        if row is not None:
            batch.append(row)
        if len(batch) >= _CHUNK:
            yield batch
            batch = []
    yield batch


def _first_time(conn: Connection, end: datetime) -> datetime | None:
    """The earliest decision or event: where the history, and so the data window, starts."""
    times = [conn.execute(select(func.min(col)).where(col <= end)).scalar()
             for col in (Decision.created_at, Event.occurred_at)]
    return min((t for t in times if t is not None), default=None)


def _since(query, column, since: datetime | None):
    return query if since is None else query.where(column >= since)


# ------------------------------------------------------------------------------------------ contract values


def _contract_row(table: Table, raw: dict[str, Any], end: datetime, skipped: Counter) -> dict | None:
    """`raw` converted to the contract's column types and checked against its rules; None (and counted in
    `skipped` under the first problem) when a value is missing or not allowed."""
    try:
        return {c.name: _value(table, c, raw.get(c.name), end) for c in table.columns}
    except _Invalid as exc:
        skipped[str(exc)] += 1
        return None


def _value(table: Table, col: Column, raw: Any, end: datetime) -> Any:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        if col.nullable:
            return None
        raise _Invalid(f"{col.name} missing")
    try:
        value = _CONVERTERS[col.type](raw)
    except (TypeError, ValueError, OverflowError):
        raise _Invalid(f"{col.name} invalid") from None
    if col.allowed is not None and value not in col.allowed:
        raise _Invalid(f"{col.name} not allowed")
    if col.min is not None and (value < col.min or (col.min_exclusive and value <= col.min)):
        raise _Invalid(f"{col.name} out of range")
    if col.max is not None and value > col.max:
        raise _Invalid(f"{col.name} out of range")
    if col.name in table.time_columns and value > (end.date() if col.type == DATE else naive_utc(end)):
        raise _Invalid(f"{col.name} after the export time")
    return value


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _string(v: Any) -> str:
    if isinstance(v, str) or (_is_number(v) and isinstance(v, int)):
        return str(v)
    raise TypeError(v)


def _integer(v: Any) -> int:
    if _is_number(v) and float(v) == int(v):
        return int(v)
    raise TypeError(v)


def _number(v: Any) -> float:
    x = float(v) if _is_number(v) or isinstance(v, str) else math.nan
    if not math.isfinite(x):
        raise ValueError(v)
    return x


def _timestamp(v: Any) -> datetime:
    """Naive UTC, as the simulator writes and the typed views read; text without an offset is UTC."""
    return naive_utc(v if isinstance(v, datetime) else datetime.fromisoformat(v))


def _date(v: Any) -> date:
    if isinstance(v, datetime):
        return v.date()
    return v if isinstance(v, date) else date.fromisoformat(v)


def _boolean(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    raise TypeError(v)


_CONVERTERS = {STRING: _string, INTEGER: _integer, NUMBER: _number, TIMESTAMP: _timestamp, DATE: _date,
               BOOLEAN: _boolean}


# ---------------------------------------------------------------------------------------------------- files


def _write(out: Path, fmt: str, table: Table, batches: Iterable[list[dict]], extra: Iterable[Column] = ()) -> int:
    """Write `table` (all contract columns, then `extra`) as out/<table>.<fmt>; returns the row count."""
    schema = pa.schema([(c.name, _ARROW_TYPES[c.type]) for c in (*table.columns, *extra)])
    path = out / f"{table.name}.{fmt}"
    writer = pq.ParquetWriter(path, schema) if fmt == "parquet" else pacsv.CSVWriter(path, schema)
    n = 0
    try:
        for batch in batches:
            if batch:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                n += len(batch)
    finally:
        writer.close()
    return n
