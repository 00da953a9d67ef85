"""Shared fixtures: a small phantom cohort, the real shared data (skipped when absent), a
config builder for tiny workflow runs. Nothing here reaches the network."""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
SHARED = REPO.parent / "shared" / "data"
# Crops per (dataset, split) of the study's published dataset16062024 (its README).
PUBLISHED_COUNTS = {
    ("bcdr", "test"): 1106,
    ("cbis-ddsm", "test"): 402,
    ("cbis-ddsm", "train"): 1104,
    ("cbis-ddsm", "val"): 192,
}


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
    c["audit"].update(shadow_models=6, canaries=4)
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


@pytest.fixture(scope="session")
def tiny_manifest(tmp_path_factory):
    """Crops with a learnable signal (a bright disc = benign, a bright cross = malignant)."""
    d = tmp_path_factory.mktemp("crops")
    rng = np.random.default_rng(0)
    rows = []
    for split, n in (("train", 48), ("val", 16), ("test", 16)):
        for i in range(n):
            label = i % 2
            img = rng.normal(100, 20, (128, 128)).clip(0, 255).astype(np.uint8)
            cx, cy = rng.integers(40, 88, 2)
            if label:
                cv2.circle(img, (int(cx), int(cy)), 18, 220, -1)
            else:
                cv2.line(img, (int(cx) - 25, int(cy)), (int(cx) + 25, int(cy)), 220, 4)
                cv2.line(img, (int(cx), int(cy) - 25), (int(cx), int(cy) + 25), 220, 4)
            path = d / f"{split}{i}.png"
            cv2.imwrite(str(path), img)
            dataset = "bcdr" if split == "test" and i >= 12 else "cbis-ddsm"
            rows.append(
                {
                    "path": str(path),
                    "lesion_id": f"{split}{i}",
                    "patient_id": f"p{split}{i}",
                    "dataset": dataset,
                    "split": split,
                    "label": label,
                    "sha256": "",
                }
            )
    return pd.DataFrame(rows)
