"""Mass crops: the whole mammogram as 8 bit, a square window around the lesion box,
area resize to ``size``; 8-bit grayscale PNG without any header data.

Two framings (``data.crop.framing``):

* ``study``: the window of the original code, which wrote the published ``dataset16062024``
  (gan_compare/scripts/train_gan.py --save_dataset through MammographyDataset.__getitem__ and
  gan_compare/dataset/base_dataset.py get_crops_around_bbox / get_measures_for_crop; margin 60,
  min 128, zoom_offset = zoom_spread = translation_spread = max_translation_offset = 0.05 from
  gan_compare/configs/gan/dcgan_config.yaml). In x the window is [x - margin, x + w + margin],
  widened to the left by half a random zoom and shifted by a translation that is always <= -5 %
  of the side; the side is square, and in y the window is centred on the box, then moved up by
  the margin once more plus the same kind of translation (the lesion sits low in the crop).
* ``centred``: side w + 2 x margin, centred on the box with a small seeded ``jitter``.

The 8-bit values: DICOM whole-image min-max exactly as the original's convert_to_uint8
(cv2.normalize, applied to each window with the whole image's extremes); BCDR as read
(``data.bcdr.intensity: as_is``, the original) or min-maxed (``minmax``).
"""

from __future__ import annotations

import logging
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from mammodp.errors import UserError, check_choice
from mammodp.fileio import atomic_dir, sha256_file, stable_seed

from . import dicomio

log = logging.getLogger(__name__)

CROP_COLUMNS = ["path", "lesion_id", "patient_id", "dataset", "portion", "label", "sha256"]
# The lesion box and the crop window in mammogram pixels (empty where unknown: published crops).
# Later stages never require them.
WINDOW_COLUMNS = ["bbox_x", "bbox_y", "bbox_w", "bbox_h", "crop_x0", "crop_y0", "crop_side"]
FRAMINGS = ("study", "centred")
BCDR_INTENSITIES = ("as_is", "minmax")


@dataclass(frozen=True)
class CropSpec:
    margin: int = 60
    min_side: int = 128
    size: int = 128
    jitter: int = 8  # centred framing only
    seed: int = 0
    framing: str = "centred"
    # study framing only: fractions of the current side (the original's names and meaning)
    zoom_offset: float = 0.05
    zoom_spread: float = 0.05
    translation_spread: float = 0.05
    max_translation_offset: float = 0.05

    def __post_init__(self):
        check_choice("data.crop.framing", self.framing, FRAMINGS)


def read_image(path: str | Path) -> np.ndarray:
    """A whole mammogram as decoded (uint8 or uint16, grayscale), DICOM or ordinary image."""
    path = Path(path)
    if path.suffix.lower() == ".dcm":
        return dicomio.read_pixels(path)
    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise UserError(f"{path}: image cannot be read (missing or corrupt).")
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_BGR2GRAY)
    return arr


def read_source(path: str | Path, kind: str, bcdr_intensity: str = "minmax"):
    """(image, extremes): a mammogram and the (lo, hi) of its whole-image min-max to 8 bit, or
    None where its 8-bit values are used as they are. ``kind``: dicom or bcdr (lesion table)."""
    if kind == "bcdr" and bcdr_intensity == "as_is":
        # The original reads BCDR's 8-bit images as they are (data_utils/utils.py,
        # get_image_from_metapoint: cv2.IMREAD_GRAYSCALE), without any rescaling.
        arr = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if arr is None:
            raise UserError(f"{path}: image cannot be read (missing or corrupt).")
        return arr, None
    arr = read_image(path)
    return arr, (arr.min(), arr.max())


def cut(image: np.ndarray, window, extremes, size: int) -> np.ndarray:
    """The ``size``-square 8-bit crop of a window (x0, y0, side): min-maxed with the whole
    image's ``extremes`` (None: as is), cv2.resize INTER_AREA as MammographyDataset.__getitem__."""
    x0, y0, side = window
    patch = image[y0 : y0 + side, x0 : x0 + side]
    if extremes is not None:
        patch = dicomio.to_uint8_minmax(patch, *extremes)
    return cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)


