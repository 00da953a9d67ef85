"""Patient-level split and its leak check."""

from __future__ import annotations

import pandas as pd
import pytest

from mammodp import split as sp
from mammodp.errors import UserError


def _index(n_train=40, n_test=10):
    rows = []
    for i in range(n_train):
        for k in range(2):  # two crops per patient (CC and MLO)
            rows.append(
                {
                    "path": f"t{i}_{k}",
                    "lesion_id": f"t{i}_{k}",
                    "patient_id": f"cbis-ddsm__P{i}",
                    "dataset": "cbis-ddsm",
                    "portion": "train",
                    "label": i % 2,
                    "sha256": "x",
                }
            )
    for i in range(n_test):
        rows.append(
            {
                "path": f"s{i}",
                "lesion_id": f"s{i}",
                "patient_id": f"cbis-ddsm__Q{i}",
                "dataset": "cbis-ddsm",
                "portion": "test",
                "label": i % 2,
                "sha256": "x",
            }
        )
    rows.append(
        {
            "path": "b",
            "lesion_id": "b",
            "patient_id": "bcdr__1",
            "dataset": "bcdr",
            "portion": "test",
            "label": 1,
            "sha256": "x",
        }
    )
    return pd.DataFrame(rows)


def test_patient_level_stratified_seeded():
    index = _index()
    split = sp.make_split(index, 0.15, seed=42)
    assert len(split["val"]) == 6 and len(split["train"]) == 34
    assert "bcdr__1" in split["test"] and len(split["test"]) == 11
    assert split == sp.make_split(index, 0.15, seed=42)
    assert split != sp.make_split(index, 0.15, seed=43)
    manifest = sp.apply_split(index, split, "t")
    assert manifest.groupby("patient_id")["split"].nunique().max() == 1
    val_labels = manifest[manifest["split"] == "val"]["label"]
    assert set(val_labels) == {0, 1}


def test_leak_check():
    with pytest.raises(UserError, match="patient P1 is in both 'train' and 'test'"):
        sp.check_no_leak({"train": ["P1"], "val": [], "test": ["P1"]})


def test_split_file_must_cover_every_patient():
    index = _index(4, 2)
    split = {"train": ["cbis-ddsm__P0", "cbis-ddsm__P1"], "val": ["cbis-ddsm__P2"], "test": []}
    with pytest.raises(UserError, match="patient\\(s\\) with crops are in no split"):
        sp.apply_split(index, sp.validate_split_file(split, "f.json"), "f.json")


def test_empty_class_in_a_split_is_an_error():
    index = _index(4, 2)
    split = {
        "train": ["cbis-ddsm__P0", "cbis-ddsm__P2", "cbis-ddsm__P1"],
        "val": ["cbis-ddsm__P3"],
        "test": ["cbis-ddsm__Q0", "cbis-ddsm__Q1", "bcdr__1"],
    }
    with pytest.raises(UserError, match="'val' split holds label\\(s\\) \\[1\\] only"):
        sp.apply_split(index, split, "f.json")
