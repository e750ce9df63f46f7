"""The HTML report of an offer A/B experiment, read by product managers choosing which retention offer to keep.

One self-contained file (inline CSS and base64 PNG charts, no external assets and no JavaScript, so it can be
mailed or opened from an artifact store), in the style of the model report. Input: the typed analysis of one
experiment (retention.experiment_analysis.ExperimentResult: arms with per-metric estimates, comparisons with
fixed-horizon and always-valid intervals, the sample-ratio check, the sample-size plan and a cumulative
timeline of the primary metric). The page is reports/templates/experiment.html.j2; this module decides what
it says (the headline's verdicts, the order of the metrics, the words for an arm) and draws its charts.

The page says what the unit of analysis is and what each metric means, puts a plain-language headline first
(which arms beat the control and the holdout on the primary metric after Holm's correction), and flags problems
loudly: a red banner on a sample-ratio mismatch, a yellow one for the analysis' warnings. Numbers that do not
exist yet (NaN or None, e.g. when an arm has no customers) render as "–"; charts without data are skipped with
a note.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from pathlib import Path

from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from reports.formatting import change, change_interval, finite, fixed, p_exact, p_is, when
from reports.render import Chart, chart, render, write_page
from retention.experiment_analysis import (
    KEEP_RUNNING,
    SHIP,
    SIGNIFICANCE,
    ArmResult,
    Comparison,
    DataWindow,
    ExperimentResult,
    RateEstimate,
    Recommendation,
    SrmCheck,
    TimelinePoint,
    data_window,
    decided,
    recommend,
)
from retention.experiments import HOLDOUT

ALPHA = SIGNIFICANCE  # significance level of the headline and the highlighted rows: Holm-adjusted p < ALPHA
_RATE_METRICS = ("accepted",)  # rates whose name does not say so; retained_* are rates too
_LABELS = {"accepted": "Accepted the offer", "retained_30": "Retained at day 30", "retained_90": "Retained at day 90",
           "net_revenue_90": "Net revenue over 90 days"}
_BETTER, _WORSE, _NEUTRAL, _CONTROL = "#1a7f37", "#cf222e", "#57606a", "#0969da"
# One meaning per colour on the whole page: every difference is arm minus baseline and every metric is better
# higher, so green is "the arm is better for the business than its baseline", red "worse", grey "not decided".
TONES = {"better": _BETTER, "worse": _WORSE, "undecided": _NEUTRAL}


def tone(difference: float, sure: bool) -> str:
    """ "better", "worse" or "undecided": the word (and through TONES the colour) of one arm-minus-baseline
    difference, the same in the forest plot, the timeline and the comparison tables."""
    d = finite(difference)
    if not sure or not d:
        return "undecided"
    return "better" if d > 0 else "worse"


# ---------------------------------------------------------------------------------------------------------------
# Words
# ---------------------------------------------------------------------------------------------------------------


def label(metric: str) -> str:
    """A metric's name for a reader: "Retained at day 30"."""
    if metric in _LABELS:
        return _LABELS[metric]
    m = re.fullmatch(r"(retained|net_revenue)_(\d+)", metric)
    if m:
        return f"Retained at day {m[2]}" if m[1] == "retained" else f"Net revenue over {m[2]} days"
    return metric


def what(arm: ArmResult) -> str:
    """What an arm does to the customer, in words."""
    if arm.is_holdout:
        return "holdout: no offer is shown"
    if arm.kind == "offer":
        return f"always offers {arm.offer}" if arm.offer else "a fixed offer"
    if arm.kind == "model":
        return "the model's policy chooses the offer"
    if arm.kind == "rules":
        return "the rule-based policy chooses the offer"
    if arm.kind == "none":
        return "no offer is shown"
    return arm.kind or "–"


def effect(metric: str, difference: float, rate: bool) -> str:
    """ "keeps 3.1 pp more customers at day 30" and the like, for a significant difference."""
    size = change(abs(difference), rate, sign=False)
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