def centred_box(bbox, image_shape, spec: CropSpec, lesion_id: str) -> tuple[int, int, int]:
    """(x0, y0, side): side w + 2 x margin (>= min_side), centred on the box with a seeded
    jitter, shifted to lie inside the image; a side larger than the image is clipped to it."""
    x, y, w, h = bbox
    ih, iw = image_shape
    side = max(int(w) + 2 * spec.margin, spec.min_side)
    side = min(side, ih, iw)
    rng = np.random.default_rng(stable_seed(spec.seed, lesion_id))
    jx, jy = rng.integers(-spec.jitter, spec.jitter + 1, size=2) if spec.jitter else (0, 0)
    cx, cy = x + w / 2 + jx, y + h / 2 + jy
    x0 = int(round(cx - side / 2))
    y0 = int(round(cy - side / 2))
    x0 = min(max(x0, 0), iw - side)
    y0 = min(max(y0, 0), ih - side)
    return x0, y0, side


def _study_extent(coord, length, image_max, spec: CropSpec, rng, other=None) -> tuple[int, int]:
    """(start, side) along one axis, step by step as the original's get_measures_for_crop
    (gan_compare/dataset/base_dataset.py). ``other``: the side of the first axis (second axis)."""
    if other is None:
        side = length + 2 * spec.margin
        # "rather zoom out than in": N(side x zoom_offset, side x zoom_spread), truncated
        zoom = int(rng.normal(side * spec.zoom_offset, side * spec.zoom_spread))
    else:
        coord -= (other - length) // 2  # square: centred on the box, no margin, no zoom
        side, zoom = other, 0
    side += zoom // 2
    coord -= zoom // 2
    # One-sided: the min() makes every shift <= -max_translation_offset x side. (The original's
    # following "r_transl > int(l * offset)" branch can never be taken for offsets >= 0.)
    shift = min(
        int(-side * spec.max_translation_offset),
        int(rng.normal(0, side * spec.translation_spread)),
    )
    coord = max(0, coord + shift)
    if side < spec.min_side:
        start, side = coord - (spec.min_side - length) // 2, spec.min_side
    else:
        start = coord - spec.margin  # in y this subtracts the margin a second time
    start = max(0, start)
    start -= max(0, start + side - image_max)  # back into the image (negative if side > image)
    return start, side


def study_box(bbox, image_shape, spec: CropSpec, lesion_id: str) -> tuple[int, int, int]:
    """(x0, y0, side) of the original's window for a lesion box (x, y, w, h).

    Not bit-identical to the published crops: the original drew its three normals (x zoom, x
    shift, y shift) from numpy's global RNG in dataset order, so a crop's draws depended on every
    lesion before it; here they come from a generator seeded per lesion (data.crop.seed + lesion
    id), with the same distribution and independent of order and workers. Edge case: when the
    side exceeds the image height or width, the original's start becomes negative (an empty or
    wrapped numpy slice); here the side is clipped to the image and the window kept inside it,
    as the centred framing does.
    """
    x, y, w, h = (int(v) for v in bbox)
    ih, iw = image_shape
    rng = np.random.default_rng(stable_seed(spec.seed, lesion_id))
    x0, side = _study_extent(x, w, iw, spec, rng)
    y0, _ = _study_extent(y, h, ih, spec, rng, other=side)
    if side > min(ih, iw):
        side = min(ih, iw)
        x0 = min(max(x0, 0), iw - side)
        y0 = min(max(y0, 0), ih - side)
    return x0, y0, side


def crop_box(bbox, image_shape, spec: CropSpec, lesion_id: str) -> tuple[int, int, int]:
    """(x0, y0, side) of the square crop window of a lesion box (x, y, w, h)."""
    framing = study_box if spec.framing == "study" else centred_box
    return framing(bbox, image_shape, spec, lesion_id)


def crop_lesion(image: np.ndarray, bbox, spec: CropSpec, lesion_id: str) -> np.ndarray:
    """The 8-bit, ``size``-square crop of one lesion of a mammogram, min-maxed as a whole."""
    window = crop_box(bbox, image.shape, spec, lesion_id)
    return cut(image, window, (image.min(), image.max()), spec.size)


