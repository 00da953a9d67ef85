"""The classifier's trainer: kill and resume gives the same run, and a saved state from other data,
other features, another source model or another unit of privacy is not resumed."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from mammodp import classify, images
from mammodp.classify import models
from mammodp.classify.trainer import Trainer

from ..helpers.jobs import dp_job, make_job
from ..helpers.models import TINY


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
        j = make_job("k", eps=eps, trained=trained, head=head, epochs=4)
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
        return _resumable(make_job("d", eps=eps, trained=trained, head=head, epochs=4))

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
        tmp_path,
        caplog,
        lambda: _resumable(make_job("c", eps=6.0, epochs=4)),
        args("old"),
        args("new"),
    )


def test_state_from_another_source_model_is_not_resumed(tmp_path, tiny_manifest, caplog):
    """Same experiment, same data, same path of the source model, but another model in it."""
    import shutil

    for seed in (1, 2):
        classify.run(
            make_job("src", trained="all", head="linear", epochs=1, seed=seed),
            tiny_manifest,
            None,
            None,
            tmp_path / f"src{seed}",
        )
    source = tmp_path / "source.pt"
    shutil.copyfile(tmp_path / "src1" / "model.pt", source)
    common = {"manifest": tiny_manifest, "synthetic": None, "source_model": str(source)}

    def job():
        return _resumable(make_job("dst", eps=6.0, head="linear", init="from:src", epochs=4))

    def swap():
        shutil.copyfile(tmp_path / "src2" / "model.pt", source)

    _kill_then_rerun(tmp_path, caplog, job, common, common, between=swap)


def test_progress_is_logged_and_history_written_as_the_epochs_go(tmp_path, tiny_manifest, caplog):
    """A DP job killed after epoch 2 has logged one line per epoch (no training loss under DP)
    and left history.csv of the epochs so far."""
    import dataclasses

    job = make_job("p", eps=6.0, epochs=4)
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


def test_the_unit_of_privacy_is_part_of_the_resume_key():
    import dataclasses

    job = dp_job("k")
    other = dataclasses.replace(job.dp, unit="patient")
    assert job.key() != classify.Job(job.experiment, 1, TINY, job.train, other).key()


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
    job = make_job("r", epochs=3)
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
