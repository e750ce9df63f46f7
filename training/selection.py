"""Which offer-response learner serves, chosen by measurement on time-ordered validation, and whether its
policy may serve at all (the policy gate).

Selection. The training period (everything before the held-out last part) is cut into forward-chaining
folds: each validation block is scored by learners fitted only on flows whose outcome was known before the
block began. On every validation flow, each candidate's policy (the allowed offer of highest expected net
revenue, or none) is valued off-policy with the logged propensities: doubly robust, against giving nothing,
with the candidates' average as the reward model, so the candidates are compared on the same flows and the
same reward model (a difference between two of them comes only from the flows where they choose
differently). A few thousand flows rarely tell learners apart, so the default learner (the blend of boosting
and the logistic model, never far from the best on any world we measured) is kept unless another is better by
more than two standard errors of the paired difference; without propensities, the one of lowest log loss.
Calibration (none, sigmoid, isotonic) is then chosen on the winner's out-of-fold predictions by log loss, among the maps that keep offers apart: isotonic's flat steps give different offers the same
probability, which throws away the ranking the decision needs, so it is measured and reported but not
served.

The gate. The chosen learner, fitted on the training period only, decides every held-out flow; that policy,
the fallback rules, each fixed offer and no offer at all are valued on those flows (IPS, SNIPS and DR with
95% intervals; DR with the model's own predictions as reward model, fitted without the held-out flows).
The model serves only if its DR estimate beats the rules' on the same flows; otherwise the rules decide,
with reason code `model_not_better_than_rules`. A few hundred held-out flows give an interval of several
units per flow, so the verdict pools them with the selection's validation blocks, where the chosen learner
(fitted only on flows before each block, as in the gate) met the rules on the same terms: about three times
the flows, every one of them unseen by the model that decided it. Before the verdict, the offers the model
may choose are pruned on the validation blocks alone (allowed_offers: an offer is dropped where dropping it
clearly paid). The held-out flows judge the pruned policy afresh; the validation blocks' share of the
pooled evidence is a little optimistic after pruning, which is why pruning needs a clear gain. Without
logged propensities nobody can tell, and the rules decide too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import log_loss

from retention.features import FeatureSpec
from retention.links import logit
from retention.offers import Catalog
from retention.ope import Estimate, dr_difference, evaluate, one_hot
from training import learners
from training.flows import Flows, offer_probabilities

VALIDATION_BLOCKS = (0.55, 0.70, 0.85, 1.0)  # quantiles of the training period's flows: three folds
LABEL_GAP_DAYS = 30  # a flow's label (still subscribed at day 30) is known 30 days after it
MAX_SELECTION_ROWS = 15_000  # the most recent flows a candidate is fitted on during selection (bounds time)
CALIBRATIONS = ("none", "sigmoid", "isotonic")
SERVABLE_CALIBRATIONS = ("none", "sigmoid")  # isotonic ties offers (see the module docstring)
DEFAULT_FAMILY = "blend"
DROP_OFFER_SE = 1.0  # allowed_offers: how clearly dropping an offer must pay
# A difference this many standard errors large is found (95% interval above zero) four times in five: the
# gate's evidence records the smallest difference it could reliably detect, 2.8 SE.
DETECTABLE_SE = 1.96 + 0.84
CHALLENGER_SE = 2.0  # _pick: how clearly another learner must beat the default (six challengers: 2 SE, not 1)


@dataclass(frozen=True)
class Candidate:
    name: str
    family: str  # boosting, logistic, ipw, blend
    make: Callable[[], object]
    weighted: bool = False  # fitted with stabilised inverse-propensity weights

    def weights(self, propensity: np.ndarray) -> np.ndarray | None:
        """Stabilised inverse-propensity weights for a weighted candidate, else None."""
        return (np.nanmean(propensity) / propensity) if self.weighted else None

    def fit(self, rows: pd.DataFrame, propensity: np.ndarray):
        return learners.fit(self.make(), rows, rows["label"].to_numpy(), self.weights(propensity))


def candidates(spec: FeatureSpec, catalog: Catalog, seed: int, columns: list[str],
               families: tuple[str, ...] | None = None, with_propensities: bool = True) -> list[Candidate]:
    """The learners compared. `columns`: the customer features that carry information in this data set."""
    def boost(**kw):
        return lambda: learners.boosting(spec, seed, columns=columns, **kw)

    def logit(C):
        return lambda: learners.logistic(spec, catalog, C=C, columns=columns)

    out = [
        Candidate("boosting (7 leaves, min leaf 100)", "boosting", boost()),
        Candidate("boosting (7 leaves, min leaf 20)", "boosting", boost(min_samples_leaf=20, max_iter=300)),
        Candidate("boosting (15 leaves, early stopping)", "boosting",
                  boost(max_leaf_nodes=15, min_samples_leaf=40, max_iter=1000, early_stopping=True)),
        Candidate("logistic (C 0.3)", "logistic", logit(0.3)),
        Candidate("logistic (C 1)", "logistic", logit(1.0)),
        Candidate("logistic, inverse-propensity weighted (C 0.3)", "ipw", logit(0.3), weighted=True),
        Candidate("blend of boosting (min leaf 20) and logistic (C 0.3)", "blend",
                  lambda: learners.Blend([learners.boosting(spec, seed, min_samples_leaf=20, max_iter=300,
                                                            columns=columns),
                                          learners.logistic(spec, catalog, C=0.3, columns=columns)])),
    ]
    if not with_propensities:
        out = [c for c in out if not c.weighted]
    if families:
        out = [c for c in out if c.family in families]
    if not out:
        raise ValueError(f"no learner of the families {list(families or ())}; use some of "
                         "boosting, logistic, ipw, blend")
    return out


@dataclass(frozen=True)
class CandidateScore:
    name: str
    family: str
    dr_value: Estimate  # per flow, against no offer, over the validation blocks
    log_loss: float
    seconds: float


@dataclass(frozen=True)
class Selection:
    chosen: Candidate
    scores: list[CandidateScore]
    by: str  # "doubly robust value" or "log loss"
    calibration: str
    calibration_log_loss: dict[str, float]
    validation_flows: int
    # Per validation block: (its flows, the chosen learner's expected values, the reward model): the gate's
    # earlier evidence (training.selection.gate).
    evidence: tuple[tuple[Flows, np.ndarray, np.ndarray], ...] = ()

    def as_dict(self) -> dict:
        return {
            "chosen": self.chosen.name, "family": self.chosen.family, "by": self.by,
            "validation_flows": self.validation_flows, "calibration": self.calibration,
            "chosen_minus_rules": (Estimate.of_terms(_pooled_terms(self.evidence, _greedy())
                                                     - _pooled_terms(self.evidence, _rules)).__dict__
                                   if self.evidence else None),
            "calibration_log_loss": self.calibration_log_loss,
            "candidates": [{"name": s.name, "family": s.family, "dr_value": s.dr_value.__dict__,
                            "log_loss": s.log_loss, "seconds": round(s.seconds, 1)} for s in self.scores],
        }


def select(flows: Flows, catalog: Catalog, pool: list[Candidate], progress=None) -> Selection:
    """Compare `pool` on forward-chaining folds of `flows` (the training period, in time order)."""
    step = progress or (lambda _msg: None)
    as_of = flows.rows["as_of"]
    bounds = [as_of.quantile(q) for q in VALIDATION_BLOCKS[:-1]] + [as_of.max() + pd.Timedelta(seconds=1)]
    use_dr = flows.has_propensities
    n_val = 0
    dr_terms = {c.name: [] for c in pool}
    blocks = []
    losses = {c.name: [] for c in pool}
    seconds = dict.fromkeys((c.name for c in pool), 0.0)
    oof = {c.name: [] for c in pool}
    labels = []
    for k, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        fit_mask = ((as_of + pd.Timedelta(days=LABEL_GAP_DAYS)) <= lo).to_numpy()
        fit_idx = np.flatnonzero(fit_mask)[-MAX_SELECTION_ROWS:]
        val = flows.subset(((as_of >= lo) & (as_of < hi)).to_numpy())
        train = flows.subset(np.isin(np.arange(len(flows)), fit_idx))
        if len(val) == 0 or len(train) < 100 or train.rows["label"].nunique() < 2:
            continue
        n_val += len(val)
        values, logged_p = {}, {}
        for c in pool:
            step(f"selection fold {k + 1}: {c.name}")
            t0 = time.perf_counter()
            model = c.fit(train.rows, train.propensity)
            p = offer_probabilities(model, val.rows, catalog)
            seconds[c.name] += time.perf_counter() - t0
            values[c.name] = val.values(p)
            logged_p[c.name] = p[np.arange(len(val)), val.logged]
            oof[c.name].append(logged_p[c.name])
        labels.append(val.rows["label"].to_numpy())
        y = labels[-1]
        q = np.mean(list(values.values()), axis=0)
        blocks.append((val, values, q))
        if use_dr:
            log, k_offers = val.log(), len(flows.offers)
            nothing = one_hot(np.full(len(val), val.none), k_offers)
        for c in pool:
            losses[c.name].append(log_loss(y, np.clip(logged_p[c.name], 1e-9, 1 - 1e-9), labels=[0, 1]) * len(y))
            if use_dr:
                chosen = one_hot(val.greedy(values[c.name]), k_offers)
                dr_terms[c.name].append(log.dr_terms(chosen, q) - log.dr_terms(nothing, q))
    if n_val == 0:
        raise ValueError("too few labelled flows before the validation blocks to compare learners")
    scores = [CandidateScore(c.name, c.family,
                             Estimate.of_terms(np.concatenate(dr_terms[c.name])) if use_dr
                             else Estimate(float("nan"), float("nan"), float("nan"), float("nan")),
                             float(np.sum(losses[c.name]) / n_val), seconds[c.name]) for c in pool]
    chosen, by = _pick(pool, scores, {c: np.concatenate(t) for c, t in dr_terms.items() if t} if use_dr else None)
    y = np.concatenate(labels)
    calibration, cal_loss = _choose_calibration(np.concatenate(oof[chosen.name]), y,
                                                [len(part) for part in labels])
    evidence = tuple((val, values[chosen.name], q) for val, values, q in blocks) if use_dr else ()
    return Selection(chosen, scores, by, calibration, cal_loss, n_val, evidence)


def _pick(pool: list[Candidate], scores: list[CandidateScore], dr: dict[str, np.ndarray] | None
          ) -> tuple[Candidate, str]:
    """The default learner (the blend, robust across the worlds we measured), unless another is better by more
    than CHALLENGER_SE standard errors of the paired difference of their doubly robust values: a few thousand
    flows rarely tell learners apart, and with six challengers one of them beats the default by one standard
    error by chance alone more often than not. Without propensities: log loss."""
    default = next((c for c in pool if c.family == DEFAULT_FAMILY), pool[0])
    if dr is None:
        best = min(scores, key=lambda s: s.log_loss)
        return next(c for c in pool if c.name == best.name), "log loss (no logged propensities)"
    best = max(scores, key=lambda s: s.dr_value.value)
    if best.name == default.name:
        return default, "doubly robust value: the default learner scored highest"
    diff = Estimate.of_terms(dr[best.name] - dr[default.name])
    if diff.value > CHALLENGER_SE * diff.se:
        return (next(c for c in pool if c.name == best.name),
                f"doubly robust value: better than the default by {diff.value:.2f} per flow (SE {diff.se:.2f})")
    return default, (f"doubly robust value: {best.name} scored highest, but only {diff.value:.2f} per flow above the "
                     f"default (SE {diff.se:.2f}), so the default is kept")


def _choose_calibration(p: np.ndarray, y: np.ndarray, blocks: list[int]) -> tuple[str, dict[str, float]]:
    """Log loss of each calibration map fitted on the other validation blocks and applied to each block."""
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression

    edges = np.cumsum([0, *blocks])
    out = {m: 0.0 for m in CALIBRATIONS}
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        rest = np.r_[0:lo, hi:len(p)]
        if len(rest) < 50 or len(np.unique(y[rest])) < 2:
            rest = np.arange(len(p))  # a single block: calibrate in-sample (reported, rarely decisive)
        z = logit(p)
        sig = LogisticRegression(C=1e6, max_iter=1000).fit(z[rest, None], y[rest])
        iso = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(p[rest], y[rest])
        for method, q in (("none", p[lo:hi]), ("sigmoid", sig.predict_proba(z[lo:hi, None])[:, 1]),
                          ("isotonic", iso.predict(p[lo:hi]))):
            out[method] += log_loss(y[lo:hi], np.clip(q, 1e-9, 1 - 1e-9), labels=[0, 1]) * (hi - lo)
    out = {m: v / len(p) for m, v in out.items()}
    return min(SERVABLE_CALIBRATIONS, key=out.get), out


def allowed_offers(parts: list[tuple[Flows, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, list[dict]]:
    """The offers the model's policy may choose: backward elimination on logged flows. Starting from every
    offer, drop the one whose removal raises the policy's doubly robust value most, while some removal
    raises it. `parts`: (flows, the model's expected values, the reward model) of flows unseen by the model
    that valued them. Where no offer helps anyone, this leaves none (and maybe follow-ups), instead of
    offers chosen by noise in the model's small differences. An offer is dropped only where dropping it
    gains more than DROP_OFFER_SE standard errors: a few thousand flows are noisy, and dropping every offer
    that merely failed to show a gain cost up to 0.2 of the oracle's lift on worlds where offers do help."""
    offers = parts[0][0].offers
    allowed = np.ones(len(offers), dtype=bool)

    def terms(mask):
        return _pooled_terms(parts, _greedy(mask))

    dropped = []
    current = terms(allowed)
    while True:
        trials = {j: terms(np.where(np.arange(len(offers)) == j, False, allowed))
                  for j in np.flatnonzero(allowed) if offers[j] != "none"}
        gains = {j: Estimate.of_terms(t - current) for j, t in trials.items()}
        if not gains:
            break
        j = max(gains, key=lambda i: gains[i].value)
        if gains[j].value <= DROP_OFFER_SE * gains[j].se:
            break
        allowed[j] = False
        current = trials[j]
        dropped.append({"offer": offers[j], "gain": gains[j].__dict__})
    return allowed, dropped


def _pooled_terms(parts, choose: Callable[[Flows, np.ndarray], np.ndarray]) -> np.ndarray:
    """The per-flow DR terms of a policy over `parts` ((flows, the model's expected values, the reward
    model) each); `choose(flows, values)` gives the policy's offer index per flow."""
    if not parts:
        return np.zeros(0)
    return np.concatenate([f.log().dr_terms(one_hot(choose(f, v), len(f.offers)), q) for f, v, q in parts])


def _greedy(allowed: np.ndarray | None = None):
    return lambda f, v: f.greedy(v, allowed)


def _rules(f: Flows, _values: np.ndarray) -> np.ndarray:
    return f.rules


def gate(train: Flows, holdout: Flows, model, catalog: Catalog, evidence: tuple = ()) -> dict:
    """The held-out policy comparison (see the module docstring) for `model`, fitted on `train` only.
    `evidence`: the selection's validation blocks (Selection.evidence): they choose the offers the model
    may choose (allowed_offers), and are pooled with the held-out flows for the verdict."""
    p = offer_probabilities(model, holdout.rows, catalog)
    values = holdout.values(p)
    n, k = len(holdout), len(holdout.offers)
    # Chosen on the validation blocks only, so the held-out flows judge the restricted policy afresh.
    allowed, dropped = (allowed_offers(list(evidence)) if evidence and holdout.has_propensities and n
                        else (np.ones(k, dtype=bool), []))
    restricted = not allowed.all()
    # the validation blocks' difference between the model's policy (with the offers it keeps) and the rules
    earlier = _pooled_terms(evidence, _greedy(allowed)) - _pooled_terms(evidence, _rules)
    choices = {"model": holdout.greedy(values, allowed), "rules": holdout.rules, "none": np.full(n, holdout.none)}
    for j, offer in enumerate(holdout.offers):
        if offer != "none":
            choices[f"always:{offer}"] = holdout.fixed(j)
    out = {"holdout_flows": n, "policies": {}, "verdict": "rules", "reason_code": "model_not_better_than_rules",
           "offers_allowed": [o for o, a in zip(holdout.offers, allowed, strict=True) if a],
           "offers_dropped": dropped}
    if restricted:
        choices["model_every_offer"] = holdout.greedy(values)
    mix = {name: _mix(c, holdout.offers) for name, c in choices.items()}
    if not holdout.has_propensities or n == 0:
        out["why"] = "the held-out flows carry no logged propensities, so no policy can be valued off-policy"
        out["offer_mix"] = mix
        return out
    log = holdout.log()
    targets = {name: one_hot(c, k) for name, c in choices.items()}
    for name, target in targets.items():
        v = evaluate(log, target, values)
        out["policies"][name] = {"dr": v.dr.__dict__, "snips": v.snips.__dict__, "ips": v.ips.__dict__,
                                 "matched": v.matched, "ess": v.ess,
                                 "offer_rate": float((choices[name] != holdout.none).mean())}
    fixed = [name for name in targets if name.startswith("always:")]
    best_fixed = max(fixed, key=lambda name: out["policies"][name]["dr"]["value"]) if fixed else None
    diff = {"model_minus_rules": dr_difference(log, targets["model"], targets["rules"], values),
            "model_minus_none": dr_difference(log, targets["model"], targets["none"], values)}
    if best_fixed:
        diff["model_minus_best_fixed"] = dr_difference(log, targets["model"], targets[best_fixed], values)
    out["differences"] = {k2: v.__dict__ for k2, v in diff.items()}
    out["best_fixed"] = best_fixed
    out["by_reason"] = {
        reason: dr_difference(log.subset(m), targets["model"][m], targets["rules"][m], values[m]).__dict__
        for reason in sorted(set(holdout.rows["reason"]))
        if (m := (holdout.rows["reason"] == reason).to_numpy()).sum() >= 30}
    out["offer_mix"] = mix
    out["warnings"] = []
    if best_fixed:
        fixed_vs_rules = dr_difference(log, targets[best_fixed], targets["rules"], values)
        if fixed_vs_rules.low > 0:
            out["warnings"].append(
                f"{best_fixed} is estimated to beat the rules by {fixed_vs_rules.value:.2f} per flow (95% CI "
                f"{fixed_vs_rules.low:.2f} to {fixed_vs_rules.high:.2f}) on the held-out flows: the fallback rules "
                "of config/policy.toml may need revising")
    held_out = log.dr_terms(targets["model"], values) - log.dr_terms(targets["rules"], values)
    pooled = Estimate.of_terms(np.concatenate([earlier, held_out]))
    out["evidence"] = {"held_out": {"flows": n, **Estimate.of_terms(held_out).__dict__},
                       "validation_blocks": ({"flows": len(earlier), **Estimate.of_terms(earlier).__dict__}
                                             if len(earlier) else None),
                       "pooled": {"flows": n + len(earlier), **pooled.__dict__,
                                  "detectable": DETECTABLE_SE * pooled.se}}
    where = "the held-out flows and the validation blocks" if len(earlier) else "the held-out flows"
    if pooled.value > 0:
        out["verdict"], out["reason_code"] = "model", None
        out["why"] = (f"the model's policy is estimated to beat the rules by {pooled.value:.2f} per flow on {where} "
                      f"(doubly robust, 95% CI {pooled.low:.2f} to {pooled.high:.2f})")
    else:
        out["why"] = (f"the model's policy is not estimated to beat the rules on {where}: {pooled.value:.2f} per "
                      f"flow (doubly robust, 95% CI {pooled.low:.2f} to {pooled.high:.2f})")
        if pooled.high > 0:
            out["why"] += (f"; inconclusive: these flows reliably detect only differences of "
                           f"{DETECTABLE_SE * pooled.se:.2f} per flow or more, so the rules stay")
    if best_fixed:
        _fixed_fallback(out, best_fixed, holdout, values, allowed, evidence, where)
    return out


def _fixed_fallback(out: dict, best_fixed: str, holdout: Flows, values: np.ndarray, allowed: np.ndarray,
                    evidence: tuple, where: str) -> None:
    """Verdict "fixed" where the best fixed offer clearly beats the rules (the 95% interval of the difference
    above zero) and is estimated at least as good as the model's policy, on the same pooled flows as the
    verdict. Hand-written rules can be far from right for a business (on the latent-type worlds of
    docs/worlds.md they earned a fifth of what always offering a credit did), and then "otherwise the rules"
    would serve the worst of the simple policies."""
    j = holdout.offers.index(best_fixed.removeprefix("always:"))
    parts = [*evidence, (holdout, values, values)]  # the held-out flows' reward model is the model itself
    fixed = _pooled_terms(parts, lambda f, _v: f.fixed(j))
    rules, model = _pooled_terms(parts, _rules), _pooled_terms(parts, _greedy(allowed))
    over_rules, over_model = Estimate.of_terms(fixed - rules), Estimate.of_terms(fixed - model)
    out["evidence"]["fixed_minus_rules"] = over_rules.__dict__
    out["evidence"]["fixed_minus_model"] = over_model.__dict__
    if over_rules.low > 0 and over_model.value >= 0:
        offer = best_fixed.removeprefix("always:")
        out["verdict"], out["fixed_offer"], out["reason_code"] = "fixed", offer, "fixed_offer_better_than_rules"
        # The offer mix of what is served, as for the other verdicts (drift monitoring compares live with it).
        out["offer_mix"]["fixed_else_rules"] = _mix(np.where(holdout.eligible[:, j], j, holdout.rules),
                                                    holdout.offers)
        out["why"] = (f"always offering {offer} (where allowed) is estimated to beat the rules by "
                      f"{over_rules.value:.2f} per flow (95% CI {over_rules.low:.2f} to {over_rules.high:.2f}) and the "
                      f"model's policy by {over_model.value:.2f} on {where} (doubly robust): it is served, the rules "
                      "elsewhere")


def _mix(choice: np.ndarray, offers: tuple[str, ...]) -> dict[str, int]:
    counts = np.bincount(choice, minlength=len(offers))
    return {o: int(c) for o, c in zip(offers, counts, strict=True) if c}
