"""The `retention` command's contract with the data team: invalid input exits exactly 2 with an `error:` line
(1 would mean a bug), every command reads the configuration the service reads (the same environment
variables), and what a command needs at run time is installed with the package."""

from __future__ import annotations

import importlib.metadata
import json
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from packaging.requirements import Requirement
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from cli import main
from retention.offers import DEFAULT_CATALOG
from retention.policy import DEFAULT_POLICY
from store.db import upgrade
from training.experiment_sim import HttpClient

EXPERIMENTS = """
[[experiment]]
name = "xp"
start = 2026-01-01T00:00:00Z
variants = [{ name = "model", kind = "model" }, { name = "none", kind = "none" }]
"""


def run(*args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)


@pytest.fixture
def workspace(tmp_path) -> dict[str, Path | str]:
    """Files the commands below read: an experiments file, an empty models folder, a migrated SQLite store,
    a folder that is not empty."""
    (tmp_path / "experiments.toml").write_text(EXPERIMENTS)
    (tmp_path / "models").mkdir()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade(url)
    return {"xp": tmp_path / "experiments.toml", "models": tmp_path / "models", "full": tmp_path / "full",
            "url": url, "tmp": tmp_path}


# (arguments, what the error line must say); {name} is filled from the workspace fixture.
INVALID = [
    (("experiment", "report", "nope", "--file", "{xp}", "--database-url", "{url}"), "no experiment named 'nope'"),
    (("experiment", "report", "xp", "--file", "{xp}", "--database-url", "postgresql+psycopg://x@127.0.0.1:9/x"),
     "database"),
    (("experiment", "check", "--file", "{full}/x"), "full/x"),
    (("experiment", "sample-size", "--baseline", "0.98", "--mde", "0.05"), "error"),
    (("evaluate", "--models", "{models}"), "no trained model versions"),
    (("load-features", "--models", "{models}"), "give exactly one of --data DIR or --from-store"),
    (("score", "--data", "{tmp}", "--as-of", "2026-01-01", "--out", "{tmp}/scores.txt"), "must end in .parquet"),
    (("db", "current", "--database-url", "not a url"), "not a url"),
    (("keys", "revoke", "--name", "nobody", "--database-url", "{url}"), "no client named 'nobody'"),
    (("simulate", "--customers", "10", "--out", "{full}"), "not empty"),
    (("validate", "--data", "{full}"), "missing table file"),
    (("train", "--data", "{full}", "--out", "{models}"), "missing table file"),
    (("export", "--out", "{full}", "--database-url", "{url}"), "not an empty directory"),
    (("offers", "--catalog", "{full}/x"), "full/x"),
]


@pytest.mark.parametrize("args, says", INVALID, ids=[" ".join(a[:2]) for a, _ in INVALID])
def test_invalid_input_exits_2_with_an_error_line(workspace, args, says):
    result = run(*(a.format(**workspace) for a in args))
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert errors and says.lower() in result.output.lower(), result.output
    assert "Traceback" not in result.output


def test_offers_reads_the_catalog_the_service_reads(tmp_path):
    catalog = tmp_path / "offers.toml"
    catalog.write_text(DEFAULT_CATALOG.read_text().replace('version = "2026-12-01"', 'version = "staging-7"'))
    assert "catalog version staging-7" in run("offers", env={"RETENTION_CATALOG": str(catalog)}).output
    assert "catalog version 2026-12-01" in run("offers").output


@pytest.mark.slow
def test_evaluate_policy_decides_with_the_configured_rules(trained, sim_dir, tmp_path):
    """RETENTION_POLICY changes the rules the evaluation's fallback policy uses, as it does in the service:
    rules that never offer anything are worth exactly nothing."""
    text = DEFAULT_POLICY.read_text()
    head, _ = text.split("[fallback.default]")
    reasons = ("too_expensive", "not_using", "temporary", "technical", "content", "switching", "other")
    never = head + "[fallback.default]\n" + "".join(f"{r} = []\n" for r in reasons)
    (tmp_path / "policy.toml").write_text(never)
    out = tmp_path / "policy.json"
    args = ("evaluate-policy", "--models", trained.parent, "--model", trained.name, "--data", sim_dir, "--limit", 150,
            "--out", out)
    result = run(*args, env={"RETENTION_POLICY": str(tmp_path / "policy.toml")})
    assert result.exit_code == 0, result.output
    rules = json.loads(out.read_text())["policies"]["rules"]
    assert rules["offer_rate"] == 0 and rules["mean"] == 0
    assert run(*args).exit_code == 0  # the checked-in rules do make offers
    assert json.loads(out.read_text())["policies"]["rules"]["offer_rate"] > 0.3


def test_what_the_commands_import_is_installed_with_the_package():
    """`retention experiment simulate` talks HTTP through requests: a runtime dependency, not a dev extra."""
    runtime = {Requirement(r).name for r in importlib.metadata.requires("retention-offers")
               if Requirement(r).marker is None}
    assert {"requests", "click", "jinja2"} <= runtime


def test_the_experiment_client_sends_query_values_encoded(tmp_path):
    """A `+` in a time zone offset must arrive as `+`, not as a space (the old client encoded by hand)."""
    seen = {}

    @Request.application
    def app(request):
        seen.update(request.args)
        return Response(json.dumps({"ok": True}), content_type="application/json")

    server = make_server("127.0.0.1", 0, app)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = HttpClient(f"http://127.0.0.1:{server.server_port}", "key")
        status, body = client.get("/v1/experiments/xp/results", params={"as_of": "2027-03-11T10:00:00.5+00:00"})
    finally:
        server.shutdown()
    assert status == 200 and body == {"ok": True}
    assert seen == {"as_of": "2027-03-11T10:00:00.5+00:00"}
