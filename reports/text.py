"""The command line's plain-text views of results: a trained model version, a policy evaluation, an
experiment analysis and the check of a simulated experiment against its truth. Each returns the text; the
CLI prints it. Numbers are formatted by reports.formatting, as on the pages."""

from __future__ import annotations

import json
from pathlib import Path

from reports.formatting import ASCII_DASH, NA, count, fixed, percent, points, significant
from retention.experiment_analysis import ExperimentResult

# Numbers in the terminal: no thousands separators inside the aligned columns, an ASCII dash when missing.
_DASH = {"missing": ASCII_DASH}


def _f4(x) -> str:
    return fixed(x, 4, grouping=False, missing=NA)


def _f2(x) -> str:
    return fixed(x, 2, grouping=False, missing=NA)


def model_summary(version_dir: Path) -> str:
    """Per model: what was trained (or why not), held-out metrics against its baselines, and for the offer
    model the learner, the calibration and the policy gate's verdict; and where the report is."""
    meta = json.loads((version_dir / "metadata.json").read_text())
    lines = [f"report: {version_dir / 'report.html'}"]
    for name, info in meta.get("models", {}).items():
        if not info.get("trained"):
            lines.append(f"{name}: not trained: {info.get('why')}")
            continue
        m = meta["metrics"][name]
        extra = f", calibration {info['calibration']}" if "calibration" in info else ""
        lines.append(f"{name}: {info.get('learner')}{extra}")
        for row in ("model", "baseline_logistic", "alternative_boosting", "alternative_blend", "baseline_nps_segment",
                    "baseline_prior"):
            if row in m:
                r = m[row]
                lines.append(f"  {row:<22} auc={_f4(r['roc_auc'])} pr_auc={_f4(r['pr_auc'])} brier={_f4(r['brier'])} "
                             f"ece={_f4(r['ece'])} lift@10%={_f4(r['lift_top_decile'])} n={r['n']}")
        if "bayes_optimal_auc" in m:
            lines.append(f"  bayes-optimal auc={_f4(m['bayes_optimal_auc'])} "
                         f"model/bayes={_f4(m['auc_share_of_bayes'])}")
        if "ece_vs_truth" in m:
            lines.append(f"  ece against the true probabilities={_f4(m['ece_vs_truth'])} "
                         f"(the true probabilities' own label ece={_f4(m['ece_of_truth'])})")
        if "gate" in info:
            lines += gate_lines(info["gate"])
    if not meta.get("models", {}).get("offer_response", {}).get("trained"):
        lines.append("offers: decided by the rules of config/policy.toml")
    return "\n".join(lines)


def gate_lines(gate: dict) -> list[str]:
    """The policy gate: held-out value per flow of the model's policy, the rules and the best fixed offer
    (doubly robust, 95% CI), and the verdict."""
    serve = {"model": "the model's choices",
             "fixed": f"always {gate.get('fixed_offer')} where allowed, else the rules (fixed_offer_better_than_rules)"
             }.get(gate["verdict"], "the rules (model_not_better_than_rules)")
    lines = [f"  policy gate on {gate['holdout_flows']:,} held-out flows: serves {serve}: {gate.get('why', '')}"]
    policies = gate.get("policies") or {}
    for name in ("model", "rules", gate.get("best_fixed"), "none"):
        if name in policies:
            dr = policies[name]["dr"]
            lines.append(f"    {name:<26} value/flow {_f2(dr['value']):>8} [{_f2(dr['low'])}, {_f2(dr['high'])}]  "
                         f"offers {percent(policies[name]['offer_rate'], **_DASH)}")
    diff = (gate.get("differences") or {}).get("model_minus_rules")
    if diff:
        lines.append(f"    model - rules: {_f2(diff['value'])} per flow, 95% CI [{_f2(diff['low'])}, "
                     f"{_f2(diff['high'])}] on the held-out flows")
    dropped = gate.get("offers_dropped") or []
    if dropped:
        lines.append("    offers the model may not choose (they did not pay on the validation blocks): "
                     + ", ".join(d["offer"] for d in dropped))
    lines += [f"    warning: {w}" for w in gate.get("warnings") or ()]
    pooled = (gate.get("evidence") or {}).get("pooled")
    if pooled and (gate.get("evidence") or {}).get("validation_blocks"):
        lines.append(f"    model - rules, held-out flows and validation blocks ({pooled['flows']:,} flows, the "
                     f"verdict's basis): {_f2(pooled['value'])} per flow, 95% CI [{_f2(pooled['low'])}, "
                     f"{_f2(pooled['high'])}]" + (f", reliably detects differences of {_f2(pooled['detectable'])} or more"
                                                  if "detectable" in pooled else ""))
    return lines


