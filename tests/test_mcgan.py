"""MCGAN architecture as the study's, training outputs and sampling determinism."""

from __future__ import annotations

import cv2
import pandas as pd
import torch

from mammodp import mcgan


def _n(m):
    return sum(p.numel() for p in m.parameters())


def test_study_architecture_shapes_and_parameter_counts():
    g, d = mcgan.build(mcgan.GanSpec())  # width 64: channels 1024 ... 64
    assert _n(g) == 14_428_112 and _n(d) == 25_928_036
    convs = [m for m in g.net if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [c.out_channels for c in convs] == [1024, 512, 256, 128, 64, 1]
    assert all(c.kernel_size == (4, 4) and c.bias is None for c in convs)
    dconvs = [m for m in d.net if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in dconvs] == [64, 128, 256, 512, 1024, 1]
    assert all(c.kernel_size == (6, 6) and c.stride == (2, 2) for c in dconvs[:-1])
    z, y = torch.randn(3, 100), torch.tensor([0, 1, 1])
    x = g(z, y)
    assert x.shape == (3, 1, 128, 128) and x.min() >= -1 and x.max() <= 1
    out = d(x, y)
    assert out.shape == (3,) and ((out > 0) & (out < 1)).all()


def test_train_and_sample(tmp_path):
    torch.manual_seed(0)
    images = torch.rand(10, 1, 128, 128) * 2 - 1
    labels = torch.tensor([0, 1] * 5)
    spec = mcgan.GanSpec(epochs=2, width=4, checkpoint_every=1, seed=1)
    mcgan.train(images, labels, spec, tmp_path / "model")
    losses = pd.read_csv(tmp_path / "model" / "losses.csv")
    assert list(losses["epoch"]) == [1, 2] and losses["loss_d"].notna().all()
    assert sorted(p.name for p in (tmp_path / "model" / "samples").iterdir()) == [
        "epoch00001.png",
        "epoch00002.png",
    ]
    # Sampling: a generator that barely moved from its random init (BatchNorm statistics
    # settled by a few batches), so its eval-mode outputs depend on z.
    fresh = mcgan.GanSpec(epochs=15, width=8, lr=1e-9, checkpoint_every=15, seed=2)
    mcgan.train(images, labels, fresh, tmp_path / "fresh")
    gen = tmp_path / "fresh" / "generator.pt"
    a = mcgan.sample(gen, 3, seed=5, out_dir=tmp_path / "a")
    b = mcgan.sample(gen, 3, seed=5, out_dir=tmp_path / "b")
    assert list(a["label"]) == [0, 0, 0, 1, 1, 1]
    assert a["path"].str.endswith(("_malignant.png", "_benign.png")).all()
    for pa, pb in zip(a["path"], b["path"], strict=True):
        assert (cv2.imread(pa) == cv2.imread(pb)).all()
    c = mcgan.sample(gen, 3, seed=6, out_dir=tmp_path / "c")
    assert any(
        (cv2.imread(pa) != cv2.imread(pc)).any()
        for pa, pc in zip(a["path"], c["path"], strict=True)
    )
