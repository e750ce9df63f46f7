"""The store's circuit breaker (service/runtime.py) on its own: it opens after three errors or one call without an answer, and while a
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


def test_one_call_without_an_answer_opens_it_and_the_first_probe_runs_at_once():
    """A partition drill: with three timeouts (500 ms each) needed per process, a client at 20/s got answers
    up to 2.4 s after they were due. Errors that fail fast still need three in a row."""
    probes = []
    threads = ThreadPoolExecutor(max_workers=1)
    breaker = Breaker(lambda: probes.append(1) or threads.submit(lambda: None), retry_after=60.0)
    breaker.failed("connection refused")
    breaker.failed("connection refused")
    assert not breaker.is_open and breaker.allow()
    breaker.succeeded()
    breaker.failed("no answer within 500 ms", timed_out=True)
    assert breaker.is_open
    assert breaker.allow() is False and probes == [1], "the probe starts with the next call, not 60 s later"
    threads.shutdown(wait=True)
    assert not breaker.is_open and breaker.allow(), "a store that answers the probe closes the circuit"
