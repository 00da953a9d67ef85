"""The study's published crops (``dataset16062024``) as a data source: patient, image, lesion and
label from the file names, the published split from the folders.

Layout: ``<cbis-ddsm|bcdr>/<split>/<is_benign_true|is_benign_false>/`` with files
``patient<dataset>__<patient>_image<image id>_mass<k>_is_benign_<0|1>.png``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import pandas as pd

from mammodp.errors import UserError
from mammodp.fileio import sha256_file

from .crops import CROP_COLUMNS, WINDOW_COLUMNS
from .split import SPLITS, check_no_leak

if TYPE_CHECKING:
    import zipfile

log = logging.getLogger(__name__)

NAME = re.compile(
    r"^patient(?P<dataset>cbis-ddsm|bcdr)__(?P<patient>.+)_image(?P<image>[^_]+)"
    r"_mass(?P<mass>\d+)_is_benign_(?P<benign>[01])\.png$"
)
FOLDER_LABEL = {"is_benign_true": 1, "is_benign_false": 0}


def import_processed(root: str | Path) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """Return (crop index, published split) for the published crop folders under ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(
            f"data.processed.path: {root} not found. Point it to the dataset16062024 folder of "
            "github.com/RichardObi/mammo_dp, or use data.source: phantom."
        )
    rows = []
    split: dict[str, set[str]] = {s: set() for s in SPLITS}
    for png in sorted(root.glob("*/*/*/*.png")):
        dataset, split_name, folder = png.parts[-4:-1]
        where = str(png)
        m = NAME.match(png.name)
        if not m or split_name not in SPLITS or folder not in FOLDER_LABEL:
            raise UserError(
                f"{where}: not in the published layout "
                "(<dataset>/<split>/<is_benign_true|false>/patient..._is_benign_<0|1>.png)"
            )
        label = int(m["benign"])
        if label != FOLDER_LABEL[folder] or m["dataset"] != dataset:
            raise UserError(f"{where}: file name and folder disagree on label or dataset")
        img = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
        if img is None or img.shape != (128, 128) or img.dtype != "uint8":
            shape = None if img is None else (img.shape, str(img.dtype))
            raise UserError(f"{where}: expected a 128x128 8-bit grayscale PNG, got {shape}")
        patient = f"{dataset}__{m['patient']}"
        rows.append(
            {
                "path": png.relative_to(root).as_posix(),  # fileio.read_manifest
                "lesion_id": f"{patient}_image{m['image']}_mass{m['mass']}",
                "patient_id": patient,
                "dataset": dataset,
                "portion": "test" if split_name == "test" else "train",
                "label": label,
                "sha256": sha256_file(png),
            }
        )
        split[split_name].add(patient)
    if not rows:
        raise UserError(
            f"{root}: no published crops found (expected <dataset>/<split>/<class>/*.png)"
        )
    index = pd.DataFrame(rows, columns=CROP_COLUMNS)
    for col in WINDOW_COLUMNS:  # the published crops' boxes and windows are unknown
        index[col] = pd.NA
    published = {k: sorted(v) for k, v in split.items()}
    check_no_leak(published)
    return index, published


STUDY_SPLIT_DATASET = "cbis-ddsm"
STUDY_SPLIT_ABOUT = (
    "The study's patient split (Osuala et al. 2024), read from the file names of the published "
    "crops dataset16062024/cbis-ddsm/<train|val|test>/ of github.com/RichardObi/mammo_dp "
    "(commit 20caed7); ids as the lesion table writes them. BCDR is test only (not listed). "
    "Rebuild: mammodp study-split --path <dataset16062024> --out <this file>."
)


def study_split(root: str | Path) -> dict:
    """The study's CBIS-DDSM split: patient ids (``cbis-ddsm__P_00001``, as import_processed and
    the lesion table write them) per published folder ``<root>/cbis-ddsm/<split>/``; checked for
    the published layout and for patients in two splits. File names only: no image is read."""
    folder = Path(root) / STUDY_SPLIT_DATASET
    if not folder.is_dir():
        raise UserError(
            f"{folder}: not found. Point --path to the dataset16062024 folder of "
            "github.com/RichardObi/mammo_dp (it holds cbis-ddsm/ and bcdr/)."
        )
    split: dict[str, set[str]] = {s: set() for s in SPLITS}
    for png in sorted(folder.glob("*/*/*.png")):
        split_name, label_folder = png.parts[-3:-1]
        m = NAME.match(png.name)
        if not m or split_name not in SPLITS or label_folder not in FOLDER_LABEL:
            raise UserError(
                f"{png}: not in the published layout "
                "(cbis-ddsm/<train|val|test>/<is_benign_true|false>/patient..._is_benign_<0|1>.png)"
            )
        if m["dataset"] != STUDY_SPLIT_DATASET:
            raise UserError(f"{png}: a {m['dataset']} crop in the cbis-ddsm folder")
        split[split_name].add(f"{STUDY_SPLIT_DATASET}__{m['patient']}")
    if not all(split.values()):
        empty = [k for k, v in split.items() if not v]
        raise UserError(f"{folder}: no published crops in {empty}; the folder is incomplete.")
    out = {k: sorted(v) for k, v in split.items()}
    check_no_leak(out)
    return {"about": STUDY_SPLIT_ABOUT, **out}


DUPLICATE_POLICY = "keep all (as in the study's evaluation); listed for transparency"


