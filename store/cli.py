"""The store's commands on the `retention` command line: db upgrade/current, keys create/list/revoke, export
and load-features. Registered on the group of training/cli.py by `register`.

Exit codes as in training/cli.py: 2 with an `error: ...` line for bad input or an unreachable database.
"""

from __future__ import annotations

import json
import secrets
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import click
from sqlalchemy.exc import ArgumentError

from store.db import current_revision, display_url, head_revision, upgrade
from store.errors import StoreError
from store.models import ROLES
from store.repository import Store
from training.clitypes import UTC_DATETIME

_DATABASE_URL = click.option(
    "--database-url", "url", default=None, metavar="URL",
    help="SQLAlchemy database URL [default: $DATABASE_URL, else sqlite:///var/retention.db]")


def register(main: click.Group) -> None:
    """Add the store's commands to the `retention` group."""
    for command in (db, keys, export, load_features, customer):
        main.add_command(command)


def _cli():
    # training.cli imports this module at its end to register the commands, so its helpers are imported
    # when a command runs rather than at import time (which would be circular).
    from training import cli

    return cli


@contextmanager
def _errors_exit_2() -> Iterator[None]:
    try:
        yield
    except (StoreError, ValueError, ArgumentError) as exc:  # ArgumentError: a malformed database URL
        _cli()._fail(str(exc))


@contextmanager
def _store(url: str | None) -> Iterator[Store]:
    with _errors_exit_2(), Store.from_url(url) as store:
        yield store


# ------------------------------------------------------------------------------------------------ db


@click.group()
def db() -> None:
    """Database schema: run the migrations, show the revision."""


@db.command("upgrade")
@_DATABASE_URL
def db_upgrade(url: str | None) -> None:
    """Migrate the database to the latest schema (safe to repeat)."""
    with _errors_exit_2():
        revision = upgrade(url)
    click.echo(f"{display_url(url)}: at revision {revision} (head)")


@db.command("current")
@_DATABASE_URL
def db_current(url: str | None) -> None:
    """Show the database's schema revision."""
    with _errors_exit_2():
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
@click.option("--sign", is_flag=True, help="Also require HMAC-SHA256 signed requests; prints the secret.")
@_DATABASE_URL
def keys_create(name: str, role: str, key: str | None, sign: bool, url: str | None) -> None:
    """Create a client and print its key (and signing secret) once."""
    secret = secrets.token_urlsafe(32) if sign else None
    with _store(url) as store:
        record, plaintext = store.create_client(name, role, key=key, signing_secret=secret)
    click.echo(f"client {record['name']} (role {record['role']}, key id {record['key_id']})")
    click.echo(f"key: {plaintext}")
    if secret is not None:
        click.echo(f"signing secret: {secret}")
    if key is None:
        click.echo("Keep them now: the store keeps only a hash of the key, it cannot be shown again.")


@keys.command("list")
@_DATABASE_URL
def keys_list(url: str | None) -> None:
    """List clients (never their keys or secrets)."""
    with _store(url) as store:
        clients = store.list_clients()
    if not clients:
        click.echo("no clients; create one with `retention keys create`")
    for c in clients:
        state = f"revoked {c['revoked_at']:%Y-%m-%d %H:%M}" if c["revoked_at"] else "active"
        click.echo(f"{c['name']:<24} {c['role']:<7} key id {c['key_id']:<14} "
                   f"{'signed  ' if c['signed'] else 'unsigned'} created {c['created_at']:%Y-%m-%d %H:%M}  {state}")


@keys.command("revoke")
@click.option("--name", required=True)
@_DATABASE_URL
def keys_revoke(name: str, url: str | None) -> None:
    """Revoke a client's key: its requests are refused from now on."""
    with _store(url) as store:
        record = store.revoke_client(name)
    click.echo(f"client {record['name']} revoked at {record['revoked_at'].isoformat()}")


# ------------------------------------------------------------------------------------------- export


@click.command()
@click.option("--since", type=UTC_DATETIME, default=None, help="Only history from this time on [default: all].")
@click.option("--out", "out", type=click.Path(path_type=Path), required=True, help="New output data directory.")
@click.option("--format", "fmt", type=click.Choice(["parquet", "csv"]), default="parquet", show_default=True)
@_DATABASE_URL
def export(since: datetime | None, out: Path, fmt: str, url: str | None) -> None:
    """Write the store's history as a data set in the training-data contract."""
    from store.export import export_dataset

    with _store(url) as store:
        manifest = export_dataset(store, out, since=since, fmt=fmt)
    click.echo(json.dumps(manifest, indent=2))


# ------------------------------------------------------------------------------------ load-features


@click.command("load-features")
@click.option("--data", "data_dir", type=click.Path(path_type=Path), default=None,
              help="Compute from this data directory.")
@click.option("--from-store", is_flag=True, help="Compute from the store's own events and decisions.")
@click.option("--as-of", "as_of", type=UTC_DATETIME, default=None,
              help="Features as of this time [default: the data window's end; now for --from-store].")
@click.option("--model", "ref", default="latest", show_default=True, help="Version id, folder, or 'latest'.")
@click.option("--models", "models_root", type=click.Path(path_type=Path), default=Path("models"),
              show_default=True)
@click.option("--batch-size", type=click.IntRange(min=100), default=50_000, show_default=True,
              help="Customers per feature batch; bounds memory.")
