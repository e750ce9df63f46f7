"""`retention experiment ...`: check and list experiments, size them, report on them, and run one end to end
on simulated customers. Registered on the group of training/cli.py.

Exit codes as elsewhere: 2 with an `error: ...` line for bad input (an invalid experiments file names the
file and the experiment), an unknown experiment or an unreachable store.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from retention import stats
from retention.experiment_analysis import analyse
from retention.experiments import DEFAULT_EXPERIMENTS, ExperimentError, load_experiments
from retention.offers import load_catalog
from store.errors import StoreError
from training.clitypes import UTC_DATETIME

_FILE = click.option("--file", "path", type=click.Path(path_type=Path), default=DEFAULT_EXPERIMENTS,
                     show_default=True, help="The experiments file.")


def _fail(message: str) -> None:
    raise click.ClickException(message)


def _book(path: Path):
    try:
        return load_experiments(load_catalog(), path)
    except ExperimentError as exc:
        _fail(str(exc))


@click.group(help=__doc__.split("\n\n")[0])
def experiment() -> None:
    pass


@experiment.command("check")
@_FILE
def check(path: Path) -> None:
    """Validate the experiments file (the service refuses to start with an invalid one)."""
    book = _book(path)
    click.echo(f"{path}: {len(book.experiments)} experiment(s), version {book.version}")


@experiment.command("list")
@_FILE
def list_(path: Path) -> None:
    """Every experiment, whether it runs now, its slice, holdout and arms."""
    now = datetime.now(UTC)
    for e in _book(path).experiments:
        arms = ", ".join(f"{v.name} ({v.kind}{':' + v.offer if v.offer else ''}) x{v.weight:g}" for v in e.variants)
        click.echo(f"{e.name}: {'running' if e.running(now) else 'not running'}, slice {list(e.slice)}, "
                   f"holdout {e.holdout:.0%}, control {e.control}; arms {arms}; definition {e.definition_hash()}")


@experiment.command("sample-size")
@click.option("--baseline", type=click.FloatRange(0, 1, min_open=True, max_open=True), required=True,
              help="The control's rate, e.g. 0.55 retained at day 30.")
@click.option("--mde", type=click.FloatRange(-1, 1), required=True, help="Absolute difference to detect, e.g. 0.02.")
@click.option("--alpha", type=click.FloatRange(0.0001, 0.5), default=0.05, show_default=True)
@click.option("--power", type=click.FloatRange(0.5, 0.999), default=0.8, show_default=True)
@click.option("--arms", type=click.IntRange(min=2), default=2, show_default=True,
              help="Arms compared with the control (Bonferroni: alpha is split between them).")
def sample_size(baseline: float, mde: float, alpha: float, power: float, arms: int) -> None:
    """Customers needed per arm to detect an absolute difference `--mde` in a rate."""
    comparisons = arms - 1
    try:
        n = stats.sample_size_two_proportions(baseline, mde, alpha=alpha / comparisons, power=power)
    except ValueError as exc:
        _fail(str(exc))
    click.echo(f"{n:,} exposed customers per arm ({n * arms:,} in all) detect {baseline:.1%} -> "
               f"{baseline + mde:.1%} with power {power:.0%} at alpha {alpha:g}"
               + (f" split over {comparisons} comparisons" if comparisons > 1 else ""))


@experiment.command("report")
@click.argument("name")
@_FILE
@click.option("--database-url", "url", default=None, metavar="URL",
              help="SQLAlchemy database URL [default: $DATABASE_URL, else sqlite:///var/retention.db]")
@click.option("--as-of", "as_of", type=UTC_DATETIME, default=None, help="Time to analyse as of (ISO-8601) [now].")
@click.option("--mde", type=click.FloatRange(0.001, 0.5), default=0.02, show_default=True)
@click.option("--html", "html", type=click.Path(path_type=Path), default=None, help="Write the HTML report here.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None, help="Write the result here.")
def report(name: str, path: Path, url: str | None, as_of: datetime | None, mde: float, html: Path | None,
           json_out: Path | None) -> None:
    """Analyse experiment NAME from the store: per arm and against control and holdout."""
    from store.repository import Store, jsonable

    book = _book(path)
    e = book.get(name)
    if e is None:
        _fail(f"{path}: no experiment named {name!r} (have: {', '.join(x.name for x in book.experiments) or 'none'})")
    as_of = as_of or datetime.now(UTC)
    try:
        with Store.from_url(url) as store:
            records = store.experiment_records(name, as_of)
    except StoreError as exc:
        _fail(str(exc))
    result = jsonable(analyse(e, load_catalog(), records, as_of, mde=mde))
    _emit(result, html, json_out)


def _emit(result: dict, html: Path | None, json_out: Path | None) -> None:
    click.echo(format_text(result))
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=2) + "\n")
        click.echo(f"result: {json_out}")
    if html:
        from training.experiment_report import write_html

        click.echo(f"HTML report: {write_html(result, html)}")


@experiment.command("simulate")
@click.option("--data", "data_dir", type=click.Path(path_type=Path, exists=True), required=True,
              help="A data set written by `retention simulate` (it carries the true responses).")
@click.option("--url", default="http://127.0.0.1:8000", show_default=True, help="The running service.")
@click.option("--key", required=True, help="An admin key of that service.")
@click.option("--name", required=True, help="The experiment, running in that service's experiments file.")
@click.option("--limit", type=click.IntRange(min=10), default=4000, show_default=True, help="Customers to simulate.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--html", "html", type=click.Path(path_type=Path), default=None, help="Write the HTML report here.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None, help="Write the result here.")
def simulate(data_dir: Path, url: str, key: str, name: str, limit: int, seed: int, html: Path | None,
             json_out: Path | None) -> None:
    """Run an experiment end to end through the API on simulated customers and check the report against
    the truth (see training/experiment_sim.py)."""
    from training.experiment_sim import REPORT_DELAY_DAYS, HttpClient, recovered_ordering, run

    client = HttpClient(url, key)
    sim = run(client, data_dir, limit=limit, seed=seed, tag=f"xp{seed}")
    if not sim["entered"]:
        _fail(f"none of {limit} customers entered {name!r}: is it running in the service's experiments file?")
    as_of = datetime.fromisoformat(sim["last_decision_at"]) + timedelta(days=REPORT_DELAY_DAYS)
    status, result = client.get(f"/v1/experiments/{name}/results?as_of={as_of.isoformat().replace('+', '%2B')}")
    if status != 200:
        _fail(f"results of {name!r}: {status} {result}")
    _emit(result, html, json_out)
    click.echo(f"simulated {limit} customers, {sim['entered']} entered; truth per arm (no sampling of outcomes):")
    for arm, t in sim["truth"].items():
        click.echo(f"  {arm:<16} n={t['n']:>5}  retained_30 {t['retained_30']:.3f}  "
                   f"net_revenue_90 {t['net_revenue_90']:.2f}")
    for metric in ("retained_30", "net_revenue_90"):
        o = recovered_ordering(result, sim["truth"], metric)
        verdict = "recovered" if o["observed"] == o["true"] else "NOT recovered"
        click.echo(f"ordering by {metric}: report {' > '.join(o['observed'])}; truth {' > '.join(o['true'])}: {verdict}")


def format_text(r: dict) -> str:
    """A plain-text summary of an analysis result for the terminal."""
    def pct(x):
        return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"

    def num(x, fmt=".2f"):
        return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)

    lines = [f"experiment {r['experiment']} ({'running' if r['running'] else 'stopped'}), as of {r['as_of']}, "
             f"definition {r['definition']}; unit: {r['unit']}"]
    for kind in ("assigned", "exposed"):
        s = r["srm"][kind]
        flag = "ALARM: sample-ratio mismatch" if s["alarm"] else "ok"
        lines.append(f"sample-ratio check on {kind}: chi2 {num(s['chi2'])}, p {num(s['p_value'], '.3g')}: {flag}")
    lines.append(f"  {'arm':<16} {'assigned':>8} {'exposed':>8}  {'accepted':>8}  {'retained_30 (95% CI)':>24}  "
                 f"{'retained_90':>11}  {'net_revenue_90 (95% CI)':>26}")
    for a in r["arms"]:
        m = a["metrics"]
        r30, rev = m["retained_30"], m["net_revenue_90"]
        lines.append(f"  {a['name']:<16} {a['assigned']:>8} {a['exposed']:>8}  {pct(m['accepted']['estimate']):>8}  "
                     f"{pct(r30['estimate']):>7} [{pct(r30['low'])}, {pct(r30['high'])}] n={r30['n']:<5}"
                     f"  {pct(m['retained_90']['estimate']):>11}  {num(rev['estimate']):>8} "
                     f"[{num(rev['low'])}, {num(rev['high'])}] n={rev['n']}")
    lines.append("differences (95% CI; always-valid CI; Holm-adjusted p):")
    for c in r["comparisons"]:
        if c["metric"] not in (r["primary_metric"], *r["guardrail_metrics"]):
            continue
        f = (lambda x: num(100 * x if x is not None else None, "+.1f") + " pp") if c["metric"] != "net_revenue_90" \
            else (lambda x: num(x, "+.2f"))
        star = " *" if c["significant"] else ""
        lines.append(f"  {c['metric']:<15} {c['arm']:>16} vs {c['baseline']:<16} {f(c['difference'])} "
                     f"[{f(c['low'])}, {f(c['high'])}]; [{f(c['always_valid_low'])}, {f(c['always_valid_high'])}]; "
                     f"p {num(c['p_adjusted'], '.3g')}{star}")
    s = r["sample_size"]
    if s.get("per_arm"):
        lines.append(f"sample size: {s['per_arm']:,} per arm to detect {num(s['mde'], '.3f')} on {s['metric']} "
                     f"(smallest arm now {s['smallest_arm_now']:,}; detectable now "
                     f"{num(s['detectable_now'], '.3f')})")
    lines += [f"warning: {w}" for w in r["warnings"]]
    return "\n".join(lines)


def register(main: click.Group) -> None:
    main.add_command(experiment)
