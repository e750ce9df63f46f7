"""Training at scale: `retention simulate` + `retention train` on N customers (default 1,000,000, a year of
usage), timed and with each step's peak memory, against the targets of <= 5 minutes and <= 8 GB.

    make bench-scale                      # 1,000,000 customers, about 4.5 minutes and 2.4 GB here
    python -m bench.scale --customers 200000

Peak memory is the step's own maximum resident set (os.wait4's rusage of that child process). Writes
var/bench/scale.json. Data and models go to var/bench/scale-* and are removed afterwards unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "var" / "bench"
TARGET_SECONDS, TARGET_GB = 300, 8.0


def run_step(cmd: list[str]) -> dict:
    """Run one command; its wall time and peak RSS (GB)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{output[-3000:]}")
    return {"command": " ".join(cmd), "seconds": round(seconds, 1), "peak_rss_gb": round(usage.ru_maxrss / 1024**2, 2),
            "output_tail": output.strip().splitlines()[-12:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep the simulated data and the trained model")
    args = ap.parse_args()
    retention = str(Path(sys.executable).with_name("retention"))
    data, models = OUT / f"scale-{args.customers}-data", OUT / f"scale-{args.customers}-models"
    for path in (data, models):
        shutil.rmtree(path, ignore_errors=True)
    try:
        simulate = run_step([retention, "simulate", "--customers", str(args.customers), "--seed", str(args.seed),
                             "--out", str(data)])
        train = run_step([retention, "train", "--data", str(data), "--out", str(models)])
    finally:
        if not args.keep:
            for path in (data, models):
                shutil.rmtree(path, ignore_errors=True)
    total = simulate["seconds"] + train["seconds"]
    peak = max(simulate["peak_rss_gb"], train["peak_rss_gb"])
    report = {"customers": args.customers, "cpus": os.cpu_count(), "simulate": simulate, "train": train,
              "total_seconds": round(total, 1), "peak_rss_gb": peak,
              "within_targets": total <= TARGET_SECONDS and peak <= TARGET_GB}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "scale.json").write_text(json.dumps(report, indent=2) + "\n")
    print("\n".join(train["output_tail"]))
    print(f"simulate {args.customers:,} customers: {simulate['seconds']:.1f} s, peak {simulate['peak_rss_gb']:.2f} GB")
    print(f"train (validate, features, both models, report, compiled scorer): {train['seconds']:.1f} s, "
          f"peak {train['peak_rss_gb']:.2f} GB")
    print(f"simulate + train: {total:.1f} s (target <= {TARGET_SECONDS} s), peak {peak:.2f} GB "
          f"(target <= {TARGET_GB:.0f} GB): {'within' if report['within_targets'] else 'OUTSIDE'} the targets")


if __name__ == "__main__":
    main()
