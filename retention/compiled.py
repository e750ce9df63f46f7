"""The fitted offer-response Pipeline compiled to plain numpy arrays, for scoring in the request path.

scikit-learn's `Pipeline.predict_proba` costs about 3 ms for the ten rows of one decision (a pandas frame,
a ColumnTransformer, then one Python call per tree), while the arithmetic itself is a few thousand node
visits. Here the same fitted parameters are copied once, at load time, into flat arrays:

- the OrdinalEncoder's categories become dictionaries (value -> code; unknown or missing -> NaN, as
  configured: `handle_unknown="use_encoded_value", unknown_value=nan, encoded_missing_value=nan`);
- every tree of the HistGradientBoostingClassifier becomes its split conditions plus a table from "which
  conditions held" to the leaf value, following the exact rules of sklearn's `_predict_one_from_raw_data`
  (NaN -> the learned missing side; categories through the same bitsets; unknown categories as missing).

Nothing is re-learned or approximated: a test checks the probabilities equal the Pipeline's to 1e-9.
`compile_pipeline` only reads fitted attributes, so this module needs numpy, not scikit-learn.
"""

from __future__ import annotations

import bisect
import functools
import math
from dataclasses import dataclass

import numpy as np

from retention.contract import is_missing
from retention.links import sigmoid


class CompileError(ValueError):
    """The Pipeline is not of the shape this compiler knows (see training.train.build_pipeline)."""


@dataclass(frozen=True)
class Forest:
    """All trees of a fitted binary HistGradientBoostingClassifier, as condition and leaf tables.

    Each tree has at most K split nodes (K = 6 for 7 leaves). Which of a tree's K conditions hold ("goes
    left") is a K-bit number, its pattern; a per-tree table of 2**K entries, built at compile time by
    walking the tree, gives the leaf value each pattern reaches. The conditions themselves are evaluated
    through per-column step tables (`conditions`), so the number of numpy calls per row does not grow with
    the number of trees or conditions.
    """

    baseline: float
    n_trees: int
    k: int  # condition slots per tree
    num_slot: np.ndarray  # positions (in n_trees * k) of numeric conditions
    num_feature: np.ndarray
    num_threshold: np.ndarray
    num_missing_left: np.ndarray
    cat_slot: np.ndarray  # positions of categorical conditions
    cat_feature: np.ndarray
    cat_table: np.ndarray  # (n_cat_conditions, 257) bool: goes left for code 0..255; column 256: missing
    leaf_value: np.ndarray  # (n_trees, 2**k) float64

    def conditions(self, features: dict[int, tuple[str, dict | None]]) -> ConditionSet:
        """The split conditions on some columns, as per-column step tables. `features` maps each column
        index to its name and, for a categorical column, its category -> code dictionary.

        Every column's conditions together depend only on which interval of its sorted thresholds a value
        falls in (numeric: `x <= t` goes left, as in sklearn), which code it has (categorical) or whether it
        is missing. So each column becomes a table with one row per such case, holding the bits its
        conditions set in every tree's pattern; scoring a row adds up one table row per column."""
        n_trees, k = self.n_trees, self.k
        steps, tables, first = [], [], 0
        for f, (name, codes) in sorted(features.items()):
            num, cat = np.flatnonzero(self.num_feature == f), np.flatnonzero(self.cat_feature == f)
            if len(cat):
                n_codes = int(max(codes.values(), default=-1)) + 1
                table = np.zeros((n_codes + 1, n_trees), dtype=np.int64)  # each code, then missing/unknown
                for c in cat:
                    tree, bit = divmod(int(self.cat_slot[c]), k)
                    goes_left = self.cat_table[c][np.r_[0:n_codes, 256]].astype(np.int64)
                    table[:, tree] += goes_left << bit
                # A row is looked up by its category, or by the category's code in an encoded row.
                lookup = {**{cat_: first + int(code) for cat_, code in codes.items()},
                          **{float(code): first + int(code) for code in codes.values()}}
                steps.append((name, lookup, None, first + n_codes))
            elif len(num):
                thresholds = sorted({float(t) for t in self.num_threshold[num]})
                missing = len(thresholds) + 1  # rows 0..m: how many thresholds are below the value
                table = np.zeros((missing + 1, n_trees), dtype=np.int64)
                for c in num:
                    tree, bit = divmod(int(self.num_slot[c]), k)
                    j = thresholds.index(float(self.num_threshold[c]))
                    table[: j + 1, tree] += 1 << bit  # x <= t_j exactly when at most j thresholds are below x
                    table[missing, tree] += int(self.num_missing_left[c]) << bit
                steps.append((name, first, thresholds, first + missing))
            else:
                continue  # no tree splits on this column
            tables.append(table)
            first += len(table)
        bits = np.concatenate(tables) if tables else np.zeros((1, n_trees), dtype=np.int64)
        # A pattern is below 2**k and its conditions' bits never overlap, so the smallest type that holds
        # 2**k - 1 also holds every sum: less memory to gather per request.
        return ConditionSet(n_trees=n_trees, steps=tuple(steps), bits=bits.astype(np.uint8 if k <= 8 else np.uint16))

    @functools.cached_property
    def offsets(self) -> np.ndarray:
        """Where each tree's leaf table starts in the flat leaf table."""
        return np.arange(self.n_trees, dtype=np.int64) << self.k

    def leaf_total(self, index: np.ndarray) -> np.ndarray:
        """baseline + the leaf values at (n_rows, n_trees) flat indices (pattern + offsets)."""
        return self.baseline + np.take(self._leaf_flat, index).sum(axis=1)

    @functools.cached_property
    def _leaf_flat(self) -> np.ndarray:
        return self.leaf_value.ravel()


