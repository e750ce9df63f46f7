"""Follow-up tasks ("close the loop", issue 16): who gets a personal contact after an NPS answer or a
follow-up decision, by when, and what the contacts changed. Pure rules and figures; the store keeps the
tasks (store/followups.py), the service and the CLI show them.

- Every detractor answer (0-6) and every decision whose offer is a `followup` makes a task due `window_hours`
  after the answer (or the decision). A passive or promoter answer makes one with probability
  `sample.<segment>`; that rate is stored on the task so a report can weight it (1 / rate).
- Draws are deterministic hashes (GrowthBook-style): the sample draw of (customer, answer time, score), so a
  retried or re-sent answer (event or inline) never draws again; the holdout draw of the customer alone, so a
  customer stays in the group they were drawn into.
- Holdout: a `holdout_share` of detractors is drawn into a randomised no-contact group, stored as a task with
  status "holdout" that nobody works: the report compares contacted customers with it. A follow-up decision
  still makes a real task for them (the customer was promised a call); the report keeps them in the holdout
  group (intention to treat).
- One active task (open, claimed, holdout) per customer: later triggers update it: the latest score and its
  trend, the earliest due time, the latest decision's reason, churn risk (1 - p_stay) and id.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from marshmallow import ValidationError, post_load

from retention.configfiles import (
    ConfigError,
    ConfigSchema,
    Number,
    Str,
    Table,
    at_least,
    load_file,
    non_empty,
)
from retention.contract import nps_segment

DEFAULT_FOLLOWUPS = Path(__file__).resolve().parent.parent / "config" / "followups.toml"
STATUSES: tuple[str, ...] = ("open", "claimed", "closed", "holdout")
ACTIVE: tuple[str, ...] = ("open", "claimed", "holdout")  # at most one of these per customer
WORKED: tuple[str, ...] = ("open", "claimed")  # what agents work, and what can be overdue
OUTCOMES: tuple[str, ...] = ("reached", "not_reached", "resolved")
CONTACTED_OUTCOMES: frozenset[str] = frozenset({"reached", "resolved"})
_UNIT = float(2**64)


class FollowupsError(ConfigError):
    """config/followups.toml is invalid; each line names the file and the key."""


@dataclass(frozen=True)
class FollowupRules:
    window_hours: float = 48.0  # a task is due this long after its answer or decision
    sample: dict[str, float] = field(default_factory=lambda: {"passive": 0.1, "promoter": 0.05})
    holdout_share: float = 0.0  # detractors drawn into a randomised no-contact group
    salt: str = "followups-v1"  # a new salt re-draws everyone (a new holdout); never change it mid-study

    @property
    def window(self) -> timedelta:
        return timedelta(hours=self.window_hours)

    def rate(self, segment: str) -> float:
        """The probability that an answer of `segment` makes a task."""
        return 1.0 if segment == "detractor" else self.sample.get(segment, 0.0)


def _unit(*parts: str) -> float:
    """A uniform number in [0, 1) from the parts: the first 8 bytes of their SHA-256."""
    digest = hashlib.sha256("|".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / _UNIT


def answer_key(customer_id: str, answered_at: datetime, score: int) -> str:
    """What identifies an answer across its channels and retries (an event and the same answer inline)."""
    return f"{customer_id}|{answered_at.astimezone(UTC).isoformat()}|{int(score)}"


def sampled(rules: FollowupRules, customer_id: str, answered_at: datetime, score: int) -> bool:
    """Whether this answer makes a task: always for a detractor, else by its segment's rate."""
    rate = rules.rate(nps_segment(score))
    return rate >= 1.0 or _unit(rules.salt, "sample", answer_key(customer_id, answered_at, score)) < rate


def in_holdout(rules: FollowupRules, customer_id: str) -> bool:
    return rules.holdout_share > 0 and _unit(rules.salt, "holdout", customer_id) < rules.holdout_share


@dataclass(frozen=True)
class Trigger:
    """Something that may make or update a customer's task: an NPS answer or a decision."""

    customer_id: str
    at: datetime  # the answer's time, or the decision's
    score: int | None = None  # an answer's score
    previous_score: int | None = None  # the customer's answer before this one, if known
    event_id: str | None = None
    decision_id: str | None = None
    reason: str | None = None  # a decision's cancel reason
    churn_risk: float | None = None  # a decision's 1 - p_stay
    segment: str | None = None  # a decision's NPS segment
    followup_offer: bool = False  # a decision that offered a follow-up (or another request for a call)
    source: str | None = None  # what made it, when not an answer or a decision: "at_risk" (the risk list)


def trend(score: int | None, previous: int | None) -> str:
    if score is None:
        return "no_answer"
    if previous is None:
        return "first_answer"
    return "dropped" if score < previous else "rose" if score > previous else "unchanged"


