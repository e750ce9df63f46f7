"""The `retention` command line: simulate, validate, train, evaluate and score.

Exit codes: 0 success, 2 invalid input (bad data, bad arguments, an artifact that cannot be verified), 1 a bug.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from pathlib import Path

import click
from tqdm import tqdm

from retention.artifacts import ArtifactError, load_artifact, resolve_version
from retention.features import FEATURE_VERSION
from retention.offers import CatalogError, load_catalog
from training.clitypes import UTC_DATETIME

DEFAULT_MODELS = Path("models")




def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


def _validated(data_dir: Path, window_end: datetime | None):
    from training.validate import validate_dataset

    report = validate_dataset(data_dir, window_end=window_end)
    if report.warnings:
        click.echo("\n".join(f"warning: {w}" for w in report.warnings), err=True)
    if not report.ok:
        click.echo("\n".join(f"error: {e}" for e in report.errors), err=True)
        click.echo(f"{data_dir}: {len(report.errors)} error(s); nothing was trained or scored.", err=True)
        sys.exit(2)
    return report


@click.group(help=__doc__)
def main() -> None:
    pass


@main.command()
@click.option("--customers", type=click.IntRange(min=1), default=50_000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--days", type=click.IntRange(min=60), default=365, show_default=True, help="Days of history.")
@click.option("--out", "out", type=click.Path(path_type=Path), required=True, help="Output data directory.")
@click.option("--format", "fmt", type=click.Choice(["parquet", "csv"]), default="parquet", show_default=True)
@click.option("--chunk-size", type=click.IntRange(min=100), default=50_000, show_default=True,
              help="Customers simulated at once; bounds memory.")
def simulate(customers: int, seed: int, days: int, out: Path, fmt: str, chunk_size: int) -> None:
    """Write a simulated data set in the training-data contract, with a documented ground truth."""
    from training.simulator.generate import SimConfig
    from training.simulator.generate import simulate as run

    if out.exists() and any(out.iterdir()):
        _fail(f"{out}: exists and is not empty; choose a new --out so no data set is overwritten")
    t0 = time.perf_counter()
    with tqdm(total=customers, unit="customer", desc="simulate", file=sys.stderr) as bar:
        manifest = run(SimConfig(customers=customers, seed=seed, days=days, chunk_size=chunk_size, fmt=fmt),
                       out, progress=bar.update)
    click.echo(json.dumps({"out": str(out), "seconds": round(time.perf_counter() - t0, 1), **manifest}, indent=2))


@main.command()
@click.option("--data", "data_dir", type=click.Path(path_type=Path), required=True)
@click.option("--window-end", type=UTC_DATETIME, default=None,
              help="End of the data window (default: dataset.json, else now). Later dates are errors.")
def validate(data_dir: Path, window_end: datetime | None) -> None:
    """Check a data directory against the contract; exit 2 on any error."""
    report = _validated(data_dir, window_end)
    click.echo(f"{data_dir}: valid ({', '.join(f'{k} {v:,}' for k, v in report.counts.items())})")


@main.command()
@click.option("--data", "data_dir", type=click.Path(path_type=Path), required=True)
@click.option("--out", "out_root", type=click.Path(path_type=Path), default=DEFAULT_MODELS, show_default=True)
@click.option("--window-end", type=UTC_DATETIME, default=None)
@click.option("--eval-fraction", type=click.FloatRange(0.05, 0.5), default=0.25, show_default=True)
@click.option("--exclude-attribute", "exclude", multiple=True, help="Customer column not to use as a feature.")
@click.option("--seed", type=int, default=0, show_default=True)
def train(data_dir: Path, out_root: Path, window_end, eval_fraction: float, exclude: tuple[str, ...], seed: int) -> None:
    """Validate, train both models, evaluate on the latest period, write models/<version>/."""
    from training.train import TrainConfig
    from training.train import train as run

    _validated(data_dir, window_end)
    t0 = time.perf_counter()
    steps = ["offer-response features", "offer-response model", "churn-risk features", "churn-risk model",
             "writing artifact"]
    with tqdm(total=len(steps), desc="train", unit="step", file=sys.stderr) as bar:
        def progress(msg: str) -> None:
            bar.set_postfix_str(msg)
            if msg != steps[0]:
                bar.update(1)

        try:
            version_dir = run(TrainConfig(data_dir=data_dir, out_root=out_root, window_end=window_end,
                                          eval_fraction=eval_fraction, seed=seed, exclude_attributes=exclude),
                              progress=progress)
        except ValueError as exc:
            _fail(str(exc))
        bar.update(1)
    click.echo(_summary(version_dir, time.perf_counter() - t0))


def _summary(version_dir: Path, seconds: float) -> str:
    meta = json.loads((version_dir / "metadata.json").read_text())
    lines = [f"model version {meta['version']} written to {version_dir} in {seconds:.1f} s",
             f"report: {version_dir / 'report.html'}"]
    for name, m in meta["metrics"].items():
        lines.append(f"{name}:")
        for row in ("model", "baseline_nps_segment", "baseline_prior"):
            r = m[row]
            lines.append(f"  {row:<22} auc={_f(r['roc_auc'])} pr_auc={_f(r['pr_auc'])} brier={_f(r['brier'])} "
                         f"ece={_f(r['ece'])} lift@10%={_f(r['lift_top_decile'])} n={r['n']}")
        if "bayes_optimal_auc" in m:
            lines.append(f"  bayes-optimal auc={_f(m['bayes_optimal_auc'])} "
                         f"model/bayes={_f(m['auc_share_of_bayes'])}")
    return "\n".join(lines)


def _f(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _load(models_root: Path, ref: str):
    try:
        version_dir = resolve_version(models_root, ref)
        model, meta = load_artifact(version_dir, feature_version=FEATURE_VERSION)
    except ArtifactError as exc:
        _fail(str(exc))
    return version_dir, model, meta


@main.command()
@click.option("--model", "ref", default="latest", show_default=True, help="Version id, folder, or 'latest'.")
@click.option("--models", "models_root", type=click.Path(path_type=Path), default=DEFAULT_MODELS, show_default=True)
@click.option("--data", "data_dir", type=click.Path(path_type=Path), default=None,
              help="Evaluate on this data set's labelled cancel requests (default: print the training metrics).")
@click.option("--since", type=UTC_DATETIME, default=None, help="Only requests at or after this time.")
@click.option("--window-end", type=UTC_DATETIME, default=None)
def evaluate(ref: str, models_root: Path, data_dir: Path | None, since, window_end) -> None:
    """Verify a model version and report its metrics, optionally on another data set."""
    version_dir, model, meta = _load(models_root, ref)
    if data_dir is None:
        click.echo(_summary(version_dir, 0.0))
        return
    from training.evaluate import evaluate_on

    _validated(data_dir, window_end)
    with tqdm(total=1, desc="evaluate", file=sys.stderr) as bar:
        result = evaluate_on(model, meta, data_dir, since=since, window_end=window_end)
        bar.update(1)
    click.echo(json.dumps(result, indent=2))


@main.command()
@click.option("--model", "ref", default="latest", show_default=True)
@click.option("--models", "models_root", type=click.Path(path_type=Path), default=DEFAULT_MODELS, show_default=True)
@click.option("--data", "data_dir", type=click.Path(path_type=Path), required=True)
@click.option("--as-of", "as_of", type=UTC_DATETIME, required=True, help="Score customers as of this time.")
@click.option("--out", "out", type=click.Path(path_type=Path), required=True, help="Output .parquet or .csv file.")
@click.option("--batch-size", type=click.IntRange(min=1000), default=100_000, show_default=True)
def score(ref: str, models_root: Path, data_dir: Path, as_of: datetime, out: Path, batch_size: int) -> None:
    """Churn risk (next 30 days) and no-offer save probability for every active customer as of T."""
    from training.evaluate import score_customers

    if out.suffix not in (".parquet", ".csv"):
        _fail(f"{out}: --out must end in .parquet or .csv")
    _validated(data_dir, None)  # data after T is fine: features only read rows before T
    _, model, meta = _load(models_root, ref)
    n = score_customers(model, meta, data_dir, as_of, out, batch_size, progress=tqdm)
    click.echo(f"scored {n:,} customers as of {as_of.isoformat()} into {out}")


@main.command("evaluate-policy")
@click.option("--model", "ref", default="latest", show_default=True, help="Version id, folder, or 'latest'.")
@click.option("--models", "models_root", type=click.Path(path_type=Path), default=DEFAULT_MODELS, show_default=True)
@click.option("--data", "data_dir", type=click.Path(path_type=Path), required=True,
              help="A simulated data set with _truth/ (ideally one the model was not trained on).")
@click.option("--since", type=UTC_DATETIME, default=None, help="Only requests at or after this time.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="A random sample of this many requests.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sample and the bootstrap.")
@click.option("--out", "out", type=click.Path(path_type=Path), default=None, help="Also write the JSON here.")
def evaluate_policy(ref: str, models_root: Path, data_dir: Path, since, limit: int | None, seed: int,
                    out: Path | None) -> None:
    """Value the service's offer choices with the simulator's true response, against the rules, every fixed
    offer and the oracle."""
    from training.policy_eval import TRUTH_FILE, format_table
    from training.policy_eval import evaluate_policy as run

    if not (data_dir / TRUTH_FILE).is_file():
        _fail(f"{data_dir}: no {TRUTH_FILE}: judging a policy needs the simulator's true response; "
              "use a data set written by `retention simulate`")
    _validated(data_dir, None)
    _, model, meta = _load(models_root, ref)
    try:
        result = run(model, meta, data_dir, since=since, limit=limit, seed=seed, progress=tqdm)
    except ValueError as exc:
        _fail(str(exc))
    click.echo(format_table(result))
    click.echo(json.dumps(result, indent=2))
    if out is not None:
        out.write_text(json.dumps(result, indent=2) + "\n")


@main.command()
@click.option("--catalog", type=click.Path(path_type=Path), default=None)
def offers(catalog: Path | None) -> None:
    """Validate and print the offer catalog."""
    try:
        cat = load_catalog(catalog) if catalog else load_catalog()
    except CatalogError as exc:
        _fail(str(exc))
    click.echo(f"catalog version {cat.version}")
    for o in cat.offers:
        click.echo(f"  {o.id:<16} {o.type:<9} periods={','.join(o.billing_periods)} channels={','.join(o.channels)}")


# The store's commands (db, keys, export, load-features) live with the store adapter.
from store.cli import register as _register_store  # noqa: E402

_register_store(main)

# Offer experiments: check, list, sample-size, report, simulate.
from training.experiment_cli import register as _register_experiments  # noqa: E402

_register_experiments(main)

if __name__ == "__main__":
    main()
