"""The decision API through the Flask test client, on SQLite and PostgreSQL: every endpoint, idempotency,
guardrails driven by stored history, auth, request signing, and one error body for all bad input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from support import KEYS, decision_body, headers, make_app, post, seed_clients

from retention.decision import CancelRequest
from retention.policy import Policy


def decide(client, **overrides):
    return post(client, "/v1/decisions", decision_body(**overrides))


def test_a_decision_names_one_offer_with_its_value_reasons_and_versions(client, app):
    r = decide(client, reason="temporary")
    assert r.status_code == 201, r.get_json()
    d = r.get_json()
    rt = app.extensions["retention"]
    assert d["offer"]["type"] in ("pause", "discount", "downgrade", "credit", "followup", "none")
    assert d["offer"]["id"] in rt.catalog.ids and d["offer"]["display_key"].startswith("offer.")
    assert 0 < d["p_stay"] < 1 and d["expected_incremental_value"] >= 0
    assert d["model_version"] == rt.model_version and d["policy_version"] == rt.policy.config.version
    assert d["fallback"] is False and d["recorded"] is True
    assert {"reason_temporary", "customer_unknown", "nps_missing"} <= set(d["reason_codes"])
    assert r.headers["X-Request-ID"]


def test_the_service_answers_what_the_policy_decides(client, app):
    """The HTTP layer adds nothing to the choice: same inputs, same offer as the domain policy."""
    body = decision_body(reason="too_expensive", nps=[{"score": 4, "responded_at": "2026-11-01T10:00:00Z"}])
    d = post(client, "/v1/decisions", body).get_json()
    policy: Policy = app.extensions["retention"].policy
    from retention.decision import NpsAnswer

    direct = policy.decide(CancelRequest("cust-1", "too_expensive", "monthly", "web", 14.95, plan_id="plus_monthly",
                                         nps=(NpsAnswer(4, datetime(2026, 11, 1, 10, tzinfo=UTC)),)),
                           None, datetime.now(UTC), [], [])
    assert d["offer"]["id"] == direct.offer.id
    assert d["expected_incremental_value"] == pytest.approx(direct.expected_incremental_value, rel=1e-6)


def test_the_same_request_id_returns_the_same_decision_and_stores_one_row(client, app):
    first = decide(client)
    again = decide(client)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.get_json()["decision_id"] == first.get_json()["decision_id"]
    history = client.get("/v1/customers/cust-1/decisions", headers=headers()).get_json()
    assert len(history["decisions"]) == 1


def test_the_same_request_id_with_another_body_is_a_409(client):
    assert decide(client).status_code == 201
    r = decide(client, reason="too_expensive")
    assert r.status_code == 409
    assert r.get_json()["code"] == 409 and "different body" in r.get_json()["message"]


def test_idempotency_keys_are_scoped_per_client(client, store):
    """Another client that sends a request_id already used (same body) gets a decision of its own, never the
    first client's; each client still gets its own decision back on a retry, and each scope stores one row."""
    first = decide(client)
    other = post(client, "/v1/decisions", decision_body(), role="admin")  # test-admin: another API client
    assert (first.status_code, other.status_code) == (201, 201), other.get_json()
    assert other.get_json()["decision_id"] != first.get_json()["decision_id"]
    again, other_again = decide(client), post(client, "/v1/decisions", decision_body(), role="admin")
    assert (again.status_code, other_again.status_code) == (200, 200)
    assert again.get_json()["decision_id"] == first.get_json()["decision_id"]
    assert other_again.get_json()["decision_id"] == other.get_json()["decision_id"]
    assert post(client, "/v1/decisions", decision_body(reason="too_expensive"), role="admin").status_code == 409
    history = client.get("/v1/customers/cust-1/decisions", headers=headers()).get_json()["decisions"]
    assert sorted(d["decision_id"] for d in history) == sorted(
        [first.get_json()["decision_id"], other.get_json()["decision_id"]])


