"""Exceptions of the persistence adapter; the Flask layer maps each to one HTTP status."""

from __future__ import annotations


class StoreError(Exception):
    """Base class of everything the store raises on purpose."""


class StoreUnavailable(StoreError):
    """The database cannot be reached or is busy (503: retry later)."""


class SchemaMissing(StoreUnavailable):
    """The database is reachable but not migrated: run `retention db upgrade`."""


class NotFound(StoreError):
    """The referenced client or decision does not exist (404)."""


class Conflict(StoreError):
    """The request contradicts what is stored, e.g. accepting a declined offer (409)."""


class IdempotencyConflict(Conflict):
    """A request id was reused with a different request body (409/422)."""


class InvalidRecord(StoreError, ValueError):
    """The caller passed a record the store cannot hold (a bug in the caller, not bad luck)."""
