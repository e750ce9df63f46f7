"""Offer-response models as the service runs them: numpy arrays only, loaded without unpickling (no code
runs on load, no scikit-learn or pandas in the workers), equal to the fitted estimator to 1e-9 on a probe
of held-out rows saved with them.

A scorer answers one question: P(stay | this customer's features, reason r, offer o) for a few (r, o)
variants of one request. The customer's part is computed once per request, the variants' parts once at
load. Kinds (the learners of training.learners):

- forest: gradient boosting, through the step tables of retention.compiled;
- linear: the hierarchical logistic model: logit = const[v] + m[v] . z(customer), where z is the standardised
  customer vector and (const, m) fold every block of the design that depends on the variant;
- blend: the mean of its parts' probabilities;
- calibrated: its inner scorer's probability through a sigmoid (a logit(p) + b) or an isotonic map.

File layout (one .npz): `structure` (JSON text: the kinds and their parameters), each part's arrays under
its prefix, and the probe (`probe_numeric`, `probe_categorical`, `probe_missing`, `probe_reason`,
`probe_offer`, `probe_p`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from retention.compiled import (
    CompiledPipeline,
    CompileError,
    SharedRowScorer,
    compile_pipeline,
    forest_arrays,
    forest_from_arrays,
)
from retention.contract import REASONS
from retention.links import logit, sigmoid
from retention.model import decision_columns
from retention.offers import Catalog

FORMAT = "served-v2"


class ForestScorer:
    """Gradient boosting (retention.compiled) for the catalog's (reason, offer) variants."""

    kind = "forest"

    def __init__(self, compiled: CompiledPipeline, catalog: Catalog) -> None:
        self.compiled = compiled
        variants = {(r, o.id): decision_columns(o, r) for r in REASONS for o in catalog.offers}
        self._rows = SharedRowScorer(compiled, variants)

    def predict_proba(self, shared: dict, keys: Sequence[tuple[str, str]]) -> np.ndarray:
        return self._rows.predict_proba(shared, list(keys))

    @property
    def features(self) -> tuple[str, ...]:
        return self.compiled.columns


@dataclass(frozen=True)
class LinearModel:
    """The arrays of a fitted training.learners.OfferDesign + LogisticRegression, folded per variant."""

    numeric: tuple[str, ...]
    medians: np.ndarray
    means: np.ndarray
    scales: np.ndarray
    missing: np.ndarray  # bool per numeric: has a missing indicator
    categorical: tuple[str, ...]
    levels: tuple[tuple[str, ...], ...]
    variants: tuple[tuple[str, str], ...]  # (reason, offer id)
    const: np.ndarray  # (n_variants,)
    coef: np.ndarray  # (n_variants, customer part length)


class LinearScorer:
    kind = "linear"

    def __init__(self, model: LinearModel) -> None:
        self.model = model
        self._index = {v: i for i, v in enumerate(model.variants)}
        self._level_index = [{lv: j for j, lv in enumerate(levels)} for levels in model.levels]
        n_num, n_miss = len(model.numeric), int(model.missing.sum())
        self._offsets = np.cumsum([n_num + n_miss] + [len(lv) for lv in model.levels])[:-1]
        self._width = model.coef.shape[1]
        self._selections: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def features(self) -> tuple[str, ...]:
        return self.model.numeric + self.model.categorical

    def customer_vector(self, row: dict) -> np.ndarray:
        m = self.model
        x = np.array([math.nan if (v := row.get(n)) is None else float(v) for n in m.numeric], dtype=np.float64)
        x = np.sign(x) * np.log1p(np.abs(x))
        missing = np.isnan(x)
        z = np.zeros(self._width)
        n_num = len(m.numeric)
        z[:n_num] = (np.where(missing, m.medians, x) - m.means) / m.scales
        z[n_num:n_num + int(m.missing.sum())] = missing[m.missing]
        for offset, name, index in zip(self._offsets, m.categorical, self._level_index, strict=True):
            j = index.get(row.get(name))
            if j is not None:
                z[offset + j] = 1.0
        return z

    def predict_proba(self, shared: dict, keys: Sequence[tuple[str, str]]) -> np.ndarray:
        const, coef = self._selection(keys)
        return sigmoid(const + coef @ self.customer_vector(shared))

    def _selection(self, keys) -> tuple[np.ndarray, np.ndarray]:
        key = tuple(keys)
        hit = self._selections.get(key)
        if hit is None:
            rows = [self._index[k] for k in key]
            hit = (self.model.const[rows], self.model.coef[rows])
            if len(self._selections) < 4096:
                self._selections[key] = hit
        return hit


