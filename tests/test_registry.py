"""The model registry through `retention models ...` and `retention ope`, as the data team uses them: a
trained version is a candidate until promoted; promotion checks the artifact, the gate and (against a
serving champion) logged decisions; every move is recorded; rollback is one command."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import main
from retention.registry import read_registry

PIDFILE = ("--pidfile", "/nonexistent/gunicorn.pid")  # no service to signal in these tests


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def root(trained: Path, tmp_path: Path) -> Path:
    """A models folder holding the session's trained version and a copy of it under another name (the same
    model: a retrain that changed nothing)."""
    root = tmp_path / "models"
    shutil.copytree(trained, root / trained.name)
    shutil.copytree(trained, root / "20991231T000000Z-copy0000")
    return root


def test_a_trained_version_is_a_candidate_until_promoted_and_each_move_is_recorded(root, trained):
    assert read_registry(root).version_of("champion") is None
    listed = _run("models", "list", "--models", root)
    assert listed.exit_code == 0 and "champion" not in listed.output
    result = _run("models", "promote", trained.name, "--models", root, "--reason", "first model", "--by", "ana",
                  *PIDFILE)
    assert result.exit_code == 0, result.output
    assert f"{trained.name} is the champion" in result.output and "no running service found" in result.output
    reg = read_registry(root)
    assert reg.version_of("champion") == trained.name
    (move,) = reg.history
    assert move["action"] == "promote" and move["by"] == "ana" and move["reason"] == "first model"
    assert move["previous"] is None and move["forced"] is False and move["checks"]["gate"]["verdict"] == "model"
    listed = _run("models", "list", "--models", root).output
    assert any(line.startswith(trained.name) and "champion" in line for line in listed.splitlines())
    shown = _run("models", "show", "--models", root)
    assert shown.exit_code == 0 and "(champion)" in shown.output and "checksum" in shown.output
    assert "promote champion: None -> " in shown.output


def test_against_a_serving_champion_the_candidate_must_beat_it_on_logged_decisions(root, trained, sim_dir):
    _run("models", "promote", trained.name, "--models", root, "--reason", "first", *PIDFILE)
    copy = "20991231T000000Z-copy0000"
    # without logged decisions nobody can tell: refused
    blind = _run("models", "promote", copy, "--models", root, "--reason", "retrain", *PIDFILE)
    assert blind.exit_code == 2 and "give --data" in blind.output
    # the same model is not better than itself: refused at margin 0, with the estimate said
    same = _run("models", "promote", copy, "--models", root, "--reason", "retrain", "--data", sim_dir, *PIDFILE)
    assert same.exit_code == 2, same.output
    assert "+0.00 per request against the champion" in same.output and "not above the margin of +0.00" in same.output
    assert read_registry(root).version_of("champion") == trained.name
    # a stated negative margin ("not more than 1 per request worse") lets it through, recorded
    ok = _run("models", "promote", copy, "--models", root, "--reason", "retrain", "--data", sim_dir, "--margin", -1,
              *PIDFILE)
    assert ok.exit_code == 0, ok.output
    reg = read_registry(root)
    assert reg.version_of("champion") == copy and reg.history[-1]["checks"]["ope"]["margin"] == -1
    assert reg.history[-1]["checks"]["ope"]["candidate_minus_champion"]["value"] == pytest.approx(0.0, abs=1e-9)
    # rollback: one command back to the version it replaced
    back = _run("models", "rollback", "--models", root, "--reason", "check", *PIDFILE)
    assert back.exit_code == 0 and f"{trained.name} is the champion again" in back.output
    assert read_registry(root).version_of("champion") == trained.name
    assert read_registry(root).history[-1]["action"] == "rollback"


def test_promoting_the_champion_again_changes_nothing(root, trained):
    _run("models", "promote", trained.name, "--models", root, "--reason", "first", *PIDFILE)
    again = _run("models", "promote", "champion", "--models", root, "--reason", "again", *PIDFILE)
    assert again.exit_code == 0 and "is already the champion: nothing changed" in again.output
    assert len(read_registry(root).history) == 1
    assert "nothing to roll back to" in _run("models", "rollback", "--models", root, "--reason", "x", *PIDFILE).output


def test_force_promotes_past_a_refusal_and_records_what_it_overrode(root, trained):
    _run("models", "promote", trained.name, "--models", root, "--reason", "first", *PIDFILE)
    forced = _run("models", "promote", "20991231T000000Z-copy0000", "--models", root, "--reason", "hotfix", "--force",
                  *PIDFILE)
    assert forced.exit_code == 0 and "forced past" in forced.output
    move = read_registry(root).history[-1]
    assert move["forced"] is True and any("give --data" in r for r in move["checks"]["refusals"])


def test_an_artifact_that_fails_its_checks_is_never_promoted_not_even_forced(root, trained):
    copy = root / "20991231T000000Z-copy0000"
    served = json.loads((copy / "metadata.json").read_text())["compiled"]["offer_response"]["file"]
    with open(copy / served, "ab") as f:
        f.write(b"tampered")
    result = _run("models", "promote", copy.name, "--models", root, "--reason", "x", "--force", *PIDFILE)
    assert result.exit_code == 2 and "error:" in result.output
    assert read_registry(root).version_of("champion") is None


def test_rollback_without_a_previous_champion_says_so(root, trained):
    none = _run("models", "rollback", "--models", root, "--reason", "x", *PIDFILE)
    assert none.exit_code == 2 and "no champion to roll back" in none.output
    _run("models", "promote", trained.name, "--models", root, "--reason", "first", *PIDFILE)
    first = _run("models", "rollback", "--models", root, "--reason", "x", *PIDFILE)
    assert first.exit_code == 2 and "nothing to roll back to" in first.output


def test_a_promotion_signals_the_service_through_its_pidfile(root, trained, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    # a stand-in for the gunicorn master that records the SIGHUP it receives
    marker = tmp_path / "hup"
    code = ("import signal, sys, time, pathlib\n"
            f"signal.signal(signal.SIGHUP, lambda *a: pathlib.Path({str(marker)!r}).write_text('hup'))\n"
            "print('ready', flush=True)\n"
            "time.sleep(30)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        pidfile = tmp_path / "gunicorn.pid"
        pidfile.write_text(f"{proc.pid}\n")
        result = _run("models", "promote", trained.name, "--models", root, "--reason", "deploy", "--pidfile", pidfile)
        assert result.exit_code == 0 and f"gunicorn master {proc.pid}" in result.output
        deadline = time.monotonic() + 5
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.read_text() == "hup"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=5)
        proc.stdout.close()


def test_ope_values_candidates_on_logged_decisions_and_refuses_what_it_cannot(root, trained, sim_dir, tmp_path):
    out = tmp_path / "ope.json"
    result = _run("ope", "--data", sim_dir, "--models", root, "--candidate", trained.name, "--candidate", "rules",
                  "--candidate", "fixed:credit_1", "--candidate", f"{trained.name}@0.2", "--out", out)
    assert result.exit_code == 0, result.output
    r = json.loads(out.read_text())
    assert [c["candidate"] for c in r["candidates"]] == [trained.name, "rules", "fixed:credit_1", f"{trained.name}@0.2"]
    for c in r["candidates"]:
        for estimator in ("ips", "snips", "dr"):
            assert c[estimator]["low"] <= c[estimator]["value"] <= c[estimator]["high"]
        assert c["ess"] > 0
    assert r["reward_model"] == trained.name
    assert "difference from" in result.output and "offer mix" in result.output
    bad = _run("ope", "--data", sim_dir, "--models", root, "--candidate", "fixed:nope")
    assert bad.exit_code == 2 and "not an offer of the catalog" in bad.output
    share = _run("ope", "--data", sim_dir, "--models", root, "--candidate", "latest@0.9")
    assert share.exit_code == 2 and "between 0 and 0.5" in share.output


def test_show_reports_the_drift_of_live_traffic_from_the_versions_training_rows(root, trained, migrated_url):
    _run("models", "promote", trained.name, "--models", root, "--reason", "first", *PIDFILE)
    result = _run("models", "show", "--models", root, "--drift-days", 7, "--database-url", migrated_url)
    assert result.exit_code == 0, result.output
    assert "(champion)" in result.output and "PSI" in result.output


@pytest.mark.slow
def test_a_deliberately_worse_candidate_is_refused(root, trained, sim_dir, tmp_path):
    import duckdb

    # The same history with each customer's last cancel flow ending the other way (those who stayed left the
    # next day, those who left stayed): a model trained on it prefers the offers that lose customers.
    data = tmp_path / "inverted"
    shutil.copytree(sim_dir, data, ignore=shutil.ignore_patterns("_truth"))
    src = sim_dir / "cancel_requests.parquet"
    duckdb.sql(f"""COPY (SELECT * EXCLUDE (last) REPLACE (CASE WHEN last AND ended_at IS NULL
                                                          THEN greatest(requested_at, least(requested_at + INTERVAL 1 HOUR, TIMESTAMP '2026-10-31 23:59:59'))
                                                          WHEN last THEN NULL ELSE ended_at END AS ended_at)
                      FROM (SELECT *, requested_at = max(requested_at) OVER (PARTITION BY customer_id) AS last
                            FROM '{src}') ORDER BY requested_at)
                   TO '{data / "cancel_requests.parquet"}' (FORMAT parquet)""")
    worse_root = tmp_path / "worse"
    trained_out = _run("train", "--data", data, "--out", worse_root, "--only", "offer-response", "--learners", "logistic")
    assert trained_out.exit_code == 0, trained_out.output
    assert "a candidate: the service serves the registry's champion" in trained_out.output
    (worse,) = worse_root.iterdir()
    shutil.copytree(worse, root / worse.name)
    _run("models", "promote", trained.name, "--models", root, "--reason", "first", *PIDFILE)
    result = _run("models", "promote", worse.name, "--models", root, "--reason", "try", "--data", sim_dir, *PIDFILE)
    assert result.exit_code == 2 and "refused:" in result.output, result.output
    ope = re.search(r"against the champion \S+ on [\d,]+ logged requests: ([+-][\d.]+) per request", result.output)
    assert ope and float(ope.group(1)) < 0, result.output  # worse than the champion on the logged flows
    assert read_registry(root).version_of("champion") == trained.name
