"""Shared fixtures: one small simulated data set and one model trained on it, built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.simulator.generate import SimConfig, simulate
from training.train import TrainConfig, train

SMALL_CUSTOMERS = 10_000


@pytest.fixture(scope="session")
def sim_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sim") / "data"
    simulate(SimConfig(customers=SMALL_CUSTOMERS, seed=11, chunk_size=5000), out)
    return out


@pytest.fixture(scope="session")
def trained(sim_dir, tmp_path_factory) -> Path:
    """A model version folder trained on the small simulated set."""
    models = tmp_path_factory.mktemp("models")
    return train(TrainConfig(data_dir=sim_dir, out_root=models))
