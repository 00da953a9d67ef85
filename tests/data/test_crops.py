"""Cropping as the study did it: the study framing against an independent reference of the
original routine, the centred framing pinned to its earlier behaviour, the 8-bit images."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from mammodp.data import dicomio, lesions
from mammodp.data.crops import (
    WINDOW_COLUMNS,
    CropSpec,
    crop_box,
    crop_lesion,
    make_crops,
    study_box,
)
from mammodp.errors import UserError


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
    assert not any(Path(p).is_absolute() for p in index["path"])  # relative to the crop folder
    for rel in index["path"]:
        path = str(tmp_path / "crops" / rel)
        raw = open(path, "rb").read()
        assert b"tEXt" not in raw and b"eXIf" not in raw  # no metadata chunks
        img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        assert img.shape == (128, 128) and img.dtype == np.uint8
    again = make_crops(table, tmp_path / "again", CropSpec(), workers=1, **roots)
    assert list(again["sha256"]) == list(index["sha256"])  # deterministic, worker-independent


def test_patch_scaling_equals_scaling_the_whole_mammogram():
    """Each window is min-maxed with the whole image's extremes: the same numbers as the
    original's cv2.normalize of the whole mammogram, exact .5 ties included (values 2682 ..
    3738: 3210 -> 127.5)."""
    rng = np.random.default_rng(0)
    image = rng.integers(2682, 3739, (900, 700), dtype=np.uint16)
    image[::7, ::5] = 3210  # ties everywhere, at every column phase
    image[0, 0], image[-1, -1] = 2682, 3738
    whole = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX, cv2.CV_8U)
    for k in range(12):
        spec = CropSpec(jitter=4, seed=k, framing="study" if k % 2 else "centred")
        bbox = (int(rng.integers(0, 600)), int(rng.integers(0, 800)), int(rng.integers(4, 300)), 70)
        x0, y0, side = crop_box(bbox, image.shape, spec, "l")
        want = cv2.resize(
            whole[y0 : y0 + side, x0 : x0 + side], (128, 128), interpolation=cv2.INTER_AREA
        )
        assert np.array_equal(crop_lesion(image, bbox, spec, "l"), want), bbox
        patch = dicomio.to_uint8_minmax(image[y0 : y0 + side, x0 : x0 + side], 2682, 3738)
        assert np.array_equal(patch, whole[y0 : y0 + side, x0 : x0 + side])


# ----------------------------------------------------------------------------- centred (pinned)

# Windows computed by the centred code before the study framing was added (margin 60, min 128,
# jitter 8, seed 11): (bbox, image shape, lesion id) -> (x0, y0, side).
CENTRED_BEFORE = [
    (
        (500, 400, 100, 40),
        (2000, 1000),
        "cbis-ddsm__Mass-Training_P_00001_LEFT_CC_1",
        (444, 310, 220),
    ),
    ((3, 5, 30, 20), (2000, 1000), "a", (0, 0, 150)),
    ((950, 1950, 50, 50), (2000, 1000), "b", (830, 1830, 170)),
    ((100, 100, 900, 700), (800, 1200), "c", (158, 0, 800)),
    ((10, 700, 4, 4), (768, 480), "bcdr__7_s1_l1_seg1_v2", (0, 640, 128)),
    ((200, 300, 250, 90), (768, 480), "x_2", (110, 155, 370)),
]


@pytest.mark.parametrize(("bbox", "shape", "lesion_id", "window"), CENTRED_BEFORE)
def test_centred_framing_gives_the_earlier_windows(bbox, shape, lesion_id, window):
    spec = CropSpec(framing="centred", margin=60, min_side=128, jitter=8, seed=11)
    assert crop_box(bbox, shape, spec, lesion_id) == window
    # The study-only keys do not touch the centred framing.
    other = dataclasses.replace(spec, zoom_offset=0.3, translation_spread=0.2)
    assert crop_box(bbox, shape, other, lesion_id) == window


def test_centred_crops_are_the_earlier_pixels():
    """sha256 of two crops made by the code before the study framing (same image, spec, ids)."""
    import hashlib

    spec = CropSpec(framing="centred", margin=60, min_side=128, jitter=8, seed=11)
    image = np.random.default_rng(0).integers(300, 60000, (900, 700), dtype=np.uint16)
    digests = [
        hashlib.sha256(crop_lesion(image, bbox, spec, lesion_id).tobytes()).hexdigest()[:16]
        for bbox, lesion_id in (((200, 300, 90, 70), "l"), ((650, 10, 40, 30), "m"))
    ]
    assert digests == ["cf439d64359f2d72", "037bc5760bb00584"]


def test_unknown_framing_is_a_user_error():
    with pytest.raises(UserError, match="data.crop.framing = 'middle' is not allowed"):
        CropSpec(framing="middle")


# ----------------------------------------------------------------------------- study framing


def original_window(bbox, shape, draw, margin=60, min_size=128, zo=0.05, zs=0.05, ts=0.05, mo=0.05):
    """Reference: gan_compare/dataset/base_dataset.py get_crops_around_bbox and
    get_measures_for_crop (RichardObi/mammo_dp 20caed7) as published, except that numpy's global
    ``np.random.normal(loc, scale)`` is ``draw(loc, scale)``. Returns (x, y, w, h)."""

    def measures(coord, length, image_max, other=None):
        if other is None:
            l_new = length + 2 * margin
            r_zoom = int(draw(l_new * zo, l_new * zs))
        else:
            coord -= (other - length) // 2
            l_new = other
            r_zoom = 0
        l_new += r_zoom // 2
        coord -= r_zoom // 2
        r_transl = min(int(-l_new * mo), int(draw(0, l_new * ts)))
        if r_transl > int(l_new * mo):
            r_transl = l_new * mo
        coord = max(0, coord + r_transl)
        if l_new < min_size:
            c_new = coord - (min_size - length) // 2
            l_new = min_size
        else:
            c_new = coord - margin
        c_new = max(0, c_new)
        c_new -= max(0, (c_new + l_new) - image_max)
        return c_new, l_new

    x, y, w, h = bbox
    x_p, w_p = measures(x, w, shape[1])
    y_p, h_p = measures(y, h, shape[0], w_p)
    return x_p, y_p, w_p, h_p


@pytest.fixture(scope="module")
def phantom_table(phantom_dir):
    """Every phantom lesion, CBIS-DDSM and BCDR, with the study's contours."""
    csvs = {
        "train": phantom_dir / "metadata" / "mass_case_description_train_set.csv",
        "test": phantom_dir / "metadata" / "mass_case_description_test_set.csv",
    }
    cbis = lesions.cbis_lesions(csvs, phantom_dir / "CBIS-DDSM", contours="study")
    bcdr = lesions.bcdr_lesions(phantom_dir / "BCDR", contours="study")
    return lesions.drop_duplicates(pd.concat([cbis, bcdr], ignore_index=True), "study")


