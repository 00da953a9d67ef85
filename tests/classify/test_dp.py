"""DP training: noise multipliers reach the target, bookkeeping clipping equals Opacus, Poisson and
per-patient sampling, the PRV and GDP accountants, the privacy report."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from mammodp import classify
from mammodp.classify import dp, models
from mammodp.config import Experiment
from mammodp.errors import UserError

from ..helpers.jobs import dp_job, make_job
from ..helpers.models import TINY


def test_dp_run_and_privacy_report(tmp_path, tiny_manifest):
    job = make_job("dp", eps=6.0, epochs=4)
    m = classify.run(job, tiny_manifest, None, None, tmp_path)
    privacy = json.loads((tmp_path / "privacy.json").read_text())
    assert privacy["dp"] and privacy["accountant"] == "rdp" and privacy["delta"] == 1e-4
    assert privacy["epsilon_final"] <= 6.0 + 1e-9  # never above target
    # Independent recomputation with Opacus' accountant from (sigma, q, steps, delta).
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    acc.history = [(privacy["noise_multiplier"], privacy["sample_rate"], privacy["steps"])]
    assert acc.get_epsilon(privacy["delta"]) == pytest.approx(privacy["epsilon_final"], rel=1e-6)
    acc.history = [
        (privacy["noise_multiplier"], privacy["sample_rate"], privacy["steps_at_chosen_epoch"])
    ]
    assert acc.get_epsilon(privacy["delta"]) == pytest.approx(
        privacy["epsilon_at_chosen_epoch"], rel=1e-6
    )
    assert privacy["sample_rate"] == pytest.approx(1 / 3)  # 1 / batches per epoch (48 / 16)
    assert privacy["expected_batch_size"] == 16 and privacy["max_grad_norm"] == 1.0
    history = pd.read_csv(tmp_path / "history.csv")
    assert history["epsilon"].is_monotonic_increasing and len(history) == 4
    assert "train_loss" not in history  # noise-free loss on private data: left out
    # One crop per patient here: the patient-level guarantee is the crop-level one.
    assert privacy["max_crops_per_patient"] == 1
    # Real crops only, no source: the lineage is this training alone.
    assert [p["part"] for p in privacy["lineage_parts"]] == ["classifier dp"]
    assert privacy["lineage_epsilon_rdp"] == pytest.approx(privacy["epsilon_final"], rel=1e-9)
    assert privacy["patient_epsilon"] == privacy["epsilon_final"]
    assert any("checkpoint selection" in x for x in privacy["not_covered"])
    released = [w for w in privacy["warnings"] if "released model's guarantee" in w]
    assert bool(released) == (privacy["epsilon_at_chosen_epoch"] < privacy["epsilon_final"])
    assert set(m["test"]) == {"cbis-ddsm", "bcdr"}
    preds = pd.read_csv(tmp_path / "predictions.csv")
    assert len(preds) == 16 and preds["p_benign"].between(0, 1).all()


def test_noise_multipliers_for_the_study_settings_reach_the_target_epsilon():
    """N = 1104, batch 128, 300 epochs, delta 1e-4: accounting sigma over the planned steps at
    the loader's sample rate spends at most the target epsilon, and 1 % less noise spends more
    (sigma is the smallest that fits, as make_private_with_epsilon has it)."""
    from opacus.accountants import RDPAccountant
    from opacus.data_loader import DPDataLoader

    dataset = torch.utils.data.TensorDataset(torch.arange(1104))
    _, q = dp.poisson_loader(1104, 128, torch.Generator())
    loader = torch.utils.data.DataLoader(dataset, batch_size=128)
    assert q == DPDataLoader.from_data_loader(loader).sample_rate == 1 / 9
    for eps in (1, 6, 12, 20, 60):
        sigma = classify.noise_multiplier(make_job("x", eps=float(eps), epochs=300), q)
        acc = RDPAccountant()
        acc.history = [(sigma, q, 300 * 9)]
        assert acc.get_epsilon(1e-4) <= eps
        acc.history = [(sigma * 0.99, q, 300 * 9)]
        assert acc.get_epsilon(1e-4) > eps


def _batch_sizes(monkeypatch):
    """Record the size of every Poisson batch the DP loop draws."""
    sizes = []
    make = dp.poisson_loader

    def recording(n, batch_size, gen):
        loader, q = make(n, batch_size, gen)

        class Recorder:
            def __len__(self):
                return len(loader)

            def __iter__(self):
                for batch in loader:
                    sizes.append(len(batch))
                    yield batch

        return Recorder(), q

    monkeypatch.setattr(classify.training, "poisson_loader", recording)
    return sizes


@pytest.mark.parametrize("batch", [16, 1])
def test_bookkeeping_runs_equal_opacus_runs(tmp_path, tiny_manifest, monkeypatch, batch):
    """Whole DP runs with the same seeds: book-keeping and Opacus' per-sample path draw the same
    batches and noise and train the same head. Batch size 1 (q = 1/48) draws empty batches."""
    sizes = _batch_sizes(monkeypatch)
    epochs = 3 if batch > 1 else 1
    bk = classify.run(
        dp_job("o", batch=batch, epochs=epochs), tiny_manifest, None, None, tmp_path / "bk"
    )
    op = classify.run(
        dp_job("o", "opacus", batch, epochs), tiny_manifest, None, None, tmp_path / "op"
    )
    steps = epochs * (48 // batch)
    assert len(sizes) == 2 * steps and sizes[:steps] == sizes[steps:]
    if batch == 1:
        assert 0 in sizes and max(sizes) >= 2  # empty Poisson batches and doubles
    assert bk["chosen_epoch"] == op["chosen_epoch"]
    for name in ("history.csv", "predictions.csv"):
        a, b = (pd.read_csv(tmp_path / d / name) for d in ("bk", "op"))
        pd.testing.assert_frame_equal(a, b, rtol=1e-4, atol=1e-5)
    priv = [json.loads((tmp_path / d / "privacy.json").read_text()) for d in ("bk", "op")]
    assert priv[0]["steps"] == priv[1]["steps"] == steps
    assert priv[0]["epsilon_final"] == pytest.approx(priv[1]["epsilon_final"], rel=1e-12)


def test_synthetic_rows_are_counted_in_the_sample_rate(tmp_path, tiny_manifest):
    exp = Experiment("mix", "-", "x", "real+synthetic", "head", "mlp", "backbone", 6.0)
    job = classify.Job(
        exp, 1, TINY, classify.TrainSpec(epochs=2, batch_size=16, lr=1e-3), classify.DPSpec()
    )
    train = tiny_manifest[tiny_manifest["split"] == "train"]
    synthetic = train[["path", "label"]].head(40).reset_index(drop=True)
    classify.run(job, tiny_manifest, synthetic, None, tmp_path)
    privacy = json.loads((tmp_path / "privacy.json").read_text())
    assert privacy["n_train"] == privacy["n_units"] == 88
    assert privacy["sample_rate"] == pytest.approx(1 / 6)  # 1 / ceil(88 / 16), not 1 / 3
    assert privacy["steps"] == 2 * 6


@pytest.mark.parametrize("accountant", ["prv", "gdp"])
def test_prv_and_gdp_accountants(tmp_path, tiny_manifest, accountant):
    """sigma for the target under the chosen accountant; its epsilon recomputed independently
    from (sigma, q, steps); the GDP approximation is flagged."""
    from opacus.accountants import create_accountant

    classify.run(dp_job("a", accountant=accountant, epochs=4), tiny_manifest, None, None, tmp_path)
    privacy = json.loads((tmp_path / "privacy.json").read_text())
    assert privacy["accountant"] == accountant
    acc = create_accountant(accountant)
    acc.history = [(privacy["noise_multiplier"], privacy["sample_rate"], privacy["steps"])]
    assert acc.get_epsilon(privacy["delta"]) == pytest.approx(privacy["epsilon_final"], rel=1e-6)
    assert privacy["epsilon_final"] <= 6.0 * 1.01  # Opacus' epsilon tolerance
    rdp = classify.noise_multiplier(dp_job("a", epochs=4), privacy["sample_rate"])
    assert privacy["noise_multiplier"] != pytest.approx(rdp, rel=1e-3)  # its own sigma
    flagged = any("approximation" in w for w in privacy["warnings"])
    assert flagged == (accountant == "gdp")


def test_patient_unit_samples_and_clips_whole_patients(tmp_path, tiny_manifest, monkeypatch):
    """dp.unit: patient on a cohort where patients have 1-4 crops: every Poisson batch holds
    whole patients, each patient's gradient is clipped as one, the accountant counts patients and
    the patient-level epsilon is the accountant's."""
    from mammodp.classify.bookkeeping import BookKeepingDP

    m = tiny_manifest.copy()
    train = m.index[m["split"] == "train"]
    m.loc[train, "patient_id"] = [f"p{i // 4 if i < 24 else 100 + i // 2}" for i in range(48)]
    crops = m.loc[train].groupby("patient_id").size()
    seen = []
    clipped_sum = BookKeepingDP.clipped_sum

    def recording(self, loss_sum, units=None):
        seen.append(units.clone())
        return clipped_sum(self, loss_sum, units)

    monkeypatch.setattr(BookKeepingDP, "clipped_sum", recording)
    classify.run(dp_job("u", unit="patient"), m, None, None, tmp_path / "u")
    privacy = json.loads((tmp_path / "u" / "privacy.json").read_text())
    assert privacy["unit_of_privacy"] == "patient" and privacy["n_units"] == len(crops) == 18
    assert privacy["sample_rate"] == pytest.approx(1 / 3) and privacy["steps"] == 9
    assert privacy["patient_epsilon"] == privacy["epsilon_final"]
    assert privacy["max_crops_per_patient"] == 4
    assert not any("unit of privacy is the crop" in w for w in privacy["warnings"])
    units = classify.row_units(m.loc[train].reset_index(drop=True), "patient")
    per_unit = torch.bincount(units)
    assert sorted(per_unit.tolist()) == sorted(crops.tolist())
    assert seen and sum(len(b) for b in seen) > 0
    for batch in seen:
        ids, count = torch.unique(batch, return_counts=True)
        assert torch.equal(count, per_unit[ids])  # every crop of a drawn patient
    monkeypatch.undo()
    classify.run(dp_job("u"), m, None, None, tmp_path / "c")  # the same job, per crop
    crop_privacy = json.loads((tmp_path / "c" / "privacy.json").read_text())
    assert crop_privacy["noise_multiplier"] == privacy["noise_multiplier"]  # same q and steps
    assert crop_privacy["patient_epsilon"] == pytest.approx(4 * crop_privacy["epsilon_final"])
    losses = [pd.read_csv(tmp_path / d / "history.csv")["val_loss"] for d in ("u", "c")]
    assert not np.allclose(*losses)  # other batches, other clipping


