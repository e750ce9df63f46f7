"""The soak script's CI variant (bench/soak.py; `make soak` runs it for 10 minutes): mixed decisions,
outcomes and NPS events, open loop, against gunicorn on SQLite and PostgreSQL; no 5xx, every acknowledged
write stored exactly once, worker memory flat."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from support import KEYS, seed_clients, serve

from bench.soak import drive, verify

pytestmark = [pytest.mark.slow, pytest.mark.serial]


def test_a_short_soak_keeps_every_acknowledged_write(migrated_url, models_root, tmp_path):
    seed_clients(migrated_url)
    customers = [(f"soak-{i}", "plus_monthly", "14.95", "monthly", "web") for i in range(300)]
    with serve(migrated_url, models_root, tmp_path) as srv:
        def rss() -> list[float]:
            return [int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1)) / 1024
                    for pid in srv.workers()]

        port = int(srv.base.rsplit(":", 1)[1])
        result = drive("127.0.0.1", port, KEYS["admin"], customers, rate=100, seconds=12, sample_rss=rss)
    verdict = verify(migrated_url, result)
    print(f"soak: {result['status']} {verdict}")
    assert result["requests"] == 1200 and not result["connection_failures"]
    assert verdict["decisions_acknowledged"] > 500 and verdict["outcomes_acknowledged"] > 200
    assert verdict["events_acknowledged"] > 100
    assert verdict["ok"], verdict
