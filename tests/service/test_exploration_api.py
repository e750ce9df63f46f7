"""Exploration through the API with the checked-in config/policy.toml (5%): every stored decision carries the
probability of its offer and what recomputes it, and explored decisions say so in their reason codes."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from support import ROOT, decision_body, headers, make_app, seed_clients

from store.models import Decision


@pytest.mark.slow
def test_stored_decisions_carry_exact_propensities_and_the_exploration_record(migrated_url, models_root):
    seed_clients(migrated_url)
    app = make_app(migrated_url, models_root, POLICY_PATH=str(ROOT / "config" / "policy.toml"))
    try:
        client = app.test_client()
        before = _explored_total(client)
        answers = {}
        for i in range(600):
            r = client.post("/v1/decisions", headers=headers(),
                            json=decision_body(request_id=f"x-{i}", customer_id=f"explore-{i}",
                                               reason=("too_expensive", "temporary", "content")[i % 3]))
            assert r.status_code == 201, r.get_json()
            answers[f"x-{i}"] = r.get_json()
        counted = _explored_total(client) - before
        store = app.extensions["retention"].store
        with store.engine.connect() as conn:
            rows = conn.execute(select(Decision.request_id, Decision.offer_id, Decision.propensity,
                                       Decision.scores, Decision.reason_codes)).all()
    finally:
        app.extensions["retention"].close()
    assert len(rows) == 600
    explored = 0
    for request_id, offer_id, propensity, scores, codes in rows:
        e = scores["exploration"]
        assert e["share"] == 0.05 and offer_id in e["eligible"]
        assert propensity == pytest.approx(0.95 * (offer_id == e["policy_offer"]) + 0.05 / len(e["eligible"]))
        assert e["explored"] == ("explored" in codes) == ("explored" in answers[request_id]["reason_codes"])
        assert answers[request_id]["offer"]["id"] == offer_id
        explored += e["explored"]
    assert 8 <= explored <= 60  # Binomial(600, 0.05): 30 expected
    assert counted == explored  # /metrics: retention_explored_decisions_total


def _explored_total(client) -> float:
    text = client.get("/metrics").get_data(as_text=True)
    line = next((x for x in text.splitlines() if x.startswith("retention_explored_decisions_total ")), None)
    return float(line.split()[1]) if line else 0.0
