"""`retention simulate` and `retention validate`: make a data set in the training-data contract, and check one."""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from pathlib import Path

import click
from tqdm import tqdm

from cli.options import PATH, UTC_DATETIME, catalog_from, catalog_path, fail, validated
from training.simulator.worlds import WORLDS


@click.command()
@click.option("--world", "world_name", type=click.Choice(WORLDS), default="reference", show_default=True,
              help="Which simulated business (docs/worlds.md): its customers, history and true response.")
@click.option("--customers", type=click.IntRange(min=1), default=None,
              help="Customers to simulate [default: the world's own size].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--days", type=click.IntRange(min=60), default=365, show_default=True, help="Days of history.")
@click.option("--out", "out", type=PATH, required=True, help="Output data directory.")
@click.option("--format", "fmt", type=click.Choice(["parquet", "csv"]), default="parquet", show_default=True)
@click.option("--chunk-size", type=click.IntRange(min=100), default=50_000, show_default=True,
              help="Customers simulated at once; bounds memory.")
@catalog_path
def simulate(world_name: str, customers: int | None, seed: int, days: int, out: Path, fmt: str, chunk_size: int,
             catalog_path: Path) -> None:
    """Write a simulated data set in the training-data contract, with its ground truth in _truth/."""
    from training.simulator.generate import SimConfig, simulate_dataset

    if out.exists() and any(out.iterdir()):
        fail(f"{out}: exists and is not empty; choose a new --out so no data set is overwritten")
    world = WORLDS[world_name]
    customers = customers or world.customers
    config = SimConfig(customers=customers, seed=seed, days=days, chunk_size=chunk_size, fmt=fmt,
                       catalog=catalog_from(catalog_path), world=world)
    t0 = time.perf_counter()
    with tqdm(total=customers, unit="customer", desc="simulate", file=sys.stderr) as bar:
        manifest = simulate_dataset(config, out, progress=bar.update)
    click.echo(json.dumps({"out": str(out), "seconds": round(time.perf_counter() - t0, 1), **manifest}, indent=2))


@click.command()
@click.option("--data", "data_dir", type=PATH, required=True)
@click.option("--window-end", type=UTC_DATETIME, default=None,
              help="End of the data window (default: dataset.json, else now). Later dates are errors.")
def validate(data_dir: Path, window_end: datetime | None) -> None:
    """Check a data directory against the contract; exit 2 on any error.

    Findings name the file, the data row (1-based, the header not counted: data row 1 is line 2 of a CSV)
    and the column."""
    report = validated(data_dir, window_end)
    click.echo(f"{data_dir}: valid ({', '.join(f'{k} {v:,}' for k, v in report.counts.items())})")


commands = [simulate, validate]
