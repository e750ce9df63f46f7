"""Hostile input: what a careless or malicious client can send, and that the service answers all of it in its
one error body, never with a 500.

1. Schemathesis generates requests for every operation of the OpenAPI document the service serves (valid and
   invalid bodies, parameters, methods, missing auth) and runs every one of its checks: no 5xx, every answer
   documented (status code, content type, headers, body), schema-invalid requests refused and schema-valid
   ones accepted (so the document states every rule the service enforces). Examples per operation:
   RETENTION_FUZZ_EXAMPLES (default 120: over 1,000 cases; `make fuzz-long` ran 12,269 with every check, 0 failures);
   `test_every_documented_operation_was_fuzzed_without_a_server_error` reports how many cases ran (and runs
   them itself when it runs without them). This part runs on SQLite.
2. Targeted attacks, each its own test: oversize bodies, pathological JSON, wrong content types, hostile
   Unicode, NUL characters and SQL-injection-like text (the last three on SQLite and PostgreSQL).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from urllib.parse import quote

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.generation.modes import GenerationMode
from sqlalchemy import inspect
from support import KEYS, decision_body, headers, make_app, post, seed_clients

from service import DECISION_BODY_LIMIT
from store import upgrade

# One worker runs the module, in order (tests/conftest.py), so the summary test counts the schemathesis tests
# in its own process.
pytestmark = pytest.mark.xdist_group("hostile-input")
ROOT = Path(__file__).resolve().parents[2]

EXAMPLES = int(os.environ.get("RETENTION_FUZZ_EXAMPLES", "120"))
MIN_CASES = 1000  # what the summary test asks of a run with the default examples
ADMIN = {"Authorization": f"Bearer {KEYS['admin']}"}  # the admin role may call every endpoint
JSON = {**ADMIN, "Content-Type": "application/json"}
REASONS = {404: "Not Found", 405: "Method Not Allowed", 413: "Request Entity Too Large",
           415: "Unsupported Media Type", 422: "Unprocessable Entity"}

# The document is read at import, when pytest collects one test per operation from it, from an app like the
# one under test (the model is irrelevant to the document, and the session's model is not trained yet);
# `test_the_fuzzed_document_is_the_one_the_service_serves` proves the two documents are the same.
_doc_app = make_app("sqlite://", Path(tempfile.gettempdir()) / "no-models-here")
schema = schemathesis.openapi.from_wsgi("/openapi.json", _doc_app)
# Named, not left to the defaults: every check schemathesis 4 has, as `--checks all` runs them.
schemathesis.checks.load_all_checks()
ALL_CHECKS = schemathesis.checks.CHECKS.get_all()
WINDOWS = ("last_7d", "last_30d", "last_90d")


@schema.hook
def map_case(context, case):
    """The one rule the document can only state in words (JSON Schema cannot compare two fields): a usage
    summary's windows nest, last_7d <= last_30d <= last_90d. Schema-valid cases get their windows sorted, so
    positive_data_acceptance holds the service to everything else; negative cases are left alone."""
    if case.meta is not None and case.meta.generation.mode is GenerationMode.POSITIVE \
            and isinstance(case.body, dict) and isinstance(case.body.get("usage"), list):
        for usage in case.body["usage"]:
            if isinstance(usage, dict) and all(isinstance(usage.get(w), (int, float)) for w in WINDOWS):
                for window, value in zip(WINDOWS, sorted(usage[w] for w in WINDOWS), strict=True):
                    usage[window] = value
    return case


DOCUMENT = _doc_app.test_client().get("/openapi.json").get_json()
_doc_app.extensions["retention"].close()

FUZZED: Counter = Counter()  # cases, and answers by status class ("2xx", "4xx", "5xx")
OPERATIONS: set[str] = set()  # the operations schemathesis generated cases for
TOTALS = "RETENTION_FUZZ_TOTALS"  # where a child pytest run by the summary test writes FUZZED and OPERATIONS


@pytest.fixture(scope="module")
def fuzz_app(trained, tmp_path_factory):
    """One app for the module, on its own migrated SQLite store, serving the session's model."""
    root = tmp_path_factory.mktemp("hostile")
    url = f"sqlite:///{root / 'store.db'}"
    upgrade(url)
    seed_clients(url)
    shutil.copytree(trained, root / "models" / trained.name)
    app = make_app(url, root / "models")
    yield app
    app.extensions["retention"].close()


