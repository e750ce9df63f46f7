"""Drift: PSI on constructed distributions with known answers, categories never seen at training, the
reference block training writes, and model versions trained before it existed."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from retention import drift
from retention.artifacts import verify_version
from retention.features import FEATURE_VERSION


def _reference(values, categorical=()):
    return drift.feature_reference(values, categorical, "test rows")["features"]


def test_identical_distributions_have_a_psi_near_zero():
    rng = np.random.default_rng(1)
    ref = _reference({"x": rng.normal(size=20_000)})["x"]
    live = drift.feature_drift("x", ref, rng.normal(size=20_000).tolist(), 20_000)
    assert ref["shares"] == pytest.approx([0.1] * 10, abs=1e-3)  # deciles of the training rows
    assert live.psi < 0.005 and live.verdict == "stable"
    assert live.psi < 3 * live.noise  # within what sampling alone gives


def test_a_shifted_distribution_is_a_major_shift():
    rng = np.random.default_rng(2)
    ref = _reference({"x": rng.normal(size=20_000)})["x"]
    moved = drift.feature_drift("x", ref, (rng.normal(size=5_000) + 1.0).tolist(), 20_000)
    assert moved.psi > drift.MAJOR and moved.verdict == "major"
    assert moved.bin.startswith(">") and moved.actual > 0.3 > moved.expected  # the top decile filled up
    slight = drift.feature_drift("x", ref, (rng.normal(size=20_000) + 0.25).tolist(), 20_000)
    assert drift.MODERATE > slight.psi > 0.02  # a quarter of a standard deviation: noticed, not alarming


def test_psi_matches_the_formula_on_hand_made_shares():
    # (0.5 - 0.25) ln(0.5 / 0.25) + (0.5 - 0.75) ln(0.5 / 0.75)
    assert drift.psi([0.25, 0.75], [0.5, 0.5]) == pytest.approx(0.25 * math.log(2) - 0.25 * math.log(2 / 3))
    assert drift.psi([0.5, 0.5], [0.5, 0.5]) == 0.0
    # an empty bin counts as EPSILON, not as zero (which would make PSI infinite)
    assert drift.psi([1.0, 0.0], [0.9, 0.1]) == pytest.approx(
        (0.9 - 1.0) * math.log(0.9) + (0.1 - drift.EPSILON) * math.log(0.1 / drift.EPSILON))
    assert [drift.verdict(v) for v in (0.0, 0.099, 0.1, 0.249, 0.25, None)] == [
        "stable", "stable", "moderate", "moderate", "major", "n/a"]


def test_missing_values_are_a_bin_of_their_own():
    ref = _reference({"usage": np.array([1.0, 2.0, 3.0, 4.0, math.nan] * 100)})["usage"]
    assert ref["missing"] == pytest.approx(0.2)
    same = drift.feature_drift("usage", ref, [1.0, 2.0, 3.0, 4.0, None] * 20, 500)
    unknown = drift.feature_drift("usage", ref, [None] * 80 + [1.0, 2.0, 3.0, 4.0] * 5, 500)
    assert same.psi < 1e-9
    assert unknown.verdict == "major" and unknown.bin == drift.MISSING and unknown.actual == pytest.approx(0.8)


def test_a_count_with_few_values_gets_fewer_bins():
    ref = _reference({"prior_offers": np.array([0.0] * 700 + [1.0] * 200 + [2.0] * 100)})["prior_offers"]
    assert ref["edges"] == [0.0, 1.0] and ref["shares"] == pytest.approx([0.7, 0.2, 0.1])  # 0, 1, 2 or more


def test_an_unseen_category_is_pooled_and_counts_as_drift():
    ref = _reference({"channel": np.array(["web"] * 600 + ["ios"] * 300 + [None] * 100, dtype=object)},
                     categorical=["channel"])["channel"]
    assert ref["shares"] == {"(missing)": 0.1, "ios": 0.3, "web": 0.6}
    same = drift.feature_drift("channel", ref, ["web"] * 60 + ["ios"] * 30 + [None] * 10, 1000)
    assert same.psi < 1e-9
    new = drift.feature_drift("channel", ref, ["web"] * 50 + ["ios"] * 25 + [None] * 5 + ["partner"] * 20, 1000)
    # 20% in a category training never saw: (0.2 - 1e-4) ln(0.2 / 1e-4) alone is 1.52
    assert new.verdict == "major" and new.bin == drift.OTHER and new.actual == pytest.approx(0.2)


def test_rare_training_categories_are_pooled_into_other():
    values = np.array(["a"] * 50 + ["b"] * 30 + [f"rare{i}" for i in range(20)], dtype=object)
    ref = drift.categorical_reference(values, max_categories=2)
    assert ref["shares"] == {"a": 0.5, "b": 0.3, drift.OTHER: 0.2}
    # live categories outside the kept ones, seen at training or not, land in the same pooled bin
    same = drift.feature_drift("c", ref, ["a"] * 5 + ["b"] * 3 + ["rare1", "brand-new"], 100)
    assert same.psi < 1e-9


OLD_META = {"version": "v-old", "models": {"offer_response": {"trained": True, "gate": {
    "verdict": "model", "offer_mix": {"model": {"none": 50, "pause_1m": 50}, "rules": {"none": 100}}}}}}


def _decision(offer="none", **features):
    return {"features": features, "reason": "temporary", "offer_id": offer, "model_version": "v-old",
            "reason_codes": [], "experiment": None}


def test_a_model_without_a_reference_still_reports_the_offer_mix():
    report = drift.drift_report(OLD_META, [_decision("none", price=9.0), _decision("pause_1m", price=9.0)])
    assert report.features == [] and report.why == drift.NO_REFERENCE and report.max_psi is None
    assert "no reference in this model version" in report.why
    assert report.offer_mix.policy == "model" and report.offer_mix.psi < 1e-9


def test_the_offer_mix_is_compared_with_the_policy_the_gate_chose():
    rules = {**OLD_META, "models": {"offer_response": {"trained": True, "gate": {
        **OLD_META["models"]["offer_response"]["gate"], "verdict": "rules"}}}}
    only_none = [_decision("none") for _ in range(10)]
    assert drift.drift_report(rules, only_none).offer_mix.psi < 1e-9  # the rules offered nothing either
    by_model = drift.drift_report(OLD_META, only_none).offer_mix
    assert by_model.verdict == "major" and by_model.shares["pause_1m"] == (0.5, 0.0)
    # decisions of another model version, the rules after a scoring failure, or a fixed experiment arm
    # say nothing about this version's policy
    others = [{**_decision("pause_1m"), "model_version": "v-new"},
              {**_decision("pause_1m"), "reason_codes": ["scoring_timeout"]},
              {**_decision("pause_1m"), "experiment": {"kind": "offer", "variant": "pause"}}]
    report = drift.drift_report(OLD_META, only_none + others)
    assert report.offer_mix.live_decisions == 10 and report.offer_mix_excluded == 3
    churn_only = {"version": "v", "models": {"offer_response": {"trained": False}}}
    assert "no offer-response model" in drift.drift_report(churn_only, only_none).offer_mix_why


def test_training_records_the_reference_of_the_offer_model_rows(trained):
    meta = json.loads((trained / "metadata.json").read_text())
    ref = meta["feature_reference"]
    offer = meta["models"]["offer_response"]
    assert ref["source"] == "offer_response training rows" and ref["rows"] == offer["flows"]["used"]
    assert set(ref["features"]) == set(offer["columns"]) | {"reason"}
    for name, f in ref["features"].items():
        total = sum(f["shares"].values()) if f["kind"] == "categorical" else sum(f["shares"]) + f["missing"]
        assert total == pytest.approx(1.0, abs=1e-4), name
    assert ref["features"]["reason"]["kind"] == "categorical"
    assert ref["features"]["price"]["kind"] == "numeric" and len(ref["features"]["price"]["edges"]) >= 2
    assert len(json.dumps(ref)) < 20_000  # compact: bins, not rows
    verify_version(trained, feature_version=FEATURE_VERSION)  # the artifact still verifies


def test_the_training_rows_do_not_drift_from_their_own_reference(trained, sim_dir):
    """The reference describes the rows the model was fitted on: those rows, scored as live decisions, are
    stable on every feature (a binning or alignment bug would show here)."""
    from retention.features import FeatureSpec
    from retention.offers import load_catalog
    from training.dataset import open_dataset, resolve_window_end
    from training.train import response_rows

    meta = json.loads((trained / "metadata.json").read_text())
    rows = response_rows(open_dataset(sim_dir), load_catalog(), FeatureSpec.from_dict(meta["feature_spec"]),
                         resolve_window_end(sim_dir, None))
    columns = list(meta["feature_reference"]["features"])
    sample = rows.sample(2000, random_state=0)
    decisions = [{"features": {c: (None if isinstance(v, float) and math.isnan(v) else v)
                               for c, v in r.items() if c != "reason"},
                  "reason": r["reason"], "offer_id": "none", "model_version": None, "reason_codes": [],
                  "experiment": None} for r in sample[columns].to_dict("records")]
    report = drift.drift_report(meta, decisions)
    assert len(report.features) == len(columns)
    assert report.max_psi < drift.MODERATE, [(f.name, f.psi) for f in report.features[:3]]


def test_a_version_trained_before_drift_monitoring_still_loads(trained, tmp_path):
    old = tmp_path / trained.name
    shutil.copytree(trained, old)
    meta = json.loads((old / "metadata.json").read_text())
    del meta["feature_reference"]
    (old / "metadata.json").write_text(json.dumps(meta))
    meta = verify_version(old, feature_version=FEATURE_VERSION)
    assert drift.drift_report(meta, [_decision(price=1.0)]).why == drift.NO_REFERENCE
