"""Backbones, heads and checkpoints."""

from __future__ import annotations

import pytest
import torch

from mammodp import models
from mammodp.errors import UserError

TINY = models.ModelSpec(
    pretrained="none",
    input_size=32,
    drop_path_rate=0.0,
    overrides={"embed_dim": 16, "depths": [1, 1], "num_heads": [1, 2], "window_size": 4},
)


def test_study_swin_t_and_heads():
    backbone = models.create_backbone(models.ModelSpec(pretrained="none"))
    assert backbone.num_features == 768
    mlp = models.make_head("mlp", 768)
    assert [m.out_features for m in mlp if isinstance(m, torch.nn.Linear)] == [384, 2]
    assert isinstance(mlp[1], torch.nn.LeakyReLU) and mlp[1].negative_slope == 0.2
    assert sum(p.numel() for p in mlp.parameters()) == 768 * 384 + 384 + 384 * 2 + 2
    out = models.Classifier(backbone, mlp).eval()(torch.zeros(2, 1, 224, 224))
    assert out.shape == (2, 2)


def test_imagenet_weights_offline_give_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    with pytest.raises(
        UserError, match="ImageNet weights for swin_tiny.*weights_file.*pretrained: none"
    ):
        models.create_backbone(models.ModelSpec(pretrained="imagenet"))
    with pytest.raises(UserError, match="weights_file: /nope.safetensors not found"):
        models.create_backbone(
            models.ModelSpec(pretrained="imagenet", weights_file="/nope.safetensors")
        )


def test_random_backbone_is_shared_across_runs():
    a = models.create_backbone(TINY).state_dict()
    torch.manual_seed(123)  # the run's seed must not change the backbone
    b = models.create_backbone(TINY).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoints_follow_backbone_references(tmp_path):
    # A fully trained source model stores its backbone ...
    source = models.Classifier(models.create_backbone(TINY), models.make_head("linear", 32))
    with torch.no_grad():
        for p in source.backbone.parameters():
            p.add_(0.01)  # "trained": differs from the random init
    models.save_checkpoint(
        tmp_path / "src.pt",
        spec=TINY,
        head_type="linear",
        model=source,
        backbone_trained=True,
        backbone_source={"kind": "pretrained"},
    )
    # ... a frozen model started from it stores only its head and a reference.
    from mammodp.fileio import sha256_file

    frozen = models.Classifier(
        models.load_backbone(tmp_path / "src.pt"), models.make_head("linear", 32)
    )
    ref = {
        "kind": "model",
        "path": str(tmp_path / "src.pt"),
        "sha256": sha256_file(tmp_path / "src.pt"),
    }
    models.save_checkpoint(
        tmp_path / "frozen.pt",
        spec=TINY,
        head_type="linear",
        model=frozen,
        backbone_trained=False,
        backbone_source=ref,
    )
    assert models.load_checkpoint(tmp_path / "frozen.pt")["backbone"] is None
    loaded, _ = models.load_model(tmp_path / "frozen.pt")
    for k, v in source.backbone.state_dict().items():
        assert torch.equal(loaded.backbone.state_dict()[k], v), k
    x = torch.randn(2, 1, 32, 32)
    assert torch.allclose(loaded.eval()(x), frozen.eval()(x))
    # A changed source is detected instead of silently loading other weights.
    models.save_checkpoint(
        tmp_path / "src.pt",
        spec=TINY,
        head_type="mlp",
        model=models.Classifier(source.backbone, models.make_head("mlp", 32)),
        backbone_trained=True,
        backbone_source={"kind": "pretrained"},
    )
    with pytest.raises(UserError, match="changed since training"):
        models.load_model(tmp_path / "frozen.pt")


def test_flip_variants():
    x = torch.arange(4.0).reshape(1, 1, 2, 2)
    assert models.flip(x, "h")[0, 0].tolist() == [[1, 0], [3, 2]]
    assert models.flip(x, "v")[0, 0].tolist() == [[2, 3], [0, 1]]
    assert models.flip(x, "hv")[0, 0].tolist() == [[3, 2], [1, 0]]


def test_random_flips_give_both_flips_to_a_sample_drawn_for_both():
    x = torch.arange(64 * 9, dtype=torch.float32).reshape(64, 1, 3, 3)
    gen = torch.Generator().manual_seed(0)
    out = models.random_flips(x, gen)
    replay = torch.Generator().manual_seed(0)
    flip_h = torch.rand(64, generator=replay) < 0.5
    flip_v = torch.rand(64, generator=replay) < 0.5
    assert (flip_h & flip_v).any() and (flip_h & ~flip_v).any() and (~flip_h & ~flip_v).any()
    for i in range(64):
        want = x[i]
        if flip_h[i]:
            want = want.flip(-1)
        if flip_v[i]:
            want = want.flip(-2)
        assert torch.equal(out[i], want), i
    assert torch.equal(x, torch.arange(64 * 9, dtype=torch.float32).reshape(64, 1, 3, 3))


def test_strict_image_loading_refuses_other_sizes(tmp_path):
    import cv2
    import numpy as np

    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((64, 64), np.uint8))
    assert models.load_images([tmp_path / "a.png"], 128).shape == (1, 1, 128, 128)
    with pytest.raises(UserError, match=r"a.png: expected a 128x128 grayscale PNG, got 64x64"):
        models.load_images([tmp_path / "a.png"], 128, strict=True)
