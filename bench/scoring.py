"""Scoring in the request path, measured alone: one customer x every offer of the catalog, as the service
scores it (retention.policy.ModelScorer -> the served form of retention.scorers), against the fitted
scikit-learn estimator on the same rows (a pandas frame, as training and evaluation use it).

    python -m bench.scoring --models models [--repeat 5]

Customers are the trained model's own probe rows (held-out training rows saved with the served
model), so every category and missing-value pattern of real data appears. Prints microseconds per offer set (median of `--repeat` passes over all customers and reasons) and the
largest difference between the two probabilities.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from retention.artifacts import load_artifact
from retention.contract import REASONS
from retention.features import FEATURE_VERSION
from retention.offers import load_catalog
from retention.policy import ModelScorer
from retention.scorers import load_scorer


def measure(models: Path, repeat: int) -> dict:
    catalog = load_catalog()
    version = max(p.parent for p in models.glob("*/metadata.json"))
    model, meta = load_artifact(version, feature_version=FEATURE_VERSION)
    served, probe = load_scorer(version / meta["compiled"]["offer_response"]["file"], catalog)
    fast = ModelScorer(served, meta)
    reference = ModelScorer.from_estimator(model, meta, catalog)
    offers = list(catalog.offers)
    customers = list(dict.fromkeys(json.dumps(row, sort_keys=True) for row, _, _ in probe.rows()))
    cases = [(json.loads(c), r) for c in customers for r in REASONS]

    def per_set(score, cases) -> float:
        start = time.perf_counter()
        for feats, reason in cases:
            score(feats, reason, offers)
        return (time.perf_counter() - start) / len(cases) * 1e6

    few = cases[:: max(1, len(cases) // 200)]  # the fitted estimator is slow: a sample of 200 offer sets
    compiled_us = statistics.median(per_set(fast.p_stay, cases) for _ in range(repeat))
    pipeline_us = statistics.median(per_set(reference.reference_p_stay, few) for _ in range(max(1, repeat // 2)))
    diff = max(abs(a - b) for feats, reason in few
               for a, b in zip(fast.p_stay(feats, reason, offers),
                               reference.reference_p_stay(feats, reason, offers), strict=True))
    return {"model": version.name, "learner": meta["models"]["offer_response"].get("learner"),
            "offers_per_set": len(offers), "offer_sets": len(cases),
            "compiled_us_per_offer_set": round(compiled_us, 1), "pipeline_us_per_offer_set": round(pipeline_us, 1),
            "speedup": round(pipeline_us / compiled_us, 1), "max_abs_difference": diff}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    result = measure(args.models, args.repeat)
    print(f"scoring ({result['model']}, {result['learner']}, {result['offers_per_set']} offers per set, "
          f"{result['offer_sets']} offer sets): compiled {result['compiled_us_per_offer_set']} us, "
          f"estimator {result['pipeline_us_per_offer_set']} us per offer set ({result['speedup']}x); "
          f"max |difference| {result['max_abs_difference']:.2e}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
