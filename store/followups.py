"""Follow-up tasks in the store (retention.followups has the rules): written inside the transaction that
records the NPS event or the decision that makes them, so there is no fact without its task, and worked
through claim / close, each idempotent.

One active task per customer rests on the unique `active_customer` column, not on checking first: two
transactions that both find no active task race to INSERT ... ON CONFLICT DO NOTHING, one row wins, and the
loser updates it (PostgreSQL's READ COMMITTED lets the next statement see the winner's row once committed;
SQLite writers are serialised).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import UTC, datetime

from sqlalchemy import Connection, bindparam, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from retention.followups import (
    OUTCOMES,
    STATUSES,
    WORKED,
    FollowupRules,
    Trigger,
    answer_triggers,
    creates,
    new_task,
    trend,
    update_task,
)
from retention.utc import parse_iso
from retention.webhooks import FOLLOWUP_CLOSED, FOLLOWUP_CREATED, FOLLOWUP_OVERDUE, followup_event
from store.errors import Conflict, InvalidRecord, NotFound
from store.models import Decision, Event, FollowupTask, Outcome

_T = FollowupTask.__table__
_BATCH = 1000


def _now() -> datetime:
    return datetime.now(UTC)


def _batches(items: list, size: int = _BATCH):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def task_dict(row) -> dict:
    d = dict(row._mapping)
    d.pop("active_customer", None)
    d["trend"] = trend(d["score"], d["previous_score"])
    return d


class FollowupStore:
    """The follow-up part of `Store` (which inherits it): needs `self.transaction`. `followup_rules` is
    what makes and updates tasks; the service sets it from config/followups.toml, else the defaults."""

    followup_rules: FollowupRules = FollowupRules()

    # ------------------------------------------------------------------ written with the facts

    def _followups_for_events(self, conn: Connection, rows: list[dict]) -> None:
        """Tasks for the NPS events in `rows` that were just inserted (duplicates never come here)."""
        answers: dict[str, list[tuple[datetime, int, str]]] = defaultdict(list)
        for r in rows:
            if r["type"] == "nps" and isinstance(r["payload"].get("score"), int):
                answers[r["customer_id"]].append((r["occurred_at"], r["payload"]["score"], r["event_id"]))
        if not answers:
            return
        new_ids = {a[2] for batch in answers.values() for a in batch}
        earlier = self._stored_answers(conn, sorted(answers), exclude=new_ids)
        self._apply_triggers(conn, {c: answer_triggers(c, a, earlier.get(c, [])) for c, a in answers.items()})

    def _followups_for_decision(self, conn: Connection, row: dict) -> None:
        """Tasks for a decision just inserted: its inline NPS answers, then the decision itself (a follow-up
        offer makes a task; any decision updates the links of the customer's active task). A decision with
        neither inline answers, a follow-up offer nor a detractor segment costs no statement."""
        offered = (row.get("offer") or {}).get("type") == "followup"
        inline = (row.get("request") or {}).get("nps") or []
        if not (offered or inline or row.get("nps_segment") == "detractor"):
            return
        customer_id = row["customer_id"]
        triggers = []
        if inline:
            answers = [(parse_iso(a["responded_at"]) if isinstance(a["responded_at"], str) else a["responded_at"],
                        int(a["score"]), None) for a in inline]
            earlier = self._stored_answers(conn, [customer_id]).get(customer_id, [])
            triggers = answer_triggers(customer_id, answers, earlier)
        p_stay = row.get("p_stay")
        triggers.append(Trigger(
            customer_id, row["created_at"], decision_id=row["decision_id"], reason=row.get("reason"),
            churn_risk=None if p_stay is None else round(1.0 - float(p_stay), 6),
            segment=row.get("nps_segment"), followup_offer=offered))
        self._apply_triggers(conn, {customer_id: triggers})

    def upsert_followups(self, triggers: list[Trigger]) -> dict[str, int]:
        """Fold `triggers` (any source: `retention at-risk --create-followups` passes its detractors) into the
        customers' active tasks or new ones, by the same rules as an answer or a decision, in one write
        transaction; returns how many customers had no active task before (created) and how many had one."""
        by_customer: dict[str, list[Trigger]] = defaultdict(list)
        for t in sorted(triggers, key=lambda t: t.at):
            by_customer[t.customer_id].append(t)
        with self.transaction(write=True) as conn:
            had = set()
            for batch in _batches(sorted(by_customer)):
                had.update(conn.execute(select(_T.c.active_customer).where(_T.c.active_customer.in_(batch))).scalars())
            self._apply_triggers(conn, dict(by_customer))
        return {"created": len(by_customer) - len(had), "existing": len(had)}

    @staticmethod
    def _stored_answers(conn: Connection, customers: list[str], exclude: set[str] = frozenset()
                        ) -> dict[str, list[tuple[datetime, int]]]:
        out: dict[str, list[tuple[datetime, int]]] = defaultdict(list)
        ev = Event.__table__
        for batch in _batches(customers):
            for e in conn.execute(select(ev.c.customer_id, ev.c.event_id, ev.c.occurred_at, ev.c.payload)
                                  .where(ev.c.type == "nps", ev.c.customer_id.in_(batch))):
                score = (e.payload or {}).get("score")
                if e.event_id not in exclude and isinstance(score, int):
                    out[e.customer_id].append((e.occurred_at, score))
        return out

    def _apply_triggers(self, conn: Connection, triggers: dict[str, list[Trigger]]) -> None:
        """Each customer's triggers, in order, folded into their active task or a new one; a few statements
        per call, not per answer (a batch of 5,000 answers is one call)."""
        rules = self.followup_rules
        customers = sorted(c for c, ts in triggers.items() if ts)
        active: dict[str, dict] = {}
        for batch in _batches(customers):
            for r in conn.execute(select(_T).where(_T.c.active_customer.in_(batch)).with_for_update()):
                active[r.active_customer] = dict(r._mapping)
        # The latest answer a closed task covered: an answer no newer (an old one re-sent inline with a later
        # decision) does not open a task again.
        handled: dict[str, datetime] = {}
        for batch in _batches([c for c in customers if c not in active]):
            handled.update(conn.execute(select(_T.c.customer_id, func.max(_T.c.answered_at)).where(
                _T.c.customer_id.in_(batch), _T.c.status == "closed").group_by(_T.c.customer_id)).all())
        created: dict[str, dict] = {}
        changes: dict[str, dict] = {}
        for c in customers:
            for t in triggers[c]:
                if c in active:
                    changes.setdefault(c, {}).update(update_task(rules, {**active[c], **changes.get(c, {})}, t))
                elif c in created:
                    created[c].update(update_task(rules, created[c], t))
                else:
                    made = creates(rules, t)
                    opens_again = t.score is not None and not t.followup_offer
                    if made is not None and not (opens_again and c in handled and t.at <= handled[c]):
                        created[c] = new_task(rules, t, *made)
        now = _now()
        lost: list[str] = []
        if created:
            insert = (postgresql if conn.dialect.name == "postgresql" else sqlite).insert(_T)
            stmt = insert.on_conflict_do_nothing(index_elements=["active_customer"]).returning(_T.c.active_customer)
            rows = [{"task_id": uuid.uuid4().hex, "active_customer": c, "created_at": now, "updated_at": now,
                     "claimed_by": None, "claimed_at": None, "closed_at": None, "outcome": None,
                     "close_reason": None, **fields} for c, fields in sorted(created.items())]
            inserted: set[str] = set()
            for batch in _batches(rows):
                inserted.update(conn.execute(stmt, batch).scalars())
            lost = [c for c in created if c not in inserted]  # another transaction opened it meanwhile
            for row in rows:  # announced in the same transaction (store/outbox.py); a holdout task is not worked
                if row["active_customer"] in inserted and row["status"] != "holdout":
                    self._announce(conn, FOLLOWUP_CREATED, {**row, "trend": trend(row["score"], row["previous_score"])})
        self._write_changes(conn, {active[c]["task_id"]: ch for c, ch in changes.items() if ch}, now)
        if lost:
            self._apply_triggers(conn, {c: triggers[c] for c in lost})  # now they find the winner's task

    @staticmethod
    def _write_changes(conn: Connection, changes: dict[str, dict], now: datetime) -> None:
        """One executemany UPDATE per set of changed columns."""
        by_columns: dict[tuple[str, ...], list[dict]] = defaultdict(list)
        for task_id, ch in changes.items():
            by_columns[tuple(sorted(ch))].append({"key": task_id, **{f"v_{k}": v for k, v in ch.items()},
                                                  "v_updated_at": now})
        for columns, params in by_columns.items():
            stmt = update(_T).where(_T.c.task_id == bindparam("key")).values(
                {k: bindparam(f"v_{k}") for k in (*columns, "updated_at")})
            conn.execute(stmt, params)

    # ------------------------------------------------------------------ worked by agents

    def list_followups(self, status: str = "open", due_before: datetime | None = None,
                       min_risk: float | None = None, limit: int = 100) -> list[dict]:
        """Tasks of one status, soonest due first (then by id); `min_risk` keeps those with a churn risk at
        least that high (a task without one is left out)."""
        if status not in STATUSES:
            raise InvalidRecord(f"status {status!r} is not one of {', '.join(STATUSES)}")
        if limit < 1:
            raise InvalidRecord(f"limit must be at least 1, got {limit}")
        q = select(_T).where(_T.c.status == status)
        if due_before is not None:
            q = q.where(_T.c.due_at < due_before)
        if min_risk is not None:
            q = q.where(_T.c.churn_risk >= float(min_risk))
        with self.transaction() as conn:
            rows = conn.execute(q.order_by(_T.c.due_at, _T.c.task_id).limit(int(limit))).all()
        return [task_dict(r) for r in rows]

    def get_followup(self, task_id: str) -> dict | None:
        with self.transaction() as conn:
            row = conn.execute(select(_T).where(_T.c.task_id == task_id)).one_or_none()
        return None if row is None else task_dict(row)

    def _locked(self, conn: Connection, task_id: str):
        row = conn.execute(select(_T).where(_T.c.task_id == task_id).with_for_update()).one_or_none()
        if row is None:
            raise NotFound(f"no follow-up task {task_id!r}")
        return row

    def claim_followup(self, task_id: str, agent: str, now: datetime | None = None) -> tuple[dict, bool]:
        """An agent takes an open task; returns (task, changed). The same agent again changes nothing;
        another agent while it is claimed, or a closed or held-out task, is a Conflict."""
        now = now or _now()
        with self.transaction(write=True) as conn:
            row = self._locked(conn, task_id)
            if row.status == "claimed" and row.claimed_by == agent:
                return task_dict(row), False
            if row.status == "claimed":
                raise Conflict(f"task {task_id} is claimed by another agent")
            if row.status != "open":
                raise Conflict(f"task {task_id} is {row.status}: it cannot be claimed")
            conn.execute(update(_T).where(_T.c.task_id == task_id).values(
                status="claimed", claimed_by=agent, claimed_at=now, updated_at=now))
            return task_dict(self._locked(conn, task_id)), True

    def close_followup(self, task_id: str, outcome: str, reason: str | None = None,
                       now: datetime | None = None) -> tuple[dict, bool]:
        """Close an open or claimed task with an outcome; returns (task, changed). The same outcome and
        reason again change nothing; another one after the close, or a held-out task, is a Conflict. The
        customer may get a new task from then on."""
        if outcome not in OUTCOMES:
            raise InvalidRecord(f"outcome {outcome!r} is not one of {', '.join(OUTCOMES)}")
        now = now or _now()
        with self.transaction(write=True) as conn:
            row = self._locked(conn, task_id)
            if row.status == "closed":
                if row.outcome == outcome and row.close_reason == reason:
                    return task_dict(row), False
                raise Conflict(f"task {task_id} was already closed as {row.outcome} with another reason"
                               if row.outcome == outcome else f"task {task_id} was already closed as {row.outcome}")
            if row.status == "holdout":
                raise Conflict(f"task {task_id} is in the holdout: it is not worked")
            conn.execute(update(_T).where(_T.c.task_id == task_id).values(
                status="closed", active_customer=None, outcome=outcome, close_reason=reason, closed_at=now,
                updated_at=now))
            closed = task_dict(self._locked(conn, task_id))
            self._announce(conn, FOLLOWUP_CLOSED, closed)
            return closed, True

    def announce_overdue(self, since: datetime, now: datetime | None = None) -> int:
        """Queue followup.overdue for the open or claimed tasks that fell due in (since, now]; returns how many
        tasks. The webhook worker calls it every minute or so with the time of its previous look (a task is
        announced once: the event id is the task's; store/outbox.py skips an id already queued)."""
        now = now or _now()
        with self.transaction(write=True) as conn:
            rows = conn.execute(select(_T).where(_T.c.status.in_(WORKED), _T.c.due_at > since,
                                                 _T.c.due_at <= now)).all()
            for r in rows:
                self._announce(conn, FOLLOWUP_OVERDUE, task_dict(r))
        return len(rows)

    def _announce(self, conn: Connection, kind: str, task: dict) -> None:
        event_id, data = followup_event(kind, task)
        self.enqueue(conn, kind, data, event_id=event_id, customer_id=task["customer_id"])

    def followup_counts(self, now: datetime | None = None) -> dict[str, int]:
        """Open and claimed tasks, and those of them past due (for /metrics)."""
        now = now or _now()
        with self.transaction() as conn:
            by_status = dict(conn.execute(select(_T.c.status, func.count()).where(_T.c.status.in_(WORKED))
                                          .group_by(_T.c.status)).all())
            overdue = conn.execute(select(func.count()).select_from(_T).where(
                _T.c.status.in_(WORKED), _T.c.due_at < now)).scalar_one()
        return {"open": int(by_status.get("open", 0)), "claimed": int(by_status.get("claimed", 0)),
                "overdue": int(overdue)}

    def followup_report_records(self, since: datetime, until: datetime) -> tuple[list[dict], dict[str, list]]:
        """What `retention followups report` reads, in one read transaction: the tasks triggered in
        [since, until), and each of their customers' cancellation signals up to `until` (cancelled events,
        cancelled outcomes of their decisions, still-active checks that say inactive)."""
        cancellations: dict[str, list[datetime]] = defaultdict(list)
        with self.transaction(snapshot=True) as conn:
            tasks = [task_dict(r) for r in conn.execute(
                select(_T).where(_T.c.triggered_at >= since, _T.c.triggered_at < until)
                .order_by(_T.c.triggered_at, _T.c.task_id))]
            customers = sorted({t["customer_id"] for t in tasks})
            ev, d, o = Event.__table__, Decision.__table__, Outcome.__table__
            for batch in _batches(customers):
                for e in conn.execute(select(ev.c.customer_id, ev.c.type, ev.c.occurred_at, ev.c.payload).where(
                        ev.c.customer_id.in_(batch), ev.c.type.in_(("cancelled", "still_active")),
                        ev.c.occurred_at <= until)):
                    if e.type == "cancelled" or (e.payload or {}).get("active") is False:
                        cancellations[e.customer_id].append(e.occurred_at)
                for c in conn.execute(select(d.c.customer_id, o.c.occurred_at).join(o, o.c.decision_id == d.c.decision_id)
                                      .where(d.c.customer_id.in_(batch), o.c.kind == "cancelled",
                                             o.c.occurred_at <= until)):
                    cancellations[c.customer_id].append(c.occurred_at)
        return tasks, dict(cancellations)

    # ------------------------------------------------------------------ privacy

    @staticmethod
    def _followups_of(conn: Connection, customer_id: str) -> list[dict]:
        return [task_dict(r) for r in conn.execute(select(_T).where(_T.c.customer_id == customer_id)
                                                   .order_by(_T.c.created_at, _T.c.task_id))]

    @staticmethod
    def _delete_followups(conn: Connection, customer_id: str) -> int:
        return conn.execute(delete(_T).where(_T.c.customer_id == customer_id)).rowcount

