"""Follow-up rules (retention.followups), without a database: the sample of passives and promoters holds its
rate and never draws again for the same answer, the holdout too, tasks merge as documented, the config file
is checked, and the report's figures on a small history that can be checked by hand."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from retention.followups import (
    FollowupRules,
    FollowupsError,
    Trigger,
    in_holdout,
    load_followups,
    new_task,
    report,
    sampled,
    update_task,
)

T0 = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)  # a Monday: ISO week 2026-W23
RULES = FollowupRules()


@pytest.mark.parametrize(("score", "rate"), [(7, 0.10), (8, 0.10), (9, 0.05), (10, 0.05)])
def test_the_sample_of_passives_and_promoters_holds_its_rate_over_10000_answers(score, rate):
    n = 10_000
    drawn = sum(sampled(RULES, f"c{i}", T0 + timedelta(minutes=i), score) for i in range(n))
    sigma = math.sqrt(n * rate * (1 - rate))
    assert abs(drawn - n * rate) <= 4 * sigma, (drawn, n * rate, sigma)


def test_a_configured_rate_is_the_one_drawn():
    rules = replace(RULES, sample={"passive": 0.5, "promoter": 0.0})
    n = 10_000
    drawn = sum(sampled(rules, f"c{i}", T0, 8) for i in range(n))
    assert abs(drawn - n * 0.5) <= 4 * math.sqrt(n * 0.25)
    assert not any(sampled(rules, f"c{i}", T0, 10) for i in range(1000))


def test_a_retried_answer_draws_the_same_and_every_detractor_is_drawn():
    first = [sampled(RULES, f"c{i}", T0 + timedelta(seconds=i), 8) for i in range(2000)]
    again = [sampled(RULES, f"c{i}", (T0 + timedelta(seconds=i)).astimezone(), 8) for i in range(2000)]
    assert first == again and 100 < sum(first) < 300
    # Another answer of the same customer is another draw; another salt redraws everyone.
    later = [sampled(RULES, f"c{i}", T0 + timedelta(days=1, seconds=i), 8) for i in range(2000)]
    assert later != first
    assert [sampled(replace(RULES, salt="other"), f"c{i}", T0 + timedelta(seconds=i), 8) for i in range(2000)] != first
    assert all(sampled(RULES, f"c{i}", T0, s) for i in range(500) for s in range(7))


def test_the_holdout_holds_its_share_per_customer():
    rules = replace(RULES, holdout_share=0.05)
    n = 10_000
    held = sum(in_holdout(rules, f"c{i}") for i in range(n))
    assert abs(held - n * 0.05) <= 4 * math.sqrt(n * 0.05 * 0.95)
    assert not any(in_holdout(RULES, f"c{i}") for i in range(1000))  # the default: contact everyone


def test_a_task_takes_the_latest_score_the_earliest_due_time_and_the_latest_decision():
    first = Trigger("c1", T0, score=5, previous_score=9, event_id="e1")
    task = new_task(RULES, first, "detractor", 1.0)
    assert task["due_at"] == T0 + timedelta(hours=48) and task["status"] == "open" and task["previous_score"] == 9
    older = update_task(RULES, task, Trigger("c1", T0 - timedelta(days=3), score=2, event_id="e0"))
    assert older == {"due_at": T0 - timedelta(days=3) + timedelta(hours=48)}  # due earlier, score unchanged
    later = update_task(RULES, task, Trigger("c1", T0 + timedelta(hours=5), score=9, event_id="e2"))
    assert later == {"score": 9, "answered_at": T0 + timedelta(hours=5), "event_id": "e2", "previous_score": 5}
    decided = update_task(RULES, task, Trigger("c1", T0 + timedelta(hours=1), decision_id="d1", reason="technical",
                                               churn_risk=0.7, segment="detractor", followup_offer=True))
    assert decided == {"decision_id": "d1", "reason": "technical", "churn_risk": 0.7}  # due stays the earlier


def test_a_sampled_passive_task_becomes_a_detractor_task_with_a_later_detractor_answer():
    task = new_task(RULES, Trigger("c1", T0, score=8), "passive", 0.1)
    changes = update_task(RULES, task, Trigger("c1", T0 + timedelta(hours=2), score=3))
    assert changes["segment"] == "detractor" and changes["sample_rate"] == 1.0
    assert changes["triggered_at"] == T0 + timedelta(hours=2)


def test_a_held_out_detractor_gets_a_task_nobody_works_until_a_decision_promises_a_call():
    rules = replace(RULES, holdout_share=1.0)
    task = new_task(rules, Trigger("c1", T0, score=2), "detractor", 1.0)
    assert task["status"] == "holdout" and task["holdout"]
    assert update_task(rules, task, Trigger("c1", T0, decision_id="d1", followup_offer=True))["status"] == "open"
    assert new_task(rules, Trigger("c2", T0, decision_id="d2", followup_offer=True), "none", 1.0)["status"] == "open"


def test_the_rules_file_is_checked(tmp_path):
    assert load_followups() == RULES  # the checked-in file states the defaults
    bad = tmp_path / "followups.toml"
    bad.write_text('window_hours = "48"\nholdout_share = 1.5\nunknown = 1\n[sample]\npassive = -0.1\n')
    with pytest.raises(FollowupsError) as exc:
        load_followups(bad)
    text = str(exc.value)
    assert f"{bad}: window_hours: must be a number" in text
    assert f"{bad}: holdout_share: must be a share between 0 and 1, got 1.5" in text
    assert f"{bad}: unknown: unknown key" in text
    assert f"{bad}: [sample]: passive: must be a share between 0 and 1, got -0.1" in text


# ------------------------------------------------------------------------------------------------ report


def _task(customer: str, at: datetime, segment: str = "detractor", *, status: str = "open", holdout: bool = False,
          claimed: datetime | None = None, closed: datetime | None = None, outcome: str | None = None,
          rate: float = 1.0) -> dict:
    return {"customer_id": customer, "triggered_at": at, "segment": segment, "status": status, "holdout": holdout,
            "claimed_at": claimed, "closed_at": closed, "outcome": outcome, "sample_rate": rate}


def _history() -> tuple[list[dict], dict]:
    h = timedelta(hours=1)
    d = timedelta(days=1)
    tasks = [
        _task("a", T0, status="claimed", claimed=T0 + 23 * h),  # in time; retained
        _task("b", T0 + 2 * h, status="closed", closed=T0 + 74 * h, outcome="reached"),  # late; cancels
        _task("c", T0 + d, status="closed", closed=T0 + 2 * d, outcome="not_reached"),  # not contacted; cancels
        _task("d", T0 + 2 * d),  # never worked; retained
        _task("f", T0 + d, status="holdout", holdout=True),  # holdout; cancels
        _task("e", T0 + 8 * d, status="closed", closed=T0 + 9 * d, outcome="resolved"),  # W24, in time; retained
        _task("g", T0 + 8 * d, status="holdout", holdout=True),  # W24 holdout; retained
        _task("h", T0 + 19 * d),  # W25: its 30 days have not passed by as_of
        _task("p", T0 + d, "passive", status="claimed", claimed=T0 + 30 * h, rate=0.1),
        _task("q", T0 + d, "promoter", rate=0.05),
        _task("z", T0 - 10 * d),  # before the period
    ]
    cancellations = {"b": [T0 + 9 * d], "c": [T0 + 19 * d], "f": [T0 + 4 * d],
                     "d": [T0 - 20 * d, T0 + 40 * d],  # before the answer, after the horizon: retained
                     "z": [T0]}
    return tasks, cancellations


def test_the_report_counts_contacts_in_time_by_week_and_retention_by_group():
    tasks, cancellations = _history()
    as_of = datetime(2026, 7, 10, tzinfo=UTC)
    r = report(tasks, cancellations, since=T0 - timedelta(hours=1), as_of=as_of)
    assert (r["detractors"], r["holdout"]) == (6, 2)
    weeks = {w["week"]: (w["count"], w["n"], w["holdout"]) for w in r["weeks"]}
    assert weeks == {"2026-W23": (1, 4, 1), "2026-W24": (1, 1, 1), "2026-W25": (0, 1, 0)}
    assert r["weeks"][0]["share"] == 0.25
    retention = {k: (g["count"], g["n"]) for k, g in r["retention"].items()}
    assert retention == {"contacted": (2, 3), "not_contacted": (1, 2), "assigned": (3, 5), "holdout": (1, 2)}
    assert r["contacted_minus_not_contacted"]["estimate"] == pytest.approx(2 / 3 - 1 / 2)
    assert r["assigned_minus_holdout"]["estimate"] == pytest.approx(3 / 5 - 1 / 2)
    low, high = r["assigned_minus_holdout"]["low"], r["assigned_minus_holdout"]["high"]
    assert low < 0 < high  # two customers in the holdout prove nothing, and the interval says so
    assert r["sampled"] == {"passive": {"tasks": 1, "contacted": 1, "answers_represented": 10.0,
                                        "contacted_represented": 10.0},
                            "promoter": {"tasks": 1, "contacted": 0, "answers_represented": 20.0,
                                         "contacted_represented": 0.0}}
    assert any("observational" in c for c in r["caveats"]) and any("randomised" in c for c in r["caveats"])


def test_a_wider_contact_window_and_a_shorter_horizon_change_what_counts():
    tasks, cancellations = _history()
    as_of = datetime(2026, 7, 10, tzinfo=UTC)
    r = report(tasks, cancellations, since=T0 - timedelta(hours=1), as_of=as_of, within_hours=80, horizon_days=5)
    assert r["weeks"][0]["count"] == 2  # b's contact at 72 h now counts
    # Within 5 days only f cancels (b at day 9, c at day 18); h has matured too.
    assert {k: (g["count"], g["n"]) for k, g in r["retention"].items()} == {
        "contacted": (3, 3), "not_contacted": (3, 3), "assigned": (6, 6), "holdout": (1, 2)}


def test_without_a_holdout_the_report_says_the_comparison_is_observational_only():
    tasks, cancellations = _history()
    tasks = [t for t in tasks if not t["holdout"]]
    r = report(tasks, cancellations, since=T0 - timedelta(hours=1), as_of=datetime(2026, 7, 10, tzinfo=UTC))
    assert r["assigned_minus_holdout"] is None and r["retention"]["holdout"]["n"] == 0
    assert any("no holdout" in c for c in r["caveats"])
