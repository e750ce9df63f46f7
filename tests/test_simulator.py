"""The simulator writes valid contract data whose ground truth has the properties the product relies on."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from retention.contract import REASONS
from retention.offers import load_catalog
from retention.value import expected_net_value
from training.simulator import truth
from training.simulator.generate import SimConfig, simulate_dataset
from training.validation import validate_dataset

CATALOG = load_catalog()


def _truth(sim_dir) -> pd.DataFrame:
    return pq.read_table(sim_dir / "_truth" / "requests.parquet").to_pandas()


def _context(t: pd.DataFrame) -> truth.Context:
    return truth.Context(
        reason=t["reason"].to_numpy(), nps_last=t["nps_last"].to_numpy(), usage_30=t["usage_30"].to_numpy(),
        usage_prev_60=t["usage_prev_60"].to_numpy(), tenure_days=t["tenure_days"].to_numpy(),
        annual=t["annual"].to_numpy(), price=t["price"].to_numpy(), billing_period=t["billing_period"].to_numpy(),
        price_sensitivity=t["price_sensitivity"].to_numpy(), satisfaction=t["satisfaction"].to_numpy(),
        recent_discount=t["recent_discount"].to_numpy(),
    )


def test_simulated_data_satisfies_the_contract(sim_dir):
    report = validate_dataset(sim_dir)
    assert report.ok, report.format()
    assert report.counts["customers"] == 10_000


def test_same_seed_gives_identical_data_and_another_seed_does_not(tmp_path):
    a, b, c = (tmp_path / x for x in "abc")
    for out, seed in ((a, 3), (b, 3), (c, 4)):
        simulate_dataset(SimConfig(customers=300, seed=seed, days=120, chunk_size=150), out)
    for table in ("customers", "usage", "cancel_requests", "nps_responses", "payments"):
        assert pq.read_table(a / f"{table}.parquet").equals(pq.read_table(b / f"{table}.parquet")), table
    assert not pq.read_table(a / "usage.parquet").equals(pq.read_table(c / "usage.parquet"))


def test_csv_output_is_valid_too(tmp_path):
    simulate_dataset(SimConfig(customers=200, seed=1, days=90, chunk_size=100, fmt="csv"), tmp_path / "csv")
    assert (tmp_path / "csv" / "usage.csv").exists()
    report = validate_dataset(tmp_path / "csv")
    assert report.ok, report.format()


def test_nps_is_sparse_and_unhappy_or_delighted_customers_answer_more(sim_dir):
    nps = pq.read_table(sim_dir / "nps_responses.parquet").to_pandas()
    share_answered = nps["customer_id"].nunique() / 10_000
    assert 0.05 < share_answered < 0.45
    # Both ends of the scale are over-represented relative to a symmetric draw around the mean.
    assert (nps["score"] <= 6).mean() > 0.15 and (nps["score"] >= 9).mean() > 0.15


def test_logged_propensities_match_the_randomised_logging_policy(sim_dir):
    t = _truth(sim_dir)
    req = pq.read_table(sim_dir / "cancel_requests.parquet").to_pandas().merge(t, on="request_id")
    eligible = np.column_stack([req[f"eligible_{o.id}"] for o in CATALOG.offers])
    weights = eligible * np.array([2.0 if o.type == "none" else 1.0 for o in CATALOG.offers])
    idx = [CATALOG.ids.index(o) for o in req["logged_offer"]]
    expected = weights[np.arange(len(req)), idx] / weights.sum(axis=1)
    np.testing.assert_allclose(req["propensity"], expected, atol=1e-6)
    # App-store customers were never shown an offer the store cannot apply.
    customers = pq.read_table(sim_dir / "customers.parquet").to_pandas()
    app = req.merge(customers[["customer_id", "billing_channel"]], on="customer_id")
    shown = app.loc[app["billing_channel"].isin(["ios", "android"]), "logged_offer"]
    # (content credits, a loyalty reward in credits and a referral's credits are ours to give on any channel)
    assert set(shown) <= {"none", "credit_1", "followup", "reward_loyalty", "referral_both"}


def test_true_response_has_the_documented_heterogeneous_effects(sim_dir):
    t = _truth(sim_dir)
    r = t["reason"].to_numpy()
    lift = {o: (t[f"p_{o}"] - t["p_none"]).to_numpy() for o in CATALOG.ids}
    temporary, technical, expensive = (r == REASONS.index(x) for x in ("temporary", "technical", "too_expensive"))
    assert lift["pause_3m"][temporary].mean() > 2 * lift["pause_3m"][~temporary].mean()
    assert lift["followup"][technical].mean() > 0.15
    detractor = t["nps_last"].to_numpy() <= 6
    assert lift["followup"][technical & detractor].mean() > lift["followup"][technical & ~detractor].mean()
    # On the logit scale (probabilities saturate): discounts work on the price-sensitive.
    discount = truth.offer_effect(CATALOG["discount_50_2m"], _context(t))
    sensitive = t["price_sensitivity"].to_numpy() > 1.0
    assert discount[expensive & sensitive].mean() > 1.5 * discount[expensive & ~sensitive].mean()
    # Many customers would stay without any offer: giving them a discount is money lost.
    assert (t["p_none"] > 0.7).mean() > 0.15


def test_per_customer_oracle_beats_every_single_fixed_offer_by_a_wide_margin(sim_dir):
    t = _truth(sim_dir)
    ctx = _context(t)
    eligible = {o.id: t[f"eligible_{o.id}"].to_numpy() for o in CATALOG.offers}
    _, oracle_gain = truth.oracle_choice(CATALOG, ctx, eligible)
    none_value = expected_net_value(CATALOG["none"], t["p_none"].to_numpy(), ctx.price, ctx.billing_period)
    best_fixed = -np.inf
    for o in CATALOG.offers:
        value = expected_net_value(o, t[f"p_{o.id}"].to_numpy(), ctx.price, ctx.billing_period)
        # A fixed policy falls back to no offer where its offer is not eligible.
        gain = np.where(eligible[o.id], value - none_value, 0.0).mean()
        best_fixed = max(best_fixed, gain)
    assert oracle_gain.mean() > 2 * max(best_fixed, 0.01), (oracle_gain.mean(), best_fixed)


def test_truth_recomputes_the_logged_probabilities(sim_dir):
    t = _truth(sim_dir).head(500)
    ctx = _context(t)
    for o in CATALOG.offers:
        np.testing.assert_allclose(truth.save_probability(o, ctx), t[f"p_{o.id}"], rtol=1e-12)


def test_manifest_records_window_and_counts(sim_dir):
    manifest = json.loads((sim_dir / "dataset.json").read_text())
    assert manifest["window_end"].startswith("2026-11-01")
    assert manifest["rows"]["customers"] == 10_000


# ---------------------------------------------------------------------------- loyalty rewards and referrals


def test_rewards_and_referrals_have_the_documented_true_effects(sim_dir):
    # docs/simulator.md: a reward helps promoters only, most for content and "other" cancels and more the
    # longer they have been subscribed; anyone else gets -0.3 on the logit. A referral adds 0.3 + a small
    # reason term for promoters, -0.2 for anyone else.
    t = _truth(sim_dir)
    ctx = _context(t)
    promoter = t["nps_last"].fillna(0).to_numpy() >= 9
    reward = truth.offer_effect(CATALOG["reward_loyalty"], ctx)
    referral = truth.offer_effect(CATALOG["referral_both"], ctx)
    np.testing.assert_allclose(reward[~promoter], -0.3)
    np.testing.assert_allclose(referral[~promoter], -0.2)
    r = ctx.reason
    years = np.clip(ctx.tenure_days / 365.0, 0.0, 4.0)
    expected = np.asarray(truth.REWARD_BY_REASON)[r] + 0.5 + 0.15 * years
    np.testing.assert_allclose(reward[promoter], expected[promoter])
    content, expensive = (r == REASONS.index(x) for x in ("content", "too_expensive"))
    assert reward[promoter & content].mean() > reward[promoter & expensive].mean() + 0.8
    long_ = promoter & (ctx.tenure_days > 3 * 365)
    short = promoter & (ctx.tenure_days < 365)
    assert reward[long_].mean() > reward[short].mean()
    np.testing.assert_allclose(referral[promoter], np.asarray(truth.REFERRAL_BY_REASON)[r][promoter] + 0.3)
    # lifts on the probability scale: a reward lifts a promoter, pushes anyone else away
    lift = (t["p_reward_loyalty"] - t["p_none"]).to_numpy()
    assert lift[promoter].mean() > 0.05 and lift[~promoter].max() < 0


def test_a_referral_is_worth_the_friend_it_brings_in_the_truth_and_the_policy_alike():
    # The friend term is the catalog's signup_rate x (signup_value - friend_cost), counted for referrers who
    # stay: retention.value, which both the oracle and the policy use.
    ref = CATALOG["referral_both"]
    v = expected_net_value(ref, 0.5, 14.95, "monthly")
    assert v == pytest.approx(0.5 * (6 * 14.95 - ref.cost + ref.signup_rate * (ref.signup_value - ref.friend_cost)))
    assert v == pytest.approx(0.5 * (89.70 - 4.0 + 8.40))


def test_the_simulated_history_keeps_the_reward_and_referral_guardrails(sim_dir):
    t = _truth(sim_dir)
    promoter = t["nps_last"].fillna(0) >= 9
    assert t["eligible_reward_loyalty"].sum() > 0 and t["eligible_referral_both"].sum() > 0
    assert not (t["eligible_reward_loyalty"] & ~(promoter & (t["tenure_days"] >= 360))).any()
    assert not (t["eligible_referral_both"] & ~promoter).any()
    req = pq.read_table(sim_dir / "cancel_requests.parquet").to_pandas().merge(t[["request_id", "logged_offer"]],
                                                                              on="request_id")
    req = req.merge(t[["request_id", "eligible_referral_both", "eligible_reward_loyalty"]], on="request_id")
    req = req.sort_values(["customer_id", "requested_at"])
    referred = req["accepted"].fillna(False) & (req["logged_offer"] == "referral_both")
    # no request after an accepted referral ever allows another one
    before = referred.groupby(req["customer_id"]).cumsum() - referred
    assert not (req["eligible_referral_both"] & (before > 0)).any()
    rewarded = req[req["accepted"].fillna(False) & (req["logged_offer"] == "reward_loyalty")]
    later = req.merge(rewarded[["customer_id", "requested_at"]], on="customer_id", suffixes=("", "_reward"))
    within = (later["requested_at"] > later["requested_at_reward"]) & (
        later["requested_at"] - later["requested_at_reward"] < pd.Timedelta(days=359))
    assert not (later["eligible_reward_loyalty"] & within).any()
