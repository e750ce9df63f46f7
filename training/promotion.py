"""What may become the champion, and the side-by-side comparison of two versions (`retention models`).

A version may become the champion only if:
1. it passes every artifact check the service applies (checksums, feature version, the served form's probe)
   — never overridable;
2. its policy gate let its model choose offers (verdict "model"): a version whose own training found its
   choices no better than the rules would serve the rules;
3. where a champion is serving, it is estimated on logged decisions (`--data`, off-policy, doubly robust,
   paired on the same requests, each decided as the service would with the policy file's exploration) to
   beat the champion by more than the stated margin per request, on an effective sample of at least
   training.offpolicy.THIN_ESS requests (a candidate that chooses what the log rarely chose cannot be told
   from the champion: the estimate is noise).
Checks 2 and 3 can be overridden with --force and a reason, which the registry records. A challenger (scored
beside the champion, never shown) needs check 1 only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from retention.artifacts import resolve_version, verify_version
from retention.features import FEATURE_VERSION
from retention.loading import load_served
from retention.offers import Catalog
from retention.policy import PolicyConfig
from retention.registry import Registry


@dataclass
class Checks:
    version: str
    refusals: list[str] = field(default_factory=list)
    figures: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.refusals


def gate_of(meta: dict) -> dict:
    return ((meta.get("models") or {}).get("offer_response") or {}).get("gate") or {}


def promotion_checks(models_root: Path, ref: str, alias: str, registry: Registry, catalog: Catalog,
                     config: PolicyConfig, data_dir: Path | None = None, margin: float = 0.0,
                     progress=None) -> Checks:
    """The checks above for making `ref` the `alias`; raises ArtifactError when check 1 fails."""
    version_dir = resolve_version(models_root, ref)
    _, meta = load_served(Path(models_root), ref, catalog)  # what the service would refuse, refused here
    version = version_dir.name  # the registry names folders (a copy of a version has its own folder)
    if version_dir.parent.resolve() != Path(models_root).resolve():
        raise ValueError(f"{version_dir}: promote a version of the models folder {models_root}, not a folder "
                         "elsewhere (copy it in first: versions are immutable once there)")
    checks = Checks(version)
    gate = gate_of(meta)
    verdict = gate.get("verdict", "no offer model" if not meta["models"].get("offer_response", {}).get("trained")
                       else "model")
    checks.figures["gate"] = {"verdict": verdict, "why": gate.get("why")}
    if alias != "champion":
        return checks
    if verdict != "model":
        checks.refusals.append(f"its policy gate's verdict is {verdict!r}: {gate.get('why') or 'no offer model'}")
    champion = registry.version_of("champion")
    if champion is None or champion == version:
        return checks
    checks.figures["champion"] = champion
    if data_dir is None:
        checks.refusals.append(f"{champion} is the champion: give --data with logged decisions (a `retention export` "
                               "of the store) to compare the two off-policy")
        return checks
    from training.offpolicy import THIN_ESS, estimate, parse_candidate, read_log

    log = read_log(data_dir, catalog, config)
    result = estimate([parse_candidate(champion, catalog), parse_candidate(version, catalog)], log, catalog, config,
                      Path(models_root), progress=progress)
    diff = result["differences"][version]
    checks.figures["ope"] = {"data": str(data_dir), "requests": result["requests"], "margin": margin,
                             "candidate_minus_champion": diff,
                             "candidate": result["candidates"][1]["dr"], "champion": result["candidates"][0]["dr"],
                             "warnings": result["warnings"]}
    ess = result["candidates"][1]["ess"]
    if ess < THIN_ESS:
        checks.refusals.append(
            f"the log supports it on an effective {ess:.0f} of {result['requests']:,} requests (it would choose what "
            f"the log rarely chose): fewer than {THIN_ESS} is no evidence either way; log more exploring traffic")
    if not diff["value"] > margin:
        checks.refusals.append(
            f"on {result['requests']:,} logged requests it is estimated at {diff['value']:+.2f} per request against "
            f"the champion {champion} (doubly robust, 95% CI {diff['low']:+.2f} to {diff['high']:+.2f}), not above "
            f"the margin of {margin:+.2f}")
    return checks


def compare(models_root: Path, a: str, b: str, catalog: Catalog, config: PolicyConfig, data_dir: Path | None = None,
            progress=None) -> dict:
    """Two versions side by side: training data and window, held-out metrics, the gates' verdicts, and (with
    logged decisions) both valued off-policy on the same requests."""
    out = {"versions": []}
    refs = []
    for ref in (a, b):
        version_dir = resolve_version(models_root, ref)
        meta = verify_version(version_dir, feature_version=FEATURE_VERSION)
        refs.append(meta["version"])
        offer = (meta.get("metrics") or {}).get("offer_response") or {}
        churn = (meta.get("metrics") or {}).get("churn_risk") or {}
        gate = gate_of(meta)
        pooled = (gate.get("evidence") or {}).get("pooled") or {}
        out["versions"].append({
            "ref": ref, "version": meta["version"], "created_at": meta.get("created_at"),
            "data_window": meta.get("data_window"), "data_dir": meta.get("data_dir"),
            "learner": (meta["models"].get("offer_response") or {}).get("learner"),
            "offer_response": {k: (offer.get("model") or {}).get(k) for k in ("n", "roc_auc", "brier", "ece")},
            "churn_risk": {k: (churn.get("model") or {}).get(k) for k in ("n", "roc_auc", "brier")},
            "gate": {"verdict": gate.get("verdict"), "model_minus_rules": pooled.get("value"),
                     "low": pooled.get("low"), "high": pooled.get("high")},
        })
    if data_dir is not None:
        from training.offpolicy import estimate, parse_candidate, read_log

        log = read_log(data_dir, catalog, config)
        out["ope"] = estimate([parse_candidate(r, catalog) for r in refs], log, catalog, config, Path(models_root),
                              progress=progress)
    return out
