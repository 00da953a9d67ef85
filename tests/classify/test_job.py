"""Classifier jobs: cached features are exact, DP is accounted honestly, selection as the study."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mammodp import classify, images, training_state
from mammodp.classify import dp, models, selection
from mammodp.classify.job import _initial_backbone
from mammodp.classify.lineage import read_source_privacy
from mammodp.classify.trainer import Trainer
from mammodp.config import Experiment
from mammodp.errors import UserError
from mammodp.images import load_images

from ..helpers.models import TINY, TV_TINY, drop_rates


def _job(name, eps=None, trained="head", head="mlp", init="backbone", epochs=3, seed=1, model=TINY):
    exp = Experiment(name, "-", "real", "real", trained, head, init, eps)
    return classify.Job(
        exp,
        seed,
        model,
        classify.TrainSpec(epochs=epochs, batch_size=16, lr=1e-3),
        classify.DPSpec(),
    )


def test_cached_features_are_exact():
    """Head loss and gradients on cached features equal those through the eval-mode backbone."""
    torch.manual_seed(0)
    backbone = models.create_backbone(TINY)
    x = torch.rand(6, 1, 32, 32) * 2 - 1
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    feats = models.backbone_features(backbone, x)  # (N, 4 flips, F)
    variants = torch.tensor([0, 1, 2, 3, 1, 3])
    head_a = models.make_head("mlp", backbone.num_features)
    head_b = models.make_head("mlp", backbone.num_features)
    head_b.load_state_dict(head_a.state_dict())
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    loss_a = loss_fn(head_a(feats[torch.arange(6), variants]), y)
    loss_a.backward()
    backbone.eval()
    flipped = torch.cat(
        [images.flip(x[i : i + 1], images.FLIPS[v]) for i, v in enumerate(variants)]
    )
    loss_b = loss_fn(models.Classifier(backbone, head_b)(flipped), y)
    loss_b.backward()
    assert torch.allclose(loss_a, loss_b, atol=1e-6)
    for pa, pb in zip(head_a.parameters(), head_b.parameters(), strict=True):
        assert torch.allclose(pa.grad, pb.grad, atol=1e-6)


def test_selection_rule():
    h = [
        {"val_auprc": 0.8, "val_loss": 0.5, "eligible": False},
        {"val_auprc": 0.7, "val_loss": 0.5, "eligible": True},
        {"val_auprc": 0.7, "val_loss": 0.4, "eligible": True},
        {"val_auprc": float("nan"), "val_loss": 0.1, "eligible": True},
        {"val_auprc": 0.7, "val_loss": 0.4, "eligible": True},
    ]

    def choose(dp):
        best = None
        for i, row in enumerate(h):
            if selection.is_better(row, None if best is None else h[best], dp):
                best = i
        return best

    assert choose(dp=True) == 2  # best AUPRC among eligible, tie -> lower loss, then earlier
    assert choose(dp=False) == 0


def test_dp_run_and_privacy_report(tmp_path, tiny_manifest):
    job = _job("dp", eps=6.0, epochs=4)
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


def test_no_epoch_in_the_epsilon_window_is_flagged(tmp_path, tiny_manifest, caplog):
    import dataclasses

    job = _job("dp", eps=6.0, epochs=2)
    job.dp = dataclasses.replace(job.dp, epsilon_window=(1.04, 1.05))  # unreachable in 2 epochs
    with caplog.at_level("WARNING", logger="mammodp.classify"):
        classify.run(job, tiny_manifest, None, None, tmp_path)
    privacy = json.loads((tmp_path / "privacy.json").read_text())
    assert privacy["chosen_in_window"] is False
    assert "no epoch spent an epsilon within (1.04, 1.05) x 6" in caplog.text


def test_same_seed_same_numbers(tmp_path, tiny_manifest):
    a = classify.run(_job("a", eps=6.0), tiny_manifest, None, None, tmp_path / "a")
    b = classify.run(_job("a", eps=6.0), tiny_manifest, None, None, tmp_path / "b")
    c = classify.run(_job("a", eps=6.0, seed=2), tiny_manifest, None, None, tmp_path / "c")
    assert a["test"] == b["test"]
    assert (tmp_path / "a" / "predictions.csv").read_bytes() == (
        tmp_path / "b" / "predictions.csv"
    ).read_bytes()
    assert a["test"] != c["test"]


def test_pretrained_source_is_really_loaded(tmp_path, tiny_manifest):
    src = classify.run(
        _job("src", trained="all", head="linear", epochs=2),
        tiny_manifest,
        None,
        None,
        tmp_path / "src",
    )
    assert src["chosen_epoch"] in (1, 2)
    dst = _job("dst", eps=6.0, head="linear", init="from:src", epochs=2)
    classify.run(dst, tiny_manifest, None, str(tmp_path / "src" / "model.pt"), tmp_path / "dst")
    privacy = json.loads((tmp_path / "dst" / "privacy.json").read_text())
    assert privacy["pretrained_from"] == "src" and privacy["source_dp"] is False
    assert (
        privacy["synthetic_in_lineage"] is False
        and "src, whose training was not" in privacy["note"]
    )
    source_model, _ = models.load_model(tmp_path / "src" / "model.pt")
    tuned, ckpt = models.load_model(tmp_path / "dst" / "model.pt")
    assert ckpt["backbone_source"]["kind"] == "model"
    for k, v in source_model.backbone.state_dict().items():
        assert torch.equal(tuned.backbone.state_dict()[k], v), k  # frozen: the source's backbone
    random_init = models.create_backbone(TINY).state_dict()
    assert any(not torch.equal(random_init[k], v) for k, v in tuned.backbone.state_dict().items())


@pytest.mark.parametrize(
    ("train_data", "source", "private", "want"),
    [
        ("real", None, False, (False, None)),  # no source: nothing synthetic anywhere
        ("real", {"dp": False, "synthetic_in_training": True}, False, (True, False)),
        ("real", {"dp": True, "synthetic_in_lineage": True}, True, (True, True)),
        ("real+synthetic", None, False, (True, False)),
        ("real", "unknown", False, (None, None)),  # a source model with no privacy.json
    ],
)
def test_privacy_lineage_follows_the_source_model(train_data, source, private, want):
    init = "backbone" if source is None else "from:src"
    job = _job("dst", eps=6.0, init=init)
    job.experiment = Experiment("dst", "-", "x", train_data, "head", "mlp", init, 6.0)
    job.synthetic_generator_private = private
    known = None if source == "unknown" else source
    lineage = classify.privacy_lineage(job.experiment, job, known)
    assert (lineage["synthetic_in_lineage"], lineage["generator_private"]) == want
    assert ("NOT trained privately" in lineage["note"]) == (want == (True, False))


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
        sigma = classify.noise_multiplier(_job("x", eps=float(eps), epochs=300), q)
        acc = RDPAccountant()
        acc.history = [(sigma, q, 300 * 9)]
        assert acc.get_epsilon(1e-4) <= eps
        acc.history = [(sigma * 0.99, q, 300 * 9)]
        assert acc.get_epsilon(1e-4) > eps


def _dp_job(name, clipping="bookkeeping", batch=16, epochs=3, unit="crop", accountant="rdp"):
    import dataclasses

    j = _job(name, eps=6.0, epochs=epochs)
    j.train = dataclasses.replace(j.train, batch_size=batch)
    j.dp = dataclasses.replace(j.dp, clipping=clipping, unit=unit, accountant=accountant)
    return j


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
        _dp_job("o", batch=batch, epochs=epochs), tiny_manifest, None, None, tmp_path / "bk"
    )
    op = classify.run(
        _dp_job("o", "opacus", batch, epochs), tiny_manifest, None, None, tmp_path / "op"
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


def test_the_chosen_epoch_is_the_best_eligible_one(tmp_path, tiny_manifest):
    """The window is reached: the chosen epoch spent an epsilon inside it and has the best
    validation AUPRC (then loss) of the eligible epochs, not of all epochs."""
    import dataclasses

    job = _job("w", eps=6.0, epochs=6)
    job.dp = dataclasses.replace(job.dp, epsilon_window=(0.8, 1.05))
    classify.run(job, tiny_manifest, None, None, tmp_path)
    privacy = json.loads((tmp_path / "privacy.json").read_text())
    h = pd.read_csv(tmp_path / "history.csv")
    inside = h[(h["epsilon"] > 0.8 * 6.0) & (h["epsilon"] < 1.05 * 6.0)]
    assert 0 < len(inside) < len(h)
    assert h["eligible"].tolist() == h.index.isin(inside.index).tolist()
    best = inside.sort_values(["val_auprc", "val_loss"], ascending=[False, True]).iloc[0]
    assert privacy["chosen_in_window"] is True
    assert privacy["chosen_epoch"] == best["epoch"]
    assert privacy["epsilon_at_chosen_epoch"] == pytest.approx(best["epsilon"])


@pytest.mark.parametrize("accountant", ["prv", "gdp"])
def test_prv_and_gdp_accountants(tmp_path, tiny_manifest, accountant):
    """sigma for the target under the chosen accountant; its epsilon recomputed independently
    from (sigma, q, steps); the GDP approximation is flagged."""
    from opacus.accountants import create_accountant

    classify.run(_dp_job("a", accountant=accountant, epochs=4), tiny_manifest, None, None, tmp_path)
    privacy = json.loads((tmp_path / "privacy.json").read_text())
    assert privacy["accountant"] == accountant
    acc = create_accountant(accountant)
    acc.history = [(privacy["noise_multiplier"], privacy["sample_rate"], privacy["steps"])]
    assert acc.get_epsilon(privacy["delta"]) == pytest.approx(privacy["epsilon_final"], rel=1e-6)
    assert privacy["epsilon_final"] <= 6.0 * 1.01  # Opacus' epsilon tolerance
    rdp = classify.noise_multiplier(_dp_job("a", epochs=4), privacy["sample_rate"])
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
    classify.run(_dp_job("u", unit="patient"), m, None, None, tmp_path / "u")
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
    classify.run(_dp_job("u"), m, None, None, tmp_path / "c")  # the same job, per crop
    crop_privacy = json.loads((tmp_path / "c" / "privacy.json").read_text())
    assert crop_privacy["noise_multiplier"] == privacy["noise_multiplier"]  # same q and steps
    assert crop_privacy["patient_epsilon"] == pytest.approx(4 * crop_privacy["epsilon_final"])
    losses = [pd.read_csv(tmp_path / d / "history.csv")["val_loss"] for d in ("u", "c")]
    assert not np.allclose(*losses)  # other batches, other clipping


@pytest.mark.parametrize(
    ("eps", "trained", "head", "clipping"),
    [
        (6.0, "head", "mlp", "bookkeeping"),
        (6.0, "head", "mlp", "opacus"),
        (None, "all", "linear", "bookkeeping"),
    ],
)
def test_kill_and_resume_gives_the_same_result(
    tmp_path, tiny_manifest, eps, trained, head, clipping
):
    import dataclasses

    def job():
        j = _job("k", eps=eps, trained=trained, head=head, epochs=4)
        j.train = dataclasses.replace(j.train, checkpoint_every=1)
        j.dp = dataclasses.replace(j.dp, clipping=clipping)
        return j

    full = classify.run(job(), tiny_manifest, None, None, tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        classify.run(job(), tiny_manifest, None, None, tmp_path / "b", stop_after=2)
    assert (tmp_path / "b" / ".state" / "state.pt").exists()
    assert not (tmp_path / "b" / "metrics.json").exists()
    resumed = classify.run(job(), tiny_manifest, None, None, tmp_path / "b")
    assert resumed["test"] == full["test"] and resumed["chosen_epoch"] == full["chosen_epoch"]
    for name in ("predictions.csv", "history.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert not (tmp_path / "b" / ".state").exists()  # finished: nothing left to resume


def test_cached_feature_files_give_the_same_run(tmp_path, tiny_manifest):
    backbone = models.create_backbone(TINY)
    paths = sorted(tiny_manifest["path"])
    feats = models.backbone_features(backbone, images.load_images(paths, TINY.input_size))
    torch.save(classify.feature_file(paths, feats), tmp_path / "real.pt")
    a = classify.run(_job("c", eps=6.0), tiny_manifest, None, None, tmp_path / "a")
    b = classify.run(
        _job("c", eps=6.0),
        tiny_manifest,
        None,
        None,
        tmp_path / "b",
        features=[str(tmp_path / "real.pt")],
    )
    assert a["test"] == b["test"]
    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    lo, hi = metrics["test"]["cbis-ddsm"]["ci95"]["auroc"]
    assert lo <= metrics["test"]["cbis-ddsm"]["auroc"] <= hi


def test_faithful_loop_runs_the_backbone_in_train_mode(tmp_path, tiny_manifest):
    import dataclasses

    def faithful(rate, out):
        j = _job("f", eps=6.0, epochs=2)
        j.train = dataclasses.replace(j.train, faithful=True)
        j.model = dataclasses.replace(TINY, drop_path_rate=rate)
        classify.run(j, tiny_manifest, None, None, tmp_path / out)
        return pd.read_csv(tmp_path / out / "predictions.csv")["p_benign"]

    # The same loop, seeds and draws; only the depth differs. In eval mode (stochastic depth
    # off) the rate would change nothing.
    p0, p0_again, p5 = faithful(0.0, "a"), faithful(0.0, "b"), faithful(0.5, "c")
    assert np.array_equal(p0, p0_again)
    assert not np.allclose(p0, p5, atol=1e-4)  # stochastic depth changed what the head saw
    h = pd.read_csv(tmp_path / "c" / "history.csv")
    assert len(h) == 2 and h["epsilon"].notna().all()


# ----------------------------------------------------------------------------- resume key: data


def _resumable(j):
    import dataclasses

    j.train = dataclasses.replace(j.train, checkpoint_every=1)
    return j


def _changed(manifest, change):
    m = manifest.copy()
    train = m.index[m["split"] == "train"]
    val = m.index[m["split"] == "val"]
    if change == "train_labels":
        m.loc[train[0], "label"] = 1 - m.loc[train[0], "label"]
    elif change == "val_labels":
        m.loc[val[0], "label"] = 1 - m.loc[val[0], "label"]
    elif change == "train_images":  # same paths and labels, other pixels: train crop 0 <- 2
        m.loc[train[0], "path"] = m.loc[train[2], "path"]
    else:
        raise ValueError(change)
    return m


def _kill_then_rerun(tmp_path, caplog, job, before: dict, after: dict, between=None):
    """Stop ``job`` after epoch 2 with ``before``'s arguments, (call ``between``,) rerun it in
    the same folder with ``after``'s and run it afresh elsewhere with ``after``'s: the rerun must
    be the fresh run, not a resumption of the state left behind."""
    import logging

    with pytest.raises(KeyboardInterrupt):
        classify.run(job(), out_dir=tmp_path / "b", stop_after=2, **before)
    assert (tmp_path / "b" / ".state" / "state.pt").exists()
    if between is not None:
        between()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mammodp.classify"):
        rerun = classify.run(job(), out_dir=tmp_path / "b", **after)
    assert "saved training state is for other data" in caplog.text
    assert "resuming" not in caplog.text
    fresh = classify.run(job(), out_dir=tmp_path / "a", **after)
    assert rerun == fresh
    for name in ("predictions.csv", "history.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert len(pd.read_csv(tmp_path / "b" / "history.csv")) == 4


@pytest.mark.parametrize(
    ("change", "trained", "head"),
    [
        ("train_labels", "head", "mlp"),
        ("val_labels", "head", "mlp"),
        ("train_images", "head", "mlp"),
        ("train_images", "all", "linear"),
    ],
)
def test_state_from_other_data_is_not_resumed(
    tmp_path, tiny_manifest, caplog, change, trained, head
):
    eps = 6.0 if trained == "head" else None
    new = _changed(tiny_manifest, change)

    def job():
        return _resumable(_job("d", eps=eps, trained=trained, head=head, epochs=4))

    common = {"synthetic": None, "source_model": None}
    _kill_then_rerun(
        tmp_path, caplog, job, {"manifest": tiny_manifest, **common}, {"manifest": new, **common}
    )


def test_state_from_other_cached_features_is_not_resumed(tmp_path, tiny_manifest, caplog):
    backbone = models.create_backbone(TINY)
    paths = sorted(tiny_manifest["path"])
    feats = models.backbone_features(backbone, images.load_images(paths, TINY.input_size))
    files = {}
    for name, f in (("old", feats), ("new", feats * 1.5)):
        files[name] = tmp_path / f"{name}.pt"
        torch.save(classify.feature_file(paths, f), files[name])

    def args(name):
        return {
            "manifest": tiny_manifest,
            "synthetic": None,
            "source_model": None,
            "features": [str(files[name])],
        }

    _kill_then_rerun(
        tmp_path, caplog, lambda: _resumable(_job("c", eps=6.0, epochs=4)), args("old"), args("new")
    )


def test_state_from_another_source_model_is_not_resumed(tmp_path, tiny_manifest, caplog):
    """Same experiment, same data, same path of the source model, but another model in it."""
    import shutil

    for seed in (1, 2):
        classify.run(
            _job("src", trained="all", head="linear", epochs=1, seed=seed),
            tiny_manifest,
            None,
            None,
            tmp_path / f"src{seed}",
        )
    source = tmp_path / "source.pt"
    shutil.copyfile(tmp_path / "src1" / "model.pt", source)
    common = {"manifest": tiny_manifest, "synthetic": None, "source_model": str(source)}

    def job():
        return _resumable(_job("dst", eps=6.0, head="linear", init="from:src", epochs=4))

    def swap():
        shutil.copyfile(tmp_path / "src2" / "model.pt", source)

    _kill_then_rerun(tmp_path, caplog, job, common, common, between=swap)


def test_data_fingerprint_is_deterministic_and_sensitive():
    x, y = torch.arange(12.0).reshape(3, 4), torch.tensor([0, 1, 0])
    fp = training_state.data_fingerprint(x, y)
    assert fp == training_state.data_fingerprint(x.clone(), y.clone())
    assert fp == training_state.data_fingerprint(
        x.t().contiguous().t(), y
    )  # layout does not matter
    assert fp != training_state.data_fingerprint(x, torch.tensor([0, 1, 1]))
    assert fp != training_state.data_fingerprint(x.reshape(4, 3), y)
    assert fp != training_state.data_fingerprint(x.double(), y)
    assert fp != training_state.data_fingerprint(x, y, source_sha256="0" * 64)
    assert training_state.data_fingerprint(x.bfloat16(), torch.tensor([True, False]))  # any dtype


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_cuda_rng_state_is_saved_and_restored_on_cuda_only(tmp_path, monkeypatch, device):
    """On CUDA the CUDA generators' states travel with the state (faked here: no GPU needed);
    on CPU CUDA is never touched."""
    cuda_states = [torch.tensor([1, 2, 3], dtype=torch.uint8)]
    restored = []

    def get_all():
        if device == "cpu":
            raise AssertionError("CUDA RNG read on a CPU job")
        return [s.clone() for s in cuda_states]

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", get_all)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    job = _job("r", epochs=3)
    job.device = device

    def trainer():
        head = torch.nn.Linear(2, 2)
        opt = torch.optim.SGD(head.parameters(), lr=0.1)
        return Trainer(job, tmp_path, head, 4, "fp"), opt

    tr, opt = trainer()
    tr.save(2, opt)
    tr, opt = trainer()
    assert tr.resume(opt) == 3
    if device == "cpu":
        assert restored == []
    else:
        assert len(restored) == 1 and torch.equal(restored[0][0], cuda_states[0])


# ----------------------------------------------------------------------------- torchvision swin_t


def _spy_train_head(monkeypatch, stop=False):
    """Record what run() hands to train_head (the head's initial weights, the backbone of the
    faithful loop); with ``stop`` end the run there."""
    seen = {}
    real = classify.train_head

    def spy(job, head, *args, **kwargs):
        seen["head"] = {k: v.clone() for k, v in head.state_dict().items()}
        seen["backbone"] = args[5] if len(args) > 5 else kwargs.get("backbone")
        if stop:
            raise StopIteration("seen")
        return real(job, head, *args, **kwargs)

    monkeypatch.setattr(classify.job, "train_head", spy)
    return seen


def test_reduced_torchvision_swin_end_to_end_and_a_backbone_init(tmp_path, tiny_manifest):
    """dbr15 -> dbr155 in small: a reduced torchvision Swin trained fully with a linear head,
    then its backbone, frozen, under a new MLP head with DP (other head type: allowed)."""
    src = classify.run(
        _job("src", trained="all", head="linear", epochs=2, model=TV_TINY),
        tiny_manifest,
        None,
        None,
        tmp_path / "src",
    )
    assert set(src["test"]) == {"cbis-ddsm", "bcdr"} and src["chosen_epoch"] in (1, 2)
    src_model = str(tmp_path / "src" / "model.pt")
    dst = _job("dst", eps=6.0, head="mlp", init="backbone:src", epochs=2, model=TV_TINY)
    a = classify.run(dst, tiny_manifest, None, src_model, tmp_path / "a")
    # The workflow's way: the source backbone's features computed once (backbone_features rule).
    paths = sorted(tiny_manifest["path"])
    feats = models.backbone_features(
        models.load_backbone(src_model), images.load_images(paths, TV_TINY.input_size)
    )
    torch.save(classify.feature_file(paths, feats), tmp_path / "f.pt")
    b = classify.run(dst, tiny_manifest, None, src_model, tmp_path / "b", [str(tmp_path / "f.pt")])
    assert a["test"] == b["test"]
    tuned, ckpt = models.load_model(tmp_path / "a" / "model.pt")
    assert ckpt["head_type"] == "mlp" and ckpt["backbone"] is None
    assert ckpt["backbone_source"]["path"] == src_model
    privacy = json.loads((tmp_path / "a" / "privacy.json").read_text())
    assert privacy["pretrained_from"] == "src" and privacy["source_loaded"] == "backbone"
    assert privacy["source_dp"] is False
    assert "Backbone from src, whose training was not private (real crops)" in privacy["note"]


def test_backbone_init_has_the_source_backbone_and_a_fresh_head(
    tmp_path, tiny_manifest, monkeypatch
):
    classify.run(
        _job("src", trained="all", head="mlp", epochs=1), tiny_manifest, None, None, tmp_path / "s"
    )
    src_model = str(tmp_path / "s" / "model.pt")
    seen = _spy_train_head(monkeypatch)
    job = _job("dst", eps=6.0, head="mlp", init="backbone:src", epochs=1, seed=3)
    classify.run(job, tiny_manifest, None, src_model, tmp_path / "d")
    source, src_ckpt = models.load_model(src_model)
    torch.manual_seed(3)  # the run's seed
    fresh = models.make_head("mlp", 32).state_dict()
    for k, v in fresh.items():
        assert torch.equal(seen["head"][k], v), k  # a new head, seeded by the run's seed
    assert not all(torch.equal(seen["head"][k], src_ckpt["head"][k]) for k in fresh)
    tuned, _ = models.load_model(tmp_path / "d" / "model.pt")
    for k, v in source.backbone.state_dict().items():
        assert torch.equal(tuned.backbone.state_dict()[k], v), k
    # from: with the same source loads its head instead; with another head type it refuses.
    classify.run(
        _job("dst", eps=6.0, init="from:src", epochs=1, seed=3),
        tiny_manifest,
        None,
        src_model,
        tmp_path / "f",
    )
    for k, v in src_ckpt["head"].items():
        assert torch.equal(seen["head"][k], v), k
    with pytest.raises(UserError, match="use init backbone:src for a new head"):
        classify.run(
            _job("dst", eps=6.0, head="linear", init="from:src", epochs=1),
            tiny_manifest,
            None,
            src_model,
            tmp_path / "g",
        )


def test_faithful_swin_t_runs_its_frozen_backbone_with_stochastic_depth_0_2(
    tmp_path, tiny_manifest, monkeypatch
):
    """train.faithful with drop_path_rate null: the study's loop sees swin_t's own 0.2 (last
    block), for a pretrained backbone and for one loaded from a source model."""
    import dataclasses

    # A source trained with drop_path_rate 0.5: the faithful job's own setting (null) wins.
    src = _job("src", trained="all", head="linear", epochs=1, model=TV_TINY)
    src.model = dataclasses.replace(TV_TINY, drop_path_rate=0.5)
    classify.run(src, tiny_manifest, None, None, tmp_path / "s")
    seen = _spy_train_head(monkeypatch, stop=True)
    swin_t = models.ModelSpec(arch="swin_t", pretrained="none")
    job = _job("f", eps=6.0, model=swin_t)
    job.train = dataclasses.replace(job.train, faithful=True)
    with pytest.raises(StopIteration):
        classify.run(job, tiny_manifest, None, None, tmp_path / "f")
    rates = drop_rates(seen["backbone"])
    assert len(rates) == 12 and rates[-1] == 0.2 and rates == sorted(rates)
    for init in ("backbone:src", "from:src"):
        job = _job("f", eps=6.0, head="linear", init=init, model=TV_TINY)
        job.train = dataclasses.replace(job.train, faithful=True)
        with pytest.raises(StopIteration):
            classify.run(job, tiny_manifest, None, str(tmp_path / "s" / "model.pt"), tmp_path / "g")
        assert drop_rates(seen["backbone"]) == [0.0, 0.2], init


def test_backbone_lineage_follows_frozen_sources_to_the_run_that_trained_the_backbone(tmp_path):
    """backbone:<x> takes x's backbone only: its privacy lineage is that of the run that trained
    the backbone (x itself, or x's own source when x is frozen), or none for pretrained weights."""
    from mammodp.fileio import sha256_file

    def save(name, trained, source):
        d = tmp_path / name
        d.mkdir()
        model = models.Classifier(models.create_backbone(TV_TINY), models.make_head("mlp", 32))
        models.save_checkpoint(
            d / "model.pt",
            spec=TV_TINY,
            head_type="mlp",
            model=model,
            backbone_trained=trained,
            backbone_source=source,
        )
        return str(d / "model.pt")

    def ref(path):
        return {"kind": "model", "path": path, "sha256": sha256_file(path)}

    full = save("full", True, {"kind": "pretrained"})  # dbr15: synthetic crops, non-private
    (tmp_path / "full" / "privacy.json").write_text(
        json.dumps(
            {
                "experiment": "full",
                "dp": False,
                "train_data": "synthetic",
                "synthetic_in_training": True,
                "synthetic_in_lineage": True,
            }
        )
    )
    frozen_on_full = save("frozen_on_full", False, ref(full))
    (tmp_path / "frozen_on_full" / "privacy.json").write_text(
        json.dumps(
            {
                "experiment": "frozen_on_full",
                "dp": True,
                "train_data": "real",
                "synthetic_in_training": False,
                "synthetic_in_lineage": True,
            }
        )
    )
    frozen_on_imagenet = save("frozen_on_imagenet", False, {"kind": "pretrained"})
    (tmp_path / "frozen_on_imagenet" / "privacy.json").write_text(
        json.dumps(
            {
                "experiment": "frozen_on_imagenet",
                "dp": False,
                "train_data": "synthetic",
                "synthetic_in_training": True,
                "synthetic_in_lineage": True,
            }
        )
    )

    def lineage(init, path):
        exp = Experiment("dst", "dbr155", "x", "real", "head", "mlp", init, 6.0)
        job = _job("dst", eps=6.0)
        return classify.privacy_lineage(exp, job, read_source_privacy(exp, path))

    dbr155 = lineage("backbone:full", full)
    assert (dbr155["source_dp"], dbr155["synthetic_in_lineage"]) == (False, True)
    assert dbr155["generator_private"] is False and "NOT trained privately" in dbr155["note"]
    assert "Backbone from full, whose training was not private (synthetic crops)" in dbr155["note"]
    chained = lineage("backbone:frozen_on_full", frozen_on_full)
    assert chained["source_dp"] is False  # full's training, not frozen_on_full's DP head
    assert (
        "Backbone from frozen_on_full (trained in full), whose training was not" in chained["note"]
    )
    imagenet = lineage("backbone:frozen_on_imagenet", frozen_on_imagenet)
    assert (imagenet["source_dp"], imagenet["synthetic_in_lineage"]) == (None, False)
    assert "the configured backbone, passed on unchanged by frozen sources" in imagenet["note"]
    assert "NOT trained privately" not in imagenet["note"]
    # from: the source's head came along: its own training counts (its synthetic crops).
    whole = lineage("from:frozen_on_imagenet", frozen_on_imagenet)
    assert (whole["source_dp"], whole["synthetic_in_lineage"]) == (False, True)
    assert whole["source_loaded"] == "model" and imagenet["source_loaded"] == "backbone"


def test_dp_run_on_dp_mcgan_crops_reports_the_lineage_epsilon(tmp_path, tiny_manifest):
    from opacus.accountants import RDPAccountant

    exp = Experiment("mix", "-", "x", "real+synthetic", "head", "mlp", "backbone", 6.0)
    job = classify.Job(
        exp,
        1,
        TINY,
        classify.TrainSpec(epochs=2, batch_size=16, lr=1e-3),
        classify.DPSpec(),
        synthetic_generator_private=True,
    )
    train = tiny_manifest[tiny_manifest["split"] == "train"]
    synthetic = train[["path", "label"]].head(16).reset_index(drop=True)
    gan = {"dp": True, "accountant": "rdp", "noise_multiplier": 1.3, "sample_rate": 0.05}
    gan |= {"steps": 400, "delta": 1e-5, "epsilon_final": 2.0}
    classify.run(job, tiny_manifest, synthetic, None, tmp_path, generator_privacy=gan)
    privacy = json.loads((tmp_path / "privacy.json").read_text())
    assert [p["part"] for p in privacy["lineage_parts"]] == ["classifier mix", "generator"]
    acc = RDPAccountant()
    acc.history = [
        (privacy["noise_multiplier"], privacy["sample_rate"], privacy["steps"]),
        (1.3, 0.05, 400),
    ]
    delta = privacy["delta"] + 1e-5
    assert privacy["lineage_epsilon_rdp"] == pytest.approx(acc.get_epsilon(delta), rel=1e-9)
    assert privacy["lineage_epsilon_basic"] == pytest.approx(privacy["epsilon_final"] + 2.0)


def test_progress_is_logged_and_history_written_as_the_epochs_go(tmp_path, tiny_manifest, caplog):
    """A DP job killed after epoch 2 has logged one line per epoch (no training loss under DP)
    and left history.csv of the epochs so far."""
    import dataclasses

    job = _job("p", eps=6.0, epochs=4)
    job.train = dataclasses.replace(job.train, checkpoint_every=1)
    with caplog.at_level("INFO", logger="mammodp.classify"), pytest.raises(KeyboardInterrupt):
        classify.run(job, tiny_manifest, None, None, tmp_path, stop_after=2)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert [line.split(":")[0] for line in lines] == ["epoch 1/4", "epoch 2/4"]
    assert all("epsilon" in x and "val_auprc" in x and "left" in x for x in lines)
    assert not any("train_loss" in x for x in lines)
    history = pd.read_csv(tmp_path / "history.csv")
    assert list(history["epoch"])[:1] == [1] and "train_loss" not in history
    assert not (tmp_path / "metrics.json").exists()


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


def test_the_unit_of_privacy_is_part_of_the_resume_key():
    import dataclasses

    job = _dp_job("k")
    other = dataclasses.replace(job.dp, unit="patient")
    assert job.key() != classify.Job(job.experiment, 1, TINY, job.train, other).key()


def test_dp_with_a_batchnorm_backbone_in_train_mode_is_refused(tmp_path):
    """The faithful loop runs the frozen backbone in train mode: BatchNorm would mix the
    patients of a batch, and DP-SGD's sensitivity would not be C."""
    backbone = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    x, y = torch.zeros(8, 1, 16, 16), torch.tensor([0, 1] * 4)
    with pytest.raises(UserError, match="BatchNorm in train mode .* set train.faithful: false"):
        classify.train_head(
            _dp_job("b"), models.make_head("mlp", 4), x, y, x, y, tmp_path, backbone=backbone
        )


def test_chains_link_only_to_checkpoints_that_hold_weights(tmp_path, tiny_manifest):
    """A run on a frozen source refers to the checkpoint that holds its backbone (the one the
    rule declares), or, when that is the configured pretrained backbone, to no checkpoint: a
    later run never follows a path its rule did not declare."""
    classify.run(_job("full", trained="all", epochs=1), tiny_manifest, None, None, tmp_path / "f")
    classify.run(_job("frozen", epochs=1), tiny_manifest, None, None, tmp_path / "p")
    full, frozen = str(tmp_path / "f" / "model.pt"), str(tmp_path / "p" / "model.pt")
    *_, on_pretrained = _initial_backbone(_job("a", init="from:frozen"), frozen)
    assert on_pretrained == {"kind": "pretrained", "pretrained": TINY.pretrained}
    classify.run(
        _job("b", init="backbone:full", epochs=1), tiny_manifest, None, full, tmp_path / "b"
    )
    b = str(tmp_path / "b" / "model.pt")
    *_, on_b = _initial_backbone(_job("c", init="backbone:b"), b, full)
    assert on_b["kind"] == "model" and on_b["path"] == full  # one link, to the weights


def test_feature_files_flip_only_the_training_crops(tiny_manifest, tmp_path):
    """The extraction rule's command computes all four flips for training crops and only the
    unflipped view for evaluation crops (NaN elsewhere); a training set drawn from evaluation
    features is refused, and the unflipped features are those of a full pass."""
    import dataclasses

    from mammodp import cli

    folder = Path(tiny_manifest["path"][0]).parent
    manifest = tiny_manifest.assign(path=[Path(p).name for p in tiny_manifest["path"]])
    manifest.to_csv(tmp_path / "m.csv", index=False)
    model = json.dumps(dataclasses.asdict(TINY))
    argv = ["backbone-features", "--manifest", str(tmp_path / "m.csv"), "--images", str(folder)]
    assert cli.main([*argv, "--model", model, "--out", str(tmp_path / "f.pt")]) == 0
    cache = classify.load_feature_cache([tmp_path / "f.pt"])
    train = tiny_manifest[tiny_manifest["split"] == "train"]["path"].tolist()
    evaluation = tiny_manifest[tiny_manifest["split"] != "train"]["path"].tolist()
    flips = classify.features_for(cache, train, "training")
    assert flips.shape[1] == 4 and flips.isfinite().all()
    unflipped = classify.features_for(cache, evaluation, "evaluation")
    assert unflipped[:, 0].isfinite().all() and unflipped[:, 1:].isnan().all()
    with pytest.raises(UserError, match="without their flips"):
        classify.features_for(cache, evaluation, "training")
    imgs = load_images(evaluation, TINY.input_size)
    full = models.backbone_features(models.create_backbone(TINY), imgs, ("none",))
    assert torch.allclose(unflipped[:, 0], full[:, 0], atol=1e-5)