def policy_table(result: dict) -> str:
    """The figures a person reads: one line per policy, best first, then the intervals and diagnostics."""
    pol = result["policies"]

    def num(x, digits: int, sign: bool = False) -> str:
        return fixed(x, digits, sign=sign, grouping=False, missing=NA)

    budget = result["time_budget_ms"]
    lines = [f"model {result['model_version']} on {result['data']}: {count(result['requests'])} cancel requests",
             f"value = {result['value']}",
             f"scoring budget {num(budget['used'], 0)} ms for this evaluation "
             f"(configured {num(budget['configured'], 0)} ms)",
             "",
             f"{'policy':<24}{'mean/request':>13}{'total':>13}{'of oracle':>11}{'offered':>9}{'inelig.':>9}"]
    for name in sorted(pol, key=lambda k: -pol[k]["mean"]):
        p = pol[name]
        lines.append(f"{name:<24}{num(p['mean'], 3):>13}{num(p['total'], 1):>13}"
                     f"{percent(p['share_of_oracle'], missing=NA):>11}{percent(p['offer_rate'], missing=NA):>9}"
                     f"{percent(p['truth_ineligible_share'], 2, missing=NA):>9}")
    c = result["comparisons"]

    def ci(d: dict, fmt) -> str:
        return NA if d["ci95"] is None else f"[{fmt(d['ci95'][0])}, {fmt(d['ci95'][1])}]"

    def diff(x) -> str:
        return num(x, 3, sign=True)

    def share(x) -> str:
        return percent(x, missing=NA)

    latency = result["decide_latency_ms"]
    lines += [
        "",
        f"model - best fixed ({result['best_fixed']}): {diff(c['model_minus_best_fixed']['mean'])} per request, "
        f"95% CI {ci(c['model_minus_best_fixed'], diff)}",
        f"model - rules: {diff(c['model_minus_rules']['mean'])} per request, 95% CI {ci(c['model_minus_rules'], diff)}",
        f"model share of oracle: {share(c['model_share_of_oracle']['value'])}, "
        f"95% CI {ci(c['model_share_of_oracle'], share)}",
        f"fallbacks: {result['fallbacks']['count']} {result['fallbacks']['by_code'] or ''}".rstrip(),
        f"decide latency ms: p50 {num(latency['p50'], 1)} p95 {num(latency['p95'], 1)} max {num(latency['max'], 1)}; "
        f"over the configured budget: {latency['over_configured_budget']}",
        f"model chose a truth-ineligible offer: {pol['model']['truth_ineligible']} "
        f"{result['model_truth_ineligible_by_offer'] or ''}".rstrip(),
        f"requests whose features carry an outdated price (earlier downgrade): "
        f"{result['requests_with_outdated_price']}",
    ]
    regret = sorted(result["model_regret_by_oracle_offer"].items(), key=lambda x: -x[1])
    lines.append("model regret vs oracle, by the oracle's offer: " + ", ".join(f"{o} {num(v, 0)}" for o, v in regret))
    for name, mix in result["offer_mix"].items():
        lines.append(f"offer mix {name}: " + ", ".join(f"{o} {k}" for o, k in sorted(mix.items(), key=lambda x: -x[1])))
    return "\n".join(lines)


