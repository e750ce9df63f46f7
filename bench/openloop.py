"""An open-loop HTTP load generator: requests are *scheduled* at a fixed rate, whether or not earlier answers
have come back, and each latency is measured from the request's scheduled time. A slow server therefore
shows up as queueing in the percentiles instead of silently lowering the offered rate (the "coordinated
omission" that closed-loop tools such as wrk suffer from; wrk2 fixes it the same way, but is not packaged).

Each request opens its own connection to 127.0.0.1 (as a frontend without keep-alive would; the service's
worker would keep it open, the sync worker it replaced closed it after every response); at most `connections` are in flight, and waiting for one counts as latency. Used by
bench/run.py for "latency at half the maximum rate".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """(status, body) of one HTTP/1.1 response with a Content-Length (what the service's worker always sends)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.lower() == "content-length":
            length = int(value)
    return status, await reader.readexactly(length) if length else b""


async def _run(host: str, port: int, make_request: Callable[[int], bytes], rate: float, seconds: float,
               connections: int) -> dict:
    loop = asyncio.get_running_loop()
    slots = asyncio.Semaphore(connections)
    latencies: list[float] = []
    errors = 0

    async def one(i: int, scheduled: float) -> None:
        nonlocal errors
        async with slots:
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(make_request(i))
                status, _ = await read_response(reader)
                if status >= 400:
                    errors += 1
            except (ConnectionError, asyncio.IncompleteReadError):
                errors += 1
            finally:
                writer.close()
        latencies.append(loop.time() - scheduled)

    n = int(rate * seconds)
    start = loop.time() + 0.05
    tasks = []
    for i in range(n):
        scheduled = start + i / rate
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, scheduled)))
    await asyncio.gather(*tasks)
    elapsed = loop.time() - start
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000.0

    return {"offered_rps": rate, "achieved_rps": n / elapsed, "requests": n, "errors": errors,
            "p50_ms": pct(0.50), "p95_ms": pct(0.95), "p99_ms": pct(0.99), "max_ms": latencies[-1] * 1000.0}


def run(host: str, port: int, make_request: Callable[[int], bytes], rate: float, seconds: float = 15.0,
        connections: int = 64) -> dict:
    """Offer `rate` requests per second for `seconds`; latency percentiles in milliseconds."""
    started = time.perf_counter()
    result = asyncio.run(_run(host, port, make_request, rate, seconds, connections))
    result["wall_seconds"] = time.perf_counter() - started
    return result
