"""Persistence adapter: the service's state (API clients, decisions, outcomes, events, feature snapshots) in
SQLite or PostgreSQL through SQLAlchemy, with Alembic migrations and an export to the training-data contract.

The domain core (retention/) never imports this package; the Flask service and the CLI do.
"""

from store.db import make_engine, upgrade
from store.errors import (
    Conflict,
    IdempotencyConflict,
    InvalidRecord,
    NotFound,
    SchemaMissing,
    StoreError,
    StoreUnavailable,
)
from store.repository import Store, body_hash

__all__ = [
    "Conflict",
    "IdempotencyConflict",
    "InvalidRecord",
    "NotFound",
    "SchemaMissing",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "body_hash",
    "make_engine",
    "upgrade",
]
