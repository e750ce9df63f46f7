"""The outage spool holds customer data only while it must: the file is private to the service user, a
replayed row leaves no copy in the file or its WAL, and a customer's erasure reaches rows still waiting in it.

The outage is real: the runtime's database becomes unreachable (as in test_fail_open), decisions are spooled
by the service itself, and the service's own replay thread drains them once the database is back."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from support import decision_body, headers, make_app, post, seed_clients, wait_until

from store import Store

EMAIL = "spool.privacy.probe@example.com"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _raw(path: Path) -> bytes:
    """The spool's bytes on disk: the database file and whatever its WAL holds."""
    return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())


def _outage(app, backend: str, tmp_path: Path, warm_up: str = "warm-up"):
    """The app's test client, after one decision with the store up (the key is verified and cached), with
    its store then gone."""
    client = app.test_client()
    assert post(client, "/v1/decisions", decision_body(request_id=warm_up)).status_code == 201
    rt = app.extensions["retention"]
    rt.close()
    rt.database_url = (f"sqlite:///{tmp_path}/missing-dir/x.db" if backend == "sqlite"
                       else "postgresql+psycopg://postgres@127.0.0.1:1/test?connect_timeout=1")
    return client


def _spool_decision(client, request_id: str, customer_id: str, text: str | None) -> dict:
    r = post(client, "/v1/decisions", decision_body(request_id=request_id, customer_id=customer_id,
                                                    reason="temporary", reason_text=text))
    assert r.status_code == 201 and "spooled" in r.get_json()["reason_codes"], r.get_json()
    return r.get_json()


@pytest.fixture
def spool_path(tmp_path: Path) -> Path:
    return tmp_path / "spool" / "spool.db"


@pytest.fixture
def apps(migrated_url, models_root):
    seed_clients(migrated_url)
    made = []

    def build(spool: Path):
        app = make_app(migrated_url, models_root, SPOOL_PATH=str(spool))
        made.append(app)
        return app

    yield build
    for app in made:
        app.extensions["retention"].close()


@pytest.mark.slow
def test_a_drained_spool_keeps_no_customer_data_and_is_private(apps, spool_path, backend, migrated_url,
                                                                 tmp_path):
    app = apps(spool_path)
    client = _outage(app, backend, tmp_path)
    spooled = [_spool_decision(client, f"spool-{i}", f"cust-spool-{i % 7}", f"{EMAIL} - call me back, #{i}")
               for i in range(120)]
    for d in spooled[::3]:
        assert post(client, f"/v1/decisions/{d['decision_id']}/outcome", {"outcome": "shown"}).status_code == 202
    files = [spool_path, Path(f"{spool_path}-wal"), Path(f"{spool_path}-shm")]
    assert all(p.exists() for p in files)
    assert {p.name: _mode(p) for p in files} == {p.name: 0o600 for p in files}, "owner only, from the start"
    assert EMAIL.encode() in _raw(spool_path)  # the probe: the spool does hold the text while it waits

    rt = app.extensions["retention"]
    rt.close()
    rt.database_url = migrated_url  # the database is back: the service's replay thread drains the spool
    wal = Path(f"{spool_path}-wal")
    assert wait_until(lambda: rt.spool.depth() == 0 and (not wal.exists() or wal.stat().st_size == 0)), \
        f"not drained: {rt.spool.depth()} rows, WAL {wal.stat().st_size} bytes"
    with Store.from_url(migrated_url) as store:
        stored = [store.get_decision(d["decision_id"]) for d in spooled]
    assert all(s is not None and EMAIL in s["reason_text"] for s in stored), "every decision reached the store"
    raw = _raw(spool_path)
    assert raw.count(EMAIL.encode()) == 0, f"{raw.count(EMAIL.encode())} copies of the e-mail left in the spool"
    assert b"cust-spool-" not in raw and b"call me back" not in raw
    assert _mode(spool_path) == 0o600


@pytest.mark.slow
def test_erasure_removes_the_customers_rows_still_waiting_in_the_spool(apps, spool_path, backend, migrated_url,
                                                                       tmp_path):
    # The outage: one service process spools, its database never comes back.
    during = apps(spool_path)
    client = _outage(during, backend, tmp_path)
    erased = [_spool_decision(client, f"erase-{i}", "cust-erase-me", f"write to {EMAIL}") for i in range(3)]
    assert post(client, f"/v1/decisions/{erased[0]['decision_id']}/outcome",
                {"outcome": "shown"}).status_code == 202
    kept = _spool_decision(client, "keep-1", "cust-keep-me", "no personal data here")
    # The service restarts on the same host (the spool survives it) with the database back; the erasure
    # request comes before its replay thread's first pass.
    after = apps(spool_path)
    api = after.test_client()
    gone = api.delete("/v1/customers/cust-erase-me/data", headers=headers("admin"))
    assert gone.status_code == 200, gone.get_json()
    body = gone.get_json()
    assert body["spooled_decisions"] == 3 and body["spooled_outcomes"] == 1 and body["decisions"] == 0
    spool = after.extensions["retention"].spool
    assert wait_until(lambda: spool.depth() == 0), "the other customer's row is replayed"
    with Store.from_url(migrated_url) as store:
        assert store.customer_data("cust-erase-me")["decisions"] == [], "an erased spooled decision was stored"
        assert [d["decision_id"] for d in store.customer_data("cust-keep-me")["decisions"]] == [kept["decision_id"]]
    wal = Path(f"{spool_path}-wal")
    assert wait_until(lambda: not wal.exists() or wal.stat().st_size == 0)
    assert EMAIL.encode() not in _raw(spool_path)
    again = api.delete("/v1/customers/cust-erase-me/data", headers=headers("admin")).get_json()
    assert again["spooled_decisions"] == 0 and again["decisions"] == 0


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_retry_during_an_outage_that_reaches_another_worker_gets_the_same_decision(apps, spool_path, backend,
                                                                                   migrated_url, tmp_path):
    """Two workers share the host's spool. The second had last seen it empty (it looks at other workers'
    writes at most every `interval` seconds) and made a new decision for the retry: the outage drill's
    "a retry during the outage got another decision"."""
    first, second = apps(spool_path), apps(spool_path)
    two = _outage(second, backend, tmp_path, warm_up="seen-empty")  # with the store up it saw the spool empty
    second.extensions["retention"].spool.interval = 60.0  # and that "nothing waits" stays fresh all test long
    one = _outage(first, backend, tmp_path, warm_up="warm-first")
    answered = _spool_decision(one, "retry-1", "cust-retry", None)
    retried = post(two, "/v1/decisions", decision_body(request_id="retry-1", customer_id="cust-retry",
                                                       reason="temporary"))
    assert retried.status_code == 200, retried.get_json()
    assert retried.get_json()["decision_id"] == answered["decision_id"]