@pytest.mark.parametrize("body, field", [
    (decision_body(reason="bored"), "reason"),
    (decision_body(billing_period="weekly"), "billing_period"),
    (decision_body(price=-1), "price"),
    (decision_body(request_id=""), "request_id"),
    (decision_body(surprise=True), "surprise"),
    ({k: v for k, v in decision_body().items() if k != "customer_id"}, "customer_id"),
    (decision_body(nps=[{"score": 11, "responded_at": "2026-11-01T00:00:00Z"}]), "nps"),
    (decision_body(usage=[{"metric": "listening_minutes", "last_7d": 50, "last_30d": 10, "last_90d": 90}]), "usage"),
    (decision_body(price="cheap"), "price"),
])
def test_bad_input_is_a_422_naming_the_field(client, body, field):
    r = post(client, "/v1/decisions", body)
    assert r.status_code == 422, r.get_json()
    err = r.get_json()
    assert err["code"] == 422 and err["status"] == "Unprocessable Entity" and err["message"]
    assert field in err["errors"]["json"]


def test_a_body_that_is_not_json_is_rejected_with_the_same_error_schema(client):
    r = post(client, "/v1/decisions", b"{not json")
    assert r.status_code == 422 and r.get_json()["message"] == "the request body is not valid JSON"
    assert "Invalid JSON body" in r.get_json()["errors"]["json"]["_schema"][0]
    r = post(client, "/v1/decisions", b"[1, 2]")
    assert r.status_code == 422 and "_schema" in r.get_json()["errors"]["json"]


def test_request_bodies_are_size_limited(client):
    r = post(client, "/v1/decisions", decision_body(reason_text="x" * 40_000))
    assert r.status_code == 413 and r.get_json()["code"] == 413


@pytest.mark.parametrize("hdrs, status", [
    ({}, 401),
    ({"Authorization": "Bearer not-a-key"}, 401),
    ({"X-API-Key": KEYS["events"]}, 403),
])
def test_auth_failures(client, hdrs, status):
    r = client.post("/v1/decisions", json=decision_body(), headers=hdrs)
    assert r.status_code == status and r.get_json()["code"] == status


def test_auth_runs_before_validation_so_strangers_learn_nothing(client):
    r = client.post("/v1/decisions", json={"bogus": 1})
    assert r.status_code == 401


def test_a_revoked_key_stops_working(client, app, migrated_url):
    from store import Store

    with Store.from_url(migrated_url) as s:
        s.create_client("temp", "decide", key="temporary-key-0123456789abcdef")
        s.revoke_client("temp")
    r = client.post("/v1/decisions", json=decision_body(), headers={"Authorization": "Bearer temporary-key-0123456789abcdef"})
    assert r.status_code == 401


def test_outcomes_are_recorded_idempotently_and_checked(client):
    d = decide(client).get_json()
    path = f"/v1/decisions/{d['decision_id']}/outcome"
    first = post(client, path, {"outcome": "accepted"})
    assert first.status_code == 201 and first.get_json()["kind"] == "accepted"
    assert post(client, path, {"outcome": "accepted"}).status_code == 200
    assert post(client, path, {"outcome": "declined"}).status_code == 409
    assert post(client, path, {"outcome": "accepted"}, role="events").status_code == 200
    assert post(client, path, {"outcome": "maybe"}).status_code == 422
    assert post(client, "/v1/decisions/nope/outcome", {"outcome": "accepted"}).status_code == 404
    history = client.get("/v1/customers/cust-1/decisions", headers=headers()).get_json()["decisions"]
    assert [o["kind"] for o in history[0]["outcomes"]] == ["accepted"]


def _accept(client, request_id, **overrides):
    d = decide(client, request_id=request_id, **overrides).get_json()
    post(client, f"/v1/decisions/{d['decision_id']}/outcome", {"outcome": "accepted"})
    return d


@pytest.fixture
def rules_client(migrated_url, tmp_path):
    """A service whose offers come from the fallback rules (no model version to load), so the guardrail tests
    below know which offer comes first whatever a model would choose."""
    seed_clients(migrated_url)
    app = make_app(migrated_url, tmp_path / "no-models")
    yield app.test_client()
    app.extensions["retention"].close()


def test_an_accepted_pause_blocks_pauses_for_a_year(rules_client):
    client = rules_client
    first = _accept(client, "p-1", reason="temporary")
    assert first["offer"]["type"] == "pause", first
    second = decide(client, request_id="p-2", reason="temporary").get_json()
    assert "pause_used_12m" in second["reason_codes"] and second["offer"]["type"] != "pause"