@pytest.fixture(scope="module")
def phantom_boxes(phantom_dir, phantom_table):
    """(bbox, image shape, lesion id) of every phantom lesion, CBIS-DDSM and BCDR."""
    table = phantom_table
    from mammodp.data.crops import resolve_images

    paths = resolve_images(table["image"], phantom_dir / "CBIS-DDSM", phantom_dir / "BCDR")
    shapes = {
        ref: dicomio.image_shape(p) if p.suffix == ".dcm" else cv2.imread(str(p), 0).shape
        for ref, p in paths.items()
    }
    out = [
        ((r.bbox_x, r.bbox_y, r.bbox_w, r.bbox_h), shapes[r.image], r.lesion_id)
        for r in table.itertuples()
    ]
    assert len(out) > 30 and len({s for _, s, _ in out}) == 2  # both datasets' image sizes
    return out


@pytest.mark.parametrize(
    ("margin", "zoom_offset", "max_offset"),
    [(60, 0.05, 0.05), (60, 0.2, 0.33), (60, -0.4, 0.0), (0, 0.05, 0.05), (150, 0.05, 0.05)],
)
def test_study_framing_equals_the_original_when_deterministic(
    phantom_boxes, margin, zoom_offset, max_offset
):
    """Spreads 0: both are deterministic, so every phantom window must match exactly, through
    the 128 px minimum (negative zoom, margin 0) and the image border (margin 150)."""
    spec = CropSpec(
        framing="study",
        margin=margin,
        zoom_offset=zoom_offset,
        zoom_spread=0,
        translation_spread=0,
        max_translation_offset=max_offset,
        seed=1,
    )
    kw = dict(margin=margin, zo=zoom_offset, zs=0, ts=0, mo=max_offset)
    branches = set()
    for bbox, shape, lesion_id in phantom_boxes:
        x, y, w, h = original_window(bbox, shape, lambda loc, scale: loc, **kw)
        assert w == h
        if w > min(shape):  # documented difference: side clipped to the image, window inside
            w = min(shape)
            x, y = min(max(x, 0), shape[1] - w), min(max(y, 0), shape[0] - w)
            branches.add("oversize")
        assert study_box(bbox, shape, spec, lesion_id) == (x, y, w), (bbox, shape)
        branches.add((w == 128, x == 0 or x + w == shape[1], y == 0 or y + w == shape[0]))
    if margin == 0:
        assert (True, False, False) in branches  # the minimum-side branch was exercised
    if margin == 150:
        assert any(b[1] or b[2] for b in branches if b != "oversize")  # so was the border clamp
        assert "oversize" in branches


