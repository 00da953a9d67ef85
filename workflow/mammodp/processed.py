"""The study's published crops (``dataset16062024``) as a data source: patient, image, lesion and
label from the file names, the published split from the folders.

Layout: ``<cbis-ddsm|bcdr>/<split>/<is_benign_true|is_benign_false>/`` with files
``patient<dataset>__<patient>_image<image id>_mass<k>_is_benign_<0|1>.png``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import cv2
import pandas as pd

from .crops import CROP_COLUMNS
from .errors import UserError
from .fileio import sha256_file
from .split import check_no_leak

log = logging.getLogger(__name__)

NAME = re.compile(
    r"^patient(?P<dataset>cbis-ddsm|bcdr)__(?P<patient>.+)_image(?P<image>[^_]+)"
    r"_mass(?P<mass>\d+)_is_benign_(?P<benign>[01])\.png$"
)
FOLDER_LABEL = {"is_benign_true": 1, "is_benign_false": 0}
SPLITS = ("train", "val", "test")


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
                "path": str(png),
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
    dups = index[index.duplicated("sha256", keep=False)]
    if len(dups):
        conflicts = dups.groupby("sha256")["label"].nunique()
        log.warning(
            "%d byte-identical crops in %d groups (%d with conflicting labels); policy: all are "
            "kept, as in the study's evaluation: %s",
            len(dups),
            dups["sha256"].nunique(),
            int((conflicts > 1).sum()),
            sorted(dups["lesion_id"]),
        )
    published = {k: sorted(v) for k, v in split.items()}
    check_no_leak(published)
    return index, published
