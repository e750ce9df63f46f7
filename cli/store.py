"""The store's commands: `db upgrade/current`, `keys create/list/revoke`, `export`, `load-features` and
`customer export/delete`. An unreachable database or bad input exits 2 with an `error:` line."""

from __future__ import annotations

import base64
import json
import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import click
from sqlalchemy.exc import ArgumentError

from cli.options import (
    PATH,
    UTC_DATETIME,
    catalog_from,
    catalog_path,
    database_url,
    fail,
    failing_on,
    model_ref,
    models_root,
    open_store,
    valid_data,
    verified_model,
)
from retention.files import write_atomic
from retention.jsonvalues import jsonable
from store import StoreError
from store.db import current_revision, display_url, head_revision, upgrade
from store.models import ROLES


@contextmanager
def _database(url: str | None) -> Iterator[None]:
    """For the commands that migrate or inspect the schema without a Store: the same errors as open_store."""
    try:
        yield
    except ArgumentError:
        fail(f"--database-url {url!r} is not a database URL "
             "(e.g. sqlite:///var/retention.db or postgresql+psycopg://user@host/db)")
    except StoreError as exc:
        fail(str(exc))


# ------------------------------------------------------------------------------------------------ db


@click.group()
def db() -> None:
    """Database schema: run the migrations, show the revision."""


@db.command("upgrade")
@database_url
def db_upgrade(url: str | None) -> None:
    """Migrate the database to the latest schema (safe to repeat)."""
    with _database(url):
        revision = upgrade(url)
    click.echo(f"{display_url(url)}: at revision {revision} (head)")


@db.command("current")
@database_url
def db_current(url: str | None) -> None:
    """Show the database's schema revision."""
    with _database(url):
        revision = current_revision(url)
    head = head_revision()
    state = "(head)" if revision == head else f"(head is {head}: run `retention db upgrade`)"
    click.echo(f"{display_url(url)}: at revision {revision or 'none'} {state}")


# ---------------------------------------------------------------------------------------------- keys


@click.group()
def keys() -> None:
    """API clients and their keys."""


@keys.command("create")
@click.option("--name", required=True)
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option("--key", default=None, help="Use this key (e.g. a fixed dev key) instead of a random one.")
@click.option("--sign", is_flag=True, help="Also require signed requests (Standard Webhooks scheme, see the "
              "README); prints the whsec_ secret.")
@database_url
def keys_create(name: str, role: str, key: str | None, sign: bool, url: str | None) -> None:
    """Create a client and print its key (and signing secret) once."""
    # The Standard Webhooks secret format: whsec_ + base64 of 32 random bytes, which its libraries decode.
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode() if sign else None
    with open_store(url) as store:
        record, plaintext = store.create_client(name, role, key=key, signing_secret=secret)
    click.echo(f"client {record['name']} (role {record['role']}, key id {record['key_id']})")
    click.echo(f"key: {plaintext}")
    if secret is not None:
        click.echo(f"signing secret: {secret}")
    if key is None:
        click.echo("Keep them now: the store keeps only a hash of the key, it cannot be shown again.")


@keys.command("list")
@database_url
def keys_list(url: str | None) -> None:
    """List clients (never their keys or secrets)."""
    with open_store(url) as store:
        clients = store.list_clients()
    if not clients:
        click.echo("no clients; create one with `retention keys create`")
    for c in clients:
        state = f"revoked {c['revoked_at']:%Y-%m-%d %H:%M}" if c["revoked_at"] else "active"
        click.echo(f"{c['name']:<24} {c['role']:<7} key id {c['key_id']:<14} "
                   f"{'signed  ' if c['signed'] else 'unsigned'} created {c['created_at']:%Y-%m-%d %H:%M}  {state}")


@keys.command("revoke")
@click.option("--name", required=True)
@database_url
def keys_revoke(name: str, url: str | None) -> None:
    """Revoke a client's key: its requests are refused from now on."""
    with open_store(url) as store:
        record = store.revoke_client(name)
    click.echo(f"client {record['name']} revoked at {record['revoked_at'].isoformat()}")


# ------------------------------------------------------------------------------------------- export


class _Currency(click.ParamType):
    name = "code"

    def convert(self, value, param, ctx):
        if isinstance(value, str) and len(value) == 3 and value.isascii() and value.isupper() and value.isalpha():
            return value
        self.fail(f"{value!r} is not an ISO 4217 currency code (three capital letters, e.g. EUR)")


@click.command()
@click.option("--since", type=UTC_DATETIME, default=None, help="Only history from this time on [default: all].")
@click.option("--out", "out", type=PATH, required=True, help="New output data directory.")
@click.option("--format", "fmt", type=click.Choice(["parquet", "csv"]), default="parquet", show_default=True)
@click.option("--currency", type=_Currency(), default=None,
              help="Currency of the customers whose currency no `customer` event, decision request or loaded "
                   "data set gives (the feature snapshot has none); only for a business that bills in one "
                   "currency.")
@click.option("--allow-partial", is_flag=True,
              help="Write what can be exported when some rows cannot (exit 0; dataset.json and stderr count "
                   "what was left out). Without it such an export writes nothing and exits 2.")
