"""`retention drift`: how far the store's recent decisions drift from the training data of a model version
(per-feature PSI and the offer mix, retention.drift); the same figures the service shows on /metrics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from cli.options import database_url, fail, failing_on, model_ref, models_root, open_store
from reports.drift import drift_text
from retention.artifacts import ArtifactError, resolve_version, verify_version
from retention.drift import drift_report
from retention.features import FEATURE_VERSION


@click.command()
@models_root
@model_ref
@click.option("--days", type=float, default=7.0, show_default=True, help="Decisions of the last N days.")
@click.option("--limit", type=int, default=20_000, show_default=True, help="At most this many, the newest.")
@database_url
def drift(models_root: Path, ref: str, days: float, limit: int, url: str | None) -> None:
    """Per-feature PSI of recent decisions against a model's training rows, and the offer-mix drift."""
    if not days > 0 or days > 36_500:
        fail(f"--days must be a number of days above 0 (at most 36500), got {days:g}")
    if limit < 1:
        fail(f"--limit must be at least 1, got {limit}")
    with failing_on(ArtifactError):  # checksums and feature version; nothing is unpickled
        meta = verify_version(resolve_version(models_root, ref), feature_version=FEATURE_VERSION)
    since = datetime.now(UTC) - timedelta(days=days)
    with open_store(url) as store:
        decisions = store.recent_decisions(since, limit)
    click.echo(drift_text(drift_report(meta, decisions), days))


commands = [drift]
