"""Fail-open: a missing or corrupt model, a slow model and a store outage never stop an answer; readiness
says what is degraded."""

from __future__ import annotations

import time

import pytest
from support import decision_body, headers, make_app, post


def _decide(client, **kw):
    r = post(client, "/v1/decisions", decision_body(**kw))
    assert r.status_code in (200, 201), r.get_json()
    return r.get_json()


@pytest.fixture
def app_factory(migrated_url, models_root):
    from support import seed_clients

    seed_clients(migrated_url)
    apps = []

    def build(**config):
        app = make_app(migrated_url, models_root, **config)
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.extensions["retention"].close()


def test_without_a_model_the_rules_decide_and_readiness_says_so(app_factory, tmp_path):
    empty = tmp_path / "no-models"
    empty.mkdir()
    client = app_factory(MODELS_DIR=str(empty)).test_client()
    d = _decide(client, reason="temporary")
    assert d["fallback"] is True and d["model_version"] is None and d["offer"]["id"] == "pause_2m"
    assert "model_unavailable" in d["reason_codes"] and "fallback_rules" in d["reason_codes"]
    ready = client.get("/readyz")
    assert ready.status_code == 503 and "model" in ready.get_json()["degraded"]


@pytest.mark.parametrize("name", ["model.joblib", "offer_response.npz"])
def test_a_corrupt_model_is_refused_and_the_rules_decide(app_factory, models_root, name):
    model_file = next(models_root.glob(f"*/{name}"))
    model_file.write_bytes(model_file.read_bytes()[:-100] + b"x" * 100)
    client = app_factory().test_client()
    d = _decide(client)
    assert d["fallback"] is True and "model_unavailable" in d["reason_codes"]
    assert "does not match" in client.get("/readyz", headers=headers("admin")).get_json()["checks"]["model"]["error"]


@pytest.mark.serial  # measures time: a core taken by another test would blur it
def test_a_slow_model_is_cut_off_at_the_time_budget(app_factory, monkeypatch):
    app = app_factory()
    scorer = app.extensions["retention"].policy.scorer
    fast = scorer.p_stay

    def slow(*args):
        time.sleep(0.5)  # e.g. a CPU starved by a noisy neighbour
        return fast(*args)

    monkeypatch.setattr(scorer, "p_stay", slow)
    client = app.test_client()
    started = time.perf_counter()
    d = _decide(client, reason="temporary")
    assert time.perf_counter() - started < 0.45, "the answer must not wait for the slow model"
    assert d["fallback"] is True and "scoring_timeout" in d["reason_codes"]
    assert d["model_version"] is None
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'retention_fail_open_total{cause="scoring_timeout"}' in metrics


def test_a_store_outage_still_answers_without_risky_offers(app_factory, backend, tmp_path):
    app = app_factory()
    client = app.test_client()
    _decide(client, request_id="warm-up")  # the key is now verified and cached
    rt = app.extensions["retention"]
    rt.close()
    rt.database_url = (f"sqlite:///{tmp_path}/missing-dir/x.db" if backend == "sqlite"
                       else "postgresql+psycopg://postgres@127.0.0.1:1/test?connect_timeout=1")
    d = _decide(client, request_id="during-outage", reason="temporary")
    assert d["recorded"] is False and "store_unavailable" in d["reason_codes"] and "spooled" in d["reason_codes"]
    assert d["offer"]["type"] in ("none", "followup")  # no history: no offer a guardrail could forbid
    assert "history_unavailable" in d["reason_codes"]
    ready = client.get("/readyz", headers=headers("admin"))
    assert ready.status_code == 200 and ready.get_json()["status"] == "degraded" and "store" in ready.get_json()["degraded"]
    out = post(client, f"/v1/decisions/{d['decision_id']}/outcome", {"outcome": "declined"})
    assert out.status_code == 202 and out.get_json()["recorded_at"] is None  # spooled, see test_store_outage
    assert ready.get_json()["checks"]["spool"]["waiting"] >= 1
    events = post(client, "/v1/events", {"events": [{"event_id": "e-out", "type": "payment", "customer_id": "c",
                                                      "occurred_at": "2026-11-20T10:00:00Z", "amount": 1.0}]},
                  role="events")
    assert events.status_code == 503 and events.headers["Retry-After"]  # billing retries events itself
    assert 'cause="store"' in client.get("/metrics").get_data(as_text=True)


