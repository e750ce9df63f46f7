"""An offer experiment end to end through the real API (Flask app, real store on SQLite and PostgreSQL):
simulated customers cancel, the experiment assigns arms after the guardrails, outcomes and billing events
are posted back as the simulator's true probabilities say, and the results endpoint must recover what is
true: the arms ranked as the truth ranks them wherever the data can tell them apart, and intervals that
contain the true differences everywhere else."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from click.testing import CliRunner
from support import KEYS, FlaskApi, experiments_file, make_app, seed_clients

from cli import main
from retention.experiments import HOLDOUT, load_experiments
from retention.offers import load_catalog
from training.experiment_sim import REPORT_DELAY_DAYS, run

EXPERIMENT = "offer-variants"


@pytest.fixture
def experiment_app(migrated_url, models_root, tmp_path):
    seed_clients(migrated_url)
    path = experiments_file(tmp_path / "experiments.toml", EXPERIMENT)
    app = make_app(migrated_url, models_root, EXPERIMENTS_PATH=str(path))
    yield app, path
    app.extensions["retention"].close()


@pytest.mark.slow
def test_an_experiment_served_through_the_api_recovers_the_true_ordering(experiment_app, sim_dir, migrated_url,
                                                                         tmp_path):
    app, path = experiment_app
    api = FlaskApi(app.test_client())
    sim = run(api, sim_dir, load_catalog(), limit=2500, seed=3, tag="e2e")
    as_of = datetime.fromisoformat(sim["last_decision_at"]) + timedelta(days=REPORT_DELAY_DAYS)
    status, result = api.get(f"/v1/experiments/{EXPERIMENT}/results", params={"as_of": as_of.isoformat()})
    assert status == 200, result
    truth = sim["truth"]
    arms = {a["name"]: a for a in result["arms"]}
    assert set(arms) == {"model", "discount_50_2m", "pause_1m", HOLDOUT} == set(truth)
    # Assignment was by design: no sample-ratio alarm, every arm populated, the holdout about 10%.
    assert not result["srm"]["assigned"]["alarm"] and not result["srm"]["exposed"]["alarm"]
    entered = sum(a["assigned"] for a in arms.values())
    assert entered == sim["entered"] and 0.06 < arms[HOLDOUT]["assigned"] / entered < 0.14
    # Exposures are the ~98% of decisions whose answer was shown.
    assert 0.95 < sum(a["exposed"] for a in arms.values()) / entered < 1.0

    for metric in ("retained_30", "net_revenue_90"):
        comparisons = [c for c in result["comparisons"] if c["metric"] == metric]
        assert len(comparisons) == 5  # 2 variants vs control, 3 arms vs holdout
        for c in comparisons:
            true_diff = truth[c["arm"]][metric] - truth[c["baseline"]][metric]
            half = (c["high"] - c["low"]) / 2
            if abs(true_diff) > 1.5 * half:  # the data can tell these two apart: the order must be right
                assert (c["difference"] > 0) == (true_diff > 0), (metric, c, true_diff)
            else:  # too close to call: the interval must then contain the truth
                assert c["low"] - 0.25 * half <= true_diff <= c["high"] + 0.25 * half, (metric, c, true_diff)
            assert c["always_valid_low"] <= c["low"] and c["always_valid_high"] >= c["high"]
    # The clearest contrasts of this design come out significant after Holm's correction.
    by = {(c["metric"], c["arm"], c["baseline"]): c for c in result["comparisons"]}
    assert by[("retained_30", "model", HOLDOUT)]["significant"]
    assert by[("net_revenue_90", "pause_1m", "model")]["significant"]

    # The command line reads the same store and gives the same result, with the HTML report.
    cli = CliRunner().invoke(main, ["experiment", "report", EXPERIMENT, "--file", str(path), "--database-url",
                                    migrated_url, "--as-of", as_of.strftime("%Y-%m-%dT%H:%M:%S.%f"),
                                    "--json", str(tmp_path / "r.json"), "--html", str(tmp_path / "r.html")])
    assert cli.exit_code == 0, cli.output
    offline = json.loads((tmp_path / "r.json").read_text())
    assert offline["arms"] == result["arms"] and offline["comparisons"] == result["comparisons"]
    assert "sample-ratio check on assigned" in cli.output and (tmp_path / "r.html").stat().st_size > 10_000


def test_eligibility_comes_before_assignment(experiment_app):
    """Annual plans cannot be paused, so they never enter an experiment with a pause arm: they are decided by
    the normal policy and counted in no arm."""
    app, path = experiment_app
    api = FlaskApi(app.test_client())
    book = load_experiments(load_catalog(), path)
    entered = 0
    for i in range(60):
        cid = f"annual-{i}"
        status, d = api.post("/v1/decisions", {
            "request_id": f"annual-{i}", "customer_id": cid, "reason": "too_expensive", "plan_id": "plus_annual",
            "price": 149.0, "billing_period": "annual", "billing_channel": "web"})
        assert status == 201
        assert d["experiment"] is None and "experiment_variant_ineligible" in d["reason_codes"]
        status, d = api.post("/v1/decisions", {
            "request_id": f"monthly-{i}", "customer_id": cid, "reason": "too_expensive", "plan_id": "plus_monthly",
            "price": 14.95, "billing_period": "monthly", "billing_channel": "web"})
        arm = d["experiment"]
        assert arm is not None and arm["variant"] == book.get(EXPERIMENT).variant_of(cid)
        entered += 1
        if arm["kind"] == "offer":
            assert d["offer"]["id"] == arm["offer"]
        if arm["variant"] == HOLDOUT:
            assert d["offer"]["id"] == "none" and "experiment_holdout" in d["reason_codes"]
    status, result = api.get(f"/v1/experiments/{EXPERIMENT}/results")
    assert status == 200 and sum(a["assigned"] for a in result["arms"]) == entered


def test_results_need_an_admin_and_a_known_experiment(experiment_app):
    app, _ = experiment_app
    client = app.test_client()
    r = client.get(f"/v1/experiments/{EXPERIMENT}/results", headers={"Authorization": f"Bearer {KEYS['decide']}"})
    assert r.status_code == 403
    admin = {"Authorization": f"Bearer {KEYS['admin']}"}
    assert client.get("/v1/experiments/nope/results", headers=admin).status_code == 404
    r = client.get(f"/v1/experiments/{EXPERIMENT}/results?as_of=yesterday", headers=admin)
    assert r.status_code == 422 and "as_of" in r.get_json()["errors"]["query"]
    listed = client.get("/v1/experiments", headers=admin).get_json()
    assert [e["name"] for e in listed["experiments"]] == [EXPERIMENT] and listed["experiments"][0]["running"]


def test_the_command_line_names_the_file_and_the_problem(tmp_path):
    bad = tmp_path / "experiments.toml"
    experiments_file(bad, EXPERIMENT)
    bad.write_text(bad.read_text().replace("discount_50_2m\" }", "discount_99_9m\" }"))
    out = CliRunner().invoke(main, ["experiment", "check", "--file", str(bad)])
    assert out.exit_code == 2 and str(bad) in out.output and "discount_99_9m" in out.output
    out = CliRunner().invoke(main, ["experiment", "report", "nope", "--file", str(experiments_file(bad, EXPERIMENT))])
    assert out.exit_code == 2 and "no experiment named 'nope'" in out.output
    out = CliRunner().invoke(main, ["experiment", "sample-size", "--baseline", "0.30", "--mde", "0.05"])
    assert out.exit_code == 0 and out.output.startswith("1,377 exposed customers per arm")
    out = CliRunner().invoke(main, ["experiment", "sample-size", "--baseline", "0.98", "--mde", "0.05"])
    assert out.exit_code == 2 and "error" in out.output.lower()
