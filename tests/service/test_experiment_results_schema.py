"""GET /v1/experiments/<name>/results documents its answer (service.schemas.ExperimentResultSchema) and answers
exactly the JSON form of the typed result (retention.jsonvalues.jsonable: NaN and infinities as null), byte for
byte the body the endpoint served before the result had a type; and `retention experiment simulate`, which reads
that answer back (ExperimentResult.from_json), prints and writes what `retention experiment report` would."""

from __future__ import annotations

import dataclasses
import json
import threading
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from support import KEYS, FlaskApi, experiments_file, make_app, seed_clients
from werkzeug.serving import make_server

from cli import main
from reports.experiment import render_html
from reports.text import experiment_text
from retention.experiment_analysis import ExperimentResult, experiment_results
from retention.jsonvalues import jsonable
from retention.offers import load_catalog
from service.schemas import ExperimentResultSchema
from training.experiment_sim import REPORT_DELAY_DAYS, run

EXPERIMENT = "schema-check"
ADMIN = {"Authorization": f"Bearer {KEYS['admin']}"}


@pytest.fixture
def experiment_app(migrated_url, models_root, tmp_path):
    path = experiments_file(tmp_path / "experiments.toml", EXPERIMENT)
    seed_clients(migrated_url)
    app = make_app(migrated_url, models_root, EXPERIMENTS_PATH=str(path))
    yield app
    app.extensions["retention"].close()


def _typed(app, as_of: datetime) -> ExperimentResult:
    runtime = app.extensions["retention"]
    return experiment_results(runtime.policy.experiments, runtime.catalog, runtime.store.experiment_records,
                              EXPERIMENT, as_of)


@pytest.mark.slow
def test_the_body_is_the_json_form_of_the_typed_result(experiment_app, sim_dir):
    app = experiment_app
    client = app.test_client()
    sim = run(FlaskApi(client), sim_dir, load_catalog(), limit=300, seed=5, tag="schema")
    last = datetime.fromisoformat(sim["last_decision_at"])
    # A day after the last decision nothing has matured (NaN estimates, no plan); 100 days after, everything.
    for as_of in (last + timedelta(days=1), last + timedelta(days=REPORT_DELAY_DAYS)):
        r = client.get(f"/v1/experiments/{EXPERIMENT}/results", query_string={"as_of": as_of.isoformat()},
                       headers=ADMIN)
        assert r.status_code == 200, r.get_data(as_text=True)
        result = _typed(app, as_of)
        with app.app_context():  # what the view answered when it returned jsonable(result) itself
            before = app.json.response(jsonable(result)).get_data()
        assert r.get_data() == before
        assert r.get_json() == jsonable(result) and "NaN" not in r.get_data(as_text=True)
    assert "null" in client.get(f"/v1/experiments/{EXPERIMENT}/results", headers=ADMIN,
                                query_string={"as_of": (last + timedelta(days=1)).isoformat()}).get_data(as_text=True)


@pytest.mark.slow
def test_the_schema_writes_nan_and_infinity_as_null(experiment_app, sim_dir):
    app = experiment_app
    run(FlaskApi(app.test_client()), sim_dir, load_catalog(), limit=60, seed=6, tag="nan")
    result = _typed(app, datetime.now(UTC) + timedelta(days=40))
    nan, inf = float("nan"), float("inf")
    odd = dataclasses.replace(
        result,
        srm=dataclasses.replace(result.srm, assigned=dataclasses.replace(result.srm.assigned, chi2=inf, p_value=0.0,
                                                                          alarm=True)),
        comparisons=tuple(dataclasses.replace(c, difference=nan, always_valid_low=-inf) for c in result.comparisons))
    dumped = ExperimentResultSchema().dump(odd)
    assert dumped == jsonable(odd)
    assert dumped["srm"]["assigned"]["chi2"] is None and all(c["difference"] is None for c in dumped["comparisons"])


def test_the_document_describes_the_result(client):
    spec = client.get("/openapi.json").get_json()
    ok = spec["paths"]["/v1/experiments/{name}/results"]["get"]["responses"]["200"]
    assert ok["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ExperimentResult"}
    schemas = spec["components"]["schemas"]
    assert list(schemas["ExperimentResult"]["properties"]) == [f.name for f in dataclasses.fields(ExperimentResult)]
    estimate = schemas["MetricEstimate"]["properties"]["estimate"]
    assert estimate.get("nullable") or "null" in estimate.get("type", [])  # null while there is no data yet


@pytest.mark.slow
def test_simulate_renders_the_services_answer_as_report_does(experiment_app, sim_dir, tmp_path):
    app = experiment_app
    server = make_server("127.0.0.1", 0, app)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        out = CliRunner().invoke(main, [
            "experiment", "simulate", "--data", str(sim_dir), "--url", f"http://127.0.0.1:{server.server_port}",
            "--key", KEYS["admin"], "--name", EXPERIMENT, "--limit", "300", "--seed", "7",
            "--json", str(tmp_path / "r.json"), "--html", str(tmp_path / "r.html")], catch_exceptions=False)
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
    assert out.exit_code == 0, out.output
    body = json.loads((tmp_path / "r.json").read_text())
    result = ExperimentResult.from_json(body)
    assert body == jsonable(_typed(app, result.as_of))  # the service's answer, unchanged by the round trip
    assert experiment_text(result) in out.output
    assert (tmp_path / "r.html").read_text(encoding="utf-8") == render_html(result)
    assert "ordering by retained_30: report " in out.output and "truth per arm" in out.output
