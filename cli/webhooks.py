"""`retention webhooks ...`: subscriptions (add, list, rotate-secret, disable), the outbox (events, replay),
the attempt log (deliveries) and the delivery worker (its own process: the Procfile's `worker:`). An unknown
subscription, a bad URL or event type, an unreachable database exit 2 with an `error:` line."""

from __future__ import annotations

import os
import signal
from datetime import timedelta

import click

from cli.options import database_url, open_store
from retention.webhooks import ALL, EVENT_TYPES
from store.models import OUTBOX_STATES


def _when(t) -> str:
    return "-" if t is None else f"{t:%Y-%m-%d %H:%M:%S}"


@click.group()
def webhooks() -> None:
    """Signed outbound webhooks (Standard Webhooks): subscriptions, the outbox, the delivery worker."""


@webhooks.command("add")
@click.option("--url", "receiver", required=True, help="The receiver's http(s) URL; events are POSTed to it.")
@click.option("--events", required=True, metavar="TYPES",
              help=f"Comma-separated event types ({', '.join(EVENT_TYPES)}) or '{ALL}' for all.")
@click.option("--description", default=None)
@database_url
def add(receiver: str, events: str, description: str | None, url: str | None) -> None:
    """Subscribe a receiver; prints its signing secret once."""
    with open_store(url) as store:
        sub = store.add_subscription(receiver, events.split(","), description)
    click.echo(f"subscription {sub['id']}: {sub['url']} for {', '.join(sub['events'])}")
    click.echo(f"signing secret: {sub['secret']}")
    click.echo("Keep it now: the receiver verifies every request with it (README, Webhooks).")


@webhooks.command("list")
@database_url
def list_(url: str | None) -> None:
    """Every subscription (never its secret), with its events by state."""
    with open_store(url) as store:
        subs = store.subscriptions()
    if not subs:
        click.echo("no subscriptions; add one with `retention webhooks add`")
    for s in subs:
        state = f"disabled {_when(s['disabled_at'])}" if s["disabled_at"] else "active"
        rotating = f", previous secret valid until {_when(s['previous_secret_until'])}" if s[
            "previous_secret_until"] else ""
        counts = ", ".join(f"{k} {s['events_by_state'].get(k, 0)}" for k in OUTBOX_STATES)
        click.echo(f"{s['id']:>4}  {s['url']}  [{', '.join(s['events'])}]  {state}{rotating}; events: {counts}")


@webhooks.command("rotate-secret")
@click.argument("subscription_id", type=int)
@click.option("--grace-hours", type=click.FloatRange(min=0), default=24.0, show_default=True,
              help="How long the current secret keeps signing too (a second signature on every request).")
@database_url
def rotate_secret(subscription_id: int, grace_hours: float, url: str | None) -> None:
    """Give SUBSCRIPTION_ID a new secret; both sign until the grace period ends."""
    with open_store(url) as store:
        sub = store.rotate_subscription_secret(subscription_id, timedelta(hours=grace_hours))
    click.echo(f"subscription {sub['id']}: new signing secret: {sub['secret']}")
    click.echo(f"the previous secret also signs until {_when(sub['previous_secret_until'])} UTC")


@webhooks.command("disable")
@click.argument("subscription_id", type=int)
@database_url
def disable(subscription_id: int, url: str | None) -> None:
    """Stop sending to SUBSCRIPTION_ID (its undelivered events stay in the outbox, unsent)."""
    with open_store(url) as store:
        sub = store.disable_subscription(subscription_id)
    click.echo(f"subscription {sub['id']} disabled at {_when(sub['disabled_at'])} UTC")


@webhooks.command("events")
@click.option("--subscription", "subscription_id", type=int, default=None)
@click.option("--state", type=click.Choice(OUTBOX_STATES), default=None)
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@database_url
def events(subscription_id: int | None, state: str | None, limit: int, url: str | None) -> None:
    """Queued events, newest first (the ids `replay` takes)."""
    with open_store(url) as store:
        rows = store.outbox_events(subscription_id, state, limit)
    for r in rows:
        click.echo(f"{r['id']:>6}  {r['event_id']}  sub {r['subscription_id']}  {r['event_type']:<20} "
                   f"{r['state']:<9} failed {r['attempts']}  next {_when(r['next_attempt_at'])}  "
                   f"{(r['last_error'] or '')[:80]}")


@webhooks.command("replay")
@click.argument("ids", type=int, nargs=-1)
@click.option("--subscription", "subscription_id", type=int, default=None,
              help="Every dead (or --state) event of this subscription.")
@click.option("--state", type=click.Choice(("dead", "delivered")), default=None,
              help="Only events in this state [default: dead and delivered when IDS are given, else dead].")
