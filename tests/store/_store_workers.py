"""Functions run in child processes by the concurrency tests (spawned children import them by name)."""

from __future__ import annotations

from store.repository import Store


def record_after_barrier(url: str, record: dict, barrier, results) -> None:
    """Wait until every worker is ready, then record the same decision at once; report what came back."""
    store = Store.from_url(url)
    try:
        barrier.wait(timeout=60)
        stored, created = store.record_decision(record)
        results.put((stored["decision_id"], created))
    except Exception as exc:  # reported to the parent, which fails the test with it
        results.put(("error", repr(exc)))
    finally:
        store.close()
