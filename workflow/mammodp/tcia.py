"""CBIS-DDSM from The Cancer Imaging Archive (collection CBIS-DDSM, DOI
10.7937/K9/TCIA.2016.7O02S9CY, CC BY 3.0): the case-description CSVs from their published URLs,
and the DICOM series the mass CSVs reference, one series archive at a time through the NBIA REST
API (``getImage`` serves a series as a zip; no login).

Every archive is verified before it counts (zip integrity, each file a readable DICOM of the
expected SeriesInstanceUID); a series counts as done only once its ``.done`` marker is written,
so an interrupted run resumes without fetching finished series again. Connection errors and 5xx
answers are retried with exponential backoff.
"""

from __future__ import annotations

import io
import logging
import shutil
import time
import zipfile
from pathlib import Path

import pandas as pd
import pydicom
import requests
from tqdm import tqdm

from .errors import UserError
from .fileio import atomic_dir, atomic_path
from .lesions import read_mass_csv

log = logging.getLogger(__name__)

USER_AGENT = "mammodp (+https://github.com/; Snakemake workflow)"


def fetch(
    url: str,
    params: dict | None = None,
    retries: int = 5,
    backoff: float = 2.0,
    timeout: float = 120.0,
) -> bytes:
    """GET with retries on connection errors, timeouts and 5xx; one clear error otherwise."""
    last = None
    for attempt in range(retries):
        try:
            r = requests.get(
                url, params=params, timeout=timeout, headers={"User-Agent": USER_AGENT}
            )
            if r.status_code >= 500:
                last = f"HTTP {r.status_code}"
            elif r.status_code >= 400:
                raise UserError(f"{r.url}: HTTP {r.status_code}; check the URL in the config")
            else:
                return r.content
        except (
            requests.ConnectionError,
            requests.Timeout,
            requests.exceptions.ChunkedEncodingError,
        ) as e:
            last = f"{type(e).__name__}: {e}"
        if attempt + 1 < retries:
            time.sleep(backoff * 2**attempt)
    raise UserError(
        f"cannot download {url} after {retries} attempts ({last}). Check the network, or the "
        "TCIA settings under data.tcia in the config."
    )


def download_metadata(urls: dict[str, str], out_dir: str | Path, **kw) -> None:
    """The four case-description CSVs; each checked to parse as the expected table."""
    names = {
        "mass_train": "mass_case_description_train_set.csv",
        "mass_test": "mass_case_description_test_set.csv",
        "calc_train": "calc_case_description_train_set.csv",
        "calc_test": "calc_case_description_test_set.csv",
    }
    for key, name in names.items():
        dest = Path(out_dir) / name
        data = fetch(urls[key], **kw)
        try:
            df = pd.read_csv(io.BytesIO(data))
        except Exception as e:
            raise UserError(f"{urls[key]}: the download is not a CSV ({e})") from e
        if "patient_id" not in df.columns or "pathology" not in df.columns:
            raise UserError(f"{urls[key]}: not a CBIS-DDSM case-description CSV")
        with atomic_path(dest) as tmp:
            tmp.write_bytes(data)
        log.info("%s: %d rows", dest, len(df))


def needed_series(
    mass_csvs: list[str | Path], max_patients: int | None
) -> tuple[list[str], list[str]]:
    """Series UIDs referenced by the mass CSVs (mammogram, ROI, cropped), for all patients or the
    first ``max_patients`` in sorted order; and those patients."""
    rows = pd.concat([read_mass_csv(p, "any") for p in mass_csvs], ignore_index=True)
    patients = sorted(rows["patient_id"].unique())
    if max_patients:
        patients = patients[:max_patients]
        rows = rows[rows["patient_id"].isin(patients)]
    uids = list(
        dict.fromkeys(
            uid for col in ("image_series", "crop_series", "mask_series") for uid in rows[col]
        )
    )
    return uids, patients


def verify_archive(data: bytes, uid: str) -> list[tuple[str, bytes]]:
    """The files of a series zip, after checking integrity and that each is a DICOM of ``uid``."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        bad = zf.testzip()
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        raise ValueError(f"not a valid zip archive ({e})") from e
    if bad:
        raise ValueError(f"corrupt member {bad}")
    files = []
    for info in zf.infolist():
        if info.is_dir() or not info.filename.lower().endswith(".dcm"):
            continue
        blob = zf.read(info)
        try:
            ds = pydicom.dcmread(io.BytesIO(blob), stop_before_pixels=True)
        except Exception as e:
            raise ValueError(f"{info.filename} is not a readable DICOM ({e})") from e
        if str(getattr(ds, "SeriesInstanceUID", "")) != uid:
            raise ValueError(f"{info.filename} belongs to series {ds.SeriesInstanceUID}, not {uid}")
        files.append((Path(info.filename).name, blob))
    if not files:
        raise ValueError("the archive holds no DICOM file")
    return files


def download_series(api_url: str, uid: str, root: str | Path, attempts: int = 3, **kw) -> int:
    """Fetch, verify and store one series under ``root/<uid>/``; skip it when already done."""
    root = Path(root)
    done = root / f"{uid}.done"
    if done.exists():
        return 0
    url = api_url.rstrip("/") + "/getImage"
    reason = ""
    for _ in range(attempts):  # a truncated or wrong archive is fetched again
        data = fetch(url, params={"SeriesInstanceUID": uid}, **kw)
        try:
            files = verify_archive(data, uid)
            break
        except ValueError as e:
            reason = str(e)
            log.warning("series %s: %s; fetching it again", uid, reason)
    else:
        raise UserError(f"series {uid}: every download was rejected ({reason}); try again later")
    with atomic_dir(root / uid) as tmp:
        for name, blob in files:
            (tmp / name).write_bytes(blob)
    done.write_text(f"{len(files)}\n")
    return len(files)


def download_dicom(
    api_url: str,
    mass_csvs,
    root: str | Path,
    max_patients: int | None,
    manifest: str | Path,
    patients_file: str | Path,
    **kw,
) -> None:
    uids, patients = needed_series(mass_csvs, max_patients)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob("*.part"):  # left by a killed run; never trusted
        shutil.rmtree(stale, ignore_errors=True)
    for uid in tqdm(uids, desc="CBIS-DDSM series", unit="series"):
        download_series(api_url, uid, root, **kw)
    rows = [{"series_uid": u, "files": int((root / f"{u}.done").read_text())} for u in uids]
    with atomic_path(manifest) as tmp:
        pd.DataFrame(rows).to_csv(tmp, sep="\t", index=False)
    with atomic_path(patients_file) as tmp:
        tmp.write_text("\n".join(patients) + "\n")
