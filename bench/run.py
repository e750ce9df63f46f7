"""The decision-API benchmark: the real service and a bare Flask echo endpoint, both under gunicorn with
gunicorn.conf.py, driven from other processes on 127.0.0.1, A/B in alternation; figures as ratios to the echo
baseline measured in the same run, because these 2-core machines are noisy.

Run with `make bench` (which prepares the demo data and model first). Prints a table and writes
var/bench/latest.json. Steps:
0. scoring alone, compiled vs the scikit-learn Pipeline (bench/scoring.py), while the machine is quiet;
1. a fresh SQLite store with a migrated schema, a key, and every demo customer's features loaded;
2. both servers started (same config, same worker count), warmed up;
3. maximum throughput: wrk (closed loop) for ROUNDS rounds, echo, echo+insert (echo that also stores the
   body with bare sqlite3: the floor of recording anything) and decision alternating, each request a new
   cancel flow of a real customer (so every decision is computed and stored);
4. latency at about half of each one's measured maximum, with an open-loop generator (bench/openloop.py);
5. RSS and PSS of every worker;
6. py-spy profiles of one decision worker under full wrk load, summarised by stage (bench/profile.py).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "var" / "bench"
KEY = "bench-key-0123456789abcdef0123"
REASONS = ("too_expensive", "not_using", "temporary", "technical", "content", "switching", "other")


def free_port() -> int:
    """A port on 127.0.0.1 nothing listens on now (the benchmarks', drills' and tests' servers)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sh(*cmd: str, env: dict | None = None) -> str:
    done = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def prepare_store(data: Path, models: Path) -> tuple[str, Path]:
    """A fresh SQLite store with the schema, the bench key and a warm feature snapshot."""
    OUT.mkdir(parents=True, exist_ok=True)
    db = OUT / "bench.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    url = f"sqlite:///{db}"
    bin_ = Path(sys.executable).parent
    env = {"DATABASE_URL": url}
    _sh(str(bin_ / "retention"), "db", "upgrade", env=env)
    _sh(str(bin_ / "retention"), "keys", "create", "--name", "bench", "--role", "decide", "--key", KEY, env=env)
    _sh(str(bin_ / "retention"), "load-features", "--data", str(data), "--models", str(models), env=env)
    customers = OUT / "customers.tsv"
    with sqlite3.connect(db) as con:
        rows = con.execute(
            "SELECT customer_id, json_extract(\"values\", '$.plan_id'), json_extract(\"values\", '$.price'), "
            "json_extract(\"values\", '$.billing_period'), json_extract(\"values\", '$.billing_channel') "
            "FROM customer_features ORDER BY customer_id").fetchall()
    customers.write_text("".join("\t".join(str(v) for v in r) + "\n" for r in rows))
    return url, customers


@contextmanager
def gunicorn(app: str, port: int, env: dict):
    log = open(OUT / f"gunicorn-{port}.log", "w")  # noqa: SIM115 - closed in finally below
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", app], cwd=ROOT,
                            env={**os.environ, **env, "PORT": str(port)}, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except requests.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    sys.exit(f"{app} did not start; see {log.name}")
                time.sleep(0.2)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()


def wrk(url: str, customers: Path, tag: str, seconds: int, threads: int, connections: int) -> dict:
    out = _sh("wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s",
              str(ROOT / "bench" / "requests.lua"), url, "--", str(customers), KEY, tag)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {"rps": rps, "non_2xx": int(bad.group(1)) if bad else 0,
            "socket_errors": errors.group(0) if errors else None}


def request_maker(path: str, customers: Path, tag: str):
    rows = [line.split("\t") for line in customers.read_text().splitlines()]

    def make(i: int) -> bytes:
        cid, plan, price, period, channel = rows[i % len(rows)]
        body = (f'{{"request_id":"{tag}-{i}","customer_id":"{cid}","reason":"{REASONS[i % len(REASONS)]}",'
                f'"plan_id":"{plan}","price":{price},"billing_period":"{period}","billing_channel":"{channel}"}}')
        return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\n"
                f"Authorization: Bearer {KEY}\r\nContent-Length: {len(body)}\r\n\r\n{body}").encode()

    return make


