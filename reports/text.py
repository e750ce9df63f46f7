"""The command line's plain-text views of results: a trained model version, a policy evaluation and an
experiment analysis. Each returns the text; the CLI prints it."""

from __future__ import annotations

import json
import math
from pathlib import Path


def model_summary(version_dir: Path) -> str:
    """Held-out metrics of a model version against its baselines, one line per row, and where its report is."""
    meta = json.loads((version_dir / "metadata.json").read_text())
    lines = [f"report: {version_dir / 'report.html'}"]
    for name, m in meta["metrics"].items():
        lines.append(f"{name}:")
        for row in ("model", "baseline_nps_segment", "baseline_prior"):
            r = m[row]
            lines.append(f"  {row:<22} auc={_f(r['roc_auc'])} pr_auc={_f(r['pr_auc'])} brier={_f(r['brier'])} "
                         f"ece={_f(r['ece'])} lift@10%={_f(r['lift_top_decile'])} n={r['n']}")
        if "bayes_optimal_auc" in m:
            lines.append(f"  bayes-optimal auc={_f(m['bayes_optimal_auc'])} "
                         f"model/bayes={_f(m['auc_share_of_bayes'])}")
    return "\n".join(lines)


def _f(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def policy_table(result: dict) -> str:
    """The figures a person reads: one line per policy, best first, then the intervals and diagnostics."""
    pol = result["policies"]
    lines = [f"model {result['model_version']} on {result['data']}: {result['requests']:,} cancel requests",
             f"value = {result['value']}",
             f"scoring budget {result['time_budget_ms']['used']:.0f} ms for this evaluation "
             f"(configured {result['time_budget_ms']['configured']:.0f} ms)",
             "",
             f"{'policy':<24}{'mean/request':>13}{'total':>13}{'of oracle':>11}{'offered':>9}{'inelig.':>9}"]
    for name in sorted(pol, key=lambda k: -pol[k]["mean"]):
        p = pol[name]
        share = "n/a" if p["share_of_oracle"] is None else f"{p['share_of_oracle']:.1%}"
        lines.append(f"{name:<24}{p['mean']:>13.3f}{p['total']:>13.1f}{share:>11}{p['offer_rate']:>9.1%}"
                     f"{p['truth_ineligible_share']:>9.2%}")
    c = result["comparisons"]

    def ci(d: dict, fmt: str) -> str:
        return "n/a" if d["ci95"] is None else f"[{d['ci95'][0]:{fmt}}, {d['ci95'][1]:{fmt}}]"

    lines += [
        "",
        f"model - best fixed ({result['best_fixed']}): {c['model_minus_best_fixed']['mean']:+.3f} per request, "
        f"95% CI {ci(c['model_minus_best_fixed'], '+.3f')}",
        f"model - rules: {c['model_minus_rules']['mean']:+.3f} per request, 95% CI {ci(c['model_minus_rules'], '+.3f')}",
        f"model share of oracle: {_pct(c['model_share_of_oracle']['value'])}, "
        f"95% CI {ci(c['model_share_of_oracle'], '.1%')}",
        f"fallbacks: {result['fallbacks']['count']} {result['fallbacks']['by_code'] or ''}".rstrip(),
        "decide latency ms: p50 {p50:.1f} p95 {p95:.1f} max {max:.1f}; over the configured budget: "
        "{over_configured_budget}".format(**result["decide_latency_ms"]),
        f"model chose a truth-ineligible offer: {pol['model']['truth_ineligible']} "
        f"{result['model_truth_ineligible_by_offer'] or ''}".rstrip(),
        f"requests whose features carry an outdated price (earlier downgrade): "
        f"{result['requests_with_outdated_price']}",
    ]
    regret = sorted(result["model_regret_by_oracle_offer"].items(), key=lambda x: -x[1])
    lines.append("model regret vs oracle, by the oracle's offer: " + ", ".join(f"{o} {v:.0f}" for o, v in regret))
    for name, mix in result["offer_mix"].items():
        lines.append(f"offer mix {name}: " + ", ".join(f"{o} {k}" for o, k in sorted(mix.items(), key=lambda x: -x[1])))
    return "\n".join(lines)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def experiment_text(r: dict) -> str:
    """A plain-text summary of an analysis result for the terminal."""
    def pct(x):
        return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"

    def num(x, fmt=".2f"):
        return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)

    lines = [f"experiment {r['experiment']} ({'running' if r['running'] else 'stopped'}), as of {r['as_of']}, "
             f"definition {r['definition']}; unit: {r['unit']}"]
    for kind in ("assigned", "exposed"):
        s = r["srm"][kind]
        flag = "ALARM: sample-ratio mismatch" if s["alarm"] else "ok"
        lines.append(f"sample-ratio check on {kind}: chi2 {num(s['chi2'])}, p {num(s['p_value'], '.3g')}: {flag}")
    lines.append(f"  {'arm':<16} {'assigned':>8} {'exposed':>8}  {'accepted':>8}  {'retained_30 (95% CI)':>24}  "
                 f"{'retained_90':>11}  {'net_revenue_90 (95% CI)':>26}")
    for a in r["arms"]:
        m = a["metrics"]
        r30, rev = m["retained_30"], m["net_revenue_90"]
        lines.append(f"  {a['name']:<16} {a['assigned']:>8} {a['exposed']:>8}  {pct(m['accepted']['estimate']):>8}  "
                     f"{pct(r30['estimate']):>7} [{pct(r30['low'])}, {pct(r30['high'])}] n={r30['n']:<5}"
                     f"  {pct(m['retained_90']['estimate']):>11}  {num(rev['estimate']):>8} "
                     f"[{num(rev['low'])}, {num(rev['high'])}] n={rev['n']}")
    lines.append("differences (95% CI; always-valid CI; Holm-adjusted p):")
    for c in r["comparisons"]:
        if c["metric"] not in (r["primary_metric"], *r["guardrail_metrics"]):
            continue
        f = (lambda x: num(100 * x if x is not None else None, "+.1f") + " pp") if c["metric"] != "net_revenue_90" \
            else (lambda x: num(x, "+.2f"))
        star = " *" if c["significant"] else ""
        lines.append(f"  {c['metric']:<15} {c['arm']:>16} vs {c['baseline']:<16} {f(c['difference'])} "
                     f"[{f(c['low'])}, {f(c['high'])}]; [{f(c['always_valid_low'])}, {f(c['always_valid_high'])}]; "
                     f"p {num(c['p_adjusted'], '.3g')}{star}")
    s = r["sample_size"]
    if s.get("per_arm"):
        lines.append(f"sample size: {s['per_arm']:,} per arm to detect {num(s['mde'], '.3f')} on {s['metric']} "
                     f"(smallest arm now {s['smallest_arm_now']:,}; detectable now "
                     f"{num(s['detectable_now'], '.3f')})")
    lines += [f"warning: {w}" for w in r["warnings"]]
    return "\n".join(lines)
