"""`retention train`, `evaluate`, `score` and `evaluate-policy`: fit a model version, and judge or use one."""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from pathlib import Path

import click
from tqdm import tqdm

from cli.options import (
    DEFAULT_MODELS,
    PATH,
    UTC_DATETIME,
    catalog_from,
    catalog_path,
    configured,
    fail,
    failing_on,
    model_ref,
    models_root,
    policy_from,
    policy_path,
    validated,
    verified_model,
    write_json,
)


@click.command()
@click.option("--data", "data_dir", type=PATH, required=True)
@click.option("--out", "out_root", type=PATH, default=DEFAULT_MODELS, show_default=True)
@click.option("--window-end", type=UTC_DATETIME, default=None)
@click.option("--eval-fraction", type=click.FloatRange(0.05, 0.5), default=0.25, show_default=True)
@click.option("--exclude-attribute", "exclude", multiple=True, help="Customer column not to use as a feature.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--only", "only", type=click.Choice(["offer-response", "churn-risk"]), default=None,
              help="Train one model alone [default: both, as far as the data supports them].")
@click.option("--learners", "families", default=None, metavar="FAMILIES",
              help="Offer-response learner families to compare, comma-separated: boosting, logistic, ipw, blend "
                   "[default: all].")
@catalog_path
@policy_path
def train(data_dir: Path, out_root: Path, window_end, eval_fraction: float, exclude: tuple[str, ...], seed: int,
          only: str | None, families: str | None, catalog_path: Path, policy_path: Path) -> None:
    """Validate, train the models the data supports, evaluate on the latest period, write models/<version>/.

    The offer-response learner is chosen by measurement on time-ordered validation and gated against the
    rules on held-out flows; without an offer history only churn risk is trained (offers: the rules)."""
    from reports.model import write_report
    from reports.text import model_summary
    from retention.artifacts import read_metadata
    from training.train import MODELS, TrainConfig, train_version

    catalog = catalog_from(catalog_path)
    policy = policy_from(catalog, policy_path)
    validated(data_dir, window_end)
    t0 = time.perf_counter()
    models = MODELS if only is None else (only.replace("-", "_"),)
    learners = tuple(f.strip() for f in families.split(",")) if families else None
    with tqdm(desc="train", unit="step", file=sys.stderr) as bar:
        def progress(msg: str) -> None:
            bar.set_postfix_str(msg)
            bar.update(1)

        config = TrainConfig(data_dir=data_dir, out_root=out_root, window_end=window_end, eval_fraction=eval_fraction,
                             seed=seed, exclude_attributes=exclude, catalog=catalog, policy=policy, models=models,
                             learners=learners)
        with failing_on(ValueError):
            version_dir = train_version(config, progress=progress)
        write_report(version_dir / "report.html", read_metadata(version_dir))
    click.echo(f"model version {version_dir.name} written to {version_dir} in {time.perf_counter() - t0:.1f} s")
    click.echo(model_summary(version_dir))
    click.echo(f"a candidate: the service serves the registry's champion; compare it (`retention models compare "
               f"champion {version_dir.name} --data EXPORT`) and promote it (`retention models promote "
               f"{version_dir.name} --reason ...`)")


@click.command()
@model_ref
@models_root
@click.option("--data", "data_dir", type=PATH, default=None,
              help="Evaluate on this data set's labelled cancel requests (default: print the training metrics).")
@click.option("--since", type=UTC_DATETIME, default=None, help="Only requests at or after this time.")
@click.option("--window-end", type=UTC_DATETIME, default=None)
@catalog_path
def evaluate(ref: str, models_root: Path, data_dir: Path | None, since, window_end, catalog_path: Path) -> None:
    """Verify a model version and report its metrics, optionally on another data set."""
    from reports.text import model_summary

    version_dir, model, meta = verified_model(models_root, ref)
    if data_dir is None:
        # Nothing is computed or written here: say so, so that no one reads a fresh evaluation into it.
        click.echo(f"model version {version_dir.name} ({version_dir}): artifact verified (checksums, library "
                   "versions); nothing written. Its metrics as measured when it was trained (pass --data to "
                   "evaluate it on another data set):")
        click.echo(model_summary(version_dir))
        return
    from training.evaluate import evaluate_on

    catalog = catalog_from(catalog_path)
    validated(data_dir, window_end)
    with tqdm(total=1, desc="evaluate", file=sys.stderr) as bar, failing_on(ValueError):
        result = evaluate_on(model, meta, data_dir, catalog, since=since, window_end=window_end)
        bar.update(1)
    click.echo(json.dumps(result, indent=2))


@click.command()
@model_ref
@models_root
@click.option("--data", "data_dir", type=PATH, required=True)
@click.option("--as-of", "as_of", type=UTC_DATETIME, required=True, help="Score customers as of this time.")
@click.option("--out", "out", type=PATH, required=True, help="Output .parquet or .csv file.")
@click.option("--batch-size", type=click.IntRange(min=1000), default=100_000, show_default=True)
@catalog_path
def score(ref: str, models_root: Path, data_dir: Path, as_of: datetime, out: Path, batch_size: int,
          catalog_path: Path) -> None:
    """Churn risk (next 30 days) and no-offer save probability for every active customer as of T."""
    from training.evaluate import score_customers

    if out.suffix not in (".parquet", ".csv"):
        fail(f"{out}: --out must end in .parquet or .csv")
    catalog = catalog_from(catalog_path)
    validated(data_dir)  # data after T is fine: features only read rows before T
    _, model, meta = verified_model(models_root, ref)
    with failing_on(ValueError):
        n = score_customers(model, meta, data_dir, catalog, as_of, out, batch_size, progress=tqdm)
    click.echo(f"scored {n:,} customers as of {as_of.isoformat()} into {out}")


@click.command("evaluate-policy")
@model_ref
@models_root
@click.option("--data", "data_dir", type=PATH, required=True,
              help="A simulated data set with _truth/ (ideally one the model was not trained on).")
@click.option("--since", type=UTC_DATETIME, default=None, help="Only requests at or after this time.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="A random sample of this many requests.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sample and the bootstrap.")
@click.option("--out", "out", type=PATH, default=None, help="Also write the JSON here.")
@catalog_path
@policy_path
def evaluate_policy(ref: str, models_root: Path, data_dir: Path, since, limit: int | None, seed: int,
                    out: Path | None, catalog_path: Path, policy_path: Path) -> None:
    """Value the service's offer choices with the simulator's true response, against the rules, every fixed
    offer and the oracle."""
    from reports.text import policy_table
    from training.policy_eval import evaluate_policy as judge
    from training.simulator.truth import TRUTH_FILE

    if not (data_dir / TRUTH_FILE).is_file():
        fail(f"{data_dir}: no {TRUTH_FILE}: judging a policy needs the simulator's true response; "
             "use a data set written by `retention simulate`")
    catalog, policy = configured(catalog_path, policy_path, data_dir)
    _, model, meta = verified_model(models_root, ref)
    with failing_on(ValueError):
        result = judge(model, meta, data_dir, catalog, policy, since=since, limit=limit, seed=seed, progress=tqdm)
    click.echo(policy_table(result))
    click.echo(json.dumps(result, indent=2))
    write_json(out, result)


commands = [train, evaluate, score, evaluate_policy]
