"""Reading CBIS-DDSM DICOM: a series index for any download layout, and pixel decoding with
clear errors for what real archives contain (truncated files, compressed transfer syntaxes
through pydicom's pylibjpeg plugins, MONOCHROME1, colour or multi-frame images). Header values
are read only to locate and decode images; none is ever written to an output.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from mammodp.errors import UserError

log = logging.getLogger(__name__)

UNCOMPRESSED = {
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian
}


def _dcmread(path: Path, **kw) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(path, **kw)
    except FileNotFoundError as e:
        raise UserError(f"{path}: DICOM file not found") from e
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(
            f"{path}: not a readable DICOM file ({type(e).__name__}: {e}). The file is corrupt "
            "or truncated: delete it and download it again."
        ) from e


def index_series(root) -> dict[str, list[Path]]:
    """Map SeriesInstanceUID -> DICOM files under ``root`` (a folder or a list of folders, such
    as the TCIA download's one per batch), whatever the folder layout.

    The NBIA Data Retriever names folders by description (``1.000000-ROI mask images-123``), not
    by UID, so the case-description CSVs are joined to files through this index.
    """
    roots = [Path(r) for r in ([root] if isinstance(root, (str, os.PathLike)) else root)]
    for r in roots:
        if not r.is_dir():
            raise UserError(f"{r}: DICOM folder not found; run the data source rule first.")
    root = roots[0] if len(roots) == 1 else ", ".join(map(str, roots))
    index: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(p for r in roots for p in r.rglob("*.dcm")):
        ds = _dcmread(path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
        uid = getattr(ds, "SeriesInstanceUID", None)
        if not uid:
            raise UserError(f"{path}: DICOM file without SeriesInstanceUID; it cannot be matched.")
        index[str(uid)].append(path)
    if not index:
        raise UserError(f"{root}: no .dcm files found; the download is missing or incomplete.")
    return dict(index)


def image_shape(path: str | os.PathLike) -> tuple[int, int]:
    ds = _dcmread(Path(path), stop_before_pixels=True, specific_tags=["Rows", "Columns"])
    return int(ds.Rows), int(ds.Columns)


GRAYSCALE = {"MONOCHROME1", "MONOCHROME2"}
PLUGINS = "pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg (as envs/requirements.lock)"


def _decoders(ts: str) -> list[str] | None:
    """The installed plugins that decode ``ts``; None when pydicom has no decoder for it."""
    from pydicom.pixels import get_decoder

    try:
        return list(get_decoder(ts).available_plugins)
    except NotImplementedError:
        return None


def _one_line(e: Exception) -> str:
    return f"{type(e).__name__}: " + " ".join(str(e).split())


def _check_single_grayscale_frame(path: Path, ds: pydicom.Dataset) -> None:
    """Crops need one grayscale frame: colour, palette and multi-frame images are refused
    before decoding (a palette's indices are no intensities)."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    samples = int(ds.get("SamplesPerPixel", 1))
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if photometric not in GRAYSCALE or samples != 1 or frames != 1:
        raise UserError(
            f"{path}: {photometric}, {samples} sample(s) per pixel, {frames} frame(s); only "
            "single-frame grayscale (MONOCHROME1 or MONOCHROME2) mammograms can be cropped: "
            "convert it to one grayscale frame or leave it out."
        )


def _undecodable(path: Path, ts: str, e: Exception) -> UserError:
    """The true cause of a failed decode, in one line, with the fix."""
    if ts in UNCOMPRESSED:
        return UserError(
            f"{path}: pixel data cannot be decoded ({_one_line(e)}); the file is corrupt or "
            "truncated: delete it and download it again."
        )
    name = pydicom.uid.UID(ts).name
    plugins = _decoders(ts)
    if plugins is None:
        return UserError(
            f"{path}: pixel data uses the compressed transfer syntax {ts} ({name}), for which "
            "pydicom has no decoder; decompress the file (gdcmconv --raw IN OUT) and use that."
        )
    if not plugins:
        return UserError(
            f"{path}: pixel data uses the compressed transfer syntax {ts} ({name}), which no "
            f"installed decoder handles: {PLUGINS}, or decompress the file (gdcmconv --raw IN OUT)."
        )
    return UserError(
        f"{path}: pixel data compressed with {ts} ({name}) cannot be decoded by the installed "
        f"decoders ({', '.join(plugins)}): {_one_line(e)}. The data is corrupt or truncated, or "
        "a variant these decoders do not read: download it again, or decompress it with another "
        "tool (gdcmconv --raw IN OUT)."
    )


def read_pixels(path: str | os.PathLike) -> np.ndarray:
    """Decoded pixel array of a single-frame grayscale DICOM (any transfer syntax pydicom and
    the pylibjpeg plugins decode), MONOCHROME1 inverted to MONOCHROME2 (bright = dense), as
    uint8 or uint16."""
    path = Path(path)
    ds = _dcmread(path)
    ts = str(getattr(ds.file_meta, "TransferSyntaxUID", "1.2.840.10008.1.2"))
    if "PixelData" not in ds:
        raise UserError(f"{path}: DICOM file has no pixel data.")
    _check_single_grayscale_frame(path, ds)
    try:
        arr = ds.pixel_array
    except Exception as e:  # pydicom raises several types for undecodable data
        raise _undecodable(path, ts, e) from e
    if arr.ndim != 2:
        raise UserError(f"{path}: expected one grayscale frame, got pixel array shape {arr.shape}.")
    if str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")) == "MONOCHROME1":
        arr = arr.max() - arr + arr.min()  # invert so that dense tissue is bright
    if arr.dtype.kind == "i":
        arr = (arr.astype(np.int32) - int(arr.min())).astype(np.uint16)
    return arr


# dtypes cv2.normalize takes as they are; others (uint32, int64) go through float64
CV_DTYPES = {np.dtype(t) for t in (np.uint8, np.int8, np.uint16, np.int16, np.int32)} | {
    np.dtype(np.float32),
    np.dtype(np.float64),
}


def to_uint8_minmax(
    arr: np.ndarray, lo: float | None = None, hi: float | None = None
) -> np.ndarray:
    """Min-max scaling to 8 bit, the study's normalisation before cropping: the original's
    convert_to_uint8 (gan_compare/data_utils/utils.py), cv2.normalize NORM_MINMAX to CV_8U,
    called here too so that the rounding is the same (numpy's rint((v - lo) x 255 / (hi - lo))
    differs from it at ~0.006 % of pixels, those at exact .5). A constant image is 0.

    ``lo``/``hi``: the whole image's extremes when ``arr`` is a patch of it. Two extra rows
    holding them give cv2.normalize the whole image's scale and shift, and its per-pixel
    conversion then yields the same numbers as scaling the whole mammogram, without converting
    ~30 MB per image (tests/data/test_crops.py checks)."""
    if arr.dtype not in CV_DTYPES:
        arr = arr.astype(np.float64)
    if lo is None and hi is None:
        return cv2.normalize(arr, None, 0, 255, cv2.NORM_MINMAX, cv2.CV_8U)
    h = arr.shape[0]
    ext = np.empty((h + 2, *arr.shape[1:]), arr.dtype)
    ext[:h], ext[h], ext[h + 1] = arr, lo, hi
    return cv2.normalize(ext, None, 0, 255, cv2.NORM_MINMAX, cv2.CV_8U)[:h]
