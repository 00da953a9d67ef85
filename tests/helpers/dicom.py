"""DICOM files that no decoder can read, for the bad-input tests."""

from __future__ import annotations

import pydicom

NO_DECODER = "1.2.840.10008.1.2.4.92"  # JPEG 2000 Part 2 multi-component: none in pydicom 3.0


def with_junk_compressed_pixels(src, transfer_syntax: str, out) -> None:
    """A copy of ``src`` whose pixel data is one undecodable fragment in ``transfer_syntax``."""
    ds = pydicom.dcmread(src)
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.PixelData = pydicom.encaps.encapsulate([b"\xff\x4f\xff\x51" + b"\0" * 32])
    ds["PixelData"].VR = "OB"
    ds.save_as(out, enforce_file_format=True)
