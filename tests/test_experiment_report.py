"""The experiment report renders an A/B analysis into one self-contained page a product manager can act on.

The fixtures build the analysis in its JSON form (what the API serves) and the page is rendered from the typed
result read back from it (ExperimentResult.from_json), as `retention experiment simulate` does."""

from __future__ import annotations

import base64
import copy
import html
import json
import math
import re
import shutil
import subprocess
from datetime import date, timedelta

import pytest

from reports.experiment import render_html, write_html
from retention.experiment_analysis import KEEP_RUNNING, SHIP, STOP, ExperimentResult, analyse, recommend
from retention.experiments import load_experiments

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SRM_TEXT = "Sample-ratio mismatch: do not trust these results until the assignment is fixed"
RATES = ("accepted", "retained_30", "retained_90")
ALPHA = 0.05


# --------------------------------------------------------------------------------------------------------------
# A realistic analysis: control "model", two fixed offers, a 5% holdout, 20 days of timeline
# --------------------------------------------------------------------------------------------------------------


def _z_p(z: float) -> float:
    return math.erfc(abs(z) / math.sqrt(2))


def _holm(ps: list[float]) -> list[float]:
    order = sorted(range(len(ps)), key=lambda i: ps[i])
    out, running = [0.0] * len(ps), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(ps) - rank) * ps[i]))
        out[i] = running
    return out


def _always_valid(estimate: float, variance: float, tau2: float) -> tuple[float, float]:
    half = math.sqrt(variance * (variance + tau2) / tau2 * (math.log((variance + tau2) / variance) + 2 * math.log(20)))
    return estimate - half, estimate + half


def _rate(n: int, p: float, missing: int = 0) -> dict:
    s = round(n * p)
    est = s / n
    se = math.sqrt(est * (1 - est) / n)
    return {"n": n, "successes": s, "estimate": est, "low": est - 1.96 * se, "high": est + 1.96 * se,
            "missing": missing}


def _money(n: int, mean: float, sd: float = 24.0) -> dict:
    se = sd / math.sqrt(n)
    return {"n": n, "estimate": mean, "low": mean - 1.96 * se, "high": mean + 1.96 * se, "missing": 0, "sd": sd}


def _compare(metric: str, arm: dict, base: dict) -> dict:
    a, b = arm["metrics"][metric], base["metrics"][metric]
    d = a["estimate"] - b["estimate"]
    if metric in RATES:
        var = a["estimate"] * (1 - a["estimate"]) / a["n"] + b["estimate"] * (1 - b["estimate"]) / b["n"]
        tau2 = 0.05**2
    else:
        var = a["sd"] ** 2 / a["n"] + b["sd"] ** 2 / b["n"]
        tau2 = (0.1 * a["sd"]) ** 2
    se = math.sqrt(var)
    av_low, av_high = _always_valid(d, var, tau2)
    return {"metric": metric, "arm": arm["name"], "baseline": base["name"], "difference": d,
            "low": d - 1.96 * se, "high": d + 1.96 * se, "p_value": _z_p(d / se), "always_valid_low": av_low,
            "always_valid_high": av_high, "n_arm": a["n"], "n_baseline": b["n"]}