@database_url
def export(since: datetime | None, out: Path, fmt: str, currency: str | None, allow_partial: bool,
           url: str | None) -> None:
    """Write the store's history as a data set in the training-data contract: every decision and outcome."""
    from store.export import IncompleteExport, export_dataset

    with open_store(url) as store, failing_on(ValueError):
        try:
            manifest = export_dataset(store, out, since=since, fmt=fmt, currency=currency,
                                      allow_partial=allow_partial)
        except IncompleteExport as exc:
            fail(f"{exc}\n{_incomplete_hint(exc.skipped)}")
    click.echo(json.dumps(manifest, indent=2))
    for table, reasons in manifest["skipped"].items():
        left_out = ", ".join(f"{n:,} {reason}" for reason, n in reasons.items())
        click.echo(f"warning: {table}: left out {left_out} (--allow-partial)", err=True)


def _incomplete_hint(skipped: dict[str, dict[str, int]]) -> str:
    """What the user can do about the rows an export could not write."""
    reasons = {reason for by_reason in skipped.values() for reason in by_reason}
    hints = []
    if any(r.endswith(" missing") for r in reasons):
        hints.append("a customer's missing values come from a `customer` event (POST /v1/events), the decision "
                     "request, the data set `load-features --data` loaded, its feature snapshot or the "
                     "decision's features; none of them had these")
    if "currency missing" in reasons:
        hints.append("--currency CODE states the currency of customers billed in one currency")
    hints.append("--allow-partial writes the rest and records what was left out in dataset.json")
    return "\n".join(hints)


# ------------------------------------------------------------------------------------ load-features


@click.command("load-features")
@click.option("--data", "data_dir", type=PATH, default=None, help="Compute from this data directory.")
@click.option("--from-store", is_flag=True, help="Compute from the store's own events and decisions.")
@click.option("--as-of", "as_of", type=UTC_DATETIME, default=None,
              help="Features as of this time [default: the data window's end; now for --from-store].")
@model_ref
@models_root
@click.option("--batch-size", type=click.IntRange(min=100), default=50_000, show_default=True,
              help="Customers per feature batch; bounds memory.")
@click.option("--if-stale", is_flag=True,
              help="Do nothing when the loaded snapshot already has this source, time and model version.")
@catalog_path
@database_url
def load_features(data_dir: Path | None, from_store: bool, as_of: datetime | None, ref: str, models_root: Path,
                  batch_size: int, if_stale: bool, catalog_path: Path, url: str | None) -> None:
    """Replace the feature snapshot the service reads with features of every customer subscribed at T (and,
    from a data directory, the customer rows of all its customers, subscribed or not)."""
    from tqdm import tqdm

    from store.export import export_dataset
    from training.dataset import DatasetError
    from training.snapshot import NoSubscribers, load_feature_snapshot

    if (data_dir is None) == (not from_store):
        fail("give exactly one of --data DIR or --from-store")
    _, _, meta = verified_model(models_root, ref)  # verified: checksum, library and feature versions
    catalog = catalog_from(catalog_path)
    with open_store(url) as store, valid_data(), failing_on(NoSubscribers, DatasetError):
        result = load_feature_snapshot(
            store, meta, catalog, data_dir=data_dir, as_of=as_of, batch_size=batch_size, if_stale=if_stale,
            export_history=(lambda out, attributes: export_dataset(store, out, customer_attributes=attributes,
                                                               allow_partial=True))
            if from_store else None,
            progress=lambda it, **kw: tqdm(it, file=sys.stderr, **kw))
    for w in result.warnings:
        click.echo(f"warning: {w}", err=True)
    if not result.loaded:
        click.echo(f"feature snapshot of {result.rows:,} customers as of {result.as_of.isoformat()} "
                   f"(model {result.model_version}) is already loaded")
        return
    kept = "" if result.customers is None else f"; the data set's rows of all {result.customers:,} customers"
    click.echo(f"stored features of {result.rows:,} customers as of {result.as_of.isoformat()} "
               f"(model {result.model_version}, features {result.feature_version}){kept}")


# ------------------------------------------------------------------------------------------ customer


@click.group()
def customer() -> None:
    """A customer's data on request: export it, or erase it."""


@customer.command("export")
@click.argument("customer_id")
@database_url
@click.option("--out", type=PATH, default=None, help="Write the JSON here [stdout].")
def customer_export(customer_id: str, url: str | None, out: Path | None) -> None:
    """Everything stored about CUSTOMER_ID, as JSON."""
    with open_store(url) as store:
        data = jsonable(store.customer_data(customer_id))
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if out:
        write_atomic(out, text)
        click.echo(f"{len(data['decisions'])} decision(s), {len(data['events'])} event(s) of {customer_id} -> {out}")
    else:
        click.echo(text, nl=False)


@customer.command("delete")
@click.argument("customer_id")
@database_url
@click.option("--yes", is_flag=True, help="Confirm: the rows are deleted for good.")
def customer_delete(customer_id: str, url: str | None, yes: bool) -> None:
    """Erase CUSTOMER_ID's decisions, outcomes, events, features and customer row."""
    if not yes:
        raise click.UsageError("deleting a customer's data cannot be undone: add --yes")
    with open_store(url) as store:
        counts = store.delete_customer(customer_id)
    click.echo(f"deleted {customer_id}: {counts['decisions']} decision(s), {counts['outcomes']} outcome(s), "
               f"{counts['events']} event(s), {counts['features']} feature row(s), "
               f"{counts['customer']} customer row(s)")


commands = [db, keys, export, load_features, customer]