def excludes_zero(low: float, high: float) -> bool:
    lo, hi = finite(low), finite(high)
    return lo is not None and hi is not None and (lo > 0 or hi < 0)


def significant(c: Comparison) -> bool:
    """Holm-adjusted p below ALPHA, with a difference to show."""
    p = finite(c.p_adjusted)
    return p is not None and p < ALPHA and finite(c.difference) is not None


def is_rate(metric: str, result: ExperimentResult) -> bool:
    if metric in _RATE_METRICS or metric.startswith("retained_"):
        return True
    return any(isinstance(a.metric(metric), RateEstimate) for a in result.arms)


def metric_order(result: ExperimentResult) -> list[str]:
    """Primary metric, guardrails, then every other metric in the order the analysis lists them."""
    candidates = [result.primary_metric, *result.guardrail_metrics]
    for arm in result.arms:
        candidates += list(arm.metrics)
    candidates += list(result.metric_definitions)
    candidates += [c.metric for c in result.comparisons]
    return list(dict.fromkeys(name for name in candidates if name))


def _pair(c: Comparison) -> str:
    return f"{c.arm} vs {'the holdout' if c.baseline == HOLDOUT else c.baseline}"


def _difference(c: Comparison, rate: bool) -> str:
    """ "+4.6 pp retained at day 30 vs model (95% CI +1.9 to +7.3 pp)" """
    unit = "" if rate else " per customer"
    return (f"{change(c.difference, rate)}{unit} {label(c.metric).lower()} vs "
            f"{'the holdout' if c.baseline == HOLDOUT else c.baseline} "
            f"(95% CI {change_interval(c.low, c.high, rate)}, adjusted p {p_is(c.p_adjusted)})")


def recommendation_line(rec: Recommendation, result: ExperimentResult) -> str:
    """The one line a product manager acts on, in words, from retention.experiment_analysis.recommend."""
    rate = is_rate(rec.metric, result)
    if rec.action == SHIP and rec.evidence:
        guards = ", ".join(result.guardrail_metrics)
        also = ("; no variant beats it" if rec.arm == result.control and rec.baseline == HOLDOUT
                and any(c.baseline == result.control for c in result.comparisons) else "")
        return (f"Ship {rec.arm}: {_difference(rec.evidence, rate)}{also}; "
                + (f"guardrails OK ({guards} not significantly worse)" if guards else "no guardrails set") + ".")
    if rec.action == KEEP_RUNNING:
        if rec.why == "no_data":
            head = f"Keep running: no {rec.metric} outcomes yet"
        else:
            pairs = ", ".join(_pair(c) for c in rec.undecided)
            head = f"Keep running: not yet significant ({pairs})"
        plan = result.sample_size
        if rec.more_flows:
            return (f"{head}; about {rec.more_flows:,} more cancel flows in the experiment give every arm "
                    f"involved the planned {plan.per_arm:,} customers with a known outcome.")
        if plan.per_arm is None:
            return f"{head}; no sample-size plan yet (the control has no known {plan.metric} outcome)."
        return f"{head}; those arms have the planned {plan.per_arm:,} customers, the others not yet."
    if rec.why == "srm":
        return ("Stop: sample-ratio mismatch. The arms' sizes do not match the design, so no comparison can be "
                "trusted; fix the assignment first.")
    if rec.why == "guardrail" and rec.evidence and rec.breach:
        g = rec.breach
        return (f"Stop: guardrail breached. {rec.arm} gets {_difference(rec.evidence, rate)}, but "
                f"{_difference(g, is_rate(g.metric, result))} on the guardrail {g.metric}; do not ship it.")
    if rec.why == "no_data":
        return (f"Stop: the experiment has ended with no {rec.metric} outcomes to compare; keep {result.control}. "
                "Nothing was learnt: run it again for longer.")
    where = "at the end" if not result.running else "at the planned sample size"
    return (f"Stop: no arm beats {result.control} on {rec.metric} {where}; keep {result.control}. "
            "A difference smaller than the sample-size section's detectable effect may still exist.")


