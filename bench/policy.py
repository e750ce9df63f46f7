"""The offer policy on worlds it was not designed on. For each world of training.simulator.worlds: simulate
a history (seed 1), train a model version on it as `retention train` does (learner selection, calibration,
the policy gate), then decide the cancel requests of a fresh population of the same world (seed 2) with the
service's own Policy and value every choice with the world's truth (training.policy_eval).

    make bench-policy                                 # every world (about 10 minutes once simulated)
    python -m bench.policy --worlds types,tiny        # some of them
    python -m bench.policy --update-docs              # also rewrite the results table in docs/worlds.md

Data and models are cached under var/bench/worlds/ (a world's data is reused while its manifest matches);
results go to var/bench/policy.json. The targets of the policy issue are checked and printed per world.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "var" / "bench"
DOCS = ROOT / "docs" / "worlds.md"
EVAL_REQUESTS = 4000
# The fresh population is three times the world's: its labelled flows measure calibration, and label ECE
# on ~3,000 flows is about 0.02 even for the true probabilities.
FRESH_SCALE = 3
MARK = ("<!-- bench-policy:start -->", "<!-- bench-policy:end -->")


def simulated(world, seed: int, out: Path, customers: int | None = None) -> Path:
    from training.simulator.generate import SimConfig, simulate_dataset

    manifest = out / "dataset.json"
    if manifest.is_file():
        m = json.loads(manifest.read_text())
        if m.get("world") == world.name and m.get("seed") == seed and m.get("customers") == (customers or world.customers):
            return out
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    simulate_dataset(SimConfig(customers=customers or world.customers, seed=seed, world=world), out)
    return out


def run_world(name: str, catalog, base_policy) -> dict:
    from reports.model import write_report
    from retention.artifacts import load_artifact, read_metadata
    from retention.features import FEATURE_VERSION
    from training.evaluate import evaluate_on
    from training.policy_eval import evaluate_policy
    from training.simulator.worlds import WORLDS
    from training.train import TrainConfig, train_version

    world = WORLDS[name]
    # The policy's own choices: what exploring costs is measured by bench.ope.
    policy = replace(base_policy, horizon_months=world.horizon_months, exploration_share=0.0)
    base = OUT / "worlds" / name
    t0 = time.perf_counter()
    history = simulated(world, 1, base / "history")
    fresh = simulated(world, 2, base / "fresh", customers=world.customers * FRESH_SCALE)
    simulate_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    version = train_version(TrainConfig(data_dir=history, out_root=base / "models", catalog=catalog, policy=policy))
    write_report(version / "report.html", read_metadata(version))
    train_s = time.perf_counter() - t0
    model, meta = load_artifact(version, feature_version=FEATURE_VERSION)
    t0 = time.perf_counter()
    judged = evaluate_policy(model, meta, fresh, catalog, policy, limit=EVAL_REQUESTS, seed=0)
    fresh_result = evaluate_on(model, meta, fresh, catalog)
    fresh_metrics = fresh_result["offer_response"]
    eval_s = time.perf_counter() - t0
    offer = meta["models"]["offer_response"]
    flows = meta["splits"]["offer_response"]["train_rows"] + meta["splits"]["offer_response"]["eval_rows"]
    return {"world": name, "story": world.story, "horizon_months": world.horizon_months, "flows": flows,
            "learner": offer.get("learner"), "calibration": offer.get("calibration"),
            "gate": {k: offer["gate"].get(k) for k in ("verdict", "fixed_offer", "why", "differences", "best_fixed",
                                                                 "offers_allowed")},
            "holdout_ece": meta["metrics"]["offer_response"]["model"]["ece"],
            "fresh_ece": fresh_metrics["ece"], "fresh_flows": fresh_metrics["n"],
            "fresh_ece_vs_truth": fresh_result.get("ece_vs_truth"), "fresh_ece_of_truth": fresh_result.get("ece_of_truth"),
            "evaluation": judged, "seconds": {"simulate": round(simulate_s, 1), "train": round(train_s, 1),
                                              "evaluate": round(eval_s, 1)},
            "model_version": meta["version"], "churn": churn_figures(meta)}


def churn_figures(meta: dict) -> dict | None:
    """The churn-risk model's held-out AUC beside the logistic baseline's, from the same run."""
    m = (meta.get("metrics") or {}).get("churn_risk")
    if not m:
        return None
    return {"learner": meta["models"]["churn_risk"].get("learner"), "auc": m["model"]["roc_auc"],
            "logistic_auc": m["baseline_logistic"]["roc_auc"], "n": m["model"]["n"]}


def run_churn_only(name: str, catalog, base_policy) -> dict:
    """A world without offer history: only churn risk is trained, the rules choose offers."""
    from retention.artifacts import read_metadata
    from training.simulator.worlds import WORLDS
    from training.train import TrainConfig, train_version

    world = WORLDS[name]
    base = OUT / "worlds" / name
    history = simulated(world, 1, base / "history")
    t0 = time.perf_counter()
    version = train_version(TrainConfig(data_dir=history, out_root=base / "models", catalog=catalog,
                                        policy=base_policy))
    meta = read_metadata(version)
    return {"world": name, "seconds": {"train": round(time.perf_counter() - t0, 1)},
            "offer_response": meta["models"]["offer_response"], "churn": churn_figures(meta)}


def row_of(r: dict) -> dict:
    """The figures of the table, and whether each target holds."""
    pol = r["evaluation"]["policies"]
    comp = r["evaluation"]["comparisons"]
    best_fixed = r["evaluation"]["best_fixed"]
    better_baseline = "rules" if pol["rules"]["mean"] >= pol[best_fixed]["mean"] else best_fixed
    vs = comp["model_minus_rules"] if better_baseline == "rules" else comp["model_minus_best_fixed"]
    share = comp["model_share_of_oracle"]
    out = {"world": r["world"], "flows": r["flows"], "none": 0.0, "best_fixed": pol[best_fixed]["mean"],
           "best_fixed_offer": best_fixed.removeprefix("always:"), "rules": pol["rules"]["mean"],
           "served": pol["model"]["mean"], "ungated": pol.get("model_ungated", pol["model"])["mean"],
           "oracle": pol["oracle"]["mean"], "share": share["value"], "share_ci": share["ci95"],
           "served_offer_rate": pol["model"]["offer_rate"], "ece": r["fresh_ece"], "fresh_flows": r["fresh_flows"],
           "ece_vs_truth": r["fresh_ece_vs_truth"], "ece_of_truth": r["fresh_ece_of_truth"], "gate": r["gate"]["verdict"],
           "learner": r["learner"], "vs_better_baseline": vs, "better_baseline": better_baseline}
    checks = {"not significantly worse than the better of rules and best fixed": vs["ci95"][1] >= 0}
    if r["flows"] >= 10_000 and share["value"] is not None:
        checks[">= 0.85 of the oracle's lift (>= 10,000 flows)"] = share["value"] >= 0.85
    elif r["flows"] >= 2_000 and share["value"] is not None:
        checks[">= 0.75 of the oracle's lift (about 3,000 flows)"] = share["value"] >= 0.75
    if r["flows"] >= 2_000:
        checks["ECE <= 0.03 (labels)"] = r["fresh_ece"] <= 0.03
        checks["ECE <= 0.03 (against the true probabilities)"] = r["fresh_ece_vs_truth"] <= 0.03
    if pol["oracle"]["mean"] <= 1e-9:
        checks["offers nothing but follow-ups where nothing helps"] = all(
            o in ("none", "followup") or k <= 0.02 * EVAL_REQUESTS
            for o, k in r["evaluation"]["offer_mix"]["model"].items())
    out["checks"] = checks
    return out


def churn_table(results: list[dict]) -> str:
    lines = ["| world | churn-risk learner | held-out points | AUC | logistic-regression AUC (same run) |",
             "|---|---|---|---|---|"]
    for r in results:
        c = r.get("churn")
        if c:
            lines.append(f"| {r['world']} | {c['learner']} | {c['n']:,} | {c['auc']:.4f} | {c['logistic_auc']:.4f} |")
    return "\n".join(lines)


def table(rows: list[dict]) -> str:
    def f(x, digits=2):
        return "n/a" if x is None else f"{x:.{digits}f}"

    lines = ["| world | flows | no offer | best fixed offer | rules | served | oracle | served share of oracle lift "
             "(95% CI) | ECE: labels / vs truth / truth's own (fresh flows) | gate | learner |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ci = "n/a" if r["share_ci"] is None else f"{r['share_ci'][0]:.2f}-{r['share_ci'][1]:.2f}"
        lines.append(f"| {r['world']} | {r['flows']:,} | 0 | {f(r['best_fixed'])} ({r['best_fixed_offer']}) | "
                     f"{f(r['rules'])} | **{f(r['served'])}** | {f(r['oracle'])} | {f(r['share'])} ({ci}) | "
                     f"{f(r['ece'], 3)} / {f(r['ece_vs_truth'], 3)} / {f(r['ece_of_truth'], 3)} ({r['fresh_flows']:,}) | "
                     f"{r['gate']} | {r['learner']} |")
    return "\n".join(lines)


def main() -> None:
    from retention.offers import load_catalog
    from retention.policy import load_policy
    from training.simulator.worlds import WORLDS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worlds", default=",".join(WORLDS), help="comma-separated world names (default: all)")
    ap.add_argument("--update-docs", action="store_true", help=f"rewrite the results table in {DOCS.name}")
    args = ap.parse_args()
    catalog = load_catalog()
    policy = load_policy(catalog)
    names = [w.strip() for w in args.worlds.split(",") if w.strip()]
    unknown = [w for w in names if w not in WORLDS]
    if unknown:
        sys.exit(f"unknown worlds {unknown}; the worlds are {', '.join(WORLDS)}")
    results, rows = [], []
    churn_only = []
    for name in names:
        print(f"== {name}", flush=True)
        if not WORLDS[name].offer_history:
            churn_only.append(run_churn_only(name, catalog, policy))
            c = churn_only[-1]["churn"]
            print(f"   no offer history: offer response not trained ({churn_only[-1]['offer_response']['why']}); "
                  f"churn risk {c['learner']} AUC {c['auc']:.4f}, logistic regression {c['logistic_auc']:.4f}",
                  flush=True)
            continue
        r = run_world(name, catalog, policy)
        results.append(r)
        rows.append(row_of(r))
        row = rows[-1]
        print(f"   {row['flows']:,} flows, learner {row['learner']}, gate {row['gate']}: served {row['served']:.2f} "
              f"rules {row['rules']:.2f} best fixed {row['best_fixed']:.2f} oracle {row['oracle']:.2f}, "
              f"share {row['share'] if row['share'] is None else round(row['share'], 3)}, ECE {row['ece']:.3f} "
              f"(vs truth {row['ece_vs_truth']:.3f}, the truth's own {row['ece_of_truth']:.3f}) "
              f"({r['seconds']})", flush=True)
        for check, ok in row["checks"].items():
            print(f"   {'ok  ' if ok else 'MISS'} {check}", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "policy.json").write_text(json.dumps({"results": results, "rows": rows, "churn_only": churn_only},
                                                indent=2, default=str) + "\n")
    text = table(rows) + "\n\nChurn risk on the same data sets:\n\n" + churn_table(results + churn_only)
    print(text)
    if args.update_docs:
        doc = DOCS.read_text()
        start, end = MARK
        body = f"{start}\n{text}\n{end}"
        DOCS.write_text(re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: body, doc, flags=re.S))
        print(f"updated {DOCS}")


if __name__ == "__main__":
    main()
