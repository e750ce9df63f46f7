"""The HTML report of an offer A/B experiment, read by product managers choosing which retention offer to keep.

One self-contained file (inline CSS and base64 PNG charts, no external assets and no JavaScript, so it can be
mailed or opened from an artifact store), in the style of the model report (training/report.py). Input: the
analysis dict of one experiment (arms with per-metric estimates, comparisons with fixed-horizon and always-valid
intervals, the sample-ratio check, the sample-size plan and a cumulative timeline of the primary metric).

The page says what the unit of analysis is and what each metric means, puts a plain-language headline first
(which arms beat the control and the holdout on the primary metric after Holm's correction), and flags problems
loudly: a red banner on a sample-ratio mismatch, a yellow one for the analysis' warnings. Numbers that do not
exist yet (NaN or None, e.g. when an arm has no customers) render as "–"; charts without data are skipped with
a note.
"""

from __future__ import annotations

import math
import os
import re
from datetime import date, datetime
from pathlib import Path
from typing import Any

from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from reports.model import escape, png_img

DASH = "–"  # what a number that does not exist (yet) looks like
ALPHA = 0.05  # significance level of the headline and the highlighted rows: Holm-adjusted p < ALPHA
HOLDOUT = "holdout"
_RATE_METRICS = ("accepted",)  # rates whose name does not say so; retained_* are rates too
_LABELS = {"accepted": "Accepted the offer", "retained_30": "Retained at day 30", "retained_90": "Retained at day 90",
           "net_revenue_90": "Net revenue over 90 days"}
