"""Synthetic crops from sources other than this project's MCGAN training: the study's published
samples. Every generator ends in the same contract: ``manifest.csv`` with path, label, generator,
seed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from mammodp.errors import UserError

SYNTHETIC_COLUMNS = ["path", "label", "generator", "seed"]
PUBLISHED_NAME = re.compile(r"^batch_\d+_\d+_(benign|malignant)\.png$")


def published_manifest(folder: str | Path) -> pd.DataFrame:
    """The study's synthetic crops (``batch_<b>_<i>_<benign|malignant>.png``), labels from the
    file names."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(
            f"{folder}: folder of published synthetic crops not found. Set "
            "synthesis.published.path to the c-dcgan folder of the study's repository "
            "(extension/synthetic_data/cbis-ddsm/c-dcgan)."
        )
    rows = []
    for p in sorted(folder.glob("*.png")):
        m = PUBLISHED_NAME.match(p.name)
        if not m:
            raise UserError(
                f"{p}: unexpected file name; expected batch_<b>_<i>_<benign|malignant>.png"
            )
        rows.append({"path": p.name, "label": int(m.group(1) == "benign")})
    if not rows:
        raise UserError(f"{folder}: no PNG files found")
    df = pd.DataFrame(rows)
    df["generator"] = "published"
    df["seed"] = ""
    return df[SYNTHETIC_COLUMNS]
