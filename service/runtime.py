"""What one service process holds: the offer catalog, the policy, the verified model (or why there is none)
and the store. Built once per process by create_app; with gunicorn's preload the model is loaded once in the
master and shared copy-on-write, while database connections are opened lazily in each worker after the fork.

A PostgreSQL store is reached through GuardedStore: bounded waits and a circuit breaker, so that a store that
stops answering (a partition: no error, just silence) costs a request a fraction of a second at most.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from flask import g, has_request_context

from retention.artifacts import ArtifactError
from retention.contract import REASONS
from retention.decision import CancelRequest
from retention.experiments import load_experiments
from retention.followups import DEFAULT_FOLLOWUPS, FollowupRules, load_followups
from retention.loading import load_served
from retention.offers import Catalog, load_catalog
from retention.policy import ModelScorer, Policy, load_policy
from retention.registry import RegistryError, read_registry
from retention.serving import live_features
from service.monitoring import Monitor, MonitoringSettings
from service.spool import Spool
from store import SchemaMissing, Store, StoreUnavailable, make_engine

log = logging.getLogger("retention.service")


@dataclass
class Runtime:
    catalog: Catalog
    policy: Policy
    database_url: str
    model_error: str | None = None
    model_meta: dict = field(default_factory=dict)
    spool: Spool | None = None
    models_dir: str = ""
    model_ref: str = "latest"
    reload_error: str | None = None  # the last refused reload; the model being served is unchanged
    challenger_error: str | None = None  # why the registry's challenger is not scored in the shadow
    monitor: Monitor = field(default_factory=lambda: Monitor(MonitoringSettings.from_config({})))
    db_timeout: float = 5.0  # RETENTION_DB_TIMEOUT_SECONDS (see GuardedStore)
    store_wait: float = 0.5  # RETENTION_STORE_WAIT_MS, in seconds
    store_retry: float = 1.0  # RETENTION_STORE_RETRY_SECONDS
    followups: FollowupRules = field(default_factory=FollowupRules)  # RETENTION_FOLLOWUPS
    _store: Store | GuardedStore | None = None
    _store_pid: int = -1
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_config(cls, config: dict) -> Runtime:
        # An invalid file raises its ConfigError (every problem, one line each); create_app stops on it.
        monitor = Monitor(MonitoringSettings.from_config(config))
        catalog = load_catalog(config["CATALOG_PATH"])
        policy_config = load_policy(catalog, config["POLICY_PATH"])
        experiments = load_experiments(catalog, config["EXPERIMENTS_PATH"])
        followups = load_followups(config.get("FOLLOWUPS_PATH") or DEFAULT_FOLLOWUPS)
        scorer, meta, error = None, {}, None
        try:
            scorer, meta = _load_scorer(Path(config["MODELS_DIR"]), config["MODEL_VERSION"], catalog)
        except (ArtifactError, KeyError, OSError, ValueError) as exc:
            # Fail open: the service starts and decides by the rules; /readyz reports why.
            error, meta = str(exc), {}
            log.error("model_unavailable", extra={"fields": {"error": error}})
        shadow, shadow_error = _load_challenger(Path(config["MODELS_DIR"]), config["MODEL_VERSION"], catalog)
        return cls(catalog=catalog, policy=Policy(catalog, policy_config, scorer, experiments, shadow),
                   database_url=config["DATABASE_URL"], model_error=error, model_meta=meta,
                   spool=Spool(config["SPOOL_PATH"]) if config.get("SPOOL_PATH") else None,
                   models_dir=config["MODELS_DIR"], model_ref=config["MODEL_VERSION"], monitor=monitor,
                   challenger_error=shadow_error, db_timeout=float(config.get("DB_TIMEOUT_SECONDS", 5)),
                   store_wait=float(config.get("STORE_WAIT_MS", 500)) / 1000.0,
                   store_retry=float(config.get("STORE_RETRY_SECONDS", 1)), followups=followups)

    @property
    def model_version(self) -> str | None:
        return self.policy.scorer.version if self.policy.scorer else None

    @property
    def challenger_version(self) -> str | None:
        return self.policy.shadow.version if self.policy.shadow else None

    def open_store(self) -> Store:
        """A store of its own on the service's database, with the service's time limits and follow-up rules."""
        store = Store(make_engine(self.database_url, call_timeout=self.db_timeout))
        store.followup_rules = self.followups
        return store

    @property
    def store(self) -> Store:
        # One engine (and connection pool) per process: pools must not cross a fork.
        with self._lock:
            if self._store is None or self._store_pid != os.getpid():
                store = self.open_store()
                # An embedded SQLite file cannot be partitioned away, and its writers queue for the lock
                # (busy_timeout) under load, which a short wait would misread as an outage.
                self._store = store if store.engine.dialect.name == "sqlite" else \
                    GuardedStore(store, self.db_timeout, self.store_wait, self.store_retry)
                self._store_pid = os.getpid()
                if self.spool is not None:  # this process replays what waits in the spool
                    self.spool.start_replayer(lambda: self.store)
            return self._store

    def reload_model(self) -> dict:
        """Verify and load the model version the configuration points at (e.g. a new "latest"); swap it in
        only if it passes every check start-up applies. A refused artifact leaves the last good model, or
        the rules if there never was one, in service, and is reported by /readyz and /v1/model."""
        previous = self.model_version
        try:
            scorer, meta = _load_scorer(Path(self.models_dir), self.model_ref, self.catalog)
        except (ArtifactError, KeyError, OSError, ValueError) as exc:
            self.reload_error = str(exc)
            log.error("model_reload_refused", extra={"fields": {"error": self.reload_error, "serving": previous}})
            return {"reloaded": False, "serving": previous, "error": self.reload_error}
        self.policy.scorer, self.model_meta, self.model_error, self.reload_error = scorer, meta, None, None
        self.policy.shadow, self.challenger_error = _load_challenger(Path(self.models_dir), self.model_ref,
                                                                     self.catalog)
        log.info("model_reloaded", extra={"fields": {"from": previous, "to": self.model_version}})
        return {"reloaded": True, "serving": self.model_version, "previous": previous}

    def close(self) -> None:
        self.monitor.close()  # a drift computation in flight reads the store closed below
        self.policy.close()
        if self._store is not None and self._store_pid == os.getpid():
            self._store.close()
            self._store = None


class Breaker:
    """A circuit breaker in front of the store, one per process. Closed, calls go through; after `failures`
    errors in a row, or at once when a call gets no answer within its wait (`timed_out`), it opens, and calls
    fail at once with StoreUnavailable: the service takes its degraded path (decisions without history,
    writes spooled) without waiting for a store that is not answering. While it is open a probe (`probe`,
    started off the request path) runs at most every `retry_after` seconds, and the first that succeeds closes
    it.

    Why a timeout opens it at once: each timed-out call cost its request the whole wait (500 ms), and with
    three needed per process a sequential client at 20/s saw answers up to 2.4 s after they were due in a
    partition drill. The first probe after a timeout runs at once, so a store that was only slow for one
    call closes the circuit again within a round trip."""

    def __init__(self, probe: Callable[[], Future], failures: int = 3, retry_after: float = 1.0) -> None:
        self.failures, self.retry_after = failures, retry_after
        self._probe = probe
        self._lock = threading.Lock()
        self._failed = 0
        self._opened_at: float | None = None
        self._probing = False
        self.error: str | None = None  # why it opened

    @property
    def is_open(self) -> bool:
        return self._opened_at is not None

    def allow(self) -> bool:
        """Whether a call may go to the store now; while open, starts the probe when one is due."""
        with self._lock:
            if self._opened_at is None:
                return True
            if self._probing or time.monotonic() - self._opened_at < self.retry_after:
                return False
            self._probing = True
        try:
            probe = self._probe()
        except RuntimeError:  # the store's threads are shut down (the process is closing): no probe, still open
            with self._lock:
                self._probing = False
            return False
        probe.add_done_callback(self._probed)
        return False

    def _probed(self, future: Future) -> None:
        error = future.exception()
        with self._lock:
            self._probing = False
            if error is None:
                self._failed, self._opened_at = 0, None
                log.warning("store_circuit_closed", extra={"fields": {"was": self.error}})
            else:
                self._opened_at = time.monotonic()

    def succeeded(self) -> None:
        with self._lock:
            self._failed = 0

    def failed(self, why: str, timed_out: bool = False) -> None:
        with self._lock:
            self._failed += 1
            if self._opened_at is None and (timed_out or self._failed >= self.failures):
                # After a timeout the first probe is due at once (see the class docstring).
                self._opened_at = time.monotonic() - (self.retry_after if timed_out else 0.0)
                self.error = why
                log.warning("store_circuit_opened", extra={"fields": {"error": why}})


class GuardedStore:
    """The store as the service uses it (PostgreSQL): every call runs on a small thread pool and is waited
    for at most a bounded time, behind the Breaker. A call the store does not answer in time raises
    StoreUnavailable in the request (it may still complete on its thread: every write is idempotent, and a
    write that was spooled meanwhile is recognised when it is replayed), and the watchdog of store.db ends
    its connection after DB_TIMEOUT_SECONDS.

    The calls a customer's answer waits for (QUICK) get `quick_wait` seconds (RETENTION_STORE_WAIT_MS); the
    others (events, history and admin reads, drift) `wait` (RETENTION_DB_TIMEOUT_SECONDS)."""

    QUICK = frozenset({"decision_context", "record_decision", "record_outcome", "authenticate",
                       "first_use_of_request_id", "latest_snapshot", "ping"})

    def __init__(self, store: Store, wait: float, quick_wait: float, retry_after: float) -> None:
        self.store, self.wait, self.quick_wait = store, wait, quick_wait
        # Threads left waiting on a silent store are ended by the watchdog; a few more than that can pile
        # up before the breaker opens.
        self._threads = ThreadPoolExecutor(max_workers=8, thread_name_prefix="store")
        self.breaker = Breaker(lambda: self._threads.submit(store.ping), retry_after=retry_after)

    def __getattr__(self, name: str):
        attr = getattr(self.store, name)
        if name.startswith("_") or not callable(attr):
            return attr
        return functools.partial(self._call, attr, self.quick_wait if name in self.QUICK else self.wait)

    def _call(self, fn: Callable, wait: float, *args, **kwargs):
        if not self.breaker.allow():
            raise StoreUnavailable(f"the store is not answering ({self.breaker.error}); the service does not "
                                   f"wait for it and checks again every {self.breaker.retry_after:g} s")
        # One wait per request: once the store has not answered in this request, the request's other calls
        # (key, webhook-id, context, record) take the outage path at once instead of each waiting in turn
        # before the breaker opens.
        if has_request_context() and g.get("store_silent"):
            raise StoreUnavailable(f"the store did not answer earlier in this request ({g.store_silent})")
        try:
            return self._wait_for(fn, wait, *args, **kwargs)
        except StoreUnavailable as exc:
            if has_request_context():
                g.store_silent = str(exc).splitlines()[0]
            raise

    def _wait_for(self, fn: Callable, wait: float, *args, **kwargs):
        try:
            future = self._threads.submit(fn, *args, **kwargs)
        except RuntimeError:  # closed (the process is shutting down, or the runtime reopened its store)
            raise StoreUnavailable("the store connection of this process is closed") from None
        try:
            result = future.result(timeout=wait)
        except FuturesTimeout:
            future.cancel()  # not started yet (every thread busy): never run it
            why = f"no answer within {wait * 1000:.0f} ms"
            self.breaker.failed(why, timed_out=True)
            raise StoreUnavailable(f"the store gave {why}") from None
        except SchemaMissing:
            self.breaker.succeeded()  # it answered, quickly: an operator's job, not a reason to stop asking
            raise
        except StoreUnavailable as exc:
            self.breaker.failed(str(exc).splitlines()[0])
            raise
        except BaseException:
            self.breaker.succeeded()  # the store answered (NotFound, Conflict, ...)
            raise
        self.breaker.succeeded()
        return result

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
        self.store.close()


def _load_scorer(models_dir: Path, ref: str, catalog: Catalog) -> tuple[ModelScorer, dict]:
    """The verified, served form of a version (retention.loading), warmed up."""
    scorer, meta = load_served(models_dir, ref, catalog)
    if scorer.offers is not None:
        _warm_up(scorer, catalog)
    return scorer, meta


def _load_challenger(models_dir: Path, ref: str, catalog: Catalog) -> tuple[ModelScorer | None, str | None]:
    """The registry's challenger, scored in the shadow of a service that serves the champion; (None, why)
    where there is none or it cannot be served (the champion serves regardless)."""
    if ref != "champion":
        return None, None
    try:
        if read_registry(models_dir).version_of("challenger") is None:
            return None, None
        scorer, _ = _load_scorer(models_dir, "challenger", catalog)
    except (ArtifactError, RegistryError, KeyError, OSError, ValueError) as exc:
        log.error("challenger_unavailable", extra={"fields": {"error": str(exc)}})
        return None, str(exc)
    if scorer.offers is None:
        return None, f"challenger {scorer.version} has no offer-response model: nothing to score in the shadow"
    return scorer, None


def _synthetic_requests(scorer: ModelScorer):
    """(reason, features) of a new monthly web customer, for every reason."""
    for reason in REASONS:
        request = CancelRequest("warm-up", reason, "monthly", "web", 10.0)
        yield reason, live_features(scorer.spec, request, None, datetime.now(UTC))[0]


def _warm_up(scorer: ModelScorer, catalog: Catalog) -> None:
    """Score a synthetic request per reason at start-up: a model that cannot score is refused here rather
    than on the first customer, and the first real decision does not pay for lazy imports and caches (about
    0.2 s, more than the scoring time budget). With preload this runs once in the master."""
    for reason, features in _synthetic_requests(scorer):
        try:
            p = scorer.p_stay(features, reason, list(catalog.offers))
        except Exception as exc:  # noqa: BLE001 - any failure means this artifact cannot serve
            raise ArtifactError(f"model {scorer.version} failed to score a test request: {exc}") from exc
        if not all(0.0 <= x <= 1.0 for x in p):
            raise ArtifactError(f"model {scorer.version} returned probabilities outside [0, 1]: {p}")


def default_database_url() -> str:
    return os.environ.get("DATABASE_URL") or f"sqlite:///{Path('var') / 'retention.db'}"