def _draws(boxes_shape, spec, n, seed=0):
    """n windows per box from our study framing (n lesion ids) and from the reference fed by
    numpy draws; as (x0 - x, y0 - y, side) arrays."""
    bbox, shape = boxes_shape
    ours = np.array([study_box(bbox, shape, spec, f"lesion{i}") for i in range(n)])
    rng = np.random.default_rng(seed)
    ref = np.array([original_window(bbox, shape, rng.normal)[:3] for _ in range(n)])
    shift = np.array([bbox[0], bbox[1], 0])
    return ours - shift, ref - shift


def test_study_framing_has_the_original_distribution(phantom_boxes):
    from scipy.stats import ks_2samp

    spec = CropSpec(framing="study", seed=4)
    for bbox, shape, _ in phantom_boxes[::3]:
        ours, ref = _draws((bbox, shape), spec, 600)
        for k in range(3):
            if np.ptp(ref[:, k]) or np.ptp(ours[:, k]):
                assert ks_2samp(ours[:, k], ref[:, k], method="asymp").pvalue > 1e-4, (bbox, k)


def test_study_window_places_the_lesion_right_of_centre_and_low():
    """A 100 px box far from the border: side ~ 100 + 120 + zoom/2; the lesion centre sits at
    ~0.56 of the width (the zoom widens only to the left, the translation is always leftward)
    and at ~0.8 of the height (the margin is subtracted twice in y, plus the translation)."""
    spec = CropSpec(framing="study", seed=9)
    bbox, shape = (1500, 2000, 100, 100), (5000, 3000)
    ours, ref = _draws((bbox, shape), spec, 3000)
    for win in (ours, ref):
        side = win[:, 2]
        fx = (50 - win[:, 0]) / side
        fy = (50 - win[:, 1]) / side
        assert 224 < side.mean() < 227 and side.min() >= 200
        assert 0.55 < fx.mean() < 0.58 and 0.80 < fy.mean() < 0.84
        # right edge = box + margin + translation, the translation <= -5 % of the side
        assert (win[:, 0] + side - 100 <= 60 - 0.05 * 200).all()
        # the box's bottom rows are (almost) always cut off, never in a centred crop
        assert np.mean(win[:, 1] + side < 100) > 0.99
    assert np.allclose(ours.mean(0), ref.mean(0), atol=1.0)


def test_study_window_at_the_border_and_the_minimum_side():
    spec = CropSpec(framing="study", seed=2)
    shape = (768, 480)
    top_left = [study_box((5, 8, 60, 60), shape, spec, f"t{i}") for i in range(300)]
    assert all(x0 == 0 and y0 == 0 for x0, y0, _ in top_left)
    right_bottom = [study_box((440, 730, 35, 30), shape, spec, f"r{i}") for i in range(300)]
    assert all(x0 + s == 480 and y0 + s <= 768 for x0, y0, s in right_bottom)
    # A 4 px box: l = 124 + zoom // 2 is below 128 (-> 128) for zoom draws < 8 and exactly 128
    # for 8 and 9: side 128 for N(6.2, 6.2) < 10, P = 0.73.
    tiny = np.array([study_box((200, 300, 4, 4), shape, spec, f"m{i}") for i in range(2000)])
    assert tiny[:, 2].min() == 128
    assert 0.70 < np.mean(tiny[:, 2] == 128) < 0.76
    small = tiny[tiny[:, 2] == 128]
    assert np.all((small[:, 0] <= 200) & (small[:, 0] + 128 >= 204))  # the box stays inside


def test_study_window_larger_than_the_image_is_clipped():
    """Documented edge case: the original would start at a negative index; we clip the side to
    the image and keep the window inside."""
    spec = CropSpec(framing="study", zoom_spread=0, translation_spread=0)
    assert original_window((10, 20, 400, 300), (600, 480), lambda m, s: m)[0] < 0
    assert study_box((10, 20, 400, 300), (600, 480), spec, "big") == (0, 0, 480)


def test_study_window_is_seeded_per_lesion():
    spec = CropSpec(framing="study", seed=3)
    a = study_box((500, 400, 100, 40), (2000, 1000), spec, "lesion-a")
    assert a == study_box((500, 400, 100, 40), (2000, 1000), spec, "lesion-a")
    assert a != study_box(
        (500, 400, 100, 40), (2000, 1000), dataclasses.replace(spec, seed=4), "lesion-a"
    )
    assert len({study_box((500, 400, 100, 40), (2000, 1000), spec, f"l{i}") for i in range(20)}) > 5


