"""The policy gate (training.selection.gate): a model whose choices are worse than the rules' is not served;
one whose choices are better is. And what the service does with the verdict: the rules decide, with reason
code `model_not_better_than_rules`, while the model's prediction for the rules' choice is still reported."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin

from retention.artifacts import load_artifact
from retention.decision import CancelRequest
from retention.features import FEATURE_VERSION, discover_spec
from retention.offers import load_catalog
from retention.ope import one_hot
from retention.policy import ModelScorer, Policy, load_policy
from training import learners, selection
from training.dataset import open_dataset, resolve_window_end
from training.flows import build_flows
from training.train import SAVE_HORIZON_DAYS, response_rows, time_split

CATALOG = load_catalog()
# Without exploration: these tests check which offer the policy itself chooses (tests/test_exploration.py
# covers the checked-in 5%).
CONFIG = replace(load_policy(CATALOG), exploration_share=0.0)
NOW = datetime(2026, 6, 1, tzinfo=UTC)


class Inverted(ClassifierMixin, BaseEstimator):
    """A fitted model turned upside down: it rates the offers that save the fewest customers highest."""

    def __init__(self, inner):
        self.inner = inner

    def predict_proba(self, X):
        p = self.inner.predict_proba(X)[:, 1]
        return np.column_stack([p, 1.0 - p])


class Truth(ClassifierMixin, BaseEstimator):
    """The simulator's true P(stay | request, offer): a model known to choose better than the rules.

    The gate tests used the logistic model fitted below as "the better model", but on 1,675 held-out flows
    its advantage over the rules is within the noise (doubly robust +1.10 per flow, 95% CI -3.71 to 5.92,
    on the data of the 2026-11-25 catalog; -2.20, CI -7.23 to 2.83, on the same seed's data once the catalog
    gained the reward and referral offers), so those tests passed or failed with the realisation. The
    truth wins by a margin the gate can see whatever the seed."""

    def __init__(self, sim_dir):
        self.sim_dir = sim_dir

    def predict_proba(self, X):
        import pandas as pd

        t = pd.read_parquet(self.sim_dir / "_truth" / "requests.parquet").set_index("request_id")
        sub = t.loc[X["request_id"].to_numpy()]
        p = np.array([sub[f"p_{o}"].iloc[i] for i, o in enumerate(X["offer_id"].to_numpy())], dtype=float)
        return np.column_stack([1.0 - p, p])


def _with_gate(meta: dict, **gate) -> dict:
    """`meta` as if the policy gate had recorded `gate` (the artifact on disk is left as it is)."""
    offer = meta["models"]["offer_response"]
    return {**meta, "models": {**meta["models"], "offer_response": {**offer, "gate": {**offer["gate"], **gate}}}}


@pytest.fixture(scope="module")
def split(sim_dir):
    con = open_dataset(sim_dir)
    spec = discover_spec(con)
    rows = response_rows(con, CATALOG, spec, resolve_window_end(sim_dir, None))
    train_mask, test_mask, _ = time_split(rows["as_of"], 0.25, SAVE_HORIZON_DAYS)
    flows = build_flows(con, rows, CATALOG, CONFIG)
    train, holdout = flows.subset(train_mask), flows.subset(test_mask)
    model = learners.fit(learners.logistic(spec, CATALOG), train.rows, train.rows["label"].to_numpy())
    return train, holdout, model


def test_a_model_worse_than_the_rules_is_not_served(split):
    train, holdout, model = split
    gate = selection.gate(train, holdout, Inverted(model), CATALOG)
    assert gate["verdict"] == "rules" and gate["reason_code"] == "model_not_better_than_rules"
    worse = gate["differences"]["model_minus_rules"]
    assert worse["high"] < 0  # clearly worse, not a coin flip
    assert "not estimated to beat the rules" in gate["why"]


def test_a_model_better_than_the_rules_is_served_and_the_estimates_are_recorded(split, sim_dir):
    train, holdout, _ = split
    gate = selection.gate(train, holdout, Truth(sim_dir), CATALOG)
    assert gate["verdict"] == "model" and gate["reason_code"] is None
    assert gate["holdout_flows"] == len(holdout) > 1000
    # every policy valued three ways, with intervals; the fixed offers too
    assert {"model", "rules", "none"} <= set(gate["policies"]) and gate["best_fixed"].startswith("always:")
    for p in gate["policies"].values():
        for estimator in ("dr", "snips", "ips"):
            assert p[estimator]["low"] <= p[estimator]["value"] <= p[estimator]["high"]
    assert gate["policies"]["none"]["offer_rate"] == 0.0


def test_earlier_evidence_is_pooled_with_the_held_out_flows(split, sim_dir):
    train, holdout, model = split
    # validation blocks (twenty of them) where the model's choices were those of an upside-down model, and lost,
    # outweigh a held-out win
    bad = offer_probabilities_of(Inverted(model), holdout)
    gate = selection.gate(train, holdout, Truth(sim_dir), CATALOG, evidence=((holdout, bad, bad),) * 20)
    assert gate["evidence"]["held_out"]["value"] > 0 > gate["evidence"]["pooled"]["value"]
    assert gate["evidence"]["pooled"]["flows"] == 21 * len(holdout)
    # The model is not served. With the truth as the held-out flows' reward model a fixed offer is measured
    # precisely enough to clearly beat the rules, so what is served instead is that offer, elsewhere the rules.
    assert gate["verdict"] in ("rules", "fixed") and gate["reason_code"] is not None


def test_an_inconclusive_verdict_says_how_large_a_difference_its_flows_could_detect(split):
    train, holdout, model = split
    # The first held-out flows of a tiny data set, as few as it takes for the interval to span zero while
    # the estimate is still below it: the rules stay, and the verdict says it could not tell.
    for n in (40, 60, 80, 100, 150, 200, 300):
        gate = selection.gate(train, holdout.subset(np.arange(len(holdout)) < n), Inverted(model), CATALOG)
        pooled = gate["evidence"]["pooled"]
        if pooled["value"] <= 0 < pooled["high"]:
            break
    else:
        pytest.fail("no subset of the held-out flows gave an inconclusive estimate")
    assert pooled["detectable"] == pytest.approx(2.8 * pooled["se"])
    assert gate["verdict"] == "rules" and "inconclusive" in gate["why"]
    assert f"{pooled['detectable']:.2f} per flow" in gate["why"]
    clear = selection.gate(train, holdout, Inverted(model), CATALOG)
    assert clear["evidence"]["pooled"]["high"] < 0 and "inconclusive" not in clear["why"]


def test_the_service_lets_the_rules_decide_when_the_gate_said_so(trained):
    model, meta = load_artifact(trained, feature_version=FEATURE_VERSION)
    gated = _with_gate(meta, verdict="rules")
    request = CancelRequest("c-1", "temporary", "monthly", "web", 14.95, plan_id="plus_monthly")
    rules = Policy(CATALOG, CONFIG, None).decide(request, None, NOW)
    policy = Policy(CATALOG, CONFIG, ModelScorer.from_estimator(model, gated, CATALOG))
    try:
        d = policy.decide(request, None, NOW)
    finally:
        policy.close()
    assert d.offer.id == rules.offer.id
    assert "model_not_better_than_rules" in d.reason_codes
    assert d.model_version == meta["version"] and 0.0 < d.p_stay < 1.0  # still reported


def test_offers_that_do_not_pay_on_logged_flows_are_dropped(split):
    train, holdout, model = split
    bad = offer_probabilities_of(Inverted(model), holdout)
    allowed, dropped = selection.allowed_offers([(holdout, bad, bad)])
    assert dropped and not allowed.all() and allowed[holdout.none]
    k = len(holdout.offers)
    log = holdout.log()

    def value(mask):
        return log.dr_terms(one_hot(holdout.greedy(bad, mask), k), bad).mean()

    assert value(allowed) > value(None)  # what is left is worth more than choosing among every offer
    assert sorted(d["offer"] for d in dropped) == sorted(o for o, a in zip(holdout.offers, allowed, strict=True)
                                                         if not a)


def test_the_service_never_lets_the_model_choose_a_dropped_offer(trained):
    model, meta = load_artifact(trained, feature_version=FEATURE_VERSION)
    limited = _with_gate(meta, verdict="model", offers_allowed=["none", "followup"])
    policy = Policy(CATALOG, CONFIG, ModelScorer.from_estimator(model, limited, CATALOG))
    try:
        chosen = {policy.decide(CancelRequest(f"c-{reason}", reason, "monthly", "web", 14.95,
                                              plan_id="plus_monthly"), None, NOW).offer.id
                  for reason in ("temporary", "too_expensive", "content", "technical", "not_using", "other")}
    finally:
        policy.close()
    assert chosen <= {"none", "followup"}


def offer_probabilities_of(estimator, flows):
    from training.flows import offer_probabilities

    return flows.values(offer_probabilities(estimator, flows.rows, CATALOG))


def test_a_fixed_offer_clearly_better_than_bad_rules_and_the_model_is_served(split):
    train, holdout, model = split
    # rules that give everyone a 3-month pause where allowed: far worse than the best fixed offer
    pause = holdout.offers.index("pause_3m")
    bad_rules = replace(holdout, rules=holdout.fixed(pause))
    gate = selection.gate(train, bad_rules, Inverted(model), CATALOG)
    assert gate["verdict"] == "fixed" and gate["reason_code"] == "fixed_offer_better_than_rules"
    assert f"always:{gate['fixed_offer']}" == gate["best_fixed"]
    assert gate["evidence"]["fixed_minus_rules"]["low"] > 0 and gate["evidence"]["fixed_minus_model"]["value"] >= 0
    # the offer mix of what is served (the fixed offer where allowed, else the rules), for drift monitoring
    served, j = gate["offer_mix"]["fixed_else_rules"], holdout.offers.index(gate["fixed_offer"])
    assert sum(served.values()) == len(holdout) and served[gate["fixed_offer"]] == holdout.eligible[:, j].sum()
    # with the real rules (better than any fixed offer here) it is not
    assert selection.gate(train, holdout, Inverted(model), CATALOG)["verdict"] == "rules"


def test_the_service_gives_the_gates_fixed_offer_and_says_why(trained):
    model, meta = load_artifact(trained, feature_version=FEATURE_VERSION)
    fixed = _with_gate(meta, verdict="fixed", fixed_offer="credit_1")
    policy = Policy(CATALOG, CONFIG, ModelScorer.from_estimator(model, fixed, CATALOG))
    try:
        d = policy.decide(CancelRequest("c-1", "temporary", "monthly", "ios", 14.95, plan_id="plus_monthly"),
                          None, NOW)
    finally:
        policy.close()
    assert d.offer.id == "credit_1" and d.fallback is False
    assert {"model_not_better_than_rules", "fixed_offer_better_than_rules"} <= set(d.reason_codes)
    assert d.model_version == meta["version"] and 0.0 < d.p_stay < 1.0
