"""Patient-level guarantees by group privacy, the caveats of a DP run, what is not covered."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from mammodp import privacy_notes


def _record(**changes):
    base = {
        "n_train": 1104,
        "delta": 1e-4,
        "accountant": "rdp",
        "epsilon_at_chosen_epoch": 6.0,
        "epsilon_final": 6.0,
        **privacy_notes.patient_guarantee(6.0, 1e-4, 1),
    }
    return {**base, **changes}


def test_group_privacy_follows_the_lemma():
    assert privacy_notes.group_privacy(1.5, 1e-5, 1) == (1.5, 1e-5)
    eps, delta = privacy_notes.group_privacy(1.5, 1e-5, 2)
    assert eps == 3.0 and delta == pytest.approx(2 * math.exp(1.5) * 1e-5)
    eps, delta = privacy_notes.group_privacy(6.0, 1e-4, 14)  # the study's worst patient
    assert eps == 84.0 and delta > 1  # vacuous, and reported as such
    assert privacy_notes.patient_guarantee(6.0, 1e-4, 14)["patient_guarantee_vacuous"]
    assert privacy_notes.group_privacy(60.0, 1e-4, 14)[1] == math.inf  # no overflow


def test_max_crops_per_patient_counts_real_rows_only():
    train = pd.DataFrame({"patient_id": ["a", "a", "b", "", "", "", ""]})
    assert privacy_notes.max_crops_per_patient(train) == 2
    assert privacy_notes.max_crops_per_patient(train[train.patient_id == ""]) == 0


def test_warnings_name_each_caveat():
    assert privacy_notes.dp_warnings(_record()) == []
    (weak,) = privacy_notes.dp_warnings(_record(n_train=20000))
    assert weak.startswith("delta = 0.0001 >= 1/N = 5e-05")
    (gdp,) = privacy_notes.dp_warnings(_record(accountant="gdp"))
    assert "approximation" in gdp
    (released,) = privacy_notes.dp_warnings(_record(epsilon_at_chosen_epoch=5.0))
    assert "released model's guarantee is epsilon_final (6)" in released
    (group,) = privacy_notes.dp_warnings(_record(**privacy_notes.patient_guarantee(6, 1e-4, 14)))
    assert "a patient with 14 crops has epsilon 84" in group and group.endswith("(vacuous)")
