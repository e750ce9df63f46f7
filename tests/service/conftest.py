"""Service fixtures: an app on a migrated store (SQLite and PostgreSQL, same tests), serving the session's
trained model, with one API client per role."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from support import make_app, seed_clients


@pytest.fixture
def models_root(trained: Path, tmp_path: Path) -> Path:
    """A private copy of the session's model folder (tests may tamper with it)."""
    root = tmp_path / "models"
    shutil.copytree(trained, root / trained.name)
    return root


@pytest.fixture(scope="module")
def module_models_root(trained: Path, tmp_path_factory) -> Path:
    """A copy of the session's model folder for the tests of one module, which must leave it as it is."""
    root = tmp_path_factory.mktemp("models")
    shutil.copytree(trained, root / trained.name)
    return root


@pytest.fixture
def app(migrated_url: str, models_root: Path):
    seed_clients(migrated_url)
    app = make_app(migrated_url, models_root)
    yield app
    app.extensions["retention"].close()


@pytest.fixture
def client(app):
    return app.test_client()
