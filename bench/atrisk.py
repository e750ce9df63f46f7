"""Top-decile lift of the risk list (`retention at-risk`) on a held-out month, on two simulated worlds.

For each world: simulate a year, train the churn-risk model (training.train, as `retention train --only
churn-risk` does) on the window ending at T = the data's end minus 30 days, so no label it learns from
reaches past T; rank every customer subscribed at T (the list's own scoring, features from rows before T);
then count from the data's own rows who asked to cancel in (T, T + 30 d] (the model's label) and whose
subscription ended in it. Lift = share of the riskiest 10% with the outcome / share of everyone.

    python -m bench.atrisk [--worlds reference,sparse-noisy] [--customers N] [--seed 5]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from retention.artifacts import load_artifact
from retention.features import FEATURE_VERSION
from retention.offers import load_catalog
from training.atrisk import HORIZON_DAYS, held_out_lift
from training.simulator.generate import SimConfig, simulate_dataset
from training.simulator.worlds import world
from training.train import TrainConfig, train_version


def measure(world_name: str, customers: int | None, seed: int, folder: Path) -> dict:
    w = world(world_name)
    cfg = SimConfig(customers=customers or w.customers, seed=seed, world=w)
    data = folder / world_name / "data"
    t0 = time.perf_counter()
    simulate_dataset(cfg, data)
    end = datetime(cfg.window_end.year, cfg.window_end.month, cfg.window_end.day, tzinfo=UTC)
    as_of = end - timedelta(days=HORIZON_DAYS)
    version = train_version(TrainConfig(data_dir=data, out_root=folder / world_name / "models", window_end=as_of,
                                        models=("churn_risk",), seed=seed))
    model, meta = load_artifact(version, feature_version=FEATURE_VERSION)
    result = held_out_lift(model, meta, data, load_catalog(), as_of)
    return {"world": world_name, "customers": cfg.customers, "learner": meta["models"]["churn_risk"]["learner"],
            "seconds": round(time.perf_counter() - t0, 1), **result}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worlds", default="reference,sparse-noisy")
    ap.add_argument("--customers", type=int, default=None, help="Per world [default: the world's own size].")
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-atrisk-"))
    results = []
    try:
        print("| world | customers at T | learner | cancel request in 30 d: top 10% / all | lift "
              "| subscription ended in 30 d: top 10% / all | lift |")
        print("|---|---|---|---|---|---|---|")
        for name in args.worlds.split(","):
            r = measure(name.strip(), args.customers, args.seed, folder)
            results.append(r)
            req, end = r["cancel_request"], r["subscription_ended"]
            print(f"| {r['world']} | {req['customers']:,} | {r['learner']} | {100 * req['share_top']:.1f}% / "
                  f"{100 * req['share_all']:.1f}% | {req['lift']:.2f} | {100 * end['share_top']:.1f}% / "
                  f"{100 * end['share_all']:.1f}% | {end['lift']:.2f} |", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
