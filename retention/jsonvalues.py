"""Plain JSON values from whatever the code holds: numpy scalars and arrays, NaN, datetimes, paths and
dataclasses. One conversion for everything we store or print as JSON (the store's JSON columns, the
idempotency fingerprint, model metadata, analysis results, CLI output)."""

from __future__ import annotations

import dataclasses
import json
import math
from datetime import date, datetime
from pathlib import PurePath
from typing import Any


def jsonable(value: Any) -> Any:
    """`value` as plain JSON types: numpy scalars unwrapped and arrays as lists, NaN/inf as null, dates as
    ISO-8601 text, paths as text, dataclasses as objects. Raises TypeError for anything else."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, PurePath):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy array or scalar
        return jsonable(value.tolist())
    if hasattr(value, "item") and callable(value.item):  # other array-like scalars
        return jsonable(value.item())
    raise TypeError(f"a {type(value).__name__} value ({value!r}) has no JSON form")


def dumps(value: Any, **kwargs) -> str:
    """`json.dumps(jsonable(value))`; NaN can never reach the text (it is null by then)."""
    return json.dumps(jsonable(value), allow_nan=False, **kwargs)
