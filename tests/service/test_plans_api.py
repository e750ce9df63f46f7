"""The plan catalog through the API: `GET /v1/plans` lists it (described in the OpenAPI document), a decision
request for an unknown plan or at a price impossible for its plan is a 422 naming the field, and the service
refuses to start on an invalid plan catalog."""

from __future__ import annotations

import json

import pytest
from support import decision_body, headers, post

from retention.offers import DEFAULT_CATALOG
from retention.plans import DEFAULT_PLANS


def test_the_plan_catalog_is_served_to_the_frontend(client):
    assert client.get("/v1/plans").status_code == 401
    assert client.get("/v1/plans", headers=headers("events")).status_code == 403
    r = client.get("/v1/plans", headers=headers("decide"))
    assert r.status_code == 200
    body = r.get_json()
    assert body["version"] == "2026-12-01" and body["price_tolerance"] == 0.5
    plans = {p["id"]: p for p in body["plans"]}
    assert plans["plus_annual"] == {"id": "plus_annual", "period": "annual", "price": 149.5, "monthly_price": 12.4583,
                                    "currencies": ["USD", "GBP", "EUR", "CAD", "AUD"], "downgrade_to": "lite_monthly",
                                    "accepted_prices": [74.75, 224.25]}
    assert plans["lite_monthly"]["downgrade_to"] is None
    spec = client.get("/openapi.json").get_json()
    op = spec["paths"]["/v1/plans"]["get"]
    ref = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    schema = spec["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    assert set(schema["properties"]) == {"version", "price_tolerance", "plans"}


def test_the_openapi_document_states_the_plan_check(client):
    """A request the document allows is one the service takes: schemathesis' positive-data check sent
    plan_id "0" (unknown, so a 422) while the document said any string."""
    published = {p["id"]: p for p in client.get("/v1/plans", headers=headers("decide")).get_json()["plans"]}
    request = client.get("/openapi.json").get_json()["components"]["schemas"]["DecisionRequest"]
    assert request["properties"]["plan_id"]["enum"] == list(published)
    branches = {b["properties"]["plan_id"]["enum"][0]: b["properties"] for b in request["anyOf"][1:]}
    assert request["anyOf"][0] == {"not": {"required": ["plan_id"]}}  # no plan named: no plan check
    for plan_id, plan in published.items():
        stated = branches[plan_id]
        assert [stated["price"]["minimum"], stated["price"]["maximum"]] == plan["accepted_prices"]
        assert stated["billing_period"]["enum"] == [plan["period"]]
        assert stated["currency"]["enum"] == plan["currencies"]
        low, high = plan["accepted_prices"]
        for price, status in ((low, 201), (high, 201), (round(low - 0.01, 2), 422), (round(high + 0.01, 2), 422)):
            body = decision_body(request_id=f"band-{plan_id}-{price}", plan_id=plan_id, price=price,
                                 billing_period=plan["period"], currency=plan["currencies"][0])
            assert post(client, "/v1/decisions", body).status_code == status, (plan_id, price)


@pytest.mark.parametrize("overrides, errors", [
    ({"plan_id": "plus_anual"}, {"plan_id"}),  # a typo: unknown plan
    ({"plan_id": "plus_annual", "price": 14.95, "billing_period": "monthly"}, {"billing_period", "price"}),
    ({"plan_id": "plus_annual", "price": 14.95, "billing_period": "annual"}, {"price"}),  # a monthly price
    ({"plan_id": "plus_monthly", "price": 0.0}, {"price"}),
    ({"plan_id": "plus_monthly", "price": 149.5}, {"price"}),
    ({"plan_id": "plus_monthly", "currency": "JPY"}, {"currency"}),
])
def test_an_unknown_plan_or_an_impossible_price_is_a_422_naming_the_field(client, overrides, errors):
    r = post(client, "/v1/decisions", decision_body(request_id="plan-bad", **overrides))
    assert r.status_code == 422, r.get_json()
    found = r.get_json()["errors"]["json"]
    assert set(found) == errors, found
    if "plan_id" in errors:
        assert "unknown plan 'plus_anual'" in found["plan_id"][0] and "plus_annual" in found["plan_id"][0]
    if "price" in errors:
        assert "is not a price of plan" in found["price"][0] and "are accepted" in found["price"][0]


@pytest.mark.parametrize("overrides", [
    {"plan_id": "plus_annual", "price": 149.0, "billing_period": "annual"},  # an older annual price
    {"plan_id": "plus_monthly", "price": 9.99, "currency": "USD"},  # inside the band (7.475 .. 22.425)
    {"plan_id": None},  # no plan named: nothing to check it against
])
def test_prices_a_plan_can_have_are_decided(client, overrides):
    r = post(client, "/v1/decisions", decision_body(request_id=f"plan-ok-{len(json.dumps(overrides))}",
                                                    **overrides))
    assert r.status_code == 201, r.get_json()


def test_the_service_refuses_to_start_on_an_invalid_plan_catalog(tmp_path, capfd):
    from service import CONFIG_INVALID_EXIT, create_app

    (tmp_path / "plans.toml").write_text(DEFAULT_PLANS.read_text().replace("price = 14.95", "price = -14.95")
                                         .replace('downgrade_to = "lite_monthly"', 'downgrade_to = "basic"', 1))
    offers = tmp_path / "offers.toml"
    offers.write_text('plans = "plans.toml"\n' + DEFAULT_CATALOG.read_text())
    config = {"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}", "MODELS_DIR": str(tmp_path),
              "SPOOL_PATH": str(tmp_path / "spool.db"), "CATALOG_PATH": str(offers)}
    with pytest.raises(SystemExit) as stop:
        create_app(config)
    assert stop.value.code == CONFIG_INVALID_EXIT
    err = capfd.readouterr().err
    assert "Traceback" not in err
    (entry,) = [json.loads(line) for line in err.splitlines() if '"config_invalid"' in line]
    assert entry["errors"] == [
        f"{tmp_path / 'plans.toml'}: plan #2 (plus_monthly): price: must be > 0, got -14.95",
        f"{tmp_path / 'plans.toml'}: plan #2 (plus_monthly): downgrade_to: 'basic' is not a plan of this catalog",
    ]
