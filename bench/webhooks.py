"""Does a webhook receiver slow `POST /v1/decisions`? The service under gunicorn (gunicorn.conf.py) with the
delivery worker running as its own process (`retention webhooks worker`), open-loop decisions at a fixed
rate (bench/openloop.py), in alternating rounds: no subscription (the baseline, measured in the same run)
against three subscriptions to every event, one of them a receiver that accepts the connection and never
answers. Prints p50/p99 per round and their ratios to the baseline; writes var/bench/webhooks.json.

The decision path never calls a receiver: it writes one outbox row per subscription in the decision's own
transaction, so what this measures is that write (and the worker's share of the machine), not the receiver.

    .venv/bin/python -m bench.webhooks --data var/data/demo --models models
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from bench.openloop import run as openloop
from bench.run import OUT, ROOT, free_port, gunicorn, prepare_store, request_maker
from store import Store


def hanging_receiver() -> tuple[str, socket.socket]:
    """A receiver that accepts connections and never answers (the kernel completes the handshake from the
    listen backlog; nobody reads): every POST to it waits for the worker's timeout."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1024)
    return f"http://127.0.0.1:{s.getsockname()[1]}/hook", s


def answering_receiver() -> tuple[str, ThreadingHTTPServer]:
    class Ok(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/hook", server


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
        set_subscriptions(store, subs, active=False)
        env = {"DATABASE_URL": url, "RETENTION_MODELS_DIR": str(args.models), "WEB_CONCURRENCY": str(args.workers),
               "RETENTION_LOG_LEVEL": "WARNING", "RETENTION_RATE_LIMIT": "100000 per second",
               "RETENTION_MODEL": "latest"}
        port = free_port()
        worker_log = open(OUT / "webhook-worker.log", "w")  # noqa: SIM115 - closed in finally below
        worker = subprocess.Popen([str(Path(sys.executable).parent / "retention"), "webhooks", "worker"],
                                  cwd=ROOT, env={**os.environ, **env}, stdout=worker_log, stderr=subprocess.STDOUT)
        try:
            with gunicorn("service:create_app()", port, env):
                def decide(tag: str) -> dict:
                    return openloop("127.0.0.1", port, request_maker("/v1/decisions", customers, tag), args.rate,
                                    seconds=args.seconds)

                decide("warm")
                rounds = []
                for r in range(2 * args.rounds):
                    arm = "subscribed" if r % 2 else "baseline"
                    set_subscriptions(store, subs, active=arm == "subscribed")
                    result = decide(f"r{r}")
                    rounds.append({"arm": arm, **result})
                    print(f"round {r + 1} {arm:<10}: p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
                          f"{result['achieved_rps']:.1f} rps, {result['errors']} errors", flush=True)
            events = {s: store.outbox_events(s, limit=1_000_000) for s in subs}
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=60)
            worker_log.close()
            ok.shutdown()
            hang.close()

    def med(arm: str, key: str) -> float:
        return statistics.median(x[key] for x in rounds if x["arm"] == arm)

    report = {"rate": args.rate, "seconds_per_round": args.seconds, "workers": args.workers, "rounds": rounds,
              "p50_ms": {a: med(a, "p50_ms") for a in ("baseline", "subscribed")},
              "p99_ms": {a: med(a, "p99_ms") for a in ("baseline", "subscribed")},
              "events_by_subscription": {
                  name: {state: sum(e["state"] == state for e in events[s]) for state in ("pending", "delivered", "dead")}
                  for name, s in zip(("hanging", "answering-1", "answering-2"), subs, strict=True)}}
    report["ratio_p50"] = report["p50_ms"]["subscribed"] / report["p50_ms"]["baseline"]
    report["ratio_p99"] = report["p99_ms"]["subscribed"] / report["p99_ms"]["baseline"]
    (OUT / "webhooks.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"median of {args.rounds} rounds each at {args.rate:g} decisions/s:")
    print(f"  baseline (no subscription):           p50 {report['p50_ms']['baseline']:.1f} ms  "
          f"p99 {report['p99_ms']['baseline']:.1f} ms")
    print(f"  3 subscriptions, one receiver hanging: p50 {report['p50_ms']['subscribed']:.1f} ms  "
          f"p99 {report['p99_ms']['subscribed']:.1f} ms")
    print(f"  ratio subscribed / baseline:           p50 {report['ratio_p50']:.3f}  p99 {report['ratio_p99']:.3f}")
    print(f"  outbox after the run: {report['events_by_subscription']}")


if __name__ == "__main__":
    main()