@pytest.fixture(scope="module", autouse=True)
def totals_for_the_summary():
    """In a child pytest started by the summary test: hand it what the schemathesis tests counted."""
    yield
    if os.environ.get(TOTALS):
        Path(os.environ[TOTALS]).write_text(json.dumps({"fuzzed": FUZZED, "operations": sorted(OPERATIONS)}))


@pytest.fixture(scope="module")
def sqlite_client(fuzz_app):
    """For what the store never sees (limits, parsing, media types): the module's SQLite app."""
    return fuzz_app.test_client()


def error_body(r, status: int) -> dict:
    """The response is the service's one error body with `status`; returns it for the caller's checks."""
    body = r.get_json()
    assert r.status_code == status, (r.status_code, r.get_data(as_text=True)[:500])
    assert r.mimetype == "application/json"
    assert {"code", "status", "message"} <= set(body) <= {"code", "status", "message", "errors"}, body
    assert body["code"] == status and body["status"] == REASONS[status] and body["message"], body
    return body


def invalid_json(reason: str) -> dict:
    return {"code": 422, "status": "Unprocessable Entity", "message": "the request body is not valid JSON",
            "errors": {"json": {"_schema": [f"Invalid JSON body: {reason}"]}}}


def field_errors(errors: dict) -> dict:
    return {"code": 422, "status": "Unprocessable Entity",
            "message": "invalid input: `errors` names each field and what is wrong with it", "errors": errors}


def event(event_id: str, customer_id: str = "cust-1", type: str = "nps", **fields) -> dict:
    defaults = {"nps": {"score": 3}, "payment": {"amount": 9.99}}.get(type, {})
    return {"event_id": event_id, "type": type, "customer_id": customer_id,
            "occurred_at": "2026-11-01T10:00:00Z", **defaults, **fields}


# ------------------------------------------------------------------------------------ 1. schemathesis


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_every_generated_request_is_answered_as_documented_and_never_with_a_5xx(case, fuzz_app):
    response = case.call(app=fuzz_app, headers=ADMIN)
    FUZZED["cases"] += 1
    FUZZED[f"{response.status_code // 100}xx"] += 1
    OPERATIONS.add(case.operation.label)
    # Every check schemathesis has (the CLI's `--checks all`): not_a_server_error, status code / content type /
    # headers / body conformance, negative_data_rejection, positive_data_acceptance (a 404 or 409 is allowed:
    # an outcome for an unknown decision, a reused request_id), unsupported methods, ignored auth, ...
    case.validate_response(response, checks=ALL_CHECKS, headers=ADMIN,
                           transport_kwargs={"app": fuzz_app, "headers": ADMIN})


def test_the_fuzzed_document_is_the_one_the_service_serves(sqlite_client):
    assert sqlite_client.get("/openapi.json").get_json() == DOCUMENT


@pytest.mark.slow
def test_every_documented_operation_was_fuzzed_without_a_server_error(capsys, child_pytest_env, tmp_path):
    """Prints the totals, also when output is captured. In a run of the module the schemathesis tests above
    ran first, in this process (module order), and counted here. Run without them (alone, with -k, or in an
    xdist worker that did not get all of them) it runs them all in a child pytest and reads its counts."""
    documented = {op.ok().label for op in schema.get_all_operations()}
    fuzzed, operations = FUZZED, OPERATIONS
    if operations != documented:
        totals = tmp_path / "totals.json"
        child = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(Path(__file__)),
             "-k", "test_every_generated_request_is_answered_as_documented_and_never_with_a_5xx"],
            cwd=ROOT, env={**child_pytest_env, TOTALS: str(totals)}, capture_output=True, text=True, timeout=900)
        assert child.returncode == 0 and totals.exists(), child.stdout[-5000:] + child.stderr[-5000:]
        result = json.loads(totals.read_text())
        fuzzed, operations = Counter(result["fuzzed"]), set(result["operations"])
    summary = (f"schemathesis: {fuzzed['cases']:,} cases over {len(operations)} operations "
               f"(RETENTION_FUZZ_EXAMPLES={EXAMPLES}): {fuzzed['2xx']:,} 2xx, {fuzzed['4xx']:,} 4xx, "
               f"{fuzzed['5xx']} 5xx")
    with capsys.disabled():
        print(f"\n{summary}")
    assert documented == operations, summary
    assert fuzzed["5xx"] == 0, summary
    if EXAMPLES >= 120:
        assert fuzzed["cases"] >= MIN_CASES, summary