@dataclass(frozen=True)
class ConditionSet:
    """Some of a forest's split conditions, as step tables (see `Forest.conditions`). `row_pattern` gives,
    per tree, the sum of the bits of the conditions that held ("goes left"). Bits of different conditions
    never overlap, so the patterns of disjoint sets add up: conditions on columns shared by many rows can be
    evaluated once and added to the per-row ones.

    A row costs one dictionary look-up per categorical column and one bisect per numeric one, in Python,
    then one numpy gather-and-sum: far fewer numpy calls (each about 1 us) than one per kind of condition."""

    n_trees: int
    # per column: (name, category -> row, None, missing row) or (name, first row, sorted thresholds, missing row)
    steps: tuple
    bits: np.ndarray  # (rows of every column's table, n_trees): uint8 (or uint16 for trees over 8 splits)

    _CHUNK = 2048  # rows per gather in `pattern`: it makes (rows, columns, trees) small integers

    def table_rows(self, row: dict) -> list[int]:
        """The table row of each column for one row: feature values by name (categories or their codes;
        None or NaN = missing; unknown categories count as missing, as sklearn's encoder is configured)."""
        out = []
        get = row.get
        for name, lookup, thresholds, missing in self.steps:
            v = get(name)
            if thresholds is None:
                out.append(lookup.get(v, missing))
            elif v is None or v != v:  # missing: None or NaN
                out.append(missing)
            else:
                out.append(lookup + bisect.bisect_left(thresholds, float(v)))
        return out

    def row_pattern(self, row: dict) -> np.ndarray:
        """(n_trees,) pattern for one row."""
        return self.bits[self.table_rows(row)].sum(axis=0, dtype=self.bits.dtype)

    def pattern(self, rows: list[dict]) -> np.ndarray:
        """(n_rows, n_trees) patterns."""
        index = np.array([self.table_rows(r) for r in rows], dtype=np.intp).reshape(len(rows), len(self.steps))
        out = np.empty((len(rows), self.n_trees), dtype=self.bits.dtype)
        for i in range(0, len(rows), self._CHUNK):
            out[i:i + self._CHUNK] = self.bits[index[i:i + self._CHUNK]].sum(axis=1, dtype=self.bits.dtype)
        return out


@dataclass(frozen=True)
class CompiledPipeline:
    """Encoder + forest: probabilities from feature dictionaries, without pandas or scikit-learn."""

    categorical: tuple[str, ...]  # model input order: categorical columns first (the ColumnTransformer's)
    numeric: tuple[str, ...]
    codes: tuple[dict, ...]  # per categorical column: category -> code
    forest: Forest

    @property
    def columns(self) -> tuple[str, ...]:
        return self.categorical + self.numeric

    def conditions(self, names) -> ConditionSet:
        """The forest's conditions on the columns `names`."""
        index = {name: i for i, name in enumerate(self.columns)}
        codes = dict(zip(self.categorical, self.codes, strict=True))
        return self.forest.conditions({index[n]: (n, codes.get(n)) for n in names})

    def encode(self, rows: list[dict]) -> np.ndarray:
        """Rows as sklearn's encoder makes them: category codes (NaN: missing or unknown), then numbers."""
        X = np.empty((len(rows), len(self.columns)), dtype=np.float64)
        for i, row in enumerate(rows):
            X[i, :len(self.categorical)] = [codes.get(row.get(n), math.nan)
                                            for n, codes in zip(self.categorical, self.codes, strict=True)]
            X[i, len(self.categorical):] = [math.nan if (v := row.get(n)) is None else float(v) for n in self.numeric]
        return X

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """P(class 1) for encoded rows (as `encode` makes them)."""
        rows = [dict(zip(self.columns, x, strict=True)) for x in X.tolist()]
        return sigmoid(self.forest.leaf_total(self._every_condition.pattern(rows) + self.forest.offsets))

    @functools.cached_property
    def _every_condition(self) -> ConditionSet:
        return self.conditions(self.columns)


