"""Cropping as the study did it."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd

from mammodp import lesions
from mammodp.crops import CropSpec, crop_box, crop_lesion, make_crops


def test_crop_box_geometry():
    spec = CropSpec(margin=60, min_side=128, size=128, jitter=0)
    assert crop_box((500, 400, 100, 40), (2000, 1000), spec, "a") == (
        440,
        310,
        220,
    )  # side 100 + 2 x 60, centred
    assert crop_box((500, 400, 4, 4), (2000, 1000), spec, "a")[2] == 128  # at least 128
    x0, y0, side = crop_box((0, 0, 50, 50), (2000, 1000), spec, "a")  # clipped at the border
    assert (x0, y0) == (0, 0) and side == 170
    x0, y0, side = crop_box((950, 1950, 50, 50), (2000, 1000), spec, "a")
    assert x0 + side == 1000 and y0 + side == 2000


def test_jitter_is_seeded_per_lesion():
    spec = CropSpec(jitter=8, seed=3)
    a = crop_box((500, 400, 100, 40), (2000, 1000), spec, "lesion-a")
    assert a == crop_box((500, 400, 100, 40), (2000, 1000), spec, "lesion-a")
    shifts = {crop_box((500, 400, 100, 40), (2000, 1000), spec, f"l{i}")[:2] for i in range(20)}
    assert len(shifts) > 1
    for x0, y0 in shifts:
        assert abs(x0 - 440) <= 8 and abs(y0 - 310) <= 8


def test_area_resize_to_128():
    img = np.tile((np.arange(1000) % 256).astype(np.uint8)[None], (1000, 1))
    out = crop_lesion(img, (400, 400, 136, 100), CropSpec(jitter=0), "x")
    assert out.shape == (128, 128) and out.dtype == np.uint8


def test_make_crops_on_phantom(tmp_path, phantom_dir):
    csvs = {
        "train": phantom_dir / "metadata" / "mass_case_description_train_set.csv",
        "test": phantom_dir / "metadata" / "mass_case_description_test_set.csv",
    }
    table = lesions.drop_duplicates(lesions.cbis_lesions(csvs, phantom_dir / "CBIS-DDSM"))
    table = pd.concat([table, lesions.bcdr_lesions(phantom_dir / "BCDR")], ignore_index=True)
    roots = {"dicom_root": phantom_dir / "CBIS-DDSM", "bcdr_root": phantom_dir / "BCDR"}
    index = make_crops(table, tmp_path / "crops", CropSpec(), workers=2, **roots)
    assert len(index) == len(table) and index["sha256"].str.len().eq(64).all()
    for path in index["path"]:
        raw = open(path, "rb").read()
        assert b"tEXt" not in raw and b"eXIf" not in raw  # no metadata chunks
        img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        assert img.shape == (128, 128) and img.dtype == np.uint8
    again = make_crops(table, tmp_path / "again", CropSpec(), workers=1, **roots)
    assert list(again["sha256"]) == list(index["sha256"])  # deterministic, worker-independent


def test_patch_scaling_equals_scaling_the_whole_mammogram():
    from mammodp.dicomio import to_uint8_minmax

    rng = np.random.default_rng(0)
    image = rng.integers(300, 60000, (900, 700), dtype=np.uint16)
    spec = CropSpec(jitter=4, seed=2)
    bbox = (200, 300, 90, 70)
    x0, y0, side = crop_box(bbox, image.shape, spec, "l")
    whole = to_uint8_minmax(image)[y0 : y0 + side, x0 : x0 + side]
    expected = cv2.resize(whole, (128, 128), interpolation=cv2.INTER_AREA)
    assert np.array_equal(crop_lesion(image, bbox, spec, "l"), expected)
