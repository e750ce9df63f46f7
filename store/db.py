"""Connecting to the store's database (SQLite embedded, PostgreSQL in production) and migrating its schema.

Nothing here runs at import time: an engine holds a pool of open connections, which must not be shared
between the processes of a pre-forking server, so each process creates its own engine after the fork (an
engine created before a fork must be `dispose(close=False)`d in the child). The schema comes only from the
Alembic revisions in store/migrations, never from `metadata.create_all`.
"""

from __future__ import annotations

import functools
import json
import math
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError

from store.errors import SchemaMissing, StoreUnavailable

DEFAULT_URL = "sqlite:///var/retention.db"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Execution option marking a transaction that will write (see _sqlite_begin).
WRITES = "store_writes"
# Any fixed number: serialises concurrent `upgrade` runs on PostgreSQL (e.g. two deploys at once).
_MIGRATION_LOCK = 0x5E7E_0FF5
_UNDEFINED_TABLE = "42P01"  # PostgreSQL SQLSTATE


def database_url(url: str | None = None) -> str:
    """`url`, else the environment's DATABASE_URL, else the embedded SQLite file."""
    return url or os.environ.get("DATABASE_URL") or DEFAULT_URL


def display_url(url: str | None = None) -> str:
    """The URL without its password, for messages."""
    return make_url(database_url(url)).render_as_string(hide_password=True)


def make_engine(url: str | None = None, call_timeout: float | None = None) -> Engine:
    """An engine for `url` (default: see database_url), configured for how the store uses it.

    `call_timeout` (PostgreSQL; the service passes RETENTION_DB_TIMEOUT_SECONDS): the longest one use of a
    connection may last, see _postgres_engine. SQLite is a local file: nothing to time out."""
    parsed = make_url(database_url(url))
    # NaN is not JSON: refuse it here rather than write a value PostgreSQL rejects or SQLite returns as NaN.
    dumps = functools.partial(json.dumps, allow_nan=False)
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database
        if db and db != ":memory:" and not db.startswith("file:"):
            Path(db).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, json_serializer=dumps)
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if parsed.drivername in ("postgres", "postgresql"):
        # The usual DATABASE_URL spelling names no driver; psycopg (3) is the one installed.
        parsed = parsed.set(drivername="postgresql+psycopg")
    return _postgres_engine(parsed, dumps, call_timeout)


# PostgreSQL connection settings of every engine (a URL parameter of the same name wins). A partition shows
# as silence, not as an error: without them a connection would wait for the server forever.
_PG_CONNECT = {
    "connect_timeout": "5",  # seconds to establish a connection, handshake included (libpq: at least 2)
    "keepalives": "1",  # TCP keepalives: an idle connection to a vanished server is noticed ...
    "keepalives_idle": "10",  # ... probed after 10 s of silence,
    "keepalives_interval": "3",  # ... every 3 s,
    "keepalives_count": "3",  # ... and dropped after 3 unanswered probes (about 19 s)
    "tcp_user_timeout": "10000",  # ms: data sent and not acknowledged for this long drops the connection
}


def _postgres_engine(parsed, dumps, call_timeout: float | None) -> Engine:
    """A PostgreSQL engine. With `call_timeout` (the service), no checkout of a connection lasts longer:
    the server cancels a statement running that long, and a watchdog closes the socket of a connection
    still checked out after it (the only defence against a proxy or load balancer that keeps the TCP
    connection alive but forwards nothing, where neither keepalives nor tcp_user_timeout ever fire). The
    waiting call then fails as a lost connection (StoreUnavailable) and the connection is discarded.

    Without it (the CLI: bulk loads, exports, migrations) statements may run as long as they need."""
    connect = {k: v for k, v in _PG_CONNECT.items() if k not in parsed.query}
    if call_timeout is None:
        # pre_ping: a connection the server or a proxy closed while idle in the pool is replaced, not handed out.
        return create_engine(parsed, pool_pre_ping=True, json_serializer=dumps, connect_args=connect)
    if "connect_timeout" not in parsed.query:
        connect["connect_timeout"] = str(max(2, math.ceil(call_timeout)))
    options = parsed.query.get("options") or ""
    if "statement_timeout" not in options:  # server side: a runaway statement is stopped there too
        connect["options"] = f"{options} -c statement_timeout={int(call_timeout * 1000)}".strip()
    # pool_timeout: waiting for a free pooled connection is bounded the same way. No pool_pre_ping: the
    # watchdog's checkout listener pings instead, under the deadline (SQLAlchemy pings before any listener).
    engine = create_engine(parsed, json_serializer=dumps, connect_args=connect, pool_timeout=call_timeout)
    _Watchdog.attach(engine, call_timeout)
    return engine


