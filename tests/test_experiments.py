"""Experiment definitions, assignment and the analysis' counting rules (retention.experiments,
retention.experiment_analysis). The statistics themselves are tested in test_stats.py; the whole loop through
the API in tests/service/test_experiment_e2e.py."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from samples import SECOND, THREE_ARMS
from scipy import stats as sps

from retention.decision import CancelRequest, PastOffer
from retention.experiment_analysis import analyse
from retention.experiments import HOLDOUT, ExperimentError, load_experiments, unit_hash
from retention.offers import load_catalog
from retention.policy import Policy, load_policy

CATALOG = load_catalog()
NOW = datetime(2026, 12, 10, tzinfo=UTC)

def book_of(tmp_path: Path, text: str):
    path = tmp_path / "experiments.toml"
    path.write_text(text)
    return load_experiments(CATALOG, path)


def test_assignment_over_a_million_customers_matches_the_design(tmp_path):
    e = book_of(tmp_path, THREE_ARMS).get("three-arms")
    ids = [f"c{i:08d}" for i in range(1_000_000)]
    counts = Counter(e.variant_of(c) for c in ids)
    shares = e.expected_shares
    assert shares == pytest.approx({"model": 0.475, "pause": 0.2375, "discount": 0.2375, HOLDOUT: 0.05})
    observed = [counts[a] for a in shares]
    expected = [len(ids) * shares[a] for a in shares]
    assert sps.chisquare(observed, expected).pvalue > 0.001
    for o, x in zip(observed, expected, strict=True):  # each arm within 4 standard errors of its share
        assert abs(o - x) < 4 * np.sqrt(x)


def test_assignment_is_the_same_in_another_process(tmp_path):
    path = tmp_path / "experiments.toml"
    path.write_text(THREE_ARMS)
    e = load_experiments(CATALOG, path).get("three-arms")
    ids = [f"cust-{i}" for i in range(2000)]
    script = ("import sys; from retention.experiments import load_experiments; from retention.offers import "
              f"load_catalog; e = load_experiments(load_catalog(), {str(path)!r}).get('three-arms'); "
              "print(','.join(e.variant_of(f'cust-{i}') for i in range(2000)))")
    other = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": "123", "PATH": ""}).stdout.strip().split(",")
    assert other == [e.variant_of(c) for c in ids]
    assert len(set(other)) == 4


def test_concurrent_experiments_never_share_a_customer(tmp_path):
    book = book_of(tmp_path, THREE_ARMS + SECOND)
    seen = Counter()
    for i in range(20_000):
        e = book.candidate(f"x{i}", NOW)
        seen[e.name if e else None] += 1
        u = unit_hash("retention-offers/experiment-layer/v1", f"x{i}")
        assert (e.name == "three-arms") == (u < 0.5)
    assert seen[None] == 0 and abs(seen["three-arms"] - 10_000) < 4 * np.sqrt(5_000)


@pytest.mark.parametrize("text, message", [
    (THREE_ARMS + SECOND.replace("[0.5, 1.0]", "[0.4, 1.0]"),
     "experiment 2 (other-half): slice: overlapping traffic slices: [0.4, 1.0] here and [0.0, 0.5] in experiment 1"),
    (THREE_ARMS.replace("pause_2m", "pause_9m"),
     "experiment 1 (three-arms): variant 2 (pause): offer: 'pause_9m' is not an offer of the catalog"),
    (THREE_ARMS.replace("2026-12-01T00:00:00Z", "2026-12-01T00:00:00"),
     "experiment 1 (three-arms): start: must be a date-time with a time zone"),
    (THREE_ARMS.replace("holdout = 0.05", "holdout = 1.5"), "experiment 1 (three-arms): holdout: must be a share in [0, 1)"),
    (THREE_ARMS.replace('control = "model"', 'control = "champion"'),
     "experiment 1 (three-arms): control: 'champion' is not one of its variants ['model', 'pause', 'discount']"),
    (THREE_ARMS.replace("weight = 2", "weight = -1"), "experiment 1 (three-arms): variant 1 (model): weight: must be > 0"),
    (THREE_ARMS.replace("slice = [0.0, 0.5]", "slice = [0.0, 0.5]\ncolour = 'red'"),
     "experiment 1 (three-arms): colour: unknown key"),
    (THREE_ARMS + THREE_ARMS.replace("[0.0, 0.5]", "[0.6, 0.7]"),
     "experiment 2 (three-arms): name: duplicate: experiment 1 has the name 'three-arms' too"),
    ("[[experiment]\nname = 'x'", "not valid TOML"),
])
def test_a_bad_experiments_file_is_refused_with_file_and_experiment_named(tmp_path, text, message):
    with pytest.raises(ExperimentError) as info:
        book_of(tmp_path, text)
    assert f"{tmp_path / 'experiments.toml'}: {message}" in str(info.value)


def test_experiments_that_do_not_overlap_in_time_may_reuse_a_slice(tmp_path):
    later = THREE_ARMS.replace("three-arms", "later").replace("2026-12-01", "2027-02-01")
    book = book_of(tmp_path, THREE_ARMS.replace('control = "model"', 'control = "model"\nstop = 2027-01-01T00:00:00Z')
                   + later)  # same slice [0, 0.5), one after the other: accepted
    customer = _in_slice(1)[0]
    assert book.candidate(customer, NOW).name == "three-arms"
    assert book.candidate(customer, datetime(2027, 1, 15, tzinfo=UTC)) is None  # between the two
    assert book.candidate(customer, datetime(2027, 2, 15, tzinfo=UTC)).name == "later"


def _policy(tmp_path, text=THREE_ARMS):
    catalog = CATALOG
    return Policy(catalog, load_policy(catalog), None, book_of(tmp_path, text))


def _in_slice(n: int, start: float = 0.0, end: float = 0.5) -> list[str]:
    out, i = [], 0
    while len(out) < n:
        cid = f"s{i}"
        if start <= unit_hash("retention-offers/experiment-layer/v1", cid) < end:
            out.append(cid)
        i += 1
    return out


def test_eligibility_comes_before_assignment(tmp_path):
    """A customer who cannot receive one of the arms' offers is in no arm: here, a pause used 3 months ago."""
    policy = _policy(tmp_path)
    paused = [PastOffer("pause_1m", "pause", NOW - timedelta(days=90), accepted=True, months=1)]
    for cid in _in_slice(40):
        request = CancelRequest(cid, "too_expensive", "monthly", "web", 12.99, plan_id="basic_monthly")
        d = policy.decide(request, None, NOW, history=paused)
        assert d.experiment is None and "experiment_variant_ineligible" in d.reason_codes
        d = policy.decide(request, None, NOW, history=[])
        assert d.experiment is not None and d.experiment.variant == policy.experiments.get(
            "three-arms").variant_of(cid)
        if d.experiment.kind == "offer":
            assert d.offer.id == d.experiment.offer and d.propensity == pytest.approx(0.2375)
        if d.experiment.variant == HOLDOUT:
            assert d.offer.id == "none" and "experiment_holdout" in d.reason_codes


