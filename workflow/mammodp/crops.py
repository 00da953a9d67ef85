"""Mass crops as the study made them (DESIGN §3): whole-mammogram min-max to 8 bit; a square of
side bbox-width + 2 x margin (at least ``min_side``), centred on the box with a small seeded
jitter, shifted to lie inside the image; area resize to ``size``; 8-bit grayscale PNG without any
header data.
"""

from __future__ import annotations

import logging
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from . import dicomio
from .errors import UserError
from .fileio import atomic_dir, sha256_file, stable_seed

log = logging.getLogger(__name__)

CROP_COLUMNS = ["path", "lesion_id", "patient_id", "dataset", "portion", "label", "sha256"]


@dataclass(frozen=True)
class CropSpec:
    margin: int = 60
    min_side: int = 128
    size: int = 128
    jitter: int = 8
    seed: int = 0


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


def crop_box(bbox, image_shape, spec: CropSpec, lesion_id: str) -> tuple[int, int, int]:
    """(x0, y0, side) of the square crop for a lesion box (x, y, w, h)."""
    x, y, w, h = bbox
    ih, iw = image_shape
    side = max(int(w) + 2 * spec.margin, spec.min_side)
    side = min(side, ih, iw)  # a crop larger than the image is clipped to it
    rng = np.random.default_rng(stable_seed(spec.seed, lesion_id))
    jx, jy = rng.integers(-spec.jitter, spec.jitter + 1, size=2) if spec.jitter else (0, 0)
    cx, cy = x + w / 2 + jx, y + h / 2 + jy
    x0 = int(round(cx - side / 2))
    y0 = int(round(cy - side / 2))
    x0 = min(max(x0, 0), iw - side)
    y0 = min(max(y0, 0), ih - side)
    return x0, y0, side


def crop_lesion(
    image: np.ndarray,
    bbox,
    spec: CropSpec,
    lesion_id: str,
    lo: float | None = None,
    hi: float | None = None,
) -> np.ndarray:
    """The 8-bit, ``size``-square crop of one lesion. The whole-image min-max (``lo``, ``hi``;
    computed from ``image`` when not given) is applied to the patch only: the same numbers as
    scaling the whole mammogram first, without converting ~30 MB per image."""
    x0, y0, side = crop_box(bbox, image.shape, spec, lesion_id)
    lo = image.min() if lo is None else lo
    hi = image.max() if hi is None else hi
    patch = dicomio.to_uint8_minmax(image[y0 : y0 + side, x0 : x0 + side], lo, hi)
    return cv2.resize(patch, (spec.size, spec.size), interpolation=cv2.INTER_AREA)


def _crop_image(args) -> list[tuple[str, str]]:
    image_path, lesions, out_dir, spec = args
    image = read_image(image_path)
    lo, hi = image.min(), image.max()
    written = []
    for lesion in lesions:
        crop = crop_lesion(image, lesion["bbox"], spec, lesion["lesion_id"], lo, hi)
        rel = f"{lesion['dataset']}/{lesion['lesion_id']}.png"
        path = Path(out_dir) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(path), crop):
            raise UserError(f"{path}: writing the crop failed (disk full or not writable?)")
        written.append((lesion["lesion_id"], rel))
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
) -> pd.DataFrame:
    """Crop every lesion into ``out_dir/<dataset>/<lesion_id>.png``; return the crop index.

    Each mammogram is decoded once for all of its lesions; images are processed in parallel by
    ``workers`` processes, one image per task, so memory stays bounded by ``workers`` images.
    """
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        paths = resolve_images(lesions["image"], dicom_root, bcdr_root)
        by_image: dict[str, list[dict]] = {}
        for r in lesions[
            ["image", "lesion_id", "dataset", "bbox_x", "bbox_y", "bbox_w", "bbox_h"]
        ].to_dict("records"):
            bbox = (r["bbox_x"], r["bbox_y"], r["bbox_w"], r["bbox_h"])
            by_image.setdefault(str(paths[r["image"]]), []).append(
                {"lesion_id": r["lesion_id"], "dataset": r["dataset"], "bbox": bbox}
            )
        jobs = [(path, items, tmp, spec) for path, items in sorted(by_image.items())]
        if workers > 1:
            with ProcessPoolExecutor(workers) as pool:
                results = list(pool.map(_crop_image, jobs))
        else:
            results = [_crop_image(j) for j in jobs]
    rel_by_id = dict(pair for r in results for pair in r)
    index = lesions[["lesion_id", "patient_id", "dataset", "portion", "label"]].copy()
    index.insert(0, "path", [str(out_dir / rel_by_id[i]) for i in index["lesion_id"]])
    index["sha256"] = [sha256_file(p) for p in index["path"]]
    return index[CROP_COLUMNS].reset_index(drop=True)
