"""Customer features as of a point in time, from data strictly before it. One definition for every use.

Training (one point per historical cancel request, or per customer and observation date), batch scoring and
the feature snapshot the decision service loads all call `compute_features`, so there is no second copy of the
feature logic to drift. Aggregation runs in DuckDB over the contract's typed views (training.dataset).

A *point* is (point_id, customer_id, as_of). Every aggregate reads only rows strictly before `as_of`; daily
usage counts only whole days before the day of `as_of` (the day in progress is incomplete).
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass

from retention.contract import CUSTOMERS

USAGE_WINDOWS = (7, 30, 90)
LOOKBACK_DAYS = 365  # NPS, payments and cancel history older than this are ignored
EXCLUDED_ATTRIBUTES_DEFAULT: tuple[str, ...] = ()

_NPS_SQL = """
nps AS (
  SELECT p.point_id,
         count(*) AS nps_count,
         arg_max(n.score, n.responded_at) AS nps_last,
         -- second most recent answer: the max by time among answers older than the last one
         list_sort(list(struct_pack(t := n.responded_at, s := n.score)), 'DESC')[2].s AS nps_prev,
         max(n.responded_at) AS nps_last_at
  FROM points p JOIN nps_responses n
    ON n.customer_id = p.customer_id AND n.responded_at < p.as_of
   AND n.responded_at >= p.as_of - INTERVAL {lookback} DAY
  GROUP BY p.point_id
)"""

_USAGE_SQL = """
usage_agg AS (
  SELECT p.point_id, u.metric,
         {window_sums},
         count(*) FILTER (WHERE u.day >= CAST(p.as_of AS DATE) - 30 AND u.value > 0) AS active_days_30,
         max(u.day) FILTER (WHERE u.value > 0) AS last_day
  FROM points p JOIN usage u
    ON u.customer_id = p.customer_id
   AND u.day < CAST(p.as_of AS DATE) AND u.day >= CAST(p.as_of AS DATE) - {max_window}
  {metric_filter}
  GROUP BY p.point_id, u.metric
)"""

_PAY_SQL = """
pay AS (
  SELECT p.point_id,
         sum(y.amount) FILTER (WHERE y.paid_at >= p.as_of - INTERVAL 90 DAY) AS paid_90d,
         arg_max(y.amount, y.paid_at) AS last_payment_amount,
         max(y.paid_at) AS last_paid_at
  FROM points p JOIN payments y
    ON y.customer_id = p.customer_id AND y.paid_at < p.as_of
   AND y.paid_at >= p.as_of - INTERVAL {lookback} DAY
  GROUP BY p.point_id
)"""

_CANCEL_SQL = """
hist AS (
  SELECT p.point_id,
         count(*) AS prior_requests,
         count(*) FILTER (WHERE c.offer_id IS NOT NULL AND c.offer_id <> 'none') AS prior_offers,
         count(*) FILTER (WHERE c.accepted) AS prior_accepted,
         max(c.requested_at) AS last_request_at,
         max(c.requested_at) FILTER (WHERE c.accepted AND o.type = 'discount') AS last_discount_at,
         max(c.requested_at) FILTER (WHERE c.accepted AND o.type = 'pause') AS last_pause_at
  FROM points p JOIN cancel_requests c
    ON c.customer_id = p.customer_id AND c.requested_at < p.as_of
   AND c.requested_at >= p.as_of - INTERVAL {lookback} DAY
  LEFT JOIN offer_types o ON o.offer_id = c.offer_id
  GROUP BY p.point_id
)"""


def usage_trend(s30: float, s90: float) -> float:
    """The `<metric>_trend` feature in Python, for usage summaries posted with a live decision. Must equal
    the SQL expression in `feature_sql` (a test checks that it does)."""
    return math.log((s30 + 1.0) / ((s90 - s30) / 2.0 + 1.0))


def _days_between(later: str, earlier: str) -> str:
    return f"date_diff('second', {earlier}, {later}) / 86400.0"


def _ident(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"column or metric name {name!r} is not a plain identifier")
    return name


def metric_feature_names(metric: str) -> list[str]:
    m = _ident(metric)
    return [f"{m}_{w}d" for w in USAGE_WINDOWS] + [f"{m}_trend", f"{m}_active_days_30", f"{m}_days_since_last"]


BASE_NUMERIC = [
    "tenure_days", "price", "nps_answered", "nps_count", "nps_last", "nps_prev", "nps_trend",
    "nps_days_since_last", "paid_90d", "last_payment_amount", "days_since_last_payment", "prior_requests",
    "prior_offers", "prior_accepted", "days_since_last_request", "days_since_last_discount",
    "days_since_last_pause",
]
BASE_CATEGORICAL = ["plan_id", "billing_period", "billing_channel", "country", "nps_segment"]


@dataclass(frozen=True)
class FeatureSpec:
    """Which features a model uses: fixed at training, stored in the artifact, reused when scoring."""

    metrics: tuple[str, ...]
    numeric_attributes: tuple[str, ...]
    categorical_attributes: tuple[str, ...]

    @property
    def numeric(self) -> list[str]:
        out = list(BASE_NUMERIC)
        for m in self.metrics:
            out += metric_feature_names(m)
        return out + [f"attr_{a}" for a in self.numeric_attributes]

    @property
    def categorical(self) -> list[str]:
        return list(BASE_CATEGORICAL) + [f"attr_{a}" for a in self.categorical_attributes]

    @property
    def names(self) -> list[str]:
        return self.numeric + self.categorical

    def to_dict(self) -> dict:
        return {
            "metrics": list(self.metrics),
            "numeric_attributes": list(self.numeric_attributes),
            "categorical_attributes": list(self.categorical_attributes),
        }

    @classmethod
    def from_dict(cls, d: dict) -> FeatureSpec:
        return cls(tuple(d["metrics"]), tuple(d["numeric_attributes"]), tuple(d["categorical_attributes"]))


def _definition_text() -> str:
    return "\n".join([_NPS_SQL, _USAGE_SQL, _PAY_SQL, _CANCEL_SQL, repr(USAGE_WINDOWS), repr(LOOKBACK_DAYS),
                      repr(BASE_NUMERIC), repr(BASE_CATEGORICAL), "trend=log((30d+1)/((90d-30d)/2+1))"])


# Changes whenever the feature definitions change, because it is derived from them: an artifact trained on
# other definitions is refused at load.
FEATURE_VERSION = "f1-" + hashlib.sha256(_definition_text().encode()).hexdigest()[:12]


def discover_spec(con, exclude_attributes: tuple[str, ...] = EXCLUDED_ATTRIBUTES_DEFAULT) -> FeatureSpec:
    """Derive the feature spec from the data: every usage metric and every extra customer column."""
    metrics = tuple(sorted(r[0] for r in con.execute("SELECT DISTINCT metric FROM usage").fetchall()))
    for m in metrics:
        _ident(m)
    cols = con.execute("DESCRIBE customers").fetchall()
    numeric, categorical = [], []
    for name, sql_type, *_ in cols:
        if name in CUSTOMERS.column_names or name in exclude_attributes:
            continue
        _ident(name)
        if any(t in sql_type for t in ("INT", "DOUBLE", "FLOAT", "DECIMAL", "REAL")):
            numeric.append(name)
        else:
            categorical.append(name)
    return FeatureSpec(metrics, tuple(numeric), tuple(categorical))


def feature_sql(spec: FeatureSpec) -> str:
    """The query computing one row of features per point in the table/view `points`."""
    max_window = max(USAGE_WINDOWS)
    window_sums = ",\n         ".join(
        f"sum(u.value) FILTER (WHERE u.day >= CAST(p.as_of AS DATE) - {w}) AS s{w}" for w in USAGE_WINDOWS
    )
    metric_list = ", ".join("'" + _ident(m) + "'" for m in spec.metrics) or "''"
    usage_cte = _USAGE_SQL.format(window_sums=window_sums, max_window=max_window,
                                  metric_filter=f"WHERE u.metric IN ({metric_list})")
    metric_cols = []
    for m in spec.metrics:
        alias = f"u_{m}"
        for w in USAGE_WINDOWS:
            metric_cols.append(f"coalesce({alias}.s{w}, 0) AS {m}_{w}d")
        metric_cols.append(
            f"ln((coalesce({alias}.s30, 0) + 1) / ((coalesce({alias}.s90, 0) - coalesce({alias}.s30, 0)) / 2 + 1))"
            f" AS {m}_trend"
        )
        metric_cols.append(f"coalesce({alias}.active_days_30, 0) AS {m}_active_days_30")
        metric_cols.append(f"date_diff('day', {alias}.last_day, CAST(p.as_of AS DATE)) AS {m}_days_since_last")
    metric_joins = "\n".join(
        f"LEFT JOIN usage_agg u_{m} ON u_{m}.point_id = p.point_id AND u_{m}.metric = '{m}'" for m in spec.metrics
    )
    attr_cols = [f'c."{a}" AS attr_{a}' for a in spec.numeric_attributes + spec.categorical_attributes]
    select = [
        "p.point_id", "p.customer_id", "p.as_of",
        f"{_days_between('p.as_of', 'c.signup_at')} AS tenure_days",
        "c.price", "c.plan_id", "c.billing_period", "c.billing_channel", "c.country",
        "CAST(nps.nps_count IS NOT NULL AS INTEGER) AS nps_answered",
        "coalesce(nps.nps_count, 0) AS nps_count",
        "CAST(nps.nps_last AS DOUBLE) AS nps_last",
        "CAST(nps.nps_prev AS DOUBLE) AS nps_prev",
        "CAST(nps.nps_last - nps.nps_prev AS DOUBLE) AS nps_trend",
        f"{_days_between('p.as_of', 'nps.nps_last_at')} AS nps_days_since_last",
        "CASE WHEN nps.nps_last IS NULL THEN 'none' WHEN nps.nps_last >= 9 THEN 'promoter' "
        "WHEN nps.nps_last >= 7 THEN 'passive' ELSE 'detractor' END AS nps_segment",
        "coalesce(pay.paid_90d, 0) AS paid_90d",
        "pay.last_payment_amount",
        f"{_days_between('p.as_of', 'pay.last_paid_at')} AS days_since_last_payment",
        "coalesce(hist.prior_requests, 0) AS prior_requests",
        "coalesce(hist.prior_offers, 0) AS prior_offers",
        "coalesce(hist.prior_accepted, 0) AS prior_accepted",
        f"{_days_between('p.as_of', 'hist.last_request_at')} AS days_since_last_request",
        f"{_days_between('p.as_of', 'hist.last_discount_at')} AS days_since_last_discount",
        f"{_days_between('p.as_of', 'hist.last_pause_at')} AS days_since_last_pause",
        *metric_cols,
        *attr_cols,
    ]
    ctes = [
        _NPS_SQL.format(lookback=LOOKBACK_DAYS),
        usage_cte,
        _PAY_SQL.format(lookback=LOOKBACK_DAYS),
        _CANCEL_SQL.format(lookback=LOOKBACK_DAYS),
    ]
    return (
        "WITH " + ",\n".join(ctes) + "\nSELECT " + ",\n  ".join(select) + "\nFROM points p\n"
        "LEFT JOIN customers c ON c.customer_id = p.customer_id\n"
        "LEFT JOIN nps ON nps.point_id = p.point_id\n"
        "LEFT JOIN pay ON pay.point_id = p.point_id\n"
        "LEFT JOIN hist ON hist.point_id = p.point_id\n" + metric_joins + "\nORDER BY p.point_id"
    )


def compute_features(con, points, spec: FeatureSpec, offer_types: dict[str, str]):
    """Features for each point, as a pandas DataFrame ordered by point_id.

    `con` is a DuckDB connection with the contract's typed views; `points` is anything DuckDB can scan (a
    DataFrame or Arrow table) with columns point_id (integer), customer_id, as_of (timestamp, UTC).
    `offer_types` maps offer ids to types, to recognise past discounts and pauses.
    """
    import pyarrow as pa  # lazily: the decision service imports this module but never computes batches

    con.register("points", points)
    con.register("offer_types", pa.table({"offer_id": list(offer_types), "type": list(offer_types.values())}))
    try:
        df = con.execute(feature_sql(spec)).df()
    finally:
        con.unregister("points")
        con.unregister("offer_types")
    # One dtype per kind, whatever DuckDB inferred (nullable integers would reach the model as pandas.NA).
    df[spec.numeric] = df[spec.numeric].astype("float64")
    df[spec.categorical] = df[spec.categorical].astype(object).where(df[spec.categorical].notna(), None)
    return df