def make_result(effect: float = 1.0, names: tuple[str, str, str] = ("model", "discount", "pause"),
                description: str = "Does a 50% discount for two months keep more customers than a pause?") -> dict:
    """The analysis in its JSON form; `effect` scales every arm's departure from the control (0: no differences at all)."""
    control, discount, pause = names
    design = [  # name, kind, offer, share, assigned, accepted, retained_30, retained_90, net_revenue_90
        (control, "model", None, 0.95 / 3, 2470, 0.31, 0.590, 0.520, 21.30),
        (discount, "offer", "discount_50_2m", 0.95 / 3, 2455, 0.41, 0.636, 0.548, 19.10),
        (pause, "offer", "pause_2m", 0.95 / 3, 2492, 0.36, 0.598, 0.515, 21.75),
        ("holdout", "none", None, 0.05, 401, 0.0, 0.520, 0.470, 17.20),
    ]
    base = design[0]
    arms = []
    for i, (name, kind, offer, share, assigned, acc, r30, r90, rev) in enumerate(design):
        def scaled(j: int, value: float, i: int = i) -> float:
            return base[j] + effect * (value - base[j]) if i in (1, 2) else value

        exposed = assigned - 23 - i
        arms.append({
            "name": name, "kind": kind, "offer": offer, "is_control": i == 0, "is_holdout": name == "holdout",
            "expected_share": share, "assigned": assigned, "exposed": exposed,
            "metrics": {"accepted": _rate(exposed, scaled(5, acc)),
                        "retained_30": _rate(exposed - 20, scaled(6, r30), missing=20),
                        "retained_90": _rate(round(0.7 * exposed), scaled(7, r90), missing=5),
                        "net_revenue_90": _money(round(0.7 * exposed), scaled(8, rev))}})
    arms[3]["metrics"]["accepted"] = {"n": arms[3]["exposed"], "successes": 0, "estimate": 0.0, "low": 0.0,
                                      "high": 0.0095, "missing": 0}
    comparisons = []
    for metric in ("retained_30", "net_revenue_90", "accepted", "retained_90"):
        rows = [_compare(metric, a, arms[0]) for a in arms[1:3]] + [_compare(metric, a, arms[3]) for a in arms[:3]]
        for row, adjusted in zip(rows, _holm([r["p_value"] for r in rows]), strict=True):
            row["p_adjusted"] = adjusted
            row["significant"] = adjusted < ALPHA
        comparisons += rows
    total = sum(a["assigned"] for a in arms)
    observed = {a["name"]: a["assigned"] for a in arms}
    expected = {a["name"]: a["expected_share"] * total for a in arms}
    srm = {"assigned": {"observed": observed, "expected": expected, "chi2": 1.31, "p_value": 0.727, "alarm": False},
           "exposed": {"observed": {a["name"]: a["exposed"] for a in arms},
                       "expected": {a["name"]: a["expected_share"] * sum(b["exposed"] for b in arms) for a in arms},
                       "chi2": 1.28, "p_value": 0.734, "alarm": False}}
    timeline = []
    for arm in arms[1:3]:
        final = next(c for c in comparisons if c["metric"] == "retained_30" and c["arm"] == arm["name"]
                     and c["baseline"] == control)
        for day in range(20):
            frac = (day + 1) / 20
            n_arm, n_base = round(final["n_arm"] * frac), round(final["n_baseline"] * frac)
            var = 0.245 / n_arm + 0.245 / n_base
            wobble = 0.6 * math.sqrt(var) * math.sin(1.7 * day + len(arm["name"]))
            d = final["difference"] + wobble
            low, high = _always_valid(d, var, 0.05**2)
            timeline.append({"day": (date(2026, 12, 1) + timedelta(days=day)).isoformat(), "arm": arm["name"],
                             "baseline": control, "metric": "retained_30", "n_arm": n_arm, "n_baseline": n_base,
                             "difference": d, "always_valid_low": low, "always_valid_high": high})
    return {
        "experiment": "pause-vs-discount", "description": description, "definition": "a1b2c3d4e5f6",
        "as_of": "2026-12-20T00:00:00+00:00", "start": "2026-12-01T00:00:00+00:00", "stop": None, "running": True,
        "primary_metric": "retained_30", "guardrail_metrics": ["net_revenue_90"], "control": control,
        "unit": "customers: each customer's first exposed decision in the experiment",
        "metric_definitions": {
            "accepted": "share of exposed customers who accepted the offer shown",
            "retained_30": "share of exposed customers still subscribed 30 days after the decision",
            "retained_90": "share of exposed customers still subscribed 90 days after the decision",
            "net_revenue_90": "revenue in the 90 days after the decision minus the offer's cost, per customer"},
        "arms": arms, "comparisons": comparisons, "srm": srm,
        "sample_size": {"metric": "retained_30", "baseline_rate": 0.59, "mde": 0.02, "alpha": 0.05, "power": 0.8,
                        "per_arm": 9500, "smallest_arm_now": min(a["metrics"]["retained_30"]["n"] for a in arms[:3]),
                        "detectable_now": 0.039},
        "timeline": timeline,
        "warnings": [],
    }


