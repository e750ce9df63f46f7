"""What the operator watches besides requests: how old the feature snapshot is (/readyz names it stale past
RETENTION_MAX_FEATURE_AGE_HOURS) and how far recent decisions drift from the served model's training data
(retention.drift), both as gauges on /metrics, with the open and overdue follow-up tasks.

Drift reads at most RETENTION_DRIFT_MAX_DECISIONS decisions of the last RETENTION_DRIFT_WINDOW_DAYS and is
recomputed at most every RETENTION_DRIFT_REFRESH_SECONDS per process, in a background thread that a scrape
starts: a scrape never waits for it and shows the last figures (each worker's latest values are merged by
prometheus-client's "livemostrecent" mode). Neither staleness nor drift changes any decision.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from retention.configfiles import ConfigError
from retention.drift import drift_report
from service import metrics
from store import StoreError

if TYPE_CHECKING:
    from service.runtime import Runtime

log = logging.getLogger("retention.service")

_OFF = ("off", "none", "false", "0")


@dataclass(frozen=True)
class MonitoringSettings:
    max_feature_age_hours: float | None  # None: staleness is not checked
    drift_window_days: float
    drift_max_decisions: int
    drift_refresh_seconds: float

    @classmethod
    def from_config(cls, config: dict) -> MonitoringSettings:
        """From the app config (service.settings_from_env); every bad value is one line of a ConfigError, so
        the service refuses to start rather than watch with a setting nobody meant."""
        problems: list[str] = []

        def number(key: str, env: str, default, low: float, off: bool = False, whole: bool = False):
            raw = config.get(key, default)
            if off and (raw is None or str(raw).strip().lower() in _OFF):
                return None
            try:
                value = float(raw) if not isinstance(raw, bool) else math.nan
            except (TypeError, ValueError):
                value = math.nan
            if not math.isfinite(value) or value < low or (whole and value != int(value)):
                kind = "a whole number" if whole else "a number"
                problems.append(f"{env}: must be {kind} >= {low:g}{' or off' if off else ''}, got {raw!r}")
                return None
            return int(value) if whole else value

        settings = cls(
            max_feature_age_hours=number("MAX_FEATURE_AGE_HOURS", "RETENTION_MAX_FEATURE_AGE_HOURS", 48, 0, off=True),
            drift_window_days=number("DRIFT_WINDOW_DAYS", "RETENTION_DRIFT_WINDOW_DAYS", 7, 0.001),
            drift_max_decisions=number("DRIFT_MAX_DECISIONS", "RETENTION_DRIFT_MAX_DECISIONS", 5000, 1, whole=True),
            drift_refresh_seconds=number("DRIFT_REFRESH_SECONDS", "RETENTION_DRIFT_REFRESH_SECONDS", 300, 0),
        )
        if problems:
            raise ConfigError(*problems)
        return settings


def snapshot_staleness(snapshot: dict, max_age_hours: float | None, now: datetime) -> tuple[float, str | None]:
    """(age in hours, why it is stale or None) of a feature snapshot as of `snapshot["as_of"]`."""
    age_h = (now - snapshot["as_of"]).total_seconds() / 3600.0
    if max_age_hours is None or age_h <= max_age_hours:
        return age_h, None
    return age_h, (f"feature snapshot is {age_h:.1f} h old, older than the maximum of {max_age_hours:g} h "
                   "(RETENTION_MAX_FEATURE_AGE_HOURS): usage and payment features are out of date; decisions "
                   "go on, reload with `retention load-features`")


class Monitor:
    """One per process: the snapshot's time as last read, and the drift figures as last computed."""

    def __init__(self, settings: MonitoringSettings):
        self.settings = settings
        self._snapshot_as_of: datetime | None = None
        self._drift_at = -math.inf  # monotonic time of the last drift computation started
        self._drift_thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False
        self.last_drift_seconds: float | None = None  # how long the last computation took

    def on_scrape(self, rt: Runtime) -> None:
        """Update the gauges /metrics is about to show; never raises, never waits for the drift."""
        try:
            snapshot = rt.store.latest_snapshot()
            self._snapshot_as_of = snapshot["as_of"] if snapshot else None
        except StoreError:
            pass  # the store is down: the age keeps growing from the time read last
        metrics.set_snapshot_age(None if self._snapshot_as_of is None
                                 else (datetime.now(UTC) - self._snapshot_as_of).total_seconds())
        with contextlib.suppress(StoreError):  # the store is down: the last counts stay
            metrics.set_followups(rt.store.followup_counts())  # open and overdue follow-up tasks now
        self.refresh_drift(rt, wait=False)

    def refresh_drift(self, rt: Runtime, wait: bool = True, force: bool = False) -> bool:
        """Start a drift computation if the last one is older than the refresh interval (or `force`); with
        `wait`, return once it is done. Returns whether one was started."""
        with self._lock:
            running = self._drift_thread is not None and self._drift_thread.is_alive()
            due = force or time.monotonic() - self._drift_at >= self.settings.drift_refresh_seconds
            if running or not due or self._closed:
                thread, started = self._drift_thread, False
            else:
                self._drift_at = time.monotonic()
                thread = threading.Thread(target=self._compute_drift, args=(rt,), name="drift", daemon=True)
                self._drift_thread, started = thread, True
                thread.start()
        if wait and thread is not None:
            thread.join()
        return started

    def close(self, timeout: float = 30.0) -> None:
        """Wait for a running drift computation (before the store it reads is closed) and start no more."""
        with self._lock:
            thread, self._closed = self._drift_thread, True
        if thread is not None and thread.is_alive():
            thread.join(timeout)

    def _compute_drift(self, rt: Runtime) -> None:
        started = time.perf_counter()
        try:
            since = datetime.now(UTC) - timedelta(days=self.settings.drift_window_days)
            decisions = rt.store.recent_decisions(since, self.settings.drift_max_decisions)
            report = drift_report(rt.model_meta, decisions)
        except StoreError as exc:
            log.warning("drift_not_computed", extra={"fields": {"error": type(exc).__name__}})
            return
        except Exception:  # noqa: BLE001 - monitoring must never take a worker down
            log.exception("drift_failed")
            return
        metrics.set_drift(report)
        self.last_drift_seconds = time.perf_counter() - started
        log.info("drift_computed", extra={"fields": {
            "decisions": report.decisions, "max_psi": report.max_psi, "feature": report.max_feature,
            "offer_mix_psi": report.offer_mix.psi if report.offer_mix else None,
            "ms": round(self.last_drift_seconds * 1000, 1)}})
