"""`retention ope` and `retention models ...`: value candidate policies on logged decisions, and the model
registry (which version is the champion, which the challenger; promote, roll back)."""

from __future__ import annotations

from pathlib import Path

import click
from tqdm import tqdm

from cli.options import (
    PATH,
    catalog_from,
    catalog_path,
    configured,
    database_url,
    fail,
    failing_on,
    models_root,
    open_store,
    policy_path,
    write_json,
)
from retention.artifacts import ArtifactError


@click.command("ope")
@click.option("--data", "data_dir", type=PATH, required=True,
              help="Logged decisions with their outcomes and propensities: a `retention export` of the store, or "
                   "a simulated history.")
@click.option("--candidate", "candidates", multiple=True, required=True, metavar="POLICY",
              help="A policy to value (repeat): rules, none, fixed:OFFER, or a model version (champion, challenger, "
                   "latest, an id, a folder), optionally @SHARE for another exploration share: champion@0.1. The "
                   "first is the one the others are compared with.")
@click.option("--reward-model", "reward_ref", default=None, metavar="VERSION",
              help="The model version whose predictions are the doubly robust estimate's reward model "
                   "[default: the first model candidate].")
@click.option("--out", "out", type=PATH, default=None, help="Also write the JSON here.")
@models_root
@catalog_path
@policy_path
def ope(data_dir: Path, candidates: tuple[str, ...], reward_ref: str | None, out: Path | None, models_root: Path,
        catalog_path: Path, policy_path: Path) -> None:
    """Off-policy evaluation: what each candidate policy would have been worth on the logged decisions (IPS,
    self-normalised IPS, doubly robust, with 95% intervals and effective sample sizes), its offer mix beside
    the log's, and warnings where the log hardly supports it."""
    from reports.text import ope_table
    from training.offpolicy import estimate, parse_candidate, read_log

    catalog, config = configured(catalog_path, policy_path, data_dir)
    with failing_on(ValueError):
        parsed = [parse_candidate(c, catalog) for c in candidates]
    with failing_on(ValueError, ArtifactError):
        log = read_log(data_dir, catalog, config)
        result = estimate(parsed, log, catalog, config, models_root, reward_ref, progress=tqdm)
    click.echo(ope_table(result))
    write_json(out, result)


# ---------------------------------------------------------------------------------------------- registry


@click.group("models")
def models() -> None:
    """The model registry: list versions, show one, compare two, promote one to champion or challenger, roll
    the champion back. Versions are immutable; `train` writes candidates, and only the champion is served."""


pidfile_option = click.option(
    "--pidfile", type=PATH, envvar="RETENTION_PIDFILE", default=Path("var") / "gunicorn.pid", show_default=True,
    help="The running service's gunicorn pidfile [env: RETENTION_PIDFILE]: it is asked to reload (SIGHUP), which "
         "swaps the new champion in without dropping a request.")


@models.command("list")
@models_root
def list_models(models_root: Path) -> None:
    """Every version, oldest first: when it was trained, on what, its learner and gate verdict, and its alias."""
    from reports.text import versions_table
    from retention.artifacts import list_versions, read_metadata
    from retention.registry import RegistryError, read_registry

    with failing_on(RegistryError):
        registry = read_registry(models_root)
    rows = []
    for version in list_versions(models_root):
        try:
            meta = read_metadata(models_root / version)
        except ArtifactError as exc:
            rows.append({"version": version, "error": str(exc)})
            continue
        rows.append({"version": version, "meta": meta})
    click.echo(versions_table(rows, registry.aliases))


@models.command("show")
@click.argument("ref", default="champion")
@click.option("--drift-days", type=click.FloatRange(min=0, min_open=True, max=36_500), default=None, metavar="DAYS",
              help="Also the drift of the store's decisions of the last DAYS days from this version's training "
                   "rows (per-feature PSI, offer mix; as `retention drift`).")
