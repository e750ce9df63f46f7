"""Judge the decision policy with the simulator's true response: for each simulated cancel request, the offer
the service's `Policy.decide` chooses is valued by the TRUE expected incremental net revenue of that offer
(retention.value, with the simulator's true save probabilities), and compared with the rules fallback, every
fixed offer and the oracle (the best true choice the guardrails allow).

Nothing here re-implements the decision: features come from `training.train.response_rows` (the training
feature function), the guardrails from `retention.eligibility` and the choice from `retention.policy`.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from retention.features import FeatureSpec
from retention.offers import Catalog
from retention.policy import ModelScorer, Policy, PolicyConfig
from retention.utc import naive_utc
from retention.value import expected_net_value
from training.dataset import open_dataset, resolve_window_end
from training.flows import histories, replayed_requests
from training.simulator.truth import TRUTH_FILE
from training.train import response_rows

# A generous scoring budget: we measure the model's choices, not this machine's load. Decisions that took
# longer than the configured budget (and would have fallen back in production) are counted separately.
EVAL_TIME_BUDGET_MS = 5000.0
BOOTSTRAP_RESAMPLES = 1000


def evaluate_policy(model: dict, meta: dict, data_dir: Path, catalog: Catalog, configured: PolicyConfig,
                    since: datetime | None = None, limit: int | None = None, seed: int = 0, progress=None,
                    time_budget_ms: float | None = EVAL_TIME_BUDGET_MS) -> dict:
    """True incremental value per request of the model policy, the rules, each fixed offer and the oracle,
    deciding with `catalog` and the policy `configured` (guardrails, rules) as the service would.

    `progress` wraps an iterable like tqdm does. `time_budget_ms` None keeps the configured budget.
    """
    data_dir = Path(data_dir)
    truth_path = data_dir / TRUTH_FILE
    if not truth_path.is_file():
        raise ValueError(f"{data_dir}: no {TRUTH_FILE}: judging a policy needs the simulator's true response of "
                         "every offer; use a data set written by `retention simulate`")
    config = configured if time_budget_ms is None else replace(configured, time_budget_ms=float(time_budget_ms))
    spec = FeatureSpec.from_dict(meta["feature_spec"])
    con = open_dataset(data_dir)
    rows = response_rows(con, catalog, spec, resolve_window_end(data_dir, None))
    if since is not None:
        rows = rows[rows["as_of"] >= naive_utc(since)]
    if limit is not None and limit < len(rows):
        rows = rows.iloc[np.sort(np.random.default_rng(seed).choice(len(rows), size=limit, replace=False))]
    rows = rows.reset_index(drop=True)
    if rows.empty:
        raise ValueError(f"{data_dir}: no labelled cancel requests to evaluate")
    truth = _truth(truth_path, rows["request_id"], catalog, config.horizon_months)
    past_flows = histories(con, catalog)

    ids = list(catalog.ids)
    col = {o: j for j, o in enumerate(ids)}
    n = len(rows)
    model_choice, rules_choice, ungated_choice = (np.zeros(n, dtype=int) for _ in range(3))
    guard_ok = np.ones((n, len(ids)), dtype=bool)
    latency_ms = np.zeros(n)
    fallback_codes: Counter[str] = Counter()
    mismatched_price = 0
    # The service's policy as it serves (the policy gate applied), and the model's own choices beside it.
    policy = Policy(catalog, config, ModelScorer.from_estimator(model, meta, catalog))
    gated = not policy.scorer.serves_policy and policy.scorer.offers is not None
    ungated = Policy(catalog, config, ModelScorer.from_estimator(model, meta, catalog, ignore_gate=True)) if gated \
        else policy
    requests = replayed_requests(rows, spec, past_flows)
    try:
        for i, (request, snapshot, now, past) in enumerate(
                progress(requests, total=n, desc="decide", unit="request") if progress else requests):
            t0 = time.perf_counter()
            decision = policy.decide(request, snapshot, now=now, history=past)
            latency_ms[i] = (time.perf_counter() - t0) * 1000.0
            rules = policy.rules_decision(request, snapshot, now, history=past)
            mine = ungated.decide(request, snapshot, now=now, history=past) if gated else decision
            if decision.fallback:
                fallback_codes.update(c for c in decision.reason_codes
                                      if c in ("scoring_timeout", "scoring_error", "model_unavailable"))
            model_choice[i], rules_choice[i], ungated_choice[i] = (col[decision.offer.id], col[rules.offer.id],
                                                                   col[mine.offer.id])
            for offer_id in decision.excluded:  # retention.eligibility.exclusions, as decide applied them
                guard_ok[i, col[offer_id]] = False
            mismatched_price += abs(request.price - truth["price"][i]) > 1e-6
    finally:
        policy.close()
        ungated.close()

    value, truth_ok = truth["value"], truth["eligible"]
    # An offer the simulated billing cannot carry out changes nothing: it is worth what no offer is worth.
    achievable = np.where(truth_ok, value, 0.0)
    oracle_choice = np.where(guard_ok & truth_ok, value, -np.inf).argmax(axis=1)
    choices = {"model": model_choice, "rules": rules_choice, "oracle": oracle_choice}
    if gated:
        choices["model_ungated"] = ungated_choice
    for j, offer_id in enumerate(ids):
        choices[f"always:{offer_id}"] = np.where(guard_ok[:, j], j, col["none"])
    per_request = {name: achievable[np.arange(n), c] for name, c in choices.items()}
    oracle_total = float(per_request["oracle"].sum())

    policies = {}
    for name, c in choices.items():
        v = per_request[name]
        ineligible = ~truth_ok[np.arange(n), c]
        policies[name] = {
            "mean": float(v.mean()),
            "total": float(v.sum()),
            "share_of_oracle": float(v.sum() / oracle_total) if oracle_total > 0 else None,
            "offer_rate": float((c != col["none"]).mean()),
            "truth_ineligible": int(ineligible.sum()),
            "truth_ineligible_share": float(ineligible.mean()),
        }
    fixed = [f"always:{o}" for o in ids if o != "none"]
    best_fixed = max(fixed, key=lambda name: policies[name]["mean"])
    model_v = per_request["model"]
    return {
        "model_version": meta["version"],
        "data": str(data_dir),
        "requests": n,
        "since": since.isoformat() if since else None,
        "limit": limit,
        "seed": seed,
        "value": f"true expected incremental net revenue per request over {config.horizon_months} months "
                 "(plan currency) vs giving no offer; an offer the simulator marks ineligible counts as 0",
        "policy_version": config.version,
        "catalog_version": catalog.version,
        "time_budget_ms": {"configured": configured.time_budget_ms, "used": config.time_budget_ms},
        "policies": policies,
        "best_fixed": best_fixed,
        "comparisons": {
            "model_minus_best_fixed": _mean_ci(model_v - per_request[best_fixed], seed),
            "model_minus_rules": _mean_ci(model_v - per_request["rules"], seed),
            "model_mean": _mean_ci(model_v, seed),
            "model_share_of_oracle": _ratio_ci(model_v, per_request["oracle"], seed),
        },
        "offer_mix": {name: _mix(choices[name], ids) for name in ("model", "rules", "oracle")},
        # Where the model falls short of the oracle: its value lost, summed by the offer the oracle chose.
        "model_regret_by_oracle_offer": _regret(per_request["oracle"] - model_v, oracle_choice, ids),
        "model_truth_ineligible_by_offer": _mix(model_choice[~truth_ok[np.arange(n), model_choice]], ids),
        "fallbacks": {"count": int(sum(fallback_codes.values())), "by_code": dict(fallback_codes)},
        "decide_latency_ms": {
            "p50": float(np.percentile(latency_ms, 50)),
            "p95": float(np.percentile(latency_ms, 95)),
            "max": float(latency_ms.max()),
            "over_configured_budget": int((latency_ms > configured.time_budget_ms).sum()),
        },
        # The contract keeps the signup plan only, so after an accepted downgrade the features (and the
        # request built from them) carry the old price; the true value uses the price actually paid.
        "requests_with_outdated_price": int(mismatched_price),
    }


def _truth(path: Path, request_ids: pd.Series, catalog: Catalog, horizon_months: int) -> dict[str, np.ndarray]:
    """True incremental value and simulator eligibility of every offer, row-aligned with `request_ids`."""
    ids = catalog.ids
    cols = ["request_id", "price", "billing_period"] + [f"p_{o}" for o in ids] + [f"eligible_{o}" for o in ids]
    truth = pd.read_parquet(path, columns=cols).set_index("request_id")
    missing = ~request_ids.isin(truth.index)
    if missing.any():
        raise ValueError(f"{path}: no truth for {int(missing.sum())} cancel request(s), e.g. "
                         f"{request_ids[missing].iloc[0]!r}: is it the truth of this data set?")
    truth = truth.loc[request_ids.to_numpy()]
    price, period = truth["price"].to_numpy(float), truth["billing_period"].to_numpy()
    nets = np.column_stack([expected_net_value(catalog[o], truth[f"p_{o}"].to_numpy(float), price, period,
                                               horizon_months) for o in ids])
    return {
        "value": nets - nets[:, [ids.index("none")]],
        "eligible": truth[[f"eligible_{o}" for o in ids]].to_numpy(bool),
        "price": price,
    }


def _mix(choice: np.ndarray, ids: list[str]) -> dict[str, int]:
    counts = np.bincount(choice, minlength=len(ids))
    return {o: int(c) for o, c in zip(ids, counts, strict=True) if c}


def _regret(loss: np.ndarray, oracle_choice: np.ndarray, ids: list[str]) -> dict[str, float]:
    sums = np.bincount(oracle_choice, weights=loss, minlength=len(ids))
    return {o: round(float(v), 2) for o, v in zip(ids, sums, strict=True) if v}


def _mean_ci(x: np.ndarray, seed: int) -> dict:
    """Mean with a BCa bootstrap 95% interval (requests resampled)."""
    mean = float(x.mean())
    if np.ptp(x) == 0:  # every request the same: no sampling uncertainty to show (BCa is undefined)
        return {"mean": mean, "ci95": [mean, mean]}
    res = stats.bootstrap((x,), np.mean, n_resamples=BOOTSTRAP_RESAMPLES, rng=np.random.default_rng(seed))
    return {"mean": mean, "ci95": [float(res.confidence_interval.low), float(res.confidence_interval.high)]}


def _ratio_ci(num: np.ndarray, den: np.ndarray, seed: int) -> dict:
    """sum(num) / sum(den) with a paired bootstrap 95% interval."""
    if den.sum() <= 0:
        return {"value": None, "ci95": None}
    value = float(num.sum() / den.sum())
    if np.ptp(num) == 0 and np.ptp(den) == 0:
        return {"value": value, "ci95": [value, value]}

    def ratio(a, b, axis=-1):
        return a.sum(axis=axis) / b.sum(axis=axis)

    res = stats.bootstrap((num, den), ratio, paired=True, vectorized=True, n_resamples=BOOTSTRAP_RESAMPLES,
                          rng=np.random.default_rng(seed))
    return {"value": value, "ci95": [float(res.confidence_interval.low), float(res.confidence_interval.high)]}
