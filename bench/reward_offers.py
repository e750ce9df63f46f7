"""What the reward and referral offers are worth under the simulator's truth (README, "Loyalty rewards and
referrals"): on a simulated data set, the true incremental value of each where it is allowed, and how much the
oracle (the best true choice among allowed offers) gains from having them in the catalog.

    python -m bench.reward_offers var/eval/eval-seed8
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from retention.offers import load_catalog
from retention.value import expected_net_value
from training.simulator.truth import TRUTH_FILE

NEW = ("reward_loyalty", "referral_both")
COMPARED = ("reward_loyalty", "referral_both", "credit_1", "followup")


def main(data_dir: str) -> None:
    catalog = load_catalog()
    t = pd.read_parquet(Path(data_dir) / TRUTH_FILE)
    ids = list(catalog.ids)
    price, period = t["price"].to_numpy(), t["billing_period"].to_numpy()
    v = np.column_stack([expected_net_value(catalog[o], t[f"p_{o}"].to_numpy(), price, period) for o in ids])
    v = v - v[:, [ids.index("none")]]
    ok = t[[f"eligible_{o}" for o in ids]].to_numpy(bool)
    best = np.where(ok, v, -np.inf).max(axis=1)
    without = np.where(ok & np.array([o not in NEW for o in ids]), v, -np.inf).max(axis=1)
    print(f"requests {len(t)}; oracle with the new offers {best.mean():.2f} per request, without them "
          f"{without.mean():.2f} (+{(best - without).mean():.2f})")
    for offer in NEW:
        e = ok[:, ids.index(offer)]
        values = ", ".join(f"{o} {v[e, ids.index(o)].mean():.2f}" for o in COMPARED)
        print(f"{offer}: allowed on {e.sum()} requests ({e.mean():.1%}); mean true incremental value there: "
              f"{values}; oracle {best[e].mean():.2f}, without the new offers {without[e].mean():.2f}")


if __name__ == "__main__":
    main(sys.argv[1])
