"""The `make run` demo's round trip without a server (issue 14): features loaded from a simulated data set,
decisions recorded through the API for customers still subscribed at the snapshot, customers who had cancelled
before it and one the data set never knew, then `retention export` with no extra flag. Every decision of a
known customer is exported exactly once, with the data set's own customer values; an unknown customer whose
request leaves out a contract field makes the export refuse, naming the count and the reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from support import decision_body, post

from cli import main
from training.validation import validate_dataset

# The least a billing frontend sends (the README's curl example without its currency): no sign-up time.
REQUEST_FIELDS = ("plan_id", "price", "billing_period", "billing_channel")
CONTRACT = ("signup_at", "plan_id", "billing_period", "price", "currency", "billing_channel", "country")


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _demo_customers(sim_dir, window_end: datetime) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Three customers subscribed at the window end and three whose subscription had ended before it."""
    customers = pd.read_parquet(sim_dir / "customers.parquet").sort_values("customer_id")
    ends = pd.read_parquet(sim_dir / "cancel_requests.parquet").groupby("customer_id")["ended_at"].min()
    ended = customers["customer_id"].map(ends) <= pd.Timestamp(window_end.replace(tzinfo=None))
    return customers[~ended].head(3), customers[ended].head(3)


@pytest.mark.slow
def test_the_demo_exports_every_decision_of_a_known_customer_exactly_once(client, sim_dir, models_root,
                                                                          migrated_url, tmp_path):
    (model,) = models_root.iterdir()
    loaded = _run("load-features", "--data", sim_dir, "--models", models_root, "--model", model.name,
                  "--database-url", migrated_url)
    assert loaded.exit_code == 0, loaded.output
    window_end = datetime.fromisoformat(json.loads((sim_dir / "dataset.json").read_text())["window_end"])
    active, cancelled = _demo_customers(sim_dir, window_end)
    decisions = {}  # request id -> decision id

    def decide(request_id: str, customer_id: str, **fields) -> dict:
        r = post(client, "/v1/decisions", decision_body(request_id, customer_id, reason="too_expensive", **fields))
        assert r.status_code == 201, r.get_json()
        decisions[request_id] = r.get_json()["decision_id"]
        return r.get_json()

    for i, c in enumerate(pd.concat([active, cancelled]).to_dict("records")):
        answer = decide(f"demo-{i}", c["customer_id"], **{f: c[f] for f in REQUEST_FIELDS})
        # The service knows the subscribed ones from the snapshot; the others it scores as unknown.
        assert ("customer_unknown" in answer["reason_codes"]) == (c["customer_id"] in set(cancelled["customer_id"]))
    first = active.iloc[0]
    decide("demo-again", first["customer_id"], **{f: first[f] for f in REQUEST_FIELDS})  # presses cancel again
    newcomer = {"plan_id": "lite_monthly", "price": 7.95, "billing_period": "monthly", "billing_channel": "web",
                "currency": "EUR", "country": "DE", "signup_at": "2026-10-30T08:00:00Z"}
    decide("demo-newcomer", "newcomer", **newcomer)  # unknown to the data set, but its request says everything
    for request_id, outcome in (("demo-0", "accepted"), ("demo-3", "declined"), ("demo-3", "cancelled")):
        assert post(client, f"/v1/decisions/{decisions[request_id]}/outcome", {"outcome": outcome}).status_code == 201

    out = tmp_path / "export"
    result = _run("export", "--out", out, "--database-url", migrated_url)
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.output)
    assert manifest["skipped"] == {}
    cancels = pq.read_table(out / "cancel_requests.parquet").to_pylist()
    exported = [r["request_id"] for r in cancels]
    assert sorted(exported) == sorted(decisions) and len(exported) == len(set(exported)) == 8
    by_id = {r["request_id"]: r for r in cancels}
    assert by_id["demo-0"]["accepted"] is True and by_id["demo-3"]["ended_at"] is not None
    # The customers' values are the data set's own, currency and sign-up time included: nothing invented.
    rows = {r["customer_id"]: r for r in pq.read_table(out / "customers.parquet").to_pylist()}
    for c in pd.concat([active, cancelled]).to_dict("records"):
        assert {k: rows[c["customer_id"]][k] for k in CONTRACT} == {
            k: c[k].to_pydatetime() if k == "signup_at" else c[k] for k in CONTRACT}
    assert rows["newcomer"]["currency"] == "EUR"
    assert rows["newcomer"]["signup_at"] == datetime(2026, 10, 30, 8, tzinfo=UTC).replace(tzinfo=None)
    assert validate_dataset(out).errors == []

    # A customer known nowhere, whose request gives no signup time or currency: the export refuses.
    decide("demo-ghost", "ghost", plan_id="plus_monthly", price=14.95, billing_period="monthly",
           billing_channel="web")
    refused = _run("export", "--out", tmp_path / "again", "--database-url", migrated_url)
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    assert "error: 2 row(s) of the store cannot be exported" in refused.output
    assert "error:   customers: 1 signup_at missing" in refused.output
    assert "error:   cancel_requests: 1 customer not exported" in refused.output
    assert not (tmp_path / "again").exists()
