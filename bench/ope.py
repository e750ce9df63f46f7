"""Off-policy evaluation against the simulator's truth, and what exploring costs (issue 14, items 2 and 3).

The logging policy is a trained model version served by the service's own Policy with the default
exploration share (0.05), replayed once over a fresh population's labelled cancel requests
(training.offpolicy: the path `retention ope` takes). Every log then draws, for each request, the logged
offer from the logging policy's exact probabilities (the Decision's exploration record: 1 - share on the
policy's choice plus share / k over the k eligible offers) and the outcome from the TRUE P(stay | offer)
(`_truth/requests.parquet`); the reward is outcome x the offer's net revenue over the horizon
(training.flows.Flows.revenue: what the service optimises). The candidates are valued by IPS, SNIPS and DR
(retention.ope) on each of 100 logs and compared with their exact true value, sum_a pi(a|x) p(a|x) rev(a|x)
averaged over the requests.

    make bench-ope                                   # reference and types-large, 100 logs (about 5 minutes)
    python -m bench.ope --worlds reference --logs 20 # quicker
    python -m bench.ope --update-docs                # also rewrite the results in docs/ope.md

It reads the worlds `make bench-policy` caches (var/bench/worlds/<world>/{fresh,models}); results go to
var/bench/ope.json. Benchmarks print figures, not pass/fail: the issue's targets are printed as ok / MISS.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from retention.ope import Z95, Estimate, LoggedFlows, dr_difference, evaluate, one_hot

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "var" / "bench"
WORLDS_DIR = OUT / "worlds"
DOCS = ROOT / "docs" / "ope.md"
MARK = ("<!-- bench-ope:start -->", "<!-- bench-ope:end -->")
# world -> the world whose model is "model v2": the same truth, a different (smaller) training set.
PAIRS = {"reference": "reference-small", "types-large": "types"}
LOGS = 100
LOG_SIZE = 25_000
SHARE = 0.05  # the service's default (config/policy.toml)
SHARES = (0.05, 0.1, 0.2)
TOLERANCE = 0.10  # the "within +-10%"
COVERAGE_TARGET = 0.90  # the ">= 90% of the logs"
Z80 = 0.8416212335729143  # the normal quantile for 80% power
Z90 = 1.6448536269514722  # two-sided 90%: within the tolerance in 90% of logs
EFFECT = 0.05  # "two policies 5% apart"
POWER_RUNS = 400
ESTIMATORS = ("ips", "snips", "dr")


# ----------------------------------------------------------------------------------------------------------
# The core: numpy on (requests, offers) matrices. tests/test_bench_ope.py runs it on a synthetic world.


@dataclass
class Bandit:
    """A pool of requests, row-aligned (n, offers): the truth, the reward model, the logging policy and the
    candidates, each policy as the probabilities with which it chooses each offer."""

    p_stay: np.ndarray  # true P(stay | offer)
    revenue: np.ndarray  # net revenue over the horizon if the customer stays with the offer
    q: np.ndarray  # the DR reward model: expected reward of each offer
    logging: np.ndarray  # the logging policy
    targets: dict[str, np.ndarray]  # candidate -> policy
    baseline: str = "none"  # the candidate the lift is measured against

    @property
    def mu(self) -> np.ndarray:
        """The true expected reward of each offer on each request."""
        return self.p_stay * self.revenue

    def value(self, target: np.ndarray) -> np.ndarray:
        """The true expected reward of a policy on each request (exact: no sampling)."""
        return (target * self.mu).sum(axis=1)

    def draw(self, rng: np.random.Generator, idx: np.ndarray, logging: np.ndarray | None = None) -> LoggedFlows:
        """One log of the requests `idx`: offers from the logging policy, outcomes from the truth."""
        probs = (self.logging if logging is None else logging)[idx]
        cum = probs.cumsum(axis=1)
        cum /= cum[:, -1:]  # exactly 1 at the end, so a uniform draw always lands on an offer of non-zero probability
        actions = (cum > rng.random(len(idx))[:, None]).argmax(axis=1)
        rows = np.arange(len(idx))
        stayed = rng.random(len(idx)) < self.p_stay[idx, actions]
        return LoggedFlows(actions, probs[rows, actions], stayed * self.revenue[idx, actions])


def snips_difference(log: LoggedFlows, a: np.ndarray, b: np.ndarray) -> Estimate:
    """SNIPS(a) - SNIPS(b) on the same flows with its delta-method interval (the influence terms of the two
    ratios, paired, as retention.ope.evaluate computes the interval of one)."""
    wa, wb = log.weights(a), log.weights(b)
    va, vb = (wa * log.rewards).sum() / wa.sum(), (wb * log.rewards).sum() / wb.sum()
    influence = wa * (log.rewards - va) / wa.mean() - wb * (log.rewards - vb) / wb.mean()
    se = float(np.sqrt(np.sum(influence**2)) / len(influence))
    d = float(va - vb)
    return Estimate(d, d - Z95 * se, d + Z95 * se, se)


def estimates(log: LoggedFlows, targets: dict[str, np.ndarray], q: np.ndarray, baseline: str) -> dict:
    """Every candidate's IPS, SNIPS and DR estimate on one log: of its value, and of its lift over `baseline`
    (paired on the same flows)."""
    base = targets[baseline]
    out = {}
    for name, t in targets.items():
        v = evaluate(log, t, q)
        lift = {"ips": Estimate.of_terms(log.weights(t) * log.rewards - log.weights(base) * log.rewards),
                "snips": snips_difference(log, t, base), "dr": dr_difference(log, t, base, q)}
        out[name] = {"value": {e: getattr(v, e) for e in ESTIMATORS}, "lift": lift, "ess": v.ess}
    return out


def summary(found: list[Estimate], truth: float, size: int) -> dict:
    """How a set of estimates (one per log of `size` requests) relates to the truth."""
    values = np.array([e.value for e in found])
    covered = np.array([e.low <= truth <= e.high for e in found])
    scale = abs(truth)
    return {"mean": float(values.mean()), "bias": float(values.mean() - truth),
            "relative_bias": float((values.mean() - truth) / scale) if scale > 0 else None,
            "sd": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            # the Monte Carlo error of the mean (and so of the bias) over this many logs
            "bias_se": float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0,
            "mean_se": float(np.mean([e.se for e in found])),
            "within_10": float(np.mean(np.abs(values - truth) <= TOLERANCE * scale)) if scale > 0 else None,
            "coverage": float(covered.mean()),
            # How many logged requests would put this estimate within 10% of the truth in 90% of logs, from its
            # spread at this log size (sd ~ 1/sqrt(n); bias, small here, left out).
            "requests_for_10pct": (float(size * (Z90 * values.std(ddof=1) / (TOLERANCE * scale)) ** 2)
                                   if scale > 0 and len(values) > 1 else None)}


def accuracy(bandit: Bandit, logs: int, size: int, seed: int, resample: bool = True) -> dict:
    """The estimators over `logs` independent logs of `size` requests.

    resample: each log draws its requests from the pool with replacement (a fresh sample of customers, as
    the intervals assume), and the truth is the pool's mean. Otherwise one fixed set of `size` requests is
    logged again and again (only offers and outcomes re-drawn), and the truth is that set's mean: the
    intervals then also carry the spread between customers, which no log of the same customers shows."""
    rng = np.random.default_rng(seed)
    n = len(bandit.logging)
    fixed = None if resample else np.sort(rng.choice(n, size=min(size, n), replace=False))
    scope = np.arange(n) if resample else fixed
    base = bandit.value(bandit.targets[bandit.baseline])[scope].mean()
    truth = {name: bandit.value(t)[scope].mean() for name, t in bandit.targets.items()}
    found = {name: {"value": {e: [] for e in ESTIMATORS}, "lift": {e: [] for e in ESTIMATORS}, "ess": []}
             for name in bandit.targets}
    for _ in range(logs):
        idx = rng.integers(0, n, size) if resample else fixed
        log = bandit.draw(rng, idx)
        got = estimates(log, {k: t[idx] for k, t in bandit.targets.items()}, bandit.q[idx], bandit.baseline)
        for name, g in got.items():
            for what in ("value", "lift"):
                for e in ESTIMATORS:
                    found[name][what][e].append(g[what][e])
            found[name]["ess"].append(g["ess"])
    return {name: {"truth": {"value": float(truth[name]), "lift": float(truth[name] - base)},
                   "value": {e: summary(f["value"][e], truth[name], size) for e in ESTIMATORS},
                   "lift": {e: summary(f["lift"][e], truth[name] - base, size) for e in ESTIMATORS},
                   "ess": float(np.mean(f["ess"]))}
            for name, f in found.items()}


def ratio(num: np.ndarray, den: np.ndarray) -> dict:
    """mean(num) / mean(den) over the same requests, with a delta-method 95% interval."""
    r = float(num.mean() / den.mean())
    se = float(np.std(num - r * den, ddof=1) / np.sqrt(len(num)) / abs(den.mean()))
    return {"value": r, "low": r - Z95 * se, "high": r + Z95 * se}


def exploration_cost(bandit: Bandit, policy: np.ndarray, exploring: dict[float, np.ndarray]) -> dict:
    """The true value lost per request by exploring at each share (exact per request; the interval is over
    requests), also as a share of the policy's lift over the baseline."""
    own = bandit.value(policy)
    lift = own - bandit.value(bandit.targets[bandit.baseline])
    out = {}
    for share, t in exploring.items():
        lost = own - bandit.value(t)
        out[share] = {"per_request": Estimate.of_terms(lost).__dict__, "share_of_lift": ratio(lost, lift)}
    return out


