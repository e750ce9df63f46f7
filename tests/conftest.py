"""Shared fixtures: one small simulated data set and one model trained on it, built once per test run;
databases for the store and service tests; and what lets the suite run in parallel (pytest-xdist).

Databases: every test using them runs on SQLite (a WAL file) and on a real PostgreSQL, each on a fresh
database. PostgreSQL must be up (CI guarantees it): if it is unreachable, the postgres tests fail rather than
skip. Isolation on the shared `test` database: each test gets its own schema `t_<random>`, selected through the
URL (`options=-csearch_path=...`, passed to libpq), so the same URL works for engines created in other
processes and for the CLI; the schema is dropped at teardown.

Parallel runs (`make test`, `make test-fast`; see the Makefile): the processes of one run (xdist workers, and
the two phases of `make test`) build the data set and the model once, under a file lock, and share them.
Tests marked `serial` put real load on the machine or measure time: they never run beside another test.
`make test` runs them in a phase of their own after the parallel one; in any other parallel run a lock
makes each of them wait for the running tests and keeps new ones from starting until it is done.
"""

# ruff: noqa: E402  (the thread limit below must be set before scikit-learn loads its OpenMP runtime)
from __future__ import annotations

import os

# One OpenMP thread for scikit-learn's histogram trees: the tests predict small batches, where threads cost
# more than they give, and an xdist worker already has a core of its own. With a thread per core in each worker
# (or beside any other busy process) OpenMP's spinning threads made the compiled-scorer tests ~10x slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import fcntl
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner
from filelock import FileLock
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from store.db import upgrade
from store.repository import Store
from training.simulator.generate import SimConfig, simulate_dataset

SMALL_CUSTOMERS = 10_000
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BACKENDS = ("sqlite", "postgres")
# A folder the processes of one run share (the Makefile sets it for the phases of `make test`); unset, the
# xdist workers of one run share their parent's temporary folder, and a lone process shares nothing.
SHARED_ENV = "RETENTION_TEST_SHARED"


# ------------------------------------------------------------------------------------- running in parallel


def shared_dir(config: pytest.Config) -> Path | None:
    """The folder the processes of this test run share, or None when this process runs alone."""
    if os.environ.get(SHARED_ENV):
        shared = Path(os.environ[SHARED_ENV])
    elif hasattr(config, "workerinput"):  # an xdist worker: its basetemp is <the run's basetemp>/popen-gwN
        shared = Path(config.getoption("basetemp")).parent
    else:
        return None
    shared.mkdir(parents=True, exist_ok=True)
    return shared


def built_once(config: pytest.Config, tmp_path_factory, name: str, build: Callable[[Path], Path]) -> Path:
    """`build(folder)` (which returns the path it made) run once per test run: in a lone process into a fresh
    temporary folder; with several processes by the first that asks, under a file lock, while the others
    wait and then reuse it (pytest-xdist's recipe "Making session-scoped fixtures execute only once")."""
    shared = shared_dir(config)
    if shared is None:
        return build(tmp_path_factory.mktemp(name))
    folder, done = shared / name, shared / f"{name}.done"
    with FileLock(shared / f"{name}.lock"):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # left half-built by a process that failed
            folder.mkdir()
            done.write_text(str(build(folder).relative_to(folder)))
    return folder / done.read_text()


@pytest.hookimpl(trylast=True)  # after pytest has grouped the tests by their fixtures' parameters
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A stable sort (each module keeps its order): the tests of an `xdist_group` first, then the others, then
    the serial ones. Under `--dist worksteal` the first worker starts with the groups, and a worker steals only
    from the end of another's queue, so a group stays on one worker. A parallel run that includes the serial
    tests reaches them when the parallel work is done rather than pausing it for each."""
    items.sort(key=lambda item: (item.get_closest_marker("serial") is not None,
                                 item.get_closest_marker("xdist_group") is None))


# In the shared folder: the test files that hold serial tests, written by the first phase of `make test` (which
# collects everything) so that the second phase collects only those files (every other one costs it ~8 s).
SERIAL_FILES = "serial-files"
_serial_files: set[str] = set()


def pytest_itemcollected(item: pytest.Item) -> None:
    if item.get_closest_marker("serial") is not None:
        _serial_files.add(item.nodeid.split("::")[0])


def pytest_collection_finish(session: pytest.Session) -> None:
    if os.environ.get(SHARED_ENV) and _serial_files:
        path = Path(os.environ[SHARED_ENV]) / SERIAL_FILES
        partial = path.with_name(f"{path.name}.{os.getpid()}")  # each xdist worker writes the same list
        partial.write_text("\n".join(sorted(_serial_files)) + "\n")
        os.replace(partial, path)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    """In an xdist worker, setup, call and teardown of each test hold the machine lock: shared for a parallel
    test, exclusive for a serial one. A serial test first takes the gate, which every test passes on its way
    in, so no new test starts while it waits for the running ones to finish. (A lone process, such as the
    serial phase of `make test` or a child pytest that a test runs, has nobody to wait for.)"""
    if not hasattr(item.config, "workerinput"):
        return (yield)
    shared = shared_dir(item.config)
    serial = item.get_closest_marker("serial") is not None
    with open(shared / "machine.gate", "a") as gate, open(shared / "machine.lock", "a") as machine:
        fcntl.flock(gate, fcntl.LOCK_EX)
        fcntl.flock(machine, fcntl.LOCK_EX if serial else fcntl.LOCK_SH)
        if not serial:
            fcntl.flock(gate, fcntl.LOCK_UN)
        return (yield)  # closing the files releases the locks


@pytest.fixture
def child_pytest_env(request, tmp_path) -> dict[str, str]:
    """The environment for a child pytest: it reuses this run's data set and model when the run shares them,
    else builds its own in this test's folder; it runs in one process whatever PYTEST_ADDOPTS says."""
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    return {**env, SHARED_ENV: str(shared_dir(request.config) or tmp_path / "shared")}


