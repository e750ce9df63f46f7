"""`retention webhooks ...` on SQLite and PostgreSQL: a subscription's life through the command line (the
secret printed once, never listed), and bad input exits 2 with an `error:` line naming what is wrong."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from click.testing import CliRunner

from cli import main
from store import Store


def run(url: str, *args: str):
    return CliRunner().invoke(main, ["webhooks", *args, "--database-url", url], catch_exceptions=False)


def test_a_subscription_through_the_command_line(migrated_url):
    added = run(migrated_url, "add", "--url", "http://127.0.0.1:9/h", "--events", "decision.created,outcome.recorded")
    assert added.exit_code == 0, added.output
    secret = re.search(r"signing secret: (whsec_\S+)", added.output).group(1)
    listed = run(migrated_url, "list")
    assert "decision.created, outcome.recorded" in listed.output and secret not in listed.output
    rotated = run(migrated_url, "rotate-secret", "1", "--grace-hours", "2")
    assert rotated.exit_code == 0 and secret not in rotated.output and "also signs until" in rotated.output
    assert "previous secret valid until" in run(migrated_url, "list").output

    with Store.from_url(migrated_url) as store:
        store.publish("decision.created", {"decision_id": "d-1"})
        (event,) = store.claim_events("w", 5, timedelta(seconds=30))
        store.record_attempt(event["id"], "w", datetime.now(UTC), 7.0, False, 503)
    assert "dead" in run(migrated_url, "events", "--state", "dead").output
    assert "ERR 503" in run(migrated_url, "deliveries", "--subscription", "1").output
    assert "1 event(s) queued again" in run(migrated_url, "replay", "--subscription", "1").output
    assert "disabled" in run(migrated_url, "disable", "1").output


def test_bad_input_exits_2_naming_the_problem(migrated_url):
    for args, message in (
        (("add", "--url", "http://x/h", "--events", "decision.made"), "unknown event type(s) decision.made"),
        (("add", "--url", "mailto:x@y", "--events", "*"), "url 'mailto:x@y' is not an http(s) URL"),
        (("rotate-secret", "7"), "no webhook subscription 7"),
        (("disable", "7"), "no webhook subscription 7"),
        (("replay",), "name the events to replay"),
        (("replay", "--subscription", "7"), "no webhook subscription 7"),
        (("replay", "999"), "no queued event with id 999"),  # said "0 event(s) queued again", exit 0
    ):
        result = run(migrated_url, *args)
        assert result.exit_code == 2 and f"error: {message}" in result.output, (args, result.output)
