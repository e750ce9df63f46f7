"""Use a verified model version on a data set: evaluate it on labelled cancel requests, or batch-score
customers as of a time T (with the same feature function as training)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from retention.features import FeatureSpec, compute_features
from retention.offers import Catalog
from retention.utc import naive_utc
from training.dataset import open_dataset, resolve_window_end
from training.metrics import binary_metrics
from training.train import response_rows, truth_metrics, with_truth


def evaluate_on(model: dict, meta: dict, data_dir: Path, catalog: Catalog, since: datetime | None = None,
                window_end: datetime | None = None) -> dict:
    """Offer-response metrics of `model` on the labelled cancel requests of `data_dir`."""
    if model.get("offer_response") is None:
        raise ValueError(f"model {meta['version']} has no offer-response model to evaluate: "
                         f"{meta['models']['offer_response'].get('why')}")
    con = open_dataset(data_dir)
    spec = FeatureSpec.from_dict(meta["feature_spec"])
    rows = response_rows(con, catalog, spec, resolve_window_end(data_dir, window_end))
    if since is not None:
        rows = rows[rows["as_of"] >= naive_utc(since)].reset_index(drop=True)
    if rows.empty:
        raise ValueError(f"{data_dir}: no labelled cancel requests to evaluate")
    cols = meta["feature_names"]["offer_response"]
    p = model["offer_response"].predict_proba(rows[cols])[:, 1]
    result = {"model_version": meta["version"], "data": str(data_dir), "rows": len(rows),
              "offer_response": binary_metrics(rows["label"].to_numpy(), p)}
    result.update(with_truth(truth_metrics(data_dir, rows, p), result["offer_response"]))
    return result


def subscribed_customers(con, as_of: datetime) -> np.ndarray:
    """Ids of the customers subscribed at `as_of` (signed up before, not ended by then), sorted."""
    t = naive_utc(as_of)
    return con.execute(
        """
        WITH ends AS (SELECT customer_id, min(ended_at) AS ended_at FROM cancel_requests GROUP BY 1)
        SELECT c.customer_id FROM customers c LEFT JOIN ends e USING (customer_id)
        WHERE c.signup_at < ? AND (e.ended_at IS NULL OR e.ended_at > ?) ORDER BY c.customer_id
        """,
        [t, t],
    ).df()["customer_id"].to_numpy()


def feature_batches(con, spec: FeatureSpec, catalog: Catalog, customer_ids: np.ndarray, as_of: datetime,
                    batch_size: int, progress=None, desc: str = "features") -> Iterator[pd.DataFrame]:
    """compute_features as of `as_of` for `customer_ids`, `batch_size` customers at a time (bounded memory);
    `progress` is a tqdm-like wrapper of the batches."""
    t = naive_utc(as_of)
    offer_types = catalog.offer_types
    batches = range(0, len(customer_ids), batch_size)
    if progress:
        batches = progress(batches, desc=desc, unit="batch")
    for start in batches:
        ids = customer_ids[start:start + batch_size]
        points = pd.DataFrame({"point_id": np.arange(start, start + len(ids)), "customer_id": ids,
                               "as_of": pd.Timestamp(t)})
        yield compute_features(con, points, spec, offer_types)


def churn_risk_batches(model: dict, meta: dict, con, catalog: Catalog, as_of: datetime, batch_size: int,
                       progress=None) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
    """(features, churn risk in the next 30 days) per batch of the customers subscribed at `as_of` (signed up
    before, not ended by then): what `retention score` writes and `retention at-risk` ranks."""
    if model.get("churn_risk") is None:
        raise ValueError(f"model {meta['version']} has no churn-risk model: {meta['models']['churn_risk'].get('why')}")
    spec = FeatureSpec.from_dict(meta["feature_spec"])
    cols = meta["feature_names"]["churn_risk"]
    customers = subscribed_customers(con, as_of)
    for feats in feature_batches(con, spec, catalog, customers, as_of, batch_size, progress, desc="score"):
        yield feats, model["churn_risk"].predict_proba(feats[cols])[:, 1]


def score_customers(model: dict, meta: dict, data_dir: Path, catalog: Catalog, as_of: datetime, out: Path,
                    batch_size: int, progress=None) -> int:
    """Write churn risk for every customer subscribed at `as_of` (signed up before, not ended by then)."""
    t = naive_utc(as_of)
    writer, n = None, 0
    try:
        for feats, risk in churn_risk_batches(model, meta, open_dataset(data_dir), catalog, as_of, batch_size,
                                              progress):
            n += len(feats)
            table = pa.table({
                "customer_id": feats["customer_id"].to_numpy(),
                "as_of": pa.array([t] * len(feats), pa.timestamp("us")),
                "churn_risk_30d": risk,
                "nps_segment": feats["nps_segment"].to_numpy(),
                "model_version": [meta["version"]] * len(feats),
            })
            if writer is None:
                writer = (pq.ParquetWriter(out, table.schema) if out.suffix == ".parquet"
                          else pacsv.CSVWriter(out, table.schema))
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
    return n