def window_line(window: DataWindow, result: ExperimentResult) -> str:
    """ "Data: cancel flows from 2026-11-30 to 2027-03-11, outcomes as of 2027-03-11 14:02 UTC; ..." """
    day = "%Y-%m-%d"
    text = (f"Data: cancel flows from {window.start.strftime(day)} (start) to {window.end.strftime(day)}, "
            f"outcomes as of {when(window.as_of)}.")
    if window.horizon_days:
        if window.known_through < window.start:
            text += (f" {label(result.primary_metric)} is known {window.horizon_days} days after a flow: "
                     "no flow is that old yet.")
        else:
            text += (f" {label(result.primary_metric)} counts the flows up to {window.known_through.strftime(day)}"
                     f", the last ones {window.horizon_days} days old; the timeline starts when the first ones"
                     " were.")
    return text


# ---------------------------------------------------------------------------------------------------------------
# What the page shows (the template reads it)
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BaselineVerdict:
    """The headline's paragraph on one baseline (the control or the holdout) for the primary metric."""

    baseline: str
    winners: list[Comparison]  # significant after Holm's correction, largest difference first
    others: list[Comparison]


@dataclass(frozen=True)
class GuardrailVerdict:
    metric: str
    worse: list[Comparison]  # significantly worse than their baseline
    better: list[Comparison]


@dataclass(frozen=True)
class RowVerdict:
    """A comparison table row's highlight and verdict."""

    row_class: str  # "sig-better", "sig-worse" or ""
    word: str  # "better" or "worse" when significant, else ""
    text: str  # what follows the word, or the whole verdict without one


