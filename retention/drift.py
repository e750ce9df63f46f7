"""Drift of live decisions away from the data the served model was trained on: the Population Stability Index
(PSI) of every model feature and of the offer mix, and the compact reference distribution that training
records in the artifact's metadata (`feature_reference`) so that it can be computed later.

PSI = sum over bins of (a - e) * ln(a / e), with e the bin's share of the training rows and a its share of
the live decisions (both floored at EPSILON, so an empty bin counts as nearly empty rather than infinite).
- numeric features: the bins are fixed at training, at the deciles of the training rows (observed values;
  equal edges merged, so a count with few values has fewer bins), right-closed, plus one bin for missing
  values (a feature that is suddenly unknown for many customers is drift too);
- categorical features: each category's share; categories beyond the MAX_CATEGORIES most common at training
  and categories never seen at training are pooled into "(other)", missing values into "(missing)";
- the offer mix: each offer's share of live decisions against the offer mix of the policy the model serves,
  as the policy gate recorded it on held-out flows at training.

Verdicts use the conventional thresholds: below 0.1 no significant change, 0.1 to 0.25 a moderate change
worth watching, 0.25 and more a major shift (N. Siddiqi, "Credit Risk Scorecards", Wiley 2006; B. Yurdakul,
"Statistical Properties of Population Stability Index", Western Michigan University, 2018).

PSI also moves by chance. Without any drift, PSI is approximately (1/n + 1/m) times a chi-square variable
with bins - 1 degrees of freedom, for n live and m training rows (Yurdakul 2018), so its expected value is
`noise_floor` = (bins - 1) * (1/n + 1/m): about 0.09 for 100 live decisions over ten bins, 0.002 for 5,000.
Reports print it beside each PSI; on a few hundred decisions a "moderate" verdict may be noise.

Why plain numpy and not a drift library: evidently, nannyml and popmon compute PSI from the reference *rows*
(pandas frames) and choose the bins again on every run. Here the bins are fixed once at training and kept in
metadata.json (a few kilobytes instead of the training set), and the service's workers hold neither pandas
nor scikit-learn (retention.scorers). Given fixed bins, PSI is the one line in `psi`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

MODERATE = 0.1
MAJOR = 0.25
EPSILON = 1e-4  # floor of a bin's share: an empty bin is a 0.01% bin
BINS = 10  # numeric features: deciles of the training rows
MAX_CATEGORIES = 20  # categorical features: the most common at training; the rest are "(other)"
MISSING = "(missing)"
OTHER = "(other)"
NO_REFERENCE = "no reference in this model version (trained before drift monitoring): retrain to monitor drift"


def verdict(value: float | None) -> str:
    """"stable" (< 0.1), "moderate" (0.1 to 0.25), "major" (>= 0.25), or "n/a" for no value."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return "major" if value >= MAJOR else "moderate" if value >= MODERATE else "stable"


def psi(expected: Sequence[float], actual: Sequence[float], eps: float = EPSILON) -> float:
    """Population Stability Index of `actual` shares against `expected` shares of the same bins."""
    e = np.maximum(np.asarray(expected, dtype=float), eps)
    a = np.maximum(np.asarray(actual, dtype=float), eps)
    return float(np.sum((a - e) * np.log(a / e)))


def noise_floor(bins: int, n_live: int, n_reference: int) -> float | None:
    """PSI expected from sampling alone when nothing drifted (see the module docstring)."""
    if n_live <= 0 or n_reference <= 0:
        return None
    return max(bins - 1, 0) * (1.0 / n_live + 1.0 / n_reference)


# ------------------------------------------------------------------------------------ the reference