@database_url
def replay(ids: tuple[int, ...], subscription_id: int | None, state: str | None, url: str | None) -> None:
    """Queue dead-lettered or delivered events IDS (or a subscription's) again, due now, with the same id."""
    if not ids and state is None:
        state = "dead"
    with open_store(url) as store:
        if subscription_id is not None:
            store.subscription(subscription_id)  # an unknown one is an error, not "0 replayed"
        n = store.replay_events(ids, subscription_id, state)
    click.echo(f"{n} event(s) queued again")


@webhooks.command("deliveries")
@click.option("--subscription", "subscription_id", type=int, default=None)
@click.option("--event", "outbox_id", type=int, default=None, help="One event's attempts (its outbox id).")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@database_url
def deliveries(subscription_id: int | None, outbox_id: int | None, limit: int, url: str | None) -> None:
    """The delivery log, newest first: every attempt with its status, time taken and error."""
    with open_store(url) as store:
        rows = store.delivery_attempts(subscription_id, outbox_id, limit)
    for r in rows:
        status = r["status_code"] if r["status_code"] is not None else "-"
        click.echo(f"{_when(r['attempted_at'])}  event {r['outbox_id']} ({r['event_id']}, {r['event_type']})  "
                   f"sub {r['subscription_id']}  {'ok ' if r['ok'] else 'ERR'} {status}  {r['ms']:.0f} ms  "
                   f"{(r['error'] or '')[:80]}")


@webhooks.command("worker")
@click.option("--until-idle", is_flag=True, help="Exit once nothing is due (a drain, a cron run).")
@click.option("--timeout", type=click.FloatRange(min=0.1), envvar="RETENTION_WEBHOOK_TIMEOUT_SECONDS",
              default=5.0, show_default=True, help="Seconds a receiver has to answer.")
@click.option("--max-attempts", type=click.IntRange(min=1), envvar="RETENTION_WEBHOOK_MAX_ATTEMPTS", default=8,
              show_default=True, help="Failed attempts before an event is dead-lettered.")
@click.option("--backoff", type=click.FloatRange(min=0), envvar="RETENTION_WEBHOOK_BACKOFF_SECONDS", default=30.0,
              show_default=True, help="Seconds before the first retry (doubling after each failure, jittered).")
@click.option("--backoff-max", type=click.FloatRange(min=0), envvar="RETENTION_WEBHOOK_BACKOFF_MAX_SECONDS",
              default=3600.0, show_default=True, help="The longest wait between two attempts.")
@click.option("--concurrency", type=click.IntRange(min=1), envvar="RETENTION_WEBHOOK_CONCURRENCY", default=8,
              show_default=True, help="POSTs in flight at once.")
@click.option("--per-receiver", type=click.IntRange(min=1), envvar="RETENTION_WEBHOOK_PER_RECEIVER", default=2,
              show_default=True, help="Of those, at most this many to one subscription (a hanging receiver "
              "holds no more threads).")
@click.option("--poll", type=click.FloatRange(min=0.01), envvar="RETENTION_WEBHOOK_POLL_SECONDS", default=1.0,
              show_default=True, help="Seconds between looks at the outbox when nothing is due.")
@click.option("--lease-seconds", type=click.FloatRange(min=0.1), envvar="RETENTION_WEBHOOK_LEASE_SECONDS",
              default=None, help="How long a claim lasts [default: the timeout plus 10 s].")
@click.option("--nice", "niceness", type=click.IntRange(0, 19), envvar="RETENTION_WEBHOOK_NICE", default=10,
              show_default=True, help="Lower the worker's CPU priority by this much: on a host it shares with "
              "the service, decisions come first.")
@database_url
def worker(until_idle: bool, timeout: float, max_attempts: int, backoff: float, backoff_max: float,
           concurrency: int, per_receiver: int, poll: float, lease_seconds: float | None, niceness: int,
           url: str | None) -> None:
    """Deliver the outbox: claim due events (with a lease), sign, POST, record, retry, dead-letter."""
    from service.logs import configure
    from service.webhook_worker import WebhookWorker, WorkerSettings

    configure()
    os.nice(niceness)
    settings = WorkerSettings(timeout=timeout, max_attempts=max_attempts, backoff=backoff, backoff_max=backoff_max,
                              concurrency=concurrency, per_receiver=per_receiver, poll=poll,
                              lease_seconds=lease_seconds)
    with open_store(url) as store:
        store.ping()
        w = WebhookWorker(store, settings)
        # SIGTERM (the platform, `make run`'s trap) and Ctrl-C finish the POSTs in flight, then stop; a kill
        # -9 instead leaves them claimed until their lease expires, and the next run sends them again.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: w.stopping.set())
        click.echo(f"webhook worker {w.name}: {concurrency} threads, {per_receiver} per receiver, lease "
                   f"{settings.lease.total_seconds():g} s", err=True)
        try:
            w.run(until_idle=until_idle)
        finally:
            w.close()


commands = [webhooks]