class Page:
    """The experiment page's content, computed once from the result; the template reads its attributes."""

    def __init__(self, result: ExperimentResult) -> None:
        self.result = result
        self.alpha = ALPHA
        self.holdout = HOLDOUT
        self.metrics = metric_order(result)
        self.rate = {m: is_rate(m, result) for m in {*self.metrics, result.sample_size.metric}}
        self.rate_metrics = [m for m in self.metrics if self.rate[m]]
        self.money_metrics = [m for m in self.metrics if not self.rate[m]]
        self.arms = {a.name: a for a in result.arms}
        self.srm_alarms = [(stage, s) for stage, s in result.srm.stages() if s.alarm]
        self.primary = [c for c in result.comparisons if c.metric == result.primary_metric]
        self.primary_significant = any(significant(c) for c in self.primary)
        self.recommendation = recommend(result)
        self.recommendation_line = recommendation_line(self.recommendation, result)
        self.window_line = window_line(data_window(result), result)
        self.charts = {"forest": _forest_chart(result), "timeline": _timeline_chart(result),
                       "rates": _arm_estimates_chart(result, self.rate_metrics, rate=True),
                       "money": _arm_estimates_chart(result, self.money_metrics, rate=False),
                       "srm": _srm_chart(result.srm.stages(), self.srm_names)}

    label = staticmethod(label)
    what = staticmethod(what)
    significant = staticmethod(significant)
    excludes_zero = staticmethod(excludes_zero)

    def effect(self, c: Comparison) -> str:
        return effect(c.metric, c.difference, self.rate[c.metric])

    def offer_note(self, name: str) -> str:
        """An arm's fixed offer when its name does not already say it ("" otherwise)."""
        arm = self.arms.get(name)
        return arm.offer if arm and arm.offer and arm.offer != name else ""

    def comparisons(self, metric: str) -> list[Comparison]:
        return [c for c in self.result.comparisons if c.metric == metric]

    def verdict(self, c: Comparison) -> RowVerdict:
        word = tone(c.difference, significant(c))
        if word != "undecided":  # "final" exactly when the recommendation line may act on it
            return RowVerdict(f"sig-{word}", word,
                              " (final)" if decided(c, self.result) else " (not yet safe to stop)")
        return RowVerdict("", "", "no significant difference" if finite(c.difference) is not None
                          else "not enough data")

    def assigned_share(self, arm: ArmResult) -> float | None:
        return arm.assigned / self.total_assigned if self.total_assigned else None

    @functools.cached_property
    def srm_rows(self) -> list[tuple[str, list[tuple[int | None, float | None]]]]:
        """Per arm, (observed, expected) of each stage of the sample-ratio check."""
        return [(name, [(s.observed.get(name), s.expected.get(name)) for _, s in self.result.srm.stages()])
                for name in self.srm_names]

    @functools.cached_property
    def baselines(self) -> list[BaselineVerdict]:
        """Against the control, then against the holdout: who wins on the primary metric."""
        out = []
        for baseline in dict.fromkeys((self.result.control, HOLDOUT)):  # once each, also when the holdout is the control
            rows = [c for c in self.primary if c.baseline == baseline]
            if not baseline or not rows:
                continue
            winners = sorted((c for c in rows if significant(c)), key=lambda c: -(finite(c.difference) or 0.0))
            out.append(BaselineVerdict(baseline, winners, [c for c in rows if not significant(c)]))
        return out

    @functools.cached_property
    def guardrails(self) -> list[GuardrailVerdict]:
        out = []
        for metric in self.result.guardrail_metrics:
            rows = [c for c in self.result.comparisons if c.metric == metric and significant(c)]
            out.append(GuardrailVerdict(metric, [c for c in rows if (finite(c.difference) or 0) < 0],
                                        [c for c in rows if (finite(c.difference) or 0) > 0]))
        return out

    @functools.cached_property
    def srm_names(self) -> list[str]:
        return list(self.arms) or sorted({n for _, s in self.result.srm.stages() for n in s.observed})

    @functools.cached_property
    def total_assigned(self) -> int:
        return sum(a.assigned for a in self.result.arms)


# ---------------------------------------------------------------------------------------------------------------
# Charts
# ---------------------------------------------------------------------------------------------------------------


def _t(text: object) -> str:
    """Plain text for matplotlib: a "$" would otherwise start mathtext."""
    return str(text).replace("$", r"\$")


def _scale(rate: bool) -> float:
    return 100.0 if rate else 1.0


