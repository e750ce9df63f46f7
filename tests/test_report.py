"""The HTML training report renders a realistic metadata dict into one self-contained file."""

from __future__ import annotations

import re

import numpy as np

from reports.model import write_report
from training.metrics import binary_metrics, reliability_curve


def _metadata() -> dict:
    rng = np.random.default_rng(0)
    n = 4000
    truth = rng.beta(2, 6, size=n)
    y = (rng.random(n) < truth).astype(int)
    scores = {
        "model": np.clip(truth + rng.normal(0, 0.03, n), 0, 1),
        "baseline_nps_segment": np.choose(rng.integers(0, 3, n), [0.15, 0.25, 0.35]),
        "baseline_prior": np.full(n, y.mean()),
    }
    churn_y = 1 - y  # a common positive class, to show the report does not assume a rare one
    return {
        "version": "20250101T000000Z-deadbeef",
        "created_at": "2025-01-01T00:00:00.000000Z",
        "feature_version": "features-v3",
        "data_window": {"start": "2024-01-01", "end": "2024-12-31"},
        "row_counts": {"customers": 120_000, "cancel_requests": 8_000, "train": 6_000, "test": 2_000},
        "library_versions": {"python": "3.11.7", "scikit-learn": "1.9.1", "numpy": "2.4.6"},
        "seed": 42,
        "data_dir": "/data/<shop & co>",  # must be escaped
        "artifact": {"file": "model.joblib", "sha256": "ab" * 32, "bytes": 1234},
        "metrics": {
            "offer_response": {
                **{name: binary_metrics(y, s) for name, s in scores.items()},
                "bayes_optimal_auc": 0.83,
                "auc_share_of_bayes": 0.98,
            },
            "churn_risk": {
                "model": binary_metrics(churn_y, 1 - scores["model"]),
                "baseline_prior": binary_metrics(churn_y, np.full(n, churn_y.mean())),
            },
        },
        "reliability": {
            "offer_response": {name: reliability_curve(y, s) for name, s in scores.items()},
            "churn_risk": {"model": reliability_curve(churn_y, 1 - scores["model"])},
        },
    }


def test_report_contents(tmp_path):
    meta = _metadata()
    path = write_report(tmp_path / "report.html", meta)
    assert path == tmp_path / "report.html"
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert "<title>Retention model 20250101T000000Z-deadbeef</title>" in text
    for needle in ("features-v3", "2024-12-31", "120,000", "scikit-learn", "1.9.1", "offer_response", "churn_risk"):
        assert needle in text, needle
    # One table row per compared row, the model row highlighted.
    assert text.count('<tr class="model"><td>model</td>') == 2
    assert text.count("<tr><td>baseline_nps_segment</td>") == 1
    assert text.count("<tr><td>baseline_prior</td>") == 2
    # All binary_metrics columns are present.
    for col in ("positive_rate", "roc_auc", "pr_auc", "brier", "ece", "lift_top_decile"):
        assert f"<th>{col}</th>" in text
    # Scalar extras become notes.
    assert "<li>bayes_optimal_auc: 0.8300</li>" in text
    assert "<li>auc_share_of_bayes: 0.9800</li>" in text
    # Two reliability plots plus the lift chart, inline.
    assert len(re.findall(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]{100,}"', text)) == 3
    # Self-contained and escaped.
    assert "/data/&lt;shop &amp; co&gt;" in text and "<shop & co>" not in text
    assert not re.search(r'(src|href)="(https?:)?//', text)
    assert not list(tmp_path.glob(".*"))  # no temp file left behind


def test_report_without_metrics_or_reliability(tmp_path):
    meta = _metadata()
    del meta["reliability"]["churn_risk"]
    text = write_report(tmp_path / "r.html", meta).read_text()
    assert "No reliability curve recorded." in text
    text = write_report(tmp_path / "empty.html", {"version": "v1"}).read_text()
    assert "Retention model v1" in text and "No metrics recorded." in text


def test_single_class_metrics_render_as_na(tmp_path):
    meta = {
        "version": "v1",
        "metrics": {"m": {"model": binary_metrics([0, 0, 0], [0.1, 0.2, 0.3])}},
        "reliability": {"m": {"model": reliability_curve([0, 0, 0], [0.1, 0.2, 0.3])}},
    }
    text = write_report(tmp_path / "r.html", meta).read_text()
    assert "<td>n/a</td>" in text


def test_the_gate_section_says_what_its_evidence_could_detect(trained):
    import json

    from reports.model import render_report

    meta = json.loads((trained / "metadata.json").read_text())
    pooled = meta["models"]["offer_response"]["gate"]["evidence"]["pooled"]
    html = render_report(meta)
    assert f"(95% CI {pooled['low']:+.2f} to {pooled['high']:+.2f}). With this many flows" in html
    assert f"only from about\n{pooled['detectable']:.2f} per flow" in html
