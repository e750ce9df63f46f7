"""Staleness and drift as the operator sees them: /readyz names a feature snapshot older than the configured
maximum (and decisions go on), /metrics shows the snapshot's age and the drift gauges, and `retention drift`
prints per-feature PSI and the offer mix for decisions whose features were shifted on purpose."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from support import decision_body, headers, make_app, post, seed_clients

from cli import main
from retention.configfiles import ConfigError
from retention.features import FEATURE_VERSION, FeatureSpec
from retention.offers import load_catalog
from service.monitoring import MonitoringSettings

LIVE = 400  # decisions per test: enough that an unshifted feature stays well below 0.1 (noise ~0.03)


@pytest.fixture(scope="module")
def training_rows(trained, sim_dir) -> list[dict]:
    """LIVE of the offer model's own training rows as decision features: live traffic that has not drifted."""
    from training.dataset import open_dataset, resolve_window_end
    from training.train import response_rows

    meta = json.loads((trained / "metadata.json").read_text())
    rows = response_rows(open_dataset(sim_dir), load_catalog(), FeatureSpec.from_dict(meta["feature_spec"]),
                         resolve_window_end(sim_dir, None)).sample(LIVE, random_state=3)
    names = FeatureSpec.from_dict(meta["feature_spec"]).names
    return [{"reason": r["reason"], "features": {k: (None if isinstance(v, float) and math.isnan(v) else v)
                                                 for k, v in r.items() if k in names}}
            for r in rows[[*names, "reason"]].to_dict("records")]


def shifted(row: dict) -> dict:
    """Prices 30 above anything seen at training, and listening minutes unknown."""
    return {**row["features"], "price": row["features"]["price"] + 30.0, "listening_minutes_30d": None}


def record_decisions(store, rows: list[dict], model_version: str, features=lambda r: r["features"],
                     offer: str = "none", tag: str = "d", created_at: datetime | None = None) -> None:
    for i, row in enumerate(rows):
        store.record_decision({
            "request_id": f"{tag}-{i}", "body_hash": "h", "client": "test", "customer_id": f"{tag}-c{i}",
            "reason": row["reason"], "request": {}, "features": features(row), "scores": {}, "offer_id": offer,
            "offer": {"type": offer}, "propensity": 1.0, "reason_codes": [], "policy_version": "p",
            "catalog_version": "c", "fallback": False, "latency_ms": 1.0, "nps_segment": "none",
            "model_version": model_version, **({"created_at": created_at} if created_at else {})})


def snapshot_aged(store, hours: float) -> None:
    store.replace_feature_snapshot([("c00000001", {"price": 9.95})], datetime.now(UTC) - timedelta(hours=hours),
                                   FEATURE_VERSION, "test", source="test")


# ------------------------------------------------------------------------------------------- /readyz


def test_a_snapshot_older_than_the_maximum_is_named_and_decisions_go_on(client, app):
    snapshot_aged(app.extensions["retention"].store, hours=72)
    ready = client.get("/readyz", headers=headers("admin"))
    body = ready.get_json()
    # Listed as degraded with the reason, but no 503: every replica reads the same snapshot, and the load
    # balancer must not take them all out of service for it.
    assert ready.status_code == 200 and body["degraded"] == ["features"]
    features = body["checks"]["features"]
    assert features["ok"] is False and features["max_age_hours"] == 48 and features["age_hours"] == 72.0
    assert "older than the maximum of 48 h" in features["error"] and "retention load-features" in features["error"]
    d = post(client, "/v1/decisions", decision_body(request_id="stale-1"))
    assert d.status_code == 201 and d.get_json()["fallback"] is False


def test_a_fresh_snapshot_is_ready(client, app):
    snapshot_aged(app.extensions["retention"].store, hours=1)
    body = client.get("/readyz", headers=headers("admin")).get_json()
    assert body["status"] == "ready" and body["degraded"] == []
    assert body["checks"]["features"]["ok"] is True and body["checks"]["features"]["age_hours"] == 1.0


def test_the_maximum_age_is_configuration_and_off_disables_it(migrated_url, models_root):
    seed_clients(migrated_url)
    for setting, degraded in (("12", ["features"]), ("off", []), ("0", [])):
        app = make_app(migrated_url, models_root, MAX_FEATURE_AGE_HOURS=setting)
        try:
            snapshot_aged(app.extensions["retention"].store, hours=24)
            body = app.test_client().get("/readyz").get_json()
            assert body["degraded"] == degraded, setting
        finally:
            app.extensions["retention"].close()


@pytest.mark.parametrize("setting", ["soon", "-1", "nan"])
def test_a_bad_maximum_age_stops_the_service_at_start(migrated_url, models_root, setting):
    with pytest.raises(ConfigError) as error:
        MonitoringSettings.from_config({"MAX_FEATURE_AGE_HOURS": setting, "DRIFT_MAX_DECISIONS": "1.5"})
    assert error.value.lines == (
        f"RETENTION_MAX_FEATURE_AGE_HOURS: must be a number >= 0 or off, got {setting!r}",
        "RETENTION_DRIFT_MAX_DECISIONS: must be a whole number >= 1, got '1.5'")
    with pytest.raises(SystemExit) as stopped:  # as for a broken config file: no traceback, gunicorn halts
        make_app(migrated_url, models_root, MAX_FEATURE_AGE_HOURS=setting)
    assert stopped.value.code == 3


