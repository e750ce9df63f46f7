"""A silent store, for real: PostgreSQL behind a TCP proxy that keeps every connection open but forwards
nothing (a network partition, not a refusal), while gunicorn serves. Nothing tells the service the store is
gone, so it must find out by waiting at most a bounded time: decisions are still answered at once (without
history, spooled), outcomes are acknowledged and spooled, /healthz stays up and /readyz says the store is
degraded, quickly; once the link is back every acknowledged write is in the store exactly once.
`make outage-drill MODE=blackhole` runs the same for 60 seconds (bench/outage.py)."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url
from support import KEYS, seed_clients, serve

from bench.outage import Proxy, drill, through

pytestmark = [pytest.mark.slow, pytest.mark.serial]


@pytest.mark.parametrize("backend", ["postgres"])  # a partition is a network database's failure
def test_a_silent_store_is_waited_for_briefly_then_spooled_and_replayed_exactly_once(backend, migrated_url,
                                                                                     models_root, tmp_path):
    seed_clients(migrated_url)
    upstream = make_url(migrated_url)
    proxy = Proxy((upstream.host, upstream.port or 5432))
    with serve(through(proxy, migrated_url), models_root, tmp_path) as srv:
        result = drill(srv.base, KEYS["admin"], proxy, migrated_url, seconds=8, rate=20, mode="blackhole",
                       before_seconds=2)
        log = srv.log_path.read_text()
    print(f"partition drill: {result}")
    assert not result["errors"] and result["server_errors"] == 0, result
    # Generous bounds (a shared 2-core machine): the first requests wait for the store a bounded time, the
    # others not at all; bench/outage.py measures the real figures.
    assert result["latency_ms"]["max"] < 2000, result["latency_ms"]
    assert result["outcome_latency_ms"]["max"] < 2000 and result["healthz_latency_ms"]["max"] < 2000
    assert result["decisions_answered"] >= 20 and result["outcomes_spooled"] >= 10
    during = result["readyz_during"]
    assert during["http_status"] == 503 and "store" in during["degraded"] and during["ms"] < 2000, during
    assert during["checks"]["spool"]["waiting"] > 0
    # The link is back: everything acknowledged landed, once, with the ids the clients were given.
    assert result["drained_after_seconds"] is not None, result
    assert result["decisions_stored"] == result["decisions_stored_as_answered"] == result["decisions_answered"]
    assert result["outcomes_stored"] == result["outcome_rows"] == result["outcomes_spooled"]
    assert result["retry_after_recovery_same"]
    assert "WORKER TIMEOUT" not in log, "no worker was killed for hanging on the store"
