"""`retention offers`: validate and print the offer catalog (the service refuses to start with a bad one)."""

from __future__ import annotations

from pathlib import Path

import click

from cli.options import catalog_from, catalog_path


@click.command()
@catalog_path
def offers(catalog_path: Path) -> None:
    """Validate and print the offer catalog."""
    catalog = catalog_from(catalog_path)
    click.echo(f"catalog version {catalog.version}")
    for o in catalog.offers:
        click.echo(f"  {o.id:<16} {o.type:<9} periods={','.join(o.billing_periods)} channels={','.join(o.channels)}")


commands = [offers]