def _forest_chart(result: ExperimentResult) -> Chart | None:
    primary = result.primary_metric
    rate = is_rate(primary, result)
    k = _scale(rate)
    rows = [c for c in result.comparisons if c.metric == primary]
    rows.sort(key=lambda c: c.baseline == HOLDOUT)  # stable: vs control first, then vs holdout
    if not any(finite(c.difference) is not None for c in rows):
        return None
    n = len(rows)
    fig = Figure(figsize=(9, 1.6 + 0.55 * n), layout="constrained")
    ax = fig.add_subplot()
    for i, c in enumerate(rows):
        y = n - 1 - i
        d = finite(c.difference)
        if d is None:
            ax.text(0, y, "not enough data", va="center", ha="center", color=_NEUTRAL, fontsize="small",
                    bbox={"facecolor": "white", "edgecolor": "none"})
            continue
        colour = TONES[tone(d, significant(c))]
        lo, hi = finite(c.always_valid_low), finite(c.always_valid_high)
        if lo is not None and hi is not None:
            ax.hlines(y, lo * k, hi * k, color=colour, linewidth=1.5)
            ax.vlines([lo * k, hi * k], y - 0.12, y + 0.12, color=colour, linewidth=1.5)
        lo, hi = finite(c.low), finite(c.high)
        if lo is not None and hi is not None:
            ax.hlines(y, lo * k, hi * k, color=colour, linewidth=8, alpha=0.55)
        ax.plot([d * k], [y], marker="D", color="black", markersize=5, zorder=3)
        ax.annotate(f"{change(d, rate)}, adj. p {p_is(c.p_adjusted)}", xy=(1.01, y),
                    xycoords=("axes fraction", "data"), va="center", fontsize="small", color=colour)
    if any(c.baseline == HOLDOUT for c in rows) and any(c.baseline != HOLDOUT for c in rows):
        split = n - sum(c.baseline != HOLDOUT for c in rows) - 0.5
        ax.axhline(split, color="#bbbbbb", linestyle=":", linewidth=1)
    ax.axvline(0, color="black", linewidth=1)
    ax.set_yticks(range(n), [_t(f"{c.arm} vs {c.baseline}") for c in reversed(rows)])
    ax.set_ylim(-0.7, n - 0.3)
    unit = "percentage points" if rate else "per customer"
    ax.set(xlabel=_t(f"difference in {primary} ({unit}): arm minus baseline, right of 0 = the arm does better"),
           title=_t(f"{label(primary)}: each arm minus its baseline (the control or the holdout)"))
    ax.grid(axis="x", color="#eeeeee")
    handles = [Line2D([], [], color=_NEUTRAL, linewidth=8, alpha=0.55, label="95% CI (fixed horizon)"),
               Line2D([], [], color=_NEUTRAL, linewidth=1.5, label="always-valid 95% CI"),
               Line2D([], [], color="black", marker="D", linestyle="", markersize=5, label="estimate"),
               Patch(color=_BETTER, label="arm significantly better than baseline"),
               Patch(color=_WORSE, label="arm significantly worse than baseline"),
               Patch(color=_NEUTRAL, label="no significant difference")]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize="small", frameon=False)
    return chart(fig, f"Forest plot of differences in {primary}, arm minus baseline: " + "; ".join(
        f"{c.arm} vs {c.baseline} {change(c.difference, rate)}, {tone(c.difference, significant(c))}"
        for c in rows if finite(c.difference) is not None))


def _arm_estimates_chart(result: ExperimentResult, metrics: list[str], rate: bool) -> Chart | None:
    arms = list(result.arms)
    metrics = [m for m in metrics if any(finite(getattr(a.metric(m), "estimate", None)) is not None for a in arms)]
    if not arms or not metrics:
        return None
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
                estimate = a.metric(m)
                est = finite(estimate.estimate) if estimate else None
                if est is None:
                    continue
                lo, hi = finite(estimate.low), finite(estimate.high)
                xs.append(i - 0.3 + width * (j + 0.5) if len(group) > 1 else i)
                ys.append(est * k)
                lows.append(max(0.0, (est - lo) * k) if lo is not None else 0.0)
                highs.append(max(0.0, (hi - est) * k) if hi is not None else 0.0)
            ax.errorbar(xs, ys, yerr=[lows, highs], fmt="o", capsize=4, color=colours[j % len(colours)],
                        label=_t(f"{label(m)} ({m})"))
        ax.set_xticks(range(len(arms)), [_t(_arm_tick(a)) for a in arms])
        ax.set_xlim(-0.6, len(arms) - 0.4)
        ax.grid(axis="y", color="#eeeeee")
        if rate:
            ax.set(ylabel="share of customers (%)", title="Rates per arm, with 95% CIs")
            ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
        else:
            ax.set(ylabel="per customer (plan currency)", title=_t(f"{label(group[0])} ({group[0]}) per arm, "
                                                                    "with 95% CI"))
    return chart(fig, "Per-arm rates with 95% confidence intervals" if rate else "Per-arm money metrics with 95% CIs")


def _arm_tick(arm: ArmResult) -> str:
    if arm.is_control:
        return f"{arm.name}\n(control)"
    if arm.is_holdout:
        return f"{arm.name}\n(no offer)"
    return f"{arm.name}\n({arm.offer})" if arm.offer and arm.offer != arm.name else arm.name


