"""What the service saw and did at each decision, exported beside the contract tables (`_logged/`, like a
simulator's `_truth/`: not part of the training contract, which validation ignores) for off-policy
evaluation.

The contract's tables let training recompute features as of each request from the history a data set holds.
A store's export holds only what reached the store (its events), not the warehouse usage and NPS the feature
snapshot was computed from, so features recomputed from it are not the ones the model scored. Off-policy
estimates need the context as it was logged: `retention ope` replays candidates on these features
(training.offpolicy), with the logged propensity and, for exploring decisions, what recomputes it.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Connection, func, select

from retention.contract import LOGGED_DECISIONS
from retention.jsonvalues import jsonable
from store.models import Decision

_SCHEMA = pa.schema([("request_id", pa.string()), ("decision_id", pa.string()), ("created_at", pa.timestamp("us")),
                     ("model_version", pa.string()), ("policy_version", pa.string()), ("offer_id", pa.string()),
                     ("propensity", pa.float64()), ("features", pa.string()), ("exploration", pa.string()),
                     ("shadow", pa.string())])


def exported_request_ids(conn: Connection) -> dict[str, str]:
    """decision_id -> the cancel request id an export writes, for the decisions whose request_id another
    client used too; every other decision is exported with its own request_id, unchanged.

    Idempotency keys are scoped per client, so two clients may each have a decision under one request_id,
    while the contract's cancel_requests.request_id is unique. Those decisions (and only those, so that an
    export of a store without such a pair reads exactly as before) are written as `<client>:<request_id>`,
    plus `:<decision_id>` should even that equal a request id in the store. Computed over the whole store,
    not an export's window, so a decision keeps its exported id from one export to the next. Shared by the
    contract's table and `_logged/decisions.parquet`, which training joins on it."""
    shared = select(Decision.request_id).group_by(Decision.request_id).having(func.count() > 1).subquery()
    rows = conn.execute(select(Decision.decision_id, Decision.client, Decision.request_id)
                        .where(Decision.request_id.in_(select(shared.c.request_id)))
                        .order_by(Decision.request_id, Decision.client, Decision.decision_id)).all()
    if not rows:
        return {}
    candidates = {r.decision_id: f"{r.client}:{r.request_id}" for r in rows}
    taken = set(conn.execute(select(Decision.request_id).where(
        Decision.request_id.in_(sorted(set(candidates.values()))))).scalars())
    return {d: f"{c}:{d}" if c in taken else c for d, c in candidates.items()}


def write_logged(conn: Connection, out: Path, since: datetime | None, end: datetime) -> int:
    """Write `<out>/_logged/decisions.parquet`: one row per decision up to `end` (from `since`); returns rows."""
    q = select(Decision.request_id, Decision.decision_id, Decision.created_at, Decision.model_version,
               Decision.policy_version, Decision.offer_id, Decision.propensity, Decision.features,
               Decision.scores).where(Decision.created_at <= end)
    if since is not None:
        q = q.where(Decision.created_at >= since)
    cols: dict[str, list] = {f.name: [] for f in _SCHEMA}
    exported = exported_request_ids(conn)
    for d in conn.execute(q.order_by(Decision.created_at, Decision.request_id)):
        scores = d.scores or {}
        for name, value in (("request_id", exported.get(d.decision_id, d.request_id)), ("decision_id", d.decision_id),
                            ("created_at", d.created_at.replace(tzinfo=None)), ("model_version", d.model_version),
                            ("policy_version", d.policy_version), ("offer_id", d.offer_id),
                            ("propensity", d.propensity), ("features", json.dumps(jsonable(d.features or {}))),
                            ("exploration", _json(scores.get("exploration"))), ("shadow", _json(scores.get("shadow")))):
            cols[name].append(value)
    path = out / LOGGED_DECISIONS
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(cols, schema=_SCHEMA), path)
    return len(cols["request_id"])


def _json(value) -> str | None:
    return None if value is None else json.dumps(jsonable(value))