def test_an_accepted_discount_blocks_discounts_and_stacking(rules_client):
    client = rules_client
    first = _accept(client, "d-1", reason="too_expensive",
                    nps=[{"score": 6, "responded_at": "2026-11-01T00:00:00Z"}])
    assert first["offer"]["type"] == "discount", first
    second = decide(client, request_id="d-2", reason="too_expensive").get_json()
    assert "discount_active" in second["reason_codes"] and "no_stacking" in second["reason_codes"]
    assert second["offer"]["type"] not in ("discount", "pause", "downgrade")


def test_the_yearly_offer_cap_counts_offers_made_by_the_service(client):
    codes = []
    for i in range(5):
        d = decide(client, request_id=f"cap-{i}", reason="content").get_json()
        codes.append((d["offer"]["type"], "offer_cap_reached" in d["reason_codes"]))
    assert codes[3][1] and codes[4][1], codes
    assert codes[4][0] in ("none", "followup")


def test_app_store_and_annual_customers_get_only_what_billing_can_apply(client):
    d = decide(client, request_id="ios", billing_channel="ios", reason="temporary").get_json()
    assert "pause_ineligible_app_store" in d["reason_codes"] and d["offer"]["type"] not in ("pause", "discount")
    d = decide(client, request_id="annual", plan_id="plus_annual", billing_period="annual", price=149.5,
               reason="temporary").get_json()
    assert "pause_ineligible_annual" in d["reason_codes"] and d["offer"]["type"] not in ("pause", "discount")


def test_events_are_idempotent_and_conflicts_are_reported(client):
    now = datetime.now(UTC)
    events = [
        {"event_id": "e1", "type": "nps", "customer_id": "cust-9", "occurred_at": (now - timedelta(days=1)).isoformat(),
         "score": 2, "comment": "app keeps crashing"},
        {"event_id": "e2", "type": "payment", "customer_id": "cust-9", "occurred_at": now.isoformat(), "amount": 14.95},
        {"event_id": "e3", "type": "usage", "customer_id": "cust-9", "occurred_at": now.isoformat(),
         "day": "2026-11-20", "metric": "listening_minutes", "value": 30},
    ]
    r = post(client, "/v1/events", {"events": events}, role="events")
    assert r.status_code == 200 and r.get_json() == {"created": 3, "duplicates": 0, "conflicts": []}
    r = post(client, "/v1/events", {"events": events[:2]}, role="events")
    assert r.get_json() == {"created": 0, "duplicates": 2, "conflicts": []}
    changed = [{**events[1], "amount": 99.0}]
    assert post(client, "/v1/events", {"events": changed}, role="events").get_json()["conflicts"] == ["e2"]
    # the NPS answer posted as an event is used by the next decision for that customer
    d = decide(client, request_id="after-nps", customer_id="cust-9", reason="technical").get_json()
    assert "nps_detractor" in d["reason_codes"] and d["close_the_loop_by"] is not None


@pytest.mark.parametrize("event, field", [
    ({"type": "nps"}, "score"),
    ({"type": "nps", "score": 5, "amount": 3}, "amount"),
    ({"type": "usage", "day": "yesterday", "metric": "m", "value": 1}, "day"),
    ({"type": "still_active", "decision_id": "x", "day": 45, "active": True}, "day"),
    ({"type": "party", "score": 1}, "type"),
])
def test_bad_events_are_a_422_naming_the_event_and_field(client, event, field):
    base = {"event_id": "bad", "customer_id": "c", "occurred_at": "2026-11-01T00:00:00Z"}
    r = post(client, "/v1/events", {"events": [{**base, **event}]}, role="events")
    assert r.status_code == 422
    assert field in r.get_json()["errors"]["json"]["events"]["0"]


def test_events_need_the_events_role(client):
    r = post(client, "/v1/events", {"events": []}, role="decide")
    assert r.status_code == 403


def test_offer_catalog_and_model_endpoints(client, app):
    offers = client.get("/v1/offers", headers=headers()).get_json()
    assert offers["version"] == app.extensions["retention"].catalog.version
    assert {o["id"] for o in offers["offers"]} == set(app.extensions["retention"].catalog.ids)
    assert client.get("/v1/model", headers=headers()).status_code == 403
    model = client.get("/v1/model", headers=headers("admin")).get_json()
    assert model["model_version"] == app.extensions["retention"].model_version
    assert model["metrics"]["offer_response"]["roc_auc"] > 0.6