@models_root
@database_url
def show(ref: str, drift_days: float | None, models_root: Path, url: str | None) -> None:
    """One version (default: the champion): its checks, aliases, metrics, gate, registry history and, with
    --drift-days, the drift of live traffic from its training data."""
    from reports.text import model_summary
    from retention.artifacts import resolve_version, verify_version
    from retention.features import FEATURE_VERSION
    from retention.registry import RegistryError, read_registry

    with failing_on(ArtifactError, RegistryError):
        version_dir = resolve_version(models_root, ref)
        registry = read_registry(models_root)
    try:
        meta = verify_version(version_dir, feature_version=FEATURE_VERSION)
        checked = "every file's checksum and the feature version verified"
    except ArtifactError as exc:
        meta, checked = None, f"REFUSED: {exc}"
    version = version_dir.name
    aliases = [a for a, v in registry.aliases.items() if v == version]
    click.echo(f"{version}  {'(' + ', '.join(aliases) + ')' if aliases else '(no alias)'}")
    click.echo(f"artifact: {checked}")
    if meta:
        window = meta.get("data_window") or {}
        click.echo(f"trained {meta.get('created_at')} on {meta.get('data_dir')} "
                   f"({window.get('start')} to {window.get('end')})")
        click.echo(model_summary(version_dir))
    for h in registry.history:
        if version in (h.get("version"), h.get("previous")):
            click.echo(f"history: {h['at']} {h['action']} {h['alias']}: {h.get('previous')} -> {h.get('version')} "
                       f"by {h.get('by')}{' (forced)' if h.get('forced') else ''}: {h.get('reason')}")
    if drift_days is not None and meta:
        from datetime import UTC, datetime, timedelta

        from reports.drift import drift_text
        from retention.drift import drift_report

        with open_store(url) as store:
            decisions = store.recent_decisions(datetime.now(UTC) - timedelta(days=drift_days), 20_000)
        click.echo(drift_text(drift_report(meta, decisions), drift_days))


@models.command("compare")
@click.argument("a")
@click.argument("b")
@click.option("--data", "data_dir", type=PATH, default=None,
              help="Logged decisions (a `retention export`) to value both versions on, off-policy.")
@click.option("--traffic-days", type=click.IntRange(min=1), default=None, metavar="DAYS",
              help="Also report, from the store, how often the challenger scored in the shadow agreed with the "
                   "champion on live decisions of the last DAYS days.")
@click.option("--out", "out", type=PATH, default=None, help="Also write the JSON here.")
@models_root
@catalog_path
@policy_path
@database_url
def compare(a: str, b: str, data_dir: Path | None, traffic_days: int | None, out: Path | None, models_root: Path,
            catalog_path: Path, policy_path: Path, url: str | None) -> None:
    """Two versions side by side (e.g. champion challenger): training window, held-out metrics, gate verdicts,
    with --data both valued on the same logged decisions with their difference, and with --traffic-days the
    shadow's agreement on live traffic."""
    from datetime import UTC, datetime, timedelta

    from reports.text import comparison_text
    from training.promotion import compare as compare_versions

    catalog, config = configured(catalog_path, policy_path, data_dir)
    with failing_on(ArtifactError, ValueError):
        result = compare_versions(models_root, a, b, catalog, config, data_dir, progress=tqdm)
    if traffic_days is not None:
        since = datetime.now(UTC) - timedelta(days=traffic_days)
        with open_store(url) as store:
            versions = {v["version"] for v in result["versions"]}
            result["shadow"] = [p for p in store.shadow_agreement(since)
                                if {p["champion"], p["challenger"]} <= versions]
            result["shadow_since"] = since.isoformat()
    click.echo(comparison_text(result))
    write_json(out, result)


@models.command("promote")
@click.argument("ref")
@click.option("--as", "alias", type=click.Choice(["champion", "challenger"]), default="champion", show_default=True)
@click.option("--reason", required=True, help="Why: recorded in the registry's history.")
@click.option("--data", "data_dir", type=PATH, default=None,
              help="Logged decisions (a `retention export`) on which the candidate must beat the champion.")
@click.option("--margin", type=float, default=0.0, show_default=True,
              help="How much better than the champion per request (doubly robust estimate) it must be.")