def _timeline_chart(result: ExperimentResult) -> Chart | None:
    """One panel per compared pair, in the forest plot's order and direction (arm minus baseline), over the
    experiment's whole window: from its start to the as-of time, the first `horizon` days shaded while no
    decision has reached the primary metric's horizon."""
    primary = result.primary_metric
    rate = is_rate(primary, result)
    k = _scale(rate)
    window = data_window(result)
    by_pair: dict[str, list[TimelinePoint]] = {}
    for row in result.timeline:
        if row.metric == primary:
            by_pair.setdefault(f"{row.arm} vs {row.baseline}", []).append(row)
    by_pair = {name: sorted(rows, key=lambda r: r.day) for name, rows in by_pair.items()
               if any(finite(r.difference) is not None for r in rows)}
    if not by_pair:
        return None
    ncols = min(3, len(by_pair))
    nrows = math.ceil(len(by_pair) / ncols)
    fig = Figure(figsize=(4.2 * ncols + 0.5, 3.4 * nrows + 0.8), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True).ravel()
    tails: list[float] = []
    everything: list[float] = []
    described: list[str] = []
    first_day = min(rows[0].day for rows in by_pair.values())
    for ax, (name, rows) in zip(axes, by_pair.items(), strict=False):
        days = [r.day for r in rows]
        diff = [_nan(r.difference, k) for r in rows]
        low = [_nan(r.always_valid_low, k) for r in rows]
        high = [_nan(r.always_valid_high, k) for r in rows]
        last = rows[-1]
        # The panel says what its band says: the sign of a band clear of zero (the running intersection can
        # leave the day's own estimate outside it).
        word = tone((last.always_valid_low + last.always_valid_high) / 2,
                    excludes_zero(last.always_valid_low, last.always_valid_high))
        colour = TONES[word]
        described.append(f"{name} {change(last.difference, rate)} on {last.day.isoformat()}, {word}")
        if window.start.date() < first_day:
            ax.axvspan(window.start.date(), first_day, color="#f3f4f6", linewidth=0)
        ax.fill_between(days, low, high, color=colour, alpha=0.22, linewidth=0, label="always-valid 95% CI")
        ax.plot(days, diff, color=colour, linewidth=2, label="difference (estimate)")
        ax.axhline(0, color="black", linewidth=1)
        status = {"better": "better, band clear of zero: safe to stop",
                  "worse": "worse, band clear of zero: safe to stop"}.get(word, "band includes zero: keep going")
        ax.set_title(_t(f"{name}\n{status}"), fontsize="medium", color=colour if word != "undecided" else "black")
        ax.grid(color="#eeeeee")
        finite_values = [v for v in (*low, *high, *diff) if not math.isnan(v)]
        everything += finite_values
        tail_start = len(rows) // 3
        tails += [v for v in (*low[tail_start:], *high[tail_start:], *diff) if not math.isnan(v)]
        locator = AutoDateLocator(maxticks=6)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    axes[0].set_xlim(min(window.start.date(), first_day), max(window.as_of.date(), *(r[-1].day for r in by_pair.values())))
    for ax in axes[len(by_pair):]:
        ax.set_visible(False)
    for ax in axes[::ncols]:
        ax.set_ylabel("arm minus baseline (pp)" if rate else "arm minus baseline per customer")
    for ax in axes[max(0, len(by_pair) - ncols):len(by_pair)]:  # the lowest panel of each column
        ax.set_xlabel("date of the analysis")
        ax.xaxis.set_tick_params(labelbottom=True)
    clipped = False
    if tails:
        lo_t, hi_t = min(*tails, 0.0), max(*tails, 0.0)
        pad = 0.35 * (hi_t - lo_t or 1.0)
        if min(everything) < lo_t - pad or max(everything) > hi_t + pad:
            axes[0].set_ylim(lo_t - pad, hi_t + pad)  # shared y: the first days' very wide bands are cut off
            clipped = True
    handles = [Patch(color=_BETTER, alpha=0.4, label="arm better than baseline (band clear of zero)"),
               Patch(color=_WORSE, alpha=0.4, label="arm worse than baseline (band clear of zero)"),
               Patch(color=_NEUTRAL, alpha=0.4, label="not decided yet (band includes zero)"),
               Line2D([], [], color=_NEUTRAL, linewidth=2, label="difference (cumulative estimate)"),
               Line2D([], [], color="black", linewidth=1, label="no difference")]
    if window.start.date() < first_day:
        handles.append(Patch(color="#f3f4f6", label=f"no decision {window.horizon_days} days old yet"))
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize="small", frameon=False)
    title = (f"{label(primary)}: cumulative difference, arm minus baseline, as known each day from "
             f"{window.start.date().isoformat()} (start) to {window.as_of.date().isoformat()} (as of)")
    fig.suptitle(_t(title + ("\n(the widest bands of the first days are cut off)" if clipped else "")),
                 fontsize="medium")
    return chart(fig, f"Timeline of the always-valid interval of {primary} from {window.start.date().isoformat()} "
                 f"(start) to {window.as_of.date().isoformat()} (as of), arm minus baseline: "
                 + "; ".join(described))


