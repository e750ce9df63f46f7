"""`retention followups`: the follow-up tasks in the store ("close the loop", retention.followups): the
work list, and the report of how many detractors were contacted in time and what the contacts changed."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import click

from cli.options import PATH, UTC_DATETIME, database_url, fail, open_store, write_json
from retention.followups import STATUSES, load_followups, report
from retention.jsonvalues import jsonable


@click.group()
def followups() -> None:
    """Follow-up tasks: list them, report on them."""


@followups.command("list")
@click.option("--status", type=click.Choice(STATUSES), default="open", show_default=True)
@click.option("--due-before", type=UTC_DATETIME, default=None, help="Only tasks due before this time.")
@click.option("--min-risk", type=click.FloatRange(0.0, 1.0), default=None, help="Only tasks at least this risky.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=100, show_default=True)
@database_url
def list_tasks(status: str, due_before: datetime | None, min_risk: float | None, limit: int,
               url: str | None) -> None:
    """Tasks of one status, soonest due first."""
    with open_store(url) as store:
        tasks = store.list_followups(status, due_before, min_risk, limit)
    for t in tasks:
        risk = "-" if t["churn_risk"] is None else f"{t['churn_risk']:.2f}"
        score = "-" if t["score"] is None else str(t["score"])
        click.echo(f"{t['task_id']}  due {t['due_at']:%Y-%m-%d %H:%M}Z  {t['customer_id']:<16} "
                   f"{t['segment']:<9} score {score:>2} ({t['trend']})  risk {risk}  {t['reason'] or ''}")
    click.echo(f"{len(tasks)} {status} task(s)")


@followups.command("report")
@click.option("--since", type=UTC_DATETIME, required=True, help="Answers from this time on.")
@click.option("--until", "as_of", type=UTC_DATETIME, default=None, help="...up to this time [default: now].")
@click.option("--within-hours", type=click.FloatRange(min=0, min_open=True), default=48.0, show_default=True,
              help="A contact counts as in time within this many hours of the answer.")
@click.option("--horizon-days", type=click.IntRange(1, 3650), default=30, show_default=True,
              help="Retained = no cancellation within this many days of the answer.")
@click.option("--json", "out", type=PATH, default=None, help="Also write the figures to this JSON file.")
@database_url
def report_cmd(since: datetime, as_of: datetime | None, within_hours: float, horizon_days: int, out: Path | None,
               url: str | None) -> None:
    """The share of detractors contacted within 48 h, by ISO week, and the retention of contacted vs not
    contacted detractors (and vs the holdout, with one: config/followups.toml holdout_share)."""
    as_of = as_of or datetime.now(UTC)
    if not since < as_of:
        fail(f"--since ({since.isoformat()}) must be before --until ({as_of.isoformat()})")
    with open_store(url) as store:
        tasks, cancellations = store.followup_report_records(since, as_of)
    result = jsonable(report(tasks, cancellations, since, as_of, within_hours, horizon_days))
    click.echo(report_text(result))
    write_json(out, result)


def _pct(share: float | None) -> str:
    return "   -  " if share is None else f"{100 * share:5.1f}%"


def report_text(r: dict) -> str:
    lines = [f"follow-ups from {r['since']} to {r['as_of']}: {r['detractors']} detractor task(s), "
             f"{r['holdout']} in the holdout",
             f"contacted within {r['within_hours']:g} h of the answer, by ISO week of the answer:"]
    for w in r["weeks"]:
        lines.append(f"  {w['week']}  {w['count']:>5} of {w['n']:>5}  {_pct(w['share'])}"
                     + (f"  (holdout {w['holdout']})" if w["holdout"] else ""))
    lines.append(f"retained {r['horizon_days']} days after the answer (answers whose horizon has passed):")
    for name, g in r["retention"].items():
        if g["n"]:
            lines.append(f"  {name:<14} {g['count']:>5} of {g['n']:>5}  {_pct(g['share'])}")
    for key in ("contacted_minus_not_contacted", "assigned_minus_holdout"):
        d = r[key]
        if d is not None:
            lines.append(f"  {key.replace('_', ' ')}: {100 * d['estimate']:+.1f} points "
                         f"(95% CI {100 * d['low']:+.1f} to {100 * d['high']:+.1f})")
    for segment, s in r["sampled"].items():
        if s["tasks"]:
            lines.append(f"sampled {segment}s: {s['tasks']} task(s) standing for {s['answers_represented']:g} "
                         f"answers, {s['contacted']} contacted")
    lines += [f"caveat: {c}" for c in r["caveats"]]
    return "\n".join(lines)


@followups.command("rules")
@click.option("--file", "path", envvar="RETENTION_FOLLOWUPS", type=PATH, default=None,
              help="Follow-up rules [env: RETENTION_FOLLOWUPS; default: config/followups.toml].")
def rules(path: Path | None) -> None:
    """Validate and print the follow-up rules (the service refuses to start with a bad file)."""
    from retention.configfiles import ConfigError

    try:
        loaded = load_followups(path) if path else load_followups()
    except ConfigError as exc:
        fail(str(exc))
    click.echo(json.dumps(jsonable(loaded), indent=2))


commands = [followups]
