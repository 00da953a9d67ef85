"""Cached backbone features: exact, reusable across runs, flipped only for the training crops."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mammodp import classify, images
from mammodp.classify import models
from mammodp.errors import UserError
from mammodp.images import load_images

from ..helpers.jobs import make_job
from ..helpers.models import TINY


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


def test_cached_feature_files_give_the_same_run(tmp_path, tiny_manifest):
    backbone = models.create_backbone(TINY)
    paths = sorted(tiny_manifest["path"])
    feats = models.backbone_features(backbone, images.load_images(paths, TINY.input_size))
    torch.save(classify.feature_file(paths, feats), tmp_path / "real.pt")
    a = classify.run(make_job("c", eps=6.0), tiny_manifest, None, None, tmp_path / "a")
    b = classify.run(
        make_job("c", eps=6.0),
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


def test_a_head_on_cached_features_never_builds_the_backbone(tmp_path, tiny_manifest, monkeypatch):
    """A frozen head's inputs are the cache: building Swin-T (and importing torchvision for it)
    would only cost each head job seconds. Its checkpoint, and a run from it, still load."""
    backbone = models.create_backbone(TINY)
    paths = sorted(tiny_manifest["path"])
    feats = models.backbone_features(backbone, images.load_images(paths, TINY.input_size))
    torch.save(classify.feature_file(paths, feats), tmp_path / "real.pt")
    cached = [str(tmp_path / "real.pt")]

    def refuse(*args, **kwargs):
        raise AssertionError("a head job on cached features built a backbone")

    monkeypatch.setattr(models, "create_backbone", refuse)
    monkeypatch.setattr(models, "load_backbone", refuse)
    source = make_job("c", eps=6.0)
    classify.run(source, tiny_manifest, None, None, tmp_path / "c", features=cached)
    child = make_job("d", init="from:c")
    model_c = str(tmp_path / "c" / "model.pt")
    classify.run(child, tiny_manifest, None, model_c, tmp_path / "d", features=cached)
    monkeypatch.undo()
    for run in ("c", "d"):
        model, ckpt = models.load_model(tmp_path / run / "model.pt")
        assert ckpt["num_features"] == backbone.num_features and ckpt["backbone"] is None
        assert model(torch.zeros(1, 1, TINY.input_size, TINY.input_size)).shape == (1, 2)


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
