"""The policy the service runs chooses offers worth more, under the simulator's TRUE response, than any fixed
offer and than the rules fallback, on customers the model has never seen (a fresh simulation)."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from cli import main
from retention.artifacts import load_artifact
from retention.features import FEATURE_VERSION
from retention.offers import load_catalog
from retention.policy import load_policy
from training.policy_eval import evaluate_policy
from training.simulator.generate import SimConfig, simulate_dataset


@pytest.fixture(scope="module")
def fresh_dir(tmp_path_factory):
    """Other customers than the session model was trained on (seed 11): a new simulation, seed 12."""
    out = tmp_path_factory.mktemp("fresh") / "data"
    simulate_dataset(SimConfig(customers=4000, seed=12, chunk_size=4000), out)
    return out


@pytest.fixture(scope="module")
def model_and_meta(trained):
    return load_artifact(trained, feature_version=FEATURE_VERSION)


@pytest.mark.slow
def test_the_model_policy_beats_every_fixed_offer_and_the_rules_on_unseen_customers(fresh_dir, model_and_meta):
    result = evaluate_policy(*model_and_meta, fresh_dir, load_catalog(), load_policy(load_catalog()))
    pol = result["policies"]
    model = pol["model"]["mean"]
    summary = {name: round(p["mean"], 3) for name, p in pol.items()}
    assert result["requests"] > 1500
    fixed = [name for name in pol if name.startswith("always:")]
    assert fixed == [f"always:{o}" for o in load_catalog().ids]
    for name in fixed:
        assert model > pol[name]["mean"], (name, summary)
    assert model > pol["rules"]["mean"], summary
    # and not by luck: the paired 95% confidence intervals of the advantages lie above zero
    assert result["comparisons"]["model_minus_rules"]["ci95"][0] > 0, result["comparisons"]
    assert result["comparisons"]["model_minus_best_fixed"]["ci95"][0] > 0, result["comparisons"]
    assert pol["model"]["truth_ineligible_share"] < 0.005, result["model_truth_ineligible_by_offer"]
    # the oracle is an upper bound of every policy, and the measurement is of the model, not of fallbacks
    assert all(pol["oracle"]["mean"] >= p["mean"] for p in pol.values())
    assert result["fallbacks"]["count"] == 0
    assert 0 < result["comparisons"]["model_share_of_oracle"]["value"] <= 1
    low, high = result["comparisons"]["model_minus_best_fixed"]["ci95"]
    assert low <= result["comparisons"]["model_minus_best_fixed"]["mean"] <= high


def test_a_data_set_without_truth_is_refused_with_a_clear_message(fresh_dir, model_and_meta, tmp_path):
    real_data = tmp_path / "real"
    shutil.copytree(fresh_dir, real_data, ignore=shutil.ignore_patterns("_truth"))
    with pytest.raises(ValueError, match="_truth.*true response"):
        evaluate_policy(*model_and_meta, real_data, load_catalog(), load_policy(load_catalog()))


def test_the_cli_prints_a_table_and_writes_the_json(trained, fresh_dir, tmp_path):
    out = tmp_path / "policy.json"
    args = ["evaluate-policy", "--models", trained.parent, "--model", trained.name, "--data", fresh_dir,
            "--limit", 200, "--seed", 3, "--out", out]
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    assert figures["requests"] == 200 and figures["limit"] == 200
    assert {"model", "rules", "oracle", "always:none", "always:credit_1"} <= set(figures["policies"])
    assert "of oracle" in result.output and "always:discount_30_3m" in result.output


def test_the_cli_exits_2_on_a_data_set_without_truth(trained, fresh_dir, tmp_path):
    real_data = tmp_path / "real"
    shutil.copytree(fresh_dir, real_data, ignore=shutil.ignore_patterns("_truth"))
    args = ["evaluate-policy", "--models", trained.parent, "--data", real_data]
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 2
    assert "_truth" in result.output and "true response" in result.output
