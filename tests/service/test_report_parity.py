"""`retention experiment report` and `GET /v1/experiments/<name>/results` are one use case: with the same
store, experiments file and catalog (RETENTION_CATALOG) they give the same analysis. Offer costs come from
the catalog, so a report computed with another catalog than the service's would misstate net revenue."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from click.testing import CliRunner
from support import FlaskApi, experiments_file, make_app, seed_clients

from cli import main
from retention.offers import DEFAULT_CATALOG, load_catalog
from training.experiment_sim import REPORT_DELAY_DAYS, run


@pytest.mark.slow
def test_the_cli_report_equals_the_api_results_under_the_services_catalog(migrated_url, models_root, sim_dir,
                                                                          tmp_path):
    # A catalog in which the credit costs 10 instead of 4: every accepted credit lowers net revenue by 6 more.
    catalog_path = tmp_path / "offers.toml"
    catalog_path.write_text(DEFAULT_CATALOG.read_text().replace("cost = 4.0", "cost = 10.0")
                            .replace('version = "2026-11-25"', 'version = "costly-credit"'))
    experiments = experiments_file(tmp_path / "experiments.toml", "credit", holdout=0.0, variants=(
        '[{ name = "model", kind = "model" }, { name = "credit_1", kind = "offer", offer = "credit_1" }]'))
    seed_clients(migrated_url)
    app = make_app(migrated_url, models_root, CATALOG_PATH=str(catalog_path), EXPERIMENTS_PATH=str(experiments))
    try:
        api = FlaskApi(app.test_client())
        sim = run(api, sim_dir, load_catalog(catalog_path), limit=300, seed=5, tag="parity")
        as_of = datetime.fromisoformat(sim["last_decision_at"]) + timedelta(days=REPORT_DELAY_DAYS)
        status, served = api.get("/v1/experiments/credit/results", params={"as_of": as_of.isoformat()})
    finally:
        app.extensions["retention"].close()
    assert status == 200, served
    credit = next(a for a in served["arms"] if a["name"] == "credit_1")
    assert credit["metrics"]["accepted"]["successes"] > 20  # enough accepted credits for the cost to show

    out = tmp_path / "report.json"
    result = CliRunner().invoke(main, ["experiment", "report", "credit", "--file", str(experiments),
                                       "--as-of", as_of.isoformat(), "--json", str(out)],
                                env={"RETENTION_CATALOG": str(catalog_path), "DATABASE_URL": migrated_url},
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    offline = json.loads(out.read_text())
    assert offline["arms"] == served["arms"] and offline["comparisons"] == served["comparisons"]