def test_customer_history_is_newest_first(client):
    for i in range(3):
        decide(client, request_id=f"h-{i}")
    rows = client.get("/v1/customers/cust-1/decisions", headers=headers()).get_json()["decisions"]
    assert [r["request_id"] for r in rows] == ["h-2", "h-1", "h-0"]
    assert client.get("/v1/customers/nobody/decisions", headers=headers()).get_json()["decisions"] == []


def test_health_readiness_and_metrics(client, app):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz", headers=headers("admin"))
    assert ready.status_code == 200 and ready.get_json()["checks"]["model"]["ok"]
    assert ready.get_json()["degraded"] == ["features"]  # no feature snapshot loaded in this test
    decide(client)
    text = client.get("/metrics").get_data(as_text=True)
    assert 'retention_http_requests_total{endpoint="/v1/decisions",method="POST",status="201"}' in text
    assert "retention_http_request_duration_seconds_bucket" in text
    assert 'retention_decisions_total{fallback="false"' in text
    assert f'retention_model_loaded{{version="{app.extensions["retention"].model_version}"}} 1.0' in text


def test_openapi_document_and_ui(client):
    spec = client.get("/openapi.json").get_json()
    assert {"/v1/decisions", "/v1/decisions/{decision_id}/outcome", "/v1/events", "/v1/offers",
            "/v1/customers/{customer_id}/decisions"} <= set(spec["paths"])
    body = spec["paths"]["/v1/decisions"]["post"]
    assert body["security"] == [{"bearer": []}] and "422" in body["responses"]
    assert "DecisionRequest" in spec["components"]["schemas"]
    assert client.get("/docs").status_code == 200


def _snapshot_row(sim_dir, app):
    """One real customer's features as of the data window's end, as `retention load-features` stores them."""
    import pandas as pd

    from retention.features import FeatureSpec, compute_features
    from training.dataset import open_dataset, resolve_window_end

    rt = app.extensions["retention"]
    spec = FeatureSpec.from_dict(rt.model_meta["feature_spec"])
    as_of = resolve_window_end(sim_dir, None)
    points = pd.DataFrame({"point_id": [0], "customer_id": ["c00000001"], "as_of": [pd.Timestamp(as_of).tz_localize(None)]})
    row = compute_features(open_dataset(sim_dir), points, spec, {o.id: o.type for o in rt.catalog.offers}).iloc[0]
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in row[spec.names].items()}, as_of


def test_a_loaded_snapshot_is_what_the_decision_is_made_from(client, app, store, sim_dir):
    from retention.features import FEATURE_VERSION

    values, as_of = _snapshot_row(sim_dir, app)
    store.replace_feature_snapshot([("c00000001", values)], as_of, FEATURE_VERSION, "test", source="test")
    d = decide(client, customer_id="c00000001", request_id="snap-1")
    assert d.status_code == 201 and "customer_unknown" not in d.get_json()["reason_codes"]
    stored = store.get_decision(d.get_json()["decision_id"])
    assert stored["features"]["tenure_days"] > values["tenure_days"]  # aged from the snapshot to now
    assert stored["features"]["prior_requests"] == values["prior_requests"]
    store.replace_feature_snapshot([("c00000001", values)], as_of, "f1-other-definitions", "test", source="test")
    d = decide(client, customer_id="c00000001", request_id="snap-2").get_json()
    assert "snapshot_incompatible" in d["reason_codes"] and "customer_unknown" in d["reason_codes"]


def test_a_switched_off_offer_is_never_chosen(migrated_url, models_root, tmp_path):
    from support import make_app, seed_clients

    text = (__import__("pathlib").Path(__file__).resolve().parents[2] / "config" / "offers.toml").read_text()
    catalog = tmp_path / "offers.toml"
    catalog.write_text(text.replace('id = "pause_1m"\ntype = "pause"', 'id = "pause_1m"\ntype = "pause"\nenabled = false')
                       .replace('id = "pause_2m"\ntype = "pause"', 'id = "pause_2m"\ntype = "pause"\nenabled = false'))
    seed_clients(migrated_url)
    app = make_app(migrated_url, models_root, CATALOG_PATH=str(catalog))
    try:
        client = app.test_client()
        d = decide(client, reason="temporary").get_json()
        assert {"pause_1m_disabled", "pause_2m_disabled"} <= set(d["reason_codes"])
        assert d["offer"]["id"] not in ("pause_1m", "pause_2m")
        offers = {o["id"]: o["enabled"] for o in client.get("/v1/offers", headers=headers()).get_json()["offers"]}
        assert offers["pause_1m"] is False and offers["pause_3m"] is True
    finally:
        app.extensions["retention"].close()


