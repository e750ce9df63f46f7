"""A model version trained on churn-only data (no offer history; the `churn_only` fixture of
tests/conftest.py) is served: the rules choose every offer, and the service says so in each decision's
reason codes, in /readyz and in /v1/model."""

from __future__ import annotations

import pytest
from support import decision_body, headers, make_app, seed_clients


@pytest.mark.slow
def test_the_service_serves_a_churn_only_version_and_the_rules_choose_offers(churn_only, migrated_url):
    _, models, _ = churn_only
    seed_clients(migrated_url)
    app = make_app(migrated_url, models)
    try:
        client = app.test_client()
        ready = client.get("/readyz", headers=headers("admin"))
        assert ready.status_code == 200
        offers = ready.get_json()["checks"]["model"]["offers"]
        assert offers.startswith("rules: ") and "none with an offer shown" in offers
        d = client.post("/v1/decisions", json=decision_body(reason="temporary"), headers=headers())
        assert d.status_code == 201, d.get_json()
        body = d.get_json()
        assert "no_offer_model" in body["reason_codes"] and body["offer"]["id"] == "pause_2m"  # the rule
        model = client.get("/v1/model", headers=headers("admin")).get_json()
        assert model["models"]["offer_response"]["trained"] is False and "rules" in model["offers"]
    finally:
        app.extensions["retention"].close()
