"""DICOM reading: series index for any layout, and clear errors for bad files."""

from __future__ import annotations

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.uid import RLELossless

from mammodp.data import dicomio
from mammodp.data.phantom import write_dicom
from mammodp.errors import UserError

from ..helpers.dicom import NO_DECODER, with_junk_compressed_pixels


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
    # JPEG 2000 Part 2: pydicom has no decoder: one line that says so and names the fix.
    with_junk_compressed_pixels(tmp_path / "a.dcm", NO_DECODER, tmp_path / "j2k2.dcm")
    with pytest.raises(UserError, match=r"j2k2.dcm: .* compressed transfer syntax") as e:
        dicomio.read_pixels(tmp_path / "j2k2.dcm")
    assert "has no decoder" in str(e.value) and "gdcmconv --raw" in str(e.value)
    assert "\n" not in str(e.value)


# pydicom's own test files: lossless encodings of MR_small.dcm
LOSSLESS_OF_MR_SMALL = [
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_RLE.dcm",
]


@pytest.mark.parametrize("name", LOSSLESS_OF_MR_SMALL)
def test_pydicoms_lossless_files_decode_to_the_uncompressed_pixels(name):
    from pydicom.data import get_testdata_file

    want = dicomio.read_pixels(get_testdata_file("MR_small.dcm"))
    assert np.array_equal(dicomio.read_pixels(get_testdata_file(name)), want)


@pytest.mark.parametrize(
    ("name", "shape", "bits"),
    [
        ("JPEG2000.dcm", (1024, 256), 16),  # JPEG 2000 (lossy)
        ("JPGExtended.dcm", (1024, 256), 12),  # 12-bit JPEG extended: Pillow cannot
        ("JPEGLSNearLossless_16.dcm", (50, 10), 16),  # JPEG-LS near-lossless
        ("SC_rgb_jpeg.dcm", None, None),  # colour: refused
    ],
)
def test_pydicoms_compressed_files_decode_or_are_refused(name, shape, bits):
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    if shape is None:
        with pytest.raises(UserError, match="only single-frame grayscale"):
            dicomio.read_pixels(path)
        return
    arr = dicomio.read_pixels(path)
    assert arr.shape == shape and arr.dtype == np.uint16 and int(arr.max()) < 2**bits
    assert arr.std() > 0


@pytest.mark.parametrize(
    ("name", "what"),
    [
        ("examples_palette.dcm", "PALETTE COLOR, 1 sample(s) per pixel, 1 frame(s)"),
        ("examples_ybr_color.dcm", "YBR_FULL_422, 3 sample(s) per pixel"),
        ("rtdose.dcm", "MONOCHROME2, 1 sample(s) per pixel, 15 frame(s)"),
    ],
)
def test_anything_but_one_grayscale_frame_is_refused_in_one_line(name, what):
    from pydicom.data import get_testdata_file

    with pytest.raises(UserError) as e:
        dicomio.read_pixels(get_testdata_file(name))
    assert what in str(e.value) and "only single-frame grayscale" in str(e.value)
    assert "\n" not in str(e.value)


def test_a_file_the_installed_decoders_reject_says_why_in_one_line():
    """pydicom's JPEG-lossy.dcm has a marker libjpeg rejects and is 12-bit for Pillow: the
    message names the decoders and their reasons, on one line."""
    from pydicom.data import get_testdata_file

    with pytest.raises(UserError) as e:
        dicomio.read_pixels(get_testdata_file("JPEG-lossy.dcm"))
    message = str(e.value)
    assert "cannot be decoded by the installed decoders (pillow, pylibjpeg)" in message
    assert "misplaced marker" in message and "\n" not in message


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
    for ts in ("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.80"):  # JPEG 2000, JPEG-LS
        with_junk_compressed_pixels(tmp_path / "a.dcm", ts, tmp_path / "bad.dcm")
        with pytest.raises(
            UserError, match=r"bad.dcm: pixel data compressed with .* cannot be decoded by"
        ) as e:
            dicomio.read_pixels(tmp_path / "bad.dcm")
        assert "corrupt or truncated" in str(e.value) and "\n" not in str(e.value)