def test_an_unsupported_method_is_a_405_that_lists_the_allowed_ones(sqlite_client):
    """Found by schemathesis: the error handler dropped werkzeug's Allow header (RFC 9110 requires it)."""
    for method, path, allowed in (("PUT", "/v1/decisions", {"POST", "OPTIONS"}),
                                  ("TRACE", "/v1/customers/c/decisions", {"GET", "HEAD", "OPTIONS"}),
                                  ("PATCH", "/v1/customers/c/data", {"GET", "HEAD", "DELETE", "OPTIONS"})):
        r = sqlite_client.open(path, method=method, headers=ADMIN)
        assert error_body(r, 405)["message"] == "The method is not allowed for the requested URL."
        assert set(r.headers["Allow"].split(", ")) == allowed, path


# ----------------------------------------------------------------------------------- 2. oversize bodies


def test_a_decision_body_over_32_kib_is_a_413_and_one_of_exactly_32_kib_is_accepted(sqlite_client):
    body = json.dumps(decision_body(request_id="size-ok", reason_text="x" * 2000)).encode()
    padded = body + b" " * (DECISION_BODY_LIMIT - len(body))  # JSON may end in any amount of space
    assert len(padded) == DECISION_BODY_LIMIT
    assert post(sqlite_client, "/v1/decisions", padded).status_code == 201
    r = post(sqlite_client, "/v1/decisions", padded + b" ")
    assert error_body(r, 413) == {"code": 413, "status": "Request Entity Too Large",
                                  "message": "The data value transmitted exceeds the capacity limit."}
    big = decision_body(request_id="big", reason_text="x" * 40_000)
    error_body(post(sqlite_client, "/v1/decisions", big), 413)


def test_an_event_batch_over_1_mib_is_a_413_and_one_of_exactly_1_mib_is_accepted(sqlite_client, fuzz_app):
    limit = fuzz_app.config["MAX_CONTENT_LENGTH"]
    assert limit == 1024 * 1024
    body = json.dumps({"events": [event(f"size-{i}", comment="y" * 1500) for i in range(500)]}).encode()
    padded = body + b" " * (limit - len(body))
    assert post(sqlite_client, "/v1/events", padded, role="events").get_json() == {
        "created": 500, "duplicates": 0, "conflicts": []}
    r = post(sqlite_client, "/v1/events", padded + b" ", role="events")
    assert error_body(r, 413)["message"] == "The data value transmitted exceeds the capacity limit."


# ------------------------------------------------------------------------------------ 3. hostile JSON


def test_deeply_nested_json_is_a_422_not_a_recursion_error(sqlite_client):
    for opener, closer in (("[", "]"), ('{"a":', "}")):
        deep = opener * 100_000 + closer * 100_000  # 200-600 KB: under the events limit, over decisions'
        r = post(sqlite_client, "/v1/events", deep, role="events")
        assert error_body(r, 422) == invalid_json("nested too deeply")
        error_body(post(sqlite_client, "/v1/decisions", deep), 413)
        shallower = opener * 5_000 + closer * 5_000  # under 32 KiB, still too deep for the parser
        r = post(sqlite_client, "/v1/decisions", shallower)
        assert error_body(r, 422) == invalid_json("nested too deeply")


SPECIAL = ["Special numeric values (nan or infinity) are not permitted."]  # marshmallow's words for 1e400


@pytest.mark.parametrize("number, expected", [
    ("1e400", field_errors({"json": {"price": SPECIAL}})),
    ("-1e400", field_errors({"json": {"price": SPECIAL}})),
    ("9" * 4000, field_errors({"json": {"price": ["Number too large."]}})),
    ("9" * 5000, invalid_json("an integer of 5000 digits is out of range")),
    ("1e308", field_errors({"json": {"price": [
        "Must be greater than or equal to 0 and less than or equal to 1000000.0."]}})),
], ids=["1e400", "-1e400", "4000-digit-int", "5000-digit-int", "1e308"])
def test_huge_numbers_are_a_422(sqlite_client, number, expected):
    text = json.dumps(decision_body(request_id="huge", price=12345.5)).replace("12345.5", number)
    assert error_body(post(sqlite_client, "/v1/decisions", text), 422) == expected


