"""Soak: mixed traffic (decisions, outcomes, NPS events) at a fixed share of the maximum, open loop, for
minutes, against gunicorn with the production config on 127.0.0.1; then every acknowledged write is looked
up in the store.

    make soak                                   # 10 minutes at 70% of the measured decision maximum
    python -m bench.soak --minutes 1 --rate 300

Pass criteria (exit code 1 otherwise): no 5xx; every decision answered 2xx is stored exactly once with the
decision id the client got, every acknowledged outcome and NPS event is stored; worker memory flat (the
median RSS of the last fifth of the run within 10% + 5 MB of the first fifth's). Writes var/bench/soak.json.
tests/service/test_soak.py runs the same code for 20 seconds in CI.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import text

from bench.openloop import read_response
from store import Store

REASONS = ("too_expensive", "not_using", "temporary", "technical", "content", "switching", "other")
MIX = ("decision",) * 12 + ("outcome",) * 5 + ("nps",) * 3  # per 20 requests


def _request(path: str, key: str, body: dict) -> bytes:
    data = json.dumps(body)
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {key}\r\nContent-Length: {len(data.encode())}\r\n\r\n{data}").encode()


async def _exchange(host: str, port: int, payload: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(payload)
        return await read_response(reader)
    finally:
        writer.close()


async def _drive(host: str, port: int, key: str, customers: list[tuple], rate: float, seconds: float,
                 sample_rss: Callable[[], list[float]], tag: str, connections: int) -> dict:
    loop = asyncio.get_running_loop()
    slots = asyncio.Semaphore(connections)
    rng = random.Random(7)
    status: Counter = Counter()
    decisions: dict[str, str] = {}  # request_id -> decision_id, acknowledged
    open_decisions: list[tuple[str, str]] = []  # (decision_id, offer id) without an outcome yet
    outcomes: dict[str, str] = {}  # decision_id -> kind, acknowledged
    events: set[str] = set()
    failures: Counter = Counter()
    rss: list[tuple[float, list[float]]] = []

    async def one(i: int) -> None:
        kind = MIX[i % len(MIX)]
        if kind == "outcome" and not open_decisions:
            kind = "decision"
        cid, plan, price, period, channel = customers[rng.randrange(len(customers))]
        if kind == "decision":
            rid = f"{tag}-{i}"
            payload = _request("/v1/decisions", key, {
                "request_id": rid, "customer_id": cid, "reason": REASONS[i % len(REASONS)], "plan_id": plan,
                "price": float(price), "billing_period": period, "billing_channel": channel})
        elif kind == "outcome":
            did, offer = open_decisions.pop(rng.randrange(len(open_decisions)))
            choice = "cancelled" if offer == "none" else rng.choice(("accepted", "declined", "shown"))
            payload = _request(f"/v1/decisions/{did}/outcome", key, {"outcome": choice})
        else:
            eid = f"{tag}-nps-{i}"
            payload = _request("/v1/events", key, {"events": [{
                "event_id": eid, "type": "nps", "customer_id": cid, "score": rng.randrange(11),
                "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}]})
        async with slots:
            try:
                code, body = await _exchange(host, port, payload)
            except (ConnectionError, asyncio.IncompleteReadError, OSError) as exc:
                failures[f"{kind}:{type(exc).__name__}"] += 1
                return
        status[f"{kind}:{code}"] += 1
        if code >= 300:
            return
        if kind == "decision":
            d = json.loads(body)
            decisions[rid] = d["decision_id"]
            open_decisions.append((d["decision_id"], d["offer"]["id"]))
        elif kind == "outcome":
            outcomes[did] = choice
        else:
            events.add(eid)

    async def sampler() -> None:
        while True:
            rss.append((loop.time(), sample_rss()))
            await asyncio.sleep(max(1.0, seconds / 40))

    sampling = asyncio.create_task(sampler())
    n, start, tasks = int(rate * seconds), loop.time() + 0.05, []
    for i in range(n):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    sampling.cancel()
    elapsed = loop.time() - start
    return {"offered_rps": rate, "achieved_rps": n / elapsed, "seconds": elapsed, "requests": n,
            "status": dict(status), "connection_failures": dict(failures), "decisions": decisions,
            "outcomes": outcomes, "events": sorted(events), "rss_mb": [(t - start, r) for t, r in rss]}


def drive(host: str, port: int, key: str, customers: list[tuple], rate: float, seconds: float,
          sample_rss: Callable[[], list[float]], tag: str = "soak", connections: int = 64) -> dict:
    """Offer `rate` mixed requests per second for `seconds` (open loop); what was acknowledged."""
    return asyncio.run(_drive(host, port, key, customers, rate, seconds, sample_rss, tag, connections))


def verify(url: str, result: dict) -> dict:
    """Look every acknowledged write up in the store; the verdict with its figures."""
    decisions, outcomes, events = result["decisions"], result["outcomes"], set(result["events"])
    with Store.from_url(url) as store, store.transaction() as conn:
        stored = dict(conn.execute(text("SELECT request_id, decision_id FROM decisions")).all())
        duplicated = conn.execute(text("SELECT count(*) FROM (SELECT request_id FROM decisions GROUP BY "
                                       "request_id HAVING count(*) > 1) AS d")).scalar()
        kinds = {(d, k) for d, k in conn.execute(text("SELECT decision_id, kind FROM outcomes"))}
        stored_events = {e for (e,) in conn.execute(text("SELECT event_id FROM events WHERE type = 'nps'"))}
    server_errors = sum(n for k, n in result["status"].items() if k.split(":")[1].startswith("5"))
    rss = result["rss_mb"]
    fifth = max(1, len(rss) // 5)
    first = statistics.median(statistics.mean(r) for _, r in rss[:fifth]) if rss else 0.0
    last = statistics.median(statistics.mean(r) for _, r in rss[-fifth:]) if rss else 0.0
    verdict = {
        "server_errors": server_errors,
        "decisions_acknowledged": len(decisions),
        "decisions_missing_or_changed": sum(stored.get(r) != d for r, d in decisions.items()),
        "decisions_duplicated": int(duplicated),
        "outcomes_acknowledged": len(outcomes),
        "outcomes_missing": sum((d, k) not in kinds for d, k in outcomes.items()),
        "events_acknowledged": len(events),
        "events_missing": len(events - stored_events),
        "worker_rss_mb_first_fifth": round(first, 1),
        "worker_rss_mb_last_fifth": round(last, 1),
    }
    verdict["memory_flat"] = last <= first * 1.10 + 5.0
    verdict["ok"] = (server_errors == 0 and verdict["decisions_missing_or_changed"] == 0
                     and verdict["decisions_duplicated"] == 0 and verdict["outcomes_missing"] == 0
                     and verdict["events_missing"] == 0 and verdict["memory_flat"])
    return verdict


def main() -> None:
    from bench.run import ROOT, gunicorn, prepare_store, worker_pids, wrk

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / "var" / "data" / "demo")
    ap.add_argument("--models", type=Path, default=ROOT / "models")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--fraction", type=float, default=0.7, help="share of the measured decision maximum")
    ap.add_argument("--rate", type=float, default=None, help="requests per second (skips measuring the maximum)")
    args = ap.parse_args()
    url, customers_file = prepare_store(args.data, args.models)
    customers = [tuple(line.split("\t")) for line in customers_file.read_text().splitlines()]
    _make_admin(url)
    env = {"DATABASE_URL": url, "RETENTION_MODELS_DIR": str(args.models), "RETENTION_LOG_LEVEL": "WARNING",
           "RETENTION_RATE_LIMIT": "100000 per second"}  # one key drives it all; the limiter still runs
    port = 8103
    with gunicorn("service:create_app()", port, env) as proc:
        rate = args.rate
        if rate is None:
            maximum = wrk(f"http://127.0.0.1:{port}/v1/decisions", customers_file, "soak-max", 10, 2, 16)["rps"]
            rate = args.fraction * maximum
            print(f"decision maximum {maximum:.0f}/s: soaking at {rate:.0f}/s ({args.fraction:.0%})", flush=True)

        def sample() -> list[float]:
            out = []
            for pid in worker_pids(proc.pid):
                m = re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())
                out.append(int(m.group(1)) / 1024 if m else 0.0)
            return out

        result = drive("127.0.0.1", port, ADMIN_KEY, customers, rate, args.minutes * 60, sample)
    verdict = verify(url, result)
    summary = {k: v for k, v in result.items() if k not in ("decisions", "outcomes", "events")}
    (ROOT / "var" / "bench" / "soak.json").write_text(json.dumps({**summary, "verdict": verdict}, indent=2) + "\n")
    print(f"offered {rate:.0f}/s for {result['seconds']:.0f} s, achieved {result['achieved_rps']:.0f}/s; "
          f"status counts {result['status']}; connection failures {result['connection_failures']}")
    print("verdict: " + json.dumps(verdict))
    sys.exit(0 if verdict["ok"] else 1)


ADMIN_KEY = "soak-admin-key-0123456789abcdef0123"


def _make_admin(url: str) -> None:
    with Store.from_url(url) as store:
        store.create_client("soak-admin", "admin", key=ADMIN_KEY)


if __name__ == "__main__":
    main()
