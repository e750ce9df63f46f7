"""The HTML training report a person reads before promoting a model version.

One self-contained file (inline CSS and base64 PNG charts, no external assets, so it can be mailed or
opened from an artifact store): what was trained on what data with which libraries, and for each model
its metrics next to the baselines it has to beat, a reliability plot and top-decile lift. The page is
reports/templates/model.html.j2.

Rendering is generic over metadata["metrics"]: every dict under a model is a row of the comparison table,
every scalar is a note. That way the trainer can add a baseline or a note without touching this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The object API needs no GUI backend and keeps no global figure state (pyplot would do both).
from matplotlib.figure import Figure

from reports.render import Chart, chart, render, write_page

_HEADER_KEYS = ("version", "created_at", "feature_version", "data_window", "row_counts", "library_versions", "artifact")
# Shown in sections of their own, not in the header table.
_SECTION_KEYS = ("models", "metrics", "reliability", "feature_names", "splits", "compiled", "feature_spec")
_MODEL_ROW = "model"
# Columns a reader expects in this order (metadata.json stores keys sorted); any other metric follows.
_METRIC_ORDER = ("n", "positive_rate", "roc_auc", "pr_auc", "brier", "ece", "lift_top_decile")


def is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


@dataclass(frozen=True)
class ModelSection:
    """One model of the version: its table (the model row first, then the baselines), notes and chart."""

    name: str
    columns: list[str]
    rows: list[tuple[str, dict]]
    notes: list[tuple[str, Any]]
    reliability: Chart | None


def _rows(model_metrics: dict) -> list[tuple[str, dict]]:
    """The model row first, then the baselines in the order the trainer wrote them."""
    rows = [(k, v) for k, v in model_metrics.items() if isinstance(v, dict)]
    return sorted(rows, key=lambda kv: kv[0] != _MODEL_ROW)


def _section(model_name: str, model_metrics: dict, curves: Any) -> ModelSection:
    rows = _rows(model_metrics)
    return ModelSection(
        name=model_name,
        columns=sorted({k for _, r in rows for k in r},
                       key=lambda c: (_METRIC_ORDER.index(c) if c in _METRIC_ORDER else len(_METRIC_ORDER), c)),
        rows=rows,
        notes=[(k, v) for k, v in model_metrics.items() if is_scalar(v)],
        reliability=_reliability_plot(model_name, curves) if isinstance(curves, dict) and curves else None,
    )


def _reliability_plot(model_name: str, curves: dict) -> Chart:
    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="perfectly calibrated")
    for name, c in sorted(curves.items(), key=lambda kv: kv[0] != _MODEL_ROW):
        if not isinstance(c, dict) or not c.get("mean_predicted"):
            continue
        ax.plot(c["mean_predicted"], c["observed"], marker="o", label=name, linewidth=2 if name == _MODEL_ROW else 1)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean predicted probability", ylabel="observed rate",
           title=f"Reliability: {model_name}")
    ax.legend(loc="upper left", fontsize="small")
    return chart(fig, f"Reliability plot for {model_name}")


def _lift_chart(metrics: dict) -> Chart | None:
    models = [m for m, mm in metrics.items() if isinstance(mm, dict)]
    row_names: list[str] = []
    for m in models:
        for name, _ in _rows(metrics[m]):
            if name not in row_names:
                row_names.append(name)
    if not models or not row_names:
        return None
    fig = Figure(figsize=(max(5, 2.2 * len(models)), 4))
    ax = fig.add_subplot()
    width = 0.8 / len(row_names)
    for j, name in enumerate(row_names):
        xs, hs = [], []
        for i, m in enumerate(models):
            row = metrics[m].get(name)
            lift = row.get("lift_top_decile") if isinstance(row, dict) else None
            if isinstance(lift, int | float) and lift == lift:
                xs.append(i - 0.4 + width * (j + 0.5))
                hs.append(lift)
        ax.bar(xs, hs, width=width, label=name)
    ax.axhline(1.0, color="grey", linestyle=":", linewidth=1)  # lift 1 = no better than random
    ax.set_xticks(range(len(models)), models)
    ax.set(ylabel="top-decile lift", title="Top-decile lift: model vs baselines")
    ax.legend(fontsize="small")
    return chart(fig, "Top-decile lift per model and baseline")


def render_report(metadata: dict) -> str:
    """The page for `metadata` (as stored in metadata.json, plus metrics and reliability curves)."""
    header = {k: metadata[k] for k in _HEADER_KEYS if k in metadata}
    # Other top-level scalars (seed, data directory, catalog version...) are shown as they are.
    header.update({k: v for k, v in metadata.items() if k not in header and k not in _SECTION_KEYS and is_scalar(v)})
    metrics = metadata.get("metrics") or {}
    reliability = metadata.get("reliability") or {}
    sections = [_section(name, m, reliability.get(name)) for name, m in metrics.items() if isinstance(m, dict)]
    models = metadata.get("models") or {}
    return render("model.html.j2", version=metadata.get("version", "unversioned"), header=header,
                  sections=sections, lift=_lift_chart(metrics) if metrics else None,
                  has_metrics=bool(metrics), models=models, offer=models.get("offer_response") or {})


def write_report(path: str | Path, metadata: dict) -> Path:
    """Render `metadata` to HTML at `path`, replacing an older report atomically."""
    return write_page(path, render_report(metadata))