@click.option("--if-stale", is_flag=True,
              help="Do nothing when the loaded snapshot already has this source, time and model version.")
@_DATABASE_URL
def load_features(data_dir: Path | None, from_store: bool, as_of: datetime | None, ref: str, models_root: Path,
                  batch_size: int, if_stale: bool, url: str | None) -> None:
    """Replace the feature snapshot the service reads with features of every customer subscribed at T."""
    cli = _cli()
    if (data_dir is None) == (not from_store):
        cli._fail("give exactly one of --data DIR or --from-store")
    from retention.features import FeatureSpec

    _, _, meta = cli._load(models_root, ref)  # verified: checksum, library and feature versions
    spec = FeatureSpec.from_dict(meta["feature_spec"])
    if as_of is None:
        from training.validate import resolve_window_end

        as_of = datetime.now(UTC) if from_store else resolve_window_end(data_dir, None)
    source = "store" if from_store else str(data_dir)
    with _store(url) as store, tempfile.TemporaryDirectory(prefix="retention-features-") as tmp:
        store.ping()  # fail before the long computation, not after it
        current = store.latest_snapshot()
        if if_stale and current and (current["source"], current["as_of"], current["model_version"]) == (
                source, as_of, meta["version"]):
            click.echo(f"feature snapshot of {current['rows']:,} customers as of {as_of.isoformat()} "
                       f"(model {meta['version']}) is already loaded")
            return
        if from_store:
            from store.export import export_dataset

            data_dir = Path(tmp) / "data"
            # The model reads these customer columns; the store may not know them for everyone (null then).
            attributes = {a: "number" for a in spec.numeric_attributes}
            attributes |= {a: "string" for a in spec.categorical_attributes}
            manifest = export_dataset(store, data_dir, customer_attributes=attributes)
            for table, reasons in manifest["skipped"].items():
                click.echo(f"warning: {table}: left out {reasons}", err=True)
        cli._validated(data_dir, None)  # data after T is fine: features only read rows before T
        features = _compute(data_dir, spec, as_of, batch_size, Path(tmp) / "features.parquet")
        n = store.replace_feature_snapshot(features, as_of, meta["feature_version"], meta["version"],
                                           source=source)
    click.echo(f"stored features of {n:,} customers as of {as_of.isoformat()} "
               f"(model {meta['version']}, features {meta['feature_version']})")


def _compute(data_dir: Path, spec, as_of: datetime, batch_size: int, scratch: Path) -> Iterator[tuple[str, dict]]:
    """Features of every customer subscribed at `as_of`, as (customer_id, values) rows.

    All features are computed (into `scratch`) before the first row is returned, so the snapshot's write
    transaction lasts as long as the inserts only, not the computation: on SQLite it holds the write lock."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm import tqdm

    from training.dataset import open_dataset
    from training.evaluate import feature_batches, subscribed_customers

    con = open_dataset(data_dir)
    customers = subscribed_customers(con, as_of)
    if len(customers) == 0:
        _cli()._fail(f"{data_dir}: no customer is subscribed at {as_of.isoformat()}; the snapshot was not replaced")
    columns = ["customer_id", *spec.names]
    with pq.ParquetWriter(scratch, _feature_schema(spec)) as writer:
        for feats in feature_batches(con, spec, customers, as_of, batch_size,
                                     progress=lambda it, **kw: tqdm(it, file=sys.stderr, **kw)):
            writer.write_table(pa.Table.from_pandas(feats[columns], schema=writer.schema, preserve_index=False))
    con.close()
    return _read_rows(scratch)


def _feature_schema(spec):
    import pyarrow as pa

    return pa.schema([("customer_id", pa.string())] + [(n, pa.float64()) for n in spec.numeric]
                     + [(n, pa.string()) for n in spec.categorical])


def _read_rows(path: Path) -> Iterator[tuple[str, dict]]:
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as f:
        for batch in f.iter_batches():
            for row in batch.to_pylist():
                yield row.pop("customer_id"), row


@click.group()
def customer() -> None:
    """A customer's data on request: export it, or erase it."""


@customer.command("export")
@click.argument("customer_id")
@_DATABASE_URL
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write the JSON here [stdout].")
def customer_export(customer_id: str, url: str | None, out: Path | None) -> None:
    """Everything stored about CUSTOMER_ID, as JSON."""
    from store.repository import jsonable

    with _errors_exit_2(), Store.from_url(url) as store:
        data = jsonable(store.customer_data(customer_id))
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if out:
        out.write_text(text)
        click.echo(f"{len(data['decisions'])} decision(s), {len(data['events'])} event(s) of {customer_id} -> {out}")
    else:
        click.echo(text, nl=False)


@customer.command("delete")
@click.argument("customer_id")
@_DATABASE_URL
@click.option("--yes", is_flag=True, help="Confirm: the rows are deleted for good.")
def customer_delete(customer_id: str, url: str | None, yes: bool) -> None:
    """Erase CUSTOMER_ID's decisions, outcomes, events and features."""
    if not yes:
        raise click.UsageError("deleting a customer's data cannot be undone: add --yes")
    with _errors_exit_2(), Store.from_url(url) as store:
        counts = store.delete_customer(customer_id)
    click.echo(f"deleted {customer_id}: {counts['decisions']} decision(s), {counts['outcomes']} outcome(s), "
               f"{counts['events']} event(s), {counts['features']} feature row(s)")
