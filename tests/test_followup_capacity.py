"""bench/followup_capacity.py's team simulation, on cases checkable by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bench.followup_capacity import simulate_team, work_slots
from retention.followups import FollowupRules

RULES = FollowupRules(sample={"passive": 0.0, "promoter": 0.0})
MONDAY = datetime(2026, 11, 2, 8, tzinfo=UTC)  # a Monday, 08:00 UTC
FRIDAY = MONDAY + timedelta(days=4)


def test_slots_are_evenly_spaced_in_working_hours_on_weekdays():
    slots = list(work_slots(FRIDAY, FRIDAY + timedelta(days=3, hours=10), 2))
    assert slots == [FRIDAY.replace(hour=9), FRIDAY.replace(hour=13),
                     (FRIDAY + timedelta(days=3)).replace(hour=9), (FRIDAY + timedelta(days=3)).replace(hour=13)]


def test_three_monday_detractors_at_two_a_day_are_all_reached_within_48_hours():
    # Slots Monday 09:00 and 13:00, Tuesday 09:00: waits 1 h, 5 h, 25 h.
    answers = [(f"c{i}", MONDAY, 3) for i in range(3)]
    r = simulate_team(answers, RULES, 2, MONDAY + timedelta(days=7))
    assert (r["detractor_tasks"], r["within_48h"], r["backlog_at_end"]) == (3, 3, 0)
    assert r["median_hours_to_contact"] == pytest.approx(5.0)


def test_friday_detractors_beyond_the_capacity_wait_for_monday():
    # Friday 09:00 and 13:00 (1 h, 5 h), then Monday 09:00 = 73 h after the answer: 2 of 3 in time.
    answers = [(f"c{i}", FRIDAY, 0) for i in range(3)]
    r = simulate_team(answers, RULES, 2, FRIDAY + timedelta(days=7))
    assert (r["detractor_tasks"], r["within_48h"]) == (3, 2)
    assert r["share_within_48h"] == pytest.approx(2 / 3)
    around_the_clock = simulate_team(answers, RULES, 2, FRIDAY + timedelta(days=7), hours=(0, 24),
                                     weekdays_only=False)
    assert around_the_clock["within_48h"] == 3  # Saturday 00:00 works the third


def test_a_repeat_answer_updates_the_open_task_and_unsampled_answers_make_none():
    answers = [("a", MONDAY, 2), ("a", MONDAY + timedelta(minutes=30), 1), ("b", MONDAY, 8), ("c", MONDAY, 10)]
    r = simulate_team(answers, RULES, 5, MONDAY + timedelta(days=3))
    assert (r["detractor_tasks"], r["tasks_worked"]) == (1, 1)


def test_the_backlog_is_what_the_capacity_left_open():
    answers = [(f"c{i}", MONDAY, 5) for i in range(10)]  # Monday to Wednesday at 2 a day: 6 worked by Wed 17:00
    r = simulate_team(answers, RULES, 2, MONDAY + timedelta(days=2, hours=10))
    assert (r["tasks_worked"], r["backlog_at_end"]) == (6, 4)
    assert r["detractor_tasks"] == 10 and r["within_48h"] == 4  # Mon 09/13, Tue 09/13; Wed 09:00 is 49 h