@pytest.fixture(scope="module")
def result() -> dict:
    return make_result()


def render(result: dict) -> str:
    """The page of an analysis given in its JSON form."""
    return render_html(ExperimentResult.from_json(result))


@pytest.fixture(scope="module")
def page(result) -> str:
    return render(result)


def _headline(page: str) -> str:
    match = re.search(r'<div class="headline">(.*?)</div>', page, re.S)
    assert match, "no headline"
    return html.unescape(re.sub(r"<[^>]+>", "", match.group(1)))  # the words, without markup


def _text(page: str) -> str:
    body = re.sub(r"<style>.*?</style>|<img[^>]*>", "", page, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", " ", body))


# --------------------------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------------------------


def test_page_is_self_contained_with_png_charts(page):
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page.lower()
    assert not re.search(r"<(?![a-zA-Z/!])", page)  # every "<" opens a tag: numbers like "< 0.001" are escaped
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "http://" not in page and "https://" not in page
    srcs = re.findall(r'<img[^>]*\ssrc="([^"]*)"', page)
    assert len(srcs) == len(re.findall(r"<img\b", page)) == 5  # forest, timeline, rates, money, sample ratio
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1], validate=True).startswith(PNG_SIGNATURE)
    assert len(re.findall(r"<figcaption>", page)) == 5


def test_page_explains_unit_metrics_and_interval_kinds(page, result):
    text = _text(page)
    assert "Experiment pause-vs-discount" in text
    assert "running" in text and "2026-12-20 00:00 UTC" in text and "a1b2c3d4e5f6" in text
    assert "each customer's first exposed decision in the experiment" in text
    for definition in result["metric_definitions"].values():
        assert definition in text
    assert "Always-valid 95% CI" in text and "95% CI (fixed horizon)" in text and "Holm-adjusted p" in text
    assert "safe to stop" in text
    assert "9,500" in text  # per-arm sample size needed
    assert "No timeline yet" not in text


def test_tables_format_rates_money_and_differences(page, result):
    text = _text(page)
    control = result["arms"][0]
    assert f"{100 * control['metrics']['retained_30']['estimate']:.1f}%" in text
    assert f"{control['metrics']['net_revenue_90']['estimate']:.2f}" in text
    assert "20 missing" in text
    row = next(c for c in result["comparisons"] if c["metric"] == "retained_30" and c["arm"] == "discount"
               and c["baseline"] == "model")
    assert f"{100 * row['difference']:+.1f} pp" in text
    assert f"{100 * row['always_valid_low']:+.1f} to {100 * row['always_valid_high']:+.1f} pp" in text
    assert page.count('class="sig-better"') >= 1


def test_headline_names_the_significant_winner_with_its_interval(page, result):
    winner = next(c for c in result["comparisons"] if c["metric"] == "retained_30" and c["baseline"] == "model"
                  and c["arm"] == "discount")
    loser = next(c for c in result["comparisons"] if c["metric"] == "retained_30" and c["baseline"] == "model"
                 and c["arm"] == "pause")
    assert winner["p_adjusted"] < ALPHA <= loser["p_adjusted"]  # the fixture is what the test thinks it is
    headline = _headline(page)
    expected = (f"discount (offer discount_50_2m) keeps {100 * winner['difference']:.1f} pp more customers at day 30 "
                f"than model (95% CI {100 * winner['low']:+.1f} to {100 * winner['high']:+.1f} pp, "
                f"adjusted p = {winner['p_adjusted']:.3f})")
    assert expected in headline
    assert not re.search(r"pause \(offer pause_2m\) keeps [^.]* than model", headline)
    assert "holdout" in headline
    assert "Guardrail net_revenue_90 is significantly worse" in headline  # the discount costs revenue