def ope_table(result: dict) -> str:
    """`retention ope`: one line per candidate (three estimators with intervals, support), the differences
    from the first candidate, the offer mixes side by side, then the warnings."""
    def num(x, digits: int = 2, sign: bool = False) -> str:
        return fixed(x, digits, sign=sign, grouping=False, missing=NA)

    def est(e: dict) -> str:
        return f"{num(e['value'])} [{num(e['low'])}, {num(e['high'])}]"

    logged = result["logged"]
    lines = [f"{count(result['requests'])} logged cancel requests in {result['data']}",
             f"value = {result['value']}",
             f"logged: {num(logged['mean_reward'])} per request; propensities from {num(logged['propensity']['min'], 4)}"
             f" (median {num(logged['propensity']['median'], 4)})",
             f"reward model of DR: {result['reward_model'] or 'none (DR = IPS)'}",
             "",
             f"{'candidate':<22}{'DR [95% CI]':>26}{'SNIPS [95% CI]':>26}{'IPS [95% CI]':>26}{'ESS':>8}{'offered':>9}"]
    for c in result["candidates"]:
        lines.append(f"{c['candidate']:<22}{est(c['dr']):>26}{est(c['snips']):>26}{est(c['ips']):>26}"
                     f"{num(c['ess'], 0):>8}{percent(c['offer_rate'], missing=NA):>9}")
    if result["differences"]:
        lines += ["", f"difference from {result['differences_from']} (doubly robust, paired, per request):"]
        lines += [f"  {name:<20}{est(d):>26}" for name, d in result["differences"].items()]
    offers = sorted({o for c in result["candidates"] for o in c["offer_mix"]} | set(logged["offer_mix"]))
    width = max(10, *(len(c["candidate"]) + 2 for c in result["candidates"]))
    lines += ["", "offer mix (requests; a candidate's is expected where it explores):",
              f"{'offer':<16}{'logged':>{width}}" + "".join(f"{c['candidate']:>{width}}" for c in result["candidates"])]
    for o in offers:
        lines.append(f"{o:<16}{logged['offer_mix'].get(o, 0):>{width}}"
                     + "".join(f"{num(c['offer_mix'].get(o, 0), 0):>{width}}" for c in result["candidates"]))
    lines += [f"warning: {w}" for w in result["warnings"]]
    return "\n".join(lines)


def versions_table(rows: list[dict], aliases: dict[str, str]) -> str:
    """`retention models list`: a line per version, with its alias."""
    by_version: dict[str, list[str]] = {}
    for alias, version in aliases.items():
        by_version.setdefault(version, []).append(alias)
    lines = [f"{'version':<28}{'alias':<12}{'trained':<22}{'offer model':<12}{'gate':<7}{'flows':>8}  learner"]
    for r in rows:
        alias = ",".join(by_version.get(r["version"], [])) or ASCII_DASH
        if "error" in r:
            lines.append(f"{r['version']:<28}{alias:<12}unreadable: {r['error']}")
            continue
        meta = r["meta"]
        offer = (meta.get("models") or {}).get("offer_response") or {}
        flows = (offer.get("flows") or {}).get("used")
        lines.append(f"{r['version']:<28}{alias:<12}{str(meta.get('created_at', ''))[:19]:<22}"
                     f"{'yes' if offer.get('trained') else 'no':<12}{(offer.get('gate') or {}).get('verdict', ASCII_DASH):<7}"
                     f"{count(flows) if flows is not None else NA:>8}  {offer.get('learner') or ASCII_DASH}")
    if not rows:
        lines.append("(no versions: `retention train --data DIR` writes one)")
    missing = [a for a, v in aliases.items() if v not in {r["version"] for r in rows}]
    lines += [f"warning: the {a} points at {aliases[a]}, which is not in this folder" for a in missing]
    return "\n".join(lines)


def comparison_text(result: dict) -> str:
    """`retention models compare A B`: two columns, then the off-policy comparison if there is one."""
    a, b = result["versions"]

    def row(label: str, get) -> str:
        return f"{label:<34}{get(a):>28}{get(b):>28}"

    def metric(model: str, key: str):
        return lambda v: _f4(v[model].get(key))

    lines = [row("", lambda v: v["ref"]), row("version", lambda v: v["version"]),
             row("trained", lambda v: str(v["created_at"])[:19]),
             row("data to", lambda v: str((v["data_window"] or {}).get("end", NA))[:10]),
             row("offer response: learner", lambda v: (v["learner"] or ASCII_DASH)[:26]),
             row("  held-out AUC", metric("offer_response", "roc_auc")),
             row("  held-out ECE", metric("offer_response", "ece")),
             row("  held-out Brier", metric("offer_response", "brier")),
             row("  held-out flows", lambda v: count(v["offer_response"].get("n")) if v["offer_response"].get("n") else NA),
             row("  gate verdict", lambda v: v["gate"]["verdict"] or NA),
             row("  gate: model - rules", lambda v: _f2(v["gate"]["model_minus_rules"])),
             row("churn risk: held-out AUC", metric("churn_risk", "roc_auc")),
             "(held-out figures are each version's own held-out period: compare them only for the same data)"]
    if "shadow" in result:
        lines.append("")
        if not result["shadow"]:
            lines.append(f"shadow: no live decision since {result['shadow_since'][:10]} was scored by one of these "
                         "versions in the shadow of the other (promote one as the challenger)")
        for p in result["shadow"]:
            different = ", ".join(f"{o} {n}" for o, n in sorted(p["challenger_offers_where_different"].items(),
                                                                 key=lambda kv: -kv[1]))
            lines.append(f"shadow since {result['shadow_since'][:10]}: challenger {p['challenger']} agreed with champion "
                         f"{p['champion']} on {count(p['agree'])} of {count(p['decisions'])} live decisions "
                         f"({percent(p['agree'] / p['decisions'])}); where it differed it chose {different or ASCII_DASH}"
                         + (f"; {p['errors']} could not be scored in time" if p["errors"] else ""))
    if result.get("ope"):
        lines += ["", ope_table(result["ope"])]
    return "\n".join(lines)