def worse_policy(better: np.ndarray, fallback: np.ndarray, per_request_gap: np.ndarray, gap: float,
                 order: np.ndarray) -> tuple[np.ndarray, float]:
    """`better` with `fallback`'s choice on the first requests of `order` until the true value per request is
    `gap` lower: a deterministic policy that differs from `better` on part of the traffic (a mixture of the
    two would differ a little on every request, which no real policy does). Returns it and its true gap."""
    cum = np.cumsum(per_request_gap[order]) / len(order)  # not monotone: the fallback is better on some requests
    reached = cum >= gap
    if not reached.any():
        raise ValueError(f"the fallback is at most {cum.max():.3f} worse per request: it cannot be {gap:.3f} worse")
    m = int(reached.argmax()) + 1
    out = better.copy()
    out[order[:m]] = fallback[order[:m]]
    return out, float(cum[m - 1])


def decisions_needed(bandit: Bandit, logging: np.ndarray, a: np.ndarray, b: np.ndarray, logs: int, size: int,
                     seed: int) -> dict:
    """The logged decisions needed to tell a from b with a paired DR difference (two-sided 5% test, 80%
    power): n = ((z_0.975 + z_0.8) sd / delta)^2, sd that of the per-decision DR difference terms on logs
    of the logging policy, delta the true difference."""
    rng = np.random.default_rng(seed)
    n = len(logging)
    delta = float((bandit.value(a) - bandit.value(b)).mean())
    sds, diffs = [], []
    for _ in range(logs):
        idx = rng.integers(0, n, size)
        log = bandit.draw(rng, idx, logging)
        terms = log.dr_terms(a[idx], bandit.q[idx]) - log.dr_terms(b[idx], bandit.q[idx])
        sds.append(terms.std(ddof=1))
        diffs.append(terms.mean())
    sd = float(np.sqrt(np.mean(np.square(sds))))
    return {"delta": delta, "sd": sd, "n": float(((Z95 + Z80) * sd / delta) ** 2),
            "mean_estimate": float(np.mean(diffs))}


