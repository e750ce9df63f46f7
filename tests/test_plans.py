"""The plan catalog (config/plans.toml, retention.plans): loaded with the offer catalog and checked at
start-up, every problem named by file, plan and key; the downgrade offer's target follows it; the simulator
sells exactly its plans."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from retention.decision import CancelRequest
from retention.eligibility import Guardrails, exclusions
from retention.offers import DEFAULT_CATALOG, CatalogError, load_catalog
from retention.plans import DEFAULT_PLANS
from training.simulator.worlds import WORLDS

PLANS_TEXT = DEFAULT_PLANS.read_text()


def _catalog_with(tmp_path: Path, plans_text: str, offers_text: str | None = None):
    """The checked-in offer catalog pointing at `plans_text` (its `plans` key, relative to the file)."""
    (tmp_path / "plans.toml").write_text(plans_text)
    offers = tmp_path / "offers.toml"
    offers.write_text('plans = "plans.toml"\n' + (offers_text or DEFAULT_CATALOG.read_text()))
    return offers


def test_the_checked_in_catalog_has_the_plans_the_downgrade_and_the_simulator_use():
    catalog = load_catalog()
    plans = catalog.plans
    assert plans.get("plus_monthly").downgrade_to == "lite_monthly"
    downgrade = catalog["downgrade_lite"]
    assert plans.get(downgrade.to_plan).monthly_price == downgrade.to_price
    for world in WORLDS.values():  # `make run`'s demo data and training sell catalog plans at catalog prices
        for plan_id, period, price, _ in world.plans:
            plan = plans.get(plan_id)
            assert plan is not None and (plan.period, plan.price) == (period, price), (world.name, plan_id)


@pytest.mark.parametrize("change, line", [
    (('id = "plus_monthly"', 'id = "plus monthly"'),
     "plan #2 (plus monthly): id: must be an identifier (letters, digits, '_'), got 'plus monthly'"),
    (("price = 14.95", 'price = "14.95"'), 'plan #2 (plus_monthly): price: must be a number, got "14.95"'),
    (("price = 14.95", "price = -1"), "plan #2 (plus_monthly): price: must be > 0, got -1.0"),
    (('period = "annual"\nprice = 149.50', 'period = "yearly"\nprice = 149.50'),
     "plan #3 (plus_annual): period: must be one of monthly, annual, got 'yearly'"),
    (('currencies = ["USD", "GBP", "EUR", "CAD", "AUD"]\ndowngrade_to = "lite_monthly"',
      'currencies = ["USD", "gbp"]\ndowngrade_to = "lite_monthly"'),
     "plan #2 (plus_monthly): currencies: must be ISO 4217 codes such as \"USD\", got 'gbp'"),
    (('currencies = ["USD", "GBP", "EUR", "CAD", "AUD"]\ndowngrade_to = "lite_monthly"',
      'currencies = ["USD", "JPY"]\ndowngrade_to = "lite_monthly"'),
     "plan #2 (plus_monthly): downgrade_to: 'lite_monthly' is not sold in every currency this plan is"),
    (('price = 14.95\ncurrencies = ["USD", "GBP", "EUR", "CAD", "AUD"]\ndowngrade_to = "lite_monthly"',
      'price = 14.95\ncurrencies = ["USD", "GBP", "EUR", "CAD", "AUD"]\ndowngrade_to = "basic"'),
     "plan #2 (plus_monthly): downgrade_to: 'basic' is not a plan of this catalog"),
    (("price_tolerance = 0.5", "price_tolerance = 1.5"), "price_tolerance: must be in [0, 1) (a share of the list "
                                                         "price), got 1.5"),
    (('id = "plus_annual"', 'id = "plus_monthly"'),
     "plan #3 (plus_monthly): id: duplicate: plan #2 has the id 'plus_monthly' too"),
])
def test_a_bad_plan_catalog_is_refused_naming_the_file_plan_and_key(tmp_path, change, line):
    old, new = change
    assert old in PLANS_TEXT
    offers = _catalog_with(tmp_path, PLANS_TEXT.replace(old, new, 1))
    with pytest.raises(CatalogError) as info:
        load_catalog(offers)
    assert f"{tmp_path / 'plans.toml'}: {line}" in str(info.value).splitlines(), str(info.value)


def test_a_downgrade_to_a_plan_that_costs_more_is_refused(tmp_path):
    text = PLANS_TEXT.replace('price = 14.95\ncurrencies = ["USD", "GBP", "EUR", "CAD", "AUD"]\ndowngrade_to = "lite_monthly"',
                              'price = 14.95\ncurrencies = ["USD", "GBP", "EUR", "CAD", "AUD"]\ndowngrade_to = "premium_monthly"')
    with pytest.raises(CatalogError) as info:
        load_catalog(_catalog_with(tmp_path, text))
    assert str(info.value) == (f"{tmp_path / 'plans.toml'}: plan #2 (plus_monthly): downgrade_to: "
                               "'premium_monthly' costs 22.95 a month, not less than this plan's 14.95")


def test_a_downgrade_offer_must_move_to_a_catalog_plan_at_its_price(tmp_path):
    offers_text = DEFAULT_CATALOG.read_text()
    offers = _catalog_with(tmp_path, PLANS_TEXT, offers_text.replace("to_price = 7.95", "to_price = 6.95"))
    with pytest.raises(CatalogError) as info:
        load_catalog(offers)
    assert str(info.value) == (f"{offers}: offer #7 (downgrade_lite): to_price: 6.95 is not the monthly price of "
                               f"'lite_monthly' in {tmp_path / 'plans.toml'} (7.95)")
    offers = _catalog_with(tmp_path, PLANS_TEXT, offers_text.replace('to_plan = "lite_monthly"', 'to_plan = "lite"'))
    with pytest.raises(CatalogError, match=r"offer #7 \(downgrade_lite\): to_plan: 'lite' is not a plan of "):
        load_catalog(offers)


def test_a_missing_plan_catalog_is_one_clear_error(tmp_path):
    offers = tmp_path / "offers.toml"
    offers.write_text('plans = "nowhere.toml"\n' + DEFAULT_CATALOG.read_text())
    with pytest.raises(CatalogError) as info:
        load_catalog(offers)
    assert str(info.value).startswith(f"{tmp_path / 'nowhere.toml'}: cannot read the plan catalog: ")


def _downgrade_codes(catalog, plan_id: str, price: float) -> tuple[str, ...]:
    request = CancelRequest(customer_id="c", reason="too_expensive", billing_period="monthly",
                            billing_channel="web", price=price, plan_id=plan_id)
    return exclusions(catalog, request, [], datetime(2026, 12, 1, tzinfo=UTC), Guardrails()).get("downgrade_lite", ())


def test_the_downgrade_goes_where_the_plan_catalog_says(tmp_path):
    catalog = load_catalog()
    assert _downgrade_codes(catalog, "premium_monthly", 22.95) == ()
    assert _downgrade_codes(catalog, "lite_monthly", 7.95) == ("downgrade_not_cheaper",)
    # premium moves to plus instead: the offer to lite is not premium's downgrade
    moved = load_catalog(_catalog_with(tmp_path, PLANS_TEXT.replace(
        'price = 22.95\ncurrencies = ["USD", "GBP", "EUR", "CAD", "AUD"]\ndowngrade_to = "lite_monthly"',
        'price = 22.95\ncurrencies = ["USD", "GBP", "EUR", "CAD", "AUD"]\ndowngrade_to = "plus_monthly"')))
    assert _downgrade_codes(moved, "premium_monthly", 22.95) == ("downgrade_not_for_plan",)
    # another business's plan, unknown to the catalog (its own data set): only the price rule applies
    assert _downgrade_codes(catalog, "gold_monthly", 30.0) == ()
    assert json.dumps(_downgrade_codes(catalog, "gold_monthly", 5.0)) == '["downgrade_not_cheaper"]'


def test_the_published_price_band_is_exactly_what_a_request_may_send():
    """GET /v1/plans and the 422 name the band in cents: both edges are accepted, a cent beyond is not
    (rounding the exact band outward once published prices that were then refused)."""
    plans = load_catalog(DEFAULT_CATALOG).plans
    for plan in plans.plans:
        low, high = plans.price_band(plan)
        assert low == round(low, 2) and high == round(high, 2), plan.id
        for price in (low, high):
            assert "price" not in plans.problems(plan.id, price, plan.period), (plan.id, price)
        for price in (round(low - 0.01, 2), round(high + 0.01, 2)):
            assert "price" in plans.problems(plan.id, price, plan.period), (plan.id, price)