def test_the_largest_price_still_gets_a_finite_answer_in_strict_json(sqlite_client):
    """Before the price had a maximum, 8.4e307 overflowed the value arithmetic: a 201 carrying NaN."""
    # No plan named: a plan would bound the price far lower (tests/service/test_plans_api.py).
    r = post(sqlite_client, "/v1/decisions", decision_body(request_id="max-price", price=1_000_000.0, plan_id=None))
    assert r.status_code == 201, r.get_json()
    d = json.loads(r.get_data(as_text=True), parse_constant=lambda name: pytest.fail(f"{name} in the answer"))
    assert d["expected_incremental_value"] is not None and d["p_stay"] is not None


def test_huge_numbers_in_events_are_a_422_naming_the_event_and_field(sqlite_client):
    text = json.dumps({"events": [event("huge-1", type="payment", amount=12.5)]}).replace("12.5", "1e400")
    assert error_body(post(sqlite_client, "/v1/events", text, role="events"), 422) == field_errors(
        {"json": {"events": {"0": {"amount": SPECIAL}}}})
    text = json.dumps({"events": [event("huge-2", score=7)]}).replace('"score": 7', '"score": ' + "1" * 5000)
    assert error_body(post(sqlite_client, "/v1/events", text, role="events"), 422) == invalid_json(
        "an integer of 5000 digits is out of range")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_literals_are_not_json(sqlite_client, literal):
    """Python's json module reads them; JSON has no such numbers."""
    text = json.dumps(decision_body(request_id="nan")).replace("14.95", literal)
    assert error_body(post(sqlite_client, "/v1/decisions", text), 422) == invalid_json(
        f"{literal} is not a JSON number")
    text = json.dumps({"events": [event("nan-1", type="payment", amount=1.5)]}).replace("1.5", literal)
    assert error_body(post(sqlite_client, "/v1/events", text, role="events"), 422) == invalid_json(
        f"{literal} is not a JSON number")


def test_duplicate_keys_are_refused_rather_than_silently_taking_the_last(sqlite_client, fuzz_app):
    text = json.dumps(decision_body(request_id="dup", customer_id="dup-customer"))[:-1] + ', "price": 0.5}'
    r = post(sqlite_client, "/v1/decisions", text)
    assert error_body(r, 422) == invalid_json("duplicate key 'price'")
    nested = '{"events": [{"event_id": "dup-1", "type": "nps", "customer_id": "dup-customer", "score": 3, ' \
             '"score": 9, "occurred_at": "2026-11-01T10:00:00Z"}]}'
    assert error_body(post(sqlite_client, "/v1/events", nested, role="events"), 422) == invalid_json(
        "duplicate key 'score'")
    stored = fuzz_app.extensions["retention"].store.customer_data("dup-customer")
    assert stored["decisions"] == [] and stored["events"] == []


@pytest.mark.parametrize("body", ["[]", '[{"request_id": "r"}]', '"a string"', "42", "null", "true"])
def test_a_body_that_is_not_an_object_is_a_422(sqlite_client, body):
    for path in ("/v1/decisions", "/v1/events", "/v1/decisions/any/outcome"):
        assert error_body(post(sqlite_client, path, body, role="admin"), 422) == field_errors(
            {"json": {"_schema": ["must be a JSON object"]}}), path


def test_a_list_item_that_is_not_an_object_is_a_422_naming_it(sqlite_client):
    r = post(sqlite_client, "/v1/events", {"events": [event("obj-1"), "not an event"]}, role="events")
    expected = {"json": {"events": {"1": {"_schema": ["must be a JSON object"]}}}}
    assert error_body(r, 422) == field_errors(expected)


# ----------------------------------------------------------------------------------- 4. content types


@pytest.mark.parametrize("content_type", [
    "text/plain", "application/x-www-form-urlencoded", "application/xml", "multipart/form-data; boundary=x",
    None,
])
def test_a_body_sent_as_another_media_type_is_a_415(sqlite_client, fuzz_app, content_type):
    """Even when the body is JSON: the client must say so, or it is not read at all (a 422 saying every field
    is missing would send its author looking in the wrong place)."""
    hdrs = {**ADMIN, **({"Content-Type": content_type} if content_type else {})}
    expected = {"code": 415, "status": "Unsupported Media Type",
                "message": "the request body must be JSON, sent with Content-Type: application/json"}
    for path, body in (("/v1/decisions", decision_body(request_id="ct", customer_id="ct-customer")),
                       ("/v1/events", {"events": [event("ct", customer_id="ct-customer")]}),
                       ("/v1/decisions/any/outcome", {"outcome": "shown"})):
        r = sqlite_client.post(path, data=json.dumps(body), headers=hdrs)
        assert error_body(r, 415) == expected, path
    store = fuzz_app.extensions["retention"].store
    assert store.customer_data("ct-customer") == {"customer_id": "ct-customer", "decisions": [], "events": [],
                                                  "features": None, "customer": None, "followups": []}