# ----------------------------------------------------------------------------- crops and index


def test_study_crops_are_the_original_pipeline(tmp_path, phantom_dir, phantom_table):
    """A crop = cv2.resize(INTER_AREA, 128) of the window of the whole-image cv2.normalize'd
    DICOM (the original's convert_to_uint8) or of the BCDR image as cv2.IMREAD_GRAYSCALE reads it;
    the index records box and window."""
    import pydicom

    from mammodp.data.crops import resolve_images

    spec = CropSpec(framing="study", seed=11)
    roots = {"dicom_root": phantom_dir / "CBIS-DDSM", "bcdr_root": phantom_dir / "BCDR"}
    index = make_crops(phantom_table, tmp_path / "c", spec, bcdr_intensity="as_is", **roots)
    assert list(index.columns[-7:]) == WINDOW_COLUMNS
    paths = resolve_images(phantom_table["image"], **roots)
    picks = pd.concat([index[index["dataset"] == d].head(3) for d in ("cbis-ddsm", "bcdr")])
    for row in picks.itertuples():
        lesion = phantom_table.set_index("lesion_id").loc[row.lesion_id]
        src = paths[lesion["image"]]
        if src.suffix == ".dcm":
            pix = pydicom.dcmread(src).pixel_array
            image = cv2.normalize(pix, None, 0, 255, cv2.NORM_MINMAX, cv2.CV_8U)
        else:
            image = cv2.imread(str(src), cv2.IMREAD_GRAYSCALE)
        bbox = (row.bbox_x, row.bbox_y, row.bbox_w, row.bbox_h)
        assert bbox == tuple(lesion[["bbox_x", "bbox_y", "bbox_w", "bbox_h"]])
        x0, y0, side = study_box(bbox, image.shape, spec, row.lesion_id)
        assert (row.crop_x0, row.crop_y0, row.crop_side) == (x0, y0, side)
        want = cv2.resize(
            image[y0 : y0 + side, x0 : x0 + side], (128, 128), interpolation=cv2.INTER_AREA
        )
        got = cv2.imread(str(tmp_path / "c" / row.path), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(got, want), row.lesion_id


def _bcdr_table(root, image):
    cv2.imwrite(str(root / "img_1_1_1_RCC.tif"), image)
    row = {c: "" for c in lesions.LESION_COLUMNS}
    row.update(
        lesion_id="bcdr__1_s1_l1_seg1_v1",
        dataset="bcdr",
        portion="test",
        patient_id="bcdr__1",
        label=1,
        bbox_x=150,
        bbox_y=200,
        bbox_w=80,
        bbox_h=70,
        image="bcdr:img_1_1_1_RCC.tif",
    )
    return pd.DataFrame([row])


def test_bcdr_intensity_as_is_or_minmax(tmp_path):
    """as_is (the study): the 8-bit image as cv2.IMREAD_GRAYSCALE reads it; minmax: stretched
    to 0-255 first. An image of values 40-200 tells them apart."""
    rng = np.random.default_rng(0)
    image = (np.linspace(40, 200, 400)[None, :] + rng.normal(0, 5, (600, 400))).clip(40, 200)
    image = image.astype(np.uint8)
    table = _bcdr_table(tmp_path, image)
    spec = CropSpec(framing="study")
    crops = {
        mode: make_crops(table, tmp_path / mode, spec, bcdr_root=tmp_path, bcdr_intensity=mode)
        for mode in ("as_is", "minmax")
    }
    row = crops["as_is"].iloc[0]
    assert (crops["minmax"][WINDOW_COLUMNS].values == crops["as_is"][WINDOW_COLUMNS].values).all()
    x0, y0, side = row.crop_x0, row.crop_y0, row.crop_side
    for mode, source in (
        ("as_is", image),
        ("minmax", cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX, cv2.CV_8U)),
    ):
        want = cv2.resize(
            source[y0 : y0 + side, x0 : x0 + side], (128, 128), interpolation=cv2.INTER_AREA
        )
        got = cv2.imread(str(tmp_path / mode / crops[mode]["path"].iloc[0]), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(got, want), mode
    as_is = cv2.imread(str(tmp_path / "as_is" / crops["as_is"]["path"].iloc[0]), 0)
    assert as_is.min() >= 40 and as_is.max() <= 200  # untouched: no stretch
    with pytest.raises(UserError, match="data.bcdr.intensity = 'raw' is not allowed"):
        make_crops(table, tmp_path / "x", spec, bcdr_root=tmp_path, bcdr_intensity="raw")
