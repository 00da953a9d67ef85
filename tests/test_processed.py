"""The study's published crops as a data source."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mammodp.errors import UserError
from mammodp.processed import import_processed


def test_published_counts(shared_data):
    index, split = import_processed(shared_data / "mammo_dp" / "dataset16062024")
    cbis = index[index["dataset"] == "cbis-ddsm"]
    in_split = {pid: k for k, ids in split.items() for pid in ids}
    cbis_split = cbis["patient_id"].map(in_split)
    assert cbis_split.value_counts().to_dict() == {"train": 1104, "test": 402, "val": 192}
    assert (index["dataset"] == "bcdr").sum() == 1106
    train = cbis[cbis_split == "train"]
    assert train["label"].value_counts().to_dict() == {1: 579, 0: 525}
    assert train["patient_id"].nunique() == 578


def test_wrong_size_png_is_rejected(tmp_path):
    d = tmp_path / "cbis-ddsm" / "train" / "is_benign_true"
    d.mkdir(parents=True)
    cv2.imwrite(
        str(d / "patientcbis-ddsm__P_1_image9_mass1_is_benign_1.png"), np.zeros((64, 64), np.uint8)
    )
    with pytest.raises(UserError, match="expected a 128x128 8-bit grayscale PNG"):
        import_processed(tmp_path)


def test_label_disagreement_is_rejected(tmp_path):
    d = tmp_path / "cbis-ddsm" / "train" / "is_benign_false"
    d.mkdir(parents=True)
    cv2.imwrite(
        str(d / "patientcbis-ddsm__P_1_image9_mass1_is_benign_1.png"),
        np.zeros((128, 128), np.uint8),
    )
    with pytest.raises(UserError, match="disagree on label"):
        import_processed(tmp_path)