def test_a_model_that_cannot_score_is_refused_at_start(app_factory, models_root, tmp_path):
    from retention.artifacts import RESERVED_KEYS, read_metadata, save_artifact
    from retention.features import FEATURE_VERSION

    meta = read_metadata(next(p for p in models_root.iterdir() if p.is_dir()))
    broken_root = tmp_path / "broken-models"
    # an artifact whose offer-response model has no served (compiled) form: refused, the rules decide
    save_artifact(broken_root, {"offer_response": "not a model", "churn_risk": None},
                  {k: v for k, v in meta.items() if k not in RESERVED_KEYS + ("compiled",)},
                  feature_version=FEATURE_VERSION)
    client = app_factory(MODELS_DIR=str(broken_root)).test_client()
    d = _decide(client, reason="temporary")
    assert d["fallback"] is True and "model_unavailable" in d["reason_codes"]
    assert "no served form" in client.get("/readyz", headers=headers("admin")).get_json()["checks"]["model"]["error"]


@pytest.mark.slow  # a fresh interpreter importing the service: ~1.6 s alone, ~3.5 s beside another worker
def test_the_service_serves_the_compiled_model_without_scikit_learn_or_pandas(migrated_url, models_root):
    """Workers load numpy arrays, not a pickle: no code runs on load, and ~100 MB of libraries stay out."""
    import subprocess
    import sys

    code = ("import sys; from service import create_app; "
            f"app = create_app({{'DATABASE_URL': {migrated_url!r}, 'MODELS_DIR': {str(models_root)!r}, "
            "'MODEL_VERSION': 'latest'}); "
            "assert app.extensions['retention'].model_version; "
            "print(sorted(m for m in ('sklearn', 'pandas', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_during_a_store_outage_idempotency_stays_scoped_per_client(app_factory, backend, migrated_url, tmp_path):
    """Two clients using one request_id while the store is down: each gets, and on a retry gets back, a
    spooled decision of its own; the replay stores both, one per client, and retries afterwards get them."""
    from support import post as post_as

    from store import Store

    app = app_factory()
    client = app.test_client()
    body = decision_body(request_id="shared-during-outage", reason="temporary")
    for role in ("decide", "admin"):
        assert post_as(client, "/v1/decisions", decision_body(request_id=f"warm-up-{role}"), role=role).status_code == 201
    rt = app.extensions["retention"]
    rt.close()
    rt.database_url = (f"sqlite:///{tmp_path}/missing-dir/x.db" if backend == "sqlite"
                       else "postgresql+psycopg://postgres@127.0.0.1:1/test?connect_timeout=1")
    mine = post_as(client, "/v1/decisions", body).get_json()
    theirs = post_as(client, "/v1/decisions", body, role="admin").get_json()
    assert "spooled" in mine["reason_codes"] and "spooled" in theirs["reason_codes"]
    assert mine["decision_id"] != theirs["decision_id"]
    assert post_as(client, "/v1/decisions", body).get_json()["decision_id"] == mine["decision_id"]
    assert post_as(client, "/v1/decisions", body, role="admin").get_json()["decision_id"] == theirs["decision_id"]
    with Store.from_url(migrated_url) as store:
        assert rt.spool.replay(store)["decision"] == 2
        assert store.get_decision_by_request("test-decide", "shared-during-outage")["decision_id"] == mine["decision_id"]
        assert store.get_decision_by_request("test-admin", "shared-during-outage")["decision_id"] == theirs["decision_id"]
    rt.close()
    rt.database_url = migrated_url
    again = post_as(client, "/v1/decisions", body, role="admin")
    assert again.status_code == 200 and again.get_json()["decision_id"] == theirs["decision_id"]
