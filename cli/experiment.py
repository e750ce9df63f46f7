"""`retention experiment ...`: check and list experiments, size them, report on them, and run one end to end
on simulated customers. An invalid experiments file names the file and the experiment (exit 2)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cli.options import (
    PATH,
    UTC_DATETIME,
    catalog_from,
    catalog_path,
    database_url,
    fail,
    failing_on,
    open_store,
)
from reports.formatting import count, general, percent
from retention.experiment_analysis import comparisons_in, plan_per_arm
from retention.experiments import DEFAULT_EXPERIMENTS, ExperimentBook, ExperimentError, load_experiments
from retention.files import write_atomic
from retention.jsonvalues import jsonable

if TYPE_CHECKING:
    from retention.experiment_analysis import ExperimentResult

experiments_file = click.option(
    "--file", "path", envvar="RETENTION_EXPERIMENTS", type=PATH, default=DEFAULT_EXPERIMENTS, show_default=True,
    help="The experiments file [env: RETENTION_EXPERIMENTS].")


def _book(path: Path, catalog_path: Path) -> ExperimentBook:
    with failing_on(ExperimentError):
        return load_experiments(catalog_from(catalog_path), path)


@click.group()
def experiment() -> None:
    """Offer experiments: check, list, sample-size, report, simulate."""


@experiment.command("check")
@experiments_file
@catalog_path
def check(path: Path, catalog_path: Path) -> None:
    """Validate the experiments file (the service refuses to start with an invalid one)."""
    book = _book(path, catalog_path)
    click.echo(f"{path}: {len(book.experiments)} experiment(s), version {book.version}")


@experiment.command("list")
@experiments_file
@catalog_path
def list_(path: Path, catalog_path: Path) -> None:
    """Every experiment, whether it runs now, its slice, holdout and arms."""
    now = datetime.now(UTC)
    for e in _book(path, catalog_path).experiments:
        arms = ", ".join(f"{v.name} ({v.kind}{':' + v.offer if v.offer else ''}) x{general(v.weight)}"
                         for v in e.variants)
        click.echo(f"{e.name}: {'running' if e.running(now) else 'not running'}, slice {list(e.slice)}, "
                   f"holdout {percent(e.holdout, 0)}, control {e.control}; arms {arms}; definition {e.definition_hash()}")


@experiment.command("sample-size")
@click.option("--baseline", type=click.FloatRange(0, 1, min_open=True, max_open=True), required=True,
              help="The control's rate, e.g. 0.55 retained at day 30.")
@click.option("--mde", type=click.FloatRange(-1, 1), required=True, help="Absolute difference to detect, e.g. 0.02.")
@click.option("--alpha", type=click.FloatRange(0.0001, 0.5), default=0.05, show_default=True)
@click.option("--power", type=click.FloatRange(0.5, 0.999), default=0.8, show_default=True)
@click.option("--arms", type=click.IntRange(min=2), default=2, show_default=True, metavar="K",
              help="Arms of the experiment including the control (a holdout not counted): K-1 comparisons with "
                   "the control.")
@click.option("--holdout/--no-holdout", default=False, show_default=True,
              help="The experiment has a no-offer holdout: K more comparisons, every arm against it.")
def sample_size(baseline: float, mde: float, alpha: float, power: float, arms: int, holdout: bool) -> None:
    """Customers needed per arm to detect an absolute difference `--mde` in a rate.

    Every arm but the control is compared with the control (and, with --holdout, every arm with the holdout);
    alpha is split over those comparisons (Bonferroni), which keeps the chance of any false winner at or
    below alpha and is a little conservative for the Holm correction that `experiment report` applies. The
    report's sample-size section uses the same rule (retention.experiment_analysis.plan_per_arm)."""
    comparisons = comparisons_in(arms, holdout)
    with failing_on(ValueError):
        n, each = plan_per_arm(baseline, mde, comparisons, alpha=alpha, power=power)
    split = f" each (Bonferroni split of {general(alpha)})" if comparisons > 1 else ""
    against = "the control and the holdout" if holdout else "the control"
    click.echo(f"{count(n)} exposed customers per arm, {arms} arms including the control ({count(n * arms)} in all): "
               f"detect {percent(baseline)} -> {percent(baseline + mde)} with power {percent(power, 0)}; "
               f"{comparisons} comparison{'s' if comparisons > 1 else ''} with {against} at alpha {each:.3g}{split}")


