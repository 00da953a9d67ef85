"""The phantom cohort is in the exact on-disk format of the real data."""

from __future__ import annotations

import csv

import numpy as np
import pandas as pd
import pydicom

from mammodp.data.phantom import PhantomSpec, generate


def test_csv_columns_match_the_real_metadata(phantom_dir, shared_data):
    for name in ("mass_case_description_train_set.csv", "calc_case_description_test_set.csv"):
        real = pd.read_csv(shared_data / "cbis-ddsm-metadata" / name, nrows=1)
        ours = pd.read_csv(phantom_dir / "metadata" / name, nrows=1)
        assert list(ours.columns) == list(real.columns)


def test_csv_quirks(phantom_dir):
    raw = (phantom_dir / "metadata" / "mass_case_description_train_set.csv").read_bytes()
    assert b"\r\n" in raw  # CRLF line ends
    assert b'.dcm\n"' in raw  # newline inside the quoted ROI-mask path
    rows = pd.read_csv(phantom_dir / "metadata" / "mass_case_description_train_set.csv")
    assert rows.duplicated().any()  # one duplicated row, as real exports have
    assert set(rows["pathology"]) <= {"MALIGNANT", "BENIGN", "BENIGN_WITHOUT_CALLBACK"}
    assert rows["image file path"].str.endswith("000000.dcm").all()
    calc = pd.read_csv(phantom_dir / "metadata" / "calc_case_description_train_set.csv")
    assert "breast density" in calc.columns  # spelled differently from the mass files


def test_dicom_layout_and_pixels(phantom_dir):
    files = sorted((phantom_dir / "CBIS-DDSM").rglob("*.dcm"))
    assert files and all(f.name in ("1-1.dcm", "1-2.dcm") for f in files)  # served names
    full = [f for f in files if "full mammogram images" in f.parent.name]
    ds = pydicom.dcmread(full[0])
    assert ds.PhotometricInterpretation == "MONOCHROME2"
    assert ds.BitsAllocated == 16 and ds.pixel_array.dtype == np.uint16
    assert ds.pixel_array.max() > 30000  # a realistic 16-bit range
    # ROI series: mask (binary) and cropped patch in no fixed order.
    firsts = set()
    for series in {f.parent for f in files if f.name == "1-2.dcm"}:
        first = pydicom.dcmread(series / "1-1.dcm").pixel_array
        firsts.add(len(np.unique(first)) <= 2)
    assert firsts == {True, False}


def test_bcdr_outlines_format(phantom_dir):
    path = next((phantom_dir / "BCDR").rglob("*outlines.csv"))
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert {"lw_x_points", "lw_y_points", "classification", "mammography_nodule"} <= set(rows[0])
    assert rows[0]["classification"].startswith(" ")  # the published files' leading spaces
    img = path.parent / rows[0]["image_filename"].strip()
    assert img.suffix == ".tif" and img.is_file()


def test_generation_is_deterministic(tmp_path):
    spec = PhantomSpec(
        seed=3, patients_train=4, patients_test=2, patients_external=1, height=512, width=384
    )
    a, b = tmp_path / "a", tmp_path / "b"
    generate(a, spec)
    generate(b, spec)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