def worker_memory(master: subprocess.Popen) -> list[dict]:
    out = []
    for pid in worker_pids(master.pid):
        status = Path(f"/proc/{pid}/status").read_text()
        rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024
        pss = sum(int(line.split()[1]) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
                  if line.startswith("Pss:")) / 1024
        out.append({"pid": pid, "rss_mb": round(rss, 1), "pss_mb": round(pss, 1)})
    return out


def worker_pids(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT / "var" / "data" / "demo")
    ap.add_argument("--models", type=Path, default=ROOT / "models")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--profile", type=int, default=15,
                    help="seconds of py-spy sampling of one decision worker under wrk load (0: skip)")
    args = ap.parse_args()

    from bench.scoring import measure as measure_scoring  # on a quiet machine, before the servers start

    scoring = measure_scoring(args.models, repeat=5)
    print(f"scoring alone: {scoring['compiled_us_per_offer_set']} us per offer set "
          f"(Pipeline {scoring['pipeline_us_per_offer_set']} us), max |difference| "
          f"{scoring['max_abs_difference']:.1e}", flush=True)

    url, customers = prepare_store(args.data, args.models)
    # One key drives everything here: the limiter runs (its cost is measured) with a limit never reached.
    env = {"DATABASE_URL": url, "RETENTION_MODELS_DIR": str(args.models), "WEB_CONCURRENCY": str(args.workers),
           "RETENTION_LOG_LEVEL": "WARNING", "RETENTION_RATE_LIMIT": "100000 per second"}
    decide_port, echo_port = 8101, 8102
    targets = {"echo": f"http://127.0.0.1:{echo_port}/bench/echo",
               "echo+insert": f"http://127.0.0.1:{echo_port}/bench/echo-store",
               "decision": f"http://127.0.0.1:{decide_port}/v1/decisions"}
    (OUT / "echo-store.db").unlink(missing_ok=True)
    with gunicorn("service:create_app()", decide_port, env) as decide_proc, \
            gunicorn("bench.echo_app:create_app()", echo_port, env) as echo_proc:
        for name, target in targets.items():  # warm up: connections, caches, SQLite pages
            wrk(target, customers, f"warm-{name}", 3, 2, args.connections)
        rounds = []
        for r in range(args.rounds):
            order = tuple(targets) if r % 2 == 0 else tuple(reversed(targets))
            result = {name: wrk(targets[name], customers, f"r{r}-{name}", args.seconds, 2, args.connections)
                      for name in order}
            result["ratio"] = result["decision"]["rps"] / result["echo"]["rps"]
            result["insert_ratio"] = result["echo+insert"]["rps"] / result["echo"]["rps"]
            rounds.append(result)
            print(f"round {r + 1}: echo {result['echo']['rps']:.0f} rps, echo+insert {result['echo+insert']['rps']:.0f}"
                  f" rps, decision {result['decision']['rps']:.0f} rps, ratio {result['ratio']:.3f}", flush=True)
        latency = {}
        for name, port in (("echo", echo_port), ("decision", decide_port)):
            rate = 0.5 * statistics.median(r[name]["rps"] for r in rounds)
            path = "/bench/echo" if name == "echo" else "/v1/decisions"
            latency[name] = run_openloop(port, path, customers, f"lat-{name}", rate)
        memory = {"decision": worker_memory(decide_proc), "echo": worker_memory(echo_proc)}
        profile = profile_under_load(decide_proc, targets["decision"], customers, args) if args.profile else None

    ratios = [r["ratio"] for r in rounds]
    report = {
        "machine": {"cpus": os.cpu_count()}, "workers": args.workers, "connections": args.connections,
        "seconds_per_round": args.seconds, "rounds": rounds,
        "ratio": {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)},
        "insert_ratio_median": statistics.median(r["insert_ratio"] for r in rounds),
        "latency_at_half_max": latency, "worker_memory": memory, "scoring": scoring, "profile": profile,
    }
    (OUT / "latest.json").write_text(json.dumps(report, indent=2) + "\n")
    print(format_report(report))


