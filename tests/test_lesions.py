"""Lesion table: real CBIS-DDSM CSVs as published, the phantom's DICOM through the real code."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from mammodp import lesions
from mammodp.errors import UserError


def _meta(d, name):
    return d / "metadata" / f"{name}.csv"


def test_real_mass_csvs(shared_data):
    meta = shared_data / "cbis-ddsm-metadata"
    train = lesions.read_mass_csv(meta / "mass_case_description_train_set.csv", "train")
    test = lesions.read_mass_csv(meta / "mass_case_description_test_set.csv", "test")
    assert (len(train), len(test)) == (1318, 378)
    assert (train["patient_id"].nunique(), test["patient_id"].nunique()) == (691, 201)
    # BENIGN + BENIGN_WITHOUT_CALLBACK -> 1, MALIGNANT -> 0
    assert train["label"].value_counts().to_dict() == {0: 637, 1: 681}
    assert test["label"].value_counts().to_dict() == {1: 231, 0: 147}
    # The trailing newline inside the quoted ROI path is gone; series UIDs are parsed.
    assert not train["ROI mask file path"].str.contains("\n").any()
    assert train["mask_series"].str.match(r"^[0-9.]+$").all()
    calc = [
        meta / "calc_case_description_train_set.csv",
        meta / "calc_case_description_test_set.csv",
    ]
    assert lesions.count_calc_rows(calc) == 1546 + 326


def test_phantom_lesions(phantom_dir):
    csvs = {
        "train": _meta(phantom_dir, "mass_case_description_train_set"),
        "test": _meta(phantom_dir, "mass_case_description_test_set"),
    }
    table = lesions.cbis_lesions(csvs, phantom_dir / "CBIS-DDSM", workers=2)
    rows = sum(len(pd.read_csv(p)) for p in csvs.values())
    assert len(table) >= rows  # satellites: a mask with two contours gives two lesions
    assert table["label"].isin([0, 1]).all() and table["bbox_w"].gt(10).all()
    dedup = lesions.drop_duplicates(table)
    assert len(dedup) == len(table) - 1  # the duplicated CSV row
    assert dedup["lesion_id"].is_unique
    assert set(dedup["portion"]) == {"train", "test"}


def test_phantom_bcdr(phantom_dir):
    table = lesions.bcdr_lesions(phantom_dir / "BCDR")
    assert len(table) == 8 and set(table["dataset"]) == {"bcdr"}  # 4 patients x 2 views
    assert table["patient_id"].str.startswith("bcdr__").all()


def test_mask_contours_one_lesion_per_closed_contour():
    mask = np.zeros((100, 100), np.uint8)
    mask[10:30, 10:30] = 255
    mask[10:30, 31:40] = 255  # a 1-px gap: closing joins it to the first blob
    mask[60:90, 60:80] = 255
    mask[95, 95] = 255  # a speck is not a lesion
    boxes = lesions.mask_contours(mask)
    assert boxes == [(10, 10, 30, 20), (60, 60, 20, 30)]


def test_unknown_pathology(tmp_path, phantom_dir):
    src = _meta(phantom_dir, "mass_case_description_train_set")
    df = pd.read_csv(src, dtype=str, keep_default_na=False)
    df.loc[3, "pathology"] = "UNSURE"
    df.to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(UserError, match=r"m.csv: unknown pathology value\(s\) \['UNSURE'\]"):
        lesions.read_mass_csv(tmp_path / "m.csv", "train")


def test_missing_column(tmp_path, phantom_dir):
    df = pd.read_csv(_meta(phantom_dir, "mass_case_description_train_set"))
    df.rename(columns={"ROI mask file path": "roi"}).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(UserError, match=r"m.csv: missing column\(s\) \['ROI mask file path'\]"):
        lesions.read_mass_csv(tmp_path / "m.csv", "train")


def test_missing_roi_series(tmp_path, phantom_dir):
    tree = tmp_path / "CBIS-DDSM"
    shutil.copytree(phantom_dir / "CBIS-DDSM", tree)
    victim = next(p for p in tree.iterdir() if p.name.endswith("_1"))
    shutil.rmtree(victim)
    csvs = {
        "train": _meta(phantom_dir, "mass_case_description_train_set"),
        "test": _meta(phantom_dir, "mass_case_description_test_set"),
    }
    with pytest.raises(UserError, match="ROI series .* not found under .*download is incomplete"):
        lesions.cbis_lesions(csvs, tree)


def test_roi_series_without_a_binary_mask(tmp_path, phantom_dir):
    import pydicom

    tree = tmp_path / "CBIS-DDSM"
    shutil.copytree(phantom_dir / "CBIS-DDSM", tree)
    pair = next(p.parent for p in tree.rglob("1-2.dcm"))
    files = {f: pydicom.dcmread(f).pixel_array for f in (pair / "1-1.dcm", pair / "1-2.dcm")}
    mask = next(f for f, a in files.items() if len(np.unique(a)) <= 2)
    patch = next(f for f in files if f != mask)
    ds = pydicom.dcmread(patch)
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(mask)  # the series now holds two patches and no mask
    csvs = {
        "train": _meta(phantom_dir, "mass_case_description_train_set"),
        "test": _meta(phantom_dir, "mass_case_description_test_set"),
    }
    with pytest.raises(UserError, match="no binary ROI mask among"):
        lesions.cbis_lesions(csvs, tree)
