"""Classifier jobs end to end: the same seed gives the same numbers, pretrained sources and
backbone inits are really loaded, the faithful loop runs the backbone as the study."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from mammodp import classify, images
from mammodp.classify import models
from mammodp.errors import UserError

from ..helpers.jobs import make_job
from ..helpers.models import TINY, TV_TINY, drop_rates


def test_same_seed_same_numbers(tmp_path, tiny_manifest):
    a = classify.run(make_job("a", eps=6.0), tiny_manifest, None, None, tmp_path / "a")
    b = classify.run(make_job("a", eps=6.0), tiny_manifest, None, None, tmp_path / "b")
    c = classify.run(make_job("a", eps=6.0, seed=2), tiny_manifest, None, None, tmp_path / "c")
    assert a["test"] == b["test"]
    assert (tmp_path / "a" / "predictions.csv").read_bytes() == (
        tmp_path / "b" / "predictions.csv"
    ).read_bytes()
    assert a["test"] != c["test"]


def test_pretrained_source_is_really_loaded(tmp_path, tiny_manifest):
    src = classify.run(
        make_job("src", trained="all", head="linear", epochs=2),
        tiny_manifest,
        None,
        None,
        tmp_path / "src",
    )
    assert src["chosen_epoch"] in (1, 2)
    dst = make_job("dst", eps=6.0, head="linear", init="from:src", epochs=2)
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


def test_faithful_loop_runs_the_backbone_in_train_mode(tmp_path, tiny_manifest):
    import dataclasses

    def faithful(rate, out):
        j = make_job("f", eps=6.0, epochs=2)
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
        make_job("src", trained="all", head="linear", epochs=2, model=TV_TINY),
        tiny_manifest,
        None,
        None,
        tmp_path / "src",
    )
    assert set(src["test"]) == {"cbis-ddsm", "bcdr"} and src["chosen_epoch"] in (1, 2)
    src_model = str(tmp_path / "src" / "model.pt")
    dst = make_job("dst", eps=6.0, head="mlp", init="backbone:src", epochs=2, model=TV_TINY)
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
        make_job("src", trained="all", head="mlp", epochs=1),
        tiny_manifest,
        None,
        None,
        tmp_path / "s",
    )
    src_model = str(tmp_path / "s" / "model.pt")
    seen = _spy_train_head(monkeypatch)
    job = make_job("dst", eps=6.0, head="mlp", init="backbone:src", epochs=1, seed=3)
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
        make_job("dst", eps=6.0, init="from:src", epochs=1, seed=3),
        tiny_manifest,
        None,
        src_model,
        tmp_path / "f",
    )
    for k, v in src_ckpt["head"].items():
        assert torch.equal(seen["head"][k], v), k
    with pytest.raises(UserError, match="use init backbone:src for a new head"):
        classify.run(
            make_job("dst", eps=6.0, head="linear", init="from:src", epochs=1),
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
    src = make_job("src", trained="all", head="linear", epochs=1, model=TV_TINY)
    src.model = dataclasses.replace(TV_TINY, drop_path_rate=0.5)
    classify.run(src, tiny_manifest, None, None, tmp_path / "s")
    seen = _spy_train_head(monkeypatch, stop=True)
    swin_t = models.ModelSpec(arch="swin_t", pretrained="none")
    job = make_job("f", eps=6.0, model=swin_t)
    job.train = dataclasses.replace(job.train, faithful=True)
    with pytest.raises(StopIteration):
        classify.run(job, tiny_manifest, None, None, tmp_path / "f")
    rates = drop_rates(seen["backbone"])
    assert len(rates) == 12 and rates[-1] == 0.2 and rates == sorted(rates)
    for init in ("backbone:src", "from:src"):
        job = make_job("f", eps=6.0, head="linear", init=init, model=TV_TINY)
        job.train = dataclasses.replace(job.train, faithful=True)
        with pytest.raises(StopIteration):
            classify.run(job, tiny_manifest, None, str(tmp_path / "s" / "model.pt"), tmp_path / "g")
        assert drop_rates(seen["backbone"]) == [0.0, 0.2], init
