"""Shared fixtures: a small phantom cohort, the real shared data (skipped when absent), a
config writer for tiny workflow runs (the configs themselves: tests/helpers/configs.py). Nothing
here reaches the network."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from .helpers.configs import REPO, SHARED

os.environ.setdefault("HF_HUB_OFFLINE", "1")


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
    from mammodp.data.phantom import PhantomSpec, generate

    out = tmp_path_factory.mktemp("phantom") / "cohort"
    generate(
        out,
        PhantomSpec(
            seed=5, patients_train=14, patients_test=6, patients_external=4, height=768, width=480
        ),
    )
    return out


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


def pytest_collection_modifyitems(items):
    """Every test that reads ../shared/data carries the shared_data marker (-m selects them)."""
    for item in items:
        if "shared_data" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.shared_data)
