"""CBIS-DDSM from The Cancer Imaging Archive (collection CBIS-DDSM, DOI
10.7937/K9/TCIA.2016.7O02S9CY, CC BY 3.0): the case-description CSVs from their published URLs,
and the DICOM series the mass CSVs reference, one series archive at a time through the NBIA REST
API (``getImage`` serves a series as a zip; no login).

Every archive is verified before it counts (zip integrity, each file a readable DICOM of the
expected SeriesInstanceUID); a series counts as done only once its ``.done`` marker is written,
so an interrupted run resumes without fetching finished series again. Connection errors, broken
bodies, 429 and 5xx answers are retried by urllib3 with exponential backoff and Retry-After.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import zipfile
from pathlib import Path

import pandas as pd
import pydicom

from mammodp.config import CASE_CSVS
from mammodp.errors import UserError
from mammodp.fileio import atomic_dir, atomic_path
from mammodp.progress import track

from .lesions import read_mass_csv

log = logging.getLogger(__name__)

USER_AGENT = "mammodp (+https://github.com/; Snakemake workflow)"


CONNECTION_LOCK_DIR = ".snakemake/tcia-locks"
RETRY_STATUS = (429, 500, 502, 503, 504)  # too many requests, and the server's own failures


def fetch(
    url: str,
    params: dict | None = None,
    retries: int = 5,
    backoff: float = 2.0,
    timeout: float = 120.0,
    settings: str = "the TCIA settings under data.tcia in the config",
) -> bytes:
    """GET with urllib3's ``Retry``: connection errors, broken bodies, 429 and 5xx are retried
    with exponential backoff, honouring Retry-After; ``retries`` attempts in all. Any other
    failure is one clear error that names ``settings`` (the config keys behind ``url``)."""
    import urllib3

    retry = urllib3.Retry(
        total=retries - 1,
        backoff_factor=backoff,
        status_forcelist=RETRY_STATUS,
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    http = urllib3.PoolManager(headers={"User-Agent": USER_AGENT}, retries=retry)
    try:
        r = http.request("GET", url, fields=params, timeout=urllib3.Timeout(timeout))
    except urllib3.exceptions.MaxRetryError as e:
        raise UserError(
            f"cannot download {url} after {retries} attempts ({type(e.reason).__name__}: "
            f"{e.reason}). Check the network, or {settings}."
        ) from e
    except urllib3.exceptions.HTTPError as e:
        raise UserError(f"cannot download {url} ({e}); check the network, or {settings}") from e
    if r.status in RETRY_STATUS:
        raise UserError(
            f"cannot download {url} after {retries} attempts (HTTP {r.status}). The server is "
            f"busy or down: try again later, or check {settings}."
        )
    if r.status >= 400:
        raise UserError(f"{url}: HTTP {r.status}; check {settings}")
    return r.data


def download_metadata(urls: dict[str, str], dests: dict[str, str | Path], **kw) -> None:
    """The four case-description CSVs (``dests``: key -> path, keys as CASE_CSVS); each checked
    to parse as the expected table."""
    for key in CASE_CSVS:
        dest = Path(dests[key])
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
    mass_csvs: list[str | Path], max_patients: int | None = None, patients: list[str] | None = None
) -> tuple[list[str], list[str]]:
    """Series UIDs referenced by the mass CSVs (mammogram, ROI, cropped) of all patients, of the
    listed ``patients``, or of the first ``max_patients`` in sorted order; and those patients."""
    rows = pd.concat([read_mass_csv(p, "any") for p in mass_csvs], ignore_index=True)
    known = sorted(rows["patient_id"].unique())
    if patients:
        unknown = sorted(set(patients) - set(known))
        if unknown:
            raise UserError(f"data.tcia.patients: {unknown[:5]} are not in the mass CSVs")
        chosen = sorted(patients)
    else:
        chosen = known[:max_patients] if max_patients else known
    rows = rows[rows["patient_id"].isin(chosen)]
    uids = list(
        dict.fromkeys(
            uid for col in ("image_series", "crop_series", "mask_series") for uid in rows[col]
        )
    )
    return uids, chosen


def list_series(
    api_url: str,
    collection: str,
    mass_csvs,
    max_patients=None,
    patients=None,
    batch_size: int = 50,
    **kw,
) -> pd.DataFrame:
    """The series to download, with TCIA's image count per series (getSeries) and a batch
    number: one Snakemake job downloads one batch."""
    uids, chosen = needed_series(mass_csvs, max_patients, patients)
    data = fetch(api_url.rstrip("/") + "/getSeries", params={"Collection": collection}, **kw)
    try:
        listing = pd.DataFrame(json.loads(data))
        counts = dict(zip(listing["SeriesInstanceUID"], listing["ImageCount"], strict=True))
    except (ValueError, KeyError) as e:
        raise UserError(
            f"{api_url}getSeries: unexpected answer ({e}); check data.tcia.api_url"
        ) from e
    missing = [u for u in uids if u not in counts]
    if missing:
        raise UserError(
            f"{len(missing)} series referenced by the mass CSVs are not in TCIA's {collection} "
            f"listing, e.g. {missing[:3]}; check data.tcia.collection and the CSVs."
        )
    out = pd.DataFrame({"series_uid": uids, "image_count": [int(counts[u]) for u in uids]})
    out["batch"] = [i // batch_size for i in range(len(out))]
    out.attrs["patients"] = chosen
    return out


def verify_archive(
    data: bytes, uid: str, expected_files: int | None = None
) -> list[tuple[str, bytes]]:
    """The files of a series zip, after checking integrity, that each is a DICOM of ``uid`` and
    that their number is what TCIA lists."""
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
    if expected_files is not None and len(files) != expected_files:
        raise ValueError(f"{len(files)} DICOM files, TCIA lists {expected_files}")
    return files


def download_series(
    api_url: str,
    uid: str,
    root: str | Path,
    expected_files: int | None = None,
    attempts: int = 3,
    **kw,
) -> int:
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
            files = verify_archive(data, uid, expected_files)
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


def download_batch(
    api_url: str,
    series: pd.DataFrame,
    batch: int,
    root: str | Path,
    marker: str | Path,
    connections: int = 4,
    lock_dir: str | Path = CONNECTION_LOCK_DIR,
    slot_timeout: float = 24 * 3600.0,
    **kw,
) -> None:
    """Download one batch of the series table; the marker lists it once all are verified.
    At most ``connections`` batches download at once on this machine, however many jobs
    Snakemake starts (a slot lock per connection), to stay polite to the public API."""
    from mammodp.gpu import claim, release

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    part = series[series["batch"] == batch]
    if part.empty:
        raise UserError(f"batch {batch} is not in the series table")
    # Left by a killed run of this batch; never trusted. Other batches' may be in progress.
    for uid in part["series_uid"]:
        for stale in root.glob(f".{uid}.????????.part"):  # mkdtemp's 8-character infix
            shutil.rmtree(stale, ignore_errors=True)
    slot = claim(list(range(connections)), lock_dir, timeout=slot_timeout, kind="tcia")
    try:
        rows = track(part.itertuples(), len(part), f"batch {batch}", "series", log)
        for row in rows:
            download_series(api_url, row.series_uid, root, int(row.image_count), **kw)
    finally:
        release(slot, lock_dir, kind="tcia")
    with atomic_path(marker) as tmp:
        part.to_csv(tmp, sep="\t", index=False)
