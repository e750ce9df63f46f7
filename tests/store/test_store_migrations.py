"""Schema and connections: the migrations create exactly the models' schema on SQLite and PostgreSQL, the
SQLite pragmas are set, and an unreachable or unmigrated database raises the store's own errors."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Integer, MetaData, Table
from sqlalchemy import inspect as sa_inspect

import store.db
from store import SchemaMissing, Store, StoreUnavailable
from store.db import DEFAULT_URL, current_revision, head_revision, make_engine, upgrade
from store.models import Base


def _diffs(url: str, metadata: MetaData) -> list:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
    finally:
        engine.dispose()


def test_migrated_schema_matches_the_models(migrated_url):
    assert _diffs(migrated_url, Base.metadata) == []


def test_the_schema_comparison_would_notice_a_difference(migrated_url):
    changed = MetaData()
    for table in Base.metadata.tables.values():
        table.to_metadata(changed)
    Table("extra", changed, Column("id", Integer, primary_key=True))
    changed.tables["events"].append_column(Column("source", Integer))
    kinds = sorted(d[0] if isinstance(d, tuple) else d[0][0] for d in _diffs(migrated_url, changed))
    assert kinds == ["add_column", "add_table"]


def test_upgrade_reaches_head_and_can_be_repeated(db_url):
    assert current_revision(db_url) is None
    assert upgrade(db_url) == head_revision()
    assert upgrade(db_url) == head_revision()
    assert current_revision(db_url) == head_revision()


def test_an_unmigrated_database_raises_schema_missing(db_url):
    s = Store.from_url(db_url)
    try:
        with pytest.raises(SchemaMissing, match="retention db upgrade"):
            s.ping()
        with pytest.raises(SchemaMissing):
            s.get_decision("x")
    finally:
        s.close()


def test_an_unreachable_database_raises_store_unavailable(tmp_path):
    for url in ("postgresql+psycopg://postgres@127.0.0.1:1/test?connect_timeout=2",
                f"sqlite:///{tmp_path}/is-a-file/store.db"):
        if url.startswith("sqlite"):
            (tmp_path / "is-a-file").mkdir()
            (tmp_path / "is-a-file" / "store.db").mkdir()  # a directory where the database file should be
        s = Store.from_url(url)
        try:
            with pytest.raises(StoreUnavailable, match="unavailable"):
                s.ping()
            with pytest.raises(StoreUnavailable):
                s.record_events([])  # every method, not only ping
            with pytest.raises(StoreUnavailable):
                s.list_clients()
        finally:
            s.close()


def test_sqlite_connections_use_wal_and_enforce_foreign_keys(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade(url)
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            pragma = {p: conn.exec_driver_sql(f"PRAGMA {p}").scalar()
                      for p in ("journal_mode", "foreign_keys", "busy_timeout", "synchronous")}
    finally:
        engine.dispose()
    assert pragma == {"journal_mode": "wal", "foreign_keys": 1, "busy_timeout": 5000, "synchronous": 1}


def test_default_url_is_the_embedded_file_and_its_folder_is_created(tmp_path, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    engine = make_engine()
    try:
        assert str(engine.url) == DEFAULT_URL and (tmp_path / "var").is_dir()
    finally:
        engine.dispose()
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/env/x.db")
    engine = make_engine()
    try:
        assert engine.url.database == f"{tmp_path}/env/x.db"
    finally:
        engine.dispose()


def test_a_postgres_url_without_a_driver_uses_psycopg():
    engine = make_engine("postgresql://user:pw@db.example:5432/prod")
    try:
        assert engine.url.drivername == "postgresql+psycopg"
    finally:
        engine.dispose()


def test_a_sqlite_batch_migration_can_rebuild_a_referenced_table(tmp_path, monkeypatch):
    """Future migrations that alter a table on SQLite rebuild it; that must work with rows referencing it."""
    migrations = tmp_path / "migrations"
    shutil.copytree(store.db.MIGRATIONS, migrations)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    head = upgrade(url)
    (migrations / "versions" / "9999_rebuild.py").write_text(
        "import sqlalchemy as sa\nfrom alembic import op\n\n"
        f"revision, down_revision, branch_labels, depends_on = '9999', '{head}', None, None\n\n\n"
        "def upgrade():\n"
        "    with op.batch_alter_table('decisions', recreate='always') as batch:\n"
        "        batch.add_column(sa.Column('note', sa.String(), nullable=True))\n"
    )
    with Store.from_url(url) as s:
        d, _ = s.record_decision(dict(
            request_id="r", body_hash="h", client="a", customer_id="c", reason="other", request={}, features={},
            scores={}, offer_id="pause_1m", offer={}, propensity=1.0, reason_codes=[], policy_version="p",
            catalog_version="c", fallback=False, nps_segment="none", latency_ms=1.0))
        s.record_outcome(d["decision_id"], "declined", datetime.now(UTC))
    monkeypatch.setattr(store.db, "MIGRATIONS", migrations)
    assert upgrade(url) == "9999"
    with Store.from_url(url) as s:
        assert [o["kind"] for o in s.get_decision(d["decision_id"])["outcomes"]] == ["declined"]
    engine = make_engine(url)
    try:
        with engine.connect() as conn:  # new connections enforce foreign keys again
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        engine.dispose()


def test_0003_keeps_earlier_snapshots_and_marks_them_as_loaded_without_customers(db_url):
    """A store migrated before the customers table: its snapshot stays readable, with `customers` null (so
    `load-features --if-stale` loads it again); the revision can be undone."""
    from alembic import command
    from sqlalchemy import text

    upgrade(db_url, "0002")
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO feature_snapshots (as_of, feature_version, model_version, source, rows, "
                              "loaded_at) VALUES (:t, 'f1', 'm1', 'var/data/demo', 3, :t)"),
                         {"t": datetime(2026, 11, 1, tzinfo=UTC)})
    finally:
        engine.dispose()
    assert upgrade(db_url, "0003") == "0003"
    with Store.from_url(db_url) as s:
        latest = s.latest_snapshot()
        assert (latest["rows"], latest["source"], latest["customers"]) == (3, "var/data/demo", None)
        with s.transaction() as conn:  # not customer_data(): that reads tables of later revisions too
            assert conn.execute(text("SELECT count(*) FROM customers")).scalar() == 0
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            command.downgrade(store.db.alembic_config(conn), "0002")
        with engine.connect() as conn:
            assert "customers" not in {c["name"] for c in sa_inspect(conn).get_columns("feature_snapshots")}
            assert not sa_inspect(conn).has_table("customers")
            assert conn.execute(text("SELECT rows FROM feature_snapshots")).scalar() == 3
    finally:
        engine.dispose()


def _decision_row(request_id: str, client: str) -> dict:
    return dict(request_id=request_id, body_hash="h", client=client, customer_id="c", reason="other", request={},
                features={}, scores={}, offer_id="pause_1m", offer={}, propensity=1.0, reason_codes=[],
                policy_version="p", catalog_version="c", fallback=False, nps_segment="none", latency_ms=1.0)


def _downgrade(engine, revision: str) -> None:
    """`alembic downgrade` as store.db.upgrade runs migrations: on SQLite with foreign keys off while batch
    operations rebuild a referenced table."""
    from alembic import command

    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            conn.connection.dbapi_connection.execute("PRAGMA foreign_keys=OFF")  # outside a transaction
        with conn.begin():
            command.downgrade(store.db.alembic_config(conn), revision)
    engine.dispose()  # the connection with foreign keys off is not reused


def test_0004_scopes_request_ids_per_client_and_refuses_a_downgrade_that_would_lose_decisions(db_url, monkeypatch):
    """Upgrading keeps every decision and its outcomes, after which two clients may use one request_id (and
    one client still only once); downgrading while two clients share a request_id refuses, naming it, and
    changes nothing; without such a pair it restores the global unique request_id."""
    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError

    upgrade(db_url, "0003")
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO decisions (decision_id, request_id, body_hash, client, customer_id, created_at, reason, "
                "request, features, scores, offer_id, offer, propensity, reason_codes, policy_version, "
                "catalog_version, fallback, nps_segment, latency_ms) VALUES ('d-old', 'r-1', 'h', 'a', 'c', :t, "
                "'other', '{}', '{}', '{}', 'pause_1m', '{}', 1.0, '[]', 'p', 'c', false, 'none', 1.0)"),
                {"t": datetime(2026, 11, 1, tzinfo=UTC)})
            conn.execute(text("INSERT INTO outcomes (decision_id, kind, occurred_at, recorded_at) "
                              "VALUES ('d-old', 'declined', :t, :t)"), {"t": datetime(2026, 11, 1, tzinfo=UTC)})
    finally:
        engine.dispose()
    assert upgrade(db_url, "0004") == "0004"
    # Today's record_decision also queues webhook events (tables of 0007, which this schema predates).
    monkeypatch.setattr(Store, "enqueue", staticmethod(lambda *args, **kwargs: 0))
    with Store.from_url(db_url) as s:
        old = s.get_decision_by_request("a", "r-1")
        assert old["decision_id"] == "d-old" and [o["kind"] for o in old["outcomes"]] == ["declined"]
        other, created = s.record_decision(_decision_row("r-1", "b"))
        assert created and other["decision_id"] != "d-old"
        assert s.record_decision(_decision_row("r-1", "a"))[0]["decision_id"] == "d-old"
    engine = make_engine(db_url)
    try:
        with pytest.raises(RuntimeError, match="cannot downgrade below 0004.*'r-1'"):
            _downgrade(engine, "0003")
        assert current_revision(db_url) == "0004"
        with engine.begin() as conn:
            assert conn.execute(text("SELECT count(*) FROM decisions")).scalar() == 2  # nothing was lost
            conn.execute(text("DELETE FROM decisions WHERE client = 'b'"))
        _downgrade(engine, "0003")
        assert current_revision(db_url) == "0003"
        with engine.begin() as conn:
            assert conn.execute(text("SELECT count(*) FROM outcomes WHERE decision_id = 'd-old'")).scalar() == 1
        with pytest.raises(IntegrityError), engine.begin() as conn:  # request_id is globally unique again
            conn.execute(text(
                "INSERT INTO decisions (decision_id, request_id, body_hash, client, customer_id, created_at, reason, "
                "request, features, scores, offer_id, offer, propensity, reason_codes, policy_version, "
                "catalog_version, fallback, nps_segment, latency_ms) VALUES ('d-new', 'r-1', 'h', 'b', 'c', :t, "
                "'other', '{}', '{}', '{}', 'pause_1m', '{}', 1.0, '[]', 'p', 'c', false, 'none', 1.0)"),
                {"t": datetime(2026, 11, 1, tzinfo=UTC)})
    finally:
        engine.dispose()
