"""Lesion table: real CBIS-DDSM CSVs as published, the phantom's DICOM through the real code."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pandas as pd
import pytest

from mammodp.data import lesions
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


def _rewrite_first_mask(tree, paint):
    """Replace the first ROI mask of the tree by ``paint(zeros like it)``; returns its path."""
    import pydicom

    pair = next(p.parent for p in sorted(tree.rglob("1-2.dcm")))
    for f in (pair / "1-1.dcm", pair / "1-2.dcm"):
        ds = pydicom.dcmread(f)
        arr = ds.pixel_array
        if len(np.unique(arr)) <= 2:
            new = paint(np.zeros_like(arr))
            ds.PixelData = new.astype(arr.dtype).tobytes()
            ds.save_as(f)
            return f
    raise AssertionError("no mask found")


def _speck(mask):
    mask[101:103, 101:103] = 255  # 4 px, between the study's every-fourth-pixel samples
    return mask


@pytest.mark.parametrize("contours", ["study", "outer"])
def test_empty_mask_stops_the_run(tmp_path, phantom_dir, contours):
    tree = tmp_path / "CBIS-DDSM"
    shutil.copytree(phantom_dir / "CBIS-DDSM", tree)
    victim = _rewrite_first_mask(tree, lambda m: m)
    csvs = {
        portion: _meta(phantom_dir, f"mass_case_description_{portion}_set")
        for portion in ("train", "test")
    }
    with pytest.raises(UserError, match=f"ROI mask {victim} is empty"):
        lesions.cbis_lesions(csvs, tree, contours=contours)


def test_mask_lesion_too_small_for_a_contour(tmp_path, phantom_dir, caplog):
    """A lesion that vanishes in the study's 1/4 downscale gives no lesion and a warning (as the
    original, which yields no metapoint); under outer it is below the area minimum: an error that
    says so, not "empty"."""
    csvs = {
        portion: _meta(phantom_dir, f"mass_case_description_{portion}_set")
        for portion in ("train", "test")
    }
    before = lesions.cbis_lesions(csvs, phantom_dir / "CBIS-DDSM", contours="study")
    tree = tmp_path / "CBIS-DDSM"
    shutil.copytree(phantom_dir / "CBIS-DDSM", tree)
    victim = _rewrite_first_mask(tree, _speck)
    with caplog.at_level("WARNING", logger="mammodp.data.lesions"):
        after = lesions.cbis_lesions(csvs, tree, contours="study")
    assert "vanish at the study's 1/4 scale" in caplog.text
    assert len(after) < len(before)
    assert set(after["lesion_id"]) < set(before["lesion_id"])
    with pytest.raises(UserError, match=f"ROI mask {victim} marks only 4 px"):
        lesions.cbis_lesions(csvs, tree, contours="outer")


# ----------------------------------------------------------------------------- contour modes


def _ring():
    mask = np.zeros((800, 600), np.uint8)
    mask[100:500, 100:500] = 255
    mask[200:400, 200:400] = 0  # a hole far larger than the closing
    return mask


def test_study_contours_include_holes():
    """RETR_TREE: the hole's border is a lesion of its own under study (as in the original);
    outer keeps external contours only."""
    assert lesions.mask_contours(_ring(), "study") == [(100, 100, 400, 400), (199, 199, 202, 202)]
    assert lesions.mask_contours(_ring(), "outer") == [(100, 100, 400, 400)]


def test_study_closes_at_quarter_size():
    """Two 40 px blobs 32 px apart: 8 px apart at 1/4 size, just joined by the 9 x 9 closing
    there (a 7 x 7 one would not); the 5 x 5 closing at full size keeps them apart."""
    mask = np.zeros((800, 600), np.uint8)
    mask[100:140, 100:140] = 255
    mask[100:140, 172:212] = 255
    assert lesions.mask_contours(mask, "study") == [(100, 100, 112, 40)]
    assert lesions.mask_contours(mask, "outer") == [(100, 100, 40, 40), (172, 100, 40, 40)]
    mask[100:140, 172:212], mask[100:140, 176:216] = 0, 255  # 36 px, 9 at 1/4: stays apart
    assert len(lesions.mask_contours(mask, "study")) == 2
    # The kernel is a square: it does not bridge corners 2 px apart (diagonally) at 1/4 size,
    # an ellipse of the same size would.
    corners = np.zeros((800, 600), np.uint8)
    corners[40:120, 40:120] = 255
    corners[128:208, 128:208] = 255
    assert lesions.mask_contours(corners, "study") == [(40, 40, 80, 80), (128, 128, 80, 80)]


def test_study_samples_every_fourth_pixel():
    """Nearest downscale to 1/4 keeps pixel (4i, 4j): a speck there becomes a 4 x 4 lesion (>= 2
    contour points), a speck elsewhere vanishes; outer drops both (area < 16)."""
    mask = np.zeros((800, 600), np.uint8)
    mask[96, 96] = 255
    mask[301, 301] = 255
    assert lesions.mask_contours(mask, "study") == [(96, 96, 4, 4)]
    assert lesions.mask_contours(mask, "outer") == []


def test_study_box_keeps_the_upscaled_coordinates():
    """803 rows -> 201 at 1/4 -> 804 after x 4: a lesion at the bottom edge gets a box one row
    past the mask, as the original's."""
    mask = np.zeros((803, 601), np.uint8)
    mask[700:803, 500:601] = 255
    assert lesions.mask_contours(mask, "study") == [(500, 700, 100, 104)]
    assert lesions.mask_contours(mask, "outer") == [(500, 700, 101, 103)]