class SharedRowScorer:
    """Scores rows that share every column except a few `variant` columns whose values are known ahead.

    A decision scores one customer with each eligible offer: the customer's columns are the same in every
    row, and the offer columns take one of a few known values per (reason, offer). The conditions on the
    variant columns are evaluated once, here, for every known variant; a request then evaluates the
    customer's conditions on ONE row and adds the two leaf-table patterns. Same numbers, far less work.
    """

    def __init__(self, compiled: CompiledPipeline, variants: dict[object, dict]) -> None:
        self.compiled = compiled
        if not variants:
            raise CompileError("at least one variant is needed")
        variant_columns = sorted({c for v in variants.values() for c in v})
        columns = compiled.columns
        unknown = set(variant_columns) - set(columns)
        if unknown:
            raise CompileError(f"variant columns {sorted(unknown)} are not model inputs")
        forest = compiled.forest
        self._shared = compiled.conditions([c for c in columns if c not in variant_columns])
        self._keys = {key: i for i, key in enumerate(variants)}
        # Each variant's pattern with its trees' leaf-table offsets already added: the request adds the
        # customer's pattern and reads the flat leaf table.
        patterns = compiled.conditions(variant_columns).pattern([dict(v) for v in variants.values()])
        self._variant_index = patterns + forest.offsets
        self._selections: dict[tuple, np.ndarray] = {}  # keys -> their rows of _variant_index

    def predict_proba(self, shared: dict, keys: list) -> np.ndarray:
        """P(class 1) for `shared` combined with each variant in `keys`."""
        base = self._shared.row_pattern(shared)
        return sigmoid(self.compiled.forest.leaf_total(self._selection(keys) + base))

    def _selection(self, keys: list) -> np.ndarray:
        # A catalog has few distinct eligible offer sets per reason, so they are cached (bounded, in case).
        key = tuple(keys)
        rows = self._selections.get(key)
        if rows is None:
            rows = self._variant_index[[self._keys[k] for k in keys]]
            if len(self._selections) < 4096:
                self._selections[key] = rows
        return rows


def compile_pipeline(pipeline) -> CompiledPipeline:
    """Compile a fitted Pipeline([("columns", ColumnTransformer([("cat", OrdinalEncoder, cols), ("num",
    "passthrough", cols)])), ("model", HistGradientBoostingClassifier)]) as built by training.train."""
    try:
        columns, model = pipeline.named_steps["columns"], pipeline.named_steps["model"]
        by_name = {name: (trans, cols) for name, trans, cols in columns.transformers_}
        encoder, categorical = by_name["cat"]
        _, numeric = by_name["num"]
    except (AttributeError, KeyError, ValueError) as exc:
        raise CompileError(f"unexpected pipeline layout: {exc}") from exc
    if [n for n, _, _ in columns.transformers_ if n != "remainder"] != ["cat", "num"]:
        raise CompileError("the ColumnTransformer must output the categorical columns, then the numeric ones")
    if getattr(model, "n_trees_per_iteration_", None) != 1:
        raise CompileError("only binary classifiers are supported")
    if not (encoder.handle_unknown == "use_encoded_value" and _is_nan(encoder.unknown_value)
            and _is_nan(encoder.encoded_missing_value)):
        raise CompileError("the OrdinalEncoder must encode unknown and missing categories as NaN")
    if any(len(cats) > 256 for cats in encoder.categories_):
        raise CompileError("a categorical column has more than 256 categories (the trees cannot split on it)")
    codes = tuple({c: float(i) for i, c in enumerate(cats) if not is_missing(c)}
                  for cats in encoder.categories_)
    return CompiledPipeline(tuple(categorical), tuple(numeric), codes, _compile_forest(model))


