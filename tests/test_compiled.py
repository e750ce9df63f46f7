"""The compiled scorer gives the trained Pipeline's probabilities (to 1e-9) on real feature rows: every
reason, every offer, missing NPS and usage, unknown categories. The forest tests take the gradient-boosting
pipeline inside whatever learner training chose (a blend, maybe calibrated); the request-path test takes the
whole served model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from retention.artifacts import load_artifact
from retention.compiled import CompileError, compile_pipeline
from retention.contract import REASONS
from retention.features import FEATURE_VERSION, FeatureSpec
from retention.model import decision_columns
from retention.offers import load_catalog
from retention.policy import ModelScorer
from training.dataset import open_dataset, resolve_window_end
from training.train import response_rows

CATALOG = load_catalog()


@pytest.fixture(scope="module")
def model_rows(trained, sim_dir):
    model, meta = load_artifact(trained, feature_version=FEATURE_VERSION)
    rows = response_rows(open_dataset(sim_dir), CATALOG, FeatureSpec.from_dict(meta["feature_spec"]),
                         resolve_window_end(sim_dir, None))
    return model, meta, rows


def _boosting_pipeline(estimator):
    """The gradient-boosting Pipeline inside a learner of training.learners (Calibrated, Blend or itself)."""
    if hasattr(estimator, "estimator_"):
        return _boosting_pipeline(estimator.estimator_)
    for part in getattr(estimator, "estimators_", ()):
        if "columns" in getattr(part, "named_steps", {}):
            return part
    assert "columns" in estimator.named_steps, f"no boosting inside {estimator!r}"
    return estimator


def _records(frame: pd.DataFrame, categorical) -> list[dict]:
    """DataFrame rows as the service holds features: None for a missing category, NaN for a missing number."""
    out = frame.to_dict("records")
    for r in out:
        for c in categorical:
            if isinstance(r[c], float) and np.isnan(r[c]):
                r[c] = None
    return out


def test_compiled_pipeline_equals_the_pipeline_on_every_training_row(model_rows):
    model, meta, rows = model_rows
    pipe = _boosting_pipeline(model["offer_response"])
    cols = meta["feature_names"]["offer_response"]
    compiled = compile_pipeline(pipe)
    frame = rows[cols].copy()
    frame.loc[frame.index[:50], "plan_id"] = "a_plan_never_seen"  # unknown categories go the missing way
    frame.loc[frame.index[50:100], "country"] = None
    expected = pipe.predict_proba(frame)[:, 1]
    got = compiled.predict_proba(compiled.encode(_records(frame, compiled.categorical)))
    assert len(got) > 1000 and np.abs(got - expected).max() < 1e-9


@pytest.mark.slow
def test_the_request_path_scorer_equals_the_pipeline_for_every_reason_and_offer(model_rows):
    model, meta, rows = model_rows
    scorer = ModelScorer.from_estimator(model, meta, CATALOG)
    customers = _records(rows[scorer.spec.names].sample(200, random_state=1), scorer.spec.categorical)
    worst = 0.0
    for i, features in enumerate(customers):
        reason = REASONS[i % len(REASONS)]
        offers = list(CATALOG.offers)[: 2 + i % (len(CATALOG.offers) - 1)]
        got = scorer.p_stay(features, reason, offers)
        worst = max(worst, *np.abs(np.array(got) - scorer.reference_p_stay(features, reason, offers)))
    assert worst < 1e-9


def test_the_decision_columns_are_all_precomputed(model_rows):
    model, meta, _ = model_rows
    scorer = ModelScorer.from_estimator(model, meta, CATALOG)
    assert set(decision_columns(CATALOG["none"], "other")) <= set(scorer.columns)
    with pytest.raises(KeyError):
        scorer.p_stay({}, "not_a_reason", [CATALOG["none"]])


def test_only_pipelines_of_the_trained_shape_compile():
    with pytest.raises(CompileError, match="layout"):
        compile_pipeline("not a pipeline")


@pytest.mark.slow
def test_values_on_and_next_to_every_split_threshold_go_the_pipelines_way(model_rows):
    """The step tables turn `x <= t` into "how many thresholds lie below x": values exactly on a threshold,
    one float either side of it, and missing must all land where sklearn sends them."""
    model, meta, rows = model_rows
    pipe = _boosting_pipeline(model["offer_response"])
    cols = meta["feature_names"]["offer_response"]
    compiled = compile_pipeline(pipe)
    forest = compiled.forest
    base = rows[cols].sample(64, random_state=2).reset_index(drop=True)
    # A block of 4 base rows per (threshold, value), drawn as base.sample(4, random_state=block) draws them,
    # with the threshold's feature set to the value: built with one take and one assignment per feature
    # (concatenating ~3,600 sampled frames took 14 s).
    names, values = [], []
    for f, t in zip(forest.num_feature, forest.num_threshold, strict=True):
        for value in (t, np.nextafter(t, -np.inf), np.nextafter(t, np.inf), np.nan):
            names.append(compiled.columns[f])
            values.append(value)
    rng = np.random.RandomState
    picks = np.concatenate([rng(block).choice(len(base), 4, replace=False) for block in range(len(values))])
    probe = base.iloc[picks].reset_index(drop=True)
    row_names, row_values = np.repeat(names, 4), np.repeat(values, 4)
    for name in dict.fromkeys(names):
        probe.loc[row_names == name, name] = row_values[row_names == name]
    assert len(probe) >= 4 * 4 * 100
    expected = pipe.predict_proba(probe)[:, 1]
    got = compiled.predict_proba(compiled.encode(_records(probe, compiled.categorical)))
    assert np.abs(got - expected).max() < 1e-9
