"""No DICOM header value of the inputs reaches any output; DP runs never report spent epsilon
above their target."""

from __future__ import annotations

import json
import shutil
from datetime import datetime

import pydicom
import pytest

from .helpers.configs import REPO, tiny_config
from .helpers.snakemake import snakemake

pytestmark = pytest.mark.workflow


def _header_values(tree) -> set[str]:
    """Identifying values of the inputs: names, birth and study dates (in the formats they may
    be written), SOP instance UIDs (the public CSVs hold only study and series UIDs)."""
    values = set()
    for f in tree.rglob("*.dcm"):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        values.update(
            {str(ds.PatientName), str(ds.PatientName).split("^")[0], str(ds.SOPInstanceUID)}
        )
        for tag in ("PatientBirthDate", "StudyDate"):
            d = datetime.strptime(str(getattr(ds, tag)), "%Y%m%d")
            values.update({d.strftime("%Y%m%d"), d.strftime("%m-%d-%Y"), d.strftime("%Y-%m-%d")})
    return {v for v in values if len(v) >= 6}


def test_no_header_value_in_any_output(tmp_path, write_config):
    work = tmp_path / "work"
    shutil.copytree(REPO / "config", work / "config")
    cfg = write_config(tiny_config())
    assert snakemake(work, "--configfile", str(cfg), "--cores", "2").returncode == 0
    assert (
        snakemake(work, "--configfile", str(cfg), "--report", "results/report.html").returncode == 0
    )
    secrets = _header_values(work / "results" / "phantom" / "CBIS-DDSM")
    assert secrets
    outputs = [
        p
        for p in (work / "results").rglob("*")
        if p.is_file() and "phantom" not in p.relative_to(work / "results").parts
    ]
    assert any(p.name == "report.html" for p in outputs) and len(outputs) > 50
    for path in outputs:
        data = path.read_bytes()
        for value in secrets:
            assert value.encode() not in data, f"{value!r} found in {path}"
    for path in (work / "results" / "classify").rglob("privacy.json"):
        p = json.loads(path.read_text())
        if p["dp"]:
            assert p["epsilon_final"] <= p["target_epsilon"]
            assert p["epsilon_at_chosen_epoch"] <= p["target_epsilon"]
