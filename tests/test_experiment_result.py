"""The typed analysis result (retention.experiment_analysis.ExperimentResult): its JSON form is what the API
serves and `retention experiment report --json` writes, with the same keys as ever and no NaN, and it reads back
(`from_json`) to a result that gives the same JSON, the same page and the same terminal text. That is how
`retention experiment simulate` renders what the service answered."""

from __future__ import annotations

import dataclasses
import json
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from reports.experiment import render_html
from reports.text import experiment_text
from retention.experiment_analysis import ExperimentResult, MeanEstimate, RateEstimate, analyse
from retention.experiments import HOLDOUT, load_experiments
from retention.jsonvalues import dumps, jsonable
from retention.offers import load_catalog

CATALOG = load_catalog()
START = datetime(2026, 12, 1, tzinfo=UTC)
DESIGN = """
[[experiment]]
name = "typed-result"
description = "pause vs discount vs the model, 10% holdout"
start = 2026-12-01T00:00:00Z
holdout = 0.10
control = "model"
variants = [
  { name = "model", kind = "model" },
  { name = "pause", kind = "offer", offer = "pause_2m" },
  { name = "discount", kind = "offer", offer = "discount_30_3m" },
]
"""
OFFER = {"model": "credit_1", "pause": "pause_2m", "discount": "discount_30_3m", HOLDOUT: "none"}
STAYS = {"model": 0.62, "pause": 0.55, "discount": 0.68, HOLDOUT: 0.5}
# Today's keys of the JSON form, in their order: the API's contract.
KEYS = {
    "result": ["experiment", "description", "definition", "as_of", "start", "stop", "running", "primary_metric",
               "guardrail_metrics", "control", "unit", "metric_definitions", "arms", "comparisons", "srm",
               "sample_size", "timeline", "warnings"],
    "arm": ["name", "kind", "offer", "is_control", "is_holdout", "expected_share", "assigned", "exposed", "metrics"],
    "rate": ["n", "successes", "estimate", "low", "high", "missing"],
    "mean": ["n", "estimate", "low", "high", "missing"],
    "comparison": ["metric", "arm", "baseline", "difference", "low", "high", "p_value", "always_valid_low",
                   "always_valid_high", "n_arm", "n_baseline", "p_adjusted", "significant"],
    "srm": ["observed", "expected", "chi2", "p_value", "alarm"],
    "sample_size": ["metric", "baseline_rate", "mde", "alpha", "power", "per_arm", "smallest_arm_now",
                    "detectable_now"],
    "timeline": ["day", "arm", "baseline", "metric", "n_arm", "n_baseline", "difference", "always_valid_low",
                 "always_valid_high"],
}


def records(experiment, n: int = 900, seed: int = 4) -> dict:
    """Store-shaped records (store.Store.experiment_records) of `n` customers decided over 60 days: most shown,
    some accepting, billing's day-30/90 reports and payments, a few cancellations and unreported outcomes."""
    rng = np.random.default_rng(seed)
    recs: dict = {"decisions": [], "outcomes": {}, "still_active": [], "payments": [], "cancelled": []}
    for i in range(n):
        cid, did = f"c{i:05d}", f"d{i:05d}"
        arm = experiment.variant_of(cid)
        at = START + timedelta(hours=i * 60 * 24 / n)
        recs["decisions"].append({"decision_id": did, "customer_id": cid, "created_at": at, "offer_id": OFFER[arm],
                                  "experiment_variant": arm,
                                  "experiment": {"definition": experiment.definition_hash()}})
        stays = rng.random() < STAYS[arm]
        outcomes = {"shown": at + timedelta(seconds=5)} if rng.random() < 0.97 else {}
        if OFFER[arm] != "none" and (stays or rng.random() < 0.15):
            outcomes["accepted"] = at + timedelta(seconds=30)
        recs["outcomes"][did] = outcomes
        if rng.random() < 0.03:
            continue  # billing never reports this one: missing, not guessed
        recs["still_active"].append({"decision_id": did, "occurred_at": at + timedelta(days=30), "day": 30,
                                     "active": bool(stays)})
        recs["still_active"].append({"decision_id": did, "occurred_at": at + timedelta(days=90), "day": 90,
                                     "active": bool(stays and rng.random() < 0.85)})
        if stays:
            recs["payments"] += [{"customer_id": cid, "occurred_at": at + timedelta(days=d), "amount": 12.99}
                                 for d in (15, 45, 75)]
        else:
            recs["cancelled"].append({"customer_id": cid, "occurred_at": at + timedelta(days=float(rng.uniform(5, 25)))})
    return recs


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    path = tmp_path_factory.mktemp("xp") / "experiments.toml"
    path.write_text(DESIGN)
    return load_experiments(CATALOG, path).get("typed-result")


@pytest.fixture(scope="module", params=["mature", "young"])
def result(request, experiment) -> ExperimentResult:
    """A result with every part filled (mature), and one so young that most numbers do not exist yet."""
    as_of = START + (timedelta(days=150) if request.param == "mature" else timedelta(days=20))
    return analyse(experiment, CATALOG, records(experiment), as_of)


def test_the_json_form_has_the_keys_of_the_api_and_no_nan(result):
    body = jsonable(result)
    assert list(body) == KEYS["result"]
    for arm in body["arms"]:
        assert list(arm) == KEYS["arm"]
        for name, m in arm["metrics"].items():
            assert list(m) == KEYS["rate" if name != "net_revenue_90" else "mean"]
    assert all(list(c) == KEYS["comparison"] for c in body["comparisons"])
    assert list(body["srm"]) == ["assigned", "exposed"] and all(list(s) == KEYS["srm"] for s in body["srm"].values())
    assert list(body["sample_size"]) == KEYS["sample_size"]
    assert all(list(t) == KEYS["timeline"] for t in body["timeline"])
    json.loads(dumps(result))  # allow_nan=False: NaN and infinities are null by then


def test_the_json_form_reads_back_to_the_same_json_page_and_text(result):
    text = dumps(result)
    back = ExperimentResult.from_json(json.loads(text))
    assert dumps(back) == text
    assert render_html(back) == render_html(result)
    assert experiment_text(back) == experiment_text(result)
    assert back.as_of == result.as_of and back.start == result.start
    assert [t.day for t in back.timeline] == [t.day for t in result.timeline]
    assert {type(m) for a in back.arms for m in a.metrics.values()} == {RateEstimate, MeanEstimate}


def test_a_young_result_has_missing_numbers_that_read_back_as_nan(experiment):
    young = analyse(experiment, CATALOG, records(experiment), START + timedelta(days=20))
    body = jsonable(young)
    control = next(a for a in body["arms"] if a["is_control"])
    assert control["metrics"]["retained_30"]["estimate"] is None and body["timeline"] == []
    back = ExperimentResult.from_json(body)
    estimate = next(a for a in back.arms if a.is_control).metric("retained_30").estimate
    assert math.isnan(estimate) and back.sample_size.per_arm is None and back.sample_size.baseline_rate is None


def test_from_json_ignores_keys_it_does_not_know(result):
    """A command line older than the service still reads its answer."""
    body = jsonable(result)
    newer = {**body, "bayesian": {"p_best": [0.2, 0.8]},
             "arms": [{**a, "colour": "red", "metrics": {m: {**v, "sd": 1.0} for m, v in a["metrics"].items()}}
                      for a in body["arms"]]}
    assert jsonable(ExperimentResult.from_json(newer)) == body


def test_the_result_is_frozen(result):
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.arms[0].assigned = 0  # type: ignore[misc]

