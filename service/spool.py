"""A durable local spool for the writes the store could not take: decisions and outcomes answered during a
store outage are kept on local disk and replayed into the store, exactly once, when it is back.

- Durable: one SQLite file on the host (RETENTION_SPOOL, default var/spool/spool.db), WAL with
  synchronous=FULL, shared by all gunicorn workers; a write is on disk before the answer leaves.
- Exactly once: replay goes through the store's own idempotent writes (a decision by (client, request_id), an
  outcome by decision and kind), and a row leaves the spool once the store has taken it. A crash between
  the store's commit and the spool's delete replays the row again, which the store then recognises as the
  same write; so does a write that was spooled because the store did not answer in time but went through
  after all (service/runtime.py GuardedStore).
- Ordered: rows replay in the order they were spooled, so a decision's outcomes follow the decision.
- A retried request whose decision is still spooled gets that decision back (idempotency holds during the
  outage), and an outcome for a spooled decision is spooled behind it.
- Private, and forgetful once replayed: the spool holds customer data (customer ids, free text, features), so
  the file and its -wal/-shm are created mode 0600 before anything is written (SQLite gives the -wal and
  -shm the database file's mode), rows are deleted with `secure_delete` (their bytes zeroed, not just
  unlinked from the b-tree), and after a replay or an erasure a TRUNCATE checkpoint empties the WAL, which
  would otherwise keep the frames that carried them. A customer's erasure (`erase_customer`) removes their
  rows that are still waiting: those writes never reach the store.

Each worker replays from a background thread every `interval` seconds while rows are waiting.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from retention.jsonvalues import jsonable
from store import Conflict, IdempotencyConflict, InvalidRecord, NotFound, StoreUnavailable

log = logging.getLogger("retention.service")
_TIMES = ("created_at", "close_the_loop_by", "occurred_at")


class Spool:
    def __init__(self, path: str | Path, interval: float = 1.0) -> None:
        self.path = Path(path)
        self.interval = interval
        self._local = threading.local()
        self._replayer_pid = -1
        self._lock = threading.Lock()
        self._checkpoint_due = False
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _make_private(self.path)
        with self._db() as db:
            # key: a decision's request_id (its client is in the payload: keys are scoped per client), an
            # outcome's decision_id; ref: the decision_id of either
            db.execute("CREATE TABLE IF NOT EXISTS spool (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL,"
                       " key TEXT NOT NULL, ref TEXT NOT NULL, payload TEXT NOT NULL, spooled_at REAL NOT NULL)")
            db.execute("CREATE INDEX IF NOT EXISTS spool_key ON spool (kind, key)")
            db.execute("CREATE INDEX IF NOT EXISTS spool_ref ON spool (kind, ref)")

    def _db(self) -> sqlite3.Connection:
        """This thread's connection (per process: connections must not cross a fork)."""
        db = getattr(self._local, "db", None)
        if db is None or self._local.pid != os.getpid():
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")  # on disk before we answer: that is the point of a spool
            db.execute("PRAGMA secure_delete=ON")  # a deleted row's bytes are zeroed in its pages
            self._local.db, self._local.pid = db, os.getpid()
        return db

    # ----------------------------------------------------------------------------------- writes and reads

    def put_decision(self, record: dict) -> None:
        self._put("decision", record["request_id"], record["decision_id"], record)

    def put_outcome(self, decision_id: str, kind: str, occurred_at: datetime) -> None:
        self._put("outcome", decision_id, decision_id,
                  {"decision_id": decision_id, "kind": kind, "occurred_at": occurred_at})

    def _put(self, kind: str, key: str, ref: str, payload: dict) -> None:
        # The store's own JSON conversion (times as ISO text, dataclasses as objects, NaN as null): what the
        # store would have made of the record anyway.
        self._db().execute("INSERT INTO spool (kind, key, ref, payload, spooled_at) VALUES (?, ?, ?, ?, ?)",
                           (kind, key, ref, json.dumps(jsonable(payload)), time.time()))
        self._local.pending = True
        self._local.checked = time.monotonic()

    def decision(self, client: str, request_id: str) -> dict | None:
        """The spooled decision for a client's request id, if one is waiting. The key column holds the
        request id alone (rows spooled before keys were scoped per client read the same), the client is
        matched in the payload: another client's decision under the same request id is not this one's."""
        rows = self._db().execute("SELECT payload FROM spool WHERE kind = 'decision' AND key = ? ORDER BY id",
                                  (request_id,)).fetchall()
        for (payload,) in rows:
            item = _decode(payload)
            if item.get("client") == client:
                return item
        return None

    def holds_decision(self, decision_id: str) -> bool:
        return self._db().execute("SELECT 1 FROM spool WHERE kind = 'decision' AND ref = ? LIMIT 1",
                                  (decision_id,)).fetchone() is not None

    def depth(self) -> int:
        return self._db().execute("SELECT count(*) FROM spool").fetchone()[0]

    def pending(self) -> bool:
        """Whether anything may be waiting: this process's own writes, or (checked at most every
        `interval` seconds, to keep the decision path cheap) another worker's."""
        now = time.monotonic()
        if now - getattr(self._local, "checked", -1e9) > self.interval:
            self._local.checked, self._local.pending = now, self.depth() > 0
        return self._local.pending

    # --------------------------------------------------------------------------------------------- replay

    def replay(self, store, batch: int = 200) -> dict:
        """Move spooled rows into the store, oldest first, until the spool is empty or the store fails; then
        empty the WAL of the replayed rows' frames (`checkpoint`).

        One replayer at a time across workers (a lock file, never waited for: whoever holds it is at work).
        The spool itself is not locked while the store is being written: a store that answers slowly must
        not hold up the requests spooling beside it. The rows the store has taken are deleted
        batch by batch."""
        done = {"decision": 0, "outcome": 0, "dropped": 0}
        try:
            self._replay(store, batch, done)
        finally:
            if any(done.values()):
                self._checkpoint_due = True
                self.checkpoint()
        return done

    def _replay(self, store, batch: int, done: dict) -> None:
        db = self._db()
        with self._replay_lock() as mine:
            if not mine:
                return
            while True:
                rows = db.execute("SELECT id, kind, payload FROM spool ORDER BY id LIMIT ?", (batch,)).fetchall()
                taken = []
                try:
                    for row_id, kind, payload in rows:
                        applied = self._apply(store, kind, _decode(payload))
                        done[kind if applied else "dropped"] += 1
                        taken.append((row_id,))
                except StoreUnavailable:
                    return  # what the store took before it went away is deleted below
                finally:
                    self._delete(db, taken)
                if len(rows) < batch:
                    return

    @staticmethod
    def _delete(db: sqlite3.Connection, taken: list[tuple[int]]) -> None:
        """Delete the rows the store has taken, in one transaction (one disk sync per batch, not per row;
        should the process die before it, the batch is replayed again, which the idempotent writes absorb)."""
        if not taken:
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("DELETE FROM spool WHERE id = ?", taken)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    @contextmanager
    def _replay_lock(self, wait: bool = False) -> Iterator[bool]:
        with open(self.path.with_name(self.path.name + ".replay-lock"), "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def checkpoint(self) -> bool:
        """Copy the WAL into the database file and truncate it to zero bytes, so that the frames of deleted
        rows (which carried their data) are gone. True when done; False when another process's reader kept
        it from finishing (the replay thread retries every `interval`)."""
        busy = self._db().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        self._checkpoint_due = bool(busy)
        return not busy

    def erase_customer(self, customer_id: str) -> dict:
        """Delete a customer's waiting rows (a data-subject erasure): their spooled decisions and the outcomes
        spooled behind them; those writes never reach the store. Waits for a replay in progress to finish
        (the replay lock), so each row is either deleted here or already in the store (where the store's
        erasure, which runs next, finds it). An outcome spooled for a decision already in the store holds
        no personal data (ids, kind, time); once the store's erasure ran, its replay finds no decision and
        drops it. Returns counts."""
        db = self._db()
        with self._replay_lock(wait=True):
            db.execute("BEGIN IMMEDIATE")
            try:
                refs = [ref for (ref,) in db.execute(
                    "SELECT ref FROM spool WHERE kind = 'decision' AND json_extract(payload, '$.customer_id') = ?",
                    (customer_id,))]
                decisions = db.execute("DELETE FROM spool WHERE kind = 'decision' AND json_extract(payload, "
                                       "'$.customer_id') = ?", (customer_id,)).rowcount
                outcomes = sum(db.execute("DELETE FROM spool WHERE kind = 'outcome' AND ref = ?", (ref,)).rowcount
                               for ref in set(refs))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        if decisions or outcomes:
            self.checkpoint()
        return {"decisions": decisions, "outcomes": outcomes}

    @staticmethod
    def _apply(store, kind: str, item: dict) -> bool:
        """Write one spooled item; False when the store refuses it for good (logged, then dropped)."""
        try:
            if kind == "decision":
                store.record_decision(item)
            else:
                store.record_outcome(item["decision_id"], item["kind"], item["occurred_at"])
            return True
        except (IdempotencyConflict, Conflict, NotFound, InvalidRecord) as exc:
            log.error("spool_item_dropped", extra={"fields": {"kind": kind, "error": type(exc).__name__}})
            return False

    def start_replayer(self, store_factory) -> None:
        """Start this process's replay thread (once per process; threads do not survive a fork). The service
        calls it when a process first opens its store, before anything can be spooled."""
        with self._lock:
            if self._replayer_pid == os.getpid():
                return
            self._replayer_pid = os.getpid()
        threading.Thread(target=self._replay_loop, args=(store_factory,), name="spool-replay", daemon=True).start()

    def _replay_loop(self, store_factory) -> None:
        while True:
            time.sleep(self.interval)
            try:
                if self.depth():
                    done = self.replay(store_factory())
                    if any(done.values()):
                        log.info("spool_replayed", extra={"fields": done})
                elif self._checkpoint_due:
                    self.checkpoint()
            except Exception as exc:  # noqa: BLE001 - the thread must outlive any one failure
                log.error("spool_replay_failed", extra={"fields": {"error": type(exc).__name__}})


def _make_private(path: Path) -> None:
    """Create the spool file mode 0600 (owner only) before SQLite opens it, and take group and world access
    from a file and -wal/-shm left by an earlier version (created 0644 under the usual umask)."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if p.exists():
            os.chmod(p, 0o600)


def _decode(payload: str) -> dict:
    item = json.loads(payload)
    for k in _TIMES:
        if isinstance(item.get(k), str):
            item[k] = datetime.fromisoformat(item[k])
    return item
