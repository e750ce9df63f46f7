"""Guardrails: each rule excludes exactly the offers it should, with its reason code, before any scoring."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from retention.decision import CancelRequest, PastOffer
from retention.eligibility import Guardrails, Standing, exclusions
from retention.offers import load_catalog

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
CATALOG = load_catalog()
RULES = Guardrails(pause_once_per_days=365, discount_cooldown_days=90, max_offers_per_year=3, days_per_month=30)
MONTHLY_WEB = CancelRequest("c1", "too_expensive", "monthly", "web", 14.95, plan_id="plus_monthly")
PAUSES = ("pause_1m", "pause_2m", "pause_3m")
DISCOUNTS = ("discount_30_3m", "discount_50_2m")
# A promoter (last NPS 9-10) subscribed two years: the customer every offer, reward and referral too, fits.
LOYAL_PROMOTER = Standing("promoter", 730.0)


def excluded(request=MONTHLY_WEB, history=(), catalog=CATALOG, rules=RULES, standing=LOYAL_PROMOTER):
    return exclusions(catalog, request, list(history) if history is not None else None, NOW, rules, standing)


def past(offer_id: str, days_ago: float, accepted: bool = True) -> PastOffer:
    o = CATALOG[offer_id]
    return PastOffer(offer_id, o.type, NOW - timedelta(days=days_ago), accepted, o.months)


def test_a_monthly_web_customer_with_no_history_may_get_every_offer():
    assert excluded() == {}


def test_annual_plans_get_no_pause_discount_or_downgrade():
    out = excluded(replace(MONTHLY_WEB, billing_period="annual", price=149.5))
    for oid in PAUSES:
        assert "pause_ineligible_annual" in out[oid]
    for oid in DISCOUNTS:
        assert "discount_ineligible_annual" in out[oid]
    assert "downgrade_ineligible_annual" in out["downgrade_lite"]
    assert "credit_1" not in out and "followup" not in out and "none" not in out


@pytest.mark.parametrize("channel", ["ios", "android"])
def test_app_store_billing_excludes_offers_the_store_cannot_apply(channel):
    out = excluded(replace(MONTHLY_WEB, billing_channel=channel))
    assert set(out) == set(PAUSES) | set(DISCOUNTS) | {"downgrade_lite"}
    assert all(any(c.endswith("_ineligible_app_store") for c in codes) for codes in out.values())


def test_a_pause_only_once_in_twelve_months():
    assert all(excluded(history=[past("pause_1m", 200)])[o] == ("pause_used_12m",) for o in PAUSES)
    assert not set(PAUSES) & set(excluded(history=[past("pause_1m", 366)]))
    # a pause that was offered but declined does not use up the yearly pause
    assert not set(PAUSES) & set(excluded(history=[past("pause_1m", 20, accepted=False)]))


def test_discount_cooldown_and_active_discount():
    running = excluded(history=[past("discount_30_3m", 30)])  # 3 months from 30 days ago: still running
    assert all(running[o][0] == "discount_active" for o in DISCOUNTS)
    cooling = excluded(history=[past("discount_50_2m", 75)])  # ended 15 days ago, within 90 days
    assert all(cooling[o] == ("discount_cooldown",) for o in DISCOUNTS)
    assert not set(DISCOUNTS) & set(excluded(history=[past("discount_50_2m", 91)]))


def test_no_stacking_a_second_price_change_on_a_running_one():
    out = excluded(history=[past("discount_30_3m", 10)])
    assert "no_stacking" in out["downgrade_lite"] and all("no_stacking" in out[p] for p in PAUSES)
    out = excluded(history=[past("pause_2m", 10)])
    assert "no_stacking" in out["downgrade_lite"] and all("no_stacking" in out[d] for d in DISCOUNTS)
    assert "credit_1" not in out and "followup" not in out


def test_yearly_offer_cap_exempts_follow_ups_and_no_offer():
    history = [past("credit_1", d, accepted=False) for d in (30, 100, 200)]
    out = excluded(history=history)
    capped = {o.id for o in CATALOG.offers if o.type in ("pause", "discount", "downgrade", "credit", "reward",
                                                         "referral")}
    assert set(out) == capped and all("offer_cap_reached" in c for c in out.values())
    assert not excluded(history=[past("credit_1", d, accepted=False) for d in (30, 100, 400)])


def test_a_switched_off_offer_is_excluded_with_its_own_code():
    catalog = replace(CATALOG, offers=tuple(replace(o, enabled=False) if o.id == "pause_2m" else o
                                            for o in CATALOG.offers))
    assert excluded(catalog=catalog) == {"pause_2m": ("pause_2m_disabled",)}


def test_downgrade_only_when_it_is_cheaper():
    assert excluded(replace(MONTHLY_WEB, price=7.95))["downgrade_lite"] == ("downgrade_not_cheaper",)
    assert excluded(replace(MONTHLY_WEB, plan_id="lite_monthly", price=9.0))["downgrade_lite"] == (
        "downgrade_not_cheaper",)


def test_unknown_history_leaves_only_offers_no_history_rule_can_forbid():
    out = excluded(history=None)
    assert set(CATALOG.ids) - set(out) == {"none", "followup"}
    assert all("history_unavailable" in codes for codes in out.values())


def test_guardrail_values_are_checked():
    with pytest.raises(ValueError, match="max_offers_per_year"):
        Guardrails(max_offers_per_year=-1)


# ---------------------------------------------------------------------------- loyalty rewards and referrals


@pytest.mark.parametrize("segment", ["detractor", "passive", "none"])
def test_only_promoters_get_a_reward_or_a_referral(segment):
    for tenure in (30.0, 730.0, 3000.0):
        out = excluded(standing=Standing(segment, tenure))
        assert "reward_not_promoter" in out["reward_loyalty"]
        assert out["referral_both"] == ("referral_not_promoter",)
    assert {"reward_loyalty", "referral_both"} <= set(excluded(standing=None))  # segment unknown: neither


def test_a_reward_needs_twelve_months_of_tenure():
    assert excluded(standing=Standing("promoter", 359.0))["reward_loyalty"] == ("reward_tenure_short",)
    assert excluded(standing=Standing("promoter", None))["reward_loyalty"] == ("reward_tenure_short",)
    assert "reward_loyalty" not in excluded(standing=Standing("promoter", 360.0))
    assert "referral_both" not in excluded(standing=Standing("promoter", 10.0))  # a referral needs no tenure


def test_a_reward_at_most_once_per_twelve_months():
    assert excluded(history=[past("reward_loyalty", 200)])["reward_loyalty"] == ("reward_used_recently",)
    assert excluded(history=[past("reward_loyalty", 359)])["reward_loyalty"] == ("reward_used_recently",)
    assert "reward_loyalty" not in excluded(history=[past("reward_loyalty", 361)])
    # a reward offered but declined does not use it up
    assert "reward_loyalty" not in excluded(history=[past("reward_loyalty", 20, accepted=False)])
    # the period is the file's: 6 months
    assert "reward_loyalty" not in excluded(history=[past("reward_loyalty", 200)],
                                            rules=replace(RULES, reward_once_per_months=6))


def test_a_customer_who_referred_never_gets_a_referral_again():
    for days_ago in (5, 400, 2000):
        out = excluded(history=[past("referral_both", days_ago)])
        assert out["referral_both"] == ("referral_already_referred",)
        assert "reward_loyalty" not in out
    # offered and declined: they have not referred
    assert "referral_both" not in excluded(history=[past("referral_both", 5, accepted=False)])


def test_rewards_and_referrals_need_history_and_count_towards_the_cap():
    out = excluded(history=None)
    assert "history_unavailable" in out["reward_loyalty"] and "history_unavailable" in out["referral_both"]
    out = excluded(history=[past("reward_loyalty", 300), past("referral_both", 100, accepted=False),
                            past("credit_1", 30, accepted=False)])
    assert "offer_cap_reached" in out["pause_1m"]