@click.option("--force", is_flag=True, help="Promote although the gate or the comparison refused it (recorded).")
@click.option("--by", default=None, help="Who promotes [default: the user running the command].")
@models_root
@catalog_path
@policy_path
@pidfile_option
def promote(ref: str, alias: str, reason: str, data_dir: Path | None, margin: float, force: bool, by: str | None,
            models_root: Path, catalog_path: Path, policy_path: Path, pidfile: Path) -> None:
    """Make a version the champion (served) or the challenger (scored beside it, never shown). A champion must
    pass every artifact check, its policy gate, and beat the serving champion on logged decisions by the margin;
    --force overrides the last two, with the reason recorded."""
    from retention.registry import RegistryError, move_alias, read_registry
    from training.promotion import promotion_checks

    catalog, config = configured(catalog_path, policy_path, data_dir)
    with failing_on(ArtifactError, RegistryError, ValueError):
        registry = read_registry(models_root)
        checks = promotion_checks(models_root, ref, alias, registry, catalog, config, data_dir, margin, progress=tqdm)
    if registry.version_of(alias) == checks.version:
        click.echo(f"{checks.version} is already the {alias}: nothing changed")
        return
    for line in _figure_lines(checks.figures):
        click.echo(line)
    if not checks.ok and not force:
        for r in checks.refusals:
            click.echo(f"refused: {r}", err=True)
        fail(f"{checks.version} was not made the {alias} (--force --reason '...' to promote it anyway)")
    with failing_on(RegistryError):
        updated = move_alias(models_root, alias, checks.version, action="promote", reason=reason, by=by,
                             forced=not checks.ok, checks={**checks.figures, "refusals": checks.refusals})
    previous = updated.history[-1]["previous"]
    click.echo(f"{checks.version} is the {alias}" + (f" (was {previous})" if previous else "")
               + (" — forced past: " + "; ".join(checks.refusals) if checks.refusals else ""))
    if alias == "champion":
        _reload(pidfile)


@models.command("rollback")
@click.option("--reason", required=True, help="Why: recorded in the registry's history.")
@click.option("--by", default=None, help="Who rolls back [default: the user running the command].")
@models_root
@catalog_path
@pidfile_option
def rollback(reason: str, by: str | None, models_root: Path, catalog_path: Path, pidfile: Path) -> None:
    """Point the champion back at the version it replaced (which must still pass every artifact check)."""
    from retention.loading import load_served
    from retention.registry import RegistryError, move_alias, read_registry

    catalog = catalog_from(catalog_path)
    with failing_on(RegistryError):
        registry = read_registry(models_root)
    current, previous = registry.version_of("champion"), registry.previous("champion")
    if current is None:
        fail(f"{models_root}: there is no champion to roll back")
    if previous is None:
        fail(f"{models_root}: {current} is the first champion; there is nothing to roll back to")
    with failing_on(ArtifactError):
        load_served(models_root, previous, catalog)
    with failing_on(RegistryError):
        move_alias(models_root, "champion", previous, action="rollback", reason=reason, by=by)
    click.echo(f"{previous} is the champion again (was {current})")
    _reload(pidfile)


def _figure_lines(figures: dict) -> list[str]:
    gate = figures.get("gate") or {}
    lines = [f"gate: {gate.get('verdict')}" + (f" ({gate['why']})" if gate.get("why") else "")]
    ope = figures.get("ope")
    if ope:
        d = ope["candidate_minus_champion"]
        lines.append(f"against the champion {figures['champion']} on {ope['requests']:,} logged requests: "
                     f"{d['value']:+.2f} per request (doubly robust, 95% CI {d['low']:+.2f} to {d['high']:+.2f}); "
                     f"margin {ope['margin']:+.2f}")
        lines += [f"warning: {w}" for w in ope["warnings"]]
    return lines


def _reload(pidfile: Path) -> None:
    """Ask the running service to serve the new champion: SIGHUP to its gunicorn master, which verifies the
    version and, only if it passes, swaps it in and replaces its workers gracefully (gunicorn.conf.py)."""
    import os
    import signal

    if not pidfile.is_file():
        click.echo(f"no running service found ({pidfile} does not exist): the next start serves the champion")
        return
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, signal.SIGHUP)
    except (ValueError, ProcessLookupError, PermissionError) as exc:
        click.echo(f"could not signal the service from {pidfile} ({exc}): restart it, or `kill -HUP` its master")
        return
    click.echo(f"asked the service (gunicorn master {pid}) to reload: GET /v1/model shows the version it serves")


commands = [ope, models]