def experiment_text(r: ExperimentResult) -> str:
    """A plain-text summary of an analysis result for the terminal."""
    def pct(x) -> str:
        return percent(x, **_DASH)

    def num(x, digits: int = 2, sign: bool = False) -> str:
        return fixed(x, digits, sign=sign, grouping=False, **_DASH)

    lines = [f"experiment {r.experiment} ({'running' if r.running else 'stopped'}), as of {r.as_of.isoformat()}, "
             f"definition {r.definition}; unit: {r.unit}"]
    for kind, s in r.srm.stages():
        flag = "ALARM: sample-ratio mismatch" if s.alarm else "ok"
        lines.append(f"sample-ratio check on {kind}: chi2 {num(s.chi2)}, p {significant(s.p_value, **_DASH)}: {flag}")
    lines.append(f"  {'arm':<16} {'assigned':>8} {'exposed':>8}  {'accepted':>8}  {'retained_30 (95% CI)':>24}  "
                 f"{'retained_90':>11}  {'net_revenue_90 (95% CI)':>26}")
    for a in r.arms:
        m = a.metrics
        r30, rev = m["retained_30"], m["net_revenue_90"]
        lines.append(f"  {a.name:<16} {count(a.assigned, grouping=False):>8} {count(a.exposed, grouping=False):>8}  "
                     f"{pct(m['accepted'].estimate):>8}  {pct(r30.estimate):>7} [{pct(r30.low)}, {pct(r30.high)}] "
                     f"n={count(r30.n, grouping=False):<5}  {pct(m['retained_90'].estimate):>11}  "
                     f"{num(rev.estimate):>8} [{num(rev.low)}, {num(rev.high)}] n={count(rev.n, grouping=False)}")
    lines.append("differences (95% CI; always-valid CI; Holm-adjusted p):")
    for c in r.comparisons:
        if c.metric not in (r.primary_metric, *r.guardrail_metrics):
            continue
        if c.metric != "net_revenue_90":
            def f(x) -> str:
                return points(x, unit=False, **_DASH) + " pp"
        else:
            def f(x) -> str:
                return num(x, sign=True)
        star = " *" if c.significant else ""
        lines.append(f"  {c.metric:<15} {c.arm:>16} vs {c.baseline:<16} {f(c.difference)} "
                     f"[{f(c.low)}, {f(c.high)}]; [{f(c.always_valid_low)}, {f(c.always_valid_high)}]; "
                     f"p {significant(c.p_adjusted, **_DASH)}{star}")
    s = r.sample_size
    if s.per_arm:
        lines.append(f"sample size: {count(s.per_arm)} per arm to detect {num(s.mde, 3)} on {s.metric} "
                     f"(smallest arm now {count(s.smallest_arm_now)}; detectable now {num(s.detectable_now, 3)})")
    lines += [f"warning: {w}" for w in r.warnings]
    return "\n".join(lines)


def simulation_text(limit: int, entered: int, truth: dict[str, dict], orderings: list[dict]) -> str:
    """`retention experiment simulate`'s check: each arm's true value and whether the report ranks the arms as
    the truth does (training.experiment_sim.recovered_ordering)."""
    lines = [f"simulated {limit} customers, {entered} entered; truth per arm (no sampling of outcomes):"]
    for arm, t in truth.items():
        lines.append(f"  {arm:<16} n={count(t['n'], grouping=False):>5}  "
                     f"retained_30 {fixed(t['retained_30'], 3, grouping=False)}  "
                     f"net_revenue_90 {fixed(t['net_revenue_90'], 2, grouping=False)}")
    for o in orderings:
        verdict = "recovered" if o["observed"] == o["true"] else "NOT recovered"
        lines.append(f"ordering by {o['metric']}: report {' > '.join(o['observed'])}; truth {' > '.join(o['true'])}: "
                     f"{verdict}")
    return "\n".join(lines)
