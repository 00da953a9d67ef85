"""Patient-level split: the official CBIS-DDSM test portion is the test set; the
official training portion is split by patient into train/val (stratified by whether a patient has
a malignant lesion, seeded); external sets (BCDR) are test only. A split file can be supplied
instead. A leak check fails the run if any patient lands in two splits.
"""

from __future__ import annotations

import logging

import pandas as pd
from sklearn.model_selection import train_test_split

from mammodp.errors import UserError

from .crops import WINDOW_COLUMNS

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
MANIFEST_COLUMNS = ["path", "lesion_id", "patient_id", "dataset", "split", "label", "sha256"]
TRAINING_DATASET = "cbis-ddsm"  # the others are external test sets


def make_split(index: pd.DataFrame, val_fraction: float, seed: int) -> dict[str, list[str]]:
    """Split patients of a crop/lesion index that has ``patient_id``, ``portion``, ``label``."""
    train_portion = index[(index["portion"] == "train")]
    patients = train_portion.groupby("patient_id")["label"].min().sort_index()  # 0 if any malignant
    if len(patients) < 2:
        raise UserError(
            f"only {len(patients)} patient(s) in the training portion: cannot make a validation set"
        )
    stratify = patients.values if patients.value_counts().min() >= 2 else None
    train_ids, val_ids = train_test_split(
        patients.index.tolist(), test_size=val_fraction, random_state=seed, stratify=stratify
    )
    test_ids = index.loc[index["portion"] == "test", "patient_id"].unique().tolist()
    split = {"train": sorted(train_ids), "val": sorted(val_ids), "test": sorted(test_ids)}
    check_no_leak(split)
    return split


def check_no_leak(split: dict[str, list[str]]) -> None:
    """Fail if any patient appears in two splits."""
    seen: dict[str, str] = {}
    for name in SPLITS:
        for pid in split.get(name, []):
            if pid in seen and seen[pid] != name:
                raise UserError(
                    f"patient {pid} is in both '{seen[pid]}' and '{name}': the split leaks "
                    "patients between sets. Fix the split file or the split settings."
                )
            seen[pid] = name


def validate_split_file(split: dict, source: str) -> dict[str, list[str]]:
    if not isinstance(split, dict) or not all(k in split for k in SPLITS):
        raise UserError(f"{source}: a split file must be a JSON object with keys {list(SPLITS)}")
    for k in SPLITS:
        if not isinstance(split[k], list):
            raise UserError(f"{source}: '{k}' must be a list of patient ids")
    check_no_leak(split)
    return {k: sorted(map(str, split[k])) for k in SPLITS}


def with_external_in_test(index: pd.DataFrame, split: dict[str, list[str]]) -> dict:
    """``split`` with the patients of external-set crops (dataset != cbis-ddsm) that it does not
    list added to test; a patient it lists stays where it is."""
    listed = {pid for name in SPLITS for pid in split[name]}
    external = index.loc[index["dataset"] != TRAINING_DATASET, "patient_id"]
    extra = sorted(set(external) - listed)
    if extra:
        log.info("%d external patient(s) not in the split file go to test", len(extra))
    out = {name: list(split[name]) for name in SPLITS}
    out["test"] = sorted(out["test"] + extra)
    check_no_leak(out)
    return out


def apply_split(index: pd.DataFrame, split: dict[str, list[str]], source: str) -> pd.DataFrame:
    """The crops manifest: the index with a ``split`` column (and the crop windows, empty where
    the index has none); checks every crop is assigned and that train, val and test each hold
    both classes. External patients the split does not list are test (with_external_in_test)."""
    split = with_external_in_test(index, split)
    where = {pid: name for name in SPLITS for pid in split[name]}
    manifest = index.copy()
    manifest["split"] = manifest["patient_id"].map(where)
    missing = manifest.loc[manifest["split"].isna(), "patient_id"].unique()
    if len(missing):
        raise UserError(
            f"{source}: {len(missing)} patient(s) with crops are in no split, e.g. "
            f"{list(missing[:5])}. Add them to the split file."
        )
    for name in SPLITS:
        part = manifest[(manifest["split"] == name) & (manifest["dataset"] == TRAINING_DATASET)]
        if name != "test" or len(part):
            classes = set(part["label"].astype(int))
            if classes != {0, 1}:
                raise UserError(
                    f"{source}: the CBIS-DDSM '{name}' split holds label(s) {sorted(classes)} "
                    "only; each split needs benign (1) and malignant (0) crops. Use more "
                    "patients or another split seed."
                )
    for col in WINDOW_COLUMNS:
        if col not in manifest:
            manifest[col] = pd.NA
    return manifest[MANIFEST_COLUMNS + WINDOW_COLUMNS].reset_index(drop=True)