def creates(rules: FollowupRules, t: Trigger) -> tuple[str, float] | None:
    """(task segment, sample rate) when `t` makes a task for a customer without an active one, else None."""
    if t.followup_offer:
        return (t.segment or "none"), 1.0
    if t.score is not None and sampled(rules, t.customer_id, t.at, t.score):
        segment = nps_segment(t.score)
        return segment, rules.rate(segment)
    return None


def new_task(rules: FollowupRules, t: Trigger, segment: str, rate: float) -> dict:
    """The fields of the task `t` opens. A held-out detractor's is status "holdout"."""
    holdout = t.score is not None and not t.followup_offer and segment == "detractor" and in_holdout(
        rules, t.customer_id)
    return {"customer_id": t.customer_id, "status": "holdout" if holdout else "open", "holdout": holdout,
            "segment": segment, "sample_rate": rate, "source": t.source or ("decision" if t.followup_offer else "nps"),
            "triggered_at": t.at, "due_at": t.at + rules.window, "score": t.score,
            "previous_score": t.previous_score if t.score is not None else None,
            "answered_at": t.at if t.score is not None else None, "event_id": t.event_id,
            "decision_id": t.decision_id, "reason": t.reason, "churn_risk": t.churn_risk}


def update_task(rules: FollowupRules, task: dict, t: Trigger) -> dict:
    """The fields of an active `task` that `t` changes: a newer answer's score (and trend), the earliest due
    time if `t` would make a task itself, a decision's links; a follow-up decision turns a holdout task into
    an open one (the promise is kept; the task stays `holdout` for the report)."""
    changes: dict = {}
    if t.score is not None and (task["answered_at"] is None or t.at > task["answered_at"]):
        changes.update(score=t.score, answered_at=t.at, event_id=t.event_id or task["event_id"],
                       previous_score=task["score"] if task["score"] is not None else t.previous_score)
    made = creates(rules, t)
    if made is not None:
        segment, rate = made
        due = t.at + rules.window
        if due < task["due_at"]:
            changes["due_at"] = due
        if rate > task["sample_rate"]:  # e.g. a sampled passive who now answers as a detractor
            changes.update(segment=segment, sample_rate=rate, triggered_at=t.at)
        if t.followup_offer and task["status"] == "holdout":
            changes["status"] = "open"
    if t.decision_id is not None:
        changes.update(decision_id=t.decision_id, reason=t.reason, churn_risk=t.churn_risk)
    return changes


def answer_triggers(customer_id: str, answers: list[tuple[datetime, int, str | None]],
                    earlier: list[tuple[datetime, int]]) -> list[Trigger]:
    """One trigger per answer (time, score, event_id), in time order, each with the customer's previous
    answer among `earlier` (stored answers) and the answers themselves."""
    known = sorted([(at, score) for at, score in earlier] + [(at, score) for at, score, _ in answers])
    out = []
    for at, score, event_id in sorted(answers, key=lambda a: a[0]):
        before = [s for a, s in known if a < at]
        out.append(Trigger(customer_id, at, score=score, previous_score=before[-1] if before else None,
                           event_id=event_id))
    return out


def contacted_at(task: dict) -> datetime | None:
    """When an agent contacted the customer: the claim (work under way), or a close as reached / resolved.
    A task closed as not reached counts as not contacted, claimed or not."""
    if task["status"] == "closed" and task["outcome"] not in CONTACTED_OUTCOMES:
        return None
    if task["claimed_at"] is not None:
        return task["claimed_at"]
    return task["closed_at"] if task["status"] == "closed" else None


# --------------------------------------------------------------------------------------------- report


CAVEAT_OBSERVATIONAL = (
    "contacted vs not contacted is observational, not randomised: agents reach some customers and not others "
    "(the reachable, the less angry), so the difference mixes the contact's effect with who was reached")
CAVEAT_HOLDOUT = (
    "contacted-group vs holdout is randomised (a hash of the customer id): every non-holdout detractor counts "
    "in the first group whether reached or not (intention to treat), so the difference is the effect of the "
    "follow-up programme as run")


def _share(k: int, n: int) -> dict:
    from retention.stats import wilson  # scipy: loaded by the report only

    ci = wilson(k, n)
    return {"n": n, "count": k, "share": None if n == 0 else k / n,
            "low": None if n == 0 else ci.low, "high": None if n == 0 else ci.high}


def iso_week(ts: datetime) -> str:
    year, week, _ = ts.astimezone(UTC).isocalendar()
    return f"{year}-W{week:02d}"


