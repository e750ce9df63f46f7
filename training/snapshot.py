"""The feature snapshot the decision service reads: features of every customer subscribed at T, computed
by the one feature function (retention.features) from a data set, and handed to whatever stores them.

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
                                 model_version: str, source: str) -> int: ...


# (output directory, customer attribute name -> "number" | "string") -> the export's manifest
Exporter = Callable[[Path, dict[str, str]], dict]


@dataclass(frozen=True)
class SnapshotResult:
    loaded: bool  # False: the snapshot already held this source, time and model version (if_stale)
    rows: int
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
    subscribed at `as_of`, computed from `data_dir` or from the history `export_history` writes.

    `as_of` defaults to the data window's end (now for the store's history). The data set is validated first
    (training.validation.InvalidDataset); the target is pinged before the long computation, not after it."""
    if (data_dir is None) == (export_history is None):
        raise ValueError("give exactly one source: a data directory or the store's history")
    spec = FeatureSpec.from_dict(meta["feature_spec"])
    as_of = as_of or (datetime.now(UTC) if data_dir is None else resolve_window_end(data_dir, None))
    source = STORE_SOURCE if data_dir is None else str(data_dir)
    target.ping()
    current = target.latest_snapshot()
    if if_stale and current and (current["source"], current["as_of"], current["model_version"]) == (
            source, as_of, meta["version"]):
        return SnapshotResult(False, current["rows"], as_of, meta["version"], meta["feature_version"])
    warnings: list[str] = []
    with tempfile.TemporaryDirectory(prefix="retention-features-") as tmp:
        if data_dir is None:
            data_dir = Path(tmp) / "data"
            # The model reads these customer columns; the store may not know them for everyone (null then).
            attributes = {a: "number" for a in spec.numeric_attributes}
            attributes |= {a: "string" for a in spec.categorical_attributes}
            manifest = export_history(data_dir, attributes)
            warnings += [f"{table}: left out {reasons}" for table, reasons in manifest["skipped"].items()]
        report = require_valid(data_dir, None)  # data after T is fine: features only read rows before T
        warnings += [str(w) for w in report.warnings]
        rows = _compute(data_dir, spec, catalog, as_of, batch_size, Path(tmp) / "features.parquet", progress)
        n = target.replace_feature_snapshot(rows, as_of, meta["feature_version"], meta["version"], source=source)
    return SnapshotResult(True, n, as_of, meta["version"], meta["feature_version"], warnings)


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


def _read_rows(path: Path) -> Iterator[tuple[str, dict]]:
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as f:
        for batch in f.iter_batches():
            for row in batch.to_pylist():
                yield row.pop("customer_id"), row
