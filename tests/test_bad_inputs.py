"""The bad-input matrix of the README: each bad input stops the run with its message (or is
handled as documented) and nothing downstream runs."""

from __future__ import annotations

import json
import re
import shutil

import cv2
import numpy as np
import pandas as pd
import pydicom
import pytest
import yaml

from .helpers.configs import REPO, tiny_config
from .helpers.dicom import NO_DECODER, with_junk_compressed_pixels
from .helpers.snakemake import snakemake

pytestmark = pytest.mark.workflow


def readme_table() -> dict[str, tuple[str, str]]:
    """case -> (what happens, message excerpt) from the README's "Bad inputs" section."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Bad inputs") :]
    section = section[: section.index("\n## ", 3)]
    rows = {}
    for m in re.finditer(r"^\| `(\w+)` \| [^|]+ \| ([^|]+) \| (.+) \|$", section, re.M):
        message = m[3].strip()
        rows[m[1]] = (m[2].strip(), "" if message == "—" else message.split("`")[1])
    return rows


def _config(work, **overrides):
    c = tiny_config(**{"experiments.table": "config/experiments.tsv", **overrides})
    path = work / "cfg.yaml"
    path.write_text(yaml.safe_dump(c, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """A workdir where the data stage ran once (phantom, lesions, crops, split)."""
    work = tmp_path_factory.mktemp("baseline")
    shutil.copytree(REPO / "config", work / "config")
    cfg = _config(work)
    r = snakemake(work, "--configfile", str(cfg), "--cores", "2", "--until", "split")
    assert r.returncode == 0, r.stderr[-3000:]
    return work


def _case_dir(baseline, tmp_path):
    work = tmp_path / "case"
    shutil.copytree(baseline, work, symlinks=True)
    shutil.rmtree(work / "results" / "data")  # the data stage reruns on the changed inputs
    shutil.rmtree(work / ".snakemake" / "locks", ignore_errors=True)
    return work


def _dicoms(work, kind):
    tree = work / "results" / "phantom" / "CBIS-DDSM"
    return sorted(p for p in tree.rglob("1-1.dcm") if kind in p.parent.name)


def _mass_csv(work):
    return work / "results" / "phantom" / "metadata" / "mass_case_description_train_set.csv"


def corrupt_dicom(work):
    _dicoms(work, "full mammogram")[0].write_bytes(b"not a DICOM file at all")


def truncated_dicom(work):
    f = _dicoms(work, "full mammogram")[0]
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def compressed_dicom(work):
    f = _dicoms(work, "full mammogram")[0]
    with_junk_compressed_pixels(f, NO_DECODER, f)  # JPEG 2000 Part 2: no pydicom decoder


def palette_dicom(work):
    f = _dicoms(work, "full mammogram")[0]
    ds = pydicom.dcmread(f)
    ds.PhotometricInterpretation = "PALETTE COLOR"  # its values are palette indices
    ds.save_as(f)


def monochrome1(work):
    f = _dicoms(work, "full mammogram")[0]
    ds = pydicom.dcmread(f)
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(f)
    return f.parent.parent.parent.name  # the image id (folder) whose crops are now inverted


def mask_wrong_size(work):
    for series in sorted({p.parent for p in (work / "results" / "phantom").rglob("1-2.dcm")}):
        for f in sorted(series.glob("*.dcm")):
            ds = pydicom.dcmread(f)
            arr = ds.pixel_array
            if len(np.unique(arr)) <= 2:
                small = cv2.resize(
                    arr, (arr.shape[1] - 7, arr.shape[0] + 5), interpolation=cv2.INTER_NEAREST
                )
                ds.Rows, ds.Columns = small.shape
                ds.PixelData = np.ascontiguousarray(small).tobytes()
                ds.save_as(f)
                return


def missing_roi_series(work):
    roi = next(
        p for p in (work / "results" / "phantom" / "CBIS-DDSM").iterdir() if p.name.endswith("_1")
    )
    shutil.rmtree(roi)


def _edit_csv(work, edit):
    df = pd.read_csv(_mass_csv(work), dtype=str, keep_default_na=False)
    edit(df).to_csv(_mass_csv(work), index=False)


def csv_renamed_column(work):
    _edit_csv(work, lambda df: df.rename(columns={"pathology": "pathologie"}))


def csv_missing_column(work):
    _edit_csv(work, lambda df: df.drop(columns=["ROI mask file path"]))


def csv_unknown_pathology(work):
    def edit(df):
        df.loc[2, "pathology"] = "UNSURE"
        return df

    _edit_csv(work, edit)


def _processed(work, bad):
    """A small folder in the published layout, one file bad."""
    root = work / "published"
    rng = np.random.default_rng(0)
    for ds, split, n in (
        ("cbis-ddsm", "train", 8),
        ("cbis-ddsm", "val", 4),
        ("cbis-ddsm", "test", 4),
        ("bcdr", "test", 4),
    ):
        for i in range(n):
            label = i % 2
            folder = root / ds / split / ("is_benign_true" if label else "is_benign_false")
            folder.mkdir(parents=True, exist_ok=True)
            name = f"patient{ds}__{split}{i}_image{i}_mass{i}_is_benign_{label}.png"
            cv2.imwrite(str(folder / name), rng.integers(0, 255, (128, 128), dtype=np.uint8))
    victim = next((root / "cbis-ddsm" / "train" / "is_benign_true").glob("*.png"))
    cv2.imwrite(str(victim), bad)
    return {
        "data.source": "processed",
        "data.external": "bcdr",
        "data.processed": {
            "path": str(root),
            "verify": False,
            "archive_url": "https://example.org/not-used.zip",
        },
    }


def png_wrong_size(work):
    return _processed(work, np.zeros((64, 64), np.uint8))


def png_wrong_mode(work):
    return _processed(work, np.zeros((128, 128, 3), np.uint8))


def empty_class_in_split(work, baseline):
    lesions = pd.read_csv(baseline / "results" / "data" / "lesions.csv")
    train = lesions[lesions["portion"] == "train"]
    benign_only = train.groupby("patient_id")["label"].min()
    val = sorted(benign_only[benign_only == 1].index[:3])
    split = {
        "train": sorted(set(train["patient_id"]) - set(val)),
        "val": val,
        "test": sorted(set(lesions.loc[lesions["portion"] == "test", "patient_id"])),
    }
    (work / "split.json").write_text(json.dumps(split))
    return {"data.split.file": "split.json"}


RUN_CASES = {
    "corrupt_dicom": (corrupt_dicom, "lesions.csv"),
    "truncated_dicom": (truncated_dicom, "crop_index.csv"),
    "compressed_dicom": (compressed_dicom, "crop_index.csv"),
    "palette_dicom": (palette_dicom, "crop_index.csv"),
    "monochrome1": (monochrome1, None),
    "mask_wrong_size": (mask_wrong_size, None),
    "missing_roi_series": (missing_roi_series, "lesions.csv"),
    "csv_renamed_column": (csv_renamed_column, "lesions.csv"),
    "csv_missing_column": (csv_missing_column, "lesions.csv"),
    "csv_unknown_pathology": (csv_unknown_pathology, "lesions.csv"),
    "png_wrong_size": (png_wrong_size, "processed/crop_index.csv"),
    "png_wrong_mode": (png_wrong_mode, "processed/crop_index.csv"),
    "empty_class_in_split": (empty_class_in_split, "crops.csv"),
}
PARSE_CASES = {
    "unknown_experiment": {"experiments.select": ["nope"]},
    "epsilon_not_positive": "table:real_frozen_dp_eps6\t",
    "delta_not_below_one": {"classifier.dp.delta": 1},
    "missing_pretrained_source": "table:synpre_real_frozen_dp_eps6\t",
    "invalid_config_type": {"seeds": "42"},
}


def test_the_readme_table_lists_exactly_the_tested_cases():
    assert set(readme_table()) == set(RUN_CASES) | set(PARSE_CASES)


@pytest.mark.parametrize("case", sorted(RUN_CASES))
def test_bad_input_at_run_time(case, baseline, tmp_path):
    happens, message = readme_table()[case]
    inject, downstream = RUN_CASES[case]
    work = _case_dir(baseline, tmp_path)
    extra = inject(work, baseline) if case == "empty_class_in_split" else inject(work)
    overrides = extra if isinstance(extra, dict) else {}
    cfg = _config(work, **overrides)
    r = snakemake(work, "--configfile", str(cfg), "--cores", "2", "--until", "split")
    out = r.stdout + r.stderr
    logs = "".join(p.read_text() for p in (work / "results" / "logs").rglob("*.log"))
    if happens == "stops" or happens.startswith("stops"):
        assert r.returncode != 0, out[-2000:]
        assert message in out, out[-3000:]  # the failed job's log is shown
        assert "Traceback" not in logs
        assert not (work / "results" / "data" / downstream).exists()
        assert not (work / "results" / "data" / "crops.csv").exists()
    else:
        assert r.returncode == 0, out[-3000:]
        assert message in logs
        if case == "monochrome1":  # the crops of that image are the inverse of the baseline's
            image_id = extra
            for crop in (work / "results" / "data" / "crops" / "cbis-ddsm").glob(
                f"*{image_id}_*.png"
            ):
                before = cv2.imread(str(baseline / crop.relative_to(work)), 0).astype(int)
                after = cv2.imread(str(crop), 0).astype(int)
                assert np.abs((255 - before) - after).max() <= 1


@pytest.mark.parametrize("case", sorted(PARSE_CASES))
def test_bad_input_at_parse_time(case, tmp_path):
    _, message = readme_table()[case]
    work = tmp_path / "work"
    shutil.copytree(REPO / "config", work / "config")
    change = PARSE_CASES[case]
    if isinstance(change, str):  # edit one experiment row of the table
        prefix = change.split(":", 1)[1]
        table = work / "config" / "experiments.tsv"
        rows = table.read_text().splitlines()
        fix = {
            "real_frozen_dp_eps6\t": lambda r: r.replace("\tbackbone\t6\t", "\tbackbone\t0\t"),
            "synpre_real_frozen_dp_eps6\t": lambda r: r.replace("from:syn_full_nodp", "from:nope"),
        }
        table.write_text(
            "\n".join(fix[prefix](r) if r.startswith(prefix) else r for r in rows) + "\n"
        )
        cfg = _config(work)
    else:
        cfg = _config(work, **change)
    r = snakemake(work, "-n", "--configfile", str(cfg), "--cores", "1")
    assert r.returncode != 0
    assert message in r.stdout + r.stderr
    assert not (work / "results").exists()  # nothing ran