class BlendScorer:
    kind = "blend"

    def __init__(self, parts: list) -> None:
        self.parts = parts

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f for p in self.parts for f in p.features))

    def predict_proba(self, shared: dict, keys) -> np.ndarray:
        return np.mean([p.predict_proba(shared, keys) for p in self.parts], axis=0)


class CalibratedScorer:
    kind = "calibrated"

    def __init__(self, inner, method: str, a: float = 1.0, b: float = 0.0, x: np.ndarray | None = None,
                 y: np.ndarray | None = None) -> None:
        self.inner, self.method, self.a, self.b, self.x, self.y = inner, method, a, b, x, y

    @property
    def features(self) -> tuple[str, ...]:
        return self.inner.features

    def calibrate(self, p: np.ndarray) -> np.ndarray:
        if self.method == "sigmoid":
            return sigmoid(self.a * logit(p) + self.b)
        return np.interp(np.clip(p, self.x[0], self.x[-1]), self.x, self.y)

    def predict_proba(self, shared: dict, keys) -> np.ndarray:
        return self.calibrate(self.inner.predict_proba(shared, keys))


# ------------------------------------------------------------------------------------------ compiling


def compile_estimator(estimator, catalog: Catalog):
    """The scorer of a fitted learner of training.learners (read through its fitted attributes only)."""
    name = type(estimator).__name__
    if name == "Calibrated":
        inner = compile_estimator(estimator.estimator_, catalog)
        if estimator.method == "sigmoid":
            return CalibratedScorer(inner, "sigmoid", a=estimator.a_, b=estimator.b_)
        iso = estimator.isotonic_
        return CalibratedScorer(inner, "isotonic", x=np.asarray(iso.X_thresholds_, float),
                                y=np.asarray(iso.y_thresholds_, float))
    if name == "Blend":
        return BlendScorer([compile_estimator(e, catalog) for e in estimator.estimators_])
    steps = getattr(estimator, "named_steps", {})
    if "design" in steps:
        return LinearScorer(_fold_linear(steps["design"], steps["model"], catalog))
    if "columns" in steps:
        return ForestScorer(compile_pipeline(estimator), catalog)
    raise CompileError(f"no serving form for a {name}")


def _fold_linear(design, model, catalog: Catalog) -> LinearModel:
    """Fold the logistic model's coefficients over the design's blocks into (const, m) per variant."""
    if getattr(model, "coef_", np.zeros((2, 1))).shape[0] != 1:
        raise CompileError("only a binary logistic model can be served")
    w, b = model.coef_[0].astype(np.float64), float(model.intercept_[0])
    n_num, n_miss = len(design.numeric), int(design.missing_.sum())
    n_cat = sum(len(design.levels_[c]) for c in design.categorical)
    width = n_num + n_miss + n_cat
    offers, types = list(design.offers), list(design.types_)
    n_r, n_o, n_t = len(REASONS), len(offers), len(types)
    seg = list(design.interacting_index_) + list(range(n_num + n_miss, width))
    n_s = len(seg)
    blocks, start = {}, 0
    for block, size in (("customer", width), ("R", n_r), ("O", n_o), ("T", n_t), ("RO", n_r * n_o),
                        ("RT", n_r * n_t), ("OS", n_o * n_s), ("TS", n_t * n_s)):
        blocks[block], start = w[start:start + size], start + size
    if start != len(w):
        raise CompileError(f"the logistic model has {len(w)} coefficients, the design {start}")
    RO, RT = blocks["RO"].reshape(n_r, n_o), blocks["RT"].reshape(n_r, n_t)
    OS, TS = blocks["OS"].reshape(n_o, n_s), blocks["TS"].reshape(n_t, n_s)
    variants, const, coef = [], [], []
    for ri, r in enumerate(REASONS):
        for offer in catalog.offers:
            c, m = b + blocks["R"][ri], blocks["customer"].copy()
            if offer.id in offers:
                oi, ti = offers.index(offer.id), types.index(design.offer_types[offer.id])
                c += (design.s_offer * blocks["O"][oi] + blocks["T"][ti]
                      + design.s_cell * (design.s_offer * RO[ri, oi] + RT[ri, ti]))
                m[seg] += design.s_segment * OS[oi] + design.s_type * TS[ti]
            elif offer.type != "none":
                raise CompileError(f"offer {offer.id!r} of the catalog is unknown to the model")
            variants.append((r, offer.id))
            const.append(c)
            coef.append(m)
    return LinearModel(
        numeric=tuple(design.numeric), medians=np.asarray(design.medians_, float),
        means=np.asarray(design.means_, float), scales=np.asarray(design.scales_, float),
        missing=np.asarray(design.missing_, bool), categorical=tuple(design.categorical),
        levels=tuple(tuple(str(v) for v in design.levels_[c]) for c in design.categorical),
        variants=tuple(variants), const=np.array(const), coef=np.array(coef))