def test_json_with_a_charset_or_a_json_suffix_is_json(sqlite_client):
    for i, content_type in enumerate(("application/json; charset=utf-8", "application/merge-patch+json")):
        r = sqlite_client.post("/v1/decisions", data=json.dumps(decision_body(request_id=f"cs-{i}")),
                               headers={**ADMIN, "Content-Type": content_type})
        assert r.status_code == 201, r.get_json()


def test_an_empty_json_body_is_a_422_naming_the_required_fields(sqlite_client):
    r = post(sqlite_client, "/v1/events", b"", role="events")
    assert error_body(r, 422)["errors"] == {"json": {"events": ["Missing data for required field."]}}
    r = post(sqlite_client, "/v1/decisions", b"  \n ")
    assert error_body(r, 422)["message"] == "the request body is not valid JSON"


# ------------------------------------------------------------------------- 5. Unicode (both databases)

EMOJI = "😀👩🏽‍💻🇯🇵"  # astral plane, a ZWJ sequence with a skin tone, a flag
RTL = "שלום עולם مرحبا"  # Hebrew and Arabic
COMBINING = "e\u0301 a\u0308 Z\u0351\u0333\u034e"  # decomposed accents, "zalgo" marks: never normalised


def test_emoji_rtl_and_combining_text_is_stored_and_returned_unchanged(client):
    texts = {"emoji": EMOJI, "rtl": RTL, "combining": COMBINING,
             "mixed": f"{EMOJI} {RTL} {COMBINING} \u200f!"}  # \u200f: the right-to-left mark
    for name, text in texts.items():
        customer_id, request_id = f"{name}-{text}", f"{text}-{name}"
        r = post(client, "/v1/decisions", decision_body(request_id=request_id, customer_id=customer_id,
                                                         reason_text=text))
        assert r.status_code == 201, r.get_json()
        d = r.get_json()
        assert (d["customer_id"], d["request_id"]) == (customer_id, request_id)
        path = quote(customer_id, safe="")
        history = client.get(f"/v1/customers/{path}/decisions", headers=headers()).get_json()
        assert history["customer_id"] == customer_id
        assert [(h["decision_id"], h["request_id"]) for h in history["decisions"]] == [
            (d["decision_id"], request_id)]
        exported = client.get(f"/v1/customers/{path}/data", headers=ADMIN).get_json()
        assert [x["reason_text"] for x in exported["decisions"]] == [text]
        again = post(client, "/v1/decisions", decision_body(request_id=request_id, customer_id=customer_id,
                                                             reason_text=text))
        assert again.status_code == 200 and again.get_json()["decision_id"] == d["decision_id"]
    r = post(client, "/v1/decisions", decision_body(request_id="👍" * 128, customer_id="👍" * 128))
    assert r.status_code == 201, r.get_json()  # 128 characters (512 UTF-8 bytes) is within the id limit
    r = post(client, "/v1/decisions", decision_body(request_id="👍" * 129))
    assert error_body(r, 422)["errors"] == {"json": {"request_id": ["Length must be between 1 and 128."]}}


def test_an_escaped_surrogate_pair_is_one_character_but_a_lone_surrogate_is_a_422(client):
    body = json.dumps(decision_body(request_id="pair", customer_id="😀"))  # ASCII: "\\ud83d\\ude00"
    assert "\\ud83d\\ude00" in body
    r = post(client, "/v1/decisions", body)
    assert r.status_code == 201 and r.get_json()["customer_id"] == "😀"
    message = ["must be valid Unicode text (no lone surrogate such as \\ud800)"]
    for field in ("request_id", "customer_id", "reason_text", "plan_id"):
        for lone in ("\ud800", "x\udfff", "\ude00\ud83d"):  # high, low, and a pair in the wrong order
            r = post(client, "/v1/decisions", {**decision_body(request_id="lone"), field: lone})
            assert error_body(r, 422) == field_errors({"json": {field: message}}), (field, lone)
    r = post(client, "/v1/events", {"events": [event("lone-1", comment="\ud800")]}, role="events")
    assert error_body(r, 422) == field_errors({"json": {"events": {"0": {"comment": message}}}})
    assert client.get("/v1/customers/cust-1/decisions", headers=headers()).get_json()["decisions"] == []


