"""Patient-level split and its leak check."""

from __future__ import annotations

import pandas as pd
import pytest

from mammodp.data import split as sp
from mammodp.errors import UserError

from ..helpers.configs import PUBLISHED_COUNTS


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


# ----------------------------------------------------------------------------- split files


def _file_for(index):
    """A split file of the CBIS-DDSM patients only (as resources/study_split.json)."""
    cbis = index[index["dataset"] == "cbis-ddsm"]
    train = sorted(cbis.loc[cbis["portion"] == "train", "patient_id"].unique())
    return {
        "train": train[6:],
        "val": train[:6],
        "test": sorted(cbis.loc[cbis["portion"] == "test", "patient_id"].unique()),
    }


def test_unlisted_external_patients_go_to_test():
    index = _index()
    index = pd.concat([index, index.tail(1).assign(patient_id="bcdr__2", lesion_id="b2")])
    split = _file_for(index)
    manifest = sp.apply_split(index, split, "f.json")
    assert set(manifest.loc[manifest["dataset"] == "bcdr", "split"]) == {"test"}
    completed = sp.with_external_in_test(index, split)
    assert completed["test"] == sorted(split["test"] + ["bcdr__1", "bcdr__2"])
    assert completed["train"] == split["train"] and completed["val"] == split["val"]
    # A listed external patient stays where the file puts it ...
    listed = {**split, "val": split["val"] + ["bcdr__1"]}
    manifest = sp.apply_split(index, listed, "f.json")
    assert manifest.loc[manifest["patient_id"] == "bcdr__1", "split"].tolist() == ["val"]
    assert manifest.loc[manifest["patient_id"] == "bcdr__2", "split"].tolist() == ["test"]
    # ... and an unlisted CBIS-DDSM patient is still an error.
    with pytest.raises(UserError, match=r"1 patient\(s\) with crops are in no split"):
        sp.apply_split(index, {**split, "train": split["train"][1:]}, "f.json")
    with pytest.raises(UserError, match="patient bcdr__1 is in both 'train' and 'test'"):
        sp.apply_split(
            index,
            {**split, "train": split["train"] + ["bcdr__1"], "test": split["test"] + ["bcdr__1"]},
            "f.json",
        )


def test_manifest_carries_the_crop_windows():
    from mammodp.data.crops import WINDOW_COLUMNS

    index = _index()
    windows = {c: range(i, i + len(index)) for i, c in enumerate(WINDOW_COLUMNS)}
    manifest = sp.apply_split(index.assign(**windows), sp.make_split(index, 0.15, 1), "s")
    assert list(manifest.columns) == sp.MANIFEST_COLUMNS + WINDOW_COLUMNS
    assert manifest["crop_side"].tolist() == list(windows["crop_side"])
    # An index without windows (published crops): the columns are there, empty.
    bare = sp.apply_split(index, sp.make_split(index, 0.15, 1), "s")
    assert bare[WINDOW_COLUMNS].isna().all().all()


STUDY_SPLIT_FILE = "resources/study_split.json"


def test_study_split_file_with_the_published_crops(repo, shared_data):
    """The shipped split on the published crops: the published CBIS-DDSM split exactly, BCDR in
    test; the official Mass-Test patients plus 11 Mass-Training patients are the test set."""
    from mammodp.data.lesions import read_mass_csv
    from mammodp.data.processed import import_processed
    from mammodp.fileio import read_json

    split = sp.validate_split_file(read_json(repo / STUDY_SPLIT_FILE), STUDY_SPLIT_FILE)
    assert {k: len(v) for k, v in split.items()} == {"train": 578, "val": 102, "test": 212}
    index, _ = import_processed(shared_data / "mammo_dp" / "dataset16062024")
    manifest = sp.apply_split(index, split, STUDY_SPLIT_FILE)
    counts = manifest.groupby(["dataset", "split"]).size().to_dict()
    assert counts == PUBLISHED_COUNTS
    meta = shared_data / "cbis-ddsm-metadata"
    train_csv = read_mass_csv(meta / "mass_case_description_train_set.csv", "train")
    test_csv = read_mass_csv(meta / "mass_case_description_test_set.csv", "test")
    ids = {p: f"cbis-ddsm__{p}" for p in set(train_csv["patient_id"]) | set(test_csv["patient_id"])}
    listed = {pid: k for k, v in split.items() for pid in v}
    # The tcia lesion table's ids (cbis-ddsm__<CSV patient_id>): every CSV patient is listed.
    assert sorted(p for p, i in ids.items() if i not in listed) == []
    assert {listed[ids[p]] for p in test_csv["patient_id"]} == {"test"}
    moved = sorted(p for p in set(train_csv["patient_id"]) if listed[ids[p]] == "test")
    assert moved == [
        "P_00495", "P_00678", "P_00723", "P_00753", "P_00906", "P_01152",
        "P_01179", "P_01237", "P_01635", "P_01803", "P_01883",
    ]  # fmt: skip
    moved_crops = manifest["patient_id"].isin({ids[p] for p in moved})
    assert moved_crops.sum() == 23
