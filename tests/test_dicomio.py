"""DICOM reading: series index for any layout, and clear errors for bad files."""

from __future__ import annotations

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.uid import RLELossless

from mammodp import dicomio
from mammodp.errors import UserError
from mammodp.phantom import write_dicom


def _write(path, pixels, **extra):
    header = {"PatientID": "X", "StudyInstanceUID": "1.2.3", **extra}
    write_dicom(path, pixels, header=header, series_uid="1.2.3.4", sop_uid="1.2.3.4.5", instance=1)


def test_index_maps_series_uid_to_files(phantom_dir):
    index = dicomio.index_series(phantom_dir / "CBIS-DDSM")
    sizes = {len(v) for v in index.values()}
    assert sizes <= {1, 2} and 2 in sizes


def test_monochrome1_is_inverted(tmp_path):
    arr = np.array([[0, 100], [200, 300]], np.uint16)
    _write(tmp_path / "a.dcm", arr)
    ds = pydicom.dcmread(tmp_path / "a.dcm")
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(tmp_path / "b.dcm")
    out = dicomio.read_pixels(tmp_path / "b.dcm")
    assert out[0, 0] == 300 and out[1, 1] == 0


def test_truncated_file_gives_a_clear_error(tmp_path):
    _write(tmp_path / "a.dcm", np.zeros((64, 64), np.uint16))
    data = (tmp_path / "a.dcm").read_bytes()
    (tmp_path / "t.dcm").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="t.dcm.*(corrupt|truncated)"):
        dicomio.read_pixels(tmp_path / "t.dcm")


def test_not_a_dicom(tmp_path):
    (tmp_path / "x.dcm").write_bytes(b"hello")
    with pytest.raises(UserError, match="x.dcm: not a readable DICOM"):
        dicomio.read_pixels(tmp_path / "x.dcm")


def test_compressed_pixel_data_is_decoded_or_rejected_clearly(tmp_path):
    arr = (np.arange(64 * 64) % 4096).astype(np.uint16).reshape(64, 64)
    _write(tmp_path / "a.dcm", arr)
    ds = pydicom.dcmread(tmp_path / "a.dcm")
    ds.compress(RLELossless)  # pydicom decodes RLE natively
    ds.save_as(tmp_path / "rle.dcm")
    assert np.array_equal(dicomio.read_pixels(tmp_path / "rle.dcm"), arr)
    # JPEG-LS needs a plugin that is not installed: a clear error that names the fix.
    _with_junk_compressed_pixels(tmp_path / "a.dcm", "1.2.840.10008.1.2.4.80", tmp_path / "j2k.dcm")
    with pytest.raises(
        UserError, match=r"j2k.dcm: pixel data uses the compressed transfer syntax.*pylibjpeg"
    ):
        dicomio.read_pixels(tmp_path / "j2k.dcm")


def _with_junk_compressed_pixels(src, transfer_syntax: str, out) -> None:
    """A copy of ``src`` whose pixel data is one undecodable fragment in ``transfer_syntax``."""
    ds = pydicom.dcmread(src)
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.PixelData = pydicom.encaps.encapsulate([b"\xff\x4f\xff\x51" + b"\0" * 32])
    ds["PixelData"].VR = "OB"
    ds.save_as(out, enforce_file_format=True)


def test_minmax_to_uint8():
    out = dicomio.to_uint8_minmax(np.array([[1000, 3000], [2000, 1000]], np.uint16))
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
    assert dicomio.to_uint8_minmax(np.full((2, 2), 7, np.uint16)).max() == 0


def test_minmax_rounds_as_the_originals_cv2_normalize():
    """The original's convert_to_uint8 is cv2.normalize(NORM_MINMAX, CV_8U). Exact .5 ties round
    as OpenCV's float arithmetic does, not as numpy's rint: (3210 - 2682) x 255 / 1056 = 127.5
    gives 127, where rint gives 128."""
    tie = np.array([[2682, 3210, 3738]], np.uint16)
    assert dicomio.to_uint8_minmax(tie).tolist() == [[0, 127, 255]]
    naive = np.rint((tie.astype(np.float32) - 2682) * np.float32(255 / 1056)).astype(np.uint8)
    assert naive[0, 1] == 128
    rng = np.random.default_rng(1)
    for _ in range(20):
        lo = int(rng.integers(0, 3000))
        hi = int(rng.integers(lo + 1, 65536))
        a = rng.integers(lo, hi + 1, (128, 128)).astype(np.uint16)
        want = cv2.normalize(a, None, 0, 255, cv2.NORM_MINMAX, cv2.CV_8U)
        assert np.array_equal(dicomio.to_uint8_minmax(a), want)
    signed = np.array([[-1000, 0, 3000]], np.int16)  # signed data: same min-max, no wrap-around
    assert dicomio.to_uint8_minmax(signed).tolist() == [[0, 64, 255]]


def test_corrupt_compressed_data_with_an_available_decoder(tmp_path):
    _write(tmp_path / "a.dcm", np.zeros((64, 64), np.uint16))
    # JPEG 2000: Pillow decodes it
    _with_junk_compressed_pixels(tmp_path / "a.dcm", "1.2.840.10008.1.2.4.90", tmp_path / "bad.dcm")
    with pytest.raises(
        UserError, match=r"bad.dcm: pixel data compressed with .* cannot be decoded"
    ):
        dicomio.read_pixels(tmp_path / "bad.dcm")
