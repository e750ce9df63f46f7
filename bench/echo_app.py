"""The benchmark's baseline: a bare Flask endpoint that parses the same JSON body and returns a fixed answer
of the same size, served by the same gunicorn config. Deciding an offer is compared against this."""

from __future__ import annotations

from flask import Flask, request

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

    return app