def _compile_forest(model) -> Forest:
    known_bitsets, known_row = model._bin_mapper.make_known_categories_bitsets()
    trees = [tree for (tree,) in model._predictors]
    k = max(int((~tree.nodes["is_leaf"].astype(bool)).sum()) for tree in trees)
    if k > 16:
        raise CompileError(f"trees with {k} split nodes are too large for leaf tables (max 16)")
    num, cat, leaf_value = [], [], np.zeros((len(trees), 1 << k))
    for t, tree in enumerate(trees):
        nodes = tree.nodes
        splits = [i for i in range(len(nodes)) if not nodes["is_leaf"][i]]
        slot_of = {node: t * k + j for j, node in enumerate(splits)}
        for node, slot in slot_of.items():
            f = int(nodes["feature_idx"][node])
            missing_left = bool(nodes["missing_go_to_left"][node])
            if nodes["is_categorical"][node]:
                left = _bits(tree.raw_left_cat_bitsets[nodes["bitset_idx"][node]])
                known = _bits(known_bitsets[known_row[f]])
                table = np.where(left, True, np.where(known, False, missing_left))
                cat.append((slot, f, np.append(table, missing_left)))
            else:
                num.append((slot, f, float(nodes["num_threshold"][node]), missing_left))
        for pattern in range(1 << k):
            node = 0
            while not nodes["is_leaf"][node]:
                went_left = (pattern >> (slot_of[node] - t * k)) & 1
                node = int(nodes["left"][node] if went_left else nodes["right"][node])
            leaf_value[t, pattern] = nodes["value"][node]
    return Forest(
        baseline=float(np.asarray(model._baseline_prediction).ravel()[0]),
        n_trees=len(trees),
        k=k,
        num_slot=np.array([c[0] for c in num], dtype=np.int64),
        num_feature=np.array([c[1] for c in num], dtype=np.int64),
        num_threshold=np.array([c[2] for c in num], dtype=np.float64),
        num_missing_left=np.array([c[3] for c in num], dtype=bool),
        cat_slot=np.array([c[0] for c in cat], dtype=np.int64),
        cat_feature=np.array([c[1] for c in cat], dtype=np.int64),
        cat_table=np.array([c[2] for c in cat], dtype=bool).reshape(len(cat), 257),
        leaf_value=leaf_value,
    )


def _bits(bitset) -> np.ndarray:
    """A 256-bit set stored as 8 uint32 words -> 256 booleans (category code -> member)."""
    words = np.asarray(bitset, dtype=np.uint32)
    return ((words[:, None] >> np.arange(32, dtype=np.uint32)) & 1).astype(bool).ravel()


def _is_nan(x) -> bool:
    return isinstance(x, float) and math.isnan(x)



# --------------------------------------------------------------------------------------- on disk
# The trainer saves the compiled scorer next to the pickled Pipeline, with a probe: encoded rows and the
# Pipeline's probabilities for them. The service loads only this file (numpy arrays, no pickle: loading runs
# no code and needs neither scikit-learn nor pandas) and re-scores the probe before serving.

_FOREST_ARRAYS = ("num_slot", "num_feature", "num_threshold", "num_missing_left", "cat_slot", "cat_feature",
                  "cat_table", "leaf_value")


def forest_arrays(compiled: CompiledPipeline) -> dict[str, np.ndarray]:
    """The compiled boosting model as named numpy arrays (retention.scorers saves them)."""
    f = compiled.forest
    arrays = {f"forest_{name}": getattr(f, name) for name in _FOREST_ARRAYS}
    arrays["forest_shape"] = np.array([f.n_trees, f.k], dtype=np.int64)
    arrays["forest_baseline"] = np.array([f.baseline])
    arrays["categorical"] = np.array(compiled.categorical, dtype=str)
    arrays["numeric"] = np.array(compiled.numeric, dtype=str)
    for i, codes in enumerate(compiled.codes):
        if not all(isinstance(c, str) for c in codes):
            raise CompileError(f"categories of {compiled.categorical[i]!r} must be strings to be saved")
        arrays[f"categories_{i}"] = np.array(list(codes), dtype=str)
        arrays[f"codes_{i}"] = np.array(list(codes.values()), dtype=np.float64)
    return arrays


def forest_from_arrays(z, prefix: str = "") -> CompiledPipeline:
    """The compiled boosting model from arrays written by `forest_arrays` (under `prefix`)."""
    n_trees, k = (int(x) for x in z[prefix + "forest_shape"])
    forest = Forest(baseline=float(z[prefix + "forest_baseline"][0]), n_trees=n_trees, k=k,
                    **{name: z[f"{prefix}forest_{name}"] for name in _FOREST_ARRAYS})
    categorical = tuple(str(c) for c in z[prefix + "categorical"])
    codes = tuple({str(c): float(v) for c, v in zip(z[f"{prefix}categories_{i}"], z[f"{prefix}codes_{i}"], strict=True)}
                  for i in range(len(categorical)))
    return CompiledPipeline(categorical, tuple(str(c) for c in z[prefix + "numeric"]), codes, forest)


def save_compiled(compiled: CompiledPipeline, path, probe_X: np.ndarray, probe_p: np.ndarray) -> None:
    arrays = forest_arrays(compiled)
    arrays["probe_X"], arrays["probe_p"] = np.asarray(probe_X, np.float64), np.asarray(probe_p, np.float64)
    with open(path, "wb") as out:
        np.savez(out, **arrays)


def load_compiled(path) -> tuple[CompiledPipeline, np.ndarray, np.ndarray]:
    """(compiled scorer, probe rows, the Pipeline's probabilities for them)."""
    with np.load(path, allow_pickle=False) as z:
        return forest_from_arrays(z), z["probe_X"], z["probe_p"]
