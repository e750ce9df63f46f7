"""Shared fixtures: one small simulated data set and one model trained on it, built once per test session;
and databases for the store and service tests.

Databases: every test using them runs on SQLite (a WAL file) and on a real PostgreSQL, each on a fresh
database. PostgreSQL must be up (CI guarantees it): if it is unreachable, the postgres tests fail rather than
skip. Isolation on the shared `test` database: each test gets its own schema `t_<random>`, selected through the
URL (`options=-csearch_path=...`, passed to libpq), so the same URL works for engines created in other
processes and for the CLI; the schema is dropped at teardown.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from cli import main
from store.db import upgrade
from store.repository import Store
from training.simulator.generate import SimConfig, simulate_dataset

SMALL_CUSTOMERS = 10_000
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BACKENDS = ("sqlite", "postgres")


@pytest.fixture(scope="session")
def sim_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sim") / "data"
    simulate_dataset(SimConfig(customers=SMALL_CUSTOMERS, seed=11, chunk_size=5000), out)
    return out


@pytest.fixture(scope="session")
def trained(sim_dir, tmp_path_factory) -> Path:
    """A model version folder trained on the small simulated set by `retention train`, as the data team
    would (so it carries the HTML report the command writes)."""
    models = tmp_path_factory.mktemp("models")
    result = CliRunner().invoke(main, ["train", "--data", str(sim_dir), "--out", str(models)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (version,) = models.iterdir()
    return version


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def db_url(backend: str, tmp_path: Path):
    """A URL of an empty database (not migrated) for this test only."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, poolclass=NullPool)
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        admin.dispose()


@pytest.fixture
def migrated_url(db_url: str) -> str:
    """The same database, migrated to the latest schema."""
    upgrade(db_url)
    return db_url


@pytest.fixture
def store(migrated_url: str):
    """A Store on the migrated database, disposed at teardown (no connection left open)."""
    s = Store.from_url(migrated_url)
    yield s
    s.close()
