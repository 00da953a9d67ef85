"""The lesion table: one row per mass, from the CBIS-DDSM case descriptions (joined to the DICOM
tree through series UIDs) and from BCDR outlines.

Facts honoured here: only the mass CSVs are used (calc rows are counted and
ignored); BENIGN and BENIGN_WITHOUT_CALLBACK are benign (1), MALIGNANT is 0; the CSV's
``000000.dcm`` names differ from the served ``1-1.dcm``; an ROI series holds mask and cropped
patch in no fixed order (told apart by being binary and by size); a mask whose size differs from
its mammogram is resized (nearest); every contour of the closed mask is one lesion; duplicates
(same image, same box) are dropped.

How contours become lesions (``data.lesions.contours``):

* ``study``, the original (gan_compare/data_utils/utils.py generate_cbis_ddsm_metapoints and
  is_metapoint_duplicate; gan_compare/scripts/create_metadata.py create_bcdr_metadata and
  get_bcdr_bbox): CBIS-DDSM masks are downscaled to 1/4 (nearest), closed with a 9 x 9 square,
  upscaled x 4 (nearest); every RETR_TREE contour with >= 2 points (holes included) is a lesion;
  duplicates (same image, same box) are dropped within one CSV row only. BCDR boxes are (min x,
  min y, max - min, max - min) of the outline, and duplicates (image file name + box) are dropped
  across every outline row, masses or not, before the mass filter.
* ``outer``: a 5 x 5 elliptic closing at full size, external contours of area >= 16 px,
  cv2.boundingRect boxes for BCDR too, duplicates dropped across rows and datasets.
"""

from __future__ import annotations

import logging
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from mammodp.errors import UserError, check_choice
from mammodp.fileio import read_csv

from . import dicomio

log = logging.getLogger(__name__)

PATHOLOGY_LABEL = {"MALIGNANT": 0, "BENIGN": 1, "BENIGN_WITHOUT_CALLBACK": 1}
MASS_COLUMNS = [
    "patient_id",
    "left or right breast",
    "image view",
    "abnormality id",
    "pathology",
    "image file path",
    "cropped image file path",
    "ROI mask file path",
]
BCDR_COLUMNS = [
    "patient_id",
    "study_id",
    "lesion_id",
    "segmentation_id",
    "image_view",
    "image_filename",
    "lw_x_points",
    "lw_y_points",
    "mammography_nodule",
    "classification",
]
BCDR_CLASS = {"benign": 1, "malign": 0, "malignant": 0}
BCDR_VIEW = {1: ("RIGHT", "CC"), 2: ("LEFT", "CC"), 3: ("RIGHT", "MLO"), 4: ("LEFT", "MLO")}
LESION_COLUMNS = [
    "lesion_id",
    "dataset",
    "portion",
    "patient_id",
    "image_id",
    "label",
    "pathology",
    "view",
    "side",
    "bbox_x",
    "bbox_y",
    "bbox_w",
    "bbox_h",
    "image",
    "source",
]
# ``image`` refers to the mammogram without writing its path (DICOM folder names carry header
# values such as the study date): ``dicom:<SeriesInstanceUID>/<file>`` under the DICOM root, or
# ``bcdr:<path relative to the BCDR root>``. crops.resolve_images turns it into a path.
CONTOUR_MODES = ("study", "outer")
CLOSING_KERNEL = 5  # outer: small gaps in hand-drawn outlines do not split a lesion
MIN_CONTOUR_AREA = 16  # px; outer: specks in a mask are annotation noise, not lesions
STUDY_SCALE = 4  # study: the mask is closed at 1/4 size ...
STUDY_KERNEL = 9  # ... with a 9 x 9 square (36 px at full size)


def check_contour_mode(contours: str) -> str:
    check_choice("data.lesions.contours", contours, CONTOUR_MODES)
    return contours


def read_mass_csv(path: str | Path, portion: str) -> pd.DataFrame:
    """Parse an official CBIS-DDSM mass case-description CSV exactly as published."""
    df = read_csv(path, required=MASS_COLUMNS, dtype=str, keep_default_na=False)
    for col in ("image file path", "cropped image file path", "ROI mask file path"):
        df[col] = df[col].str.strip()  # the ROI path cell ends in a newline inside quotes
    unknown = sorted(set(df["pathology"]) - set(PATHOLOGY_LABEL))
    if unknown:
        rows = df.index[~df["pathology"].isin(PATHOLOGY_LABEL)].tolist()
        raise UserError(
            f"{path}: unknown pathology value(s) {unknown} in data row(s) "
            f"{[r + 1 for r in rows[:5]]}; expected one of {sorted(PATHOLOGY_LABEL)}."
        )
    df["label"] = df["pathology"].map(PATHOLOGY_LABEL).astype(int)
    df["portion"] = portion
    df["source"] = [f"{Path(path).name}:{i + 2}" for i in range(len(df))]  # CSV line number
    for col, key in (
        ("image file path", "image_series"),
        ("cropped image file path", "crop_series"),
        ("ROI mask file path", "mask_series"),
    ):
        parts = df[col].str.split("/")
        bad = parts.str.len() < 4
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise UserError(
                f"{path}: line {i + 2}: '{col}' = {df[col].iloc[i]!r} is not "
                "<folder>/<StudyUID>/<SeriesUID>/<file>.dcm"
            )
        df[key] = parts.str[2]
    return df


