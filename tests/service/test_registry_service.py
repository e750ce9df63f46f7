"""The service serves the registry's champion (its default RETENTION_MODEL): a trained version is not served
until promoted, a promotion and a rollback are picked up by a reload, and /v1/model says which answered."""

from __future__ import annotations

from support import decision_body, headers, make_app, seed_clients

from retention.registry import move_alias


def _decide(client, i: int) -> dict:
    r = client.post("/v1/decisions", json=decision_body(request_id=f"reg-{i}", customer_id=f"reg-{i}"),
                    headers=headers())
    assert r.status_code == 201, r.get_json()
    return r.get_json()


def test_the_champion_is_served_and_a_candidate_is_not(migrated_url, models_root, trained):
    seed_clients(migrated_url)
    candidate = trained.name
    app = make_app(migrated_url, models_root, MODEL_VERSION="champion")
    runtime = app.extensions["retention"]
    try:
        client = app.test_client()
        # trained, never promoted: the rules decide and readiness says what to do
        d = _decide(client, 0)
        assert d["model_version"] is None and "model_unavailable" in d["reason_codes"]
        ready = client.get("/readyz", headers=headers("admin"))
        assert ready.status_code == 503
        assert "no champion model version yet" in ready.get_json()["checks"]["model"]["error"]
        assert "retention models promote" in ready.get_json()["checks"]["model"]["error"]
        # promoted: the reload (what SIGHUP triggers) serves it
        move_alias(models_root, "champion", candidate, action="promote", reason="test")
        assert runtime.reload_model()["serving"] == candidate
        d = _decide(client, 1)
        assert d["model_version"] == candidate and not d["fallback"]
        assert client.get("/readyz").status_code == 200
        model = client.get("/v1/model", headers=headers("admin")).get_json()
        assert model["model_version"] == candidate and model["model_ref"] == "champion"
        assert model["registry"] == {"aliases": {"champion": candidate}, "serving_champion": True}
        # a second version promoted, then rolled back: each reload serves the registry's champion
        second = models_root / "20991231T000000Z-copy0000"
        import shutil

        shutil.copytree(models_root / candidate, second)
        move_alias(models_root, "champion", second.name, action="promote", reason="test")
        # promoted but not yet reloaded: /v1/model says the champion is not what this process serves
        assert client.get("/v1/model", headers=headers("admin")).get_json()["registry"]["serving_champion"] is False
        runtime.reload_model()
        assert runtime.model_ref == "champion" and runtime.policy.scorer is not None
        assert runtime.reload_error is None
        move_alias(models_root, "champion", candidate, action="rollback", reason="test")
        assert runtime.reload_model()["serving"] == candidate
    finally:
        runtime.close()
