"""The world family of training.simulator.worlds differs in structure, as docs/worlds.md says: each world's
data shows the difference it claims, and each keeps its truth beside the data. Small populations: these
check what the worlds are, `make bench-policy` measures what the models do on them."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from cli import main
from training.simulator.generate import SimConfig, simulate_dataset
from training.simulator.worlds import POLICY_WORLDS, WORLDS

OFFERS = ("none", "pause_1m", "pause_2m", "pause_3m", "discount_30_3m", "discount_50_2m", "downgrade_lite",
          "credit_1", "followup", "reward_loyalty", "referral_both")


@pytest.fixture(scope="module")
def worlds(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("worlds")
    out = {}
    for name, world in WORLDS.items():
        out[name] = root / name
        simulate_dataset(SimConfig(customers=min(world.customers, 3_000), seed=5, world=world), out[name])
    return out


def _one(sql: str) -> float:
    return duckdb.sql(sql).fetchall()[0][0]


def _truth(path: Path) -> str:
    return f"'{path}/_truth/requests.parquet'"


@pytest.mark.slow
def test_every_world_writes_its_truth_and_names_itself(worlds):
    assert len(POLICY_WORLDS) >= 6
    for name, path in worlds.items():
        manifest = json.loads((path / "dataset.json").read_text())
        assert manifest["world"] == name and manifest["horizon_months"] == WORLDS[name].horizon_months
        flows = _one(f"SELECT count(*) FROM '{path}/cancel_requests.parquet'")
        assert flows > 100 and _one(f"SELECT count(*) FROM {_truth(path)}") == flows, name


@pytest.mark.slow
def test_where_nothing_helps_no_offer_saves_more_than_none(worlds):
    path = worlds["nothing-helps"]
    for offer in OFFERS[1:]:
        assert _one(f"SELECT max(p_{offer} - p_none) FROM {_truth(path)}") < 0, offer
    # while in the reference world most offers help someone
    helped = [o for o in OFFERS[1:] if _one(f"SELECT max(p_{o} - p_none) FROM {_truth(worlds['reference'])}") > 0.05]
    assert len(helped) >= 6


@pytest.mark.slow
def test_the_churn_only_world_has_no_offer_history_usage_or_nps(worlds):
    path = worlds["churn-only"]
    assert _one(f"SELECT count(*) FROM '{path}/cancel_requests.parquet' WHERE offer_id IS NOT NULL") == 0
    assert _one(f"SELECT count(*) FROM '{path}/usage.parquet'") == 0
    assert _one(f"SELECT count(*) FROM '{path}/nps_responses.parquet'") == 0


@pytest.mark.slow
def test_the_populations_differ_as_documented(worlds):
    def share(path, table, where):
        return _one(f"SELECT avg(CASE WHEN {where} THEN 1 ELSE 0 END) FROM '{path}/{table}.parquet'")

    ref = worlds["reference"]
    assert share(worlds["app-store"], "customers", "billing_channel IN ('ios', 'android')") > 0.55
    assert share(ref, "customers", "billing_channel IN ('ios', 'android')") < 0.4
    assert share(worlds["stay-anyway-annual"], "customers", "billing_period = 'annual'") > 0.55
    # usage recorded for about half the customers, NPS answered far less often
    def with_usage(path):
        return _one(f"SELECT count(DISTINCT customer_id) FROM '{path}/usage.parquet'") / \
            _one(f"SELECT count(*) FROM '{path}/customers.parquet'")
    assert 0.35 < with_usage(worlds["sparse-noisy"]) < 0.65 < with_usage(ref)
    nps = {n: _one(f"SELECT count(*) FROM '{worlds[n]}/nps_responses.parquet'") /
           _one(f"SELECT count(*) FROM '{worlds[n]}/customers.parquet'") for n in ("reference", "sparse-noisy")}
    assert nps["sparse-noisy"] < 0.4 * nps["reference"]
    # most customers of stay-anyway-annual stay without an offer
    assert _one(f"SELECT avg(p_none) FROM {_truth(worlds['stay-anyway-annual'])}") > \
        _one(f"SELECT avg(p_none) FROM {_truth(ref)}") + 0.15


@pytest.mark.slow
def test_a_skewed_history_logs_its_propensities(worlds):
    path = worlds["tiny"]  # discounts three times as often as the other offers, no offer twice
    rows = duckdb.sql(f"SELECT offer_id, propensity FROM '{path}/cancel_requests.parquet'").fetchall()
    discount = [p for o, p in rows if o and o.startswith("discount")]
    pause = [p for o, p in rows if o and o.startswith("pause")]
    assert discount and pause and sum(discount) / len(discount) > 2 * sum(pause) / len(pause)


@pytest.mark.slow
def test_the_best_offer_depends_on_the_reason_in_one_family_and_on_the_customer_in_the_other(worlds):
    """Reason-driven worlds: within a reason the best offer is mostly the same; in latent-type worlds the
    reason says far less."""
    def purity(path):
        best = " , ".join(f"p_{o}" for o in OFFERS)
        return _one(f"""
            WITH t AS (SELECT reason, list_position([{best}], greatest({best})) AS best FROM {_truth(path)}),
                 c AS (SELECT reason, best, count(*) AS n FROM t GROUP BY ALL),
                 m AS (SELECT reason, max(n) AS top, sum(n) AS total FROM c GROUP BY ALL)
            SELECT sum(top) / sum(total) FROM m""")
    assert purity(worlds["reference"]) > purity(worlds["types"]) + 0.1


def test_simulate_names_the_worlds_and_refuses_an_unknown_one(tmp_path):
    result = CliRunner().invoke(main, ["simulate", "--world", "atlantis", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "atlantis" in result.output and "reference" in result.output and "Traceback" not in result.output
