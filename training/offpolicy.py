"""What a candidate policy would have been worth on logged decisions: `retention ope` and the registry's
comparisons (retention models compare / promote).

The log is a data set in the training contract (a `retention export` of the store, or a simulated history)
whose cancel requests carry the probability with which their offer was chosen (`propensity`: the service's
exploration or an experiment's arm share; a simulator logs its own). Every candidate decides every logged
request again, as the service would have decided it then: the same features as of the request
(training.train.response_rows), the same guardrails over the customer's earlier logged flows, the service's
own `Policy.decide` (the gate's verdict, its fixed offer and allowed offers, exploration). A candidate is
one of:

- `rules`: the fallback rules of the policy file; `none`: never an offer; `fixed:OFFER`: OFFER wherever the
  guardrails allow it, else none;
- a model version: `champion`, `challenger`, `latest`, a version id or a folder, served as the service
  would serve it, optionally with another exploration share: `champion@0.1`.

Each candidate is given as the probabilities with which it would have chosen each offer on each request
(one-hot, or with exploration (1 - share) on its own choice plus share spread over the eligible offers),
and valued by IPS, self-normalised IPS and doubly robust estimates (retention.ope), with 95% intervals and
the effective sample size. The reward model of DR is one model version's expected net revenue per offer
(default: the first model candidate); without one, DR equals IPS. Support: where a candidate gives offers the
log showed rarely, or never, on the requests where it would give them, the estimate rests on few flows,
and it says so.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from retention.artifacts import load_artifact, resolve_version
from retention.contract import LOGGED_DECISIONS
from retention.decision import Decision
from retention.features import FEATURE_VERSION, FeatureSpec, discover_spec
from retention.offers import Catalog
from retention.ope import Estimate, evaluate, one_hot
from retention.policy import ModelScorer, Policy, PolicyConfig
from training.dataset import open_dataset, resolve_window_end
from training.flows import Flows, build_flows, histories, offer_probabilities, replayed_requests
from training.train import response_rows

REPLAY_TIME_BUDGET_MS = 5000.0
THIN_ESS = 200  # below this effective sample size an estimate is flagged as resting on too few flows


@dataclass(frozen=True)
class Candidate:
    """A policy to value: its label as given, and how it decides (a Policy, or a fixed rule on the flows)."""

    label: str
    kind: str  # rules, none, fixed, model
    offer: str | None = None  # fixed:OFFER
    ref: str | None = None  # model: the version reference as given
    exploration: float | None = None  # model@SHARE: the exploration share (None: the policy file's)
    version: str | None = None  # model: the version id it resolved to


def parse_candidate(text: str, catalog: Catalog) -> Candidate:
    """`rules`, `none`, `fixed:OFFER`, or a model reference with an optional `@SHARE`; ValueError otherwise."""
    text = text.strip()
    if text in ("rules", "none"):
        return Candidate(text, text)
    if text.startswith("fixed:"):
        offer = text.removeprefix("fixed:")
        if offer not in catalog:
            raise ValueError(f"candidate {text!r}: {offer!r} is not an offer of the catalog ({', '.join(catalog.ids)})")
        return Candidate(text, "fixed", offer=offer)
    ref, _, share = text.partition("@")
    if not ref:
        raise ValueError(f"candidate {text!r}: give rules, none, fixed:OFFER or a model version (champion, latest, "
                         "an id or a folder), optionally with @SHARE")
    exploration = None
    if share:
        try:
            exploration = float(share)
        except ValueError:
            raise ValueError(f"candidate {text!r}: the exploration share after @ must be a number") from None
        if not 0 <= exploration <= 0.5:
            raise ValueError(f"candidate {text!r}: the exploration share must be between 0 and 0.5")
    return Candidate(text, "model", ref=ref, exploration=exploration)


@dataclass
class Log:
    """The logged, labelled cancel requests of a data set, as flows, with what replaying them needs."""

    data_dir: Path
    rows: pd.DataFrame
    flows: Flows
    past: dict  # training.flows.histories
    con: object  # the data set's DuckDB connection
    catalog: Catalog
    logged: pd.DataFrame | None = None  # store.logged: per request, the features the service scored
    _rows: dict = field(default_factory=dict)

    def rows_for(self, spec: FeatureSpec) -> pd.DataFrame:
        """The same requests, in the same order, with the features `spec` defines (a model's own): as the
        service logged them where the log has them (an export of the store), else recomputed as of each
        request from the data set's history."""
        key = repr(spec.to_dict())
        if key not in self._rows:
            rows = response_rows(self.con, self.catalog, spec, resolve_window_end(self.data_dir, None))
            if not rows["request_id"].equals(self.rows["request_id"]):
                raise ValueError(f"{self.data_dir}: the requests differ between two feature definitions")
            self._rows[key] = _with_logged_features(rows, spec, self.logged)
        return self._rows[key]

    @property
    def features_logged(self) -> bool:
        return self.logged is not None


def read_log(data_dir: Path, catalog: Catalog, config: PolicyConfig, spec: FeatureSpec | None = None) -> Log:
    """The labelled cancel requests of `data_dir` with their logged propensities; ValueError if there are
    none, or if some lack a propensity (nobody can tell with what probability their offer was chosen)."""
    con = open_dataset(data_dir)
    spec = spec or discover_spec(con)
    rows = response_rows(con, catalog, spec, resolve_window_end(data_dir, None))
    if rows.empty:
        raise ValueError(f"{data_dir}: no labelled cancel requests (a request is labelled 30 days after it)")
    if "propensity" not in rows or rows["propensity"].isna().any():
        missing = int(rows["propensity"].isna().sum()) if "propensity" in rows else len(rows)
        raise ValueError(f"{data_dir}: {missing:,} of {len(rows):,} labelled cancel requests have no propensity: "
                         "off-policy estimates need the probability with which each logged offer was chosen "
                         "(the service logs it; export the store with `retention export`)")
    flows = build_flows(con, rows, catalog, config)
    return Log(Path(data_dir), rows, flows, histories(con, catalog), con, catalog, _logged(data_dir, rows))


def _logged(data_dir: Path, rows: pd.DataFrame) -> pd.DataFrame | None:
    """The logged features of every request of `rows` (store.logged), or None where the data set has none for
    some (a simulated history, an export from before the service logged them)."""
    path = Path(data_dir) / LOGGED_DECISIONS
    if not path.is_file():
        return None
    logged = pd.read_parquet(path, columns=["request_id", "features"]).drop_duplicates("request_id")
    logged = logged.set_index("request_id").reindex(rows["request_id"])
    if logged["features"].isna().any():
        return None
    return pd.DataFrame([json.loads(f) for f in logged["features"]], index=rows.index)


def _with_logged_features(rows: pd.DataFrame, spec: FeatureSpec, logged: pd.DataFrame | None) -> pd.DataFrame:
    if logged is None:
        return rows
    rows = rows.copy()
    for name in spec.names:
        if name in logged:
            values = logged[name]
            rows[name] = (pd.to_numeric(values, errors="coerce").astype(float) if name in spec.numeric
                          else values.astype(object).where(values.notna(), None))
    return rows


def target_of(decisions: list[Decision], offers: tuple[str, ...]) -> np.ndarray:
    """(n, offers) probabilities with which the policy that made `decisions` chooses each offer."""
    col = {o: j for j, o in enumerate(offers)}
    out = np.zeros((len(decisions), len(offers)))
    for i, d in enumerate(decisions):
        e = d.exploration
        if e is None:
            out[i, col[d.offer.id]] = 1.0
            continue
        out[i, col[e.policy_offer]] += 1.0 - e.share
        for o in e.eligible:
            out[i, col[o]] += e.share / len(e.eligible)
    return out


@dataclass
class Model:
    version: str
    model: dict
    meta: dict


def load_model(models_root: Path, ref: str) -> Model:
    version_dir = resolve_version(models_root, ref)
    model, meta = load_artifact(version_dir, feature_version=FEATURE_VERSION)
    return Model(meta["version"], model, meta)


def candidate_target(c: Candidate, log: Log, catalog: Catalog, config: PolicyConfig,
                     model: Model | None, progress: Callable | None = None) -> tuple[np.ndarray, list[Decision] | None]:
    """The candidate's (n, offers) choice probabilities on the log, and its decisions where it is a Policy."""
    f = log.flows
    k = len(f.offers)
    if c.kind == "none":
        return one_hot(np.full(len(f), f.none), k), None
    if c.kind == "fixed":
        return one_hot(f.fixed(f.offers.index(c.offer)), k), None
    if c.kind == "rules":
        return one_hot(f.rules, k), None
    assert model is not None
    # A generous scoring budget (as training.policy_eval): the candidate's choices, not this machine's load.
    cfg = replace(config, time_budget_ms=REPLAY_TIME_BUDGET_MS,
                  exploration_share=config.exploration_share if c.exploration is None else c.exploration)
    policy = Policy(catalog, cfg, ModelScorer.from_estimator(model.model, model.meta, catalog))
    spec = FeatureSpec.from_dict(model.meta["feature_spec"])
    requests = replayed_requests(log.rows_for(spec), spec, log.past)
    if progress:
        requests = progress(requests, total=len(log.rows), desc=f"replay {c.label}", unit="request")
    try:
        decisions = [policy.decide(r, s, now, history=h) for r, s, now, h in requests]
    finally:
        policy.close()
    return target_of(decisions, f.offers), decisions


def reward_model(model: Model | None, log: Log, catalog: Catalog) -> np.ndarray:
    """(n, offers) expected reward of each offer on each logged request by `model` (zeros without one)."""
    f = log.flows
    if model is None or model.model.get("offer_response") is None:
        return np.zeros((len(f), len(f.offers)))
    rows = log.rows_for(FeatureSpec.from_dict(model.meta["feature_spec"]))
    return f.values(offer_probabilities(model.model["offer_response"], rows, catalog))


def estimate(candidates: list[Candidate], log: Log, catalog: Catalog, config: PolicyConfig, models_root: Path,
             reward_ref: str | None = None, progress: Callable | None = None) -> dict:
    """Every candidate's estimated value per logged request, the differences from the first candidate (paired,
    DR), the offer mix of each beside the log's, and the warnings on support."""
    models: dict[str, Model] = {}
    for c in candidates:
        if c.kind == "model" and c.ref not in models:
            models[c.ref] = load_model(models_root, c.ref)
    reward = (load_model(models_root, reward_ref) if reward_ref
              else next(iter(models.values()), None))
    f = log.flows
    q = reward_model(reward, log, catalog)
    lf = f.log()
    logged_counts = np.bincount(f.logged, minlength=len(f.offers))
    results, targets, warnings = [], {}, []
    for c in candidates:
        model = models.get(c.ref) if c.kind == "model" else None
        target, decisions = candidate_target(c, log, catalog, config, model, progress)
        targets[c.label] = target
        v = evaluate(lf, target, q)
        expected_mix = target.sum(axis=0)
        entry = {"candidate": c.label, "kind": c.kind, "version": model.version if model else None,
                 "ips": v.ips.__dict__, "snips": v.snips.__dict__, "dr": v.dr.__dict__, "matched": v.matched,
                 "ess": v.ess, "offer_rate": float(1 - expected_mix[f.none] / len(f)),
                 "offer_mix": {o: round(float(x), 1) for o, x in zip(f.offers, expected_mix, strict=True) if x > 0}}
        if decisions is not None:
            entry["reason_codes"] = dict(Counter(code for d in decisions for code in d.reason_codes
                                                 if code in ("model_not_better_than_rules", "fixed_offer_better_than_rules",
                                                             "no_offer_model", "explored", "best_incremental_value")))
        results.append(entry)
        never = [o for j, o in enumerate(f.offers) if expected_mix[j] >= 1 and logged_counts[j] == 0]
        if never:
            warnings.append(f"{c.label} gives {', '.join(never)}, which the log never showed: no estimate can value "
                            "those choices, so every estimate of it is biased toward what the log did show")
        if v.ess < THIN_ESS:
            warnings.append(f"{c.label}: the estimate rests on an effective {v.ess:.0f} of {len(f):,} logged requests "
                            "(the log rarely chose what it would choose): treat its interval with care")
    first = candidates[0].label
    differences = {c.label: Estimate.of_terms(lf.dr_terms(targets[c.label], q) - lf.dr_terms(targets[first], q)).__dict__
                   for c in candidates[1:]}
    return {
        "data": str(log.data_dir), "requests": len(f), "value": (
            f"net revenue per cancel request over {config.horizon_months} months, against the logged outcomes "
            "(still subscribed 30 days after the request)"),
        "reward_model": reward.version if reward is not None and q.any() else None,
        "features": ("as the service logged them (_logged/decisions.parquet)" if log.features_logged
                     else "recomputed as of each request from the data set's history"),
        "logged": {"mean_reward": float(f.rewards.mean()),
                   "offer_mix": {o: int(n) for o, n in zip(f.offers, logged_counts, strict=True) if n},
                   "propensity": {"min": float(f.propensity.min()), "median": float(np.median(f.propensity))}},
        "candidates": results,
        "differences_from": first,
        "differences": differences,
        "warnings": warnings,
    }
