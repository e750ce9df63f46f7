"""The Flask adapter around the decision policy: `create_app()` builds one service process.

Reads like a table of contents: configuration, runtime (catalog, policy, model, store), API and schemas,
error handlers, request hooks (request id, size limits, metrics, JSON logs).
"""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from pathlib import Path

import flask_swagger_ui
from flask import Blueprint, Flask, g, request
from flask_smorest import Api, abort
from werkzeug.routing import PathConverter, UnicodeConverter

from retention.configfiles import ConfigError
from service import auth, logs, metrics
from service.ratelimit import register_rate_limits
from service.runtime import Runtime, default_database_url
from service.schemas import STORABLE_TEXT, document_plans, event_property
from store import StoreError

ROOT = Path(__file__).resolve().parent.parent
DECISION_BODY_LIMIT = 32 * 1024  # a cancel request with inline context is a few KB
SWAGGER_UI_ASSETS = "/docs/assets"  # where register_api serves Swagger UI's JavaScript and CSS
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
log = logging.getLogger("retention.service")


def settings_from_env() -> dict:
    """Every setting, from the environment (documented in the README's configuration table)."""
    env = os.environ.get
    return {
        "DATABASE_URL": env("DATABASE_URL") or default_database_url(),
        "MODELS_DIR": env("RETENTION_MODELS_DIR", str(ROOT / "models")),
        # The registry's champion (retention.registry): `retention train` writes candidates, never served
        # until `retention models promote`; RETENTION_MODEL may name a version, a folder or "latest" instead.
        "MODEL_VERSION": env("RETENTION_MODEL", "champion"),
        "CATALOG_PATH": env("RETENTION_CATALOG", str(ROOT / "config" / "offers.toml")),
        "POLICY_PATH": env("RETENTION_POLICY", str(ROOT / "config" / "policy.toml")),
        "EXPERIMENTS_PATH": env("RETENTION_EXPERIMENTS", str(ROOT / "config" / "experiments.toml")),
        "FOLLOWUPS_PATH": env("RETENTION_FOLLOWUPS", str(ROOT / "config" / "followups.toml")),
        "SIGNATURE_WINDOW_SECONDS": int(env("RETENTION_SIGNATURE_WINDOW_SECONDS", "300")),
        "MAX_CONTENT_LENGTH": int(env("RETENTION_MAX_BODY_BYTES", str(1024 * 1024))),
        "LOG_LEVEL": env("RETENTION_LOG_LEVEL", "INFO"),
        # Per API client and worker process, and failed authentications per source address and worker,
        # counted in RATE_LIMIT_STORAGE (service/ratelimit.py says why these values); "" turns one off.
        "RATE_LIMIT": env("RETENTION_RATE_LIMIT", "1000 per second"),
        "AUTH_FAILURE_LIMIT": env("RETENTION_AUTH_FAILURE_LIMIT", "30 per minute"),
        # Reverse proxies in front of the service whose X-Forwarded-For is trusted for the client address.
        "TRUSTED_PROXIES": int(env("RETENTION_TRUSTED_PROXIES", "0")),
        # Decisions and outcomes the store cannot take wait here, on local disk (service/spool.py).
        "SPOOL_PATH": env("RETENTION_SPOOL", str(ROOT / "var" / "spool" / "spool.db")),
        # A PostgreSQL store that stops answering (service/runtime.py GuardedStore, store/db.py): a decision,
        # an outcome or a key look-up waits at most STORE_WAIT_MS for it, anything else DB_TIMEOUT_SECONDS,
        # which is also the longest any connection stays checked out (then it is dropped) and the server's
        # statement_timeout. 500 ms: the frontend gives up after about a second, and a decision is that wait
        # (once per request: after one unanswered call the request's others do not wait) plus at most the
        # 150 ms scoring budget; shorter, a store that is merely slow (a cold connection on
        # a busy machine) would be taken for a silent one, and a retry would get a new, spooled decision.
        # After one call without an answer (or 3 errors in a row) nothing waits: the store is probed at once, then
        # every STORE_RETRY_SECONDS, and the first probe that answers closes the circuit (service/runtime.py Breaker).
        "STORE_WAIT_MS": float(env("RETENTION_STORE_WAIT_MS", "500")),
        "DB_TIMEOUT_SECONDS": float(env("RETENTION_DB_TIMEOUT_SECONDS", "5")),
        "STORE_RETRY_SECONDS": float(env("RETENTION_STORE_RETRY_SECONDS", "1")),
        "RATE_LIMIT_STORAGE": env("RETENTION_RATE_LIMIT_STORAGE", "memory://"),
        # Monitoring (service/monitoring.py): /readyz names a snapshot older than this ("off": never), and
        # /metrics shows the drift of at most DRIFT_MAX_DECISIONS decisions of the last DRIFT_WINDOW_DAYS.
        "MAX_FEATURE_AGE_HOURS": env("RETENTION_MAX_FEATURE_AGE_HOURS", "48"),
        "DRIFT_WINDOW_DAYS": env("RETENTION_DRIFT_WINDOW_DAYS", "7"),
        "DRIFT_MAX_DECISIONS": env("RETENTION_DRIFT_MAX_DECISIONS", "5000"),
        "DRIFT_REFRESH_SECONDS": env("RETENTION_DRIFT_REFRESH_SECONDS", "300"),
    }


