"""Feature aggregation: DuckDB (retention.features, what training and load-features use) against a plain
pandas groupby implementation of the same usage features, on the same data, in the same run.

The usage features are the heavy part (one row per customer, day and metric: 10.7 M rows for 50,000
customers): sums over the last 7/30/90 whole days before T, active days in the last 30, days since the last
active day. Both implementations compute them for every customer as of one T; the script checks they agree
and prints each one's time and the ratio.

    python -m bench.features --data var/data/demo [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd

from retention.features import USAGE_WINDOWS, compute_features, discover_spec
from retention.offers import load_catalog
from training.dataset import open_dataset, resolve_window_end
from training.evaluate import subscribed_customers


def pandas_usage_features(usage: pd.DataFrame, customers: np.ndarray, as_of: pd.Timestamp) -> pd.DataFrame:
    """The usage features of retention.features, written as an ordinary pandas groupby."""
    today = as_of.normalize()
    days_before = (today - usage["day"]).dt.days
    window = usage[(days_before >= 1) & (days_before <= max(USAGE_WINDOWS))].copy()
    window["days_before"] = days_before[window.index]
    out = {}
    grouped = window.groupby(["customer_id", "metric"])
    for w in USAGE_WINDOWS:
        out[f"{w}d"] = window[window["days_before"] <= w].groupby(["customer_id", "metric"])["value"].sum()
    active = window[window["value"] > 0]
    out["active_days_30"] = active[active["days_before"] <= 30].groupby(["customer_id", "metric"]).size()
    out["days_since_last"] = active.groupby(["customer_id", "metric"])["days_before"].min()
    frame = pd.DataFrame(out).reindex(grouped.size().index)
    wide = frame.unstack("metric")
    wide.columns = [f"{metric}_{name}" for name, metric in wide.columns]
    wide = wide.reindex(customers)
    for col in wide.columns:
        if not col.endswith("days_since_last"):
            wide[col] = wide[col].fillna(0.0)
    return wide


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("var/data/demo"))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    con = open_dataset(args.data)
    spec = discover_spec(con)
    as_of = resolve_window_end(args.data, None)
    customers = subscribed_customers(con, as_of)
    t = pd.Timestamp(as_of).tz_localize(None)
    points = pd.DataFrame({"point_id": np.arange(len(customers)), "customer_id": customers, "as_of": t})
    offer_types = {o.id: o.type for o in load_catalog().offers}
    load_started = time.perf_counter()
    usage = con.execute("SELECT customer_id, CAST(day AS TIMESTAMP) AS day, metric, value FROM usage").df()
    load_seconds = time.perf_counter() - load_started

    duck, pand = [], []
    for _ in range(args.repeat):
        started = time.perf_counter()
        d = compute_features(con, points, spec, offer_types)
        duck.append(time.perf_counter() - started)
        started = time.perf_counter()
        p = pandas_usage_features(usage, customers, t)
        pand.append(time.perf_counter() - started)

    d = d.set_index("customer_id")
    cols = [c for c in p.columns if c in d.columns]
    diff = max(float(np.nanmax(np.abs(d[c].to_numpy(float) - p[c].to_numpy(float)))) for c in cols)
    mismatched_nan = sum(int((d[c].isna() != p[c].isna()).sum()) for c in cols)
    print(f"{len(customers):,} customers as of {as_of.isoformat()}, {len(usage):,} usage rows, "
          f"{len(cols)} usage features compared (max abs difference {diff:.3g}, NaN mismatches {mismatched_nan})")
    print(f"DuckDB, every feature (usage, NPS, payments, history): median {statistics.median(duck):.2f} s "
          f"over {args.repeat} runs {[round(x, 2) for x in duck]}")
    print(f"pandas groupby, usage features only (data already in memory; loading it took {load_seconds:.2f} s): "
          f"median {statistics.median(pand):.2f} s {[round(x, 2) for x in pand]}")
    print(f"pandas / DuckDB time ratio: {statistics.median(pand) / statistics.median(duck):.2f}")


if __name__ == "__main__":
    main()