def test_headline_says_no_significant_difference_when_there_is_none():
    result = make_result(effect=0.0)
    result["comparisons"] = [c for c in result["comparisons"] if c["baseline"] != "holdout"]
    headline = _headline(render(result))
    assert "no significant difference yet" in headline.lower()
    assert " keeps " not in headline and "95% CI" not in headline


@pytest.mark.parametrize("alarm", [None, "assigned", "exposed"])
def test_srm_banner_appears_if_and_only_if_an_alarm_is_set(result, alarm):
    result = copy.deepcopy(result)
    if alarm:
        result["srm"][alarm].update(chi2=48.7, p_value=1.5e-10, alarm=True)
    page = render(result)
    assert (SRM_TEXT in page) == bool(alarm)
    assert ('class="banner srm"' in page) == bool(alarm)
    if alarm:
        assert "chi2 = 48.70, p = 1.5e-10" in page
    assert 'class="banner warn"' not in page


def test_warnings_are_listed_in_a_banner(result):
    result = copy.deepcopy(result)
    result["warnings"] = ["retained_90 is not observable yet for 700 customers per arm"]
    page = render(result)
    assert 'class="banner warn"' in page
    assert "retained_90 is not observable yet for 700 customers per arm" in page


def test_missing_numbers_render_as_a_dash_and_empty_charts_are_skipped(result):
    result = copy.deepcopy(result)
    nan = float("nan")
    empty = {"n": 0, "successes": 0, "estimate": nan, "low": None, "high": nan, "missing": 0}
    result["arms"][2]["metrics"] = {m: dict(empty) for m in result["arms"][2]["metrics"]}
    result["arms"][2]["metrics"]["net_revenue_90"] = {"n": 0, "estimate": None, "low": None, "high": None, "missing": 0}
    for c in result["comparisons"]:
        if "pause" in (c["arm"], c["baseline"]):
            c.update(difference=nan, low=nan, high=None, p_value=None, p_adjusted=nan, always_valid_low=nan,
                     always_valid_high=None, significant=False, n_arm=0)
    result["timeline"] = []
    result["sample_size"].update(detectable_now=None, smallest_arm_now=0)
    page = render(result)
    text = _text(page)
    assert "–" in text
    assert not re.search(r"\b(nan|None|inf)\b", text, re.I)
    assert "No timeline yet" in text
    assert len(re.findall(r"<img\b", page)) == 4


def test_an_experiment_without_data_renders(result):
    result = copy.deepcopy(result)
    for arm in result["arms"]:
        arm.update(assigned=0, exposed=0, metrics={})
    result.update(comparisons=[], timeline=[], running=False, stop="2026-12-02T00:00:00+00:00")
    result["srm"] = {s: {"observed": {}, "expected": {}, "chi2": None, "p_value": None, "alarm": False}
                     for s in ("assigned", "exposed")}
    page = render(result)
    assert "<img" not in page
    assert "stopped" in page and "No comparisons" in page


def test_names_and_descriptions_are_escaped():
    result = make_result(names=("model", "50$ off <b>&co</b>", "pause"),
                         description='<script>alert("x")</script> & "friends"')
    result["experiment"] = "pause<vs>discount & co"
    page = render(result)
    assert "<script>" not in page and "<b>&co</b>" not in page and "pause<vs>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &quot;friends&quot;" in page
    assert "50$ off &lt;b&gt;&amp;co&lt;/b&gt;" in page
    assert "<title>Experiment pause&lt;vs&gt;discount &amp; co</title>" in page


def test_write_html_creates_parent_folders(tmp_path, result):
    path = write_html(ExperimentResult.from_json(result), tmp_path / "a" / "b" / "report.html")
    assert path == tmp_path / "a" / "b" / "report.html"
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.endswith("</html>\n")
    assert [p.name for p in path.parent.iterdir()] == ["report.html"]  # no temporary file left behind


# --------------------------------------------------------------------------------------------------------------
# One direction, one colour meaning; the recommendation line; the data window; the layout at 1280 px
# --------------------------------------------------------------------------------------------------------------


