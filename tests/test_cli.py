"""The `retention` command line as the data team uses it: clear messages, exit code 2 on bad input."""

from __future__ import annotations

import csv
import math
import shutil

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from cli import main


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_help_lists_every_subcommand():
    out = _run("--help").output
    for cmd in ("simulate", "validate", "train", "evaluate", "score", "offers"):
        assert cmd in out


def test_validate_accepts_simulated_data(sim_dir):
    result = _run("validate", "--data", sim_dir)
    assert result.exit_code == 0, result.output
    assert "valid" in result.output


def test_validate_names_file_row_and_column_and_exits_2(sim_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(sim_dir, data)
    # Turn the cancel requests into CSV with one bad reason in data row 3.
    table = pq.read_table(data / "cancel_requests.parquet").to_pylist()
    (data / "cancel_requests.parquet").unlink()
    with open(data / "cancel_requests.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(table[0]))
        w.writeheader()
        for i, row in enumerate(table):
            w.writerow({**row, "reason": "bored" if i == 2 else row["reason"]})
    result = _run("validate", "--data", data)
    assert result.exit_code == 2
    assert "cancel_requests.csv" in result.output and "row 3" in result.output and "reason" in result.output


def test_train_refuses_invalid_data_and_writes_nothing(tmp_path):
    (tmp_path / "data").mkdir()
    models = tmp_path / "models"
    result = _run("train", "--data", tmp_path / "data", "--out", models)
    assert result.exit_code == 2
    assert "customers" in result.output
    assert not models.exists() or not any(models.iterdir())


def test_simulate_refuses_to_overwrite_a_data_set(sim_dir):
    result = _run("simulate", "--customers", 10, "--out", sim_dir)
    assert result.exit_code == 2 and "not empty" in result.output


@pytest.mark.slow
def test_evaluate_and_score_use_a_verified_model(trained, sim_dir, tmp_path):
    models = trained.parent
    result = _run("evaluate", "--models", models, "--data", sim_dir, "--since", "2026-07-01")
    assert result.exit_code == 0, result.output
    assert '"roc_auc"' in result.output and '"auc_share_of_bayes"' in result.output
    assert '"ece_vs_truth"' in result.output and '"ece_of_truth"' in result.output
    out = tmp_path / "scores.parquet"
    result = _run("score", "--models", models, "--data", sim_dir, "--as-of", "2026-09-01", "--out", out,
                  "--batch-size", 1000)
    assert result.exit_code == 0, result.output
    scores = pq.read_table(out).to_pandas()
    assert len(scores) > 1000 and scores["customer_id"].is_unique
    assert scores["churn_risk_30d"].between(0, 1).all()


def test_a_tampered_model_is_refused_by_the_cli(trained, tmp_path):
    copy = tmp_path / "models" / trained.name
    shutil.copytree(trained, copy)
    with open(copy / "model.joblib", "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    result = _run("evaluate", "--models", copy.parent, "--model", trained.name)
    assert result.exit_code == 2
    assert "sha256" in result.output.lower() or "checksum" in result.output.lower()


def test_offers_prints_the_validated_catalog():
    result = _run("offers")
    assert result.exit_code == 0 and "pause_3m" in result.output and "followup" in result.output


def _per_arm(p: float, mde: float, alpha: float, power: float = 0.8) -> int:
    """Fleiss' two-proportion formula written out (equal arms), as retention.stats documents it."""
    from scipy.stats import norm

    q, p2 = 1 - p, p + mde
    p_bar = (p + p2) / 2
    n = (norm.ppf(1 - alpha / 2) * math.sqrt(2 * p_bar * (1 - p_bar))
         + norm.ppf(power) * math.sqrt(p * q + p2 * (1 - p2))) ** 2 / mde**2
    return math.ceil(n)


@pytest.mark.parametrize("arms, comparisons", [(2, 1), (3, 2), (5, 4)])
def test_sample_size_arms_counts_the_control_and_splits_alpha_over_the_others(arms, comparisons):
    """`--arms K` is every arm of the experiment, the control included (not the holdout): K - 1 comparisons with
    the control, each at alpha / (K - 1) (Bonferroni), and K arms of the per-arm size in all."""
    result = _run("experiment", "sample-size", "--baseline", "0.30", "--mde", "0.05", "--arms", arms)
    assert result.exit_code == 0, result.output
    n = _per_arm(0.30, 0.05, 0.05 / comparisons)
    if arms == 3:
        assert n == 1667  # alpha 0.025 per comparison; 1,377 at alpha 0.05
    assert result.output.startswith(f"{n:,} exposed customers per arm, {arms} arms including the control "
                                    f"({n * arms:,} in all):")
    each = f"{0.05 / comparisons:.3g}"
    assert (f"{comparisons} comparison{'s' if comparisons > 1 else ''} with the control at alpha {each}"
            in result.output)


def test_sample_size_help_says_what_arms_counts():
    help_text = " ".join(_run("experiment", "sample-size", "--help").output.split())
    assert "Arms of the experiment including the control" in help_text and "K-1 comparisons" in help_text


def test_evaluate_without_data_says_it_only_verified_and_wrote_nothing(trained, tmp_path):
    """`retention evaluate --model latest` prints the training metrics of a verified version; it used to say
    "written to ... in 0.0 s" although it wrote nothing."""
    models = tmp_path / "models"
    shutil.copytree(trained, models / trained.name)
    before = sorted(p.relative_to(models) for p in models.rglob("*"))
    result = _run("evaluate", "--models", models, "--model", "latest")
    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[0]
    assert first.startswith(f"model version {trained.name} ") and "artifact verified" in first
    assert "nothing written" in first and "as measured when it was trained" in first
    assert "written to" not in result.output and " in 0.0 s" not in result.output
    assert "auc=" in result.output  # the metrics themselves follow
    assert sorted(p.relative_to(models) for p in models.rglob("*")) == before