# --------------------------------------------------------------- 6. NUL characters (both databases)

NUL = ["must not contain NUL (\\u0000) characters"]
NPS = {"score": 9, "responded_at": "2026-11-01T10:00:00Z"}
USAGE = {"metric": "minutes", "last_7d": 1.0, "last_30d": 2.0, "last_90d": 3.0}


@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_a_nul_character_in_any_string_field_is_a_422_naming_the_field(client, app, where):
    """PostgreSQL text cannot store NUL: refused as input on every database, never a 500 from the driver."""
    def nul(text: str = "abc") -> str:
        return {"start": "\x00" + text, "middle": text[:1] + "\x00" + text[1:], "end": text + "\x00"}[where]

    decision_fields = {
        "request_id": nul(), "customer_id": nul(), "reason_text": nul(), "plan_id": nul(),
        "reason": nul("other"), "billing_period": nul("monthly"), "billing_channel": nul("web"),
        "currency": nul("EUR"), "country": nul("DE"), "signup_at": nul("2025-01-01T00:00:00Z"),
    }
    for field, value in decision_fields.items():
        r = post(client, "/v1/decisions", {**decision_body(request_id="nul"), field: value})
        assert error_body(r, 422) == field_errors({"json": {field: NUL}}), field
    r = post(client, "/v1/decisions", decision_body(request_id="nul", nps=[{**NPS, "responded_at": nul()}]))
    assert error_body(r, 422) == field_errors({"json": {"nps": {"0": {"responded_at": NUL}}}})
    r = post(client, "/v1/decisions", decision_body(request_id="nul", usage=[{**USAGE, "metric": nul()}]))
    assert error_body(r, 422) == field_errors({"json": {"usage": {"0": {"metric": NUL}}}})

    event_fields = [
        event(nul()), event("e", customer_id=nul()), event("e", type=nul("nps")), event("e", comment=nul()),
        event("e", occurred_at=nul("2026-11-01T10:00:00Z")),
        event("e", type="still_active", decision_id=nul(), day=30, active=True),
        event("e", type="usage", day=nul("2026-11-01"), metric="minutes", value=1.0),
        event("e", type="usage", day="2026-11-01", metric=nul(), value=1.0),
    ]
    for e in event_fields:
        field = next(k for k, v in e.items() if isinstance(v, str) and "\x00" in v)
        r = post(client, "/v1/events", {"events": [event("ok-1"), e]}, role="events")
        assert error_body(r, 422) == field_errors({"json": {"events": {"1": {field: NUL}}}}), field

    d = post(client, "/v1/decisions", decision_body(request_id="nul-ok")).get_json()
    r = post(client, f"/v1/decisions/{d['decision_id']}/outcome", {"outcome": nul("accepted")})
    assert error_body(r, 422) == field_errors({"json": {"outcome": NUL}})
    r = client.get("/v1/experiments/any/results", query_string={"as_of": nul("2026-11-01T00:00:00Z")},
                   headers=ADMIN)
    assert error_body(r, 422) == field_errors({"query": {"as_of": NUL}})

    # ... and in the URL: an id with NUL names nothing, on PostgreSQL too
    for method, path, param in (("GET", f"/v1/customers/{quote(nul())}/decisions", "customer_id"),
                                ("GET", f"/v1/customers/{quote(nul())}/data", "customer_id"),
                                ("DELETE", f"/v1/customers/{quote(nul())}/data", "customer_id"),
                                ("POST", f"/v1/decisions/{quote(nul())}/outcome", "decision_id")):
        r = client.open(path, method=method, headers=JSON,
                        data=json.dumps({"outcome": "shown"}) if method == "POST" else None)
        assert error_body(r, 422) == field_errors({"path": {param: NUL}}), path

    # nothing of it was stored, and the store still works
    store = app.extensions["retention"].store
    assert [x["request_id"] for x in store.customer_decisions("cust-1")] == ["nul-ok"]
    assert store.events_for_customer("cust-1") == []


# ------------------------------------------------------------- 7. SQL-injection-like text (both databases)