def test_patient_units_with_synthetic_rows_and_their_poisson_sampling():
    """Each synthetic row is a unit of its own; each unit is drawn with probability q, whole;
    with a tiny q most batches are empty (noise-only steps)."""
    train = pd.DataFrame({"patient_id": ["a", "b", "a", "", "", "c", ""], "label": 0})
    units = classify.row_units(train, "patient")
    assert units.tolist()[:3] == [0, 1, 0] and len(set(units.tolist())) == 6
    assert classify.row_units(train, "crop") is None
    loader = dp.UnitPoissonLoader(units, 0.3, torch.Generator().manual_seed(0))
    assert loader.n_units == 6 and len(loader) == 3  # int(1 / q) steps, as Opacus
    drawn = torch.zeros(6)
    for _ in range(2000):
        for rows in loader:
            ids, count = torch.unique(units[rows], return_counts=True)
            assert torch.equal(count, torch.bincount(units)[ids])  # whole units only
            drawn[ids] += 1
    share = drawn / (2000 * 3)
    assert torch.allclose(share, torch.full((6,), 0.3), atol=0.03)  # each unit with rate q
    tiny = dp.UnitPoissonLoader(units, 0.01, torch.Generator().manual_seed(0))
    sizes = [len(rows) for rows in tiny]
    assert len(sizes) == 100 and sizes.count(0) > 80


def test_dp_with_a_batchnorm_backbone_in_train_mode_is_refused(tmp_path):
    """The faithful loop runs the frozen backbone in train mode: BatchNorm would mix the
    patients of a batch, and DP-SGD's sensitivity would not be C."""
    backbone = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    x, y = torch.zeros(8, 1, 16, 16), torch.tensor([0, 1] * 4)
    with pytest.raises(UserError, match="BatchNorm in train mode .* set train.faithful: false"):
        classify.train_head(
            dp_job("b"), models.make_head("mlp", 4), x, y, x, y, tmp_path, backbone=backbone
        )
