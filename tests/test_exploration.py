"""Exploration (retention.policy, [exploration] of config/policy.toml): a share of decisions gives a
uniformly drawn eligible offer, the guardrails first, and every decision logs the exact probability of its
offer, so that logged traffic can value other policies off-policy."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from retention.decision import CancelRequest, PastOffer
from retention.offers import load_catalog
from retention.policy import Policy, PolicyError, load_policy

CATALOG = load_catalog()
CONFIG = load_policy(CATALOG)  # the checked-in file: 5% exploration
START = datetime(2026, 6, 1, tzinfo=UTC)


class Scores:
    """Known save probabilities: the policy's own choice is discount_50_2m wherever it is eligible."""

    version = "table"
    offers = "a table"
    serves_policy = True
    allowed = None
    fixed_offer = None
    min_gain = 0.0

    def __init__(self):
        from retention.features import FeatureSpec

        self.spec = FeatureSpec((), (), ())
        self.p = {o.id: 0.30 for o in CATALOG.offers} | {"discount_50_2m": 0.70}

    def p_stay(self, features, reason, offers):
        return [self.p[o.id] for o in offers]


def request(customer: str, reason: str = "too_expensive") -> CancelRequest:
    return CancelRequest(customer, reason, "monthly", "web", 14.95, plan_id="plus_monthly")


def decide_many(policy: Policy, n: int, history=()):
    return [policy.decide(request(f"c{i}"), None, START + timedelta(minutes=i), list(history)) for i in range(n)]


def test_the_checked_in_policy_explores_five_percent_and_logs_each_offers_exact_probability():
    assert CONFIG.exploration_share == 0.05
    decisions = decide_many(Policy(CATALOG, CONFIG, Scores()), 4000)
    explored = [d for d in decisions if "explored" in d.reason_codes]
    # Binomial(4000, 0.05): 200 expected, 99.9% within 200 +- 45
    assert 155 <= len(explored) <= 245
    for d in decisions:
        e = d.exploration
        assert e is not None and e.share == 0.05 and e.policy_offer == "discount_50_2m"
        k = len(e.eligible)
        expected = 0.95 * (d.offer.id == e.policy_offer) + 0.05 / k
        assert d.propensity == pytest.approx(expected, abs=1e-12)
        assert d.offer.id in e.eligible and e.explored == ("explored" in d.reason_codes)
    # the uniform draw covers every eligible offer, about equally
    counts = {o: sum(d.offer.id == o for d in explored) for o in explored[0].exploration.eligible}
    assert min(counts.values()) >= 5
    # the policy's own choice otherwise
    assert all(d.offer.id == "discount_50_2m" for d in decisions if d not in explored)


def test_off_policy_replay_recomputes_each_logged_propensity_from_the_exploration_record():
    from training.offpolicy import target_of

    decisions = decide_many(Policy(CATALOG, CONFIG, Scores()), 600)
    target = target_of(decisions, tuple(CATALOG.ids))
    assert target.sum(axis=1) == pytest.approx(np.ones(len(decisions)))  # a distribution on every request
    logged = target[np.arange(len(decisions)), [CATALOG.ids.index(d.offer.id) for d in decisions]]
    assert logged == pytest.approx([d.propensity for d in decisions], abs=1e-12)  # the service's own figure
    eligible = [set(d.exploration.eligible) for d in decisions]
    assert all(target[i, j] == 0 for i in range(len(decisions)) for j, o in enumerate(CATALOG.ids)
               if o not in eligible[i])  # never an offer the guardrails excluded


def test_exploration_never_gives_an_offer_the_guardrails_excluded():
    # a discount accepted 10 days ago: every discount is in its cooldown
    history = [PastOffer("discount_30_3m", "discount", START - timedelta(days=10), True, 3)]
    decisions = decide_many(Policy(CATALOG, CONFIG, Scores()), 3000, history)
    assert not any(d.offer.type == "discount" for d in decisions)
    assert all("discount_50_2m" not in d.exploration.eligible for d in decisions)
    assert sum("explored" in d.reason_codes for d in decisions) > 100


