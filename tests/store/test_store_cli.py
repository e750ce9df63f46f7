"""The store's commands on the `retention` command line, on SQLite and PostgreSQL: exit code 2 with an
`error:` line for bad input or an unreachable database, and a feature snapshot equal to compute_features."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from cli import main
from retention.artifacts import read_metadata
from retention.contract import CUSTOMERS
from retention.features import FeatureSpec, compute_features
from retention.offers import load_catalog
from store.db import head_revision
from store.repository import Store
from training.dataset import open_dataset
from training.validation import validate_dataset


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_db_upgrade_and_current(db_url):
    result = _run("db", "current", "--database-url", db_url)
    head = head_revision()  # the newest migration, whichever it is
    assert result.exit_code == 0 and f"at revision none (head is {head}" in result.output
    result = _run("db", "upgrade", "--database-url", db_url)
    assert result.exit_code == 0, result.output
    assert f"at revision {head} (head)" in result.output
    assert f"at revision {head} (head)" in _run("db", "current", "--database-url", db_url).output


def test_keys_create_list_and_revoke(migrated_url):
    result = _run("keys", "create", "--name", "checkout", "--role", "decide", "--database-url", migrated_url)
    assert result.exit_code == 0, result.output
    key = next(line.split(": ", 1)[1] for line in result.output.splitlines() if line.startswith("key: "))
    result = _run("keys", "create", "--name", "ingest", "--role", "events", "--sign", "--database-url", migrated_url)
    assert "signing secret: " in result.output
    with Store.from_url(migrated_url) as store:
        assert store.authenticate(key)["name"] == "checkout"
    listed = _run("keys", "list", "--database-url", migrated_url).output
    assert "checkout" in listed and "ingest" in listed and "signed" in listed and key not in listed
    result = _run("keys", "revoke", "--name", "checkout", "--database-url", migrated_url)
    assert result.exit_code == 0 and "revoked" in result.output
    assert "revoked" in _run("keys", "list", "--database-url", migrated_url).output
    with Store.from_url(migrated_url) as store:
        assert store.authenticate(key) is None


def test_a_fixed_dev_key_can_be_created_repeatedly(migrated_url):
    args = ("keys", "create", "--name", "demo", "--role", "decide", "--key", "rk_demo_0123456789abcdef",
            "--database-url", migrated_url)
    assert _run(*args).exit_code == 0
    again = _run(*args)
    assert again.exit_code == 0 and "key: rk_demo_0123456789abcdef" in again.output


@pytest.mark.parametrize("args, message", [
    (("keys", "revoke", "--name", "nobody"), "error: no client named 'nobody'"),
    (("keys", "create", "--name", "x", "--role", "decide", "--key", "weak"), "error: a key must be at least 16 printable characters"),
    (("load-features", "--as-of", "2026-01-01"), "error: give exactly one of --data DIR or --from-store"),
])
def test_bad_input_exits_2_with_an_error_line(migrated_url, args, message):
    result = _run(*args, "--database-url", migrated_url)
    assert result.exit_code == 2 and message in result.output


@pytest.mark.parametrize("url, message", [
    ("postgresql+psycopg://postgres@127.0.0.1:1/test?connect_timeout=2", "unavailable"),
    ("no-such-scheme://x", "error: "),
])
def test_an_unreachable_database_exits_2(url, message):
    for args in (("keys", "list"), ("db", "upgrade"), ("db", "current")):
        result = _run(*args, "--database-url", url)
        assert result.exit_code == 2 and message in result.output, result.output


def test_an_unmigrated_database_exits_2_naming_the_fix(db_url):
    result = _run("keys", "list", "--database-url", db_url)
    assert result.exit_code == 2 and "run `retention db upgrade`" in result.output


def test_export_writes_a_valid_data_set_once(migrated_url, tmp_path):
    now = datetime.now(UTC) - timedelta(hours=1)
    with Store.from_url(migrated_url) as store:
        store.record_events([
            {"event_id": "c", "type": "customer", "customer_id": "c1", "occurred_at": now,
             "payload": {"signup_at": "2025-01-01T00:00:00Z", "plan_id": "plus_monthly", "billing_period": "monthly",
                         "price": 9.99, "currency": "USD", "billing_channel": "web", "country": "US"}},
            {"event_id": "n", "type": "nps", "customer_id": "c1", "occurred_at": now, "payload": {"score": 10}}])
    out = tmp_path / "out"
    result = _run("export", "--out", out, "--format", "csv", "--since", "2020-01-01", "--database-url", migrated_url)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["rows"]["nps_responses"] == 1
    assert validate_dataset(out).errors == []
    again = _run("export", "--out", out, "--database-url", migrated_url)
    assert again.exit_code == 2 and "not an empty directory" in again.output


def _active_at(sim_dir, t: datetime) -> pd.Series:
    """Customers subscribed at t, computed here from the files (independently of the command)."""
    customers = pd.read_parquet(sim_dir / "customers.parquet")
    ends = pd.read_parquet(sim_dir / "cancel_requests.parquet").groupby("customer_id")["ended_at"].min()
    t = pd.Timestamp(t.replace(tzinfo=None))
    ended = customers["customer_id"].map(ends).le(t)
    return customers.loc[(customers["signup_at"] < t) & ~ended, "customer_id"]


def _plain(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


@pytest.mark.slow
def test_load_features_stores_compute_features_of_every_active_customer(sim_dir, trained, migrated_url):
    window_end = datetime.fromisoformat(json.loads((sim_dir / "dataset.json").read_text())["window_end"])
    as_of = window_end - timedelta(days=5)
    result = _run("load-features", "--data", sim_dir, "--as-of", as_of.isoformat(), "--models", trained.parent,
                  "--model", trained.name, "--batch-size", 3000, "--database-url", migrated_url)
    assert result.exit_code == 0, result.output
    active = _active_at(sim_dir, as_of)
    meta = read_metadata(trained)
    spec = FeatureSpec.from_dict(meta["feature_spec"])
    sample = active.sample(25, random_state=1).sort_values().to_numpy()
    points = pd.DataFrame({"point_id": np.arange(len(sample)), "customer_id": sample,
                           "as_of": pd.Timestamp(as_of.replace(tzinfo=None))})
    offer_types = {o.id: o.type for o in load_catalog().offers}
    expected = compute_features(open_dataset(sim_dir), points, spec, offer_types).set_index("customer_id")
    with Store.from_url(migrated_url) as store:
        snapshot = store.latest_snapshot()
        assert snapshot["rows"] == len(active) > 1000
        assert (snapshot["as_of"], snapshot["model_version"], snapshot["source"]) == (as_of, meta["version"], str(sim_dir))
        for customer_id in sample:
            stored = store.get_customer_features(customer_id)
            assert stored["feature_version"] == meta["feature_version"]
            assert stored["values"] == {n: _plain(expected.at[customer_id, n]) for n in spec.names}
        assert store.get_customer_features("not-a-customer") is None
        # The data set's rows of every customer, cancelled before as_of or not, with the values features lack.
        customers = pd.read_parquet(sim_dir / "customers.parquet").set_index("customer_id")
        assert snapshot["customers"] == len(customers) > len(active)
        gone = sorted(set(customers.index) - set(active))[0]
        assert store.get_customer_features(gone) is None
        row = store.customer_data(gone)["customer"]
        expected_row = customers.loc[gone]
        assert (row["signup_at"], row["currency"], row["country"]) == (
            expected_row["signup_at"].to_pydatetime().replace(tzinfo=UTC), expected_row["currency"],
            expected_row["country"])
        assert row["attributes"] == {a: _plain(expected_row[a]) for a in customers.columns
                                     if a not in CUSTOMERS.column_names}
    again = _run("load-features", "--data", sim_dir, "--as-of", as_of.isoformat(), "--models", trained.parent,
                 "--model", trained.name, "--if-stale", "--database-url", migrated_url)
    assert again.exit_code == 0 and "is already loaded" in again.output, again.output
    with Store.from_url(migrated_url) as store:  # the same snapshot as a load before the customers table left it
        store.replace_feature_snapshot([], as_of, meta["feature_version"], meta["version"], source=str(sim_dir))
    again = _run("load-features", "--data", sim_dir, "--as-of", as_of.isoformat(), "--models", trained.parent,
                 "--model", trained.name, "--if-stale", "--database-url", migrated_url)
    assert again.exit_code == 0, again.output
    assert f"the data set's rows of all {len(customers):,} customers" in again.output


@pytest.mark.slow
def test_load_features_from_the_store_uses_posted_events(trained, migrated_url):
    now = datetime.now(UTC).replace(microsecond=0)
    profile = {"signup_at": (now - timedelta(days=300)).isoformat(), "plan_id": "plus_monthly",
               "billing_period": "monthly", "price": 9.99, "currency": "USD", "billing_channel": "web",
               "country": "US", "age_band": "25-34", "household_size": 2}
    events = [{"event_id": f"cust-{c}", "type": "customer", "customer_id": c, "occurred_at": now - timedelta(days=300),
               "payload": profile} for c in ("c1", "c2")]
    events += [{"event_id": f"use-{d}", "type": "usage", "customer_id": "c1", "occurred_at": now - timedelta(days=d),
                "payload": {"day": (now - timedelta(days=d)).date().isoformat(), "metric": "listening_minutes",
                            "value": 10.0 * d}} for d in range(1, 11)]
    events += [{"event_id": f"nps-{i}", "type": "nps", "customer_id": "c1", "occurred_at": now - timedelta(days=20 - i),
                "payload": {"score": score}} for i, score in enumerate((9, 4))]
    with Store.from_url(migrated_url) as store:
        store.record_events(events)
    result = _run("load-features", "--from-store", "--as-of", now.isoformat(), "--models", trained.parent,
                  "--database-url", migrated_url)
    assert result.exit_code == 0, result.output
    with Store.from_url(migrated_url) as store:
        assert store.latest_snapshot()["rows"] == 2 and store.latest_snapshot()["source"] == "store"
        c1 = store.get_customer_features("c1")["values"]
        c2 = store.get_customer_features("c2")["values"]
    # Whole days before the day of as_of: days 1-7 ago in the 7-day window.
    assert c1["listening_minutes_7d"] == sum(10.0 * d for d in range(1, 8))
    assert (c1["nps_last"], c1["nps_prev"], c1["nps_segment"]) == (4.0, 9.0, "detractor")
    assert c1["attr_age_band"] == "25-34" and c1["attr_household_size"] == 2.0
    assert (c2["nps_count"], c2["nps_segment"], c2["listening_minutes_7d"]) == (0.0, "none", 0.0)