def _alt(page: str, start: str) -> list[tuple[str, str, float, str]]:
    """(arm, baseline, difference in pp, tone) of each pair a chart's alt text lists (the words of its colours)."""
    alt = html.unescape(re.search(r'<img[^>]*alt="(' + start + r'[^"]*)"', page).group(1))
    return [(a, b, float(d), word) for a, b, d, word in
            re.findall(r"(\S+) vs (\S+) ([+-]\d+\.\d) pp[^,;]*, (better|worse|undecided)", alt)]


def test_forest_and_timeline_show_each_comparison_in_one_direction_sign_and_colour(tmp_path):
    """The real analysis of an experiment whose control is the model, with a holdout: the timeline used to plot
    "holdout vs model" at -21 pp in red beside the forest plot's "model vs holdout" at +21 pp in green."""
    from test_experiment_result import CATALOG, DESIGN, START, records

    path = tmp_path / "experiments.toml"
    path.write_text(DESIGN)
    experiment = load_experiments(CATALOG, path).get("typed-result")
    result = analyse(experiment, CATALOG, records(experiment, n=3000), START + timedelta(days=150))
    primary = {(c.arm, c.baseline) for c in result.comparisons if c.metric == result.primary_metric}
    assert {(t.arm, t.baseline) for t in result.timeline} == primary  # arm minus baseline, holdout only a baseline
    assert ("model", "holdout") in primary
    page = render_html(result)
    forest = {(a, b): (d, word) for a, b, d, word in _alt(page, "Forest plot")}
    timeline = _alt(page, "Timeline")
    assert set(forest) == primary and {(a, b) for a, b, _, _ in timeline} == primary
    for arm, baseline, d, word in timeline:
        f_d, f_word = forest[(arm, baseline)]
        assert math.copysign(1, d) == math.copysign(1, f_d) or abs(d - f_d) < 1.0, (arm, baseline)
        assert {word, f_word} != {"better", "worse"}, (arm, baseline)  # never green in one, red in the other
        if word != "undecided":
            assert word == ("better" if d > 0 else "worse")
    assert forest[("model", "holdout")][1] == "better"  # the model keeps more customers than no offer: green


def _line(page: str) -> str:
    match = re.search(r'<p class="recommendation (\w+)"[^>]*>(.*?)</p>', page, re.S)
    assert match, "no recommendation line"
    return match.group(1), html.unescape(re.sub(r"<[^>]+>", "", match.group(2)))


def test_recommendation_ships_the_winner_when_its_guardrails_hold(result):
    result = copy.deepcopy(result)
    result["guardrail_metrics"] = ["retained_90"]  # the discount keeps more customers at day 90 too
    rec = recommend(ExperimentResult.from_json(result))
    win = next(c for c in result["comparisons"] if c["metric"] == "retained_30" and c["arm"] == "discount"
               and c["baseline"] == "model")
    assert (rec.action, rec.arm, rec.baseline) == (SHIP, "discount", "model")
    action, line = _line(render(result))
    assert action == "ship"
    assert line.startswith(f"Recommendation: Ship discount: {100 * win['difference']:+.1f} pp retained at day 30 "
                           f"vs model (95% CI {100 * win['low']:+.1f} to {100 * win['high']:+.1f} pp")
    assert "guardrails OK (retained_90 not significantly worse)" in line


def test_recommendation_stops_when_the_winner_breaches_a_guardrail(result):
    """The fixture's discount keeps more customers but costs net revenue, a guardrail."""
    rec = recommend(ExperimentResult.from_json(result))
    assert (rec.action, rec.why, rec.arm) == (STOP, "guardrail", "discount")
    assert rec.breach.metric == "net_revenue_90" and rec.breach.difference < 0
    action, line = _line(render(result))
    assert action == "stop" and line.startswith("Recommendation: Stop: guardrail breached. discount gets +")
    assert "on the guardrail net_revenue_90; do not ship it" in line


