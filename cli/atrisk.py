"""`retention at-risk`: the customers most likely to ask to cancel in the next 30 days, with the features
behind each score and a suggested action (training.atrisk), optionally opening follow-up tasks for the
detractors among them. Meant as a weekly job (README)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import click
from tqdm import tqdm

from cli import options as opts


@click.command("at-risk")
@opts.model_ref
@opts.models_root
@click.option("--data", "data_dir", type=opts.PATH, required=True)
@click.option("--as-of", "as_of", type=opts.UTC_DATETIME, default=None, help="List as of this time [default: now].")
@click.option("--top", type=click.IntRange(min=1), default=None,
              help="The N riskiest customers [default: 100 unless --min-risk is given].")
@click.option("--min-risk", type=click.FloatRange(0.0, 1.0), default=None,
              help="Only customers with at least this 30-day churn risk.")
@click.option("--reasons", "n_reasons", type=click.IntRange(1, 10), default=3, show_default=True,
              help="Reason codes per customer.")
@click.option("--out", "outs", type=opts.PATH, multiple=True,
              help="Write the list to this .csv or .json file (repeatable) [default: print it].")
@click.option("--create-followups", is_flag=True,
              help="Open (or update) a follow-up task for every detractor on the list, in the store.")
@click.option("--followup-rules", "rules_path", envvar="RETENTION_FOLLOWUPS", type=opts.PATH, default=None,
              help="Follow-up rules [env: RETENTION_FOLLOWUPS; default: config/followups.toml].")
@opts.database_url
@opts.catalog_path
def at_risk(ref: str, models_root: Path, data_dir: Path, as_of: datetime | None, top: int | None,
            min_risk: float | None, n_reasons: int, outs: tuple[Path, ...], create_followups: bool,
            rules_path: Path | None, url: str | None, catalog_path: Path) -> None:
    """The customers most likely to ask to cancel in the next 30 days: churn risk, reason codes, NPS segment
    and latest score, and a suggested action (follow-up for detractors, reward for promoters at risk,
    otherwise an offer at cancel when the risk is at least twice the base rate, else watch)."""
    from training.atrisk import risk_list, write_list

    for out in outs:
        if out.suffix not in (".csv", ".json"):
            opts.fail(f"{out}: --out must end in .csv or .json")
    as_of = as_of or datetime.now(UTC)
    if top is None and min_risk is None:
        top = 100
    catalog = opts.catalog_from(catalog_path)
    opts.validated(data_dir)  # data after T is fine: features only read rows before T
    _, model, meta = opts.verified_model(models_root, ref)
    with opts.failing_on(ValueError):
        listed, summary = risk_list(model, meta, data_dir, catalog, as_of, top=top, min_risk=min_risk,
                                    n_reasons=n_reasons, progress=lambda it, **kw: tqdm(it, file=sys.stderr, **kw))
    for out in outs:
        write_list(listed, summary, out)
        click.echo(f"wrote {len(listed)} customer(s) to {out}")
    if not outs:
        for x in listed:
            score = "-" if x["nps_last"] is None else str(x["nps_last"])
            click.echo(f"{x['rank']:>5}  {x['customer_id']:<16} risk {x['churn_risk_30d']:.3f}  "
                       f"{x['nps_segment']:<9} nps {score:>2}  {x['suggested_action']:<15} "
                       f"{', '.join(x['reason_codes'])}")
    actions = ", ".join(f"{n} {a}" for a, n in summary["actions"].items()) or "none"
    click.echo(f"{summary['listed']} of {summary['subscribed']:,} subscribed customers listed as of "
               f"{summary['as_of']} (model {summary['model_version']}, mean risk {summary['base_rate']:.3f}); "
               f"actions: {actions}")
    if create_followups:
        _create_followups(listed, rules_path, url)


def _create_followups(listed: list[dict], rules_path: Path | None, url: str | None) -> None:
    from retention.configfiles import ConfigError
    from retention.followups import Trigger, load_followups

    try:
        rules = load_followups(rules_path) if rules_path else load_followups()
    except ConfigError as exc:
        opts.fail(str(exc))
    now = datetime.now(UTC)  # the list is the trigger: due the rules' window from now
    triggers = [Trigger(x["customer_id"], now, segment="detractor", churn_risk=x["churn_risk_30d"],
                        followup_offer=True, source="at_risk")
                for x in listed if x["suggested_action"] == "follow-up"]
    with opts.open_store(url) as store:
        store.followup_rules = rules
        counts = store.upsert_followups(triggers)
    click.echo(f"follow-ups: {counts['created']} task(s) opened, {counts['existing']} detractor(s) already had "
               "an active one (updated)")


commands = [at_risk]
