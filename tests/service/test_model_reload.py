"""Deploying a model to a running gunicorn (`kill -HUP` to the master): a corrupt, truncated, tampered or
wrong-version artifact is refused, the last good model keeps serving and the service says so; a good one is
served by every new worker."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import requests
from support import decision_body, headers, newer_copy, seed_clients, serve, wait_until

# Not serial: a reload is waited for (up to 60 s), never timed.
pytestmark = pytest.mark.slow


def _corrupt(version: Path) -> None:
    data = bytearray((version / "offer_response.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (version / "offer_response.npz").write_bytes(bytes(data))


def _truncate(version: Path) -> None:
    path = version / "model.joblib"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _tamper(version: Path) -> None:
    """A valid file with other numbers in it: every leaf value of the served forests nudged (whatever learner
    training chose, its boosting parts are stored as m.<path>.forest_leaf_value)."""
    path = version / "offer_response.npz"
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    leaves = [k for k in arrays if k.endswith("forest_leaf_value")] or [k for k in arrays if k.endswith(".coef")]
    assert leaves, sorted(arrays)
    for k in leaves:
        arrays[k] = arrays[k] + 0.5
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path.write_bytes(buffer.getvalue())


def _wrong_feature_version(version: Path) -> None:
    meta = json.loads((version / "metadata.json").read_text())
    meta["feature_version"] = "f1-000000000000"
    (version / "metadata.json").write_text(json.dumps(meta))


def _hup_and_wait(srv) -> None:
    before = set(srv.workers())
    os.kill(srv.proc.pid, signal.SIGHUP)
    def replaced() -> bool:
        now = set(srv.workers())
        return len(now) == 2 and not now & before

    assert wait_until(replaced, 60, every=0.2), "gunicorn did not replace its workers after HUP"


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_bad_model_is_refused_on_reload_and_a_good_one_is_served(backend, migrated_url, models_root, tmp_path):
    seed_clients(migrated_url)
    good = next(p.parent for p in models_root.glob("*/metadata.json"))
    admin = headers("admin")
    with serve(migrated_url, models_root, tmp_path) as srv:
        served = requests.get(f"{srv.base}/v1/model", headers=admin, timeout=10).json()["model_version"]
        assert served == json.loads((good / "metadata.json").read_text())["version"]
        for n, (break_it, says) in enumerate([(_corrupt, "offer_response.npz: sha256"),
                                              (_truncate, "model.joblib: size"),
                                              (_tamper, "offer_response.npz: s"),  # size or sha256, as it happens
                                              (_wrong_feature_version, "feature version")]):
            bad = newer_copy(models_root, good, f"bad-{n}", minutes=10 + n)
            break_it(bad)
            _hup_and_wait(srv)
            model = requests.get(f"{srv.base}/v1/model", headers=admin, timeout=10).json()
            assert model["model_version"] == served, break_it.__name__
            assert says in (model["last_reload_refused"] or "").lower(), (break_it.__name__, model)
            ready = requests.get(f"{srv.base}/readyz", headers=admin, timeout=10).json()
            assert ready["checks"]["model"]["ok"] and "last_reload_refused" in ready["checks"]["model"]
            d = requests.post(f"{srv.base}/v1/decisions", json=decision_body(request_id=f"after-{n}"),
                              headers=headers(), timeout=10).json()
            assert d["model_version"] == served and d["fallback"] is False
            shutil.rmtree(bad)

        newer_copy(models_root, good, "good-2", minutes=30)
        _hup_and_wait(srv)
        model = requests.get(f"{srv.base}/v1/model", headers=admin, timeout=10).json()
        assert model["model_version"] == "good-2" and model["last_reload_refused"] is None
        exposition = requests.get(f"{srv.base}/metrics", timeout=10).text
        loaded = re.findall(r'retention_model_loaded\{[^}]*version="([^"]+)"[^}]*\} ([0-9.]+)', exposition)
        assert ("good-2", "1.0") in loaded and (served, "1.0") not in loaded, loaded
        for i in range(6):  # every new worker serves it
            d = requests.post(f"{srv.base}/v1/decisions", json=decision_body(request_id=f"new-{i}"),
                              headers=headers(), timeout=10).json()
            assert d["model_version"] == "good-2"
        # One log format for everything the service writes, gunicorn's own lines included, after five reloads
        # too (a reload re-runs gunicorn's logging set-up, which used to add its plain "[date] [pid]" lines).
        lines = [x for x in srv.log_path.read_text().splitlines() if x.strip()]
        not_json = [x for x in lines if not _is_json(x)]
        assert not not_json, not_json[:5]
        assert any('"Handling signal: hup"' in x for x in lines)


def _is_json(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def _model_loaded(base: str) -> dict[tuple[str, int], float]:
    """retention_model_loaded by (version, pid), from a scrape."""
    text = requests.get(f"{base}/metrics", timeout=10).text
    samples = {}
    for line in text.splitlines():
        if line.startswith("retention_model_loaded{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
            samples[labels["version"], int(labels["pid"])] = float(line.split()[-1])
    return samples


def _assert_served_by_every_worker(srv, version: str) -> None:
    workers = set(srv.workers())
    assert len(workers) == 2
    # A worker sets its gauge right after its fork (post_fork), which can be a moment after the fork itself.
    wait_until(lambda: {pid for (v, pid), x in _model_loaded(srv.base).items() if v == version and x == 1.0}
               == workers, 20, every=0.2)  # the asserts below say what is missing
    for _ in range(4):  # a new connection each: the scrape reaches either worker, each must see the same
        samples = _model_loaded(srv.base)
        assert {pid for (v, pid), x in samples.items() if v == version and x == 1.0} == workers, samples
        assert not [k for k, x in samples.items() if k[0] == version and x == 0.0], samples
        assert srv.proc.pid not in {pid for _, pid in samples}, f"the master serves nothing: {samples}"
        assert not [k for k, x in samples.items() if k[0] != version and x == 1.0], samples


def test_every_serving_worker_reports_the_model_it_serves_after_start_and_reload(migrated_url, models_root,
                                                                                   tmp_path):
    seed_clients(migrated_url)
    good = next(p.parent for p in models_root.glob("*/metadata.json"))
    with serve(migrated_url, models_root, tmp_path) as srv:
        _assert_served_by_every_worker(srv, json.loads((good / "metadata.json").read_text())["version"])
        newer_copy(models_root, good, "good-3", minutes=30)
        _hup_and_wait(srv)
        _assert_served_by_every_worker(srv, "good-3")
