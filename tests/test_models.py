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
