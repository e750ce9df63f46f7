"""The offer-response learners (training.learners) and their serving forms (retention.scorers): what is served
equals the fitted estimator to 1e-9 after a save and load, a small (reason, offer) cell is shrunk toward its
parents, calibration fixes a miscalibrated model, and inverse-propensity weights undo a skewed history."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from retention.features import FeatureSpec, discover_spec
from retention.model import decision_columns
from retention.offers import load_catalog
from retention.scorers import compile_estimator, load_scorer, probe_from_rows, save_scorer
from training import learners
from training.dataset import open_dataset, resolve_window_end
from training.train import response_rows

CATALOG = load_catalog()


@pytest.fixture(scope="module")
def flows(sim_dir):
    con = open_dataset(sim_dir)
    spec = discover_spec(con)
    rows = response_rows(con, CATALOG, spec, resolve_window_end(sim_dir, None))
    return spec, rows


LEARNERS = {
    "boosting": lambda spec: learners.boosting(spec, 0, min_samples_leaf=40),
    "logistic": lambda spec: learners.logistic(spec, CATALOG),
    "blend, sigmoid-calibrated": lambda spec: learners.Calibrated(
        learners.Blend([learners.boosting(spec, 0), learners.logistic(spec, CATALOG)]), "sigmoid"),
    "logistic, isotonic-calibrated": lambda spec: learners.Calibrated(learners.logistic(spec, CATALOG), "isotonic"),
}


@pytest.mark.parametrize("name", LEARNERS)
def test_the_served_model_equals_the_fitted_one_after_save_and_load(flows, name, tmp_path):
    spec, rows = flows
    model = learners.fit(LEARNERS[name](spec), rows, rows["label"].to_numpy())
    probe_rows = rows.sample(400, random_state=1)
    probe = probe_from_rows(probe_rows, spec.numeric, spec.categorical, model.predict_proba(probe_rows)[:, 1])
    scorer = compile_estimator(model, CATALOG)
    assert probe.max_difference(scorer) < 1e-9
    save_scorer(scorer, tmp_path / "m.npz", probe)
    loaded, loaded_probe = load_scorer(tmp_path / "m.npz", CATALOG)
    assert loaded_probe.max_difference(loaded) < 1e-9
    # and every offer of one request, not only the logged one
    row = probe_rows.iloc[0]
    features = {c: (None if pd.isna(row[c]) else row[c]) for c in spec.names}
    variants = pd.DataFrame([{**features, **decision_columns(o, row["reason"])} for o in CATALOG.offers])
    expected = model.predict_proba(variants)[:, 1]
    got = loaded.predict_proba(features, [(row["reason"], o.id) for o in CATALOG.offers])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)


def _cell_data(n_cell: int, rng) -> tuple[FeatureSpec, pd.DataFrame]:
    """Flows without customer features: technical cancels shown pauses save 40% of the time, except
    (technical, pause_1m), whose n_cell flows were all saved."""
    spec = FeatureSpec((), (), ())
    rows = []
    for offer, n, rate in (("pause_1m", n_cell, 1.0), ("pause_2m", 600, 0.4), ("pause_3m", 600, 0.4),
                           ("none", 600, 0.4)):
        for _ in range(n):
            rows.append({**decision_columns(CATALOG[offer], "technical"), "label": int(rng.random() < rate)})
    frame = pd.DataFrame(rows)
    for name in spec.numeric:
        frame[name] = 0.0
    for name in spec.categorical:
        frame[name] = "x"
    return spec, frame


def test_thirty_flows_do_not_decide_a_cell_alone_but_three_thousand_do():
    rng = np.random.default_rng(0)
    predicted = {}
    for n in (30, 3000):
        spec, frame = _cell_data(n, rng)
        model = learners.fit(learners.logistic(spec, CATALOG), frame, frame["label"].to_numpy())
        cell = pd.DataFrame([{**frame.iloc[0].drop("label").to_dict(), **decision_columns(CATALOG["pause_1m"], "technical")}])
        predicted[n] = float(model.predict_proba(cell)[:, 1][0])
    assert 0.45 < predicted[30] < 0.9  # pulled toward the pause family's 40%, not left at the cell's 100%
    assert predicted[3000] > 0.95  # with enough flows the cell's own rate wins


def test_sigmoid_calibration_fixes_a_model_that_is_too_sure(flows):
    spec, rows = flows
    first, last = rows.iloc[: len(rows) // 2], rows.iloc[len(rows) // 2:]
    overconfident = learners.boosting(spec, 0, max_leaf_nodes=31, min_samples_leaf=5, max_iter=600)  # overfits
    plain = learners.fit(overconfident, first, first["label"].to_numpy())
    calibrated = learners.fit(learners.Calibrated(overconfident, "sigmoid"), first, first["label"].to_numpy())

    def ece(model):
        from training.metrics import expected_calibration_error

        return expected_calibration_error(last["label"], model.predict_proba(last)[:, 1])

    assert ece(calibrated) < ece(plain)
    assert calibrated.a_ < 1  # the fix shrinks the logits


def test_inverse_propensity_weights_undo_a_history_that_showed_one_offer_far_more():
    """When discounts were shown mostly to customers who would stay anyway, an unweighted fit credits the
    discount; weighted by 1 / propensity the comparison is as if offers had been shown at random."""
    rng = np.random.default_rng(3)
    spec = FeatureSpec((), (), ())
    rows = []
    for _ in range(6000):
        loyal = rng.random() < 0.5
        p_discount = 0.8 if loyal else 0.2  # the history discounted loyal customers (who stay anyway)
        offer = "discount_30_3m" if rng.random() < p_discount else "none"
        stay = rng.random() < (0.8 if loyal else 0.3)  # the discount changes nothing
        rows.append({**decision_columns(CATALOG[offer], "too_expensive"), "label": int(stay), "loyal": loyal,
                     "propensity": p_discount if offer != "none" else 1 - p_discount})
    frame = pd.DataFrame(rows)
    for name in spec.numeric:
        frame[name] = 0.0
    for name in spec.categorical:
        frame[name] = "x"

    def uplift(weights):
        model = learners.fit(learners.logistic(spec, CATALOG, C=10.0), frame, frame["label"].to_numpy(), weights)
        row = frame.iloc[[0]].drop(columns=["label", "loyal", "propensity"])
        p = {o: model.predict_proba(pd.concat([row.drop(columns=list(decision_columns(CATALOG[o], "x"))).reset_index(
            drop=True), pd.DataFrame([decision_columns(CATALOG[o], "too_expensive")])], axis=1))[:, 1][0]
            for o in ("discount_30_3m", "none")}
        return p["discount_30_3m"] - p["none"]

    biased = uplift(None)
    weighted = uplift(frame["propensity"].mean() / frame["propensity"].to_numpy())
    assert biased > 0.15  # the confounded history makes the discount look like it saves customers
    assert abs(weighted) < 0.05  # it does not
