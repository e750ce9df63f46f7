"""The feature snapshot the decision service reads: features of every customer subscribed at T, computed
by the one feature function (retention.features) from a data set, and handed to whatever stores them, with
the data set's customer rows (every customer, subscribed at T or not: the static contract values the
features leave out, such as currency and the sign-up time).

`load_feature_snapshot` is the use case behind `retention load-features`. Its dependencies are passed in:
the target (the store, or anything with the three methods of `SnapshotTarget`) and, for a snapshot of the
store's own history, a function that exports that history as a data set. So this module needs neither a
database driver nor the store package.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from retention.features import FeatureSpec
from retention.offers import Catalog
from training.dataset import open_dataset, resolve_window_end
from training.evaluate import feature_batches, subscribed_customers
from training.validation import require_valid

STORE_SOURCE = "store"  # the snapshot's source when it was computed from the store's own history


class SnapshotTarget(Protocol):
    def ping(self) -> None: ...
    def latest_snapshot(self) -> dict | None: ...
    def replace_feature_snapshot(self, rows: Iterable[tuple[str, dict]], as_of: datetime, feature_version: str,
                                 model_version: str, source: str, *,
                                 customers: Iterable[dict] | None = None) -> int: ...


# (output directory, customer attribute name -> "number" | "string") -> the export's manifest
Exporter = Callable[[Path, dict[str, str]], dict]


@dataclass(frozen=True)
class SnapshotResult:
    loaded: bool  # False: the snapshot already held this source, time and model version (if_stale)
    rows: int
    customers: int | None  # the data set's customer rows stored with it; None: left as they were (the store)
    as_of: datetime
    model_version: str
    feature_version: str
    warnings: list[str] = field(default_factory=list)


class NoSubscribers(ValueError):
    """Nobody is subscribed at T: replacing the snapshot with nothing would make every customer unknown."""


def load_feature_snapshot(target: SnapshotTarget, meta: dict, catalog: Catalog, *, data_dir: Path | None = None,
                          export_history: Exporter | None = None, as_of: datetime | None = None,
                          batch_size: int = 50_000, if_stale: bool = False, progress=None) -> SnapshotResult:
    """Replace the target's snapshot with the features (model `meta`'s feature spec) of every customer
    subscribed at `as_of`, computed from `data_dir` or from the history `export_history` writes. From a data
    directory, the target's customer rows are replaced by every customer of its customers table too: a
    customer who cancelled before `as_of` has no features but may still be referred to (the export needs its
    values, and a customer can come back). The store's history is not such a list, so it leaves them be.

    `as_of` defaults to the data window's end (now for the store's history). The data set is validated first
    (training.validation.InvalidDataset); the target is pinged before the long computation, not after it."""
    if (data_dir is None) == (export_history is None):
        raise ValueError("give exactly one source: a data directory or the store's history")
    spec = FeatureSpec.from_dict(meta["feature_spec"])
    as_of = as_of or (datetime.now(UTC) if data_dir is None else resolve_window_end(data_dir, None))
    source = STORE_SOURCE if data_dir is None else str(data_dir)
    target.ping()
    current = target.latest_snapshot()
    # A snapshot loaded from a data set without its customer rows (before they were kept) is stale too.
    if if_stale and current and (current["source"], current["as_of"], current["model_version"]) == (
            source, as_of, meta["version"]) and (data_dir is None or current.get("customers") is not None):
        return SnapshotResult(False, current["rows"], current.get("customers"), as_of, meta["version"],
                              meta["feature_version"])
    warnings: list[str] = []
    customers: Iterable[dict] | None = None
    n_customers = None
    with tempfile.TemporaryDirectory(prefix="retention-features-") as tmp:
        from_store = data_dir is None
        if from_store:
            data_dir = Path(tmp) / "data"
            # The model reads these customer columns; the store may not know them for everyone (null then).
            attributes = {a: "number" for a in spec.numeric_attributes}
            attributes |= {a: "string" for a in spec.categorical_attributes}
            manifest = export_history(data_dir, attributes)
            warnings += [f"{table}: left out {reasons}" for table, reasons in manifest["skipped"].items()]
        report = require_valid(data_dir, None)  # data after T is fine: features only read rows before T
        warnings += [str(w) for w in report.warnings]
        rows = _compute(data_dir, spec, catalog, as_of, batch_size, Path(tmp) / "features.parquet", progress)
        if not from_store:
            customers, n_customers = _customer_rows(data_dir, Path(tmp) / "customers.parquet")
        n = target.replace_feature_snapshot(rows, as_of, meta["feature_version"], meta["version"], source=source,
                                            customers=customers)
    return SnapshotResult(True, n, n_customers, as_of, meta["version"], meta["feature_version"], warnings)


def _compute(data_dir: Path, spec: FeatureSpec, catalog: Catalog, as_of: datetime, batch_size: int, scratch: Path,
             progress) -> Iterator[tuple[str, dict]]:
    """Features of every customer subscribed at `as_of`, as (customer_id, values) rows.

    All features are computed (into `scratch`) before the first row is returned, so the snapshot's write
    transaction lasts as long as the inserts only, not the computation: on SQLite it holds the write lock."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    con = open_dataset(data_dir)
    try:
        customers = subscribed_customers(con, as_of)
        if len(customers) == 0:
            raise NoSubscribers(f"{data_dir}: no customer is subscribed at {as_of.isoformat()}; "
                                "the snapshot was not replaced")
        columns = ["customer_id", *spec.names]
        schema = pa.schema([("customer_id", pa.string())] + [(n, pa.float64()) for n in spec.numeric]
                           + [(n, pa.string()) for n in spec.categorical])
        with pq.ParquetWriter(scratch, schema) as writer:
            for feats in feature_batches(con, spec, catalog, customers, as_of, batch_size, progress=progress):
                writer.write_table(pa.Table.from_pandas(feats[columns], schema=schema, preserve_index=False))
    finally:
        con.close()
    return _read_rows(scratch)


def _customer_rows(data_dir: Path, scratch: Path) -> tuple[Iterator[dict], int]:
    """Every row of the data set's customers table (its contract columns and attributes, signup_at as an
    aware UTC time), and how many there are; copied to `scratch` first, as the features are (see _compute)."""
    import pyarrow.parquet as pq

    con = open_dataset(data_dir)
    try:
        con.execute(f"COPY (SELECT * FROM customers ORDER BY customer_id) TO '{_sql_text(scratch)}' (FORMAT parquet)")
    finally:
        con.close()

    def rows() -> Iterator[dict]:
        with pq.ParquetFile(scratch) as f:
            for batch in f.iter_batches():
                for row in batch.to_pylist():
                    row["signup_at"] = row["signup_at"].replace(tzinfo=UTC)  # the typed views' naive UTC
                    yield row

    return rows(), pq.read_metadata(scratch).num_rows


def _sql_text(path: Path) -> str:
    return str(path).replace("'", "''")


def _read_rows(path: Path) -> Iterator[tuple[str, dict]]:
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as f:
        for batch in f.iter_batches():
            for row in batch.to_pylist():
                yield row.pop("customer_id"), row
