"""A model version as the service serves it: verified, then built from its served form.

Shared by the service (service.runtime, at start-up and on every reload) and by the registry's promotion
checks (training.promotion), so that "the service would refuse this version" is decided in one place.
"""

from __future__ import annotations

from pathlib import Path

from retention.artifacts import ArtifactError, resolve_version, verify_version
from retention.compiled import CompileError
from retention.features import FEATURE_VERSION
from retention.offers import Catalog
from retention.policy import ModelScorer
from retention.scorers import load_scorer


def load_served(models_dir: Path, ref: str, catalog: Catalog) -> tuple[ModelScorer, dict]:
    """Verify the version folder (every file's checksum, the feature version), then build the scorer.

    The offer-response model is served from its own file (retention.scorers): numpy arrays, no unpickling,
    so no code runs on load and the workers hold neither scikit-learn nor pandas. It must reproduce the
    fitted estimator's probabilities on the probe saved with it. A version trained on data without offer
    history has no such model: it is served for its features, and the rules choose offers."""
    version_dir = resolve_version(models_dir, ref)
    meta = verify_version(version_dir, feature_version=FEATURE_VERSION)
    if "models" not in meta:
        raise ArtifactError(f"{version_dir}: trained by an earlier release of retention-offers (no per-model "
                            "metadata); retrain it with this release")
    missing = set(catalog.ids) - set(meta.get("offers", []))
    if missing:
        raise ArtifactError(f"{version_dir}: model was trained without offers {sorted(missing)}; "
                            "retrain with the current catalog")
    served = (meta.get("compiled") or {}).get("offer_response")
    if meta["models"].get("offer_response", {}).get("trained") and not served:
        raise ArtifactError(f"{version_dir}: has an offer-response model but no served form of it "
                            "(metadata 'compiled'); retrain it with this release")
    offers = None
    if served:
        try:
            offers, probe = load_scorer(version_dir / served["file"], catalog)
        except CompileError as exc:
            raise ArtifactError(str(exc)) from exc
        diff = probe.max_difference(offers)
        if diff > 1e-9:
            raise ArtifactError(f"{version_dir / served['file']}: the served model is {diff:.3g} away from the "
                                "fitted model's probabilities on its probe rows; refusing to serve it")
    return ModelScorer(offers, meta), meta