def test_the_population_filter_keeps_others_out(tmp_path):
    text = THREE_ARMS.replace('control = "model"', 'control = "model"\npopulation = { reasons = ["temporary"] }')
    policy = _policy(tmp_path, text)
    for cid in _in_slice(10):
        out = policy.decide(CancelRequest(cid, "too_expensive", "monthly", "web", 12.99), None, NOW, history=[])
        assert out.experiment is None and "experiment_population_mismatch" in out.reason_codes
        inside = policy.decide(CancelRequest(cid, "temporary", "monthly", "web", 12.99), None, NOW, history=[])
        assert inside.experiment is not None


def test_an_experiment_not_running_assigns_no_one(tmp_path):
    policy = _policy(tmp_path)
    for cid in _in_slice(10):
        d = policy.decide(CancelRequest(cid, "temporary", "monthly", "web", 12.99), None,
                          datetime(2026, 11, 1, tzinfo=UTC), history=[])
        assert d.experiment is None and not any(c.startswith("experiment") for c in d.reason_codes)


# ----------------------------------------------------------------------------------------------- analysis


def _records(rows: list[dict], definition: str) -> dict:
    """Store-shaped records from compact rows: customer, arm, offer, decided, outcomes, active30, paid, ..."""
    recs = {"decisions": [], "outcomes": {}, "still_active": [], "payments": [], "cancelled": []}
    for i, r in enumerate(rows):
        did = f"d{i}"
        at = r.get("at", datetime(2026, 12, 2, tzinfo=UTC))
        recs["decisions"].append({"decision_id": did, "customer_id": r["customer"], "created_at": at,
                                  "offer_id": r.get("offer", "none"), "experiment_variant": r["arm"],
                                  "experiment": {"definition": r.get("definition", definition)}})
        recs["outcomes"][did] = {k: at + timedelta(minutes=1) for k in r.get("outcomes", ("shown",))}
        for day in (30, 90):
            if r.get(f"active{day}") is not None:
                recs["still_active"].append({"decision_id": did, "occurred_at": at + timedelta(days=day),
                                             "day": day, "active": r[f"active{day}"]})
        for k, amount in enumerate(r.get("paid", ())):
            recs["payments"].append({"customer_id": r["customer"], "occurred_at": at + timedelta(days=15 + 30 * k),
                                     "amount": amount})
        if "cancelled_after" in r:
            recs["cancelled"].append({"customer_id": r["customer"], "occurred_at": at + r["cancelled_after"]})
    return recs