INJECTIONS = [
    "x'); DROP TABLE decisions;--", "' OR '1'='1", "\" OR \"1\"=\"1", "%", "_", "a%b_c", "\\", "\\'; --",
    "'; DELETE FROM events; SELECT '", "1; UPDATE api_clients SET role='admin'", "$$ || pg_sleep(1) || $$",
    "Robert'); DROP TABLE outcomes;--", "[a-z]*", "' UNION SELECT key_hash FROM api_clients --",
]


def test_sql_like_text_is_stored_verbatim_and_the_tables_stay_intact(client, app):
    decisions = {}
    for i, text in enumerate(INJECTIONS):
        customer_id, request_id = text, f"{text}#{i}"
        r = post(client, "/v1/decisions", decision_body(request_id=request_id, customer_id=customer_id,
                                                         reason_text=text, plan_id=text))
        assert r.status_code == 422 and set(r.get_json()["errors"]["json"]) == {"plan_id"}  # not a catalog plan
        r = post(client, "/v1/decisions", decision_body(request_id=request_id, customer_id=customer_id,
                                                         reason_text=text))
        assert r.status_code == 201, (text, r.get_json())
        decisions[text] = r.get_json()["decision_id"]
        for status in (201, 200):  # recorded, then found again by the same decision_id
            r = post(client, f"/v1/decisions/{decisions[text]}/outcome", {"outcome": "shown"}, role="events")
            assert r.status_code == status and r.get_json()["decision_id"] == decisions[text]
        r = post(client, "/v1/events", {"events": [
            event(f"nps-{text}", customer_id=customer_id, comment=text),
            event(f"active-{text}", customer_id=customer_id, type="still_active", decision_id=decisions[text],
                  day=30, active=True),
        ]}, role="events")
        assert r.get_json() == {"created": 2, "duplicates": 0, "conflicts": []}, text

    for text, decision_id in decisions.items():  # each id finds its own rows: no wildcard, no quote broke out
        path = quote(text, safe="")
        history = client.get(f"/v1/customers/{path}/decisions", headers=headers()).get_json()
        assert history["customer_id"] == text
        assert [(h["decision_id"], h["customer_id"]) for h in history["decisions"]] == [(decision_id, text)]
        assert [o["kind"] for o in history["decisions"][0]["outcomes"]] == ["shown"]
        exported = client.get(f"/v1/customers/{path}/data", headers=ADMIN).get_json()
        assert [x["reason_text"] for x in exported["decisions"]] == [text]
        assert sorted((e["event_id"], e["customer_id"], e["decision_id"], e["payload"].get("comment"))
                      for e in exported["events"]) == [(f"active-{text}", text, decision_id, None),
                                                       (f"nps-{text}", text, None, text)]
        r = post(client, "/v1/events", {"events": [event(f"nps-{text}", customer_id=text, comment=text)]},
                 role="events")
        assert r.get_json() == {"created": 0, "duplicates": 1, "conflicts": []}  # stored as sent

    # an id that is itself an injection finds no decision, and touches none
    for text in INJECTIONS:
        path = quote(text, safe="")
        r = post(client, f"/v1/decisions/{path}/outcome", {"outcome": "accepted"}, role="events")
        assert error_body(r, 404)["message"] == f"no decision {text!r}"

    store = app.extensions["retention"].store
    assert {"decisions", "outcomes", "events", "api_clients"} <= set(inspect(store.engine).get_table_names())
    assert client.get("/v1/offers", headers=headers()).status_code == 200  # api_clients: keys still work
    r = post(client, "/v1/decisions", decision_body(request_id="after-injections"))
    assert r.status_code == 201
    assert sum(len(store.customer_decisions(t)) for t in INJECTIONS) == len(INJECTIONS)


def test_a_customer_id_with_a_slash_can_be_read_back_and_erased(sqlite_client):
    """customer_id may hold any 1-128 characters, '/' included: the customer routes use the `path` converter
    (werkzeug decodes %2F before routing), so their history, export and erasure stay reachable."""
    d = post(sqlite_client, "/v1/decisions", decision_body(request_id="slash", customer_id="tenant/42"))
    assert d.status_code == 201
    path = quote("tenant/42", safe="")
    history = sqlite_client.get(f"/v1/customers/{path}/decisions", headers=headers())
    assert history.status_code == 200, history.get_json()
    assert [h["decision_id"] for h in history.get_json()["decisions"]] == [d.get_json()["decision_id"]]
    assert sqlite_client.delete(f"/v1/customers/{path}/data", headers=ADMIN).get_json()["decisions"] == 1