def report(tasks: list[dict], cancellations: dict[str, list[datetime]], since: datetime, as_of: datetime,
           within_hours: float = 48.0, horizon_days: int = 30) -> dict:
    """What the follow-ups did, for detractors whose task was triggered in [since, as_of):

    - `weeks`: by ISO week of the answer, the detractors to contact (holdout apart) and the share contacted
      within `within_hours` of it (contacted_at);
    - `retention`: of those whose `horizon_days` have passed by `as_of`, the share with no cancellation signal
      (a cancelled event or outcome, or a still-active check saying inactive) within the horizon after the
      answer: contacted vs not contacted (observational) and, with a holdout, assigned vs holdout (randomised);
    - `sampled`: passives' and promoters' tasks, each weighted by 1 / its sample rate (the answers it stands for).
    """
    from retention.stats import newcombe_difference

    within = timedelta(hours=within_hours)
    horizon = timedelta(days=horizon_days)
    in_period = [t for t in tasks if since <= t["triggered_at"] < as_of]
    detractors = [t for t in in_period if t["segment"] == "detractor"]
    weeks: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # to contact, in time, holdout
    groups: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # group -> [n, retained]
    for t in detractors:
        week = weeks[iso_week(t["triggered_at"])]
        if t["holdout"]:
            week[2] += 1
        else:
            week[0] += 1
            at = contacted_at(t)
            week[1] += at is not None and at <= t["triggered_at"] + within
        if t["triggered_at"] + horizon > as_of:
            continue  # not matured: its retention is not known yet
        end = t["triggered_at"] + horizon
        retained = not any(t["triggered_at"] < c <= end for c in cancellations.get(t["customer_id"], ()))
        names = ["holdout"] if t["holdout"] else [
            "assigned", "contacted" if contacted_at(t) is not None else "not_contacted"]
        for name in names:
            groups[name][0] += 1
            groups[name][1] += retained
    retention = {name: _share(groups[name][1], groups[name][0])
                 for name in ("contacted", "not_contacted", "assigned", "holdout")}

    def difference(a: str, b: str) -> dict | None:
        (n1, s1), (n2, s2) = groups[a], groups[b]
        return None if not n1 or not n2 else newcombe_difference(s1, n1, s2, n2).as_dict()

    sampled_out = {}
    for segment in ("passive", "promoter"):
        rows = [t for t in in_period if t["segment"] == segment]
        contacted = [t for t in rows if contacted_at(t) is not None]
        sampled_out[segment] = {"tasks": len(rows), "contacted": len(contacted),
                                "answers_represented": round(sum(1.0 / t["sample_rate"] for t in rows), 6),
                                "contacted_represented": round(sum(1.0 / t["sample_rate"] for t in contacted), 6)}
    caveats = [CAVEAT_OBSERVATIONAL] + ([CAVEAT_HOLDOUT] if groups["holdout"][0] else [
        "no holdout: set holdout_share in config/followups.toml for a randomised comparison"])
    return {
        "since": since, "as_of": as_of, "within_hours": within_hours, "horizon_days": horizon_days,
        "detractors": len([t for t in detractors if not t["holdout"]]),
        "holdout": len([t for t in detractors if t["holdout"]]),
        "weeks": [{"week": w, "holdout": h, **_share(k, n)} for w, (n, k, h) in sorted(weeks.items())],
        "retention": retention,
        "contacted_minus_not_contacted": difference("contacted", "not_contacted"),
        "assigned_minus_holdout": difference("assigned", "holdout"),
        "sampled": sampled_out,
        "caveats": caveats,
    }


# --------------------------------------------------------------------------------------------- config


def _share_check(value: float) -> None:
    if not 0 <= value <= 1:
        raise ValidationError(f"must be a share between 0 and 1, got {value:g}")


class _SampleSchema(ConfigSchema):
    passive = Number(load_default=0.1, validate=_share_check)
    promoter = Number(load_default=0.05, validate=_share_check)


class _FollowupsSchema(ConfigSchema):
    window_hours = Number(load_default=48.0, validate=at_least(1))
    holdout_share = Number(load_default=0.0, validate=_share_check)
    salt = Str(load_default="followups-v1", validate=non_empty)
    sample = Table(_SampleSchema, load_default=lambda: {"passive": 0.1, "promoter": 0.05})

    @post_load
    def _rules(self, data: dict, **_) -> FollowupRules:
        return FollowupRules(window_hours=data["window_hours"], sample=dict(data["sample"]),
                             holdout_share=data["holdout_share"], salt=data["salt"])


_FOLLOWUPS = _FollowupsSchema()


def _label(keys: tuple, raw) -> str | None:
    return "[sample]" if keys == ("sample",) else None


def load_followups(path: str | Path = DEFAULT_FOLLOWUPS) -> FollowupRules:
    """config/followups.toml, or a FollowupsError listing every problem in it."""
    return load_file(Path(path), _FOLLOWUPS, FollowupsError, "follow-up rules", _label)
