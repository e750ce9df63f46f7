"""The decision policy: highest expected incremental value among eligible offers, `none` when nothing beats
it, documented rules when the model cannot decide (missing, failing, too slow), and a checked config."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from retention.artifacts import load_artifact
from retention.decision import CancelRequest, NpsAnswer, PastOffer
from retention.features import FEATURE_VERSION, FeatureSpec
from retention.offers import load_catalog
from retention.policy import ModelScorer, Policy, PolicyError, load_policy
from retention.value import expected_net_value

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
CATALOG = load_catalog()
# Without exploration: these tests check which offer the policy itself chooses (tests/test_exploration.py
# covers the checked-in 5%).
CONFIG = replace(load_policy(CATALOG), exploration_share=0.0)


def request(reason="too_expensive", score=None, **kw) -> CancelRequest:
    nps = (NpsAnswer(score, datetime(2026, 11, 1, tzinfo=UTC)),) if score is not None else None
    base = dict(billing_period="monthly", billing_channel="web", price=14.95, plan_id="plus_monthly")
    return CancelRequest("c1", reason, nps=nps, **(base | kw))


class TableScorer:
    """A scorer with known save probabilities per offer, to test the choice rule itself."""

    version = "table"
    offers = "a table"  # an offer-response model is present...
    serves_policy = True  # ...and the policy gate let it choose
    allowed = None  # any offer
    fixed_offer = None

    def __init__(self, p: dict[str, float], delay: float = 0.0, fail: bool = False):
        self.p, self.delay, self.fail = p, delay, fail
        self.spec = FeatureSpec((), (), ())  # no customer features: the table ignores them

    def p_stay(self, features, reason, offers):
        if self.fail:
            raise RuntimeError("model blew up")
        time.sleep(self.delay)
        return [self.p.get(o.id, self.p["none"]) for o in offers]


@pytest.fixture(scope="module")
def model_policy(trained: Path) -> Policy:
    model, meta = load_artifact(trained, feature_version=FEATURE_VERSION)
    policy = Policy(CATALOG, CONFIG, ModelScorer.from_estimator(model, meta, CATALOG, ignore_gate=True))
    yield policy
    policy.close()


def test_chooses_the_highest_expected_incremental_value_not_the_highest_acceptance():
    # the 50% discount keeps the most customers, but gives away more than its extra saves bring in
    p = {"none": 0.40, "discount_50_2m": 0.63, "discount_30_3m": 0.62, "pause_1m": 0.45, "credit_1": 0.41}
    policy = Policy(CATALOG, CONFIG, TableScorer(p))
    d = policy.decide(request(), None, NOW)
    values = {o: float(expected_net_value(CATALOG[o], q, 14.95, "monthly")) - float(
        expected_net_value(CATALOG["none"], p["none"], 14.95, "monthly")) for o, q in p.items()}
    assert d.offer.id == max(values, key=values.get) == "discount_30_3m"
    assert d.expected_incremental_value == pytest.approx(values["discount_30_3m"])
    assert d.p_stay == pytest.approx(0.62) and not d.fallback and d.model_version == "table"
    assert "best_incremental_value" in d.reason_codes
    # every eligible offer is scored: the reward and the referral are for promoters only (this one has no NPS)
    assert {s.offer_id for s in d.scores} == set(CATALOG.ids) - {"reward_loyalty", "referral_both"}


def test_answers_none_when_no_offer_beats_giving_nothing():
    policy = Policy(CATALOG, CONFIG, TableScorer({"none": 0.5}))  # offers keep nobody extra but cost money
    d = policy.decide(request(), None, NOW)
    assert d.offer.id == "none" and "no_offer_beats_none" in d.reason_codes
    assert d.expected_incremental_value == 0.0


def test_ineligible_offers_are_never_scored_or_chosen():
    p = {"none": 0.3, "pause_3m": 0.99, "credit_1": 0.35}
    d = Policy(CATALOG, CONFIG, TableScorer(p)).decide(request(billing_period="annual", price=149.5), None, NOW)
    assert d.offer.id == "credit_1"
    assert "pause_ineligible_annual" in d.reason_codes
    assert "pause_3m" not in {s.offer_id for s in d.scores}


@pytest.mark.parametrize("scorer, code", [
    (None, "model_unavailable"),
    (TableScorer({"none": 0.5}, fail=True), "scoring_error"),
    (TableScorer({"none": 0.5}, delay=0.5), "scoring_timeout"),
])
def test_fails_open_to_the_rules(scorer, code):
    policy = Policy(CATALOG, CONFIG, scorer)
    started = time.perf_counter()
    d = policy.decide(request("temporary"), None, NOW)
    elapsed = time.perf_counter() - started
    assert d.fallback and code in d.reason_codes and "fallback_rules" in d.reason_codes
    assert d.offer.id == "pause_2m" and d.p_stay is None
    assert elapsed < 0.45, "a slow model must not hold the answer past the time budget"
    policy.close()


@pytest.mark.parametrize("reason, score, expected", [
    ("too_expensive", None, "discount_30_3m"),
    ("too_expensive", 10, "downgrade_lite"),
    ("technical", 2, "followup"),
    ("other", 3, "followup"),
    ("other", 8, "none"),
    ("content", None, "credit_1"),
    ("not_using", 4, "followup"),
])
def test_fallback_rules_by_nps_segment_and_reason(reason, score, expected):
    d = Policy(CATALOG, CONFIG, None).decide(request(reason, score), None, NOW)
    assert d.offer.id == expected


def test_fallback_rules_skip_ineligible_offers():
    d = Policy(CATALOG, CONFIG, None).decide(request("temporary", billing_channel="ios"), None, NOW)
    assert d.offer.id == "none" and "rule_no_offer" in d.reason_codes


def test_detractors_are_flagged_for_a_follow_up_within_48_hours():
    d = Policy(CATALOG, CONFIG, None).decide(request("content", 2), None, NOW)
    assert d.nps_segment == "detractor" and "close_the_loop" in d.reason_codes
    assert (d.close_the_loop_by - NOW).total_seconds() == 48 * 3600
    assert Policy(CATALOG, CONFIG, None).decide(request("content", 9), None, NOW).close_the_loop_by is None


def test_the_trained_model_picks_offers_that_fit_the_reason(model_policy):
    # A sanity check on a model from 10k simulated customers; how much better than fixed offers and the
    # rules the model's choices are is measured against the simulator's truth in test_policy_value.py.
    # For a temporary absence the model's choice by value is a close call between a pause (saves most, but
    # costs its months' revenue) and a follow-up (saves less, costs 3): with the 2026-12-01 catalog's data the
    # 10k model put the follow-up 0.3 ahead (7.62 against 7.30). What the model must know is which offer
    # saves most for each reason, so that is what is checked for the temporary reason.
    decisions = {r: model_policy.decide(request(r, 5), None, NOW) for r in ("temporary", "content", "too_expensive")}
    picks = {r: d.offer.type for r, d in decisions.items()}
    saves_most = max(decisions["temporary"].scores, key=lambda s: s.p_stay).offer_id
    assert CATALOG[saves_most].type == "pause"
    assert picks["temporary"] in ("pause", "followup")
    assert picks["content"] == "credit"
    assert picks["too_expensive"] in ("discount", "downgrade")


def test_policy_config_is_validated(tmp_path):
    bad = tmp_path / "policy.toml"
    bad.write_text('[fallback.default]\ntoo_expensive = ["discount_99"]\n')
    with pytest.raises(PolicyError, match="every reason"):
        load_policy(CATALOG, bad)
    text = Path(CONFIG_PATH := "config/policy.toml").read_text()
    bad.write_text(text.replace('content = ["credit_1"]', 'content = ["credit_99"]'))
    with pytest.raises(PolicyError, match="credit_99"):
        load_policy(CATALOG, bad)
    bad.write_text(text.replace("time_budget_ms = 150", "time_budget_ms = -1"))
    with pytest.raises(PolicyError, match="time_budget_ms"):
        load_policy(CATALOG, bad)
    bad.write_text(text + "\nsurprise = 1\n")
    with pytest.raises(PolicyError, match="surprise"):
        load_policy(CATALOG, bad)
    assert load_policy(CATALOG, CONFIG_PATH).version == CONFIG.version
    bad.write_text(text.replace("max_offers_per_year = 3", "max_offers_per_year = 4"))
    assert load_policy(CATALOG, bad).version != CONFIG.version


# ------------------------------------------------------------------------------------------ value horizon


def test_the_value_horizon_comes_from_the_policy_file_and_changes_the_choice(tmp_path):
    # A 3-month pause saves 45% and bills nothing for 3 months; no offer keeps 30% paying every month.
    # Over 6 months: none 0.30 x 6 x 14.95 = 26.91 beats the pause 0.45 x 3 x 14.95 = 20.18;
    # over 12 months the pause wins: 0.45 x 9 x 14.95 = 60.55 against 0.30 x 12 x 14.95 = 53.82.
    scorer = TableScorer({"none": 0.30, "pause_3m": 0.45, "pause_1m": 0.0, "pause_2m": 0.0,
                          "discount_30_3m": 0.0, "discount_50_2m": 0.0, "downgrade_lite": 0.0,
                          "credit_1": 0.0, "followup": 0.0})
    text = Path("config/policy.toml").read_text()
    assert "horizon_months = 6" in text
    twelve = tmp_path / "policy.toml"
    twelve.write_text(text.replace("horizon_months = 6", "horizon_months = 12"))
    decisions = {}
    for months, config in ((6, CONFIG), (12, replace(load_policy(CATALOG, twelve), exploration_share=0.0))):
        assert config.horizon_months == months
        decisions[months] = Policy(CATALOG, config, scorer).decide(request("temporary"), None, NOW)
    assert decisions[6].offer.id == "none" and decisions[12].offer.id == "pause_3m"
    assert decisions[6].expected_incremental_value == 0.0
    assert decisions[12].expected_incremental_value == pytest.approx(0.45 * 9 * 14.95 - 0.30 * 12 * 14.95)
    assert load_policy(CATALOG, twelve).version != CONFIG.version  # decisions record which horizon chose them


@pytest.mark.parametrize("value", ["0", "37", '"6"', "6.5"])
def test_a_horizon_outside_1_to_36_whole_months_is_refused(tmp_path, value):
    bad = tmp_path / "policy.toml"
    bad.write_text(Path("config/policy.toml").read_text().replace("horizon_months = 6", f"horizon_months = {value}"))
    with pytest.raises(PolicyError, match="horizon_months"):
        load_policy(CATALOG, bad)


# ---------------------------------------------------------------------------- loyalty rewards and referrals

TWO_YEARS_AGO = datetime(2024, 11, 25, tzinfo=UTC)


def test_a_long_standing_promoter_gets_the_reward_when_it_is_the_best_incremental_value():
    # content cancel of a 2-year promoter: the reward saves 0.80 against the credit's 0.70 and costs 5 (the
    # credit 4): 0.80 x (89.70 - 5) - 0.50 x 89.70 = 22.91 beats 0.70 x 85.70 - 44.85 = 15.14
    p = {"none": 0.50, "credit_1": 0.70, "reward_loyalty": 0.80, "referral_both": 0.55}
    policy = Policy(CATALOG, CONFIG, TableScorer(p))
    d = policy.decide(request("content", 10, signup_at=TWO_YEARS_AGO), None, NOW)
    assert d.offer.id == "reward_loyalty" and d.offer.type == "reward" and "best_incremental_value" in d.reason_codes
    assert d.expected_incremental_value == pytest.approx(0.80 * (6 * 14.95 - 5.0) - 0.50 * 6 * 14.95)
    # the same scores for a detractor, a passive, a promoter of 3 months: never the reward
    for score, signup in ((3, TWO_YEARS_AGO), (8, TWO_YEARS_AGO), (9, datetime(2026, 8, 25, tzinfo=UTC))):
        d = policy.decide(request("content", score, signup_at=signup), None, NOW)
        assert d.offer.id == "credit_1"
        assert "reward_not_promoter" in d.reason_codes or "reward_tenure_short" in d.reason_codes
    policy.close()


def test_a_referral_is_valued_with_the_friend_it_brings():
    # The referral keeps no more customers than the credit, but a staying referrer brings a friend worth
    # 0.15 x (60 - 4) = 8.40 on top: it wins by that; a customer who referred before is never offered it.
    p = {"none": 0.50, "credit_1": 0.60, "referral_both": 0.60}
    policy = Policy(CATALOG, CONFIG, TableScorer(p))
    d = policy.decide(request("other", 9), None, NOW)
    assert d.offer.id == "referral_both"
    assert d.expected_incremental_value == pytest.approx(0.60 * (89.70 - 4.0 + 0.15 * 56.0) - 0.50 * 89.70)
    referred = PastOffer("referral_both", "referral", datetime(2025, 6, 1, tzinfo=UTC), True)
    d = policy.decide(request("other", 9), None, NOW, history=[referred])
    assert d.offer.id == "credit_1" and "referral_already_referred" in d.reason_codes
    policy.close()


def test_the_rules_offer_long_standing_promoters_the_reward_for_content_and_other():
    rules = Policy(CATALOG, CONFIG, None)
    assert rules.decide(request("content", 9, signup_at=TWO_YEARS_AGO), None, NOW).offer.id == "reward_loyalty"
    assert rules.decide(request("other", 10, signup_at=TWO_YEARS_AGO), None, NOW).offer.id == "reward_loyalty"
    # a promoter of 3 months gets the credit instead; the rules never offer a referral
    assert rules.decide(request("content", 9, signup_at=datetime(2026, 8, 25, tzinfo=UTC)), None, NOW
                        ).offer.id == "credit_1"
    assert all(rules.decide(request(r, 10, signup_at=TWO_YEARS_AGO), None, NOW).offer.type != "referral"
               for r in ("too_expensive", "not_using", "temporary", "technical", "content", "switching", "other"))


def test_a_model_trained_before_a_catalog_offer_existed_is_refused_not_served_blind(trained):
    # The offer encoding (offer_id, offer_type, reason_offer, months/percent/to_price) did not change for the
    # reward and referral types, so FEATURE_VERSION stays; a model version trained on the 2026-11-25 catalog
    # has never seen them and is refused at load by the catalog check (the service then decides by the rules
    # and says why in /readyz), exactly as a version missing any other catalog offer.
    from retention.artifacts import ArtifactError
    from retention.loading import load_served

    extra = replace(CATALOG["reward_loyalty"], id="reward_gold", credits=5, cost=12.0)
    newer = replace(CATALOG, offers=CATALOG.offers + (extra,))
    with pytest.raises(ArtifactError, match=r"trained without offers \['reward_gold'\]; retrain with the current"):
        load_served(trained.parent, trained.name, newer)
    scorer, _ = load_served(trained.parent, trained.name, CATALOG)  # trained with the rewards: served
    assert scorer.offers is not None
