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

import math
from dataclasses import dataclass

import numpy as np

from retention.contract import is_missing


class CompileError(ValueError):
    """The Pipeline is not of the shape this compiler knows (see training.train.build_pipeline)."""


@dataclass(frozen=True)
class Forest:
    """All trees of a fitted binary HistGradientBoostingClassifier, as condition and leaf tables.

    Each tree has at most K split nodes (K = 6 for 7 leaves). Scoring evaluates the split conditions of
    every tree at once (one vectorised comparison for numeric splits, one table look-up for categorical
    ones), packs each tree's K outcomes into a K-bit number, and reads the leaf value that this pattern of
    outcomes reaches from a per-tree table of 2**K entries, built at compile time by walking the tree.
    The number of numpy calls does not grow with the number of trees.
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

    def raw(self, X: np.ndarray) -> np.ndarray:
        """Raw scores (log-odds) for rows of X (n_rows, n_features), float64."""
        return self.leaf_sum(self.conditions(np.arange(X.shape[1])).pattern(X))

    def conditions(self, features: np.ndarray) -> ConditionSet:
        """The split conditions that test one of `features` (column indices), ready to evaluate."""
        num, cat = np.isin(self.num_feature, features), np.isin(self.cat_feature, features)
        slots = np.concatenate([self.num_slot[num], self.cat_slot[cat]])
        return ConditionSet(
            n_trees=self.n_trees,
            num_feature=self.num_feature[num],
            num_threshold=self.num_threshold[num],
            num_nan=np.where(self.num_missing_left[num], -np.inf, np.inf),
            cat_feature=self.cat_feature[cat],
            cat_flat=self.cat_table[cat].ravel(),
            cat_offsets=np.arange(int(cat.sum()), dtype=np.intp) * self.cat_table.shape[1],
            tree=slots // self.k,
            weight=(1 << (slots % self.k)).astype(np.float64),
        )

    def __post_init__(self) -> None:
        # Derived once: where each tree's leaf table starts in the flat table.
        object.__setattr__(self, "_leaf_flat", self.leaf_value.ravel())
        object.__setattr__(self, "_offsets", np.arange(self.n_trees, dtype=np.int64) << self.k)

    def leaf_sum(self, pattern: np.ndarray) -> np.ndarray:
        """baseline + the leaf value each tree reaches, for (n_rows, n_trees) patterns."""
        return self.baseline + np.take(self._leaf_flat, self._offsets + pattern).sum(axis=1)


@dataclass(frozen=True)
class ConditionSet:
    """Some of a forest's split conditions. `pattern` gives, per row and tree, the sum of the bits of the
    conditions that held. Bits of different conditions never overlap, so the patterns of disjoint sets add
    up: conditions on columns shared by many rows can be evaluated once and added to the per-row ones.

    NaN goes to the learned side by being replaced with -inf (goes left) or +inf (goes right) before the
    comparison; categorical conditions are one flat table, 257 entries each (codes 0..255, then missing;
    compile_pipeline guarantees codes below 256, as sklearn does)."""

    n_trees: int
    num_feature: np.ndarray
    num_threshold: np.ndarray
    num_nan: np.ndarray  # what a NaN becomes in the comparison: -inf (missing goes left) or +inf
    cat_feature: np.ndarray
    cat_flat: np.ndarray  # (n_cat * 257,) bool: goes left, per condition and code
    cat_offsets: np.ndarray  # start of each categorical condition in cat_flat
    tree: np.ndarray  # tree of each condition: numeric ones first, then categorical ones
    weight: np.ndarray  # its bit in the tree's pattern, as a float for bincount

    def pattern(self, X: np.ndarray) -> np.ndarray:
        """(n_rows, n_trees) int64 patterns for encoded rows X."""
        xn = X[:, self.num_feature]
        xc = X[:, self.cat_feature]
        code = np.where(xc >= 0, xc, 256).astype(np.intp)  # NaN and negative codes: the missing entry
        held = np.concatenate([np.where(np.isnan(xn), self.num_nan, xn) <= self.num_threshold,
                               self.cat_flat[self.cat_offsets + code]], axis=1)
        n = len(held)
        # One bincount for all rows: condition j of row i counts towards bin i * n_trees + tree[j].
        bins = (np.arange(n)[:, None] * self.n_trees + self.tree).ravel()
        summed = np.bincount(bins, weights=(held * self.weight).ravel(), minlength=n * self.n_trees)
        return summed.reshape(n, self.n_trees).astype(np.int64)


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

    def encode(self, rows: list[dict]) -> np.ndarray:
        X = np.empty((len(rows), len(self.categorical) + len(self.numeric)), dtype=np.float64)
        for i, row in enumerate(rows):
            X[i] = self.encode_one(row)
        return X

    def encode_one(self, row: dict) -> list[float]:
        out = [_code(codes, row.get(name)) for name, codes in zip(self.categorical, self.codes, strict=True)]
        out += [_number(row.get(name)) for name in self.numeric]
        return out

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """P(class 1) for encoded rows."""
        return _sigmoid(self.forest.raw(X))


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
        variant_idx = [columns.index(c) for c in variant_columns]
        forest = compiled.forest
        self._shared = forest.conditions(np.setdiff1d(np.arange(len(columns)), variant_idx))
        self._keys = {key: i for i, key in enumerate(variants)}
        X = compiled.encode([dict(v) for v in variants.values()])
        self._variant_patterns = forest.conditions(np.array(variant_idx)).pattern(X)

    def predict_proba(self, shared: dict, keys: list) -> np.ndarray:
        """P(class 1) for `shared` combined with each variant in `keys`."""
        base = self._shared.pattern(np.array([self.compiled.encode_one(shared)], dtype=np.float64))
        rows = self._variant_patterns[[self._keys[k] for k in keys]]
        return _sigmoid(self.compiled.forest.leaf_sum(base + rows))


def _sigmoid(raw: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-raw))


def _code(codes: dict, value) -> float:
    return math.nan if is_missing(value) else codes.get(value, math.nan)


def _number(value) -> float:
    return math.nan if value is None else float(value)


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


def save_compiled(compiled: CompiledPipeline, path, probe_X: np.ndarray, probe_p: np.ndarray) -> None:
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
    arrays["probe_X"], arrays["probe_p"] = np.asarray(probe_X, np.float64), np.asarray(probe_p, np.float64)
    with open(path, "wb") as out:
        np.savez(out, **arrays)


def load_compiled(path) -> tuple[CompiledPipeline, np.ndarray, np.ndarray]:
    """(compiled scorer, probe rows, the Pipeline's probabilities for them)."""
    with np.load(path, allow_pickle=False) as z:
        n_trees, k = (int(x) for x in z["forest_shape"])
        forest = Forest(baseline=float(z["forest_baseline"][0]), n_trees=n_trees, k=k,
                        **{name: z[f"forest_{name}"] for name in _FOREST_ARRAYS})
        categorical = tuple(str(c) for c in z["categorical"])
        codes = tuple({str(c): float(v) for c, v in zip(z[f"categories_{i}"], z[f"codes_{i}"], strict=True)}
                      for i in range(len(categorical)))
        compiled = CompiledPipeline(categorical, tuple(str(c) for c in z["numeric"]), codes, forest)
        return compiled, z["probe_X"], z["probe_p"]