_BETTER, _WORSE, _NEUTRAL, _CONTROL = "#1a7f37", "#cf222e", "#57606a", "#0969da"

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 70em; color: #222; padding: 0 1em; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
h3 { margin-top: 1.5em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; vertical-align: top; }
th { background: #f3f4f6; }
th:first-child, td:first-child { text-align: left; }
table.kv td { text-align: left; } table.kv td:first-child { color: #555; white-space: nowrap; }
td.text { text-align: left; }
tr.control td { background: #eef5ff; }
tr.holdout td { background: #f6f6f6; }
tr.sig-better td { background: #e6f4ea; font-weight: bold; }
tr.sig-worse td { background: #fde8e8; font-weight: bold; }
.ci { display: block; color: #555; font-size: 0.85em; white-space: nowrap; }
.muted { color: #777; }
.status { display: inline-block; padding: 0.1em 0.6em; border-radius: 1em; color: #fff; font-size: 0.9em; }
.status.running { background: #1a7f37; } .status.stopped { background: #57606a; }
.banner { padding: 0.8em 1em; margin: 1em 0; border-radius: 4px; }
.banner.srm { background: #c62828; color: #fff; font-size: 1.15em; border: 3px solid #7f0000; }
.banner.srm p { margin: 0.3em 0; font-size: 0.9em; }
.banner.warn { background: #fff4d6; border: 2px solid #d4a000; }
.banner ul { margin: 0.3em 0; }
.headline { background: #f4f8ff; border-left: 6px solid #0969da; padding: 0.6em 1em; margin: 1em 0; }
.headline p, .headline li { font-size: 1.08em; }
.verdict-better { color: #1a7f37; font-weight: bold; } .verdict-worse { color: #cf222e; font-weight: bold; }
figure { margin: 1em 0 2em; } figcaption { color: #444; max-width: 60em; margin-top: 0.3em; }
img { max-width: 100%; height: auto; }
.scroll { overflow-x: auto; max-width: 100%; }
.progress { display: inline-block; width: 20em; height: 0.9em; background: #e5e7eb; vertical-align: middle; }
.progress > span { display: block; height: 100%; background: #0969da; }
dt { font-weight: bold; margin-top: 0.5em; } dd { margin-left: 1.5em; }
"""


# ---------------------------------------------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------------------------------------------


def _num(value: Any) -> float | None:
    """A finite float, or None for None, NaN, infinities and anything that is not a number."""
    if value is None or isinstance(value, bool):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _round(value: float, digits: int) -> float:
    return round(value, digits) + 0.0  # + 0.0 turns -0.0 into 0.0: no "-0.0 pp"


def _count(value: Any) -> str:
    f = _num(value)
    return DASH if f is None else f"{round(f):,}"


def _pct(value: Any) -> str:
    f = _num(value)
    return DASH if f is None else f"{_round(100 * f, 1):.1f}%"


def _p(value: Any) -> str:
    f = _num(value)
    if f is None:
        return DASH
    return "< 0.001" if f < 0.001 else f"{f:.3f}"


def _p_exact(value: Any) -> str:
    """A p-value in full even when tiny (for the sample-ratio check, where 1e-3 and 1e-30 mean different things)."""
    f = _num(value)
    if f is None:
        return DASH
    return f"{f:.1e}" if f < 0.001 else f"{f:.3f}"


def _p_is(value: Any) -> str:
    """The p-value after "p": "= 0.048" or "< 0.001" (plain text, escape it for HTML)."""
    text = _p(value)
    return text if text.startswith("<") else f"= {text}"


def _is_rate(metric: str, result: dict | None = None) -> bool:
    if metric in _RATE_METRICS or metric.startswith("retained_"):
        return True
    arms = (result or {}).get("arms") or []
    return any("successes" in ((a.get("metrics") or {}).get(metric) or {}) for a in arms)


def _value(metric: str, value: Any, rate: bool) -> str:
    """An estimate: a rate as a percentage, money with 2 decimals."""
    if rate:
        return _pct(value)
    f = _num(value)
    return DASH if f is None else f"{_round(f, 2):,.2f}"


def _diff(value: Any, rate: bool, unit: bool = True) -> str:
    """A difference: of rates in signed percentage points, of money signed with 2 decimals."""
    f = _num(value)
    if f is None:
        return DASH
    if rate:
        return f"{_round(100 * f, 1):+.1f}" + (" pp" if unit else "")
    return f"{_round(f, 2):+,.2f}"


def _interval(low: Any, high: Any, fmt) -> str:
    if _num(low) is None or _num(high) is None:
        return DASH
    return f"{fmt(low)} to {fmt(high)}"


def _diff_interval(low: Any, high: Any, rate: bool) -> str:
    text = _interval(low, high, lambda v: _diff(v, rate, unit=False))
    return f"{text} pp" if rate and text != DASH else text


def _excludes_zero(low: Any, high: Any) -> bool:
    lo, hi = _num(low), _num(high)
    return lo is not None and hi is not None and (lo > 0 or hi < 0)


def _significant(comparison: dict) -> bool:
    p = _num(comparison.get("p_adjusted"))
    return p is not None and p < ALPHA and _num(comparison.get("difference")) is not None


def _when(value: Any) -> str:
    if not value:
        return DASH
    try:
        dt = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    zone = dt.strftime(" %Z") if dt.tzinfo else ""
    return dt.strftime("%Y-%m-%d %H:%M") + zone


# ---------------------------------------------------------------------------------------------------------------
# Words
# ---------------------------------------------------------------------------------------------------------------


def _label(metric: str) -> str:
    if metric in _LABELS:
        return _LABELS[metric]
    m = re.fullmatch(r"(retained|net_revenue)_(\d+)", metric)
    if m:
        return f"Retained at day {m[2]}" if m[1] == "retained" else f"Net revenue over {m[2]} days"
    return metric


def _what(arm: dict) -> str:
    """What an arm does to the customer, in words."""
    kind, offer = arm.get("kind"), arm.get("offer")
    if arm.get("is_holdout"):
        return "holdout: no offer is shown"
    if kind == "offer":
        return f"always offers {offer}" if offer else "a fixed offer"
    if kind == "model":
        return "the model's policy chooses the offer"
    if kind == "rules":
        return "the rule-based policy chooses the offer"
    if kind == "none":
        return "no offer is shown"
    return str(kind) if kind else DASH


def _arm_name(name: Any, arms: dict[str, dict]) -> str:
    """An arm for a sentence: its name, with its fixed offer when the name does not already say it."""
    arm = arms.get(str(name)) or {}
    offer = arm.get("offer")
    text = f"<strong>{escape(name)}</strong>"
    if offer and str(offer) != str(name):
        text += f" (offer {escape(offer)})"
    return text


def _effect(metric: str, difference: float, rate: bool) -> str:
    """ "keeps 3.1 pp more customers at day 30" and the like, for a significant difference."""
    size = _diff(abs(difference), rate).lstrip("+")
    more = difference > 0
    m = re.fullmatch(r"retained_(\d+)", metric)
    if m:
        return f"keeps {size} {'more' if more else 'fewer'} customers at day {m[1]}"
    if metric == "accepted":
        return f"gets {size} {'more' if more else 'fewer'} customers to accept an offer"
    m = re.fullmatch(r"net_revenue_(\d+)", metric)
    if m:
        return f"brings {size} {'more' if more else 'less'} net revenue per customer over {m[1]} days"
    return f"has a {'higher' if more else 'lower'} {metric}, by {size}{'' if rate else ' per customer'},"


def _sentence(c: dict, arms: dict[str, dict], rate: bool, running: bool) -> str:
    d = _num(c.get("difference"))
    assert d is not None
    ci = _diff_interval(c.get("low"), c.get("high"), rate)
    text = (f"{_arm_name(c.get('arm'), arms)} {_effect(str(c.get('metric')), d, rate)} than "
            f"{_arm_name(c.get('baseline'), arms)} (95% CI {ci}, adjusted p {escape(_p_is(c.get('p_adjusted')))}).")
    av = _diff_interval(c.get("always_valid_low"), c.get("always_valid_high"), rate)
    if _excludes_zero(c.get("always_valid_low"), c.get("always_valid_high")):
        text += f" The always-valid interval ({av}) excludes zero too, so this holds even though we peeked."
    elif running:
        text += (f" <em>Not final:</em> the always-valid interval ({av}) still includes zero; the fixed interval is "
                 f"only valid at the planned end, so keep the experiment running.")
    return text


# ---------------------------------------------------------------------------------------------------------------
# Page sections
# ---------------------------------------------------------------------------------------------------------------


def _metric_order(result: dict) -> list[str]:
    """Primary metric, guardrails, then every other metric in the order the analysis lists them."""
    names: list[str] = []
    candidates = [result.get("primary_metric"), *(result.get("guardrail_metrics") or [])]
    for arm in result.get("arms") or []:
        candidates += list((arm.get("metrics") or {}).keys())
    candidates += list((result.get("metric_definitions") or {}).keys())
    candidates += [c.get("metric") for c in result.get("comparisons") or []]
    for name in candidates:
        if name and str(name) not in names:
            names.append(str(name))
    return names


def _header(result: dict) -> str:
    running = bool(result.get("running"))
    status = ('<span class="status running">running</span>' if running
              else '<span class="status stopped">stopped</span>')
    rows = [
        ("Status", f"{status} as of {escape(_when(result.get('as_of')))}"),
        ("Started", escape(_when(result.get("start")))),
        ("Stop", escape(_when(result.get("stop"))) if result.get("stop") else "not set (runs until stopped)"),
        ("Unit of analysis", escape(result.get("unit") or DASH)),
        ("Primary metric", escape(result.get("primary_metric") or DASH)),
        ("Guardrail metrics", escape(", ".join(map(str, result.get("guardrail_metrics") or [])) or "none")),
        ("Control arm", escape(result.get("control") or DASH)),
        ("Definition hash", f"<code>{escape(result.get('definition') or DASH)}</code>"),
    ]
    body = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in rows)
    description = result.get("description")
    return (f"<h1>Experiment {escape(result.get('experiment', 'unnamed'))}</h1>"
            + (f"<p>{escape(description)}</p>" if description else "")
            + f'<table class="kv">{body}</table>'
            + '<p class="muted">New to these reports? See <a href="#how-to-read">how to read this page</a>.</p>')


def _banners(result: dict) -> str:
    parts = []
    srm = result.get("srm") or {}
    alarms = [(stage, srm[stage]) for stage in ("assigned", "exposed") if (srm.get(stage) or {}).get("alarm")]
    if alarms:
        details = "".join(
            f"<p>The {escape(stage)} counts do not match the designed split: chi2 = {escape(_fmt2(s.get('chi2')))}, "
            f"p = {escape(_p_exact(s.get('p_value')))}.</p>" for stage, s in alarms)
        parts.append(
            '<div class="banner srm" role="alert"><strong>Sample-ratio mismatch: do not trust these results until '
            f"the assignment is fixed.</strong>{details}<p>Arms with more or fewer customers than designed usually "
            "mean some customers were assigned or logged wrongly, which biases every comparison below. See "
            '<a href="#srm" style="color:#fff">the sample-ratio check</a>.</p></div>')
    warnings = [w for w in result.get("warnings") or [] if w]
    if warnings:
        items = "".join(f"<li>{escape(w)}</li>" for w in warnings)
        parts.append(f'<div class="banner warn" role="alert"><strong>Warnings from the analysis '
                     f"({len(warnings)})</strong><ul>{items}</ul></div>")
    return "".join(parts)


def _fmt2(value: Any) -> str:
    f = _num(value)
    return DASH if f is None else f"{f:,.2f}"


def _headline(result: dict, arms: dict[str, dict]) -> str:
    primary = str(result.get("primary_metric") or "")
    running = bool(result.get("running"))
    control = result.get("control")
    rate = _is_rate(primary, result)
    comparisons = [c for c in result.get("comparisons") or [] if c.get("metric") == primary]
    yet = " yet" if running else ""
    parts = [f"<h2>Headline: {escape(_label(primary))} <span class=\"muted\">({escape(primary)}, primary metric)</span></h2>",
             '<div class="headline">']
    srm = result.get("srm") or {}
    if any((srm.get(s) or {}).get("alarm") for s in ("assigned", "exposed")):
        parts.append('<p><strong style="color:#c62828">Sample-ratio mismatch: the conclusions below are not '
                     "trustworthy.</strong></p>")
    baselines = [b for b in (control, HOLDOUT) if b and any(c.get("baseline") == b for c in comparisons)]
    if not comparisons:
        parts.append(f"<p>No comparisons on {escape(primary)} yet: not enough data.</p>")
    for baseline in baselines:
        rows = [c for c in comparisons if c.get("baseline") == baseline]
        winners = [c for c in rows if _significant(c)]
        who = "the holdout (no offer)" if baseline == HOLDOUT else f"the control, {_arm_name(baseline, arms)}"
        if winners:
            winners.sort(key=lambda c: -(_num(c.get("difference")) or 0.0))
            items = "".join(f"<li>{_sentence(c, arms, rate, running)}</li>" for c in winners)
            parts.append(f"<p>Against {who}, significant after the multiple-comparison correction:</p><ul>{items}</ul>")
            others = [c for c in rows if not _significant(c)]
            if others:
                names = ", ".join(f"<strong>{escape(c.get('arm'))}</strong>" for c in others)
                parts.append(f"<p>Other arms vs {escape(baseline)}: no significant difference{yet} ({names}).</p>")
        else:
            parts.append(f"<p>Against {who}: <strong>no significant difference{yet}</strong> on {escape(primary)} "
                         f"(no arm has a Holm-adjusted p below {ALPHA:g}).</p>")
    if comparisons and not any(_significant(c) for c in comparisons):
        parts.append('<p>"No significant difference" is not "no difference": the <a href="#sample-size">sample-size '
                     "section</a> says which effects the experiment can detect with the customers it has now.</p>")
    parts.append(_guardrail_lines(result))
    parts.append("</div>")
    return "".join(parts)


def _guardrail_lines(result: dict) -> str:
    lines = []
    for metric in result.get("guardrail_metrics") or []:
        rate = _is_rate(metric, result)
        rows = [c for c in result.get("comparisons") or [] if c.get("metric") == metric and _significant(c)]
        worse = [c for c in rows if (_num(c.get("difference")) or 0) < 0]
        better = [c for c in rows if (_num(c.get("difference")) or 0) > 0]
        if worse:
            per = "" if rate else " per customer"
            items = "; ".join(
                f"{escape(c.get('arm'))} vs {escape(c.get('baseline'))}: {_diff(c.get('difference'), rate)}{per} (95% CI "
                f"{_diff_interval(c.get('low'), c.get('high'), rate)}, adjusted p {escape(_p_is(c.get('p_adjusted')))})"
                for c in worse)
            lines.append(f'<li><span class="verdict-worse">Guardrail {escape(metric)} is significantly worse</span>: '
                         f"{items}.</li>")
        elif better:
            names = ", ".join(f"{escape(c.get('arm'))} vs {escape(c.get('baseline'))}" for c in better)
            lines.append(f"<li>Guardrail {escape(metric)}: no significant harm; significantly better for {names}.</li>")
        else:
            lines.append(f"<li>Guardrail {escape(metric)}: no significant difference between any arms.</li>")
    return f"<ul>{''.join(lines)}</ul>" if lines else ""


def _metric_cell(metric: str, m: dict | None, rate: bool) -> str:
    if not m:
        return f"<td>{DASH}</td>"
    est = _value(metric, m.get("estimate"), rate)
    ci = _interval(m.get("low"), m.get("high"), lambda v: _value(metric, v, rate))
    detail = f"95% CI {ci}" + f" · n {_count(m.get('n'))}"
    if rate and _num(m.get("successes")) is not None:
        detail += f" ({_count(m.get('successes'))} yes)"
    missing = _num(m.get("missing"))
    if missing:
        detail += f" · <strong>{_count(missing)} missing</strong>"
    return f'<td>{est}<span class="ci">{detail}</span></td>'


def _arms_table(result: dict, metrics: list[str]) -> str:
    arms = result.get("arms") or []
    if not arms:
        return '<p class="muted">No arms recorded.</p>'
    total_assigned = sum(_num(a.get("assigned")) or 0 for a in arms)
    head = ["Arm", "What it does", "Expected share", "Assigned (share)", "Exposed",
            *[f"{escape(_label(m))}<br><span class=\"muted\">{escape(m)}</span>" for m in metrics]]
    rows = []
    for a in arms:
        cls = "control" if a.get("is_control") else "holdout" if a.get("is_holdout") else ""
        role = " (control)" if a.get("is_control") else ""
        assigned = _num(a.get("assigned"))
        share = _pct(assigned / total_assigned) if assigned is not None and total_assigned else DASH
        cells = [f"<td><strong>{escape(a.get('name'))}</strong>{role}</td>", f'<td class="text">{escape(_what(a))}</td>',
                 f"<td>{_pct(a.get('expected_share'))}</td>", f"<td>{_count(a.get('assigned'))} ({share})</td>",
                 f"<td>{_count(a.get('exposed'))}</td>"]
        cells += [_metric_cell(m, (a.get("metrics") or {}).get(m), _is_rate(m, result)) for m in metrics]
        rows.append(f'<tr class="{cls}">{"".join(cells)}</tr>')
    thead = "".join(f"<th>{h}</th>" for h in head)
    return (f'<div class="scroll"><table><thead><tr>{thead}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'
            '<p class="muted">Rates are shares of the arm\'s customers whose outcome is known (n); "missing" '
            "customers were exposed but their outcome could not be determined yet or at all. Money is in the plan "
            "currency, per customer.</p>")


def _comparison_tables(result: dict, metrics: list[str]) -> str:
    comparisons = result.get("comparisons") or []
    if not comparisons:
        return '<p class="muted">No comparisons yet.</p>'
    parts = []
    for metric in metrics:
        rows = [c for c in comparisons if c.get("metric") == metric]
        if not rows:
            continue
        rate = _is_rate(metric, result)
        role = (" — primary metric" if metric == result.get("primary_metric")
                else " — guardrail" if metric in (result.get("guardrail_metrics") or []) else "")
        unit = "percentage points" if rate else "plan currency per customer"
        parts.append(f"<h3>{escape(_label(metric))} <span class=\"muted\">({escape(metric)}{role}; differences in "
                     f"{unit}, arm minus baseline)</span></h3>")
        head = ["Arm", "vs", "Difference", "95% CI (fixed horizon)", "Always-valid 95% CI", "p", "Holm-adjusted p",
                "n arm / baseline", "Verdict"]
        body = []
        for c in rows:
            d = _num(c.get("difference"))
            sig = _significant(c)
            cls = ("sig-better" if d > 0 else "sig-worse") if sig and d else ""
            if sig and d:
                word = "better" if d > 0 else "worse"
                verdict = f'<span class="verdict-{word}">{word}</span>'
                av_ok = _excludes_zero(c.get("always_valid_low"), c.get("always_valid_high"))
                verdict += " (final)" if av_ok else " (not yet safe to stop)" if result.get("running") else ""
            else:
                verdict = "no significant difference" if d is not None else "not enough data"
            body.append(
                f'<tr class="{cls}"><td>{escape(c.get("arm"))}</td><td class="text">{escape(c.get("baseline"))}</td>'
                f"<td>{_diff(c.get('difference'), rate)}</td>"
                f"<td>{_diff_interval(c.get('low'), c.get('high'), rate)}</td>"
                f"<td>{_diff_interval(c.get('always_valid_low'), c.get('always_valid_high'), rate)}</td>"
                f"<td>{escape(_p(c.get('p_value')))}</td><td>{escape(_p(c.get('p_adjusted')))}</td>"
                f"<td>{_count(c.get('n_arm'))} / {_count(c.get('n_baseline'))}</td>"
                f'<td class="text">{verdict}</td></tr>')
        thead = "".join(f"<th>{h}</th>" for h in head)
        parts.append(f"<table><thead><tr>{thead}</tr></thead><tbody>{''.join(body)}</tbody></table>")
    parts.append(f'<p class="muted">Highlighted rows: Holm-adjusted p below {ALPHA:g} (green better, red worse). '
                 "\"Final\" means the always-valid interval excludes zero as well, so the result stands although the "
                 "data were looked at before the planned end.</p>")
    return "".join(parts)


def _srm_section(result: dict, arms: dict[str, dict]) -> str:
    srm = result.get("srm") or {}
    parts = ['<h2 id="srm">Sample-ratio check</h2>',
             "<p>Does each arm have the share of customers the design gives it? A mismatch (p below the alarm "
             "threshold) means the assignment or the logging is broken, and then no comparison can be trusted.</p>"]
    stages = [(s, srm[s]) for s in ("assigned", "exposed") if isinstance(srm.get(s), dict)]
    if not stages:
        return "".join([*parts, '<p class="muted">No sample-ratio check recorded.</p>'])
    names = list(arms) or sorted({n for _, s in stages for n in (s.get("observed") or {})})
    head = "<th>Arm</th>" + "".join(f"<th>{escape(s)}: observed</th><th>{escape(s)}: expected</th>" for s, _ in stages)
    body = []
    for name in names:
        cells = "".join(f"<td>{_count((s.get('observed') or {}).get(name))}</td>"
                        f"<td>{_fmt1((s.get('expected') or {}).get(name))}</td>" for _, s in stages)
        body.append(f"<tr><td>{escape(name)}</td>{cells}</tr>")
    result_row = "".join(
        f'<td colspan="2" class="text">chi2 = {_fmt2(s.get("chi2"))}, p = {escape(_p_exact(s.get("p_value")))}: '
        + ('<strong style="color:#c62828">ALARM</strong>' if s.get("alarm") else "ok") + "</td>" for _, s in stages)
    body.append(f"<tr><td><strong>check</strong></td>{result_row}</tr>")
    parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")
    parts.append(_figure(_srm_chart(stages, names),
                         "Each arm's observed customers (solid) next to the count its designed share predicts "
                         "(light), with the gap in % of expected above; the two bars of every arm should be about "
                         "the same height.",
                         "No customers assigned yet: no sample-ratio chart."))
    return "".join(parts)


def _fmt1(value: Any) -> str:
    f = _num(value)
    return DASH if f is None else f"{f:,.1f}"


def _sample_size_section(result: dict) -> str:
    s = result.get("sample_size") or {}
    parts = ['<h2 id="sample-size">Sample size</h2>']
    if not s:
        return "".join([*parts, '<p class="muted">No sample-size plan recorded.</p>'])
    metric = str(s.get("metric") or result.get("primary_metric") or "")
    rate = _is_rate(metric, result)
    per_arm, smallest = _num(s.get("per_arm")), _num(s.get("smallest_arm_now"))
    baseline_value = _value(metric, s.get("baseline_rate"), rate)
    baseline = f" from a baseline of {baseline_value}" if baseline_value != DASH else ""
    mde = _diff(s.get("mde"), rate).lstrip("+")
    detectable = _diff(s.get("detectable_now"), rate).lstrip("+")
    parts.append(
        f"<p>To detect a change of <strong>{mde}</strong> in {escape(metric)}{baseline} with a false-positive rate "
        f"alpha = {escape(_fmt_level(s.get('alpha')))} and {_power(s.get('power'))} power, each arm needs "
        f"<strong>{_count(per_arm)}</strong> customers with a known outcome.</p>")
    if per_arm and smallest is not None:
        share = min(1.0, smallest / per_arm)
        reached = ("The planned sample size is reached." if smallest >= per_arm
                   else f"{_pct(share)} of the plan.")
        parts.append(f'<p>The smallest arm has <strong>{_count(smallest)}</strong> now: '
                     f'<span class="progress" title="{_pct(share)}"><span style="width:{100 * share:.1f}%"></span>'
                     f"</span> {reached}</p>")
    else:
        parts.append(f"<p>The smallest arm has <strong>{_count(smallest)}</strong> now.</p>")
    parts.append(f"<p>With the customers there are now, the effect the experiment can reliably detect is about "
                 f"<strong>{detectable}</strong>: real differences smaller than that will most likely show as "
                 "\"no significant difference\", which is not the same as \"no difference\".</p>")
    return "".join(parts)


def _power(value: Any) -> str:
    f = _num(value)
    return DASH if f is None else f"{100 * f:g}%"


def _fmt_level(value: Any) -> str:
    f = _num(value)
    return DASH if f is None else f"{f:g}"


def _definitions_section(result: dict, metrics: list[str]) -> str:
    definitions = result.get("metric_definitions") or {}
    items = []
    for m in [*metrics, *[k for k in definitions if k not in metrics]]:
        role = (" (primary)" if m == result.get("primary_metric")
                else " (guardrail)" if m in (result.get("guardrail_metrics") or []) else "")
        definition = definitions.get(m) or "no definition recorded"
        items.append(f"<dt>{escape(m)}{role}: {escape(_label(m))}</dt><dd>{escape(definition)}</dd>")
    unit = escape(result.get("unit") or "not recorded")
    return f"""
<h2 id="how-to-read">Metric definitions and how to read this page</h2>
<dl>{''.join(items)}</dl>
<h3>How to read this</h3>
<ul>
<li><strong>Unit of analysis</strong>: {unit}. Every count, rate and interval on this page is over these
units.</li>
<li><strong>Fixed-horizon 95% intervals</strong> (and p-values) are valid only once, at the planned end of the
experiment. Checking them every day and stopping as soon as one excludes zero finds an "effect" far more often
than 5% of the time.</li>
<li><strong>Always-valid 95% intervals</strong> are wider but may be checked every day: the chance that they
ever exclude the true difference is at most 5%. Once an arm's always-valid interval leaves zero it is safe to
stop and act on it.</li>
<li><strong>Holm-adjusted p</strong>: several arms are compared at once, which gives more chances of a false
winner; Holm's correction raises the p-values so that the chance of any false winner stays below 5%. The
headline and the highlighted rows use the adjusted p below {ALPHA:g}.</li>
<li><strong>Differences</strong> are arm minus baseline: in percentage points (pp) for rates, in the plan
currency per customer for money. "+3.1 pp" on a 59% rate means 62.1%, not 59% &times; 1.031.</li>
<li><strong>Control vs holdout</strong>: the control is the arm every variant must beat to replace it; the
holdout shows no offer at all and measures what offering anything is worth.</li>
<li><strong>Sample-ratio mismatch</strong>: when the arms' sizes do not match the design, the results are
biased in unknown ways; fix the assignment before reading anything else.</li>
</ul>"""


# ---------------------------------------------------------------------------------------------------------------
# Charts
# ---------------------------------------------------------------------------------------------------------------


def _t(text: Any) -> str:
    """Plain text for matplotlib: a "$" would otherwise start mathtext."""
    return str(text).replace("$", r"\$")


def _figure(img: str, caption: str, empty_note: str) -> str:
    """A chart with its caption, or a short note when the chart had no data (the chart function returned "")."""
    if not img:
        return f'<p class="muted">{escape(empty_note)}</p>'
    return f"<figure>{img}<figcaption>{escape(caption)}</figcaption></figure>"


def _scale(rate: bool) -> float:
    return 100.0 if rate else 1.0


def _forest_chart(result: dict) -> str:
    primary = str(result.get("primary_metric") or "")
    rate = _is_rate(primary, result)
    k = _scale(rate)
    rows = [c for c in result.get("comparisons") or [] if c.get("metric") == primary]
    rows.sort(key=lambda c: c.get("baseline") == HOLDOUT)  # stable: vs control first, then vs holdout
    if not any(_num(c.get("difference")) is not None for c in rows):
        return ""
    n = len(rows)
    fig = Figure(figsize=(9, 1.6 + 0.55 * n), layout="constrained")
    ax = fig.add_subplot()
    for i, c in enumerate(rows):
        y = n - 1 - i
        d = _num(c.get("difference"))
        if d is None:
            ax.text(0, y, "not enough data", va="center", ha="center", color=_NEUTRAL, fontsize="small",
                    bbox={"facecolor": "white", "edgecolor": "none"})
            continue
        colour = (_BETTER if d > 0 else _WORSE) if _significant(c) else _NEUTRAL
        lo, hi = _num(c.get("always_valid_low")), _num(c.get("always_valid_high"))
        if lo is not None and hi is not None:
            ax.hlines(y, lo * k, hi * k, color=colour, linewidth=1.5)
            ax.vlines([lo * k, hi * k], y - 0.12, y + 0.12, color=colour, linewidth=1.5)
        lo, hi = _num(c.get("low")), _num(c.get("high"))
        if lo is not None and hi is not None:
            ax.hlines(y, lo * k, hi * k, color=colour, linewidth=8, alpha=0.55)
        ax.plot([d * k], [y], marker="D", color="black", markersize=5, zorder=3)
        ax.annotate(f"{_diff(d, rate)}, adj. p {_p_is(c.get('p_adjusted'))}", xy=(1.01, y),
                    xycoords=("axes fraction", "data"), va="center", fontsize="small", color=colour)
    if any(c.get("baseline") == HOLDOUT for c in rows) and any(c.get("baseline") != HOLDOUT for c in rows):
        split = n - sum(c.get("baseline") != HOLDOUT for c in rows) - 0.5
        ax.axhline(split, color="#bbbbbb", linestyle=":", linewidth=1)
    ax.axvline(0, color="black", linewidth=1)
    ax.set_yticks(range(n), [_t(f"{c.get('arm')} vs {c.get('baseline')}") for c in reversed(rows)])
    ax.set_ylim(-0.7, n - 0.3)
    unit = "percentage points" if rate else "per customer"
    ax.set(xlabel=_t(f"difference in {primary} ({unit}), arm minus baseline"),
           title=_t(f"{_label(primary)}: differences between arms"))
    ax.grid(axis="x", color="#eeeeee")
    handles = [Line2D([], [], color=_NEUTRAL, linewidth=8, alpha=0.55, label="95% CI (fixed horizon)"),
               Line2D([], [], color=_NEUTRAL, linewidth=1.5, label="always-valid 95% CI"),
               Line2D([], [], color="black", marker="D", linestyle="", markersize=5, label="estimate"),
               Patch(color=_BETTER, label="significantly better"), Patch(color=_WORSE, label="significantly worse")]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize="small", frameon=False)
    return png_img(fig, f"Forest plot of differences in {primary}")


def _arm_estimates_chart(result: dict, metrics: list[str], rate: bool) -> str:
    arms = [a for a in result.get("arms") or [] if a.get("name") is not None]
    metrics = [m for m in metrics if any(_num(((a.get("metrics") or {}).get(m) or {}).get("estimate")) is not None
                                         for a in arms)]
    if not arms or not metrics:
        return ""
    k = _scale(rate)
    if rate:
        fig = Figure(figsize=(max(6, 1.6 * len(arms) + 2), 4.2))
        axes = [fig.add_subplot()]
        groups = [metrics]
    else:
        fig = Figure(figsize=(max(6, (1.4 * len(arms) + 1.5) * len(metrics)), 4.2))
        axes = list(fig.subplots(1, len(metrics), squeeze=False)[0])
        groups = [[m] for m in metrics]
    colours = ["#0969da", "#bf8700", "#8250df", "#1a7f37", "#cf222e", "#57606a"]
    for ax, group in zip(axes, groups, strict=True):
        width = 0.6 / len(group)
        for j, m in enumerate(group):
            xs, ys, lows, highs = [], [], [], []
            for i, a in enumerate(arms):
                stats = (a.get("metrics") or {}).get(m) or {}
                est = _num(stats.get("estimate"))
                if est is None:
                    continue
                lo, hi = _num(stats.get("low")), _num(stats.get("high"))
                xs.append(i - 0.3 + width * (j + 0.5) if len(group) > 1 else i)
                ys.append(est * k)
                lows.append(max(0.0, (est - lo) * k) if lo is not None else 0.0)
                highs.append(max(0.0, (hi - est) * k) if hi is not None else 0.0)
            label = _t(f"{_label(m)} ({m})")
            ax.errorbar(xs, ys, yerr=[lows, highs], fmt="o", capsize=4, color=colours[j % len(colours)], label=label)
        ax.set_xticks(range(len(arms)), [_t(_arm_tick(a)) for a in arms])
        ax.set_xlim(-0.6, len(arms) - 0.4)
        ax.grid(axis="y", color="#eeeeee")
        if rate:
            ax.set(ylabel="share of customers (%)", title="Rates per arm, with 95% CIs")
            ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
        else:
            ax.set(ylabel="per customer (plan currency)", title=_t(f"{_label(group[0])} ({group[0]}) per arm, "
                                                                    "with 95% CI"))
    return png_img(fig, "Per-arm rates with 95% confidence intervals" if rate else "Per-arm money metrics with 95% CIs")


def _arm_tick(arm: dict) -> str:
    name = str(arm.get("name"))
    if arm.get("is_control"):
        return f"{name}\n(control)"
    if arm.get("is_holdout"):
        return f"{name}\n(no offer)"
    offer = arm.get("offer")
    return f"{name}\n({offer})" if offer and str(offer) != name else name


def _day(value: Any) -> date | None:
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        return None


def _timeline_chart(result: dict) -> str:
    primary = str(result.get("primary_metric") or "")
    rate = _is_rate(primary, result)
    k = _scale(rate)
    by_arm: dict[str, list[dict]] = {}
    for row in result.get("timeline") or []:
        if _day(row.get("day")) is None or row.get("metric", primary) != primary:
            continue
        by_arm.setdefault(f"{row.get('arm')} vs {row.get('baseline')}", []).append(row)
    by_arm = {name: sorted(rows, key=lambda r: str(r.get("day"))) for name, rows in by_arm.items()
              if any(_num(r.get("difference")) is not None for r in rows)}
    if not by_arm:
        return ""
    ncols = min(3, len(by_arm))
    nrows = math.ceil(len(by_arm) / ncols)
    fig = Figure(figsize=(4.2 * ncols + 0.5, 3.4 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True).ravel()
    tails: list[float] = []
    everything: list[float] = []
    for ax, (name, rows) in zip(axes, by_arm.items(), strict=False):
        days = [_day(r.get("day")) for r in rows]
        diff = [_nan(r.get("difference"), k) for r in rows]
        low = [_nan(r.get("always_valid_low"), k) for r in rows]
        high = [_nan(r.get("always_valid_high"), k) for r in rows]
        last_lo, last_hi = rows[-1].get("always_valid_low"), rows[-1].get("always_valid_high")
        colour = _NEUTRAL
        if _excludes_zero(last_lo, last_hi):
            colour = _BETTER if (_num(last_lo) or 0) > 0 else _WORSE
        ax.fill_between(days, low, high, color=colour, alpha=0.22, linewidth=0, label="always-valid 95% CI")
        ax.plot(days, diff, color=colour, linewidth=2, label="difference (estimate)")
        ax.axhline(0, color="black", linewidth=1)
        status = "band clear of zero: safe to stop" if colour != _NEUTRAL else "band includes zero: keep going"
        ax.set_title(_t(f"{name}\n{status}"), fontsize="medium", color=colour if colour != _NEUTRAL else "black")
        ax.grid(color="#eeeeee")
        finite = [v for v in (*low, *high, *diff) if not math.isnan(v)]
        everything += finite
        tail_start = len(rows) // 3
        tails += [v for v in (*low[tail_start:], *high[tail_start:], *diff) if not math.isnan(v)]
        locator = AutoDateLocator(maxticks=6)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    for ax in axes[len(by_arm):]:
        ax.set_visible(False)
    for ax in axes[::ncols]:
        ax.set_ylabel("difference (pp)" if rate else "difference per customer")
    clipped = False
    if tails:
        lo_t, hi_t = min(*tails, 0.0), max(*tails, 0.0)
        pad = 0.35 * (hi_t - lo_t or 1.0)
        if min(everything) < lo_t - pad or max(everything) > hi_t + pad:
            axes[0].set_ylim(lo_t - pad, hi_t + pad)  # shared y: the first days' very wide bands are cut off
            clipped = True
    handles = [Patch(color=_NEUTRAL, alpha=0.22, label="always-valid 95% CI"),
               Line2D([], [], color=_NEUTRAL, linewidth=2, label="difference (cumulative estimate)"),
               Line2D([], [], color="black", linewidth=1, label="no difference")]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize="small", frameon=False)
    title = f"{_label(primary)}: cumulative difference vs control, by day"
    fig.suptitle(_t(title + ("\n(the widest bands of the first days are cut off)" if clipped else "")),
                 fontsize="medium")
    return png_img(fig, f"Timeline of the always-valid interval of {primary} per arm")


def _nan(value: Any, k: float) -> float:
    f = _num(value)
    return math.nan if f is None else f * k


def _srm_chart(stages: list[tuple[str, dict]], names: list[str]) -> str:
    stages = [(s, d) for s, d in stages if any(_num((d.get("observed") or {}).get(n)) for n in names)]
    if not stages or not names:
        return ""
    fig = Figure(figsize=(max(6, 1.3 * len(names) + 1.5) * len(stages), 3.8), layout="constrained")
    axes = fig.subplots(1, len(stages), squeeze=False)[0]
    for ax, (stage, d) in zip(axes, stages, strict=True):
        observed = [_num((d.get("observed") or {}).get(n)) or 0.0 for n in names]
        expected = [_num((d.get("expected") or {}).get(n)) or 0.0 for n in names]
        xs = range(len(names))
        colour = "#c62828" if d.get("alarm") else _CONTROL
        ax.bar([x - 0.2 for x in xs], observed, width=0.4, color=colour, label="observed")
        ax.bar([x + 0.2 for x in xs], expected, width=0.4, color=colour, alpha=0.35, label="expected by design")
        for x, o, e in zip(xs, observed, expected, strict=True):  # how far off each arm is, in % of expected
            if e > 0:
                ax.annotate(f"{100 * (o - e) / e:+.1f}%", (x, max(o, e)), xytext=(0, 3), textcoords="offset points",
                            ha="center", va="bottom", fontsize="small")
        ax.set_xticks(list(xs), [_t(n) for n in names])
        ax.set_ylim(0, 1.25 * max(*observed, *expected, 1.0))
        ax.set_axisbelow(True)
        verdict = "MISMATCH" if d.get("alarm") else "ok"
        ax.set_title(_t(f"{stage}: chi2 = {_fmt2(d.get('chi2'))}, p = {_p_exact(d.get('p_value'))} ({verdict})"),
                     color=colour if d.get("alarm") else "black", fontsize="medium")
        ax.set_ylabel("customers")
        ax.grid(axis="y", color="#eeeeee")
        ax.legend(fontsize="small", loc="upper right", ncols=2, frameon=False)
    return png_img(fig, "Observed vs expected customers per arm")


# ---------------------------------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------------------------------


def render_html(result: dict) -> str:
    """The whole page as one HTML string (see the module docstring)."""
    arms = {str(a.get("name")): a for a in result.get("arms") or []}
    metrics = _metric_order(result)
    primary = str(result.get("primary_metric") or "")
    rate_metrics = [m for m in metrics if _is_rate(m, result)]
    money_metrics = [m for m in metrics if not _is_rate(m, result)]
    name = result.get("experiment", "unnamed")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Experiment {escape(name)}</title>",
        f"<style>{_CSS}</style></head><body>",
        _header(result),
        _banners(result),
        _headline(result, arms),
        _figure(_forest_chart(result),
                "Each row is one arm compared with a baseline: the diamond is the estimated difference, the thick bar "
                "the 95% interval valid at the planned end, the thin bar the always-valid interval that may be "
                "checked any day; a row whose bar does not cross the zero line differs from its baseline.",
                f"No data yet for a chart of the {primary} differences."),
        "<h2>Over time: is it safe to stop?</h2>",
        _figure(_timeline_chart(result),
                f"The band is the always-valid 95% interval of each arm's difference in {primary} vs the control, "
                "as known each day (the running intersection since the first day, which stays valid), and the line "
                "its estimate: once the band leaves zero "
                "it is safe to stop. Green: the arm is better than the control, red: worse, grey: not decided yet.",
                "No timeline yet: nothing to plot over time."),
        "<h2>Arms</h2>",
        _arms_table(result, metrics),
    ]
    if rate_metrics:
        parts.append(_figure(_arm_estimates_chart(result, rate_metrics, rate=True),
                             "Each point is an arm's rate and its whisker the 95% interval; arms whose whiskers "
                             "overlap a lot are not clearly different (the comparisons below say for sure).",
                             "No rates measured yet: no chart."))
    if money_metrics:
        parts.append(_figure(_arm_estimates_chart(result, money_metrics, rate=False),
                             "Each point is an arm's average per customer and its whisker the 95% interval; higher "
                             "is better.",
                             "No money metric measured yet: no chart."))
    parts += [
        "<h2>Comparisons</h2>",
        _comparison_tables(result, metrics),
        _srm_section(result, arms),
        _sample_size_section(result),
        _definitions_section(result, metrics),
        "</body></html>\n",
    ]
    return "\n".join(p for p in parts if p)


def write_html(result: dict, path: str | Path) -> Path:
    """Write `render_html(result)` to `path` (parent folders created), replacing any older file atomically."""
    path = Path(path)
    text = render_html(result)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # readers never see half a page
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
