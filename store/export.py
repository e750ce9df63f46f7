"""Export the store's history as a data set in the training-data contract (retention.contract), so the data
team can validate, retrain and evaluate on what the service actually saw.

Mapping:
- decisions -> cancel_requests, one row per decision up to the export time, with the decision's own stored
  `propensity`. `accepted`: an `accepted` outcome; `ended_at`: the decision's `cancelled` outcome, a
  `cancelled` event naming it, or the customer's next `cancelled` event. A decision without any reported
  outcome is exported as the contract reads empty outcomes (not accepted, still subscribed): it is never
  dropped; training labels only requests at least SAVE_HORIZON_DAYS older than the window end, so a decision
  whose outcome cannot have matured yet is not read as a save.
- `nps` / `usage` / `payment` events -> nps_responses / usage / payments.
- customers: every customer a decision or an event refers to. Each contract column and attribute comes from
  the first of these that has it: (1) the latest `customer` event; (2) the latest decision request giving it
  (plan_id, price, billing_period, billing_channel, country, currency, signup_at); (3) the loaded data set's
  customer row (store.models.Customer: every column and attribute, written by `load-features --data` for
  every customer of the data set, also those who had cancelled before the snapshot, whom the service scores
  as unknown; as of the data set, so a later event or request wins); (4) the loaded feature snapshot (customer_features: plan_id, price, billing period and
  channel, country, `attr_<name>` attributes; subscribed customers only); (5) the features the customer's
  latest decision was made with (Decision.features, the same names), which still know a customer a later
  snapshot left out; (6) `currency`, stated by the caller.
- signup_at, where no event, request or data set row states it, is derived from a `tenure_days` feature,
  which retention.features defines as (as of - signup_at) in days counted from whole seconds: signup_at =
  snapshot as_of - tenure_days (4), or decision time - tenure_days (5: the snapshot's value aged to the
  decision, or the request's signup_at), with tenure_days rounded to whole seconds.
- currency is in no snapshot or features: it comes from an event, a request or the data set's row, else from
  `currency`, which the caller states for the customers of a business that bills in one currency (a store
  whose snapshot came only from its own history, say).

Nothing is invented: a row lacking a required value (or holding one the contract does not allow) is counted
in "skipped", by table and reason, and so are rows of customers that could not be exported (the contract
requires every row to reference a known customer). Then the export raises IncompleteExport and writes
nothing, unless the caller accepts a partial export (`allow_partial`), whose dataset.json lists what was
left out. The files are written to a staging folder beside `out_dir` and moved into place only at the end.
`customer_sources` in dataset.json counts, per customer column, where the exported values came from.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime, timedelta
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
    LOGGED_DECISIONS,
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
from store.logged import exported_request_ids, write_logged
from store.models import NO_OFFER, Customer, CustomerFeatures, Decision, Event, Outcome
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


# Customer columns the feature snapshot and a decision's features hold under the same name (retention.features).
_FEATURE_COLUMNS = ("plan_id", "price", "billing_period", "billing_channel", "country")
_ATTRIBUTE_FEATURE = "attr_"  # a customer attribute X is the feature attr_X
_CURRENCY = re.compile(r"[A-Z]{3}")
# Where a customer's values come from, in order of precedence (the keys of the manifest's customer_sources).
_EVENT, _REQUEST, _DATA_SET, _SNAPSHOT, _FEATURES, _STATED = (
    "customer event", "decision request", "loaded data set", "feature snapshot", "decision features",
    "stated by the caller")


class _Invalid(ValueError):
    """A value the contract does not allow; its message is the skip reason."""


class IncompleteExport(ValueError):
    """The store holds rows the export cannot write; nothing was written. `skipped`: table -> reason -> rows."""

    def __init__(self, out: Path, skipped: dict[str, dict[str, int]]):
        self.out, self.skipped = out, skipped
        total = sum(n for reasons in skipped.values() for n in reasons.values())
        lines = [f"{total:,} row(s) of the store cannot be exported, so nothing was written to {out}:"]
        lines += [f"  {table}: " + ", ".join(f"{n:,} {reason}" for reason, n in reasons.items())
                  for table, reasons in skipped.items()]
        super().__init__("\n".join(lines))


def export_dataset(store: Store, out_dir: str | Path, since: datetime | None = None, fmt: str = "parquet",
                   customer_attributes: dict[str, str] | None = None, currency: str | None = None,
                   allow_partial: bool = False) -> dict:
    """Write the store's history from `since` (default: all of it) up to now into `out_dir` (new or empty)
    as `<table>.parquet` or `.csv` files plus dataset.json; returns the manifest.

    Raises IncompleteExport (and writes nothing) when some rows cannot be exported, unless `allow_partial`;
    the manifest's "skipped" counts them by table and reason. `currency` (ISO 4217) is the currency of
    customers whose currency no `customer` event, decision request or loaded data set row gives.

    `customer_attributes` (name -> "number" or "string") are extra customer columns that must exist even if
    no source carries them (a model trained with them needs the column; missing values are null).
    Customers use their latest attributes up to now whatever `since` is, as the contract has no history of
    them."""
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"format must be parquet or csv, not {fmt!r}")
    if currency is not None and not _CURRENCY.fullmatch(currency):
        raise ValueError(f"currency must be an ISO 4217 code such as EUR, not {currency!r}")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out}: exists and is not an empty directory; choose a new output directory")
    since = since.astimezone(UTC) if since is not None else None
    end = datetime.now(UTC)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        manifest = _export(store, staging, since, end, fmt, customer_attributes or {}, currency)
        if manifest["skipped"] and not allow_partial:
            raise IncompleteExport(out, manifest["skipped"])
        os.replace(staging, out)  # replaces an empty directory too
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {"out": str(out), **manifest}


def _export(store: Store, out: Path, since: datetime | None, end: datetime, fmt: str,
            customer_attributes: dict[str, str], currency: str | None) -> dict:
    skipped: dict[str, Counter] = defaultdict(Counter)
    rows: dict[str, int] = {}
    # One snapshot of the database, so that the tables agree with each other.
    with store.transaction(snapshot=True) as conn:
        customers, attributes, sources = _customers(conn, end, customer_attributes, currency,
                                                    skipped[CUSTOMERS.name])
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
        logged = write_logged(conn, out, since, end)  # beside the tables, for `retention ope`
    manifest = {
        "source": "store",
        "exported_at": end.isoformat(),
        "window_start": window_start.isoformat(),
        "window_end": end.isoformat(),
        "format": fmt,
        "rows": rows,
        "skipped": {table: dict(reasons) for table, reasons in skipped.items() if reasons},
        "customer_attributes": attributes,
        "customer_sources": sources,
        "logged_decisions": {"file": LOGGED_DECISIONS, "rows": logged},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


# ------------------------------------------------------------------------------------------------- tables


def _customers(conn: Connection, end: datetime, required_attributes: dict[str, str], currency: str | None,
               skipped: Counter) -> tuple[list[dict], dict[str, str], dict[str, dict[str, int]]]:
    """One row per customer the history refers to, with every contract column known (see the module
    docstring for the sources); plus the attribute columns and their types, and where the values came from."""
    # customer -> source -> {column or attribute: value}; attributes are kept apart, under their own names.
    found: dict[str, dict[str, dict]] = defaultdict(dict)
    found_attributes: dict[str, dict[str, dict]] = defaultdict(dict)
    for customer_id, payload in conn.execute(
        select(Event.customer_id, Event.payload).where(Event.type == "customer", Event.occurred_at <= end)
        .order_by(Event.customer_id, Event.occurred_at, Event.id)
    ):
        payload = payload or {}
        found[customer_id][_EVENT] = payload
        found_attributes[customer_id][_EVENT] = {
            k: v for k, v in payload.items() if k not in CUSTOMERS.column_names and _ATTRIBUTE_NAME.fullmatch(k)}
    q = (select(Decision.customer_id, Decision.created_at, Decision.request, Decision.features)
         .where(Decision.created_at <= end).order_by(Decision.customer_id, Decision.created_at)
         .execution_options(yield_per=_CHUNK))
    for customer_id, created_at, request, features in conn.execute(q):
        # The latest value of each column, so that a later request without a country keeps an earlier one's.
        _update_known(found[customer_id].setdefault(_REQUEST, {}), request or {})
        columns, attrs = _from_features(features or {}, created_at)
        _update_known(found[customer_id].setdefault(_FEATURES, {}), columns)
        _update_known(found_attributes[customer_id].setdefault(_FEATURES, {}), attrs)
    referred = conn.execute(select(Event.customer_id).distinct().where(
        Event.type.in_(tuple(_EVENT_TABLES)), Event.occurred_at <= end)).scalars()
    ids = sorted(found.keys() | set(referred))
    for batch in (ids[i:i + 1000] for i in range(0, len(ids), 1000)):
        for row in conn.execute(select(Customer).where(Customer.customer_id.in_(batch))):
            found[row.customer_id][_DATA_SET] = {c: getattr(row, c) for c in CUSTOMERS.column_names[1:]}
            found_attributes[row.customer_id][_DATA_SET] = {
                k: v for k, v in (row.attributes or {}).items() if v is not None and _ATTRIBUTE_NAME.fullmatch(k)}
        for customer_id, as_of, values in conn.execute(
            select(CustomerFeatures.customer_id, CustomerFeatures.as_of, CustomerFeatures.values)
            .where(CustomerFeatures.customer_id.in_(batch))
        ):
            found[customer_id][_SNAPSHOT], found_attributes[customer_id][_SNAPSHOT] = _from_features(
                values or {}, as_of)
    attributes = dict(required_attributes)
    for by_source in found_attributes.values():
        for values in by_source.values():
            for name, value in values.items():
                attributes.setdefault(name, "number")
                if value is not None and not _is_number(value):
                    attributes[name] = "string"  # one non-number value makes the column categorical
    stated = {"currency": currency} if currency is not None else {}
    sources: dict[str, Counter] = defaultdict(Counter)
    rows = []
    for customer_id in ids:
        by_source = found.get(customer_id, {})
        raw, used = {"customer_id": customer_id}, {}
        for column in CUSTOMERS.column_names[1:]:
            for source in (_EVENT, _REQUEST, _DATA_SET, _SNAPSHOT, _FEATURES, _STATED):
                value = (stated if source == _STATED else by_source.get(source, {})).get(column)
                if value is not None:
                    raw[column], used[column] = value, source
                    break
        row = _contract_row(CUSTOMERS, raw, end, skipped)
        if row is None:
            continue
        attrs = found_attributes.get(customer_id, {})
        for name, kind in attributes.items():
            value = next((attrs[s][name] for s in (_EVENT, _DATA_SET, _SNAPSHOT, _FEATURES)
                          if attrs.get(s, {}).get(name) is not None), None)
            row[name] = None if value is None else float(value) if kind == "number" else _text(value)
        for column, source in used.items():
            sources[column][source] += 1
        rows.append(row)
    return rows, attributes, {column: dict(counts) for column, counts in sources.items()}


def _from_features(values: dict, at: datetime) -> tuple[dict, dict]:
    """The customer columns (signup_at derived from tenure_days) and attributes in a feature row as of `at`."""
    columns = {c: values[c] for c in _FEATURE_COLUMNS if values.get(c) is not None}
    tenure = values.get("tenure_days")
    if _is_number(tenure) and math.isfinite(tenure):
        columns["signup_at"] = at - timedelta(seconds=round(tenure * 86400))
    attributes = {name[len(_ATTRIBUTE_FEATURE):]: v for name, v in values.items()
                  if name.startswith(_ATTRIBUTE_FEATURE) and v is not None}
    return columns, {name: v for name, v in attributes.items() if _ATTRIBUTE_NAME.fullmatch(name)}


def _update_known(known: dict, values: dict) -> None:
    known.update({k: v for k, v in values.items() if v is not None})


def _text(v: Any) -> str:
    """An attribute's value in a categorical column: a whole number stored as a float reads as the integer."""
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


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
    exported = exported_request_ids(conn)  # two clients' decisions under one request_id: one id each
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
            "request_id": exported.get(d.decision_id, d.request_id), "customer_id": d.customer_id,
            "requested_at": requested_at,
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
