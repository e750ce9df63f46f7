"""Does a webhook receiver slow `POST /v1/decisions`? The service under gunicorn (gunicorn.conf.py) with the
delivery worker as its own process (`retention webhooks worker`), open-loop decisions at a fixed rate
(bench/openloop.py), in rotating rounds of three arms:

- baseline: no subscription (measured in the same run);
- queued: three subscriptions to every event, one a receiver that accepts the connection and never
  answers, with the worker stopped: what the decision path itself pays (one outbox row per subscription in
  the decision's transaction);
- healthy: three subscriptions to receivers that all answer, the worker running: what delivering costs the
  decisions (the worker POSTing ~3 events per decision and logging each attempt in the same store, on the
  same cores);
- delivering: the queued arm's subscriptions (one receiver hanging) with the worker running: against
  `healthy`, what a hanging receiver adds.

The receivers run in a process of their own, so serving them does not slow the load generator. Prints p50/p99
per round and the ratios to the baseline; writes var/bench/webhooks.json.

    .venv/bin/python -m bench.webhooks --data var/data/demo --models models
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from bench.openloop import run as openloop
from bench.run import OUT, ROOT, free_port, gunicorn, prepare_store, request_maker
from store import Store

ARMS = ("baseline", "queued", "healthy", "delivering")


def hanging_receiver() -> tuple[str, socket.socket]:
    """A receiver that accepts connections and never answers (the kernel completes the handshake from the
    listen backlog; nobody reads): every POST to it waits for the worker's timeout."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1024)
    return f"http://127.0.0.1:{s.getsockname()[1]}/hook", s


class _Ok(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def _serve(port: int) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", port), _Ok)
    server.daemon_threads = True
    server.serve_forever()


def answering_receiver() -> tuple[str, multiprocessing.Process]:
    """A receiver answering 204 at once, in a process of its own."""
    port = free_port()
    proc = multiprocessing.get_context("spawn").Process(target=_serve, args=(port,), daemon=True)
    proc.start()
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return f"http://127.0.0.1:{port}/hook", proc
        except OSError:
            if time.monotonic() > deadline:
                sys.exit("the receiver did not start")
            time.sleep(0.1)


def set_subscriptions(store: Store, ids: list[int], active: bool) -> None:
    """Turn the bench's subscriptions on or off in place (each decision reads them in its transaction)."""
    from sqlalchemy import update

    from store.models import WebhookSubscription

    with store.transaction(write=True) as conn:
        conn.execute(update(WebhookSubscription).where(WebhookSubscription.id.in_(ids))
                     .values(disabled_at=None if active else datetime.now(UTC)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT / "var" / "data" / "demo")
    ap.add_argument("--models", type=Path, default=ROOT / "models")
    ap.add_argument("--rounds", type=int, default=4, help="rounds per arm, alternating")
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--rate", type=float, default=40.0, help="decisions per second offered")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    url, customers = prepare_store(args.data, args.models)
    hang_url, hang = hanging_receiver()
    ok_url, ok = answering_receiver()
    with Store.from_url(url) as store:
        subs = [store.add_subscription(u, ["*"])["id"] for u in (hang_url, ok_url, ok_url)]
        healthy = [store.add_subscription(ok_url, ["*"])["id"] for _ in range(3)]
        set_subscriptions(store, subs + healthy, active=False)
        env = {"DATABASE_URL": url, "RETENTION_MODELS_DIR": str(args.models), "WEB_CONCURRENCY": str(args.workers),
               "RETENTION_LOG_LEVEL": "WARNING", "RETENTION_RATE_LIMIT": "100000 per second",
               "RETENTION_MODEL": "latest"}
        port = free_port()
        worker_log = open(OUT / "webhook-worker.log", "w")  # noqa: SIM115 - closed in finally below
        worker = None

        def start_worker() -> subprocess.Popen:
            return subprocess.Popen([str(Path(sys.executable).parent / "retention"), "webhooks", "worker"],
                                    cwd=ROOT, env={**os.environ, **env}, stdout=worker_log, stderr=subprocess.STDOUT)

        def stop_worker(proc: subprocess.Popen | None) -> None:
            if proc is not None:
                proc.send_signal(signal.SIGTERM)  # it finishes its POSTs in flight (at most the 5 s timeout)
                proc.wait(timeout=60)

        try:
            worker = start_worker()
            with gunicorn("service:create_app()", port, env):
                def decide(tag: str) -> dict:
                    return openloop("127.0.0.1", port, request_maker("/v1/decisions", customers, tag), args.rate,
                                    seconds=args.seconds)

                decide("warm")
                rounds = []
                for r in range(len(ARMS) * args.rounds):
                    arm = ARMS[r % len(ARMS)]
                    set_subscriptions(store, healthy, active=arm == "healthy")
                    set_subscriptions(store, subs, active=arm in ("queued", "delivering"))
                    if arm == "queued":
                        stop_worker(worker)
                        worker = None
                    elif worker is None:
                        worker = start_worker()
                        time.sleep(3)  # started and claiming
                    result = decide(f"r{r}")
                    rounds.append({"arm": arm, **result})
                    print(f"round {r + 1} {arm:<10}: p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
                          f"{result['achieved_rps']:.1f} rps, {result['errors']} errors", flush=True)
            events = {s: store.outbox_events(s, limit=1_000_000) for s in subs}
        finally:
            stop_worker(worker)
            worker_log.close()
            ok.terminate()
            hang.close()

    def med(arm: str, key: str) -> float:
        return statistics.median(x[key] for x in rounds if x["arm"] == arm)

    report = {"rate": args.rate, "seconds_per_round": args.seconds, "workers": args.workers, "rounds": rounds,
              "p50_ms": {a: med(a, "p50_ms") for a in ARMS}, "p99_ms": {a: med(a, "p99_ms") for a in ARMS},
              "events_by_subscription": {
                  name: {state: sum(e["state"] == state for e in events[s]) for state in ("pending", "delivered", "dead")}
                  for name, s in zip(("hanging", "answering-1", "answering-2"), subs, strict=True)}}
    report["ratios"] = {a: {q: report[f"{q}_ms"][a] / report[f"{q}_ms"]["baseline"] for q in ("p50", "p99")}
                        for a in ARMS[1:]}
    (OUT / "webhooks.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"median of {args.rounds} rounds per arm at {args.rate:g} decisions/s:")
    for arm, label in zip(ARMS, ("no subscription (baseline)", "3 subscriptions, worker stopped",
                                 "3 answering receivers, delivering", "one of 3 hanging, delivering"), strict=True):
        ratio = "" if arm == "baseline" else (f"  ratio p50 {report['ratios'][arm]['p50']:.3f}, "
                                              f"p99 {report['ratios'][arm]['p99']:.3f}")
        print(f"  {label:<36} p50 {report['p50_ms'][arm]:6.1f} ms  p99 {report['p99_ms'][arm]:6.1f} ms{ratio}")
    print(f"  outbox after the run: {report['events_by_subscription']}")


if __name__ == "__main__":
    main()