def count_calc_rows(paths: list[str | Path]) -> int:
    return sum(len(read_csv(p, dtype=str, keep_default_na=False)) for p in paths)


def _split_mask_and_patch(files: list[Path], where: str) -> Path:
    """Return the binary mask among the files of an ROI series (mask and patch come in any
    order): the mask is binary; if several are, the largest."""
    masks = []
    for f in files:
        arr = dicomio.read_pixels(f)
        values = np.unique(arr)
        if len(values) <= 2 and values.min() == 0:
            masks.append((arr.size, f))
    if not masks:
        raise UserError(
            f"{where}: no binary ROI mask among {[str(f) for f in files]}; the ROI series is "
            "incomplete: download it again."
        )
    return max(masks, key=lambda t: (t[0], str(t[1])))[1]


def _outer_boxes(binary: np.ndarray) -> list[tuple[int, int, int, int]]:
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (CLOSING_KERNEL, CLOSING_KERNEL))
    closed = cv2.morphologyEx(binary, cv2.MORPH_CLOSE, kernel)
    contours, _ = cv2.findContours(closed, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [cv2.boundingRect(c) for c in contours if cv2.contourArea(c) >= MIN_CONTOUR_AREA]


def _study_boxes(binary: np.ndarray) -> list[tuple[int, int, int, int]]:
    """As generate_cbis_ddsm_metapoints (gan_compare/data_utils/utils.py). The x 4 upscale of the
    1/4 mask can be a few px larger than the mammogram; boxes keep those coordinates, as there."""
    f = 1 / STUDY_SCALE
    small = cv2.resize(binary, (0, 0), fx=f, fy=f, interpolation=cv2.INTER_NEAREST)
    kernel = np.ones((STUDY_KERNEL, STUDY_KERNEL), np.uint8)
    closed_small = cv2.morphologyEx(small, cv2.MORPH_CLOSE, kernel)
    s = STUDY_SCALE
    closed = cv2.resize(closed_small, (0, 0), fx=s, fy=s, interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(closed, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
    boxes = []
    for c in contours:
        box = cv2.boundingRect(c)
        if c.shape[0] >= 2 and box not in boxes:  # duplicates within this mask (one CSV row)
            boxes.append(box)
    return boxes


def mask_contours(mask: np.ndarray, contours: str = "outer") -> list[tuple[int, int, int, int]]:
    """Bounding boxes (x, y, w, h) of the lesions of a binary mask (``contours``: study | outer),
    ordered top to bottom."""
    boxes = _study_boxes if check_contour_mode(contours) == "study" else _outer_boxes
    return sorted(boxes((mask > 0).astype(np.uint8)), key=lambda b: (b[1], b[0]))


def _no_lesion(where: str, mask_path: Path, pixels: int, contours: str) -> list[dict]:
    """A mask without a lesion box: an empty mask is an error; a mask whose lesion vanishes in the
    study's 1/4 downscale gives no lesion, as in the original (generate_cbis_ddsm_metapoints
    yields no metapoint for it), with a warning; under ``outer`` it was below the area minimum."""
    if pixels == 0:
        raise UserError(f"{where}: ROI mask {mask_path} is empty; the annotation is unusable.")
    if contours == "study":
        log.warning(
            "%s: the %d lesion px of ROI mask %s vanish at the study's 1/%d scale; no lesion "
            "kept for this row, as in the original",
            where,
            pixels,
            mask_path,
            STUDY_SCALE,
        )
        return []
    raise UserError(
        f"{where}: ROI mask {mask_path} marks only {pixels} px, no contour of at least "
        f"{MIN_CONTOUR_AREA} px; check the annotation, or use data.lesions.contours: study."
    )


def _resolve_row(args) -> list[dict]:
    row, image_files, roi_files, contours = args
    where = f"{row['source']} ({row['image file path'].split('/')[0]})"
    if len(image_files) != 1:
        raise UserError(
            f"{where}: the full-mammogram series {row['image_series']} holds {len(image_files)} "
            "files, expected 1."
        )
    image_path = image_files[0]
    mask_path = _split_mask_and_patch(roi_files, where)
    mask = dicomio.read_pixels(mask_path)
    shape = dicomio.image_shape(image_path)
    if mask.shape != shape:  # known CBIS-DDSM quirk: resize, keep it binary
        log.info("%s: mask %s resized to mammogram %s", where, mask.shape, shape)
        mask = cv2.resize(mask, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    boxes = mask_contours(mask, contours)
    if not boxes:
        return _no_lesion(where, mask_path, int(np.count_nonzero(mask)), contours)
    folder = row["image file path"].split("/")[0]  # e.g. Mass-Training_P_00001_LEFT_CC
    out = []
    for k, (x, y, w, h) in enumerate(boxes, start=1):
        suffix = f"_{k}" if len(boxes) > 1 else ""
        out.append(
            {
                "lesion_id": f"cbis-ddsm__{folder}_{row['abnormality id']}{suffix}",
                "dataset": "cbis-ddsm",
                "portion": row["portion"],
                "patient_id": f"cbis-ddsm__{row['patient_id']}",
                "image_id": folder,
                "label": int(row["label"]),
                "pathology": row["pathology"],
                "view": row["image view"],
                "side": row["left or right breast"],
                "bbox_x": x,
                "bbox_y": y,
                "bbox_w": w,
                "bbox_h": h,
                "image": f"dicom:{row['image_series']}/{image_path.name}",
                "source": row["source"],
            }
        )
    return out


def cbis_lesions(
    mass_csvs: dict[str, str | Path],
    dicom_root: str | Path,
    workers: int = 1,
    patients: set[str] | None = None,
    contours: str = "outer",
) -> pd.DataFrame:
    """Lesions of the CBIS-DDSM mass CSVs (``{"train": path, "test": path}``), optionally only
    of ``patients`` (a partial download); ``contours``: study | outer (module docstring)."""
    check_contour_mode(contours)
    frames = [read_mass_csv(p, portion) for portion, p in mass_csvs.items()]
    rows = pd.concat(frames, ignore_index=True)
    if patients is not None:
        keep = rows["patient_id"].isin(patients)
        log.info("subset: %d of %d mass rows (%d patients)", keep.sum(), len(rows), len(patients))
        rows = rows[keep].reset_index(drop=True)
    index = dicomio.index_series(dicom_root)
    jobs = []
    for _, row in rows.iterrows():
        image_files = index.get(row["image_series"])
        if not image_files:
            raise UserError(
                f"{row['source']}: full-mammogram series {row['image_series']} "
                f"({row['image file path']}) not found under {dicom_root}; the download is "
                "incomplete: rerun the data source rule."
            )
        roi = sorted(set(index.get(row["crop_series"], []) + index.get(row["mask_series"], [])))
        if not roi:
            raise UserError(
                f"{row['source']}: ROI series {row['mask_series']} ({row['ROI mask file path']}) "
                f"not found under {dicom_root}; the download is incomplete: rerun the data "
                "source rule."
            )
        jobs.append((row.to_dict(), image_files, roi, contours))
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_resolve_row, jobs, chunksize=8))
    else:
        results = [_resolve_row(j) for j in jobs]
    return pd.DataFrame([lesion for rs in results for lesion in rs], columns=LESION_COLUMNS)


def _parse_points(text: str, where: str) -> np.ndarray:
    try:
        return np.array([int(float(v)) for v in str(text).split()], dtype=np.int32)
    except ValueError as e:
        raise UserError(f"{where}: outline points {text!r} are not integers") from e


def _bcdr_box(row, where: str, contours: str, strict: bool = True):
    """The outline's box; for a non-mass row (``strict`` False) None when its points are unusable
    (such rows only serve the study's duplicate check)."""
    try:
        xs = _parse_points(row["lw_x_points"], where)
        ys = _parse_points(row["lw_y_points"], where)
        if len(xs) < 3 or len(xs) != len(ys):
            raise UserError(f"{where}: outline needs >= 3 matching x/y points")
    except UserError:
        if strict:
            raise
        return None
    if contours == "study":  # get_bcdr_bbox (gan_compare/data_utils/utils.py): max - min
        return int(xs.min()), int(ys.min()), int(xs.max() - xs.min()), int(ys.max() - ys.min())
    return cv2.boundingRect(np.stack([xs, ys], axis=1))  # max - min + 1


def _bcdr_image(csv_path: Path, name: str, where: str) -> Path:
    """image_filename is relative to the CSV's folder; for a CSV one folder deeper (the
    original's second outlines location, create_bcdr_metadata: BCDR-F03/BCDR-F03/), to its
    parent, where the original looks."""
    for folder in (csv_path.parent, csv_path.parent.parent):
        if (folder / name).is_file():
            return folder / name
    raise UserError(f"{where}: image {csv_path.parent / name} not found.")


def _bcdr_lesion(row, csv_path: Path, root: Path, line: int, box) -> dict:
    where = f"{csv_path}: line {line}"
    cls = row["classification"].lower()
    if cls not in BCDR_CLASS:
        raise UserError(
            f"{where}: unknown classification {row['classification']!r}; expected one of "
            f"{sorted(BCDR_CLASS)} (any case)."
        )
    image_path = _bcdr_image(csv_path, row["image_filename"], where)
    side, view = BCDR_VIEW.get(int(row["image_view"]), ("", ""))
    pid = row["patient_id"]
    return {
        "lesion_id": f"bcdr__{pid}_s{row['study_id']}_l{row['lesion_id']}"
        f"_seg{row['segmentation_id']}_v{row['image_view']}",
        "dataset": "bcdr",
        "portion": "test",
        "patient_id": f"bcdr__{pid}",
        "image_id": image_path.stem,
        "label": BCDR_CLASS[cls],
        "pathology": "BENIGN" if BCDR_CLASS[cls] else "MALIGNANT",
        "view": view,
        "side": side,
        "bbox_x": box[0],
        "bbox_y": box[1],
        "bbox_w": box[2],
        "bbox_h": box[3],
        "image": f"bcdr:{image_path.relative_to(root).as_posix()}",
        "source": f"{csv_path.name}:{line}",
    }


def bcdr_lesions(root: str | Path, contours: str = "outer") -> pd.DataFrame:
    """Mass lesions of every ``*outlines*.csv`` under a BCDR folder (published layout: the
    image_filename column is relative to the CSV's folder; cells carry leading spaces).
    ``contours``: study | outer (module docstring)."""
    root = Path(root)
    study = check_contour_mode(contours) == "study"
    csvs = sorted(root.rglob("*outlines*.csv"))  # D01, D02, F01, F02, F03: the original's order
    if not csvs:
        raise UserError(
            f"{root}: no BCDR outlines CSV (*outlines*.csv) found. BCDR is available on request "
            "from https://bcdr.eu; place its dataset folders there, or set data.external: none."
        )
    out, seen = [], set()
    for csv_path in csvs:
        df = read_csv(csv_path, required=BCDR_COLUMNS, dtype=str, keep_default_na=False)
        df = df.apply(lambda c: c.str.strip())
        ignored = 0
        for i, row in df.iterrows():
            where = f"{csv_path}: line {i + 2}"
            mass = row["mammography_nodule"] == "1"
            box = _bcdr_box(row, where, contours, strict=mass) if mass or study else None
            # The original (create_bcdr_metadata) drops a row whose image file name and box an
            # earlier row of any CSV, mass or not, has; the mass filter comes later.
            key = (Path(row["image_filename"]).name, box)
            if study and box is not None and key in seen:
                log.info("%s: duplicate of an earlier outline (image, box): dropped", where)
                continue
            seen.add(key)
            if not mass:
                ignored += 1  # calcifications and other findings are not masses
                continue
            out.append(_bcdr_lesion(row, csv_path, root, i + 2, box))
        log.info("%s: %d outline rows are not masses and were ignored", csv_path, ignored)
    return pd.DataFrame(out, columns=LESION_COLUMNS)


def drop_duplicates(df: pd.DataFrame, contours: str = "outer") -> pd.DataFrame:
    """Drop lesions with the same image and the same box (duplicated metadata rows) under
    ``outer``; under ``study`` nothing is dropped here (the original drops duplicates within a
    CBIS-DDSM row and among BCDR rows only, done when they are read). Either way, distinct
    lesions get distinct ids (a duplicated CSV row shares the id)."""
    out = df
    if check_contour_mode(contours) == "outer":
        key = ["image", "bbox_x", "bbox_y", "bbox_w", "bbox_h"]
        dup = df.duplicated(subset=key, keep="first")
        if dup.any():
            dropped = df.loc[dup, "source"].tolist()
            log.info("dropped %d duplicate lesion(s): %s", dup.sum(), dropped)
        out = df.loc[~dup]
    out = out.copy()
    clash = out["lesion_id"].duplicated(keep=False)
    if clash.any():
        counts = out.loc[clash].groupby("lesion_id").cumcount() + 1
        out.loc[clash, "lesion_id"] = out.loc[clash, "lesion_id"] + "_dup" + counts.astype(str)
    return out.reset_index(drop=True)
