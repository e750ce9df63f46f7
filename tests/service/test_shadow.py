"""The registry's challenger is scored beside the champion on live requests: its choice is stored with the
decision, never shown, and `retention models compare --traffic-days` reports how often the two agreed."""

from __future__ import annotations

import shutil

from click.testing import CliRunner
from sqlalchemy import select
from support import decision_body, headers, make_app, seed_clients

from cli import main
from retention.registry import move_alias
from store.models import Decision

CHALLENGER = "20991231T000000Z-challenger"


def test_the_challenger_is_scored_in_the_shadow_and_compared_on_live_traffic(migrated_url, models_root, trained):
    seed_clients(migrated_url)
    shutil.copytree(models_root / trained.name, models_root / CHALLENGER)
    move_alias(models_root, "champion", trained.name, action="promote", reason="test")
    move_alias(models_root, "challenger", CHALLENGER, action="promote", reason="test")
    app = make_app(migrated_url, models_root, MODEL_VERSION="champion")
    runtime = app.extensions["retention"]
    try:
        client = app.test_client()
        model = client.get("/v1/model", headers=headers("admin")).get_json()
        assert model["challenger"] == {"version": runtime.challenger_version, "error": None}
        answers = [client.post("/v1/decisions", headers=headers(),
                               json=decision_body(request_id=f"sh-{i}", customer_id=f"sh-{i}")).get_json()
                   for i in range(40)]
        assert all("shadow" not in a and a["model_version"] == runtime.model_version for a in answers)
        with runtime.store.engine.connect() as conn:
            stored = [scores["shadow"] for (scores,) in conn.execute(select(Decision.scores))]
    finally:
        runtime.close()
    assert len(stored) == 40 and all(s["agrees"] and s["error"] is None for s in stored)  # the same model
    result = CliRunner().invoke(main, ["models", "compare", "champion", "challenger", "--models", str(models_root),
                                       "--traffic-days", "1", "--database-url", migrated_url])
    assert result.exit_code == 0, result.output
    assert "agreed with champion" in result.output and "on 40 of 40 live decisions (100.0%)" in result.output