def test_unknown_contour_mode():
    with pytest.raises(UserError, match="data.lesions.contours = 'inner' is not allowed"):
        lesions.mask_contours(_ring(), "inner")


def test_duplicate_rows_kept_under_study_dropped_under_outer(phantom_dir):
    """The phantom's duplicated mass row: two lesions with one box under study (the original
    drops duplicates only within one CSV row), one under outer."""
    csvs = {
        "train": _meta(phantom_dir, "mass_case_description_train_set"),
        "test": _meta(phantom_dir, "mass_case_description_test_set"),
    }
    study = lesions.cbis_lesions(csvs, phantom_dir / "CBIS-DDSM", workers=2, contours="study")
    rows = sum(len(pd.read_csv(p)) for p in csvs.values())
    assert len(study) >= rows
    kept = lesions.drop_duplicates(study, "study")
    assert len(kept) == len(study) and kept["lesion_id"].is_unique
    key = ["image", "bbox_x", "bbox_y", "bbox_w", "bbox_h"]
    assert kept.duplicated(key).sum() == 1  # the duplicated row, kept
    outer = lesions.drop_duplicates(study, "outer")
    assert len(outer) == len(study) - 1 and not outer.duplicated(key).any()


BCDR_HEAD = (
    "patient_id,study_id,series,lesion_id,segmentation_id,image_view,image_filename,"
    "lw_x_points,lw_y_points,mammography_type,mammography_nodule,age,density,classification\n"
)


def _bcdr_csv(path, rows):
    """rows: (lesion id, image file, xs, ys, nodule); cells with BCDR's leading spaces."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        f"7,1,1,{lid},1,1, {img}, {xs}, {ys},1,{nodule},60, 2, Benign\n"
        for lid, img, xs, ys, nodule in rows
    ]
    path.write_text(BCDR_HEAD + "".join(lines))
    for _, img, *_ in rows:
        cv2.imwrite(str(path.parent / img), np.full((300, 200), 90, np.uint8))


def test_bcdr_study_boxes_and_duplicates(tmp_path):
    a = ("1", "img_7_1_1_RCC.tif", "10 50 30", "20 20 60", 1)
    calc = ("2", "img_7_1_1_LCC.tif", "100 140 120", "100 100 140", 0)
    same_as_calc = ("3", "img_7_1_1_LCC.tif", "100 140 120", "100 100 140", 1)
    again_a = ("4", "img_7_1_1_RCC.tif", "10 50 30", "20 20 60", 1)
    _bcdr_csv(
        tmp_path / "BCDR-D01_dataset" / "bcdr_d01_outlines.csv", [a, calc, same_as_calc, again_a]
    )
    # Another set's image with the same file name and the same outline as ``a``.
    _bcdr_csv(tmp_path / "BCDR-D02_dataset" / "bcdr_d02_outlines.csv", [("5", *a[1:])])
    study = lesions.drop_duplicates(lesions.bcdr_lesions(tmp_path, contours="study"), "study")
    # get_bcdr_bbox: (min, max - min); every later row with an earlier (file name, box) dropped,
    # the calcification row counting too.
    assert study[["bbox_x", "bbox_y", "bbox_w", "bbox_h"]].values.tolist() == [[10, 20, 40, 40]]
    assert study["lesion_id"].tolist() == ["bcdr__7_s1_l1_seg1_v1"]
    outer = lesions.drop_duplicates(lesions.bcdr_lesions(tmp_path, contours="outer"), "outer")
    # cv2.boundingRect (max - min + 1); duplicates by image path and box: only ``again_a``.
    assert outer["lesion_id"].str.extract(r"_l(\d)_")[0].tolist() == ["1", "3", "5"]
    assert outer[["bbox_w", "bbox_h"]].values.tolist()[0] == [41, 41]


def test_bcdr_nested_outlines_csv(tmp_path):
    """BCDR-F03 keeps its CSV one folder deeper; the original reads images relative to
    BCDR-F03/, and so do we when the CSV's own folder does not hold the image."""
    csv_path = tmp_path / "BCDR-F03" / "BCDR-F03" / "bcdr_f03_outlines.csv"
    _bcdr_csv(csv_path, [("1", "img_7_1_1_RCC.tif", "10 50 30", "20 20 60", 1)])
    (csv_path.parent / "img_7_1_1_RCC.tif").rename(tmp_path / "BCDR-F03" / "img_7_1_1_RCC.tif")
    table = lesions.bcdr_lesions(tmp_path, contours="study")
    assert table["image"].tolist() == ["bcdr:BCDR-F03/img_7_1_1_RCC.tif"]