# ------------------------------------------------------------------------------------------ on disk


def _arrays(scorer, prefix: str, arrays: dict) -> dict:
    """The structure of `scorer` as JSON-able data; its arrays go into `arrays` under `prefix`."""
    if scorer.kind == "forest":
        for name, value in forest_arrays(scorer.compiled).items():
            arrays[prefix + name] = value
        return {"kind": "forest", "prefix": prefix}
    if scorer.kind == "linear":
        m = scorer.model
        for name in ("medians", "means", "scales", "missing", "const", "coef"):
            arrays[prefix + name] = getattr(m, name)
        arrays[prefix + "numeric"] = np.array(m.numeric, dtype=str)
        arrays[prefix + "categorical"] = np.array(m.categorical, dtype=str)
        for i, levels in enumerate(m.levels):
            arrays[f"{prefix}levels_{i}"] = np.array(levels, dtype=str)
        arrays[prefix + "variants"] = np.array(m.variants, dtype=str).reshape(len(m.variants), 2)
        return {"kind": "linear", "prefix": prefix}
    if scorer.kind == "blend":
        return {"kind": "blend", "parts": [_arrays(p, f"{prefix}{i}.", arrays) for i, p in enumerate(scorer.parts)]}
    if scorer.kind == "calibrated":
        out = {"kind": "calibrated", "method": scorer.method, "a": scorer.a, "b": scorer.b,
               "inner": _arrays(scorer.inner, prefix + "inner.", arrays)}
        if scorer.method == "isotonic":
            arrays[prefix + "iso_x"], arrays[prefix + "iso_y"] = scorer.x, scorer.y
        out["prefix"] = prefix
        return out
    raise CompileError(f"unknown scorer kind {scorer.kind!r}")


def _scorer(structure: dict, z, catalog: Catalog):
    kind = structure["kind"]
    if kind == "forest":
        return ForestScorer(forest_from_arrays(z, structure["prefix"]), catalog)
    if kind == "linear":
        p = structure["prefix"]
        categorical = tuple(str(c) for c in z[p + "categorical"])
        model = LinearModel(
            numeric=tuple(str(c) for c in z[p + "numeric"]), medians=z[p + "medians"], means=z[p + "means"],
            scales=z[p + "scales"], missing=z[p + "missing"].astype(bool), categorical=categorical,
            levels=tuple(tuple(str(v) for v in z[f"{p}levels_{i}"]) for i in range(len(categorical))),
            variants=tuple((str(r), str(o)) for r, o in z[p + "variants"]), const=z[p + "const"], coef=z[p + "coef"])
        known = set(model.variants)
        missing = [(r, o.id) for r in REASONS for o in catalog.offers if (r, o.id) not in known]
        if missing:
            raise CompileError(f"the model has no coefficients for {missing[:3]}...: retrain with this catalog")
        return LinearScorer(model)
    if kind == "blend":
        return BlendScorer([_scorer(s, z, catalog) for s in structure["parts"]])
    if kind == "calibrated":
        p = structure["prefix"]
        inner = _scorer(structure["inner"], z, catalog)
        if structure["method"] == "isotonic":
            return CalibratedScorer(inner, "isotonic", x=z[p + "iso_x"], y=z[p + "iso_y"])
        return CalibratedScorer(inner, "sigmoid", a=float(structure["a"]), b=float(structure["b"]))
    raise CompileError(f"unknown scorer kind {kind!r}")