def _nan(value: float, k: float) -> float:
    f = finite(value)
    return math.nan if f is None else f * k


def _srm_chart(stages: list[tuple[str, SrmCheck]], names: list[str]) -> Chart | None:
    stages = [(s, d) for s, d in stages if any(finite(d.observed.get(n)) for n in names)]
    if not stages or not names:
        return None
    fig = Figure(figsize=(max(6, 1.3 * len(names) + 1.5) * len(stages), 3.8), layout="constrained")
    axes = fig.subplots(1, len(stages), squeeze=False)[0]
    for ax, (stage, d) in zip(axes, stages, strict=True):
        observed = [finite(d.observed.get(n)) or 0.0 for n in names]
        expected = [finite(d.expected.get(n)) or 0.0 for n in names]
        xs = range(len(names))
        colour = "#c62828" if d.alarm else _CONTROL
        ax.bar([x - 0.2 for x in xs], observed, width=0.4, color=colour, label="observed")
        ax.bar([x + 0.2 for x in xs], expected, width=0.4, color=colour, alpha=0.35, label="expected by design")
        for x, o, e in zip(xs, observed, expected, strict=True):  # how far off each arm is, in % of expected
            if e > 0:
                ax.annotate(fixed(100 * (o - e) / e, 1, sign=True) + "%", (x, max(o, e)), xytext=(0, 3),
                            textcoords="offset points", ha="center", va="bottom", fontsize="small")
        ax.set_xticks(list(xs), [_t(n) for n in names])
        ax.set_ylim(0, 1.25 * max(*observed, *expected, 1.0))
        ax.set_axisbelow(True)
        verdict = "MISMATCH" if d.alarm else "ok"
        ax.set_title(_t(f"{stage}: chi2 = {fixed(d.chi2)}, p = {p_exact(d.p_value)} ({verdict})"),
                     color=colour if d.alarm else "black", fontsize="medium")
        ax.set_ylabel("customers")
        ax.grid(axis="y", color="#eeeeee")
        ax.legend(fontsize="small", loc="upper right", ncols=2, frameon=False)
    return chart(fig, "Observed vs expected customers per arm")


# ---------------------------------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------------------------------


def render_html(result: ExperimentResult) -> str:
    """The whole page as one HTML string (see the module docstring)."""
    return render("experiment.html.j2", r=result, page=Page(result))


def write_html(result: ExperimentResult, path: str | Path) -> Path:
    """Write `render_html(result)` to `path` (parent folders created), replacing any older file atomically."""
    return write_page(path, render_html(result))