@experiment.command("report")
@click.argument("name")
@experiments_file
@catalog_path
@database_url
@click.option("--as-of", "as_of", type=UTC_DATETIME, default=None, help="Time to analyse as of (ISO-8601) [now].")
@click.option("--mde", type=click.FloatRange(0.001, 0.5), default=0.02, show_default=True)
@click.option("--html", "html", type=PATH, default=None, help="Write the HTML report here.")
@click.option("--json", "json_out", type=PATH, default=None, help="Write the result here.")
def report(name: str, path: Path, catalog_path: Path, url: str | None, as_of: datetime | None, mde: float,
           html: Path | None, json_out: Path | None) -> None:
    """Analyse experiment NAME from the store: per arm and against control and holdout."""
    from retention.experiment_analysis import experiment_results
    from retention.experiments import UnknownExperiment

    catalog = catalog_from(catalog_path)
    with failing_on(ExperimentError):
        book = load_experiments(catalog, path)
    with open_store(url) as store, failing_on(UnknownExperiment):
        result = experiment_results(book, catalog, store.experiment_records, name, as_of or datetime.now(UTC),
                                    mde=mde)
        store.publish_srm_alarms(result)  # experiment.srm_alarm webhooks, once per definition and stage
    _emit(result, html, json_out)


def _emit(result: ExperimentResult, html: Path | None, json_out: Path | None) -> None:
    from reports.text import experiment_text

    click.echo(experiment_text(result))
    if json_out:
        write_atomic(json_out, json.dumps(jsonable(result), indent=2) + "\n")
        click.echo(f"result: {json_out}")
    if html:
        from reports.experiment import write_html

        click.echo(f"HTML report: {write_html(result, html)}")


@experiment.command("simulate")
@click.option("--data", "data_dir", type=click.Path(path_type=Path, exists=True), required=True,
              help="A data set written by `retention simulate` (it carries the true responses).")
@click.option("--url", default="http://127.0.0.1:8000", show_default=True, help="The running service.")
@click.option("--key", required=True, help="An admin key of that service.")
@click.option("--name", required=True, help="The experiment, running in that service's experiments file.")
@click.option("--limit", type=click.IntRange(min=10), default=4000, show_default=True, help="Customers to simulate.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--html", "html", type=PATH, default=None, help="Write the HTML report here.")
@click.option("--json", "json_out", type=PATH, default=None, help="Write the result here.")
@catalog_path
def simulate(data_dir: Path, url: str, key: str, name: str, limit: int, seed: int, html: Path | None,
             json_out: Path | None, catalog_path: Path) -> None:
    """Run an experiment end to end through the API on simulated customers and check the report against
    the truth (see training/experiment_sim.py). --catalog must be the service's catalog."""
    import requests

    from reports.text import simulation_text
    from retention.experiment_analysis import ExperimentResult
    from training.experiment_sim import REPORT_DELAY_DAYS, HttpClient, recovered_ordering, run

    client = HttpClient(url, key)
    with failing_on(requests.RequestException, RuntimeError):
        sim = run(client, data_dir, catalog_from(catalog_path), limit=limit, seed=seed, tag=f"xp{seed}")
        if not sim["entered"]:
            fail(f"none of {limit} customers entered {name!r}: is it running in the service's experiments file?")
        as_of = datetime.fromisoformat(sim["last_decision_at"]) + timedelta(days=REPORT_DELAY_DAYS)
        status, body = client.get(f"/v1/experiments/{name}/results", params={"as_of": as_of.isoformat()})
    if status != 200:
        fail(f"results of {name!r}: {status} {body}")
    result = ExperimentResult.from_json(body)  # the API's JSON, typed again: the same text and page as `report`
    _emit(result, html, json_out)
    orderings = [recovered_ordering(result, sim["truth"], metric) for metric in ("retained_30", "net_revenue_90")]
    click.echo(simulation_text(limit, sim["entered"], sim["truth"], orderings))


commands = [experiment]
