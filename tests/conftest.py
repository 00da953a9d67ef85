"""Shared fixtures: a small phantom cohort, the real shared data (skipped when absent), a
config builder for tiny workflow runs. Nothing here reaches the network."""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
SHARED = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory) -> Path:
    """A small phantom cohort (generated once per test session)."""
    from mammodp.phantom import PhantomSpec, generate

    out = tmp_path_factory.mktemp("phantom") / "cohort"
    generate(
        out,
        PhantomSpec(
            seed=5, patients_train=14, patients_test=6, patients_external=4, height=768, width=480
        ),
    )
    return out


def demo_config() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def tiny_config(**overrides) -> dict:
    """The demo config shrunk to a DAG that runs end to end in about a minute."""
    c = copy.deepcopy(demo_config())
    c["seeds"] = [1]
    c["experiments"]["table"] = str(REPO / "config" / "experiments.tsv")
    c["experiments"]["select"] = [
        "real_frozen_nodp",
        "real_frozen_dp_eps6",
        "syn_full_nodp",
        "synpre_real_frozen_dp_eps6",
    ]
    c["data"]["phantom"].update(
        patients_train=24, patients_test=8, patients_external=4, height=768, width=480
    )
    c["synthesis"]["n_per_class"] = 12
    c["synthesis"]["mcgan"].update(epochs=1, width=4, checkpoint_every=1)
    c["classifier"]["model"]["overrides"].update(embed_dim=16, num_heads=[1, 2])
    c["classifier"]["train"].update(epochs=3, batch_size=16)
    for key, value in overrides.items():
        node = c
        *parents, last = key.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
    return c


@pytest.fixture
def write_config(tmp_path):
    def _write(config: dict, name: str = "config.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    return _write
