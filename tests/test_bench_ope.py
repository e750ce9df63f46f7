"""The OPE benchmark's core (bench/ope.py) on a small synthetic world whose truth is known exactly: the
estimates it reports centre on the true values, their intervals cover them about 95% of the time, a log
with wrong propensities is caught, and the decisions-needed formula gives about 80% power when checked."""

from __future__ import annotations

import numpy as np
import pytest

from bench.ope import Bandit, accuracy, decisions_needed, exploration_cost, power, worse_policy
from retention.ope import LoggedFlows, evaluate, one_hot

N, K, SHARE = 4000, 3, 0.2


def world(seed: int = 0, logging_share: float = SHARE) -> tuple[Bandit, np.ndarray]:
    """Three offers (0 = none); P(stay) varies by request; the logging policy explores around the choice of
    an imperfect model, which is also the DR reward model."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=N)
    p_stay = np.column_stack([0.3 + 0.2 * np.tanh(x), 0.45 + 0.1 * np.tanh(-x), np.full(N, 0.42)])
    revenue = np.column_stack([np.full(N, 60.0), np.full(N, 50.0), np.full(N, 55.0)]) * rng.uniform(0.5, 1.5, (N, 1))
    q = p_stay * revenue * rng.uniform(0.8, 1.2, (N, K))  # a reward model that is off by up to 20%
    own = one_hot(q.argmax(axis=1), K)
    logging = (1 - logging_share) * own + logging_share / K
    targets = {"none": one_hot(np.zeros(N, dtype=int), K), "always 1": one_hot(np.ones(N, dtype=int), K),
               "always 2": one_hot(np.full(N, 2), K), "own": own, "logging": logging}
    return Bandit(p_stay, revenue, q, logging, targets), own


def test_the_estimates_centre_on_the_exact_truth_and_their_intervals_cover_it():
    bandit, _ = world()
    r = accuracy(bandit, logs=100, size=2000, seed=1)
    for name, x in r.items():
        assert x["truth"]["value"] == pytest.approx(bandit.value(bandit.targets[name]).mean())
        for what in ("value", "lift") if name != "none" else ("value",):
            for e in ("snips", "dr"):
                s = x[what][e]
                # four standard errors of the mean over 100 logs
                assert abs(s["bias"]) < 4 * s["sd"] / 10 + 1e-9, (name, what, e, s)
                assert 0.85 <= s["coverage"] <= 1.0, (name, what, e, s)
                assert s["mean_se"] == pytest.approx(s["sd"], rel=0.3), (name, what, e, s)
    # the logging policy's own value needs no weights: within 10% in (almost) every log
    assert r["logging"]["value"]["dr"]["within_10"] >= 0.95


def test_a_log_with_wrong_propensities_is_caught():
    """The offers were drawn with 5% exploration but the log claims 20%: where the policy's choice was not
    the candidate's, the weights are four times too small, and the IPS intervals stop covering the truth.
    DR is doubly robust: with a fair reward model it still covers, with a bad one it fails too."""
    bandit, own = world()
    claimed = bandit.logging
    actual = (1 - 0.05) * own + 0.05 / K
    wrong = Bandit(bandit.p_stay, bandit.revenue, bandit.q, actual, bandit.targets)
    truth = bandit.value(bandit.targets["always 2"]).mean()
    rng = np.random.default_rng(2)
    covered = {"ips": 0, "dr": 0, "dr with a bad reward model": 0}
    for _ in range(50):
        idx = rng.integers(0, N, 2000)
        log = wrong.draw(rng, idx)
        log = LoggedFlows(log.actions, claimed[idx][np.arange(len(idx)), log.actions], log.rewards)
        target = bandit.targets["always 2"][idx]
        found = {"ips": evaluate(log, target, bandit.q[idx]).ips, "dr": evaluate(log, target, bandit.q[idx]).dr,
                 "dr with a bad reward model": evaluate(log, target, 0.5 * bandit.q[idx]).dr}
        for e, est in found.items():
            covered[e] += est.low <= truth <= est.high
    assert covered["ips"] / 50 < 0.5, covered
    assert covered["dr"] / 50 >= 0.8, covered
    assert covered["dr with a bad reward model"] / 50 < 0.5, covered


def test_exploration_costs_the_share_times_the_gap_to_the_uniform_policy():
    bandit, own = world()
    uniform = np.full((N, K), 1 / K)
    cost = exploration_cost(bandit, own, {0.1: 0.9 * own + 0.1 * uniform})
    expected = 0.1 * (bandit.value(own) - bandit.value(uniform)).mean()
    assert cost[0.1]["per_request"]["value"] == pytest.approx(expected)
    lift = (bandit.value(own) - bandit.value(bandit.targets["none"])).mean()
    assert cost[0.1]["share_of_lift"]["value"] == pytest.approx(expected / lift)


def test_a_policy_worse_by_a_given_gap_differs_on_part_of_the_requests_only():
    bandit, own = world()
    none = bandit.targets["none"]
    gap = bandit.value(own) - bandit.value(none)
    worse, true_gap = worse_policy(own, none, gap, 0.05 * gap.mean(), np.random.default_rng(3).permutation(N))
    assert true_gap == pytest.approx((bandit.value(own) - bandit.value(worse)).mean())
    assert 0.05 * gap.mean() <= true_gap <= 0.05 * gap.mean() + gap.max() / N
    assert 0 < (worse != own).any(axis=1).mean() < 0.5
    with pytest.raises(ValueError):
        worse_policy(own, none, gap, 2 * gap.mean(), np.arange(N))


@pytest.mark.slow
def test_the_decisions_needed_give_about_80_percent_power():
    bandit, own = world()
    rules = bandit.targets["always 2"]
    need = decisions_needed(bandit, bandit.logging, own, rules, logs=20, size=2000, seed=4)
    assert need["delta"] > 0
    check = power(bandit, bandit.logging, own, rules, int(np.ceil(need["n"])), runs=300, seed=5)
    assert 0.72 <= check["power"] <= 0.88, (need, check)
    assert check["wrong_sign"] < 0.01
