"""gunicorn settings for the decision service. Every value says why it has that value.

Run: `gunicorn -c gunicorn.conf.py "service:create_app()"` (what the Procfile and `make run` do).
"""

import os
import tempfile

# Listen on loopback by default; a platform sets PORT (Heroku-style) and BIND=0.0.0.0 to expose it.
bind = f"{os.environ.get('BIND', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"

# One worker per core, each answering one request at a time: each decision is a few milliseconds of CPU
# (feature assembly and a small gradient-boosting prediction) with short database calls, so threads or async
# application code would add contention, not throughput. The machines we size for have 2 cores.
workers = int(os.environ.get("WEB_CONCURRENCY", str(os.cpu_count() or 2)))
# Not gunicorn's sync worker, which reads each request itself: a client sending its headers one byte every
# 0.5 s held a whole worker, and two such connections (no key needed) stalled the service (issue 15).
# BufferedSyncWorker (service/worker.py, gunicorn's tornado worker underneath) reads every connection
# asynchronously and only hands the app a complete request: headers within RETENTION_HEADER_TIMEOUT (5 s),
# body within RETENTION_BODY_TIMEOUT (5 s), header section at most RETENTION_MAX_HEADER_BYTES (16 KiB), body
# at most the app's MAX_CONTENT_LENGTH (RETENTION_MAX_BODY_BYTES); then it runs the app synchronously.
worker_class = "service.worker.BufferedSyncWorker"

# Load the app (and so the verified model) once in the master, then fork: workers share the model's memory
# copy-on-write and a bad artifact is reported once at start-up. Safe because database engines and the
# scoring thread pool are created lazily in each worker, after the fork (service/runtime.py, retention/policy.py).
preload_app = True

# The billing frontend gives up after about a second and lets the customer cancel; a request still running
# after 10 s means a stuck worker, which gunicorn then replaces.
timeout = 10
graceful_timeout = 20
# Keep-alive is off by default: every answer closes its connection, as the sync worker did. With it on, a
# client that sends on a kept-alive connection just as its worker closes it (a model promotion or rollback
# restarts the workers, SIGHUP) loses that request: tests/service/test_promote_under_load.py lost 1 of a few
# hundred that way. A new connection per cancel request costs a TCP handshake (well under a millisecond on a
# LAN). RETENTION_KEEPALIVE=5 turns it on: then a kept-alive connection is closed once idle for
# RETENTION_HEADER_TIMEOUT (5 s; tornado uses one deadline for the next request's headers and for idleness),
# and an idle connection costs a file descriptor, not a worker; the client must retry a request on a
# connection closed under it (decisions and outcomes are idempotent by their ids).
keepalive = int(os.environ.get("RETENTION_KEEPALIVE", "0"))

# Recycle workers now and then so slow leaks (in any library) cannot accumulate; jitter avoids restarting
# all workers at once.
max_requests = 50_000
max_requests_jitter = 5_000

# Access logs would duplicate our own JSON request log (service/logs.py), which carries the request id.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("RETENTION_LOG_LEVEL", "info").lower()
# One format for everything the service writes: gunicorn's own lines as the same JSON lines
# (service.logs.JsonFormatter). Through logconfig_dict because gunicorn re-runs its logging set-up on every
# reload (SIGHUP), which would otherwise add back its plain "[date] [pid] [INFO]" handler.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "service.logs.JsonFormatter"}},
    "handlers": {"json_stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
    "root": {"level": "WARNING", "handlers": ["json_stderr"]},
    "loggers": {
        "gunicorn.error": {"level": loglevel.upper(), "handlers": ["json_stderr"], "propagate": False,
                           "qualname": "gunicorn.error"},
        "gunicorn.access": {"level": "INFO", "handlers": ["json_stderr"], "propagate": False,
                            "qualname": "gunicorn.access"},
    },
}

# `retention models promote` and `rollback` signal the master (SIGHUP, see on_reload) through this pidfile;
# unset (tests, several servers on one machine), there is none. `make run` sets var/gunicorn.pid.
pidfile = os.environ.get("RETENTION_PIDFILE") or None

# gunicorn's runtime control socket defaults to one path per user ($HOME/.gunicorn/gunicorn.ctl), which two
# servers on one machine (tests, a second instance) would fight over. Platforms restart processes instead.
control_socket_disable = True

# Prometheus multiprocess mode: every worker writes its samples to this folder and /metrics adds them up.
# It must exist and be empty before the workers start, so the master creates a fresh one.
if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="retention-prom-")

# One OpenMP/BLAS thread per worker: workers already use every core, and scikit-learn's default of one
# thread per core in each worker would oversubscribe the machine and slow every prediction.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def child_exit(server, worker):
    # Drop a dead worker's live gauges (the model version it served) from the aggregated metrics.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def post_fork(server, worker):
    # retention_model_loaded is per process (multiprocess_mode="liveall", service/metrics.py): each worker
    # marks the version it serves as soon as it exists, so a scrape sees every worker, not only those that
    # have answered a request. The master never marks it: it serves nothing. After a reload (SIGHUP) the
    # new workers fork with the new model and mark it here; the old ones leave through child_exit.
    from service import metrics

    runtime = server.app.wsgi().extensions.get("retention")
    if runtime is not None:  # another app on this config (bench/echo_app.py, the benchmark's baseline)
        metrics.mark_served(runtime.model_version)


def on_reload(server):
    # `retention models promote` / `rollback` (or `kill -HUP <master>`) deploy the registry's champion: the
    # master verifies it (every checksum, the feature version,
    # the compiled scorer's probe) and, only if it passes, serves it; then gunicorn replaces the workers,
    # which fork with whatever the master now holds. A bad artifact is refused and the last good model stays
    # (GET /readyz and /v1/model say so). `server.app.wsgi()` is the preloaded Flask app.
    app = server.app.wsgi()
    result = app.extensions["retention"].reload_model()
    server.log.info("model reload: %s", result)
