"""Features as of T: no leakage from rows at or after T, one definition for training and scoring."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from retention import features
from retention.features import FEATURE_VERSION, FeatureSpec, compute_features, discover_spec
from retention.offers import load_catalog
from training.dataset import open_dataset, resolve_window_end
from training.train import response_rows

OFFER_TYPES = {o.id: o.type for o in load_catalog().offers}
AS_OF = pd.Timestamp("2026-06-15 12:00:00")


def _points(con, as_of=AS_OF, n=400) -> pd.DataFrame:
    ids = con.execute("SELECT customer_id FROM customers ORDER BY customer_id LIMIT ?", [n]).df()["customer_id"]
    return pd.DataFrame({"point_id": np.arange(len(ids)), "customer_id": ids, "as_of": as_of})


def _features(data_dir: Path, spec: FeatureSpec | None = None) -> pd.DataFrame:
    con = open_dataset(data_dir)
    spec = spec or discover_spec(con)
    return compute_features(con, _points(con), spec, OFFER_TYPES)


def _rewrite(data_dir: Path, table: str, change) -> None:
    path = data_dir / f"{table}.parquet"
    df = pq.read_table(path).to_pandas()
    df = change(df)
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)


def _with_usage_on(day, value=9999.0):
    """A change adding 5,000 usage rows on `day` (string columns kept plain so the table can be rewritten)."""

    def change(df):
        df = df.astype({"customer_id": str, "metric": str})
        extra = df.head(5000).copy()
        extra["day"] = day
        extra["value"] = value
        return pd.concat([df, extra])

    return change


@pytest.fixture()
def copy_dir(sim_dir, tmp_path) -> Path:
    dst = tmp_path / "data"
    shutil.copytree(sim_dir, dst)
    return dst


@pytest.mark.slow
def test_features_as_of_t_ignore_rows_added_or_changed_after_t(sim_dir, copy_dir):
    before = _features(sim_dir)
    spec = discover_spec(open_dataset(sim_dir))
    later = AS_OF + pd.Timedelta(seconds=1)

    add_usage = _with_usage_on((AS_OF + pd.Timedelta(days=1)).date())
    same_day_usage = _with_usage_on(AS_OF.date())  # the day of T is incomplete at T and must not count either

    def change_late_nps(df):
        df.loc[df["responded_at"] >= AS_OF, "score"] = 0
        extra = df.head(300).copy()
        extra["responded_at"] = later
        extra["score"] = 10
        return pd.concat([df, extra])

    def add_payments(df):
        extra = df.head(3000).copy()
        extra["paid_at"] = later
        extra["amount"] = 1234.0
        return pd.concat([df, extra])

    def add_requests(df):
        extra = df.head(500).copy()
        extra["request_id"] = extra["request_id"] + "-late"
        extra["requested_at"] = AS_OF  # exactly at T: not strictly before, so excluded
        extra["offer_id"] = "discount_50_2m"
        extra["accepted"] = True
        df.loc[df["requested_at"] >= AS_OF, "accepted"] = ~df.loc[df["requested_at"] >= AS_OF, "accepted"]
        return pd.concat([df, extra])

    for table, change in (("usage", add_usage), ("usage", same_day_usage), ("nps_responses", change_late_nps),
                          ("payments", add_payments), ("cancel_requests", add_requests)):
        _rewrite(copy_dir, table, change)
    after = _features(copy_dir, spec)
    pd.testing.assert_frame_equal(before, after)


def test_rows_before_t_do_change_features(sim_dir, copy_dir):
    """The leakage test above could pass vacuously if features ignored the data; they must not."""
    before = _features(sim_dir)

    _rewrite(copy_dir, "usage", _with_usage_on((AS_OF - pd.Timedelta(days=2)).date()))
    after = _features(copy_dir, discover_spec(open_dataset(sim_dir)))
    changed = (before["listening_minutes_7d"] != after["listening_minutes_7d"]).sum()
    assert changed > 0


@pytest.mark.slow
def test_training_rows_equal_features_computed_for_one_customer_at_request_time(sim_dir):
    """Training/serving parity: the vector a training row carries is exactly what scoring that customer alone
    as of the same moment yields (the path batch scoring and the feature snapshot use)."""
    con = open_dataset(sim_dir)
    spec = discover_spec(con)
    catalog = load_catalog()
    rows = response_rows(con, catalog, spec, resolve_window_end(sim_dir, None))
    sample = rows.sample(25, random_state=0)
    for _, row in sample.iterrows():
        single = compute_features(
            con, pd.DataFrame({"point_id": [1], "customer_id": [row["customer_id"]], "as_of": [row["as_of"]]}),
            spec, OFFER_TYPES,
        ).iloc[0]
        for name in spec.names:
            a, b = row[name], single[name]
            assert (a == b) or (pd.isna(a) and pd.isna(b)), f"{row['request_id']} {name}: {a!r} != {b!r}"


def test_a_new_usage_metric_becomes_features_without_code_changes(copy_dir):
    def add_logins(df):
        extra = df.head(2000).copy().astype({"customer_id": str, "metric": str})
        extra["metric"] = "logins"
        extra["value"] = 1.0
        return pd.concat([df.astype({"customer_id": str, "metric": str}), extra])

    _rewrite(copy_dir, "usage", add_logins)
    spec = discover_spec(open_dataset(copy_dir))
    assert "logins" in spec.metrics
    assert {"logins_7d", "logins_30d", "logins_90d", "logins_trend"} <= set(spec.numeric)


def test_extra_customer_columns_are_attributes_unless_excluded(sim_dir):
    con = open_dataset(sim_dir)
    spec = discover_spec(con)
    assert spec.numeric_attributes == ("household_size",)
    assert set(spec.categorical_attributes) == {"age_band", "acquisition"}
    assert "age_band" not in discover_spec(con, exclude_attributes=("age_band",)).categorical_attributes


def test_nps_features_follow_the_segments_and_keep_missing_as_missing(sim_dir):
    df = _features(sim_dir)
    never = df[df["nps_answered"] == 0]
    assert len(never) > len(df) / 2, "most customers never answer"
    assert never["nps_last"].isna().all() and (never["nps_segment"] == "none").all()
    answered = df[df["nps_answered"] == 1]
    expected = np.select([answered["nps_last"] >= 9, answered["nps_last"] >= 7], ["promoter", "passive"], "detractor")
    assert (answered["nps_segment"].to_numpy() == expected).all()


def test_feature_version_is_derived_from_the_definitions(monkeypatch):
    assert FEATURE_VERSION.startswith("f1-")
    original = features._definition_text()
    monkeypatch.setattr(features, "USAGE_WINDOWS", (7, 30, 60))
    assert features._definition_text() != original