def test_rewards_and_referrals_are_in_the_catalog_the_schema_and_only_for_long_standing_promoters(client):
    offers = {o["id"]: o for o in client.get("/v1/offers", headers=headers()).get_json()["offers"]}
    assert offers["reward_loyalty"]["type"] == "reward" and offers["reward_loyalty"]["credits"] == 2
    ref = offers["referral_both"]
    assert (ref["type"], ref["cost"], ref["friend_cost"], ref["signup_rate"], ref["signup_value"]) == (
        "referral", 4.0, 4.0, 0.15, 60.0)
    spec = client.get("/openapi.json").get_json()
    assert {"reward", "referral"} <= set(spec["components"]["schemas"]["Offer"]["properties"]["type"]["enum"])
    long_ago = (datetime.now(UTC) - timedelta(days=800)).isoformat()
    answered = (datetime.now(UTC) - timedelta(days=3)).isoformat()
    for i, reason in enumerate(("content", "other", "too_expensive", "not_using")):
        d = decide(client, request_id=f"det-{i}", customer_id=f"det-{i}", reason=reason, signup_at=long_ago,
                   nps=[{"score": 3, "responded_at": answered}]).get_json()
        assert {"reward_not_promoter", "referral_not_promoter"} <= set(d["reason_codes"])
        assert d["offer"]["type"] not in ("reward", "referral")
    d = decide(client, request_id="pro-1", customer_id="pro-1", reason="content", signup_at=long_ago,
               nps=[{"score": 10, "responded_at": answered}]).get_json()
    assert not {c for c in d["reason_codes"] if c.startswith(("reward_", "referral_"))}, d["reason_codes"]
    new = decide(client, request_id="pro-2", customer_id="pro-2", reason="content",
                 signup_at=(datetime.now(UTC) - timedelta(days=60)).isoformat(),
                 nps=[{"score": 10, "responded_at": answered}]).get_json()
    assert "reward_tenure_short" in new["reason_codes"] and "referral_not_promoter" not in new["reason_codes"]


def test_a_customer_who_accepted_a_referral_is_never_offered_another(migrated_url, models_root, tmp_path):
    # The record of having referred is the customer's own decision history in the store: an accepted
    # referral decision. An experiment arm that gives the referral to 99% makes the first one.
    path = tmp_path / "experiments.toml"
    start = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    path.write_text(f'[[experiment]]\nname = "referrals"\nstart = {start}\nholdout = 0.01\ncontrol = "referral"\n'
                    'variants = [{ name = "referral", kind = "offer", offer = "referral_both" }]\n')
    seed_clients(migrated_url)
    app = make_app(migrated_url, models_root, EXPERIMENTS_PATH=str(path))
    client = app.test_client()
    try:
        nps = [{"score": 10, "responded_at": (datetime.now(UTC) - timedelta(days=3)).isoformat()}]
        first = decide(client, request_id="ref-1", customer_id="ref-cust", reason="other", nps=nps).get_json()
        assert first["offer"]["id"] == "referral_both", first["reason_codes"]
        assert post(client, f"/v1/decisions/{first['decision_id']}/outcome", {"outcome": "accepted"}).status_code == 201
        for i, reason in enumerate(("other", "content", "too_expensive")):
            again = decide(client, request_id=f"ref-{i + 2}", customer_id="ref-cust", reason=reason, nps=nps).get_json()
            assert "referral_already_referred" in again["reason_codes"]
            assert again["offer"]["type"] != "referral"
        # declined is not having referred: another promoter who declined may be asked again
        other = decide(client, request_id="ref-9", customer_id="ref-other", reason="other", nps=nps).get_json()
        assert other["offer"]["id"] == "referral_both"
        assert post(client, f"/v1/decisions/{other['decision_id']}/outcome", {"outcome": "declined"}).status_code == 201
        later = decide(client, request_id="ref-10", customer_id="ref-other", reason="other", nps=nps).get_json()
        assert "referral_already_referred" not in later["reason_codes"]
    finally:
        app.extensions["retention"].close()
