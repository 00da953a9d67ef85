"""Patient-level guarantees by group privacy, the caveats of a DP run, what is not covered."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from mammodp.classify import privacy_notes


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


def _dp(eps, sigma=1.0, q=0.01, steps=1000, delta=1e-5, accountant="rdp"):
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    acc.history = [(sigma, q, steps)]
    record = {"dp": True, "accountant": accountant, "noise_multiplier": sigma}
    record |= {"sample_rate": q, "steps": steps, "delta": delta}
    return record | {"epsilon_final": acc.get_epsilon(delta) if eps is None else eps}


def test_lineage_composes_the_rdp_curves_tighter_than_the_sum():
    from opacus.accountants import RDPAccountant

    gan, clf = _dp(None, sigma=1.2, q=0.007, steps=4000), _dp(None, sigma=0.9, q=0.1, steps=900)
    parts = [privacy_notes.training_part("generator", gan), privacy_notes.training_part("c", clf)]
    out = privacy_notes.compose(parts)
    acc = RDPAccountant()
    acc.history = [(1.2, 0.007, 4000), (0.9, 0.1, 900)]
    assert out["lineage_private"] and out["lineage_delta"] == pytest.approx(2e-5)
    assert out["lineage_epsilon_rdp"] == pytest.approx(acc.get_epsilon(2e-5))
    basic = gan["epsilon_final"] + clf["epsilon_final"]
    assert out["lineage_epsilon_basic"] == pytest.approx(basic)
    assert out["lineage_epsilon_rdp"] < basic
    for history in ([(1.2, 0.007, 4000)], [(0.9, 0.1, 900)]):  # each part alone, same delta
        acc.history = history
        assert acc.get_epsilon(2e-5) < out["lineage_epsilon_rdp"]
    prv = privacy_notes.compose(
        [parts[0], privacy_notes.training_part("c", clf | {"accountant": "prv"})]
    )
    assert prv["lineage_epsilon_rdp"] is None and prv["lineage_epsilon_basic"] == pytest.approx(
        basic
    )


def test_lineage_without_a_guarantee_or_with_an_unknown_part():
    from mammodp.config import Experiment

    realsyn = Experiment("realsyn", "-", "x", "real+synthetic", "head", "mlp", "backbone", 6.0)
    clf = _dp(6.0)
    parts = privacy_notes.lineage_parts(realsyn, clf, None, None)  # a non-private generator
    assert [p["part"] for p in parts] == ["classifier realsyn", "generator"]
    out = privacy_notes.compose(parts)
    assert out["lineage_private"] is False and out["lineage_epsilon_rdp"] is None
    syn = Experiment("syn", "-", "x", "synthetic", "head", "mlp", "backbone", None)
    only_gan = privacy_notes.lineage_parts(syn, {"dp": False}, _dp(3.0), None)
    assert [p["part"] for p in only_gan] == ["generator"]  # its own training saw no real crop
    assert privacy_notes.compose(only_gan)["lineage_epsilon_basic"] == 3.0
    child = Experiment("child", "-", "x", "real", "head", "mlp", "from:syn", 6.0)
    source = {"dp": False, "lineage_parts": only_gan}
    chain = privacy_notes.lineage_parts(child, clf, None, source)
    assert [p["part"] for p in chain] == ["classifier child", "generator"]
    assert privacy_notes.compose(chain)["lineage_epsilon_basic"] == pytest.approx(9.0)
    unknown = privacy_notes.lineage_parts(child, clf, None, None)  # no record of the source
    assert privacy_notes.compose(unknown)["lineage_private"] is None
    pretrained = privacy_notes.lineage_parts(child, clf, None, {"pretrained_weights": True})
    assert [p["part"] for p in pretrained] == ["classifier child"]


def test_patient_unit_needs_no_group_privacy():
    unit = privacy_notes.patient_guarantee(6.0, 1e-4, 14, unit="patient")
    assert (unit["patient_epsilon"], unit["patient_delta"]) == (6.0, 1e-4)
    assert unit["unit_of_privacy"] == "patient" and not unit["patient_guarantee_vacuous"]
    record = _record(**unit, n_units=578)  # 578 patients: delta 1e-4 < 1/578, no warning
    assert privacy_notes.dp_warnings(record) == []
    (weak,) = privacy_notes.dp_warnings(record | {"n_units": 20000})
    assert "for N = 20000 patients" in weak


def test_lineage_patient_level_bounds():
    gan, clf = _dp(None, sigma=1.2, q=0.007, steps=4000), _dp(None, sigma=0.9, q=0.1, steps=900)
    crop = [privacy_notes.training_part("generator", gan), privacy_notes.training_part("c", clf)]
    out = privacy_notes.compose(crop, max_crops=3)
    want = privacy_notes.group_privacy(out["lineage_epsilon_rdp"], out["lineage_delta"], 3)
    assert out["lineage_unit"] == "crop"
    assert (out["lineage_patient_epsilon"], out["lineage_patient_delta"]) == want
    per_patient = [p | {"unit": "patient"} for p in crop]
    out = privacy_notes.compose(per_patient, max_crops=3)
    assert out["lineage_unit"] == "patient"
    assert out["lineage_patient_epsilon"] == out["lineage_epsilon_rdp"]  # no group privacy
    mixed = privacy_notes.compose([crop[0], per_patient[1]], max_crops=3)
    assert mixed["lineage_unit"] == "mixed" and mixed["lineage_epsilon_rdp"] is None
    g_eps, g_delta = privacy_notes.group_privacy(gan["epsilon_final"], gan["delta"], 3)
    assert mixed["lineage_patient_epsilon"] == pytest.approx(g_eps + clf["epsilon_final"])
    assert mixed["lineage_patient_delta"] == pytest.approx(g_delta + clf["delta"])


def test_lineage_warnings_of_a_run_that_is_not_private_itself():
    from mammodp.config import Experiment

    syn = Experiment("syn", "-", "x", "synthetic", "head", "mlp", "backbone", None)
    gan = _dp(3.0, accountant="gdp") | {"n_train": 1104}
    record = privacy_notes.compose(privacy_notes.lineage_parts(syn, {"dp": False}, gan, None), 14)
    first, approximate, group = privacy_notes.lineage_warnings(record)
    assert "not trained privately" in first and "approximation" in approximate
    assert "a patient with 14 crops has epsilon 42" in group and group.endswith("(vacuous)")


def test_a_dp_run_with_an_approximate_accountant_in_its_lineage_is_warned():
    gan = privacy_notes.training_part("generator", _dp(3.0, accountant="gdp") | {"n_train": 500})
    own = _record(lineage_parts=[privacy_notes.training_part("c", _dp(6.0)), gan])
    (warning,) = privacy_notes.dp_warnings(own)
    assert (
        warning.startswith("the lineage's epsilon includes a gdp part") and "not a bound" in warning
    )


def test_a_dp_run_on_private_synthetic_crops_is_warned_of_its_lineages_patient_bound():
    from mammodp.config import Experiment

    realsyn = Experiment("rs", "-", "x", "real+synthetic", "head", "mlp", "backbone", 6.0)
    own = _record(**privacy_notes.patient_guarantee(6.0, 1e-4, 3, unit="patient"))
    own |= {"dp": True, "noise_multiplier": 1.0, "sample_rate": 0.1, "steps": 100}
    own |= {"unit_of_privacy": "patient", "n_units": 500}
    parts = privacy_notes.lineage_parts(realsyn, own, _dp(3.0) | {"n_train": 900}, None)
    record = own | privacy_notes.compose(parts, max_crops=3)
    (warning,) = privacy_notes.dp_warnings(record)
    g_eps, _ = privacy_notes.group_privacy(3.0, 1e-5, 3)
    assert warning.startswith(
        f"over its lineage (mixed units) a patient has epsilon {6 + g_eps:.3g}"
    )
    assert privacy_notes.dp_warnings(own | privacy_notes.compose(parts[:1], 3)) == []