def test_only_outcomes_that_truly_happened_count(tmp_path):
    e = book_of(tmp_path, THREE_ARMS).get("three-arms")
    rows = [
        # accepted, then cancelled within 30 days: not a save, although billing still says active at day 30
        {"customer": "a", "arm": "pause", "offer": "pause_2m", "outcomes": ("shown", "accepted"),
         "active30": True, "cancelled_after": timedelta(days=12)},
        # abandoned flow (no outcome but shown), billing reports active: retained
        {"customer": "b", "arm": "pause", "offer": "pause_2m", "active30": True, "active90": True,
         "paid": (0.0, 0.0, 12.99)},
        # shown, accepted a credit, stayed: revenue is what was paid minus the credit's cost
        {"customer": "c", "arm": "model", "offer": "credit_1", "outcomes": ("shown", "accepted"),
         "active30": True, "active90": True, "paid": (12.99, 12.99, 12.99)},
        # never shown: assigned but not exposed
        {"customer": "d", "arm": "model", "offer": "credit_1", "outcomes": (), "active30": True},
        # mature but billing never reported: missing, not guessed
        {"customer": "e", "arm": "discount", "offer": "discount_30_3m", "outcomes": ("shown", "declined")},
        # too young for day 30 at the analysis time
        {"customer": "f", "arm": "discount", "offer": "discount_30_3m", "at": datetime(2027, 3, 1, tzinfo=UTC)},
        # the same customer again later: counted once, by the first exposed decision
        {"customer": "b", "arm": "pause", "offer": "pause_2m", "at": datetime(2026, 12, 20, tzinfo=UTC),
         "active30": False},
        # made under an earlier definition: left out, with a warning
        {"customer": "g", "arm": "pause", "offer": "pause_2m", "definition": "0ld", "active30": True},
    ]
    result = analyse(e, CATALOG, _records(rows, e.definition_hash()), datetime(2027, 3, 10, tzinfo=UTC))
    arms = {a.name: a for a in result.arms}
    pause, model, discount = (arms[n].metrics for n in ("pause", "model", "discount"))
    assert arms["pause"].assigned == 2 and arms["pause"].exposed == 2
    assert pause["retained_30"].n == 2 and pause["retained_30"].successes == 1  # b only
    assert pause["accepted"].successes == 1
    assert arms["model"].assigned == 2 and arms["model"].exposed == 1
    assert model["net_revenue_90"].estimate == pytest.approx(3 * 12.99 - CATALOG["credit_1"].cost)
    assert discount["retained_30"] == replace(discount["retained_30"], n=0, missing=1)
    assert arms["discount"].exposed == 2
    assert any("another definition" in w for w in result.warnings)


def test_a_sample_ratio_mismatch_is_flagged(tmp_path):
    e = book_of(tmp_path, THREE_ARMS).get("three-arms")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(20_000):
        arm = e.variant_of(f"c{i}")
        if arm == "pause" and rng.random() < 0.1:  # a tenth of one arm's decisions never logged
            continue
        rows.append({"customer": f"c{i}", "arm": arm, "offer": "none", "active30": True})
    result = analyse(e, CATALOG, _records(rows, e.definition_hash()), datetime(2027, 3, 10, tzinfo=UTC))
    assert result.srm.assigned.alarm and result.srm.assigned.p_value < 1e-6
    balanced = [r for r in rows if r["arm"] != "pause"] + [
        {"customer": f"c{i}", "arm": "pause", "offer": "none", "active30": True}
        for i in range(20_000) if e.variant_of(f"c{i}") == "pause"]
    result = analyse(e, CATALOG, _records(balanced, e.definition_hash()), datetime(2027, 3, 10, tzinfo=UTC))
    assert not result.srm.assigned.alarm


def test_the_report_plans_the_sample_size_as_the_cli_does(tmp_path):
    """One sizing rule: the analysis' sample-size section and `retention experiment sample-size` gave different
    answers for the same experiment (the report sized each comparison at the full alpha, the CLI split it)."""
    from click.testing import CliRunner

    from cli import main

    e = book_of(tmp_path, THREE_ARMS).get("three-arms")  # three arms and a holdout: 2 + 3 comparisons
    rng = np.random.default_rng(1)
    rows = [{"customer": f"c{i}", "arm": e.variant_of(f"c{i}"), "offer": "none", "active30": bool(rng.random() < 0.6)}
            for i in range(3_000)]
    plan = analyse(e, CATALOG, _records(rows, e.definition_hash()), datetime(2027, 3, 10, tzinfo=UTC)).sample_size
    assert plan.alpha == pytest.approx(0.05 / 5)
    out = CliRunner().invoke(main, ["experiment", "sample-size", "--baseline", repr(plan.baseline_rate), "--mde",
                                    repr(plan.mde), "--arms", "3", "--holdout"])
    assert out.exit_code == 0, out.output
    assert out.output.startswith(f"{plan.per_arm:,} exposed customers per arm"), (plan, out.output)
    assert "5 comparisons with the control and the holdout at alpha 0.01 each" in out.output
