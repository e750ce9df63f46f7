"""The `retention` command line as the data team uses it: clear messages, exit code 2 on bad input."""

from __future__ import annotations

import csv
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