def power(bandit: Bandit, logging: np.ndarray, a: np.ndarray, b: np.ndarray, n: int, runs: int, seed: int) -> dict:
    """Direct check of decisions_needed: logs of n decisions, the share whose paired DR 95% interval lies above
    zero (a is the better policy), and the share wrongly below it."""
    rng = np.random.default_rng(seed)
    above = below = 0
    for _ in range(runs):
        idx = rng.integers(0, len(logging), n)
        d = dr_difference(bandit.draw(rng, idx, logging), a[idx], b[idx], bandit.q[idx])
        above += d.low > 0
        below += d.high < 0
    return {"n": n, "runs": runs, "power": above / runs, "wrong_sign": below / runs,
            "power_se": float(np.sqrt(above / runs * (1 - above / runs) / runs))}


# ----------------------------------------------------------------------------------------------------------
# A simulated world: the service's Policy replayed on its fresh population, valued with its truth.


def with_share(decisions: list, share: float) -> list:
    """The same decisions as made by the same policy exploring at `share`: the policy's own choice and the
    eligible offers do not depend on the share (retention.policy), only the probabilities do."""
    return [d if d.exploration is None else replace(d, exploration=replace(d.exploration, share=share))
            for d in decisions]


def truth_of(data_dir: Path, request_ids, offers: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True P(stay | offer), the simulator's eligibility and the price the simulator billed, row-aligned."""
    import pandas as pd

    from training.simulator.truth import TRUTH_FILE

    cols = ["request_id", "price"] + [f"p_{o}" for o in offers] + [f"eligible_{o}" for o in offers]
    truth = pd.read_parquet(data_dir / TRUTH_FILE, columns=cols).set_index("request_id").loc[list(request_ids)]
    return (truth[[f"p_{o}" for o in offers]].to_numpy(float), truth[[f"eligible_{o}" for o in offers]].to_numpy(bool),
            truth["price"].to_numpy(float))


def ungated_target(model, log, catalog, config, progress=None) -> tuple[np.ndarray, list]:
    """A model version's own choices (the policy gate ignored, no exploration), as the service's Policy makes
    them: for a version whose gate hands the decision to the rules (training.offpolicy serves it gated)."""
    from retention.features import FeatureSpec
    from retention.policy import ModelScorer, Policy
    from training.offpolicy import REPLAY_TIME_BUDGET_MS, replayed_requests, target_of

    cfg = replace(config, time_budget_ms=REPLAY_TIME_BUDGET_MS, exploration_share=0.0)
    policy = Policy(catalog, cfg, ModelScorer.from_estimator(model.model, model.meta, catalog, ignore_gate=True))
    spec = FeatureSpec.from_dict(model.meta["feature_spec"])
    requests = replayed_requests(log.rows_for(spec), spec, log.past)
    if progress:
        requests = progress(requests, total=len(log.rows), desc="replay v2 (ungated)", unit="request")
    try:
        decisions = [policy.decide(r, s, now, history=h) for r, s, now, h in requests]
    finally:
        policy.close()
    return target_of(decisions, log.flows.offers), decisions


def world_bandit(name: str, catalog, base_policy, progress=None) -> tuple[Bandit, dict, dict]:
    """The world's pool of requests as a Bandit (logging = model v1 at the default share), the targets of
    v1 at every share of SHARES, and what the run should say about them."""
    from retention.features import FeatureSpec
    from training.offpolicy import Candidate, candidate_target, load_model, read_log, reward_model, target_of
    from training.simulator.worlds import WORLDS

    world = WORLDS[name]
    config = replace(base_policy, horizon_months=world.horizon_months, exploration_share=SHARE)
    fresh, models = WORLDS_DIR / name / "fresh", WORLDS_DIR / name / "models"
    v2_models = WORLDS_DIR / PAIRS[name] / "models"
    for need in (fresh / "dataset.json", models, v2_models):
        if not need.exists():
            sys.exit(f"{need} is missing: run `python -m bench.policy --worlds {name},{PAIRS[name]}` first (it "
                     "simulates the worlds and trains their models as `make bench-policy` does)")
    v1, v2 = load_model(models, "latest"), load_model(v2_models, "latest")
    log = read_log(fresh, catalog, config, FeatureSpec.from_dict(v1.meta["feature_spec"]))
    f = log.flows
    k = len(f.offers)
    logging, decisions = candidate_target(Candidate("v1@0.05", "model", ref="latest", exploration=SHARE), log,
                                          catalog, config, v1, progress)
    shares = {s: target_of(with_share(decisions, s), f.offers) for s in (0.0, *SHARES)}
    assert np.allclose(shares[SHARE], logging)
    p_stay, eligible, billed = truth_of(fresh, log.rows["request_id"], f.offers)
    # An offer the simulated billing cannot carry out changes nothing (training.policy_eval): the customer
    # stays with no offer's probability and pays no offer's revenue.
    p_stay = np.where(eligible, p_stay, p_stay[:, [f.none]])
    revenue = np.where(eligible, f.revenue, f.revenue[:, [f.none]])
    q = reward_model(v1, log, catalog)

    gate = v2.meta["models"]["offer_response"]["gate"].get("verdict")
    if gate == "model":
        v2_target, _ = candidate_target(Candidate("v2", "model", ref="latest", exploration=0.0), log, catalog,
                                        config, v2, progress)
        v2_label = "model v2"
    else:
        v2_target, _ = ungated_target(v2, log, catalog, config, progress)
        v2_label = "model v2 (ungated)"
    mu = p_stay * revenue
    fixed = {o: one_hot(f.fixed(j), k) for j, o in enumerate(f.offers) if o != "none"}
    best_fixed = max(fixed, key=lambda o: (fixed[o] * mu).sum())
    targets = {"none": one_hot(np.full(len(f), f.none), k), "rules": one_hot(f.rules, k),
               f"fixed:{best_fixed}": fixed[best_fixed], "model v1": shares[0.0], "model v1@0.05": logging,
               v2_label: v2_target}
    bandit = Bandit(p_stay, revenue, q, logging, targets)
    own_choice = shares[0.0].argmax(axis=1)
    about = {
        "world": name, "horizon_months": world.horizon_months, "pool": len(f), "offers": list(f.offers),
        "v1": v1.version, "v2": v2.version, "v2_world": PAIRS[name], "v2_gate": gate, "v2_label": v2_label,
        "v1_gate": v1.meta["models"]["offer_response"]["gate"].get("verdict"),
        "reward_model": v1.version, "best_fixed": best_fixed,
        "eligible_offers": {"mean": float(np.mean([len(d.exploration.eligible) if d.exploration else 1
                                                   for d in decisions])),
                            "max": int(max(len(d.exploration.eligible) if d.exploration else 1 for d in decisions))},
        "truth_ineligible_choices": {c: int((~eligible[np.arange(len(f)), t.argmax(axis=1)]).sum())
                                     for c, t in targets.items() if c != "model v1@0.05"},
        "outdated_price": int((np.abs(f.rows["price"].to_numpy(float) - billed) > 1e-6).sum()),
        # By the model's own estimates, what the service logs as exploration's expected cost.
        "logged_expected_cost": float(np.mean([(d.exploration.expected_cost or 0.0) if d.exploration else 0.0
                                               for d in decisions])),
        "agreement_with_v1": {c: float((t.argmax(axis=1) == own_choice).mean()) for c, t in targets.items()},
        "offer_rate": {c: float(1 - t[:, f.none].mean()) for c, t in targets.items()},
    }
    return bandit, shares, about


def run_world(name: str, catalog, base_policy, logs: int, size: int, seed: int, progress=None) -> dict:
    t0 = time.perf_counter()
    bandit, shares, about = world_bandit(name, catalog, base_policy, progress)
    result = analyse(bandit, shares, about, logs, size, seed)
    result["seconds"]["replay"] = round(time.perf_counter() - t0 - sum(result["seconds"].values()), 1)
    return result


def analyse(bandit: Bandit, shares: dict[float, np.ndarray], about: dict, logs: int, size: int, seed: int) -> dict:
    """Accuracy of the estimators, exploration's cost and the decisions needed, on a world's Bandit."""
    t0 = time.perf_counter()
    resampled = accuracy(bandit, logs, size, seed)
    fixed = accuracy(bandit, logs, size, seed + 1, resample=False)
    accuracy_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    cost = exploration_cost(bandit, shares[0.0], {s: shares[s] for s in SHARES})
    cost = {str(s): c for s, c in cost.items()}
    for s in SHARES:  # the logged expected cost is linear in the share
        cost[str(s)]["logged_expected_cost"] = about["logged_expected_cost"] * s / SHARE
    v1, rules = shares[0.0], bandit.targets["rules"]
    v1_value = bandit.value(v1)
    gap_to_rules = v1_value - bandit.value(rules)
    order = np.random.default_rng(seed + 2).permutation(len(v1))
    v1_mean, v1_lift = float(v1_value.mean()), float((v1_value - bandit.value(bandit.targets["none"])).mean())
    pairs = {}
    for what, gap in (("5% of the value", EFFECT * v1_mean), ("5% of the lift", EFFECT * v1_lift)):
        worse, true_gap = worse_policy(v1, rules, gap_to_rules, gap, order)
        pairs[what] = (worse, {"gap": true_gap, "requests_differing": float((worse != v1).any(axis=1).mean())})
    pairs["the rules"] = (rules, {"gap": float(gap_to_rules.mean()),
                                  "requests_differing": float((rules != v1).any(axis=1).mean())})
    needed = {}
    for s in SHARES:
        needed[str(s)] = {what: {**info, **decisions_needed(bandit, shares[s], v1, worse, logs, size, seed + 3)}
                          for what, (worse, info) in pairs.items()}
    # The formula checked directly at the default share, on the harder of the two 5% differences.
    check = needed[str(SHARE)]["5% of the lift"]
    verified = power(bandit, shares[SHARE], v1, pairs["5% of the lift"][0], int(np.ceil(check["n"])),
                     POWER_RUNS, seed + 4)
    power_s = time.perf_counter() - t0
    return {**about, "logs": logs, "log_size": size, "seed": seed,
            "candidates": {c: {**r, "fixed_requests": fixed[c]} for c, r in resampled.items()},
            "v1_value": v1_mean, "v1_lift": v1_lift, "exploration_cost": cost, "decisions_needed": needed,
            "power_check": {"share": SHARE, "pair": "5% of the lift", **verified},
            "seconds": {"accuracy": round(accuracy_s, 1), "power": round(power_s, 1)}}


# ----------------------------------------------------------------------------------------------------------
# Output


def checks(r: dict) -> list[tuple[str, bool]]:
    """The issue's targets per candidate: DR and SNIPS within +-10% of the truth in >= 90% of the logs, and
    their 95% intervals covering it in >= 90%, on the absolute value and on the lift."""
    out = []
    for c, x in r["candidates"].items():
        for what in ("value", "lift"):
            if what == "lift" and c == "none":
                continue
            for e in ("snips", "dr"):
                s = x[what][e]
                ok = (s["within_10"] or 0) >= COVERAGE_TARGET and s["coverage"] >= COVERAGE_TARGET
                out.append((f"{r['world']}: {c}, {e.upper()} on the {what}: within 10% in "
                            f"{s['within_10'] if s['within_10'] is None else round(s['within_10'] * 100)}% of logs, "
                            f"covered in {s['coverage'] * 100:.0f}%", ok))
    return out


def targets_table(r: dict) -> str:
    """The issue's target per candidate, estimator and scale: ok, or MISS with what was measured."""
    def cell(s: dict) -> str:
        ok = (s["within_10"] or 0) >= COVERAGE_TARGET and s["coverage"] >= COVERAGE_TARGET
        return "ok" if ok else f"MISS ({_pct(s['within_10'])} within, {_pct(s['coverage'])} covered)"

    lines = ["| candidate | DR, value | SNIPS, value | DR, lift | SNIPS, lift |", "|---|---|---|---|---|"]
    for c, x in r["candidates"].items():
        lift = ("n/a", "n/a") if c == "none" else (cell(x["lift"]["dr"]), cell(x["lift"]["snips"]))
        lines.append(f"| {c} | {cell(x['value']['dr'])} | {cell(x['value']['snips'])} | {lift[0]} | {lift[1]} |")
    return "\n".join(lines)


def _pct(x) -> str:
    return "n/a" if x is None else f"{x * 100:.0f}%"


def _count(x) -> str:
    return "n/a" if x is None else f"{x:,.0f}" if x < 1e7 else f"{x:.1e}"


def accuracy_table(r: dict, what: str) -> str:
    lines = [f"| candidate | true {what} | ESS | " + " | ".join(
        f"{e.upper()} mean (bias +- its MC error) | {e.upper()} within 10% | {e.upper()} coverage" for e in ("dr", "snips", "ips"))
        + " | coverage, requests held fixed: DR / SNIPS | requests for DR within 10% in 90% of logs |",
        "|---|---|---|" + "---|" * 9 + "---|---|"]
    for c, x in r["candidates"].items():
        if what == "lift" and c == "none":
            continue
        cells = []
        for e in ("dr", "snips", "ips"):
            s = x[what][e]
            rel = "" if s["relative_bias"] is None else f", {s['relative_bias'] * 100:+.1f}%"
            cells.append(f"{s['mean']:.2f} ({s['bias']:+.2f} +- {s['bias_se']:.2f}{rel}) | {_pct(s['within_10'])} | "
                         f"{_pct(s['coverage'])}")
        fx = x["fixed_requests"][what]
        lines.append(f"| {c} | {x['truth'][what]:.2f} | {x['ess']:,.0f} | " + " | ".join(cells)
                     + f" | {_pct(fx['dr']['coverage'])} / {_pct(fx['snips']['coverage'])} | "
                     f"{_count(x[what]['dr']['requests_for_10pct'])} |")
    return "\n".join(lines)


def cost_table(r: dict) -> str:
    lines = ["| exploration share | true value lost per request (95% CI) | as a share of v1's lift (95% CI) | "
             "the service's logged expected cost (model's estimate) |", "|---|---|---|---|"]
    for s, c in r["exploration_cost"].items():
        p, sh = c["per_request"], c["share_of_lift"]
        lines.append(f"| {s} | {p['value']:.3f} ({p['low']:.3f} to {p['high']:.3f}) | {sh['value'] * 100:.2f}% "
                     f"({sh['low'] * 100:.2f}% to {sh['high'] * 100:.2f}%) | {c['logged_expected_cost']:.3f} |")
    return "\n".join(lines)


def needed_table(r: dict) -> str:
    pairs = list(next(iter(r["decisions_needed"].values())))
    lines = ["| exploration share | " + " | ".join(f"v1 vs {p}: sd / delta / **n**" for p in pairs) + " |",
             "|---|" + "---|" * len(pairs)]
    for s, per in r["decisions_needed"].items():
        lines.append(f"| {s} | " + " | ".join(f"{x['sd']:.1f} / {x['delta']:.3f} / **{x['n']:,.0f}**"
                                               for x in per.values()) + " |")
    return "\n".join(lines)


def world_text(r: dict) -> str:
    p = r["power_check"]
    pairs = r["decisions_needed"][str(SHARE)]
    return "\n".join([
        f"### {r['world']} ({r['horizon_months']}-month horizon)",
        "",
        f"Pool: {r['pool']:,} labelled cancel requests of the fresh population; {r['logs']} logs of "
        f"{r['log_size']:,} requests each, drawn with replacement from the pool (truth: the pool's mean). "
        f"Logging policy: model v1 `{r['v1']}` (gate: {r['v1_gate']}) at share {SHARE}; "
        f"{r['eligible_offers']['mean']:.1f} eligible offers on average (at most {r['eligible_offers']['max']}), "
        f"so an offer other than the policy's choice has propensity about {SHARE}/{r['eligible_offers']['mean']:.1f} "
        f"= {SHARE / r['eligible_offers']['mean']:.4f}. Model v2: `{r['v2']}` from {r['v2_world']} "
        f"(gate: {r['v2_gate']}{'; its own choices, the gate ignored' if 'ungated' in r['v2_label'] else ''}). "
        f"DR reward model: v1's expected net revenue per offer. Best fixed offer by the truth: {r['best_fixed']}.",
        "",
        "Agreement with v1's own choice: " + ", ".join(f"{c} {a * 100:.0f}%" for c, a in r["agreement_with_v1"].items()
                                                       if c != "model v1") + ".",
        "",
        "**Absolute value** (net revenue per request):",
        "",
        accuracy_table(r, "value"),
        "",
        "**Lift over no offer** (value - value of none, estimated paired on the same logs):",
        "",
        accuracy_table(r, "lift"),
        "",
        f"**Exploration cost** (v1 = {r['v1_value']:.2f} per request, lift over no offer {r['v1_lift']:.2f}):",
        "",
        cost_table(r),
        "",
        "**Logged decisions needed** to tell v1 from a policy that is worse by delta (paired DR difference, two-"
        "sided 5% test, 80% power; the 5% policies are v1 with the rules' choice on a random part of the "
        "requests: " + ", ".join(f"{w}: {x['requests_differing'] * 100:.0f}% of requests differ"
                                 for w, x in pairs.items()) + "):",
        "",
        needed_table(r),
        "",
        f"Direct check at share {p['share']}, {p['pair']}: {p['runs']} logs of n = {p['n']:,} decisions; the DR "
        f"interval of the difference lay above zero in **{p['power'] * 100:.1f}%** (+-{p['power_se'] * 100:.1f}) "
        f"of them (the formula's 80%), below zero in {p['wrong_sign'] * 100:.1f}%.",
        "",
        "Run time: " + ", ".join(f"{k} {v:.0f} s" for k, v in r["seconds"].items()) + ". Candidates' choices that "
        "the simulated billing could not carry out (valued as no offer): "
        + ", ".join(f"{c} {n}" for c, n in r["truth_ineligible_choices"].items()) + f"; requests whose features "
        f"carry an outdated price (after a downgrade): {r['outdated_price']:,}.",
    ])


def main() -> None:
    from tqdm import tqdm

    from retention.offers import load_catalog
    from retention.policy import load_policy

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worlds", default=",".join(PAIRS), help=f"comma-separated, of {', '.join(PAIRS)}")
    ap.add_argument("--logs", type=int, default=LOGS, help="independent logs per world")
    ap.add_argument("--log-size", type=int, default=LOG_SIZE, help="requests per log")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--update-docs", action="store_true", help=f"rewrite the results in {DOCS.name}")
    args = ap.parse_args()
    names = [w.strip() for w in args.worlds.split(",") if w.strip()]
    unknown = [w for w in names if w not in PAIRS]
    if unknown:
        sys.exit(f"unknown worlds {unknown}; this benchmark knows {', '.join(PAIRS)} (and which model is v2 for each)")
    catalog = load_catalog()
    policy = load_policy(catalog)

    def progress(it, **kw):
        return tqdm(it, file=sys.stderr, mininterval=5, **kw)

    t0 = time.perf_counter()
    results = []
    for name in names:
        print(f"== {name}", flush=True)
        r = run_world(name, catalog, policy, args.logs, args.log_size, args.seed, progress)
        results.append(r)
        print(world_text(r), flush=True)
        for check, ok in checks(r):
            print(f"   {'ok  ' if ok else 'MISS'} {check}", flush=True)
    total = time.perf_counter() - t0
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "ope.json").write_text(json.dumps({"seconds": round(total, 1), "worlds": results}, indent=2) + "\n")
    print(f"wrote {OUT / 'ope.json'} ({total:.0f} s)")
    if args.update_docs:
        import subprocess
        from datetime import UTC, datetime

        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=False).stdout.strip() or "unknown"
        text = "\n\n".join(world_text(r) + "\n\nThe issue's targets (DR and SNIPS within 10% of the truth in >= 90% "
                           "of the logs, 95% intervals covering it in >= 90%):\n\n" + targets_table(r)
                           for r in results)
        body = (f"{MARK[0]}\nRun of {datetime.now(UTC):%Y-%m-%d} on commit {commit}: `python -m bench.ope "
                f"{' '.join(sys.argv[1:])}`, {total:.0f} s on this 2-core machine.\n\n{text}\n{MARK[1]}")
        doc = DOCS.read_text()
        start, end = MARK
        DOCS.write_text(re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: body, doc, flags=re.S))
        print(f"updated {DOCS}")


if __name__ == "__main__":
    main()
