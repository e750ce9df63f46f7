"""What one service process holds: the offer catalog, the policy, the verified model (or why there is none)
and the store. Built once per process by create_app; with gunicorn's preload the model is loaded once in the
master and shared copy-on-write, while database connections are opened lazily in each worker after the fork.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from retention.artifacts import ArtifactError
from retention.contract import REASONS
from retention.decision import CancelRequest
from retention.experiments import load_experiments
from retention.loading import load_served
from retention.offers import Catalog, load_catalog
from retention.policy import ModelScorer, Policy, load_policy
from retention.registry import RegistryError, read_registry
from retention.serving import live_features
from service.monitoring import Monitor, MonitoringSettings
from service.spool import Spool
from store import Store

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
    _store: Store | None = None
    _store_pid: int = -1
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_config(cls, config: dict) -> Runtime:
        # An invalid file raises its ConfigError (every problem, one line each); create_app stops on it.
        monitor = Monitor(MonitoringSettings.from_config(config))
        catalog = load_catalog(config["CATALOG_PATH"])
        policy_config = load_policy(catalog, config["POLICY_PATH"])
        experiments = load_experiments(catalog, config["EXPERIMENTS_PATH"])
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
                   challenger_error=shadow_error)

    @property
    def model_version(self) -> str | None:
        return self.policy.scorer.version if self.policy.scorer else None

    @property
    def challenger_version(self) -> str | None:
        return self.policy.shadow.version if self.policy.shadow else None

    @property
    def store(self) -> Store:
        # One engine (and connection pool) per process: pools must not cross a fork.
        with self._lock:
            if self._store is None or self._store_pid != os.getpid():
                self._store = Store.from_url(self.database_url)
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
            self._store.engine.dispose()
            self._store = None


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