def test_the_same_request_at_the_same_time_explores_the_same_way():
    policy = Policy(CATALOG, CONFIG, Scores())
    first, again = decide_many(policy, 500), decide_many(policy, 500)
    assert [(d.offer.id, d.propensity) for d in first] == [(d.offer.id, d.propensity) for d in again]


def test_share_zero_turns_it_off_and_the_policy_is_deterministic_again():
    policy = Policy(CATALOG, replace(CONFIG, exploration_share=0.0), Scores())
    decisions = decide_many(policy, 500)
    assert all(d.propensity == 1.0 and d.exploration is None and d.offer.id == "discount_50_2m"
               for d in decisions)


def test_the_expected_cost_of_exploring_is_what_the_draw_gives_up_by_the_models_values():
    d = decide_many(Policy(CATALOG, CONFIG, Scores()), 1)[0]
    values = {s.offer_id: s.incremental_value for s in d.scores}
    eligible = d.exploration.eligible
    expected = 0.05 * (values["discount_50_2m"] - np.mean([values[o] for o in eligible]))
    assert d.exploration.expected_cost == pytest.approx(expected) and expected > 0


def test_the_rules_explore_too_when_there_is_no_model():
    decisions = decide_many(Policy(CATALOG, CONFIG, None), 2000)
    explored = [d for d in decisions if "explored" in d.reason_codes]
    assert explored and all(d.fallback for d in decisions)
    assert all(d.exploration.policy_offer == "discount_30_3m" for d in decisions)  # the rule for too_expensive


@pytest.mark.parametrize("share", ["0.7", "-0.1", "\"a lot\""])
def test_an_exploration_share_out_of_range_is_refused_naming_the_key(tmp_path: Path, share: str):
    text = Path("config/policy.toml").read_text().replace("\nshare = 0.05\n", f"\nshare = {share}\n")
    bad = tmp_path / "policy.toml"
    bad.write_text(text)
    with pytest.raises(PolicyError, match=r"\[exploration\].*share"):
        load_policy(CATALOG, bad)


def test_experiment_entrants_keep_their_arms_propensity_and_do_not_explore(tmp_path: Path):
    from samples import THREE_ARMS

    from retention.experiments import load_experiments, unit_hash

    path = tmp_path / "experiments.toml"
    path.write_text(THREE_ARMS)
    policy = Policy(CATALOG, CONFIG, Scores(), load_experiments(CATALOG, path))
    now = datetime(2026, 12, 10, tzinfo=UTC)  # the experiment runs; its slice is [0, 0.5) of customers
    entrants = outside = 0
    for i in range(3000):
        cid = f"s{i}"
        d = policy.decide(request(cid), None, now + timedelta(seconds=i))
        if unit_hash("retention-offers/experiment-layer/v1", cid) < 0.5 and d.experiment is not None:
            entrants += 1
            assert d.exploration is None and "explored" not in d.reason_codes
            assert d.propensity == pytest.approx(d.experiment.share)
        elif d.experiment is None:
            outside += 1
            assert d.exploration is not None
    assert entrants > 1000 and outside > 1000


class Other(Scores):
    """A challenger that prefers the credit."""

    version = "challenger-table"

    def __init__(self):
        super().__init__()
        self.p = {o.id: 0.30 for o in CATALOG.offers} | {"credit_1": 0.80}


def test_a_challenger_decides_in_the_shadow_recorded_never_shown():
    champion_only = decide_many(Policy(CATALOG, CONFIG, Scores()), 400)
    with_shadow = decide_many(Policy(CATALOG, CONFIG, Scores(), shadow=Other()), 400)
    # what the customer is offered does not change
    assert [d.offer.id for d in with_shadow] == [d.offer.id for d in champion_only]
    assert all(d.shadow is None for d in champion_only)
    for d in with_shadow:
        s = d.shadow
        assert s.version == "challenger-table" and s.offer == "credit_1" and s.error is None
        assert s.agrees is False  # the champion's own choice is discount_50_2m, explored or not
        assert s.p_stay == pytest.approx(0.80)
