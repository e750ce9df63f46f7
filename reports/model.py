"""The HTML training report a person reads before promoting a model version.

One self-contained file (inline CSS and base64 PNG charts, no external assets, so it can be mailed or
opened from an artifact store): what was trained on what data with which libraries, and for each model
its metrics next to the baselines it has to beat, a reliability plot and top-decile lift.

Rendering is generic over metadata["metrics"]: every dict under a model is a row of the comparison table,
every scalar is a note. That way the trainer can add a baseline or a note without touching this module.
"""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path
from typing import Any

# The object API needs no GUI backend and keeps no global figure state (pyplot would do both).
from matplotlib.figure import Figure

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 70em; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tr.model td { font-weight: bold; background: #eef5ff; }
table.kv td { text-align: left; }
.muted { color: #777; }
"""
_HEADER_KEYS = ("version", "created_at", "feature_version", "data_window", "row_counts", "library_versions", "artifact")
_MODEL_ROW = "model"


def escape(value: Any) -> str:
    return html.escape(str(value))


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:
            return "n/a"
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _kv_table(d: dict) -> str:
    rows = "".join(f"<tr><td>{escape(k)}</td><td>{escape(_fmt(v) if _is_scalar(v) else v)}</td></tr>" for k, v in d.items())
    return f'<table class="kv">{rows}</table>'


def _value_html(value: Any) -> str:
    if isinstance(value, dict):
        return _kv_table(value)
    if isinstance(value, list | tuple):
        return escape(", ".join(_fmt(v) for v in value))
    return escape(_fmt(value))


def png_img(fig: Figure, alt: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{escape(alt)}">'


def _rows(model_metrics: dict) -> list[tuple[str, dict]]:
    """The model row first, then the baselines in the order the trainer wrote them."""
    rows = [(k, v) for k, v in model_metrics.items() if isinstance(v, dict)]
    return sorted(rows, key=lambda kv: kv[0] != _MODEL_ROW)


def _metrics_table(model_metrics: dict) -> str:
    rows = _rows(model_metrics)
    cols = list(dict.fromkeys(k for _, r in rows for k in r))  # in the order the trainer wrote them
    head = "".join(f"<th>{escape(c)}</th>" for c in ["", *cols])
    body = []
    for name, r in rows:
        cls = ' class="model"' if name == _MODEL_ROW else ""
        cells = "".join(f"<td>{escape(_fmt(r.get(c)))}</td>" for c in cols)
        body.append(f"<tr{cls}><td>{escape(name)}</td>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _notes(model_metrics: dict) -> str:
    notes = [(k, v) for k, v in model_metrics.items() if _is_scalar(v)]
    if not notes:
        return ""
    items = "".join(f"<li>{escape(k)}: {escape(_fmt(v))}</li>" for k, v in notes)
    return f"<ul>{items}</ul>"


def _reliability_plot(model_name: str, curves: dict) -> str:
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
    return png_img(fig, f"Reliability plot for {model_name}")


def _lift_chart(metrics: dict) -> str:
    models = [m for m, mm in metrics.items() if isinstance(mm, dict)]
    row_names: list[str] = []
    for m in models:
        for name, _ in _rows(metrics[m]):
            if name not in row_names:
                row_names.append(name)
    if not models or not row_names:
        return ""
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
    return png_img(fig, "Top-decile lift per model and baseline")


def write_report(path: str | Path, metadata: dict) -> Path:
    """Render `metadata` (as stored in metadata.json, plus metrics and reliability curves) to HTML."""
    path = Path(path)
    version = metadata.get("version", "unversioned")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Retention model {escape(version)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Retention model {escape(version)}</h1>",
    ]
    header = {k: metadata[k] for k in _HEADER_KEYS if k in metadata}
    # Other top-level scalars (seed, data directory, catalog version...) are shown as they are.
    header.update({k: v for k, v in metadata.items() if k not in header and _is_scalar(v)})
    parts.append('<table class="kv">')
    parts += [f"<tr><td>{escape(k)}</td><td>{_value_html(v)}</td></tr>" for k, v in header.items()]
    parts.append("</table>")

    metrics = metadata.get("metrics") or {}
    reliability = metadata.get("reliability") or {}
    for model_name, model_metrics in metrics.items():
        if not isinstance(model_metrics, dict):
            continue
        parts.append(f"<h2>{escape(model_name)}</h2>")
        parts.append(_metrics_table(model_metrics))
        parts.append(_notes(model_metrics))
        curves = reliability.get(model_name)
        if isinstance(curves, dict) and curves:
            parts.append(_reliability_plot(model_name, curves))
        else:
            parts.append('<p class="muted">No reliability curve recorded.</p>')
    if metrics:
        parts.append("<h2>Top-decile lift</h2>")
        parts.append(_lift_chart(metrics))
    else:
        parts.append('<p class="muted">No metrics recorded.</p>')
    parts.append("</body></html>\n")

    # Write-then-rename: a reader (or a crashed run) never sees half a report.
    path.parent.mkdir(parents=True, exist_ok=True)
    # (Not mkstemp: its 0600 mode would make the report unreadable to whoever serves the models folder.)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text("\n".join(parts), encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