def _numbers(values: Iterable) -> np.ndarray:
    """Floats, NaN for anything missing or not a number (None, NaN, text)."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiub":
        return values.astype(float)
    number = (int, float, np.integer, np.floating)  # bool is an int
    return np.asarray([float(v) if isinstance(v, number) else math.nan for v in values], dtype=float)


def _categories(values: Iterable) -> list[str]:
    return [v if isinstance(v, str) else MISSING for v in values]


def _numeric_shares(edges: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, float]:
    """Shares of the len(edges) + 1 right-closed bins among all of `x`, and the share missing."""
    present = np.isfinite(x)
    counts = np.bincount(np.searchsorted(edges, x[present], side="left"), minlength=len(edges) + 1)
    n = max(len(x), 1)
    return counts / n, float((~present).sum()) / n


def numeric_reference(values: Iterable, bins: int = BINS) -> dict:
    """{"kind": "numeric", "edges": interior bin edges, "shares": per bin, "missing": share}, from training."""
    x = _numbers(values)
    present = x[np.isfinite(x)]
    # Observed values as edges (not interpolated): a count's bins are then "0", "1", "2 or more", ...
    edges = (np.unique(np.quantile(present, np.linspace(0.0, 1.0, bins + 1)[1:-1], method="inverted_cdf"))
             if len(present) else np.zeros(0))
    shares, missing = _numeric_shares(edges, x)
    return {"kind": "numeric", "edges": edges.tolist(), "shares": [round(float(s), 6) for s in shares],
            "missing": round(missing, 6)}


def categorical_reference(values: Iterable, max_categories: int = MAX_CATEGORIES) -> dict:
    """{"kind": "categorical", "shares": {category: share}}, the rarest beyond `max_categories` as "(other)"."""
    cats = _categories(values)
    counts = Counter(cats)
    n = max(len(cats), 1)
    kept = dict(counts.most_common(max_categories))
    shares = {c: round(k / n, 6) for c, k in sorted(kept.items())}
    pooled = sum(k for c, k in counts.items() if c not in kept)
    if pooled:
        shares[OTHER] = round(pooled / n, 6)
    return {"kind": "categorical", "shares": shares}


def feature_reference(columns: Mapping[str, Sequence], categorical: Iterable[str], source: str,
                      bins: int = BINS) -> dict:
    """The `feature_reference` block of a model's metadata: for each column of the training rows (name ->
    values), its bins and shares; names in `categorical` are categories, every other column is numeric."""
    categorical = set(categorical)
    rows = {len(v) for v in columns.values()}
    if len(rows) > 1:
        raise ValueError(f"feature columns of different lengths: {sorted(rows)}")
    features = {name: categorical_reference(v) if name in categorical else numeric_reference(v, bins)
                for name, v in columns.items()}
    return {"source": source, "rows": rows.pop() if rows else 0, "bins": bins,
            "thresholds": {"moderate": MODERATE, "major": MAJOR}, "epsilon": EPSILON, "features": features}


# ------------------------------------------------------------------------------------------ drift


@dataclass(frozen=True)
class FeatureDrift:
    name: str
    kind: str  # numeric / categorical
    psi: float
    verdict: str
    live_rows: int
    noise: float | None  # PSI expected by chance alone at these sample sizes
    bin: str  # the bin whose share changed most, e.g. "(3.5, 7]" or "web"
    expected: float  # its share at training
    actual: float  # its share live


def _bin_labels(edges: list[float]) -> list[str]:
    if not edges:
        return ["all"]
    labels = [f"<= {edges[0]:.4g}"]
    labels += [f"({lo:.4g}, {hi:.4g}]" for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    return labels + [f"> {edges[-1]:.4g}"]


def feature_drift(name: str, reference: dict, values: Sequence, reference_rows: int) -> FeatureDrift:
    """PSI of one feature's live `values` (None / NaN for missing) against its training `reference`."""
    if reference["kind"] == "numeric":
        edges = np.asarray(reference["edges"], dtype=float)
        actual, missing = _numeric_shares(edges, _numbers(values))
        expected = np.append(np.asarray(reference["shares"], dtype=float), reference["missing"])
        actual = np.append(actual, missing)
        labels = [*_bin_labels(reference["edges"]), MISSING]
    else:
        shares = reference["shares"]
        labels = list(shares) + ([OTHER] if OTHER not in shares else [])
        index = {c: i for i, c in enumerate(labels)}
        cats = [c if c in index else OTHER for c in _categories(values)]
        counts = np.bincount([index[c] for c in cats], minlength=len(labels)) if cats else np.zeros(len(labels))
        actual = counts / max(len(cats), 1)
        expected = np.asarray([shares.get(c, 0.0) for c in labels], dtype=float)
    value = psi(expected, actual)
    top = int(np.argmax(np.abs(actual - expected)))
    n_bins = int(((expected > 0) | (actual > 0)).sum())
    return FeatureDrift(name, reference["kind"], value, verdict(value), len(values),
                        noise_floor(n_bins, len(values), reference_rows), labels[top],
                        float(expected[top]), float(actual[top]))


@dataclass(frozen=True)
class OfferMixDrift:
    policy: str  # whose offer mix at training: model / rules / fixed offer ...
    psi: float
    verdict: str
    live_decisions: int
    shares: dict[str, tuple[float, float]]  # offer -> (share at training, share live)
    noise: float | None


