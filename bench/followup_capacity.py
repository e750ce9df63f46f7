"""Follow-up capacity on the simulator: the share of detractors contacted within 48 h of their NPS answer
when a team works C follow-up tasks a day (issue 16, Must show).

Tasks come from the simulated data set's NPS answers by the follow-up rules (retention.followups, default
config/followups.toml): every detractor answer and the sampled passives and promoters (they take capacity
too), one active task per customer (a repeat answer updates it), due = answer + window (48 h). The team works
C tasks a day, earliest due first, in evenly spaced slots during working hours, 09:00-17:00 UTC Monday to
Friday (or around the clock with --hours 24x7); a worked task counts as a contact at its slot (every call
reaches the customer: an upper bound on "reached"). Detractor answers in the last 48 h of the data are not
judged (their 48 h are not over); the backlog is the tasks still open at the data's end.

    python -m bench.followup_capacity [--data DIR | --customers 50000] [--capacities 25,50,100,200]
"""

from __future__ import annotations

import argparse
import heapq
import json
import statistics
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from retention.followups import FollowupRules, Trigger, creates, load_followups, new_task, update_task

WITHIN = timedelta(hours=48)


def work_slots(start: datetime, end: datetime, capacity: int, hours: tuple[int, int] = (9, 17),
               weekdays_only: bool = True):
    """The times at which the team takes its next task: `capacity` a working day, evenly spaced from the start
    of working hours (09:00, 09:00 + 8h/C, ...), from the day of `start` to `end`."""
    day = datetime(start.year, start.month, start.day, tzinfo=UTC)
    step = timedelta(hours=hours[1] - hours[0]) / capacity
    while day <= end:
        if not weekdays_only or day.weekday() < 5:
            for k in range(capacity):
                slot = day + timedelta(hours=hours[0]) + k * step
                if start <= slot <= end:
                    yield slot
        day += timedelta(days=1)


def simulate_team(answers: list[tuple[str, datetime, int]], rules: FollowupRules, capacity: int, end: datetime,
                  hours: tuple[int, int] = (9, 17), weekdays_only: bool = True) -> dict:
    """Work the tasks that `answers` (customer, time, score) make, `capacity` a day, earliest due first, until
    `end`. Returns the share of judged detractor tasks contacted within 48 h of the answer that triggered them,
    the hours to contact, the backlog at `end` and the mean backlog when the working day starts."""
    answers = sorted(answers, key=lambda a: a[1])
    active: dict[str, dict] = {}  # customer -> task (open)
    done: list[dict] = []
    queue: list[tuple[datetime, int, str]] = []
    seq = 0
    i = 0
    morning_backlog: list[int] = []
    last_day = None

    def admit(until: datetime) -> None:
        nonlocal i, seq
        while i < len(answers) and answers[i][1] <= until:
            customer, at, score = answers[i]
            i += 1
            t = Trigger(customer, at, score=score)
            if customer in active:
                active[customer].update(update_task(rules, active[customer], t))
                continue
            made = creates(rules, t)
            if made is not None:
                task = new_task(rules, t, *made)
                active[customer] = task
                seq += 1
                heapq.heappush(queue, (task["due_at"], seq, customer))

    start = answers[0][1] if answers else end
    for slot in work_slots(start, end, capacity, hours, weekdays_only):
        admit(slot)
        if slot.date() != last_day:
            last_day = slot.date()
            morning_backlog.append(len(active))
        if not queue:
            continue
        _, _, customer = heapq.heappop(queue)  # due times never move earlier (update_task): no stale entries
        task = active.pop(customer)
        task["contacted_at"] = slot
        done.append(task)
    admit(end)
    judged = [t for t in done + list(active.values())
              if t["segment"] == "detractor" and t["triggered_at"] + WITHIN <= end]
    in_time = [t for t in judged if t.get("contacted_at") is not None and t["contacted_at"] - t["triggered_at"] <= WITHIN]
    waits = [(t["contacted_at"] - t["triggered_at"]).total_seconds() / 3600 for t in judged if t.get("contacted_at")]
    return {"capacity": capacity, "detractor_tasks": len(judged), "within_48h": len(in_time),
            "share_within_48h": None if not judged else len(in_time) / len(judged),
            "median_hours_to_contact": None if not waits else statistics.median(waits),
            "tasks_worked": len(done), "backlog_at_end": len(active),
            "mean_backlog_at_day_start": None if not morning_backlog else statistics.fmean(morning_backlog)}


def read_answers(data_dir: Path) -> tuple[list[tuple[str, datetime, int]], datetime]:
    """Every NPS answer of a data set (customer, time, score) and the end of its data window."""
    from training.dataset import open_dataset, resolve_window_end

    con = open_dataset(data_dir)
    rows = con.execute("SELECT customer_id, responded_at, score FROM nps_responses").fetchall()
    return ([(c, at.replace(tzinfo=UTC), int(s)) for c, at, s in rows],
            resolve_window_end(data_dir, None).astimezone(UTC))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None, help="A data set [default: simulate the reference world].")
    ap.add_argument("--customers", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--capacities", default="5,10,15,20,25,50,100")
    ap.add_argument("--hours", choices=("9-17", "24x7"), default="9-17",
                    help="9-17: 09:00-17:00 UTC, Monday to Friday; 24x7: around the clock, every day.")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    data = args.data
    if data is None:
        from training.simulator.generate import SimConfig, simulate_dataset

        data = Path(tempfile.mkdtemp(prefix="bench-followups-")) / "data"
        simulate_dataset(SimConfig(customers=args.customers, seed=args.seed), data)
    answers, end = read_answers(data)
    rules = load_followups()
    hours, weekdays = ((9, 17), True) if args.hours == "9-17" else ((0, 24), False)
    days = (end - min(a[1] for a in answers)).days or 1
    detractors = sum(1 for a in answers if a[2] <= 6)
    print(f"{data}: {len(answers):,} NPS answers over {days} days, {detractors:,} from detractors "
          f"({detractors / days:.1f} a day); rules: window {rules.window_hours:g} h, sample {rules.sample}; "
          f"team works {'09:00-17:00 UTC Mon-Fri' if weekdays else '24x7'}, earliest due first")
    print("| tasks worked per day | detractors contacted within 48 h | median hours to contact "
          "| backlog at end | mean backlog at day start |")
    print("|---|---|---|---|---|")
    results = []
    for c in (int(x) for x in args.capacities.split(",")):
        r = simulate_team(answers, rules, c, end, hours, weekdays)
        results.append(r)
        median = "-" if r["median_hours_to_contact"] is None else f"{r['median_hours_to_contact']:.1f}"
        print(f"| {c} | {100 * r['share_within_48h']:.1f}% ({r['within_48h']:,} of {r['detractor_tasks']:,}) "
              f"| {median} | {r['backlog_at_end']:,} | {r['mean_backlog_at_day_start']:.0f} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