class _Watchdog:
    """Deadlines on checked-out connections of one engine: from checkout (ping included) to checkin, at most
    `limit` seconds, after which the connection's socket is shut down under the waiting thread. One daemon
    thread per engine and process, started lazily (threads do not survive a fork)."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self._due: dict[object, tuple[float, object]] = {}  # connection record -> (deadline, DBAPI connection)
        self._cond = threading.Condition()
        self._pid = -1
        self.dialect = None  # the engine's, set by attach

    @classmethod
    def attach(cls, engine: Engine, limit: float) -> None:
        dog = cls(limit)
        dog.dialect = engine.dialect
        event.listen(engine, "connect", dog._connected)
        event.listen(engine, "checkout", dog._checkout)
        for name in ("checkin", "invalidate", "soft_invalidate", "close", "detach"):
            event.listen(engine, name, dog._forget)

    def _connected(self, _dbapi_connection, record) -> None:
        record.info["fresh"] = True  # just connected (connect_timeout bounded that): no ping needed

    def _checkout(self, dbapi_connection, record, proxy) -> None:
        self._watch(record, dbapi_connection)
        if record.info.pop("fresh", False):
            return
        dialect = self.dialect
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as exc:
            if dialect.is_disconnect(exc, dbapi_connection, None):
                # SQLAlchemy's recipe: the pool discards this connection and checks out a new one.
                raise DisconnectionError(f"ping failed: {exc}") from exc
            raise

    def _watch(self, record, dbapi_connection) -> None:
        with self._cond:
            if self._pid != os.getpid():
                self._due.clear()
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="db-watchdog", daemon=True).start()
            self._due[record] = (time.monotonic() + self.limit, dbapi_connection)
            self._cond.notify()

    def _forget(self, _dbapi_connection, record, *_exc) -> None:
        with self._cond:
            self._due.pop(record, None)

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for record, (deadline, conn) in list(self._due.items()):
                    if deadline <= now:
                        del self._due[record]
                        _shut_down(conn)  # under the lock: the connection cannot be closed meanwhile
                self._cond.wait(min((d for d, _ in self._due.values()), default=now + 60) - now)


def _shut_down(dbapi_connection) -> None:
    """End the TCP connection under a thread that waits on it: its poll wakes up to a closed connection
    (psycopg: "server closed the connection unexpectedly"). The descriptor stays the driver's to close."""
    try:
        fd = dbapi_connection.fileno()
        with socket.socket(fileno=os.dup(fd)) as s:
            s.shutdown(socket.SHUT_RDWR)
    except Exception:  # noqa: BLE001 - already closed (psycopg raises its own error): nothing to end
        pass


def _sqlite_connect(dbapi_connection, _record) -> None:
    # sqlite3's own transaction handling would BEGIN only before INSERT/UPDATE/DELETE, leaving the reads
    # before them outside the transaction; _sqlite_begin emits BEGIN itself instead.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        # WAL: readers never block the writer and vice versa (one writer at a time remains).
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")  # off by default in SQLite
        cursor.execute("PRAGMA busy_timeout=5000")  # wait up to 5 s for another writer instead of failing
        cursor.execute("PRAGMA synchronous=NORMAL")  # durable in WAL mode except on power loss; much faster
    finally:
        cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    # A transaction that will write takes the write lock up front. Its reads and writes then form one
    # serialised unit (check-then-insert is safe), and a second writer waits for busy_timeout; a deferred
    # transaction that reads first and writes later would instead fail with "database is locked" whenever
    # another process wrote in between.
    immediate = conn.get_execution_options().get(WRITES, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


@contextmanager
def unavailable_as_store_errors(url: str | None = None) -> Iterator[None]:
    """Turn "cannot reach / not migrated" driver errors into StoreUnavailable / SchemaMissing."""
    try:
        yield
    except DBAPIError as exc:
        text = str(exc.orig).strip()
        first_line = text.splitlines()[0] if text else type(exc.orig).__name__
        if "no such table" in text or getattr(exc.orig, "sqlstate", None) == _UNDEFINED_TABLE:
            raise SchemaMissing(f"database schema is missing ({first_line}); run `retention db upgrade`") from exc
        if exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError):
            where = f" at {display_url(url)}" if url is not None else ""
            raise StoreUnavailable(f"database{where} unavailable: {first_line}") from exc
        raise
    except DisconnectionError as exc:
        raise StoreUnavailable(f"database connection lost: {exc}") from exc


def alembic_config(connection: Connection | None = None):
    """Alembic configuration pointing at store/migrations; no alembic.ini needed."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "store/migrations has no revisions"
    return head


def current_revision(url: str | None = None) -> str | None:
    """The revision the database is at; None when it was never migrated."""
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(url)
    try:
        with unavailable_as_store_errors(database_url(url)), engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def upgrade(url: str | None = None, revision: str = "head") -> str | None:
    """Run the migrations up to `revision` (`alembic upgrade head`); returns the revision reached."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(url)
    try:
        with unavailable_as_store_errors(database_url(url)), engine.connect() as conn:
            conn.execution_options(**{WRITES: True})  # SQLite: one migrator at a time (BEGIN IMMEDIATE)
            sqlite = conn.dialect.name == "sqlite"
            if sqlite:
                # Batch migrations rebuild a table (copy, drop, rename), and dropping a referenced table fails
                # while foreign keys are enforced. SQLite's procedure for schema changes: keys off during the
                # change, foreign_key_check before commit.
                _sqlite_pragma(conn, "foreign_keys=OFF")
            with conn.begin():
                if not sqlite:
                    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
                command.upgrade(alembic_config(conn), revision)
                if sqlite and (broken := conn.exec_driver_sql("PRAGMA foreign_key_check").all()):
                    raise RuntimeError(f"the migration broke foreign keys, rolled back: {broken[:5]}")
                return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()  # also discards the connection whose foreign keys were switched off


def _sqlite_pragma(conn: Connection, pragma: str) -> None:
    # On the driver connection: through SQLAlchemy it would run inside a transaction, where SQLite ignores it.
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA {pragma}")
    finally:
        cursor.close()
