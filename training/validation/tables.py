"""Checks across tables, after each table passed its own: every customer_id is a known customer, and the
warnings for legal but suspicious data (empty tables, few NPS answers, no logged propensities, customers
without any usage)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from retention.contract import TABLES
from retention.plans import DEFAULT_PLANS, PlanCatalogError, load_plans
from training.validation.sql import literal, show

if TYPE_CHECKING:
    from training.validation.run import ValidationRun

# Below this share of customers with at least one NPS answer, NPS features carry little signal.
MIN_NPS_ANSWER_RATE = 0.05


def check_references(run: ValidationRun) -> None:
    customers = run.sources.get("customers")
    if customers is None or customers.by_customer is None:
        return
    run.query(
        f"CREATE OR REPLACE TEMP VIEW __customer_ids AS "
        f"SELECT id FROM {customers.by_customer} WHERE id IS NOT NULL"
    )
    run.have_customer_ids = True
    for table in TABLES:
        src = run.sources.get(table.name)
        if src is None or src.by_customer is None or not table.references_customer:
            continue
        c = src.cols["customer_id"]
        unknown = f"{src.by_customer} WHERE id IS NOT NULL AND id NOT IN (SELECT id FROM __customer_ids)"
        (n,) = run.query(f"SELECT coalesce(sum(a0), 0) FROM {unknown}")[0]
        if not n:
            continue
        run.query(f"CREATE OR REPLACE TEMP TABLE __unknown_{table.name} AS SELECT id FROM {unknown}")
        run.examples(
            src,
            "customer_id",
            f"({c.text} IN (SELECT id FROM __unknown_{table.name}))",
            (c.text,),
            lambda v, f=customers.name: f"unknown customer_id {show(v[0])} (not in {f})",
            int(n),
            f"unknown customer_id (not in {customers.name})",
        )


def check_coverage(run: ValidationRun) -> None:
    """Warnings for legal but suspicious data."""
    n_customers = run.counts.get("customers")
    for table in TABLES:
        src = run.sources.get(table.name)
        if src is None or run.counts.get(table.name) != 0:
            continue
        if table.name == "nps_responses":
            run.warning(src.name, None, None, "no NPS responses at all: NPS features will be empty")
        elif table.name == "cancel_requests":
            run.warning(
                src.name, None, None, "no cancel requests: there is nothing to learn offers from"
            )
        else:
            run.warning(src.name, None, None, "table has no data rows")
    _check_nps_rate(run, n_customers)
    _check_propensity(run)
    _check_usage_coverage(run, n_customers)
    _check_plans(run)


def _check_plans(run: ValidationRun) -> None:
    """Customers on a plan the plan catalog (config/plans.toml) does not list: a warning, not an error. A
    data set from another business has plans of its own, and training learns from any plan id; but the
    service refuses decision requests for unknown plans, so a model trained on them serves only once the
    catalog lists them."""
    customers = run.sources.get("customers")
    if customers is None or "plan_id" not in customers.cols or not run.counts.get("customers"):
        return
    try:
        plans = load_plans(DEFAULT_PLANS)
    except PlanCatalogError as exc:  # the data are not at fault: say why the check could not run
        run.warning(str(DEFAULT_PLANS), None, None, "the plan check did not run: the plan catalog is invalid: "
                    + "; ".join(exc.lines))
        return
    c = customers.cols["plan_id"]
    where = f"({c.text} IS NOT NULL AND {c.text} NOT IN ({', '.join(literal(p) for p in plans.ids)}))"
    (n,) = run.query(f"SELECT count(*) FROM {customers.numbered} WHERE {where}")[0]
    if n:
        run.examples(customers, "plan_id", where, (c.text,),
                     lambda v: f"plan {show(v[0])} is not in the plan catalog ({DEFAULT_PLANS.name}): the service "
                               f"refuses decision requests for it until the catalog lists it",
                     int(n), "plans not in the plan catalog", warning=True)


def _check_nps_rate(run: ValidationRun, n_customers: int | None) -> None:
    nps = run.sources.get("nps_responses")
    if not n_customers or nps is None or not run.counts.get("nps_responses") or nps.by_customer is None:
        return
    (answered,) = run.query(f"SELECT count(*) FROM {nps.by_customer} WHERE id IS NOT NULL")[0]
    rate = answered / n_customers
    if rate < MIN_NPS_ANSWER_RATE:
        run.warning(
            nps.name,
            None,
            "customer_id",
            f"only {rate:.1%} of customers ({answered:,} of {n_customers:,}) answered the NPS survey "
            f"(under {MIN_NPS_ANSWER_RATE:.0%}): NPS features will carry little signal",
        )


def _check_propensity(run: ValidationRun) -> None:
    cancels = run.sources.get("cancel_requests")
    total = run.counts.get("cancel_requests")
    if cancels is None or not total:
        return
    consequence = "off-policy evaluation of new offer policies is impossible"
    if "propensity" not in cancels.types:
        run.warning(cancels.name, None, "propensity", f"no propensity column: {consequence}")
        return
    if "propensity" not in cancels.cols:  # wrongly typed column, already an error
        return
    missing = cancels.stats["no_propensity"]
    if missing == total:
        run.warning(
            cancels.name, None, "propensity", f"no cancel request has a propensity: {consequence}"
        )
    elif missing:
        run.warning(
            cancels.name,
            None,
            "propensity",
            f"{missing:,} of {total:,} cancel requests have no propensity: "
            f"off-policy evaluation cannot use them",
        )


def _check_usage_coverage(run: ValidationRun, n_customers: int | None) -> None:
    usage = run.sources.get("usage")
    if not n_customers or usage is None or not run.have_customer_ids or usage.by_customer is None:
        return
    without = f"(SELECT id FROM __customer_ids WHERE id NOT IN (SELECT id FROM {usage.by_customer} WHERE id IS NOT NULL))"
    (n,) = run.query(f"SELECT count(*) FROM {without}")[0]
    if not n:
        return
    ids = [
        r[0]
        for r in run.query(f"SELECT id FROM {without} ORDER BY id LIMIT {max(run.max_examples, 1)}")
    ]
    examples = ", ".join(show(i) for i in ids) + (", ..." if n > len(ids) else "")
    run.warning(
        usage.name,
        None,
        "customer_id",
        f"{n:,} of {n_customers:,} customers ({n / n_customers:.1%}) have no usage rows at all "
        f"(e.g. {examples})",
    )