def test_recommendation_keeps_running_while_nothing_is_significant():
    result = make_result(effect=0.0)
    result["comparisons"] = [c for c in result["comparisons"] if c["baseline"] != "holdout"]
    rec = recommend(ExperimentResult.from_json(result))
    assert rec.action == KEEP_RUNNING and {c.arm for c in rec.undecided} == {"discount", "pause"}
    # the arms involved (model, discount, pause: 95/3 % of the flows each) to 9,500 known outcomes each
    n = min(a["metrics"]["retained_30"]["n"] for a in result["arms"][:3])
    assert rec.more_flows == math.ceil((9500 - n) / (0.95 / 3))
    action, line = _line(render(result))
    assert action == "keep_running"
    assert line == (f"Recommendation: Keep running: not yet significant (discount vs model, pause vs model); about "
                    f"{rec.more_flows:,} more cancel flows in the experiment give every arm involved the planned "
                    "9,500 customers with a known outcome.")


def test_with_no_outcomes_a_running_experiment_keeps_running_and_an_ended_one_stops():
    result = make_result(effect=0.0)
    result["comparisons"] = []
    assert recommend(ExperimentResult.from_json(result)).action == KEEP_RUNNING
    assert _line(render(result))[1].startswith("Recommendation: Keep running: no retained_30 outcomes yet")
    result.update(running=False, stop="2026-12-20T00:00:00+00:00")
    rec = recommend(ExperimentResult.from_json(result))
    assert (rec.action, rec.why, rec.baseline) == (STOP, "no_data", "model")  # not "keep running" after its end
    assert _line(render(result)) == ("stop", "Recommendation: Stop: the experiment has ended with no retained_30 "
                                     "outcomes to compare; keep model. Nothing was learnt: run it again for longer.")


def test_recommendation_stops_on_a_sample_ratio_mismatch(result):
    result = copy.deepcopy(result)
    result["srm"]["assigned"].update(chi2=48.7, p_value=1.5e-10, alarm=True)
    assert recommend(ExperimentResult.from_json(result)).action == STOP
    assert _line(render(result)) == ("stop", "Recommendation: Stop: sample-ratio mismatch. The arms' sizes do not "
                                     "match the design, so no comparison can be trusted; fix the assignment first.")


def test_the_page_says_which_data_it_rests_on_and_the_timeline_spans_it(page):
    text = _text(page)
    assert ("Data: cancel flows from 2026-12-01 (start) to 2026-12-20, outcomes as of 2026-12-20 00:00 UTC. "
            "Retained at day 30 is known 30 days after a flow: no flow is that old yet.") in " ".join(text.split())
    assert "from 2026-12-01 (start) to 2026-12-20 (as of)" in page  # the timeline's axis spans the same dates


CHROMIUM = shutil.which("chromium")
# Measures every table against the box it sits in, and the page against the window, after layout.
MEASURE = """<script>
const tables = [...document.querySelectorAll('table')].map(t => ({head: t.rows[0].cells[0].textContent.trim(),
  width: Math.ceil(t.getBoundingClientRect().width), box: t.parentElement.clientWidth}));
document.body.setAttribute('data-measure', JSON.stringify({page: document.documentElement.scrollWidth,
  window: document.documentElement.clientWidth, tables}));
</script>"""


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs headless Chromium")
@pytest.mark.parametrize("width", [1280, 1024])
def test_every_table_fits_its_box_in_chromium(tmp_path, width):
    """Laid out by a real browser at 1280 px (and a 1024 px laptop), no table is wider than its box and the
    page never scrolls sideways. The arms of `make experiment-demo` have long names and four metrics."""
    result = make_result(names=("model", "discount_50_2m", "pause_1m"))
    result["guardrail_metrics"] = ["net_revenue_90", "retained_90"]
    (tmp_path / "page.html").write_text(render(result).replace("</body>", MEASURE + "</body>"))
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                          "--disable-background-networking", "--disable-component-update", "--disable-sync",
                          f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={width},2000", "--dump-dom",
                          (tmp_path / "page.html").as_uri()], capture_output=True, text=True, timeout=600).stdout
    measured = json.loads(html.unescape(re.search(r'data-measure="([^"]*)"', dom).group(1)))
    assert measured["page"] <= measured["window"]
    assert len(measured["tables"]) >= 7
    for t in measured["tables"]:
        assert t["width"] <= t["box"], t