def duplicate_report(index: pd.DataFrame) -> pd.DataFrame:
    """Byte-identical crops (the published BCDR set holds 8 pairs, one with conflicting
    labels), one row per crop, with the policy applied."""
    dups = index[index.duplicated("sha256", keep=False)].copy()
    group = {h: i for i, h in enumerate(sorted(dups["sha256"].unique()), start=1)}
    dups["group"] = dups["sha256"].map(group)
    dups["conflicting_labels"] = dups.groupby("sha256")["label"].transform("nunique") > 1
    dups["policy"] = DUPLICATE_POLICY
    if len(dups):
        log.warning(
            "%d byte-identical crops in %d groups (%d with conflicting labels); policy: %s",
            len(dups),
            len(group),
            dups.loc[dups["conflicting_labels"], "group"].nunique(),
            DUPLICATE_POLICY,
        )
    cols = ["group", "lesion_id", "patient_id", "dataset", "label", "conflicting_labels", "policy"]
    return dups.sort_values(["group", "lesion_id"])[cols].reset_index(drop=True)


# ----------------------------------------------------------------------------- the pinned archive

ARCHIVE_PREFIXES = {
    "dataset16062024/": "dataset",
    "extension/synthetic_data/cbis-ddsm/c-dcgan/": "synthetic",
}
ARCHIVE_PREFIXES_BY_KEY = {v: k for k, v in ARCHIVE_PREFIXES.items()}


def read_checksums(path: str | Path) -> dict[str, str]:
    """``sha256  relative/path`` lines (# comments allowed) -> {relative path: sha256}."""
    out = {}
    for line in Path(path).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            digest, rel = line.split(maxsplit=1)
            out[rel.strip()] = digest
    return out


def _target(rel: str, roots: dict[str, Path]) -> Path | None:
    for prefix, key in ARCHIVE_PREFIXES.items():
        if rel.startswith(prefix) and key in roots:
            return roots[key] / rel[len(prefix) :]
    return None


def verify_published(roots: dict[str, Path], checksums: dict[str, str]) -> list[str]:
    """Files that are missing or differ from the published data (empty when all match)."""
    bad = []
    for rel, digest in checksums.items():
        target = _target(rel, roots)
        if target is None or not target.is_file() or sha256_file(target) != digest:
            bad.append(rel)
    return bad


def _checksums_of(checksums: dict[str, str], keys) -> dict[str, str]:
    """The entries of ``checksums`` that belong to the roots named in ``keys``."""
    return {
        r: d
        for r, d in checksums.items()
        if any(r.startswith(ARCHIVE_PREFIXES_BY_KEY[k]) for k in keys)
    }


def _check_present(roots: dict[str, Path], checksums: dict[str, str]) -> None:
    """Raise unless every root that already exists holds exactly the published files."""
    for key, root in roots.items():
        if root.exists():
            bad = verify_published(roots, _checksums_of(checksums, [key]))
            if bad:
                raise UserError(
                    f"{root}: {len(bad)} file(s) are missing or differ from the published data, "
                    f"e.g. {bad[:3]}. Delete the folder to download it again, or set "
                    "data.processed.verify: false to use your own crops in this layout."
                )


def _download_archive(url: str, **fetch_kw) -> zipfile.ZipFile:
    """Download the pinned repository archive; raise unless it is a valid zip."""
    import io
    import zipfile

    from .tcia import fetch

    data = fetch(url, settings="data.processed.archive_url (the published data)", **fetch_kw)
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        if zf.testzip() is not None:
            raise zipfile.BadZipFile("corrupt member")
    except (zipfile.BadZipFile, OSError) as e:
        raise UserError(f"{url}: the download is not a valid zip archive ({e}); try again") from e
    return zf


def _extract_absent(
    zf: zipfile.ZipFile,
    roots: dict[str, Path],
    absent: list[str],
    checksums: dict[str, str],
    url: str,
    checksum_file: str | Path,
) -> int:
    """Extract the archive's files for the ``absent`` roots, each into a temporary folder that
    replaces the root only if all its files verify; return the number of files extracted."""
    from contextlib import ExitStack

    from mammodp.fileio import atomic_dir

    extracted = 0
    with ExitStack() as stack:
        tmp_roots = {k: stack.enter_context(atomic_dir(roots[k])) for k in absent}
        for info in zf.infolist():
            rel = info.filename.split("/", 1)[-1]  # drop the archive's top folder
            target = _target(rel, tmp_roots) if not info.is_dir() else None
            if target is None:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zf.read(info))
            extracted += 1
        bad = verify_published(tmp_roots, _checksums_of(checksums, absent))
        if bad:
            raise UserError(
                f"{url}: {len(bad)} file(s) of the archive are missing or differ from the pinned "
                f"checksums in {checksum_file}, e.g. {bad[:3]}; nothing was kept."
            )
    return extracted


def fetch_published(
    url: str,
    checksum_file: str | Path,
    dataset_dir: str | Path | None,
    synthetic_dir: str | Path | None,
    verify: bool = True,
    **fetch_kw,
) -> int:
    """Make ``dataset_dir`` (dataset16062024) and/or ``synthetic_dir`` (c-dcgan) hold the
    study's published files: download the pinned repository archive when a folder is absent,
    extract only what is absent, and verify every file's sha256 (``verify``: also for folders
    that are already there). Returns the number of files extracted."""
    roots = {k: Path(v) for k, v in (("dataset", dataset_dir), ("synthetic", synthetic_dir)) if v}
    checksums = read_checksums(checksum_file)
    if verify:
        _check_present(roots, checksums)
    absent = [k for k, r in roots.items() if not r.exists()]
    if not absent:
        return 0
    log.info("downloading %s for %s", url, absent)
    zf = _download_archive(url, **fetch_kw)
    return _extract_absent(zf, roots, absent, checksums, url, checksum_file)
