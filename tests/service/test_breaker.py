"""The store's circuit breaker (service/runtime.py) on its own: it opens after three failures, and while a
process shuts down (its store threads gone) a due probe is not an error in the request."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from service.runtime import Breaker


def test_an_open_breaker_whose_probe_cannot_start_stays_open_and_tries_again_later():
    pool = {"threads": ThreadPoolExecutor(max_workers=1)}  # the store's threads, as the probe finds them
    breaker = Breaker(lambda: pool["threads"].submit(lambda: None), retry_after=0.01)
    for _ in range(3):
        breaker.failed("no answer within 500 ms")
    assert breaker.is_open and not breaker.allow()
    pool["threads"].shutdown()  # what close() does: submitting now raises RuntimeError
    time.sleep(0.02)
    assert breaker.allow() is False and breaker.is_open
    time.sleep(0.02)
    assert breaker.allow() is False, "a probe that could not start is not left pending"
    pool["threads"] = ThreadPoolExecutor(max_workers=1)  # threads again, and a store that answers
    time.sleep(0.02)
    breaker.allow()
    pool["threads"].shutdown(wait=True)
    assert not breaker.is_open and breaker.allow()