def profile_under_load(proc: subprocess.Popen, url: str, customers: Path, args) -> dict:
    """py-spy on one decision worker while wrk drives both workers at full load, in both views of
    bench.profile.record."""
    from bench.profile import record, summarise

    pid = worker_pids(proc.pid)[0]
    views = {}
    for view, gil in (("threads not idle", False), ("holding the GIL", True)):
        load = subprocess.Popen(["wrk", "-t2", f"-c{args.connections}", f"-d{args.profile + 2}s", "-s",
                                 str(ROOT / "bench" / "requests.lua"), url, "--", str(customers), KEY,
                                 f"profile-{int(gil)}"], stdout=subprocess.DEVNULL)
        try:
            time.sleep(1)
            views[view] = summarise(record(pid, args.profile, OUT, gil=gil))
        finally:
            load.wait()
    return views


def run_openloop(port: int, path: str, customers: Path, tag: str, rate: float) -> dict:
    from bench.openloop import run

    return run("127.0.0.1", port, request_maker(path, customers, tag), rate, seconds=15.0)


def format_report(r: dict) -> str:
    lines = [
        f"throughput (wrk, {r['connections']} connections, {r['seconds_per_round']} s x {len(r['rounds'])} rounds, "
        f"{r['workers']} workers):",
        "  round  echo rps  echo+insert rps  decision rps  decision/echo  echo+insert/echo",
    ]
    for i, x in enumerate(r["rounds"]):
        lines.append(f"  {i + 1:>5}  {x['echo']['rps']:>8.0f}  {x['echo+insert']['rps']:>15.0f}  "
                     f"{x['decision']['rps']:>12.0f}  {x['ratio']:>13.3f}  {x['insert_ratio']:>16.3f}")
    q = r["ratio"]
    lines.append(f"  decision/echo median {q['median']:.3f} (min {q['min']:.3f}, max {q['max']:.3f}); "
                 f"echo+insert/echo median {r['insert_ratio_median']:.3f} (the floor of storing with bare sqlite3)")
    errors = sum(x[n]["non_2xx"] for x in r["rounds"] for n in ("echo", "echo+insert", "decision"))
    lines.append(f"  non-2xx responses: {errors}")
    lines.append("latency at half the maximum rate (open loop, 15 s):")
    for name, x in r["latency_at_half_max"].items():
        lines.append(f"  {name:<8} offered {x['offered_rps']:.0f} rps, achieved {x['achieved_rps']:.0f}: "
                     f"p50 {x['p50_ms']:.2f} ms, p95 {x['p95_ms']:.2f} ms, p99 {x['p99_ms']:.2f} ms, "
                     f"max {x['max_ms']:.1f} ms, errors {x['errors']}")
    lines.append("worker memory:")
    for name, workers in r["worker_memory"].items():
        lines.append(f"  {name:<8} " + ", ".join(f"RSS {w['rss_mb']:.0f} MB / PSS {w['pss_mb']:.0f} MB"
                                                   for w in workers))
    s = r["scoring"]
    lines.append(f"scoring alone ({s['offers_per_set']} offers, learner {s['learner']}): "
                 f"{s['compiled_us_per_offer_set']} us per offer set compiled, {s['pipeline_us_per_offer_set']} us "
                 f"with the Pipeline; max |difference| {s['max_abs_difference']:.1e}")
    if r.get("profile"):
        from bench.profile import format_summary

        lines += [format_summary(summary, view) for view, summary in r["profile"].items()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
