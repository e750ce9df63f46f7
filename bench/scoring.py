"""Scoring in the request path, measured alone: one customer x every offer of the catalog, as the service
scores it (retention.policy.ModelScorer -> retention.compiled.SharedRowScorer), against the trained
scikit-learn Pipeline on the same rows (a pandas frame, as training and evaluation use it).

    python -m bench.scoring --models models [--repeat 5]

Customers are the trained model's own probe rows (held-out training rows saved with the compiled scorer),
decoded back to feature dictionaries, so every category and missing-value pattern of real data appears.
Prints microseconds per offer set (median of `--repeat` passes over all customers and reasons) and the
largest difference between the two probabilities.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

from retention.artifacts import load_artifact
from retention.compiled import load_compiled
from retention.contract import REASONS
from retention.features import FEATURE_VERSION
from retention.offers import load_catalog
from retention.policy import ModelScorer


def customers(compiled, probe_X) -> list[dict]:
    """The probe's encoded rows as the feature dictionaries the service builds (customer columns only)."""
    names = {i: {code: value for value, code in codes.items()} for i, codes in enumerate(compiled.codes)}
    out = []
    for row in probe_X:
        feats = {}
        for i, col in enumerate(compiled.columns):
            x = float(row[i])
            if i < len(compiled.categorical):
                feats[col] = None if math.isnan(x) else names[i][x]
            else:
                feats[col] = None if math.isnan(x) else x
        out.append(feats)
    return out


def measure(models: Path, repeat: int) -> dict:
    catalog = load_catalog()
    version = max(p.parent for p in models.glob("*/metadata.json"))
    model, meta = load_artifact(version, feature_version=FEATURE_VERSION)
    compiled, probe_X, _ = load_compiled(version / meta["compiled"]["offer_response"]["file"])
    fast = ModelScorer(None, meta, catalog, compiled=compiled)
    reference = ModelScorer(model, meta, catalog)
    offers = list(catalog.offers)
    cases = [(c, r) for c in customers(compiled, probe_X) for r in REASONS]

    def per_set(score, cases) -> float:
        start = time.perf_counter()
        for feats, reason in cases:
            score(feats, reason, offers)
        return (time.perf_counter() - start) / len(cases) * 1e6

    few = cases[:: max(1, len(cases) // 200)]  # the Pipeline is slow: a sample of 200 offer sets
    compiled_us = statistics.median(per_set(fast.p_stay, cases) for _ in range(repeat))
    pipeline_us = statistics.median(per_set(reference.reference_p_stay, few) for _ in range(max(1, repeat // 2)))
    diff = max(abs(a - b) for feats, reason in few
               for a, b in zip(fast.p_stay(feats, reason, offers),
                               reference.reference_p_stay(feats, reason, offers), strict=True))
    return {"model": version.name, "offers_per_set": len(offers), "offer_sets": len(cases),
            "compiled_us_per_offer_set": round(compiled_us, 1), "pipeline_us_per_offer_set": round(pipeline_us, 1),
            "speedup": round(pipeline_us / compiled_us, 1), "max_abs_difference": diff,
            "n_trees": compiled.forest.n_trees}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    result = measure(args.models, args.repeat)
    print(f"scoring ({result['model']}, {result['n_trees']} trees, {result['offers_per_set']} offers per set, "
          f"{result['offer_sets']} offer sets): compiled {result['compiled_us_per_offer_set']} us, "
          f"Pipeline {result['pipeline_us_per_offer_set']} us per offer set ({result['speedup']}x); "
          f"max |difference| {result['max_abs_difference']:.2e}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