class RetentionApi(Api):
    """flask-smorest's Api with one error body for every 4xx/5xx: code, status, message and (for 422) the
    field-level `errors`."""

    def handle_http_exception(self, error):
        payload, code, headers = super().handle_http_exception(error)
        if code == 422 and "message" not in payload:
            payload["message"] = "invalid input: `errors` names each field and what is wrong with it"
        payload.setdefault("message", error.description)
        # flask-smorest drops the headers werkzeug gives an error: keep them (a 405 must list the methods
        # in Allow, RFC 9110); headers passed to abort() win.
        headers = {**{k: v for k, v in error.get_headers() if k.lower() != "content-type"}, **(headers or {})}
        return payload, code, headers


def create_app(test_config: dict | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(settings_from_env())
    app.config.update(
        API_TITLE="retention-offers decision API",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="/docs",
        # Swagger UI's own files, served by this process from the installed flask-swagger-ui package
        # (register_api): /docs works where the browser reaches no CDN, and shows the version pinned here.
        OPENAPI_SWAGGER_UI_URL=SWAGGER_UI_ASSETS + "/",
    )
    app.json.sort_keys = False  # keep the schemas' field order: decision_id and offer first
    if test_config:
        app.config.update(test_config)
    logs.configure(app.config["LOG_LEVEL"])
    register_runtime(app)
    register_api(app)
    register_hooks(app)
    register_rate_limits(app)  # after the hooks: a refused request still gets its request id and log line
    return app


# The exit status of a process stopped by an invalid config file: gunicorn's own "worker failed to boot",
# so that without preload a worker that cannot start halts the master instead of being respawned forever.
CONFIG_INVALID_EXIT = 3


def register_runtime(app: Flask) -> None:
    try:
        runtime = Runtime.from_config(app.config)
    except ConfigError as exc:
        # An operator's mistake, not a bug: every problem of the file in one JSON line, and a stop without a
        # traceback (SystemExit is not printed) that gunicorn passes on as its exit status.
        log.critical("config_invalid", extra={"fields": {"errors": list(exc.lines)}})
        raise SystemExit(CONFIG_INVALID_EXIT) from None
    app.extensions["retention"] = runtime
    # Every worker forked from here knows every key, even if the store is down when it starts. A store of its
    # own, closed at once: the runtime's store (its pool, its spool replayer thread) is made per worker.
    try:
        with runtime.open_store() as store:
            auth.prime(store.active_clients())
    except StoreError as exc:
        log.warning("auth_cache_not_primed", extra={"fields": {"error": type(exc).__name__}})
    log.info("service_started", extra={"fields": {"model_version": runtime.model_version,
                                                   "policy_version": runtime.policy.config.version,
                                                   "catalog_version": runtime.catalog.version}})


def _text_parameter(converter) -> dict:
    """A path parameter as the document states it: any characters but NUL and lone surrogates (a NUL is a
    422, register_hooks), at least one (the `string` converter's minLength, if it has one)."""
    return {"type": "string", "minLength": max(1, int(getattr(converter, "minlength", 1) or 1)),
            "pattern": STORABLE_TEXT}


def register_api(app: Flask) -> None:
    from service import webhooks_api  # noqa: F401 - its views join the v1 blueprint
    from service.api import blp as v1
    from service.followups_api import blp as followups
    from service.health import blp as health
    from service.health import document as document_health

    api = RetentionApi(app)
    api.spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer",
                                                   "description": "An API key from `retention keys create`. A client "
                                                   "created with `--sign` also sends the Standard Webhooks "
                                                   "headers webhook-id, webhook-timestamp and webhook-signature "
                                                   "over METHOD, path, query and body (README, Security)."})
    api.ma_plugin.converter.add_attribute_function(event_property)  # events: oneOf, discriminated by type
    for converter in (UnicodeConverter, PathConverter):
        api.register_converter(converter, _text_parameter)
    app.register_blueprint(Blueprint("swagger_ui", flask_swagger_ui.__name__, static_folder="dist",
                                     static_url_path=SWAGGER_UI_ASSETS))
    api.register_blueprint(v1)
    api.register_blueprint(followups)
    plans = app.extensions["retention"].catalog.plans
    if plans is not None:
        document_plans(api.spec.components.schemas["DecisionRequest"], plans)
    app.register_blueprint(health)
    document_health(api, app)


def register_hooks(app: Flask) -> None:
    runtime = app.extensions["retention"]

    @app.before_request
    def start():
        g.started = time.perf_counter()
        metrics.mark_served(runtime.model_version)  # in the process that serves, not a preloading master
        sent = request.headers.get("X-Request-ID", "")
        g.request_id = sent if _REQUEST_ID.match(sent) else uuid.uuid4().hex
        # An id in the URL with a NUL character names nothing (PostgreSQL text cannot hold NUL, and request
        # bodies with one are refused): a 422 naming the parameter, not a database error (500) later.
        nul = sorted(k for k, v in (request.view_args or {}).items() if isinstance(v, str) and "\x00" in v)
        if nul:
            abort(422, errors={"path": {k: ["must not contain NUL (\\u0000) characters"] for k in nul}})
        if request.endpoint == "v1.create_decision":
            request.max_content_length = DECISION_BODY_LIMIT

    @app.after_request
    def finish(response):
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        seconds = time.perf_counter() - g.get("started", time.perf_counter())
        metrics.observe_request(endpoint, request.method, response.status_code, seconds)
        response.headers["X-Request-ID"] = g.get("request_id", "")
        fields = {"method": request.method, "endpoint": endpoint, "status": response.status_code,
                  "ms": round(seconds * 1000, 2), "client": g.get("client")}
        if "decision_id" in g:
            fields["decision_id"] = g.decision_id
        log.info("request", extra={"fields": fields})
        return response