def _crop_image(args) -> list[tuple[str, str, tuple[int, int, int]]]:
    image_path, kind, lesions, out_dir, spec, bcdr_intensity = args
    image, extremes = read_source(image_path, kind, bcdr_intensity)  # once for all its lesions
    written = []
    for lesion in lesions:
        window = crop_box(lesion["bbox"], image.shape, spec, lesion["lesion_id"])
        crop = cut(image, window, extremes, spec.size)
        rel = f"{lesion['dataset']}/{lesion['lesion_id']}.png"
        path = Path(out_dir) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(path), crop):
            raise UserError(f"{path}: writing the crop failed (disk full or not writable?)")
        written.append((lesion["lesion_id"], rel, window))
    return written


def resolve_images(
    images, dicom_root: str | Path | None = None, bcdr_root: str | Path | None = None
) -> dict[str, Path]:
    """Paths of the ``image`` references of a lesion table (see lesions.LESION_COLUMNS)."""
    index = None
    out = {}
    for ref in sorted(set(images)):
        kind, _, rest = ref.partition(":")
        if kind == "dicom":
            if dicom_root is None:
                raise UserError(f"{ref}: a DICOM image, but no DICOM folder was given")
            if index is None:
                index = dicomio.index_series(dicom_root)
            series, _, name = rest.rpartition("/")
            match = [f for f in index.get(series, []) if f.name == name]
            if len(match) != 1:
                raise UserError(
                    f"{ref}: not found under {dicom_root}; the DICOM tree changed since the "
                    "lesion table was made: rerun the lesions rule."
                )
            out[ref] = match[0]
        elif kind == "bcdr":
            if bcdr_root is None:
                raise UserError(f"{ref}: a BCDR image, but no BCDR folder was given")
            out[ref] = Path(bcdr_root) / rest
        else:
            raise UserError(f"{ref}: unknown image reference (expected dicom:... or bcdr:...)")
    return out


def make_crops(
    lesions: pd.DataFrame,
    out_dir: str | Path,
    spec: CropSpec,
    workers: int = 1,
    dicom_root: str | Path | None = None,
    bcdr_root: str | Path | None = None,
    bcdr_intensity: str = "minmax",
) -> pd.DataFrame:
    """Crop every lesion into ``out_dir/<dataset>/<lesion_id>.png``; return the crop index
    (CROP_COLUMNS, then WINDOW_COLUMNS: the lesion box and the crop window in mammogram pixels).

    Each mammogram is decoded once for all of its lesions; images are processed in parallel by
    ``workers`` processes, one image per task, so memory stays bounded by ``workers`` images.
    """
    check_choice("data.bcdr.intensity", bcdr_intensity, BCDR_INTENSITIES)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        paths = resolve_images(lesions["image"], dicom_root, bcdr_root)
        by_image: dict[tuple[str, str], list[dict]] = {}
        for r in lesions[
            ["image", "lesion_id", "dataset", "bbox_x", "bbox_y", "bbox_w", "bbox_h"]
        ].to_dict("records"):
            bbox = (r["bbox_x"], r["bbox_y"], r["bbox_w"], r["bbox_h"])
            key = (str(paths[r["image"]]), r["image"].partition(":")[0])
            by_image.setdefault(key, []).append(
                {"lesion_id": r["lesion_id"], "dataset": r["dataset"], "bbox": bbox}
            )
        jobs = [
            (path, kind, items, tmp, spec, bcdr_intensity)
            for (path, kind), items in sorted(by_image.items())
        ]
        if workers > 1:
            with ProcessPoolExecutor(workers) as pool:
                results = list(pool.map(_crop_image, jobs))
        else:
            results = [_crop_image(j) for j in jobs]
    done = {lesion_id: (rel, window) for r in results for lesion_id, rel, window in r}
    cols = ["lesion_id", "patient_id", "dataset", "portion", "label"] + WINDOW_COLUMNS[:4]
    index = lesions[cols].copy()
    # Paths relative to the crop folder (fileio.read_manifest): the index stays true wherever
    # the folder is (a module prefix, a storage plugin's local copy).
    index.insert(0, "path", [done[i][0] for i in index["lesion_id"]])
    index["sha256"] = [sha256_file(out_dir / p) for p in index["path"]]
    windows = np.array([done[i][1] for i in index["lesion_id"]], dtype=np.int64).reshape(-1, 3)
    index["crop_x0"], index["crop_y0"], index["crop_side"] = windows.T
    return index[CROP_COLUMNS + WINDOW_COLUMNS].reset_index(drop=True)
