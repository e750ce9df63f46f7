"""What every `retention` command shares: the one way to fail, the ISO-8601 option type, the options that
name the database, the models and the config files (each with the environment variable the service reads,
so the CLI and the service see the same files), and loading those with a clear error.

Exit codes: 0 success; 2 invalid input (bad data, bad arguments, a file that does not validate, an artifact
that cannot be verified, an unreachable database), always with an `error: ...` line; 1 is a bug.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import NoReturn

import click

from retention.artifacts import ArtifactError, load_artifact, resolve_version
from retention.features import FEATURE_VERSION
from retention.files import write_atomic
from retention.offers import DEFAULT_CATALOG, Catalog, CatalogError, load_catalog
from retention.policy import DEFAULT_POLICY, PolicyConfig, PolicyError, load_policy
from retention.utc import parse_iso

DEFAULT_MODELS = Path("models")


def fail(message: str) -> NoReturn:
    """Print `error: <line>` on stderr for each line of `message` and exit 2 (invalid input)."""
    for line in message.splitlines() or [""]:
        click.echo(f"error: {line}", err=True)
    sys.exit(2)


@contextmanager
def failing_on(*errors: type[BaseException]) -> Iterator[None]:
    """Turn the given expected errors (bad input, unreachable store) into `fail(str(error))`."""
    try:
        yield
    except errors as exc:
        fail(str(exc))


class UTCDateTime(click.ParamType):
    """An ISO-8601 date or time; without a zone it is taken as UTC."""

    name = "datetime"

    def convert(self, value, param, ctx):
        if isinstance(value, datetime):
            return value
        try:
            return parse_iso(value)
        except ValueError:
            self.fail(f"{value!r} is not an ISO-8601 date or time (e.g. 2026-06-01 or 2026-06-01T12:00:00Z)")


UTC_DATETIME = UTCDateTime()
PATH = click.Path(path_type=Path)

database_url = click.option(
    "--database-url", "url", envvar="DATABASE_URL", default=None, metavar="URL",
    help="SQLAlchemy database URL [env: DATABASE_URL; default: sqlite:///var/retention.db]")
models_root = click.option(
    "--models", "models_root", envvar="RETENTION_MODELS_DIR", type=PATH, default=DEFAULT_MODELS,
    show_default=True, help="Folder of model versions [env: RETENTION_MODELS_DIR].")
model_ref = click.option(
    "--model", "ref", envvar="RETENTION_MODEL", default="latest", show_default=True,
    help="Version id, folder, or 'latest' [env: RETENTION_MODEL].")
catalog_path = click.option(
    "--catalog", "catalog_path", envvar="RETENTION_CATALOG", type=PATH, default=DEFAULT_CATALOG,
    show_default=True, help="Offer catalog [env: RETENTION_CATALOG].")
policy_path = click.option(
    "--policy", "policy_path", envvar="RETENTION_POLICY", type=PATH, default=DEFAULT_POLICY,
    show_default=True, help="Policy config: guardrails and fallback rules [env: RETENTION_POLICY].")


@contextmanager
def open_store(url: str | None):
    """The store at `url` (default: DATABASE_URL, else the SQLite file); an unreachable database, a schema
    that was never migrated or a malformed URL exit 2 with what to do."""
    from sqlalchemy.exc import ArgumentError

    from store import Store, StoreError

    try:
        with Store.from_url(url) as store:
            yield store
    except ArgumentError:
        fail(f"--database-url {url!r} is not a database URL "
             "(e.g. sqlite:///var/retention.db or postgresql+psycopg://user@host/db)")
    except StoreError as exc:
        fail(str(exc))


def catalog_from(path: Path) -> Catalog:
    with failing_on(CatalogError):
        return load_catalog(path)


def policy_from(catalog: Catalog, path: Path) -> PolicyConfig:
    with failing_on(PolicyError):
        return load_policy(catalog, path)


def verified_model(models: Path, ref: str) -> tuple[Path, object, dict]:
    """(version folder, unpickled model, metadata) of a version that passed every artifact check."""
    with failing_on(ArtifactError):
        version_dir = resolve_version(models, ref)
        model, meta = load_artifact(version_dir, feature_version=FEATURE_VERSION)
    return version_dir, model, meta


@contextmanager
def valid_data() -> Iterator[None]:
    """Report a data set that failed validation (training.validation.InvalidDataset) as errors, exit 2."""
    from training.validation import InvalidDataset

    try:
        yield
    except InvalidDataset as exc:
        report = exc.report
        for w in report.warnings:
            click.echo(f"warning: {w}", err=True)
        for e in report.errors:
            click.echo(f"error: {e}", err=True)
        click.echo(f"{exc.data_dir}: {len(report.errors)} error(s); nothing was changed.", err=True)
        sys.exit(2)


def validated(data_dir: Path, window_end: datetime | None = None):
    """The validation report of a data set that passed (its warnings printed); otherwise exit 2."""
    from training.validation import require_valid

    with valid_data():
        report = require_valid(data_dir, window_end)
    for w in report.warnings:
        click.echo(f"warning: {w}", err=True)
    return report


def configured(catalog_path: Path, policy_path: Path, data_dir: Path | None) -> tuple[Catalog, PolicyConfig]:
    """The offer catalog and the policy a command decides with, after checking its logged data set (each
    failure is exit 2 naming the file)."""
    catalog = catalog_from(catalog_path)
    config = policy_from(catalog, policy_path)
    if data_dir is not None:
        validated(data_dir)
    return catalog, config


def write_json(out: Path | None, result: dict) -> None:
    """A command's result as an indented JSON file (written atomically), when --out names one."""
    if out is not None:
        write_atomic(out, json.dumps(result, indent=2) + "\n")