def reference_offer_mix(meta: dict) -> tuple[str | None, dict[str, int] | None, str | None]:
    """(policy, offer counts, None) of the policy this model version serves, as its gate recorded it on
    held-out flows; or (None, None, why) when the metadata has none."""
    offer = (meta.get("models") or {}).get("offer_response") or {}
    if not offer.get("trained"):
        return None, None, "this model version has no offer-response model (the rules choose offers), so " \
                           "training recorded no offer mix"
    gate = offer.get("gate") or {}
    mixes = gate.get("offer_mix") or {}
    verdict_ = gate.get("verdict")
    if verdict_ == "model":
        policy, key = "model", "model"
    elif verdict_ == "fixed":
        policy, key = f"fixed offer {gate.get('fixed_offer')}, else the rules", "fixed_else_rules"
    else:
        policy, key = "rules", "rules"
    mix = mixes.get(key)
    if not mix:
        return None, None, f"the policy gate recorded no offer mix for the served policy ({policy})"
    return policy, {str(k): int(v) for k, v in mix.items()}, None


def offer_mix_drift(policy: str, reference: Mapping[str, int], offers: Sequence[str]) -> OfferMixDrift:
    """PSI of the live decisions' offers against the training-time offer counts of the same policy."""
    live = Counter(offers)
    names = sorted(set(reference) | set(live))
    n_ref, n_live = sum(reference.values()), len(offers)
    expected = np.asarray([reference.get(o, 0) / max(n_ref, 1) for o in names])
    actual = np.asarray([live.get(o, 0) / max(n_live, 1) for o in names])
    value = psi(expected, actual)
    return OfferMixDrift(policy, value, verdict(value), n_live,
                         {o: (float(e), float(a)) for o, e, a in zip(names, expected, actual, strict=True)},
                         noise_floor(len(names), n_live, n_ref))


@dataclass(frozen=True)
class DriftReport:
    model_version: str | None
    decisions: int  # live decisions read
    reference: str | None  # what the reference was computed on, e.g. "offer_response training rows (9,000)"
    features: list[FeatureDrift] = field(default_factory=list)  # highest PSI first
    offer_mix: OfferMixDrift | None = None
    why: str | None = None  # why there is no feature drift (no reference, no decisions)
    offer_mix_why: str | None = None
    offer_mix_excluded: int = 0  # left out of the offer mix: another model, a scoring failure, an experiment arm

    @property
    def max_psi(self) -> float | None:
        return max((f.psi for f in self.features), default=None)

    @property
    def max_feature(self) -> str | None:
        return self.features[0].name if self.features else None


# Reason codes of decisions the rules made because the model failed (not because its gate chose the rules).
FAILURE_CODES = frozenset({"model_unavailable", "scoring_error", "scoring_timeout"})


def _served_by_policy(d: Mapping, model_version: str | None) -> bool:
    """Whether a decision shows the served model version's policy: made with that version, not by the rules
    after a scoring failure, and not in an experiment arm other than the model's."""
    arm = d.get("experiment") or {}
    return (d.get("model_version") == model_version and not FAILURE_CODES.intersection(d.get("reason_codes") or ())
            and arm.get("kind", "model") == "model")


def drift_report(meta: dict, decisions: Sequence[Mapping]) -> DriftReport:
    """Drift of `decisions` (each with `features`, `reason`, `offer_id`, `model_version`, `reason_codes`,
    `experiment`: store.Store.recent_decisions) from the training data of the model version `meta`
    describes. A version without a `feature_reference` (trained before it existed) still loads; its
    report says so."""
    version = meta.get("version")
    ref = meta.get("feature_reference")
    n = len(decisions)
    features: list[FeatureDrift] = []
    why = None
    if not isinstance(ref, dict) or not ref.get("features"):
        why = NO_REFERENCE
    elif n == 0:
        why = "no decisions in the window"
    else:
        for name, r in ref["features"].items():
            if name == "reason":
                values = [d.get("reason") for d in decisions]
            else:  # a decision made without this feature (e.g. by another model's spec) says nothing of it
                values = [f[name] for d in decisions if name in (f := d.get("features") or {})]
            if values:
                features.append(feature_drift(name, r, values, int(ref.get("rows") or 0)))
        features.sort(key=lambda f: (-f.psi, f.name))
    reference = f"{ref['source']} ({int(ref.get('rows') or 0):,} rows)" if isinstance(ref, dict) and ref else None

    policy, mix, mix_why = reference_offer_mix(meta)
    served = [d["offer_id"] for d in decisions if _served_by_policy(d, version)]
    offer_mix = None
    if mix is not None and served:
        offer_mix = offer_mix_drift(policy, mix, served)
    elif mix is not None:
        mix_why = f"no decisions by model {version}'s own policy in the window"
    return DriftReport(version, n, reference, features, offer_mix, why, mix_why, n - len(served))
