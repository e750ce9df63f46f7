"""A store outage, for real: PostgreSQL becomes unreachable behind a TCP proxy while gunicorn serves. Decisions
keep being answered fast, decisions and outcomes are spooled on local disk, /readyz says degraded, and once
the database is back every spooled write is in the store exactly once, with the ids the clients were given.
`make outage-drill` runs the same for 60 seconds (bench/outage.py)."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url
from support import KEYS, seed_clients, serve

from bench.outage import Proxy, drill, through

pytestmark = [pytest.mark.slow, pytest.mark.serial]


@pytest.mark.parametrize("backend", ["postgres"])  # "unreachable" is a network database's failure
def test_a_store_outage_is_spooled_and_replayed_exactly_once(backend, migrated_url, models_root, tmp_path):
    seed_clients(migrated_url)
    upstream = make_url(migrated_url)
    proxy = Proxy((upstream.host, upstream.port or 5432))
    with serve(through(proxy, migrated_url), models_root, tmp_path, RETENTION_STORE_WAIT_MS="500") as srv:
        result = drill(srv.base, KEYS["admin"], proxy, migrated_url, seconds=5, rate=20)
    print(f"outage drill: {result}")
    assert result["ok"], result
    assert result["decisions_answered"] >= 50 and result["outcomes_spooled"] >= 25
    assert result["latency_ms"]["p99"] < 150, "answers within the scoring budget while the store is down"
    during = result["readyz_during"]
    assert during["http_status"] == 200 and during["status"] == "degraded" and "store" in during["degraded"] \
        and during["checks"]["spool"]["waiting"] > 0
