"""`retention followups` on SQLite and PostgreSQL: the report's figures on a small history built through the
store (checkable by hand), its JSON file, the work list, and exit 2 with an `error:` line for bad input."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from click.testing import CliRunner

from cli import main
from store import Store

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)  # Monday of ISO week 2026-W23


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _nps(event_id: str, customer_id: str, score: int, at: datetime) -> dict:
    return {"event_id": event_id, "type": "nps", "customer_id": customer_id, "occurred_at": at,
            "payload": {"score": score}}


def _history(url: str) -> None:
    with Store.from_url(url) as store:
        store.record_events([_nps("e1", "c1", 2, T0), _nps("e2", "c2", 5, T0 + timedelta(hours=1)),
                             _nps("e3", "c3", 6, T0 + timedelta(days=8)), _nps("e4", "c4", 8, T0)])
        ids = {t["customer_id"]: t["task_id"] for t in store.list_followups()}
        store.claim_followup(ids["c1"], "ann", now=T0 + timedelta(hours=20))  # in time
        store.close_followup(ids["c2"], "not_reached", now=T0 + timedelta(hours=30))  # not contacted
        store.close_followup(ids["c3"], "reached", now=T0 + timedelta(days=8, hours=60))  # late
        store.record_events([{"event_id": "x2", "type": "cancelled", "customer_id": "c2",
                              "occurred_at": T0 + timedelta(days=5)}])


def test_the_report_gives_the_share_contacted_in_time_by_week_and_retention_by_group(migrated_url, tmp_path):
    _history(migrated_url)
    out = tmp_path / "report.json"
    result = _run("followups", "report", "--since", "2026-06-01", "--until", "2026-08-01", "--json", out,
                  "--database-url", migrated_url)
    assert result.exit_code == 0, result.output
    r = json.loads(out.read_text())
    assert [(w["week"], w["count"], w["n"], w["share"]) for w in r["weeks"]] == [
        ("2026-W23", 1, 2, 0.5), ("2026-W24", 0, 1, 0.0)]
    assert {k: (g["count"], g["n"]) for k, g in r["retention"].items()} == {
        "contacted": (2, 2), "not_contacted": (0, 1), "assigned": (2, 3), "holdout": (0, 0)}
    assert r["contacted_minus_not_contacted"]["estimate"] == 1.0 and r["assigned_minus_holdout"] is None
    assert "2026-W23      1 of     2   50.0%" in result.output
    assert "caveat: contacted vs not contacted is observational" in result.output
    assert "no holdout" in result.output


def test_the_list_shows_open_tasks_soonest_due_first(migrated_url):
    _history(migrated_url)
    result = _run("followups", "list", "--status", "closed", "--database-url", migrated_url)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split()[4] for line in lines[:-1]] == ["c2", "c3"] and lines[-1] == "2 closed task(s)"


def test_bad_input_exits_2_with_an_error_line(migrated_url, tmp_path):
    result = _run("followups", "report", "--since", "2026-07-01", "--until", "2026-06-01",
                  "--database-url", migrated_url)
    assert result.exit_code == 2 and "error: --since (2026-07-01T00:00:00+00:00) must be before --until" in result.output
    bad = tmp_path / "followups.toml"
    bad.write_text("window_hours = 0\n")
    result = _run("followups", "rules", "--file", bad)
    assert result.exit_code == 2 and f"error: {bad}: window_hours: " in result.output