# ------------------------------------------------------------------------------- data set and model


@pytest.fixture(scope="session")
def sim_dir(request, tmp_path_factory) -> Path:
    def simulate(folder: Path) -> Path:
        simulate_dataset(SimConfig(customers=SMALL_CUSTOMERS, seed=11, chunk_size=5000), folder / "data")
        return folder / "data"

    return built_once(request.config, tmp_path_factory, "sim", simulate)


@pytest.fixture(scope="session")
def trained(request, sim_dir, tmp_path_factory) -> Path:
    """A model version folder trained on the small simulated set by `retention train`, as the data team
    would (so it carries the HTML report the command writes)."""
    def train(models: Path) -> Path:
        # Imported here, not at the top: the xdist controller, which runs no test, need not load everything.
        from cli import main

        result = CliRunner().invoke(main, ["train", "--data", str(sim_dir), "--out", str(models)],
                                    catch_exceptions=False)
        assert result.exit_code == 0, result.output
        (version,) = models.iterdir()
        return version

    return built_once(request.config, tmp_path_factory, "models", train)


@pytest.fixture(scope="session")
def churn_only(request, tmp_path_factory) -> tuple[Path, Path, str]:
    """A churn-only data set as a team without offer history exports it (CSV: customers, payments and cancel
    requests without any offer shown; empty usage and NPS files; no simulator truth), the model folder
    `retention train` made of it, and what the command printed."""
    def build(folder: Path) -> Path:
        from cli import main
        from training.simulator.worlds import WORLDS

        data = folder / "data"
        simulate_dataset(SimConfig(customers=3_000, seed=3, world=WORLDS["churn-only"], fmt="csv"), data)
        shutil.rmtree(data / "_truth")
        result = CliRunner().invoke(main, ["train", "--data", str(data), "--out", str(folder / "models")],
                                    catch_exceptions=False)
        assert result.exit_code == 0, result.output
        (folder / "train-output.txt").write_text(result.output)
        return folder

    folder = built_once(request.config, tmp_path_factory, "churn-only", build)
    return folder / "data", folder / "models", (folder / "train-output.txt").read_text()


# ------------------------------------------------------------------------------------------ databases


@contextmanager
def database(backend: str, folder: Path) -> Iterator[str]:
    """A URL of an empty database (not migrated), dropped afterwards: a file in `folder`, or a schema."""
    if backend == "sqlite":
        yield f"sqlite:///{folder / 'store.db'}"
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


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def db_url(backend: str, tmp_path: Path):
    """A URL of an empty database (not migrated) for this test only."""
    with database(backend, tmp_path) as url:
        yield url


@pytest.fixture
def migrated_url(db_url: str) -> str:
    """The same database, migrated to the latest schema."""
    upgrade(db_url)
    return db_url


@pytest.fixture(scope="module", params=BACKENDS)
def module_migrated_url(request, tmp_path_factory):
    """A migrated database on each backend shared by the tests of one module: for a server they all talk to,
    where each test writes rows no other test reads (its own request and customer ids)."""
    with database(request.param, tmp_path_factory.mktemp(f"db-{request.param}")) as url:
        upgrade(url)
        yield url


@pytest.fixture
def store(migrated_url: str):
    """A Store on the migrated database, disposed at teardown (no connection left open)."""
    s = Store.from_url(migrated_url)
    yield s
    s.close()