@dataclass(frozen=True)
class Probe:
    """Held-out rows (customer features, reason, offer) and the fitted estimator's probabilities for them."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    X_numeric: np.ndarray  # (n, numeric) float, NaN = missing
    X_categorical: np.ndarray  # (n, categorical) str
    missing: np.ndarray  # (n, categorical) bool: the category is missing (None)
    reasons: np.ndarray
    offers: np.ndarray
    p: np.ndarray

    def rows(self) -> list[tuple[dict, str, str]]:
        out = []
        for i in range(len(self.p)):
            row = {n: (None if math.isnan(v) else float(v)) for n, v in zip(self.numeric, self.X_numeric[i], strict=True)}
            row |= {n: (None if miss else str(v)) for n, v, miss in
                    zip(self.categorical, self.X_categorical[i], self.missing[i], strict=True)}
            out.append((row, str(self.reasons[i]), str(self.offers[i])))
        return out

    def max_difference(self, scorer) -> float:
        """The largest |scorer - estimator| over the probe rows."""
        got = np.array([scorer.predict_proba(row, [(r, o)])[0] for row, r, o in self.rows()])
        return float(np.abs(got - self.p).max()) if len(got) else 0.0


def save_scorer(scorer, path, probe: Probe) -> None:
    arrays: dict = {}
    structure = _arrays(scorer, "m.", arrays)
    arrays["structure"] = np.array(json.dumps({"format": FORMAT, "model": structure}))
    arrays |= {"probe_numeric_names": np.array(probe.numeric, dtype=str),
               "probe_categorical_names": np.array(probe.categorical, dtype=str),
               "probe_numeric": probe.X_numeric.astype(np.float64), "probe_categorical": probe.X_categorical.astype(str),
               "probe_missing": probe.missing.astype(bool), "probe_reason": probe.reasons.astype(str),
               "probe_offer": probe.offers.astype(str), "probe_p": probe.p.astype(np.float64)}
    with open(path, "wb") as out:
        np.savez(out, **arrays)


def load_scorer(path, catalog: Catalog):
    """(scorer, probe) from a file written by save_scorer (no pickle: loading runs no code)."""
    with np.load(path, allow_pickle=False) as z:
        if "structure" not in z:
            raise CompileError(f"{path}: not a served model of format {FORMAT} (retrain the model)")
        structure = json.loads(str(z["structure"]))
        if structure.get("format") != FORMAT:
            raise CompileError(f"{path}: format {structure.get('format')!r}, expected {FORMAT} (retrain the model)")
        scorer = _scorer(structure["model"], z, catalog)
        probe = Probe(tuple(str(c) for c in z["probe_numeric_names"]), tuple(str(c) for c in z["probe_categorical_names"]),
                      z["probe_numeric"], z["probe_categorical"], z["probe_missing"], z["probe_reason"],
                      z["probe_offer"], z["probe_p"])
    return scorer, probe


def probe_from_rows(rows, numeric: Sequence[str], categorical: Sequence[str], p: np.ndarray) -> Probe:
    """A probe of model-input rows (a pandas DataFrame with the feature columns, `reason` and `offer_id`)."""
    cats = rows[list(categorical)].to_numpy(dtype=object)
    missing = np.array([[v is None or (isinstance(v, float) and math.isnan(v)) for v in row] for row in cats],
                       dtype=bool).reshape(len(rows), len(categorical))
    return Probe(tuple(numeric), tuple(categorical), rows[list(numeric)].to_numpy(dtype=np.float64),
                 np.where(missing, "", cats).astype(str), missing, rows["reason"].to_numpy(dtype=str),
                 rows["offer_id"].to_numpy(dtype=str), np.asarray(p, np.float64))
