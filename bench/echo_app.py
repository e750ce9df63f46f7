"""The benchmark's baseline: a bare Flask endpoint that parses the same JSON body and returns a fixed answer
of the same size, served by the same gunicorn config. Deciding an offer is compared against this.

`/bench/echo-store` does the same and also stores the body in SQLite with the service's settings (WAL,
synchronous=NORMAL, one insert and one commit per request) through the bare sqlite3 module: the floor for
any endpoint that must record what it answered, with no validation, features, model or ORM."""

from __future__ import annotations

import os
import sqlite3
import threading

from flask import Flask, request

STORE = os.environ.get("BENCH_ECHO_STORE", "var/bench/echo-store.db")
_local = threading.local()

ANSWER = {
    "decision_id": "0" * 32, "request_id": "", "customer_id": "",
    "offer": {"id": "pause_1m", "type": "pause", "display_key": "offer.pause.1m", "months": 1, "percent": 0.0,
              "to_plan": None, "to_price": None, "credits": 0},
    "p_stay": 0.5, "expected_incremental_value": 1.0, "reason_codes": ["nps_missing", "reason_temporary"],
    "nps_segment": "none", "close_the_loop_by": None, "model_version": "echo", "policy_version": "echo",
    "catalog_version": "echo", "fallback": False, "recorded": False,
}


def create_app() -> Flask:
    app = Flask(__name__)

    @app.post("/bench/echo")
    def echo():
        body = request.get_json()
        return {**ANSWER, "request_id": body["request_id"], "customer_id": body["customer_id"]}, 201

    @app.post("/bench/echo-store")
    def echo_store():
        body = request.get_json()
        db = _connection()
        db.execute("INSERT OR IGNORE INTO requests (request_id, body) VALUES (?, ?)",
                   (body["request_id"], request.get_data(as_text=True)))
        db.commit()
        return {**ANSWER, "request_id": body["request_id"], "customer_id": body["customer_id"]}, 201

    return app


def _connection() -> sqlite3.Connection:
    db = getattr(_local, "db", None)
    if db is None or _local.pid != os.getpid():  # one connection per worker process, opened after the fork
        db = sqlite3.connect(STORE, timeout=5)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE IF NOT EXISTS requests (request_id TEXT PRIMARY KEY, body TEXT NOT NULL)")
        db.commit()
        _local.db, _local.pid = db, os.getpid()
    return db