# ------------------------------------------------------------------------------------------ /metrics


def _gauge(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


def test_metrics_show_the_snapshot_age_and_the_drift_gauges(client, app, training_rows):
    rt = app.extensions["retention"]
    snapshot_aged(rt.store, hours=30)
    record_decisions(rt.store, training_rows, rt.model_version, features=shifted)
    client.get("/metrics")  # starts the drift computation in the background
    rt.monitor.refresh_drift(rt, wait=True)  # waits for the one running (starts none: not due)
    text = client.get("/metrics").get_data(as_text=True)
    assert _gauge(text, "retention_feature_snapshot_age_seconds") == pytest.approx(30 * 3600, abs=120)
    price = _gauge(text, 'retention_feature_psi{feature="price"}')
    listening = _gauge(text, 'retention_feature_psi{feature="listening_minutes_30d"}')
    assert price > 0.25 and listening > 0.25
    assert _gauge(text, "retention_feature_psi_max") == pytest.approx(max(price, listening))
    assert _gauge(text, 'retention_feature_psi{feature="tenure_days"}') < 0.1  # not shifted
    assert _gauge(text, "retention_offer_mix_psi") > 0.25  # the model's policy offers far more than nothing
    assert _gauge(text, "retention_drift_decisions") == LIVE


def test_the_drift_is_recomputed_only_when_due(app, training_rows):
    rt = app.extensions["retention"]
    assert rt.monitor.refresh_drift(rt) is True  # the first one
    assert rt.monitor.refresh_drift(rt) is False  # 300 s have not passed
    assert rt.monitor.refresh_drift(rt, force=True) is True
    assert rt.monitor.last_drift_seconds is not None


# ---------------------------------------------------------------------------------------- the CLI


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_retention_drift_reports_the_features_that_were_shifted(store, migrated_url, trained, training_rows):
    version = json.loads((trained / "metadata.json").read_text())["version"]
    record_decisions(store, training_rows, version, features=shifted)
    record_decisions(store, training_rows[:50], version, tag="old", offer="followup",
                     created_at=datetime.now(UTC) - timedelta(days=30))  # outside the window
    result = run("drift", "--models", trained.parent, "--model", trained.name, "--days", 7,
                 "--database-url", migrated_url)
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"drift of {LIVE} decision(s) of the last 7 day(s) against model {version}" in out
    verdicts = {m.group(1): m.group(3) for m in re.finditer(r"^  (\w+) +(\d+\.\d{4})  (\w+)", out, re.MULTILINE)}
    assert verdicts["price"] == "major" and verdicts["listening_minutes_30d"] == "major"
    unshifted = {k: v for k, v in verdicts.items() if k not in ("price", "listening_minutes_30d")}
    assert len(unshifted) > 20 and set(unshifted.values()) == {"stable"}, out
    assert re.search(r"^max PSI \d+\.\d{4} \((price|listening_minutes_30d)\): major$", out, re.MULTILINE)
    assert re.search(r"^  listening_minutes_30d .* \(missing\) +0\.0% +100\.0%$", out, re.MULTILINE)
    assert "against the served policy (model)" in out
    assert re.search(r"^offer-mix PSI \d+\.\d{4} \(noise \d\.\d{4}\): major$", out, re.MULTILINE)


def test_retention_drift_on_a_version_without_a_reference(store, migrated_url, trained, training_rows, tmp_path):
    import shutil

    old = tmp_path / "models" / trained.name
    shutil.copytree(trained, old)
    meta = json.loads((old / "metadata.json").read_text())
    del meta["feature_reference"]
    (old / "metadata.json").write_text(json.dumps(meta))
    record_decisions(store, training_rows[:20], meta["version"])
    result = run("drift", "--models", old.parent, "--database-url", migrated_url)
    assert result.exit_code == 0, result.output
    assert "features: no reference in this model version" in result.output
    assert "offer-mix PSI" in result.output  # the gate's offer mix was recorded before


@pytest.mark.parametrize("args, says", [
    (("--days", "0"), "--days must be a number of days above 0"),
    (("--days", "-3"), "--days must be a number of days above 0"),
    (("--limit", "0"), "--limit must be at least 1"),
    (("--model", "nope"), "unknown model version 'nope'"),
    (("--database-url", "not a url"), "not a database url"),
])
def test_retention_drift_refuses_bad_arguments(trained, migrated_url, args, says):
    base = {"--models": str(trained.parent), "--database-url": migrated_url}
    given = dict(zip(args[::2], args[1::2], strict=True))
    result = run("drift", *[x for k, v in {**base, **given}.items() for x in (k, v)])
    assert result.exit_code == 2, result.output
    assert any(line.startswith("error: ") for line in result.output.splitlines())
    assert says.lower() in result.output.lower() and "Traceback" not in result.output
